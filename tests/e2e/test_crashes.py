"""Crashes: kill -9 of the service or of the mount daemon in the middle of a write.

behaviour.md §6: "a failed upload leaves the previous version of the object
(or no object) on the service, never a truncated one, and the command that
failed can simply be run again". A crash is the hardest failure: nothing
runs afterwards to clean up. These tests run their own service (so that
``imagefs check`` of its data directory sees only their objects and so that
it can be killed) behind a ``FaultProxy`` whose ``hold`` fault stops a chosen
request, so that the kill lands at a known point:

- the service is killed (SIGKILL, the whole process group) while a block
  upload is in flight and restarted on its data directory: the mount's
  retries bridge the outage and the same ``cp`` completes;
- the daemon is killed in the middle of a 64 MiB copy (a block upload in
  flight), at the commit (the hashmap PUT held, then delivered or lost), and
  while a sidecar is half written or its registration is about to be sent.

After remounting (no manual repair), the service holds the old state or the
complete new one, nothing else is in the container, the data directory
checks clean, spill files of the dead daemon are gone, and running the same
command again succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_util import (cleanup, file_top_hash, imagefs_command, names_on_service, run, tail,
                      write_random)
from fault_proxy import (Fault, FaultProxy, block_upload, changes_to, commit_put, kill_daemon,
                         start_mount, stop_mount, unmount_dead)

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.service.launcher import running_service

MiB = 1 << 20
BLOCK = 4 * MiB
#: Long enough for the service to come back after a kill (it starts in about a second).
DEADLINE = 30.0

TALLY: Counter = Counter()


class Cloud:
    """This module's own service, which tests may kill and restart, behind a fault proxy."""

    def __init__(self, data_dir: Path, proxy_stack: contextlib.ExitStack) -> None:
        self.data_dir = data_dir
        self._stack = contextlib.ExitStack()
        self.svc = self._stack.enter_context(running_service(data_dir))
        self.proxy = proxy_stack.enter_context(FaultProxy(self.svc.url))
        self.client = Connection.open(self.svc.url, self.svc.token)

    def kill(self) -> None:
        """SIGKILL the service and its workers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.svc.process.pid, signal.SIGKILL)
        self.svc.process.wait(timeout=30)

    def restart(self) -> None:
        """Start the service again on the same data directory (a new port)."""
        old, self._stack = self._stack, contextlib.ExitStack()
        old.close()
        token = self.svc.token
        self.svc = self._stack.enter_context(running_service(self.data_dir))
        assert self.svc.token == token
        self.proxy.retarget(self.svc.url)
        self.client.close()
        self.client = Connection.open(self.svc.url, self.svc.token)

    def check(self) -> None:
        """``imagefs check`` of the data directory finds nothing wrong."""
        done = run(*imagefs_command("check", "--data", str(self.data_dir)), check=False)
        assert done.returncode == 0, f"imagefs check:\n{done.stdout}{done.stderr}"

    def close(self) -> None:
        self.client.close()
        self._stack.close()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, request):
    with contextlib.ExitStack() as stack:
        c = Cloud(tmp_path_factory.mktemp("crash-service") / "data", stack)
        stack.callback(c.close)
        yield c
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TALLY:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{__name__}: {TALLY['injected']} crashes, "
                                f"{TALLY['survived']} survived")


@pytest.fixture
def site(cloud, tmp_path, request):
    """A mount of the module's service (killed or not by the test), and a fresh container."""
    base = tmp_path / "site"
    base.mkdir()
    mounts = []

    def mount():
        m = start_mount(base, cloud.proxy, cloud.svc.url, cloud.svc.token, cloud.svc.uuid,
                        deadline=DEADLINE)
        mounts.append(m)
        return m

    container = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    yield Site(cloud, base, container, mount)
    cloud.proxy.disarm()
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed:
        time.sleep(1)
        print(f"\n--- daemon log during {request.node.name} ---\n"
              f"{tail(base / 'daemon.log', lines=200)}")
    # The live mount first: a killed one shares its mount point.
    for m in sorted(mounts, key=lambda m: m.proc.poll() is not None):
        if m.proc.poll() is None:
            stop_mount(m)
        else:
            cleanup(m.proc, m.path)  # killed: a test that failed may have left it mounted
    if cloud.svc.process.poll() is not None:
        cloud.restart()  # a test that failed may have left the service dead


class Site:
    def __init__(self, cloud: Cloud, base: Path, container: str, mount) -> None:
        self.cloud, self.base, self.container, self.mount = cloud, base, container, mount
        self.spill = base / "cache" / "spill"

    def head_hash(self, key: str) -> str | None:
        try:
            return self.cloud.client.pithos.head(self.container, key).hash
        except errors.NotFound:
            return None

    def names(self) -> set[str]:
        return names_on_service(self.cloud.client, self.container)

    def spill_files(self, pid: int) -> list[Path]:
        return sorted(self.spill.glob(f"{pid}-*.spill")) if self.spill.exists() else []


