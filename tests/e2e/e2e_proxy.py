"""A counting reverse proxy between the mount and the embedded service.

The end-to-end tests need to see what the daemon sends: how many block
POSTs a copy cost, how many bytes a partial read downloaded, whether
``ls -l`` paged or sent one HEAD per file. The mount talks to this proxy; the
proxy forwards every request unchanged to the real service and records
method, path, query, status and body sizes. The one rewrite is the catalog in
the identity response, so that every later request of the daemon comes back
here too. The tests' own client talks to the service directly and is not
counted.

Request bodies are buffered (the mount sends at most a block at a time) so a
request can be re-sent on a fresh upstream connection when a kept-alive one
turned out closed; response bodies stream through.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str]  # valueless flags map to ""
    status: int
    sent: int  # request body bytes
    served: int  # response body bytes


class CountingProxy:
    """Forward ``http://127.0.0.1:PORT`` to ``upstream`` and record every request."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_base = f"{parts.scheme}://{parts.netloc}"
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self._log: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="counting-proxy", daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, upstream_url: str) -> str:
        """``upstream_url`` (the identity URL, say) as seen through the proxy."""
        return upstream_url.replace(self.upstream_base, self.base, 1)

    def record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    def mark(self) -> int:
        """A position in the log; ``since(mark)`` returns what came after it."""
        with self._lock:
            return len(self._log)

    def since(self, mark: int) -> list[Request]:
        with self._lock:
            return list(self._log[mark:])


def parse_query(query: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet
        pass

    def finish(self) -> None:
        super().finish()
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_COPY = do_MOVE = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        has_length = ("Content-Length" in self.headers
                      or "chunked" in self.headers.get("Transfer-Encoding", "").lower())
        for attempt in (1, 2):
            if self._upstream is None:
                proxy = self.server.proxy  # type: ignore[attr-defined]
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=120, blocksize=CHUNK)
            conn = self._upstream
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        conn.putheader(name, value)
                if has_length or body:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                return conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine, BrokenPipeError):
                conn.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forward(self) -> None:
        proxy: CountingProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        try:
            resp = self._send_upstream(body)
        except OSError as exc:
            message = f"proxy: upstream failed: {exc}".encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        parts = urllib.parse.urlsplit(self.path)
        served = 0
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        rewrite = (self.command == "POST" and parts.path.rstrip("/").endswith("/tokens")
                   and resp.status == 200)
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if no_body:
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            resp.read()
        elif rewrite:
            data = resp.read().replace(proxy.upstream_base.encode(), proxy.base.encode())
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            served = len(data)
        elif length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            while chunk := resp.read(CHUNK):
                self.wfile.write(chunk)
                served += len(chunk)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while chunk := resp.read(CHUNK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                served += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        if resp.will_close:
            self._upstream.close()
            self._upstream = None
        proxy.record(Request(self.command, urllib.parse.unquote(parts.path),
                             parse_query(parts.query), resp.status, len(body), served))
