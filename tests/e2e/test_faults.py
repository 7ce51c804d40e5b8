"""Injected faults through the real stack (behaviour.md §6, aesthetics.md §5.4).

The mount runs the real CLI and talks to the session's service through a
``FaultProxy`` that fails chosen requests: the Nth block upload answers 500,
the connection drops in the middle of a body, 503 for k attempts, a stall
longer than the client's read timeout. The mount's retry deadline and read
timeout are shortened (``IMAGEFS_HTTP_DEADLINE``/``IMAGEFS_HTTP_TIMEOUT``) so
that a persistent fault is EIO in seconds. Other faults are real: a quota, a
service whose data directory is a full tmpfs, a mount whose cache directory
is a full tmpfs.

Every case asserts four things:

- the errno ``close()`` (or ``read()``/``write()``) reports: EIO once the
  deadline is over for persistent failures, EDQUOT/ENOSPC where they apply;
- a transient fault is bridged: the same ``cp`` succeeds while it clears, and
  after a persistent one is cleared, running the ``cp`` again succeeds;
- the daemon still serves afterwards: a stat and a read work;
- the service holds the previous version or nothing, never a truncated or
  mixed object: hashes are compared with ``imagefs.protocol.hashmap``.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_util import (CACHE_TIMEOUT, expect_errno, file_top_hash, imagefs_command,
                      names_on_service, run, wait_until, write_random)
from fault_proxy import (DEADLINE, Fault, FaultProxy, TIMEOUT, Tally, Tmpfs, block_upload,
                         fault_box, hashmap_put, object_delete, object_get, object_move,
                         start_mount, stop_mount)

from imagefs.client.connection import Connection
from imagefs.service.launcher import running_service

MiB = 1 << 20
BLOCK = 4 * MiB

TALLY = Tally()
survived = TALLY.survived


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _report_tally(request):
    yield
    TALLY.report(request, __name__)




@pytest.fixture
def box(fmount, fproxy, client, request, tmp_path):
    """A fresh container on the fault mount with a probe file; faults disarmed after."""
    with fault_box(fmount, fproxy, client, request, tmp_path, TALLY) as made:
        yield made


def still_serving(mount, path: Path, local: Path) -> None:
    """The daemon is alive, and a stat and a read of ``path`` work."""
    assert mount.proc.poll() is None, "the daemon died"
    assert os.stat(path).st_size == local.stat().st_size
    assert file_top_hash(path) == file_top_hash(local)


def vanishes(path: Path) -> None:
    """A file whose first upload failed does not exist (once its release is through)."""
    wait_until(lambda: not os.path.lexists(path), 3 * CACHE_TIMEOUT,
               what=f"{path.name} gone from the mount")
    expect_errno(errno.ENOENT, os.stat, path)


def no_spill(spill: Path) -> None:
    """No spill file is left once the kernel released the files (it does so just after
    close() returns)."""
    wait_until(lambda: not any(spill.iterdir()), 3 * CACHE_TIMEOUT,
               what="the spill directory empty")


def write_close(local: Path, target: Path) -> None:
    """What cp does, in Python: the OSError of write() or close() reaches the caller."""
    with open(local, "rb") as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, MiB)


# --- transient faults: the same cp succeeds while the fault clears ----------------------


TRANSIENT = {
    # The 3rd block upload fails with 500 once.
    "500-on-3rd-block": lambda c: Fault(block_upload(c), "status", status=500, after=2),
    # The first two block POSTs are cut in the middle of their body.
    "drop-mid-body": lambda c: Fault(block_upload(c), "drop-request", times=2),
    # Hashmap PUTs (the commit, and the questions about missing blocks the mount
    # asks while the file is written) answer 503 three times, then go through.
    "503-three-times": lambda c: Fault(hashmap_put(c), "status", status=503, times=3),
    # The 2nd block upload gets no answer for longer than the read timeout.
    "stall": lambda c: Fault(block_upload(c), "stall", seconds=TIMEOUT + 1.0, after=1),
}


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_transient_fault_is_bridged_by_retries(kind, box, tmp_path):
    local = write_random(tmp_path / "v1.img", 5 * BLOCK + 4321)
    fault = box.arm(TRANSIENT[kind](box.name))
    run("cp", str(local), str(box.path / "v1.img"))

    assert fault.fired == fault.times
    assert box.hash_on_service("v1.img") == file_top_hash(local)
    assert box.names() == {"probe", "v1.img"}
    still_serving(box.mount, box.path / "v1.img", local)
    still_serving(box.mount, box.path / "probe", box.probe)
    survived(fault)


# --- persistent faults: EIO after the deadline, the previous version stays ---------------


PERSISTENT = {
    "500-from-2nd-block": lambda c: Fault(block_upload(c), "status", status=500, after=1,
                                          times=None),
    "drop-mid-body": lambda c: Fault(block_upload(c), "drop-request", times=None),
    "503-on-commit": lambda c: Fault(hashmap_put(c), "status", status=503, times=None),
    "stall": lambda c: Fault(block_upload(c), "stall", seconds=TIMEOUT + 1.0, times=None),
}


@pytest.mark.parametrize("kind", sorted(PERSISTENT))
def test_persistent_fault_is_eio_and_keeps_the_previous_version(kind, box, tmp_path):
    old = write_random(tmp_path / "old.img", 2 * BLOCK + 99)
    new = write_random(tmp_path / "new.img", 3 * BLOCK + 12345)
    target = box.path / "disk.img"
    run("cp", str(old), str(target))
    before = box.client.pithos.head(box.name, "disk.img")

    fault = box.arm(PERSISTENT[kind](box.name))
    expect_errno(errno.EIO, write_close, new, target)
    assert fault.fired
    assert box.logged(f"/{box.name}/disk.img: upload failed: ")
    assert box.logged("service unavailable after")
    after = box.client.pithos.head(box.name, "disk.img")
    assert (after.hash, after.version, after.size) == (before.hash, before.version, before.size)
    assert after.hash == file_top_hash(old)
    assert box.names() == {"probe", "disk.img"}
    still_serving(box.mount, box.path / "probe", box.probe)
    still_serving(box.mount, target, old)

    box.proxy.disarm()
    run("cp", str(new), str(target))
    assert box.hash_on_service("disk.img") == file_top_hash(new)
    still_serving(box.mount, target, new)
    survived(fault)


def test_persistent_fault_on_a_new_file_leaves_nothing(box, tmp_path):
    local = write_random(tmp_path / "new.img", 4 * BLOCK)
    target = box.path / "new.img"
    fault = box.arm(Fault(block_upload(box.name), "status", status=500, after=2, times=None))
    expect_errno(errno.EIO, run_cp_errno, local, target)
    assert box.logged(f"/{box.name}/new.img: upload failed: ")
    assert box.hash_on_service("new.img") is None
    assert box.names() == {"probe"}
    vanishes(target)
    still_serving(box.mount, box.path / "probe", box.probe)

    box.proxy.disarm()
    run("cp", str(local), str(target))
    assert box.hash_on_service("new.img") == file_top_hash(local)
    still_serving(box.mount, target, local)
    survived(fault)


def run_cp_errno(local: Path, target: Path) -> None:
    """``cp``, its failure turned into the OSError it reported (cp prints strerror)."""
    done = run("cp", str(local), str(target), check=False)
    _raise_reported(done.returncode, done.stderr)


def cp_or_kill(mount, local: Path, target: Path, timeout: float = 60) -> None:
    """``run_cp_errno``, but a cp stuck in a write (uninterruptible, even by SIGKILL) is
    freed by killing the daemon, and the test fails instead of hanging."""
    cp = subprocess.Popen(["cp", str(local), str(target)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        _, err = cp.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        mount.proc.kill()
        cp.communicate(timeout=30)
        pytest.fail(f"cp hung for {timeout} s; the daemon was killed to free it")
    _raise_reported(cp.returncode, err)


def _raise_reported(returncode: int, stderr: str) -> None:
    if returncode:
        for code in (errno.EIO, errno.ENOSPC, errno.EDQUOT):
            if os.strerror(code) in stderr:
                raise OSError(code, stderr.strip())
        raise AssertionError(f"cp failed without a known errno: {stderr}")


# --- reads ------------------------------------------------------------------------------


def test_read_faults_are_retried_and_persistent_ones_are_eio(box, tmp_path):
    local = write_random(tmp_path / "r.img", 3 * BLOCK + 77)
    target = box.path / "r.img"
    run("cp", str(local), str(target))

    dropped = box.arm(Fault(object_get(box.name, "r.img"), "drop-response", times=2))
    busy = box.arm(Fault(object_get(box.name, "r.img"), "status", status=503, times=2))
    assert file_top_hash(target) == file_top_hash(local)
    assert (dropped.fired, busy.fired) == (2, 2)
    box.proxy.disarm()

    broken = box.arm(Fault(object_get(box.name, "r.img"), "status", status=500, times=None))
    with open(target, "rb") as f:
        expect_errno(errno.EIO, f.read, MiB)
    assert broken.fired
    still_serving(box.mount, box.path / "probe", box.probe)
    box.proxy.disarm()
    still_serving(box.mount, target, local)
    survived(dropped, busy, broken)


# --- answers lost after the service did the work -----------------------------------------


def test_lost_answers_to_rename_and_unlink_are_not_errors(box, tmp_path):
    """The service moved (deleted) the object but its answer never arrived: the
    client's retry finds no source. ``mv`` and ``rm`` still succeed: what they asked
    for is done."""
    local = write_random(tmp_path / "a.img", 100_000)
    run("cp", str(local), str(box.path / "a.img"))
    before = box.client.pithos.head(box.name, "a.img")

    moved = box.arm(Fault(object_move(box.name), "lose-response"))
    os.rename(box.path / "a.img", box.path / "b.img")
    assert moved.fired == 1
    assert box.names() == {"probe", "b.img"}
    assert box.client.pithos.head(box.name, "b.img").uuid == before.uuid
    assert sorted(os.listdir(box.path)) == ["b.img", "probe"]
    still_serving(box.mount, box.path / "b.img", local)

    deleted = box.arm(Fault(object_delete(box.name), "lose-response"))
    os.unlink(box.path / "b.img")
    assert deleted.fired == 1
    assert box.names() == {"probe"}
    assert sorted(os.listdir(box.path)) == ["probe"]
    still_serving(box.mount, box.path / "probe", box.probe)
    survived(moved, deleted)


# --- quota --------------------------------------------------------------------------------


def test_over_quota_is_edquot_and_stores_nothing(box, tmp_path):
    TALLY.inject()
    box.client.http.request("POST", box.client.pithos.container_url(box.name),
                            params={"update": None}, expected=(202, 204),
                            headers={"X-Container-Policy-Quota": str(3 * BLOCK)})
    local = write_random(tmp_path / "big.img", 4 * BLOCK)
    target = box.path / "big.img"
    expect_errno(errno.EDQUOT, write_close, local, target)
    assert box.logged("quota")
    assert box.names() == {"probe"}
    still_serving(box.mount, box.path / "probe", box.probe)

    box.client.http.request("POST", box.client.pithos.container_url(box.name),
                            params={"update": None}, expected=(202, 204),
                            headers={"X-Container-Policy-Quota": "0"})
    run("cp", str(local), str(target))
    assert box.hash_on_service("big.img") == file_top_hash(local)
    survived()


# --- a full disk on the service -------------------------------------------------------------


def test_full_service_disk_is_enospc_and_stores_nothing(tmp_path_factory, tmp_path):
    TALLY.inject()
    base = tmp_path_factory.mktemp("full-service")
    disk = Tmpfs(base / "disk", 64)
    try:
        with running_service(disk.path / "data", "--workers", "1") as svc, \
                FaultProxy(svc.url) as proxy:
            conn = Connection.open(svc.url, svc.token)
            mount = start_mount(base, proxy, svc.url, svc.token, svc.uuid, deadline=DEADLINE,
                                timeout=TIMEOUT)
            try:
                c = mount.path / "full"
                os.mkdir(c)
                small = write_random(tmp_path / "small", 200_000)
                shutil.copyfile(small, c / "small")
                big = write_random(tmp_path / "big.img", 24 * BLOCK)

                expect_errno(errno.ENOSPC, write_close, big, c / "big.img")
                assert names_on_service(conn, "full") == {"small"}
                still_serving(mount, c / "small", small)
                vanishes(c / "big.img")

                disk.resize(256)  # the administrator makes room
                run("cp", str(big), str(c / "big.img"))
                assert conn.pithos.head("full", "big.img").hash == file_top_hash(big)
                still_serving(mount, c / "big.img", big)
                still_serving(mount, c / "small", small)
            finally:
                stop_mount(mount)
                conn.close()
            check = run(*imagefs_command("check", "--data", str(disk.path / "data")), check=False)
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        disk.close()
    survived()


# --- a full cache directory on the client ----------------------------------------------------


def test_full_cache_dir_is_enospc_and_leaves_no_spill(service, proxy, client,
                                                      tmp_path_factory, tmp_path):
    base = tmp_path_factory.mktemp("full-cache")
    cache = Tmpfs(base / "cache", 12)
    try:
        mount = start_mount(base, proxy, service.url, service.token, service.uuid,
                            cache_dir=cache.path, deadline=DEADLINE, timeout=TIMEOUT)
        try:
            c = mount.path / "f-full-cache"
            os.mkdir(c)
            small = write_random(tmp_path / "small", 200_000)
            shutil.copyfile(small, c / "small")
            big = write_random(tmp_path / "big.img", 8 * BLOCK)
            spill = cache.path / "spill"

            # A sequential copy fills the block buffers, then the spill file: close() fails.
            TALLY.inject()
            expect_errno(errno.ENOSPC, run_cp_errno, big, c / "big.img")
            # More than the buffers and the cache hold: write() fails, and never hangs
            # (writers used to wait forever for a buffer whose hashing had failed).
            TALLY.inject()
            huge = write_random(tmp_path / "huge.img", 24 * BLOCK)
            expect_errno(errno.ENOSPC, cp_or_kill, mount, huge, c / "huge.img")
            # Writes that bypass the buffers (backwards) fail at write().
            TALLY.inject()
            with open(c / "backwards.img", "wb") as out:
                def backwards() -> None:
                    for i in reversed(range(8)):
                        out.seek(i * BLOCK + 1)
                        out.write(os.urandom(BLOCK - 1))
                        out.flush()
                expect_errno(errno.ENOSPC, backwards)
                try:
                    out.close()
                except OSError:
                    pass
            assert names_on_service(client, "f-full-cache") == {"small"}
            no_spill(spill)
            still_serving(mount, c / "small", small)
            survived()
            survived()

            cache.resize(128)  # the user makes room
            run("cp", str(big), str(c / "big.img"))
            assert client.pithos.head("f-full-cache", "big.img").hash == file_top_hash(big)
            still_serving(mount, c / "big.img", big)
            no_spill(spill)
        finally:
            stop_mount(mount)
    finally:
        cache.close()
    survived()
