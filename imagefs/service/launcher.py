"""Find or start the embedded service for a data directory.

``imagefs mount`` with no cloud configured calls ``ensure_running``: reuse
the service that ``DATA/service.json`` describes if its process is alive and
its URL answers, otherwise start ``imagefs serve`` detached (through a short-lived
intermediate process, in its own session: it outlives the mount and is
nobody's zombie) on a free loopback port and wait for it to publish
``service.json``. A lock file makes two mounts starting at once share
one service instead of racing.

The detached service's stderr (its log) goes to ``DATA/service.log``; its
stdout, which carries the token, goes nowhere: the token is read from
``DATA/default.token`` (0600) instead, so no log file ever holds it.

``running_service`` is the test-and-script variant: a foreground child that
is stopped (SIGTERM, then SIGKILL) when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imagefs.config import Cloud, make_private_dir
from imagefs.errors import ServiceUnavailable

log = logging.getLogger(__name__)

SERVICE_FILE = "service.json"
TOKEN_FILE = "default.token"
LOG_FILE = "service.log"
LOCK_FILE = "launch.lock"


def read_service_file(data_dir: Path) -> dict | None:
    try:
        info = json.loads((data_dir / SERVICE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str) or \
            not isinstance(info.get("pid"), int):
        return None
    return info


def read_default_token(data_dir: Path) -> tuple[str, str]:
    """(uuid, token) of the default user, from ``DATA/default.token``."""
    try:
        uuid, token = (data_dir / TOKEN_FILE).read_text().split()[:2]
    except (OSError, ValueError):
        raise ServiceUnavailable(f"no default user token in {data_dir / TOKEN_FILE}") from None
    return uuid, token


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not count: the service we started detached is our
    child until we exit, and a killed child stays a zombie until someone reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether an identity URL answers ``POST tokens`` (empty body = catalog only)."""
    request = urllib.request.Request(url.rstrip("/") + "/tokens", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serve_argv(data_dir: Path, listen: str = "127.0.0.1:0", *extra: str,
               verbose: bool = False) -> list[str]:
    return [sys.executable, "-m", "imagefs", *(["-v"] if verbose else []), "serve",
            "--data", str(data_dir), "--listen", listen, *extra]


def ensure_running(data_dir: Path, *, timeout: float = 30.0) -> Cloud:
    """The identity URL and default token of the service for ``data_dir``, started if needed."""
    data_dir = make_private_dir(Path(data_dir))
    lock_fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        info = read_service_file(data_dir)
        if info and pid_alive(info["pid"]) and answers(info["url"]):
            log.debug("reusing the service at %s (pid %d)", info["url"], info["pid"])
            return Cloud(url=info["url"], token=read_default_token(data_dir)[1])
        if info:
            (data_dir / SERVICE_FILE).unlink(missing_ok=True)
        url = _start_detached(data_dir, timeout)
        return Cloud(url=url, token=read_default_token(data_dir)[1])
    finally:
        os.close(lock_fd)


#: Run by an intermediate interpreter: start the service in its own session and exit, so the
#: service is not our child (no zombie to reap, nothing tied to the caller's lifetime).
_SPAWN = ("import subprocess, sys\n"
          "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, "
          "stdout=subprocess.DEVNULL, start_new_session=True)\n"
          "print(p.pid)\n")


def _start_detached(data_dir: Path, timeout: float) -> str:
    log_path = data_dir / LOG_FILE
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        spawner = subprocess.run([sys.executable, "-c", _SPAWN, *serve_argv(data_dir)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=log_fd, timeout=timeout, check=False)
    finally:
        os.close(log_fd)
    try:
        pid = int(spawner.stdout.split()[0])
    except (IndexError, ValueError):
        raise ServiceUnavailable(f"could not start the embedded service; see {log_path}:\n"
                                 f"{_tail(log_path)}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_service_file(data_dir)
        if info and info["pid"] == pid and answers(info["url"]):
            log.info("started the embedded service at %s (pid %d, log %s)",
                     info["url"], pid, log_path)
            return info["url"]
        if not pid_alive(pid):
            raise ServiceUnavailable(f"the embedded service exited at start; see {log_path}:\n"
                                     f"{_tail(log_path)}")
        time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    raise ServiceUnavailable(f"the embedded service did not start within {timeout:.0f} s; "
                             f"see {log_path}")


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class RunningService:
    """A service child process and what it printed when ready."""

    process: subprocess.Popen
    data_dir: Path
    url: str                 # identity URL
    uuid: str
    name: str
    token: str
    log_path: Path
    output: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.url.split("/identity/")[0]

    def pids(self) -> list[int]:
        """The service's processes (gunicorn's arbiter and workers), for measuring them."""
        out, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:  # gone meanwhile
                pass
        return out


def _drain_stdout(proc: subprocess.Popen, lines: list[str], ready: threading.Event
                  ) -> threading.Thread:
    """Collect the child's stdout lines in a thread; ``ready`` once three arrived (or EOF)."""

    def reader() -> None:
        for raw in proc.stdout:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            if len(lines) >= 3:
                ready.set()
        ready.set()

    thread = threading.Thread(target=reader, name="service-stdout", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def running_service(data_dir: Path, *extra_args: str, timeout: float = 30.0,
                    verbose: bool = False) -> Iterator[RunningService]:
    """Run ``imagefs serve`` on a free port for the duration of the block (tests, scripts).

    ``extra_args`` go to ``serve`` (``--workers 1``, ``--real-synnefo``...);
    ``verbose`` logs at DEBUG.
    """
    data_dir = make_private_dir(Path(data_dir))
    log_path = data_dir / LOG_FILE
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(serve_argv(data_dir, "127.0.0.1:0", *extra_args,
                                           verbose=verbose),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log_fd, start_new_session=True)
    finally:
        os.close(log_fd)
    lines: list[str] = []
    ready = threading.Event()
    reader = _drain_stdout(proc, lines, ready)
    try:
        try:
            if not ready.wait(timeout) or len(lines) < 3:
                raise ServiceUnavailable("no URL, user and token on stdout")
            url = lines[0].split(": ", 1)[1]
            _, uuid, name = lines[1].split(" ", 2)
            token = lines[2].split(": ", 1)[1]
        except (ServiceUnavailable, IndexError, ValueError):
            raise ServiceUnavailable(f"the service did not start; see {log_path}:\n"
                                     f"{_tail(log_path)}") from None
        deadline = time.monotonic() + timeout
        while not answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"the service does not answer; see {log_path}")
            time.sleep(0.05)
        yield RunningService(process=proc, data_dir=data_dir, url=url, uuid=uuid, name=name,
                             token=token, log_path=log_path, output=lines[:3])
    finally:
        stop(proc)
        reader.join(5)
        proc.stdout.close()


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM the service, wait, then SIGKILL its process group (workers included)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