def crashed() -> None:
    TALLY["injected"] += 1


def survived() -> None:
    TALLY["survived"] += 1


def start_cp(src: Path, dst: Path) -> subprocess.Popen:
    return subprocess.Popen(["cp", str(src), str(dst)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def reap(proc: subprocess.Popen) -> None:
    """Whatever happened: the process is gone and its pipes are closed."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def failed(proc: subprocess.Popen) -> None:
    """The tool whose daemon died failed (ENOTCONN, or EIO) rather than succeeding."""
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0, "the tool succeeded although its mount died"
    assert err or proc.returncode < 0


# --- the service dies ----------------------------------------------------------------------


def test_service_killed_and_restarted_mid_upload(site, tmp_path):
    cloud = site.cloud
    m = site.mount()
    c = m.path / site.container
    os.mkdir(c)
    old = write_random(tmp_path / "old.img", 2 * BLOCK + 5)
    run("cp", str(old), str(c / "disk.img"))
    new = write_random(tmp_path / "new.img", 12 * BLOCK + 999)

    hold = cloud.proxy.arm(Fault(block_upload(site.container), "hold", after=2))
    cp = start_cp(new, c / "disk.img")
    try:
        hold.wait_reached()
        cloud.kill()
        crashed()
        hold.release()  # forwarded to a dead service: 502, retried by the mount
        cloud.restart()
        _, err = cp.communicate(timeout=120)
    finally:
        if cp.poll() is None:
            cp.kill()
    assert cp.returncode == 0, f"cp failed across the restart: {err}"
    assert site.head_hash("disk.img") == file_top_hash(new)
    assert site.names() == {"disk.img"}
    assert m.proc.poll() is None
    assert os.stat(c / "disk.img").st_size == new.stat().st_size
    assert file_top_hash(c / "disk.img") == file_top_hash(new)
    cloud.check()
    survived()


# --- the daemon dies -------------------------------------------------------------------------


def _after_crash(site: Site, dead_pid: int, expected: dict[str, Path]) -> object:
    """Remount; the service holds exactly ``expected`` (name -> local content), the dead
    daemon's spill files are gone, and the mount shows the same."""
    assert site.names() == set(expected)
    for name, local in expected.items():
        assert site.head_hash(name) == file_top_hash(local), f"{name} is not what it was"
    m = site.mount()
    assert site.spill_files(dead_pid) == []
    c = m.path / site.container
    assert sorted(os.listdir(c)) == sorted(expected)
    for name, local in expected.items():
        assert os.stat(c / name).st_size == local.stat().st_size
        assert file_top_hash(c / name) == file_top_hash(local)
    site.cloud.check()
    return m


def test_daemon_killed_mid_large_copy(site, tmp_path):
    m = site.mount()
    c = m.path / site.container
    os.mkdir(c)
    old = write_random(tmp_path / "old.img", 3 * BLOCK + 17)
    run("cp", str(old), str(c / "big.img"))
    new = write_random(tmp_path / "new.img", 64 * MiB)

    hold = site.cloud.proxy.arm(Fault(block_upload(site.container), "hold", after=4))
    cp = start_cp(new, c / "big.img")
    hold.wait_reached()
    assert site.spill_files(m.proc.pid), "the copy should be spilling"
    kill_daemon(m)
    crashed()
    unmount_dead(m, cp)
    hold.release(wait=True)  # the block the daemon sent still arrives: harmless
    failed(cp)
    assert site.spill_files(m.proc.pid), "kill -9 leaves the spill file behind"

    m2 = _after_crash(site, m.proc.pid, {"big.img": old})
    run("cp", str(new), str(m2.path / site.container / "big.img"))
    assert site.head_hash("big.img") == file_top_hash(new)
    survived()


@pytest.mark.parametrize("delivered", [False, True], ids=["lost", "delivered"])
def test_daemon_killed_at_the_commit(delivered, site, tmp_path):
    """The hashmap PUT is in flight when the daemon dies: the service gets it (new
    version, complete) or not (old version); nothing in between."""
    m = site.mount()
    c = m.path / site.container
    os.mkdir(c)
    old = write_random(tmp_path / "old.img", BLOCK + 3)
    run("cp", str(old), str(c / "d.img"))
    new = write_random(tmp_path / "new.img", 5 * BLOCK + 3)

    hold = site.cloud.proxy.arm(Fault(commit_put(site.container, "d.img"), "hold",
                                      forward=delivered))
    cp = start_cp(new, c / "d.img")
    hold.wait_reached()
    kill_daemon(m)
    crashed()
    unmount_dead(m, cp)
    hold.release(wait=True)
    failed(cp)

    m2 = _after_crash(site, m.proc.pid, {"d.img": new if delivered else old})
    run("cp", str(new), str(m2.path / site.container / "d.img"))
    assert site.head_hash("d.img") == file_top_hash(new)
    survived()


def test_daemon_killed_with_a_file_half_written(site, tmp_path):
    """A writer has the file open, half its new content written, nothing closed."""
    m = site.mount()
    c = m.path / site.container
    os.mkdir(c)
    old = write_random(tmp_path / "old.img", 2 * BLOCK)
    run("cp", str(old), str(c / "h.img"))
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys\n"
         "f = open(sys.argv[1], 'r+b')\n"
         "for i in range(6):\n"
         "    f.write(os.urandom(1 << 20))\n"
         "f.flush()\n"
         "print('written', flush=True)\n"
         "sys.stdin.read()\n"
         "f.close()\n",
         str(c / "h.img")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
        kill_daemon(m)
        crashed()
        writer.stdin.close()  # the writer closes its file now: the daemon is gone
        unmount_dead(m, writer)
    finally:
        reap(writer)
    assert writer.returncode != 0
    _after_crash(site, m.proc.pid, {"h.img": old})
    survived()


# --- sidecars ----------------------------------------------------------------------------------


OLD_META = {"name": "Crash Test Old", "properties": {"OS": "Linux", "ROLE": "old"}}
NEW_META = {"name": "Crash Test New", "properties": {"USER": "root", "ROLE": "new"}}


def _registration(site: Site, name: str) -> tuple[str, dict[str, str]] | None:
    info = site.cloud.client.pithos.head(site.container, name)
    try:
        image = site.cloud.client.plankton.get(info.uuid)
    except errors.NotFound:
        return None
    return image.name, {k.upper(): v for k, v in image.properties.items()}


def _shown(path: Path) -> tuple[str, dict[str, str]]:
    doc = json.loads(path.read_bytes())
    return doc["name"], {k.upper(): v for k, v in doc["properties"].items()}


@pytest.mark.parametrize("point", ["half-written", "first-change-lost", "metafile-lost"])
def test_daemon_killed_mid_sidecar_write(point, site, tmp_path):
    """The sidecar's text half written; the first request that would change anything
    lost; the registration done but the metafile object not stored (the sidecar shows
    the registration, which is the new one: the stored metafile is only kamaki's copy).
    A death between the unregister and the register of a re-registration is
    ``test_crash_journal.py``'s."""
    m = site.mount()
    c = m.path / site.container
    os.mkdir(c)
    image = write_random(tmp_path / "os.img", MiB + 1)
    run("cp", str(image), str(c / "os.img"))
    (c / "os.img.meta").write_text(json.dumps(OLD_META))
    old = ("Crash Test Old", {"OS": "Linux", "ROLE": "old"})
    assert _registration(site, "os.img") == old
    assert _shown(c / "os.img.meta") == old
    before = site.names()
    text = json.dumps(NEW_META).encode()

    if point == "half-written":
        writer = subprocess.Popen(
            [sys.executable, "-c",
             "import sys\n"
             "f = open(sys.argv[1], 'wb')\n"
             "f.write(sys.argv[2].encode()[:len(sys.argv[2]) // 2])\n"
             "f.flush()\n"
             "print('written', flush=True)\n"
             "sys.stdin.read()\n"
             "f.close()\n",
             str(c / "os.img.meta"), text.decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "written"
            kill_daemon(m)
            crashed()
            writer.stdin.close()
            unmount_dead(m, writer)
        finally:
            reap(writer)
        assert writer.returncode != 0
    else:
        # The first request that would change the registration or the stored metafile
        # (or only the metafile) is held; the daemon dies; the request never arrives.
        hold = site.cloud.proxy.arm(Fault(
            changes_to(site.container, "os.img.meta", images=point == "first-change-lost"),
            "hold", forward=False))
        cp = start_cp(_local(tmp_path / "new.meta", text), c / "os.img.meta")
        hold.wait_reached()
        kill_daemon(m)
        crashed()
        unmount_dead(m, cp)
        hold.release(wait=True)
        failed(cp)

    new = ("Crash Test New", {"USER": "root", "ROLE": "new"})
    now = new if point == "metafile-lost" else old
    assert site.names() == before
    assert _registration(site, "os.img") == now
    m2 = site.mount()
    assert site.spill_files(m.proc.pid) == []
    c2 = m2.path / site.container
    assert _shown(c2 / "os.img.meta") == now
    assert file_top_hash(c2 / "os.img") == file_top_hash(image)
    site.cloud.check()

    # The same write, again: it registers.
    run("cp", str(_local(tmp_path / "new.meta", text)), str(c2 / "os.img.meta"))
    assert _registration(site, "os.img") == new
    assert _shown(c2 / "os.img.meta") == new
    assert site.names() == before
    survived()


def _local(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
