"""Failure injection for the end-to-end tests: the counting proxy, armed to misbehave.

aesthetics.md §5.4: faults go through the real stack, never through mocks.
The mount talks HTTP to this proxy exactly as it talks to a service. A test
arms a ``Fault`` for the requests a predicate selects (block uploads, hashmap
PUTs, ranged GETs...), and the proxy answers the chosen ones itself:

- ``status``: an error status (500, 503...) with a JSON fault body;
- ``drop-request``: read half the request body, then close the connection;
- ``drop-response``: forward, send the headers and half the body, then close;
- ``lose-response``: forward (the service does the work), then close without
  an answer, as when the connection breaks just before the reply;
- ``stall``: read the request and answer nothing for ``seconds`` (longer than
  the client's read timeout), then close;
- ``hold``: read the request, set ``reached`` and wait for ``release()``;
  then forward it (the daemon sent it before it died) or drop it. Tests kill
  a process at that known point of an upload.

``after`` lets that many matching requests through first (the Nth block
upload fails: ``after=N-1``), ``times`` says how many fail (None: until
disarmed). Everything else is forwarded as ``CountingProxy`` does.
``retarget`` points the proxy at another upstream, so a service restarted on
a new port is, to the mount, the same service coming back.

Also here, because faults need them: a mount of the real CLI wired to a proxy
(``start_mount``), and small tmpfs file systems that fill up (``Tmpfs``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e2e_proxy import CountingProxy, Request, _Handler, parse_query
from e2e_util import (CACHE_TIMEOUT, Mount, cleanup, file_top_hash, imagefs_command,
                      mount_listed, names_on_service, run, tail, umount, wait_for_mount,
                      write_random)

from imagefs import errors

#: The longest a held or stalled request waits for the test (a failed test must not hang).
HOLD_LIMIT = 120.0


#: The fault mounts' retry deadline and read timeout (seconds): short, so that EIO
#: comes quickly, yet long enough for a loaded machine's normal requests.
DEADLINE = 3.0
TIMEOUT = 2.5


class Incoming:
    """What a fault predicate sees of a request: its line and, if it asks, its body."""

    def __init__(self, method: str, path: str, query: dict[str, str], headers,
                 read_body: Callable[[], bytes]) -> None:
        self.method = method
        self.path = path  # percent-decoded
        self.query = query  # valueless flags map to ""
        self.headers = headers  # case-insensitive (an email.message.Message)
        self.length = int(headers.get("Content-Length") or 0)
        self._read_body = read_body
        self._body: bytes | None = None

    def body(self) -> bytes:
        """The request body (read once; a predicate that calls this cannot drop mid-body)."""
        if self._body is None:
            self._body = self._read_body()
        return self._body

    @property
    def store_parts(self) -> list[str] | None:
        """[account, container, object...] of an object-store request, else None."""
        marker = "/object-store/v1/"
        if marker not in self.path:
            return None
        account, _, rest = self.path.split(marker, 1)[1].partition("/")
        if not rest:
            return [account]
        container, _, name = rest.partition("/")
        return [account, container] + ([name] if name else [])


Predicate = Callable[[Incoming], bool]


def block_upload(container: str) -> Predicate:
    """POST <container>?update with a body: one block of an upload."""
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return (r.method == "POST" and p is not None and len(p) == 2 and p[1] == container
                and "update" in r.query and r.length > 0)
    return match


def hashmap_put(container: str, name: str | None = None) -> Predicate:
    """PUT <container>/<name>?hashmap: the commit of an upload."""
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return (r.method == "PUT" and p is not None and len(p) == 3 and p[1] == container
                and (name is None or p[2] == name) and "hashmap" in r.query)
    return match


#: A block hash no content has: the mount's hashmap PUTs that only ask which blocks the
#: service lacks name it (``imagefs.fs.upload``); a commit never does.
IMPOSSIBLE_HASH = "0" * 64


def commit_put(container: str, name: str) -> Predicate:
    """The hashmap PUT that stores ``name`` (not one that only asks about blocks)."""
    is_put = hashmap_put(container, name)

    def match(r: Incoming) -> bool:
        if not is_put(r):
            return False
        try:
            hashes = json.loads(r.body()).get("hashes", [])
        except ValueError:
            return False
        return IMPOSSIBLE_HASH not in hashes
    return match


def object_get(container: str, name: str) -> Predicate:
    """GET of the object's bytes (a read)."""
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return (r.method == "GET" and p is not None and len(p) == 3 and p[1] == container
                and p[2] == name and "hashmap" not in r.query)
    return match


