"""Transport behaviour of client.http against a tiny scripted HTTP server on loopback.

The embedded service cannot be told to fail on demand; this server answers
from a script so that retries, keep-alive after errors and undecoded bodies
can be checked over real sockets.
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imagefs import errors
from imagefs.client.http import Http


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[tuple[int, dict, bytes]] = []
        self.seen: list[tuple[str, str, dict]] = []
        self.connections = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.server.connections += 1

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, headers, payload = self.server.script.pop(0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer


@pytest.fixture
def server():
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_transient_statuses_are_retried(server):
    server.script = [(503, {}, b"busy"), (500, {}, b'{"internalServerError": {}}'),
                     (200, {}, b"ok")]
    http = Http("tok-retry", deadline=10.0)
    resp = http.request("GET", server.url + "/x")
    assert resp.content == b"ok"
    assert len(server.seen) == 3
    assert all(h.get("X-Auth-Token") == "tok-retry" for _, _, h, _ in server.seen)


def test_retries_stop_at_the_deadline(server):
    server.script = [(503, {}, b"")] * 200
    http = Http("tok", deadline=0.3)
    with pytest.raises(errors.ServiceUnavailable) as info:
        http.request("GET", server.url + "/x")
    assert "503" in str(info.value)
    assert 1 < len(server.seen) < 200


def test_no_retry_when_asked(server):
    server.script = [(503, {}, b"")]
    with pytest.raises(errors.Transient):
        Http("tok").request("GET", server.url + "/x", retry=False)
    assert len(server.seen) == 1


def test_client_errors_are_not_retried_and_keep_the_connection(server):
    server.script = [(404, {}, b'{"itemNotFound": {"message": "no"}}'), (404, {}, b""),
                     (204, {}, b""), (200, {}, b"body")]
    http = Http("tok")
    with pytest.raises(errors.NotFound):
        http.request("GET", server.url + "/a")
    with pytest.raises(errors.NotFound):
        http.request("HEAD", server.url + "/b")
    http.request("HEAD", server.url + "/c", expected=(204,))
    assert http.request("GET", server.url + "/d").content == b"body"
    assert len(server.seen) == 4
    assert server.connections == 1


def test_content_encoding_is_not_decoded(server):
    payload = gzip.compress(b"x" * 1000)
    server.script = [(200, {"Content-Encoding": "gzip"}, payload)] * 2
    http = Http("tok")
    assert http.request("GET", server.url + "/x.gz").content == payload
    resp = http.request("GET", server.url + "/x.gz", stream=True)
    try:
        assert resp.raw.read(decode_content=False) == payload
    finally:
        resp.close()
    assert server.seen[0][2].get("Accept-Encoding") == "identity"


def test_valueless_flags_and_bodies(server):
    server.script = [(202, {}, b"[]"), (201, {}, b"")]
    http = Http("tok")
    http.request("POST", server.url + "/c", expected=(202,),
                 params={"update": None, "format": "json"}, data=memoryview(b"block"))
    http.request("PUT", server.url + "/c/o", expected=(201,), data=memoryview(b""))
    (m1, p1, h1, b1), (m2, p2, h2, b2) = server.seen
    assert p1 == "/c?update&format=json" and b1 == b"block" and h1["Content-Length"] == "5"
    assert h2.get("Content-Length") == "0" and "Transfer-Encoding" not in h2


def test_hooks_see_every_reply(server):
    server.script = [(200, {}, b"")] * 2
    http = Http("tok")
    seen = []
    http.hooks.append(lambda method, url, status: seen.append((method, status)))
    http.request("GET", server.url + "/1")
    http.request("HEAD", server.url + "/2")
    assert seen == [("GET", 200), ("HEAD", 200)]


def test_sessions_are_per_thread(server):
    http = Http("tok")
    sessions = []
    threads = [threading.Thread(target=lambda: sessions.append(http.session)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions}) == 3
    assert http.session is http.session
    http.close()
