"""``imagefs serve``: run the embedded service under gunicorn, in the foreground.

Why gunicorn with ``gthread`` workers (perf-baseline.md §4): several
processes sidestep the GIL for block hashing and SQLite, threads keep many
kamaki connections (up to 5 parallel block transfers each) busy, and it
measured 1.3 GB/s for 4 MiB PUTs from 4 threads and 3.3 GB/s for a streamed
GET. Its listener sets TCP_NODELAY, which accepted sockets inherit; without
it every 4 MiB reply waits ~40 ms for a delayed ACK (95 MB/s).

Process rules:

- The arbiter never keeps a SQLite connection: it opens the store only in a
  short-lived thread to create the default user, and closes it before any
  worker is forked. Each worker opens its own ``Store`` after the fork
  (``load`` runs there), because a SQLite connection must never cross fork.
- Repeated request headers reach the app unjoined through gunicorn's
  ``pre_request`` hook (api.md D8), and ``header_map = dangerous`` keeps
  header names with ``_`` (kamaki sends ``X-Object-Meta-image_os``).
- Once the listener is bound (port 0 works) the arbiter prints the URL, the
  default user and its token on stdout and writes ``DATA/service.json``
  (0600) for ``launcher.ensure_running``; a clean stop (SIGTERM, SIGINT)
  removes it.
- Block garbage collection runs in a worker thread; an ``flock`` on
  ``DATA/gc.lock`` plus the lock file's mtime make exactly one process do it
  per interval, whatever the number of workers.
- HTTP gunicorn cannot parse is answered by ``ServiceWorker`` with the app's
  JSON faults, and logged by exception class only (a quoted header line could
  hold a token).
"""

from __future__ import annotations

import ctypes
import fcntl
import io
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from gunicorn import glogging
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.http import errors as http_errors
from gunicorn.http.body import LengthReader
from gunicorn.workers.gthread import ThreadWorker

from imagefs import config
from imagefs import log as imagefs_log
from imagefs.errors import UsageError
from imagefs.service import app as service_app

log = logging.getLogger(__name__)