def object_move(container: str) -> Predicate:
    """PUT <container>/<name> with X-Move-From: a rename."""
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return (r.method == "PUT" and p is not None and len(p) == 3 and p[1] == container
                and "X-Move-From" in r.headers)
    return match


def object_delete(container: str) -> Predicate:
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return r.method == "DELETE" and p is not None and len(p) == 3 and p[1] == container
    return match


MUTATING = {"PUT", "POST", "DELETE", "COPY", "MOVE"}


def changes_to(container: str, *names: str, images: bool = True) -> Predicate:
    """Any request that changes one of ``names`` (or, with ``images``, any image
    registration)."""
    def match(r: Incoming) -> bool:
        if r.method not in MUTATING:
            return False
        if "/image/" in r.path:
            return images
        p = r.store_parts
        return p is not None and len(p) == 3 and p[1] == container and p[2] in names
    return match


@dataclass(eq=False)
class Fault:
    match: Predicate
    action: str  # status | drop-request | drop-response | lose-response | stall | hold
    status: int = 503
    after: int = 0
    times: int | None = 1
    seconds: float = 0.0
    forward: bool = True  # hold: forward once released (else drop)
    seen: int = 0
    fired: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # hold: delivered or not

    ACTIONS = ("status", "drop-request", "drop-response", "lose-response", "stall", "hold")

    def __post_init__(self) -> None:
        if self.action not in self.ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}")

    def release(self, wait: bool = False) -> None:
        """Let held or stalled requests go; ``wait``: until the held one went through
        (the service has answered it) or was dropped."""
        self.released.set()
        if wait and not self.done.wait(HOLD_LIMIT):
            raise AssertionError("the held request never completed")

    def wait_reached(self, timeout: float = 60.0) -> None:
        if not self.reached.wait(timeout):
            raise AssertionError(f"no request reached the {self.action} fault in {timeout} s "
                                 f"({self.seen} matched)")


