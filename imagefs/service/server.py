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
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

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
            "worker_class": "gthread",
            "keepalive": 75,             # kamaki pools connections; don't drop them under it
            "timeout": 120,
            "graceful_timeout": 10,
            "header_map": "dangerous",   # keep X-Object-Meta-image_os & co. (api.md §3.7)
            "limit_request_line": 0,     # 1024-char UTF-8 names percent-encoded exceed 4 KiB
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
        return service_app.create_app(store, self.settings)

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