IDENTITY_PATH = "/identity/v2.0"
SERVICE_FILE = "service.json"
GC_LOCK = "gc.lock"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` or ``PORT``) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"--listen wants HOST:PORT, not {value!r}") from None
    if not 0 <= number <= 65535:
        raise UsageError(f"port out of range in --listen {value!r}")
    return host, number


def url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _open_store(data_dir: Path):
    from imagefs.service.store import Store

    return Store.open(data_dir)


def _close_store(store) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def tune_malloc() -> None:
    """Give freed block buffers back to the OS at once (glibc only; inherited by workers).

    Every request handles 4 MiB buffers. glibc serves those with mmap until
    the first is freed, then raises its mmap threshold to that size, and from
    then on 4 MiB buffers come from per-thread arenas that keep their pages:
    with 8 threads per worker that is tens of MB of RSS that never shrinks.
    A fixed threshold (which also stops the adjustment) and two arenas keep a
    worker near its idle size between requests.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, 256 * 1024)
    libc.mallopt(m_arena_max, 2)


def prepare_default_user(data_dir: Path):
    """The default user (created on first start), without leaving a connection in this process.

    Runs the store in a thread that ends before gunicorn forks, so its
    thread-local SQLite connection is closed and never inherited.
    """
    result: dict[str, object] = {}

    def work() -> None:
        try:
            store = _open_store(data_dir)
            try:
                result["user"], result["created"] = store.default_user()
            finally:
                _close_store(store)
        except BaseException as exc:  # re-raised in the calling thread
            result["error"] = exc

    thread = threading.Thread(target=work, name="store-init")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["user"], result["created"]


def write_service_file(data_dir: Path, url: str, pid: int) -> None:
    config.write_private_file(data_dir / SERVICE_FILE, json.dumps({"url": url, "pid": pid}) + "\n")


def remove_service_file(data_dir: Path, pid: int) -> None:
    """Remove ``service.json`` if it still describes us (a newer service may own it)."""
    path = data_dir / SERVICE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


# -- garbage collection ---------------------------------------------------------------------------

def gc_loop(store, data_dir: Path, interval: float, stop: threading.Event) -> None:
    """Collect unreferenced blocks every ``interval`` seconds, in one process at a time.

    Every worker runs this loop; the lock decides who works, and the lock
    file's mtime (touched after each run) keeps the period global.
    """
    lock_path = data_dir / GC_LOCK
    while not stop.wait(min(interval, 60.0)):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            log.warning("cannot open %s; block collection skipped", lock_path)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if time.time() - os.fstat(fd).st_mtime < interval:
                continue
            os.utime(fd)
            removed, freed = store.gc()
            if removed:
                log.info("block collection: %d blocks, %d bytes freed", removed, freed)
            else:
                log.debug("block collection: nothing to free")
        except Exception:
            log.exception("block collection failed")
        finally:
            os.close(fd)   # releases the flock


# -- gunicorn ----------------------------------------------------------------------------------------

class _Logger(glogging.Logger):
    """gunicorn's messages through our root logger (stderr, tokens masked), no access log."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        self.access_log.disabled = True


#: gunicorn's HTTP parse errors -> (status, fault key, message), first match wins. The
#: message is fixed: the exception's text may quote a whole header line, token included.
_PARSE_FAULTS: list[tuple[type[Exception], int, str, str]] = [
    (http_errors.ConfigurationProblem, 0, "", ""),          # ours, not the client's: a 500
    (http_errors.LimitRequestLine, 414, "requestURITooLong", "Request line too long"),
    (http_errors.LimitRequestHeaders, 431, "requestHeaderFieldsTooLarge",
     "Too many or too large request headers"),
    (http_errors.UnsupportedTransferCoding, 501, "notImplemented",
     "Unsupported transfer coding"),
    (http_errors.ExpectationFailed, 417, "expectationFailed", "Unsupported expectation"),
    (http_errors.ParseException, 400, "badRequest", "Malformed HTTP request"),
]


class ServiceWorker(ThreadWorker):
    """gunicorn's gthread worker, answering malformed HTTP with the app's JSON faults.

    gunicorn refuses a bad request line, header or chunk before the app
    sees it, with an HTML page and a WARNING that quotes the offending line.
    Clients of a Synnefo API expect a JSON fault with an upper-case reason
    phrase, and the log must never quote a header (it may be ``X-Auth-Token``).
    """

    def handle_error(self, req, client, addr, exc) -> None:
        for cls, status, key, message in _PARSE_FAULTS:
            if isinstance(exc, cls):
                break
        else:
            status = 0
        if not status or isinstance(exc, (http_errors.InvalidResponseHeader,
                                          http_errors.InvalidResponseHeaderName)):
            super().handle_error(req, client, addr, exc)
            return
        log.info("refused a malformed request from %s: %s", (addr or ("?",))[0],
                 type(exc).__name__)
        body = json.dumps({key: {"code": status, "message": message, "details": ""}})
        head = (f"HTTP/1.1 {status} {service_app.REASONS[status]}\r\n"
                f"Connection: close\r\nContent-Type: {service_app.JSON}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        try:
            gunicorn_util.write_nonblock(client, (head + body).encode("latin-1"))
        except OSError:
            log.debug("the fault could not be sent: the client is gone")


class _BodyReader:
    """gunicorn's ``wsgi.input`` plus ``readinto``: a Content-Length body goes from the
    socket straight into the caller's buffer.

    gunicorn's ``read`` passes every byte through several BytesIO buffers and
    new bytes objects; with ``tune_malloc`` each of those is a fresh mmap (page
    faults, zeroing), and block uploads spent more CPU there than hashing.
    ``readinto`` takes what gunicorn already holds (``take_buffered``, the
    surplus given back with ``unread``), else one ``recv_into`` never past the
    body's end, and keeps ``LengthReader.length`` exact so the connection
    stays usable. Chunked bodies, a body already partly read through ``read``,
    or a gunicorn without these parts go through ``read`` instead.
    """

    def __init__(self, body, sock) -> None:
        self._body = body
        self._sock = sock
        reader = getattr(body, "reader", None)
        unreader = getattr(reader, "unreader", None)
        self._direct = (sock is not None and isinstance(reader, LengthReader)
                        and isinstance(getattr(reader, "length", None), int)
                        and hasattr(unreader, "take_buffered") and hasattr(unreader, "unread")
                        and isinstance(getattr(body, "buf", None), io.BytesIO))

    def read(self, size=-1):
        return self._body.read(size)

    def readline(self, size=-1):
        return self._body.readline(size)

    def readlines(self, hint=-1):
        return self._body.readlines(hint)

    def __iter__(self):
        return iter(self._body)

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        if not self._direct or self._body.buf.tell():
            data = self._body.read(len(view))
            view[: len(data)] = data
            return len(data)
        reader = self._body.reader
        want = min(len(view), reader.length)
        if want <= 0:
            return 0
        try:
            held = reader.unreader.take_buffered()
            if held:
                n = min(len(held), want)
                view[:n] = held[:n]
                if len(held) > n:
                    reader.unreader.unread(held[n:])
            else:
                n = self._sock.recv_into(view, want)
        except BaseException:
            reader.failed = True    # where the next request starts is unknown now
            raise
        reader.length -= n
        return n


def _direct_body(app):
    """The WSGI app with ``_BodyReader`` as its ``wsgi.input``."""

    def wsgi(environ, start_response):
        body = environ.get("wsgi.input")
        if body is not None:
            environ["wsgi.input"] = _BodyReader(body, environ.get("gunicorn.socket"))
        return app(environ, start_response)

    return wsgi


def _pre_request(worker, req) -> None:
    service_app.raw_headers_hook(list(req.headers))


class ServiceApplication(BaseApplication):
    """gunicorn embedded: our options instead of a command line or a config file."""

    def __init__(self, data_dir: Path, settings: service_app.Settings, *, host: str, port: int,
                 workers: int, threads: int, gc_interval: float, user, token: str,
                 stdout=None) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.host, self.port = host, port
        self.workers, self.threads = workers, threads
        self.gc_interval = gc_interval
        self.user, self.token = user, token
        self.stdout = stdout or sys.stdout
        self.arbiter_pid = os.getpid()
        super().__init__()

    def load_config(self) -> None:
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        options = {
            "bind": [bind],
            "workers": self.workers,
            "threads": self.threads,
            "worker_class": ServiceWorker,   # gthread, with JSON faults for bad HTTP
            "keepalive": 75,             # kamaki pools connections; don't drop them under it
            "timeout": 120,
            "graceful_timeout": 10,
            "header_map": "dangerous",   # keep X-Object-Meta-image_os & co. (api.md §3.7)
            # gunicorn's largest finite limit: a 1024-character name of 1- or 2-byte UTF-8
            # fits percent-encoded (4 KiB, the default, does not). 0 would mean unlimited,
            # and its parser re-copies the line per 8 KiB read: a long line eats memory and CPU.
            "limit_request_line": 8190,
            "limit_request_fields": 400,
            "limit_request_field_size": 16384,
            "logger_class": _Logger,
            "loglevel": logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
            "pre_request": _pre_request,
            "when_ready": self._when_ready,
            "on_exit": self._on_exit,
            "proc_name": "imagefs-serve",
            # gunicorn's control socket is one per user ($HOME/.gunicorn): several services
            # (one per data dir, tests) would fight over it, and nothing here needs it.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        """Runs in each worker after fork: its own store, its own app."""
        store = _open_store(self.data_dir)
        if self.gc_interval > 0:
            stop = threading.Event()
            threading.Thread(target=gc_loop, name="gc", daemon=True,
                             args=(store, self.data_dir, self.gc_interval, stop)).start()
        return _direct_body(service_app.create_app(store, self.settings))

    def _when_ready(self, server) -> None:
        host, port = server.LISTENERS[0].sock.getsockname()[:2]
        url = f"http://{url_host(host)}:{port}{IDENTITY_PATH}"
        write_service_file(self.data_dir, url, self.arbiter_pid)
        out = self.stdout
        out.write(f"imagefs service: {url}\n")
        out.write(f"user: {self.user.uuid} {self.user.name}\n")
        out.write(f"token: {self.token}\n")
        out.flush()
        log.info("serving %s from %s", url, self.data_dir)

    def _on_exit(self, server) -> None:
        remove_service_file(self.data_dir, self.arbiter_pid)
        log.info("stopped")


def serve_command(args) -> int:
    """``imagefs serve``: foreground, logs on stderr, the URL/user/token lines on stdout."""
    verbosity = getattr(args, "verbose", 0) or 0
    imagefs_log.setup(logging.DEBUG if verbosity > 0 else logging.INFO)
    data_dir = Path(args.data) if args.data else config.data_dir()
    config.make_private_dir(data_dir)
    host, port = parse_listen(args.listen)
    if args.workers < 1 or args.threads < 1:
        raise UsageError("--workers and --threads must be at least 1")
    tune_malloc()
    user, created = prepare_default_user(data_dir)
    imagefs_log.register_secret(user.token)
    if created:
        log.info("created the default user %s (%s)", user.name, user.uuid)
    settings = service_app.Settings(real_synnefo=bool(args.real_synnefo))
    ServiceApplication(data_dir, settings, host=host, port=port, workers=args.workers,
                       threads=args.threads, gc_interval=float(args.gc_interval or 0),
                       user=user, token=user.token).run()
    return 0