class FaultProxy(CountingProxy):
    """A ``CountingProxy`` whose requests can be made to fail (see the module docstring)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._server.RequestHandlerClass = _FaultHandler
        self._server.handle_error = _quiet_disconnects(self._server.handle_error)
        self._faults: list[Fault] = []
        self.generation = 0
        #: Faults fired since the proxy started (every action counts one).
        self.injected = 0

    def arm(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def disarm(self) -> None:
        """Remove every fault and let held or stalled requests go."""
        with self._lock:
            faults, self._faults = self._faults, []
        for fault in faults:
            fault.release()

    def take(self, incoming: Incoming) -> Fault | None:
        """The fault that fires for this request, if any (counted as fired)."""
        with self._lock:
            faults = list(self._faults)
        for fault in faults:
            if not fault.match(incoming):  # may read the body: not under the lock
                continue
            with self._lock:
                fault.seen += 1
                if fault.seen > fault.after and (fault.times is None
                                                 or fault.fired < fault.times):
                    fault.fired += 1
                    self.injected += 1
                    return fault
        return None

    def retarget(self, upstream: str) -> None:
        """Forward to ``upstream`` from now on (a restarted service's new port)."""
        parts = urllib.parse.urlsplit(upstream)
        with self._lock:
            self.upstream_base = f"{parts.scheme}://{parts.netloc}"
            self.upstream_host = parts.hostname or "127.0.0.1"
            self.upstream_port = parts.port or 80
            self.generation += 1


def _quiet_disconnects(handle_error):
    """A client that went away (the daemon killed, a request it gave up on) is expected
    here; any other error of the proxy is still printed."""
    def handler(request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            handle_error(request, client_address)
    return handler


class _FaultHandler(_Handler):
    _body: bytes | None = None
    _generation = 0

    def _forward(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        parts = urllib.parse.urlsplit(self.path)
        incoming = Incoming(self.command, urllib.parse.unquote(parts.path),
                            parse_query(parts.query), self.headers, self._read_body)
        fault = proxy.take(incoming)
        self._body = incoming._body  # read by a predicate: forwarded from here
        if fault is None:
            super()._forward()
            return
        action = fault.action
        if action == "drop-request" and self._body is None:
            self._record(incoming, 0, len(self.rfile.read(incoming.length // 2)))
            self._abort()
            return
        body = self._read_body()
        if action == "status":
            message = json.dumps({"serviceUnavailable" if fault.status == 503 else
                                  "computeFault": {"message": "injected fault",
                                                   "code": fault.status}}).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            self._record(incoming, fault.status, len(body))
        elif action == "drop-request":  # a predicate read the body already
            self._record(incoming, 0, len(body))
            self._abort()
        elif action == "stall":
            fault.released.wait(fault.seconds)
            self._record(incoming, 0, len(body))
            self._abort()
        elif action == "hold":
            fault.reached.set()
            fault.released.wait(HOLD_LIMIT)
            try:
                if fault.forward:
                    self._body = body
                    super()._forward()
                else:
                    self._record(incoming, 0, len(body))
                    self._abort()
            finally:
                fault.done.set()
        elif action == "drop-response":
            self._drop_response(incoming, body)
        elif action == "lose-response":
            try:
                resp = self._send_upstream(body)
                resp.read()
                self._record(incoming, resp.status, len(body))
            finally:
                self._abort()

    def _drop_response(self, incoming: Incoming, body: bytes) -> None:
        """Forward, relay the status, headers and half the body, then close."""
        try:
            resp = self._send_upstream(body)
        except OSError:
            self._abort()
            return
        data = resp.read()
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                    "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self._record(incoming, resp.status, len(body), len(data) // 2)
        self._abort()

    def _read_body(self) -> bytes:
        if self._body is not None:
            body, self._body = self._body, None
            return body
        return super()._read_body()

    def _send_upstream(self, body: bytes):
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        if self._generation != proxy.generation:
            if self._upstream is not None:
                self._upstream.close()
                self._upstream = None
            self._generation = proxy.generation
        return super()._send_upstream(body)

    def _record(self, incoming: Incoming, status: int, sent: int, served: int = 0) -> None:
        self.server.proxy.record(Request(  # type: ignore[attr-defined]
            incoming.method, incoming.path, incoming.query, status, sent, served))

    def _abort(self) -> None:
        """Close the client connection without an answer: a reset, not a clean close."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --- a mount of the real CLI through a proxy --------------------------------------------


def start_mount(base: Path, proxy: CountingProxy, service_url: str, token: str, account: str,
                *, cache_dir: Path | None = None, deadline: float | None = None,
                timeout: float | None = None, mountpoint: Path | None = None) -> Mount:
    """``imagefs mount --foreground`` of ``service_url`` as seen through ``proxy``;
    ``deadline``/``timeout`` set the mount's retry deadline and read timeout."""
    mnt = mountpoint or base / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    logfile = base / "daemon.log"
    output = base / "daemon.out"
    env = dict(os.environ, IMAGEFS_RUNTIME=str(base / "run"))
    if deadline is not None:
        env["IMAGEFS_HTTP_DEADLINE"] = str(deadline)
    if timeout is not None:
        env["IMAGEFS_HTTP_TIMEOUT"] = str(timeout)
    cmd = imagefs_command("mount", str(mnt), "--url", proxy.url_for(service_url),
                          f"--token={token}", "--foreground", "--log", str(logfile),
                          "--cache-dir", str(cache_dir or base / "cache"),
                          "--cache-timeout", str(CACHE_TIMEOUT))
    with open(output, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    mount = Mount(mnt, logfile, output, proc, proxy, account)
    try:
        wait_for_mount(proc, mnt, mount.describe)
    except BaseException:
        cleanup(proc, mnt)
        raise
    return mount


def stop_mount(mount: Mount) -> None:
    """Clean unmount (asserting exit codes 0), and no traceback in the daemon's log."""
    try:
        umount(mount.proc, mount.path)
        text = mount.log.read_text(errors="replace") if mount.log.exists() else ""
        assert "Traceback" not in text, f"the daemon logged a traceback:\n{text[-6000:]}"
    finally:
        cleanup(mount.proc, mount.path)


def kill_daemon(mount: Mount) -> None:
    """kill -9 the daemon and reap it (its mount stays, dead: ENOTCONN)."""
    mount.proc.send_signal(signal.SIGKILL)
    mount.proc.wait(timeout=30)


def unmount_dead(mount: Mount, *tools: subprocess.Popen) -> None:
    """Once the ``tools`` that used the dead mount have exited (they must fail, not
    hang), take the dead mount away as a user would: ``fusermount3 -u``."""
    for tool in tools:
        try:
            tool.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tool.kill()
            raise AssertionError(f"{tool.args[0]} hangs on the dead mount") from None
    if mount_listed(mount.path):
        run("fusermount3", "-u", str(mount.path))
    assert not mount_listed(mount.path)


# --- small file systems that fill up ------------------------------------------------------


class Tmpfs:
    """A tmpfs of ``size`` MiB on ``path`` (root only); ``resize`` frees the "disk"."""

    def __init__(self, path: Path, size_mib: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path))

    def resize(self, size_mib: int) -> None:
        run("mount", "-o", f"remount,size={size_mib}m", str(self.path))

    def used(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def close(self) -> None:
        if mount_listed(self.path):
            done = run("umount", str(self.path), check=False)
            if done.returncode != 0:
                run("umount", "-l", str(self.path))


class Tally(Counter):
    """A fault module's figures: scenarios injected and survived, requests failed."""

    def inject(self) -> None:
        """A fault scenario starts (a test that passes ``survived`` it)."""
        self["injected"] += 1

    def survived(self, *faults: Fault) -> None:
        """The scenario (one per fault armed) passed every check; ``faults`` all fired."""
        for fault in faults:
            assert fault.fired, "the fault never fired"
            self["failed"] += fault.fired
        self["survived"] += max(1, len(faults))

    def report(self, request, name: str) -> None:
        """One line in the terminal summary, at the end of the module."""
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None and self:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"\n{name}: {self['injected']} fault scenarios, "
                                    f"{self['survived']} survived ({self['failed']} requests "
                                    f"failed on purpose)")


class Box:
    """A test's own container on the fault mount, with a probe file to check the daemon."""

    def __init__(self, name, path, probe, mount, proxy, client, log_start, tally: Tally
                 ) -> None:
        self.name, self.path, self.probe = name, path, probe
        self.mount, self.proxy, self.client = mount, proxy, client
        self.log_start, self.tally = log_start, tally

    def arm(self, fault: Fault) -> Fault:
        self.tally.inject()
        return self.proxy.arm(fault)

    def logged(self, text: str) -> bool:
        """Whether the daemon logged ``text`` during this test."""
        return text in tail(self.mount.log, self.log_start, lines=100000)

    def hash_on_service(self, key: str) -> str | None:
        try:
            return self.client.pithos.head(self.name, key).hash
        except errors.NotFound:
            return None

    def names(self) -> set[str]:
        return names_on_service(self.client, self.name)

    def still_serving(self) -> None:
        """The daemon is alive; the probe file stats and reads right."""
        assert self.mount.proc.poll() is None, "the daemon died"
        target = self.path / "probe"
        assert os.stat(target).st_size == self.probe.stat().st_size
        assert file_top_hash(target) == file_top_hash(self.probe)


_boxes = itertools.count(1)


@contextlib.contextmanager
def fault_box(mount, proxy, client, request, tmp_path: Path, tally: Tally) -> Iterator[Box]:
    """A fresh container for ``request``'s test with a probe file; faults disarmed after,
    and the daemon's log of the test printed if it failed."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"f{next(_boxes)}-{stem}"
    path = mount.path / name
    os.mkdir(path)
    probe = write_random(tmp_path / "probe", 300_000)
    shutil.copyfile(probe, path / "probe")
    start = mount.log_size()
    yield Box(name, path, probe, mount, proxy, client, start, tally)
    proxy.disarm()
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed:
        time.sleep(1)
        print(f"\n--- daemon log during {request.node.name} ---\n{tail(mount.log, start)}")
