"""Helpers of the end-to-end tests: running tools, waiting for mounts, reading the
proxy's request log, and asserting errnos (after pyfuse3's test/util.py)."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_proxy import CountingProxy, Request
from imagefs.client.connection import Connection
from imagefs.protocol.hashmap import hash_stream, top_hash

MOUNT_TIMEOUT = 30.0
#: The mount's cache lifetime in these tests (the CLI default).
CACHE_TIMEOUT = 2.0


def imagefs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imagefs", *args]


def run(*cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run a tool; on failure the assertion shows its output."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert done.returncode == 0, (
            f"{' '.join(map(str, cmd))} exited {done.returncode}\n"
            f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}")
    return done


def wait_for_mount(proc: subprocess.Popen, mountpoint: Path, describe,
                   timeout: float = MOUNT_TIMEOUT) -> None:
    """Poll until ``mountpoint`` is a mount; fail at once if the daemon died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(mountpoint):
            return
        if proc.poll() is not None:
            pytest.fail(f"imagefs mount exited with {proc.returncode} before mounting\n"
                        f"{describe()}")
        time.sleep(0.05)
    pytest.fail(f"{mountpoint} not mounted after {timeout} s\n{describe()}")


def umount(proc: subprocess.Popen, mountpoint: Path, timeout: float = 60) -> None:
    """``fusermount3 -u``: assert it and the daemon both exit 0. A mount is busy for a
    moment after it appears (the daemon's own first ``stat`` of it), as any
    filesystem is while something uses it: that is retried for a few seconds."""
    deadline = time.monotonic() + 10
    while True:
        done = run("fusermount3", "-u", str(mountpoint), check=False)
        if done.returncode == 0 or "busy" not in done.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done.returncode == 0, f"fusermount3 -u exited {done.returncode}: {done.stderr}"
    assert proc.wait(timeout=timeout) == 0, f"daemon exited with {proc.returncode}"
    assert not os.path.ismount(mountpoint)


def cleanup(proc: subprocess.Popen | None, mountpoint: Path) -> None:
    """Whatever is left after a failure: lazy unmount, then terminate/kill."""
    if mount_listed(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs: exited (even if no init reaped it yet) is not running."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def mount_fields(mountpoint: Path) -> list[str] | None:
    """The /proc/self/mounts line of ``mountpoint`` (source, target, type, options, ...)."""
    target = str(mountpoint).replace(" ", "\\040")
    with open("/proc/self/mounts") as f:
        for line in f:
            if line.split()[1] == target:
                return line.split()
    return None


def mount_listed(mountpoint: Path) -> bool:
    """Is ``mountpoint`` mounted? (Reads /proc, never touches a possibly hung mount.)"""
    return mount_fields(mountpoint) is not None


def file_top_hash(path: Path, block_size: int = 4 << 20) -> str:
    """The Pithos object hash of a local file's content."""
    with open(path, "rb") as f:
        _, hashes = hash_stream(iter(lambda: f.read(1 << 20), b""), block_size)
    return top_hash(hashes)


def write_random(path: Path, size: int, seed: int = 0) -> Path:
    """``size`` pseudo-random bytes (cheap: a random 1 MiB pattern shifted per MiB)."""
    pattern = os.urandom(1 << 20) if seed == 0 else _seeded(seed)
    with open(path, "wb") as f:
        done = 0
        i = 0
        while done < size:
            piece = (i.to_bytes(8, "little") + pattern[8:])[: min(1 << 20, size - done)]
            f.write(piece)
            done += len(piece)
            i += 1
    return path


def _seeded(seed: int) -> bytes:
    return random.Random(seed).randbytes(1 << 20)


@dataclass
class Mount:
    path: Path
    log: Path
    output: Path
    proc: subprocess.Popen
    proxy: CountingProxy
    account: str

    def describe(self, since: int = 0) -> str:
        return (f"--- daemon output ---\n{tail(self.output)}\n"
                f"--- daemon log ---\n{tail(self.log, since)}")

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def requests(self, mark: int) -> list[Request]:
        return self.proxy.since(mark)


def tail(path: Path, since: int = 0, lines: int = 150) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(none)"
    return "\n".join(text.splitlines()[-lines:])


# --- request classification (paths as the proxy records them, percent-decoded) ---------


def object_store_parts(req: Request) -> list[str] | None:
    """[account, container, object...] of an object-store request, else None."""
    marker = "/object-store/v1/"
    if marker not in req.path:
        return None
    rest = req.path.split(marker, 1)[1]
    account, _, tail = rest.partition("/")
    if not tail:
        return [account]
    container, _, name = tail.partition("/")
    return [account, container] + ([name] if name else [])


def block_posts(reqs: list[Request], container: str | None = None) -> list[Request]:
    """Block uploads: POST <container>?update with a body."""
    found = []
    for r in reqs:
        parts = object_store_parts(r)
        if (r.method == "POST" and parts and len(parts) == 2 and "update" in r.query
                and r.sent > 0 and (container is None or parts[1] == container)):
            found.append(r)
    return found


def object_requests(reqs: list[Request], container: str, name: str | None = None,
                    method: str | None = None) -> list[Request]:
    found = []
    for r in reqs:
        parts = object_store_parts(r)
        if not parts or len(parts) < 3 or parts[1] != container:
            continue
        if name is not None and parts[2] != name:
            continue
        if method is not None and r.method != method:
            continue
        found.append(r)
    return found


def listings(reqs: list[Request], container: str) -> list[Request]:
    """GETs of a container (object listings)."""
    return [r for r in reqs if r.method == "GET" and (p := object_store_parts(r))
            and len(p) == 2 and p[1] == container]



def names_on_service(client: Connection, container: str, prefix: str = "") -> set[str]:
    return {o.name for o in client.pithos.list_objects(container, prefix=prefix)}


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until true (returns its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def expect_errno(code: int, func, *args, **kw) -> OSError:
    """Call ``func``; assert it raises OSError with exactly ``code``."""
    with pytest.raises(OSError) as info:
        func(*args, **kw)
    assert info.value.errno == code, (
        f"expected {errno.errorcode[code]}, got "
        f"{errno.errorcode.get(info.value.errno, info.value.errno)}: {info.value}")
    return info.value
