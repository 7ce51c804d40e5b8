"""Crashes between the requests of one image change, and whose leftovers a mount may remove.

Writing a registered file's sidecar overrides its registration in several
requests (unregister, register, status: api.md D2); ``rm NAME.meta``
unregisters, then deletes the stored sidecar. ``imagefs.fs.journal`` writes
an intent before the first request; the next mount on the same cache
directory finishes the change, or puts the previous registration back when
the service refuses the new one. These tests kill the daemon (``kill -9``)
while the fault proxy holds the request after the first (the unregister went
through: the image is unregistered, neither state), remount, and check that
the service and the mount show the complete new state (or the old one) with
the same image id, nothing stray in the container, and a clean ``imagefs
check``.

Liveness is a lock held by each mount, not its pid: a second mount on the
same cache directory keeps the spill files of a mount that runs, and removes
those of a mount that ended, even when its pid now belongs to another
process.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from e2e_util import (cleanup, imagefs_command, names_on_service, run, tail, wait_until,
                      write_random)
from fault_proxy import (Fault, FaultProxy, Incoming, kill_daemon, object_delete, start_mount,
                         stop_mount, unmount_dead)

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.service.launcher import running_service

MiB = 1 << 20
DEADLINE = 30.0
OLD_META = {"name": "Journal Old", "properties": {"OS": "Linux", "ROLE": "old"}}
NEW_META = {"name": "Journal New", "disk-format": "extdump", "status": "testing",
            "properties": {"USER": "root", "ROLE": "new"}}
OLD = ("Journal Old", "diskdump", {"OS": "Linux", "ROLE": "old"})
NEW = ("Journal New", "extdump", {"USER": "root", "ROLE": "new"})


class Cloud:
    """This module's own service (``imagefs check`` sees only its objects), behind a
    fault proxy."""

    def __init__(self, data_dir: Path, stack: contextlib.ExitStack) -> None:
        self.data_dir = data_dir
        self.svc = stack.enter_context(running_service(data_dir))
        self.proxy = stack.enter_context(FaultProxy(self.svc.url))
        self.client = Connection.open(self.svc.url, self.svc.token)
        stack.callback(self.client.close)

    def check(self) -> None:
        done = run(*imagefs_command("check", "--data", str(self.data_dir)), check=False)
        assert done.returncode == 0, f"imagefs check:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        yield Cloud(tmp_path_factory.mktemp("journal-service") / "data", stack)


class Site:
    """Mounts of the module's service sharing one cache directory, and a container."""

    def __init__(self, cloud: Cloud, base: Path, container: str) -> None:
        self.cloud, self.base, self.container = cloud, base, container
        self.cache = base / "cache"
        self.mounts = []

    def mount(self, where: str = "m"):
        log = self.base / where / "daemon.log"
        start = log.stat().st_size if log.exists() else 0
        m = start_mount(self.base / where, self.cloud.proxy, self.cloud.svc.url,
                        self.cloud.svc.token, self.cloud.svc.uuid, cache_dir=self.cache,
                        deadline=DEADLINE)
        self.mounts.append(m)
        # The daemon's own first stat of its mount point, which pins the mount, is over
        # (an unmount at once would otherwise fail with EBUSY).
        wait_until(lambda: f"serving {m.path}" in tail(m.log, start), 30, 0.02,
                   "the daemon serving")
        return m

    def names(self) -> set[str]:
        return names_on_service(self.cloud.client, self.container)

    def registration(self, uuid: str) -> tuple[str, str, dict[str, str]] | None:
        try:
            image = self.cloud.client.plankton.get(uuid)
        except errors.NotFound:
            return None
        assert image.id == uuid  # the image is its object (D2: re-registering keeps it)
        return image.name, image.disk_format, {k.upper(): v for k, v in
                                               image.properties.items()}

    def stored_meta(self) -> dict:
        """The stored metafile object (kamaki's copy of the registration)."""
        pithos = self.cloud.client.pithos
        size = pithos.head(self.container, "os.img.meta").size
        return json.loads(pithos.read(self.container, "os.img.meta", 0, size))

    def intents(self) -> list[Path]:
        journal = self.cache / "journal"
        return sorted(journal.glob("*.json")) if journal.exists() else []

    def lock_files(self) -> list[str]:
        locks = self.cache / "locks"
        return sorted(os.listdir(locks)) if locks.exists() else []


_numbers = itertools.count(1)


@pytest.fixture
def site(cloud, tmp_path, request):
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:32]
    container = f"{stem}-{next(_numbers)}"
    s = Site(cloud, tmp_path / "site", container)
    yield s
    cloud.proxy.disarm()
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed:
        time.sleep(1)
        for m in s.mounts:
            print(f"\n--- daemon log of {m.path} ---\n{tail(m.log, lines=200)}")
    for m in sorted(s.mounts, key=lambda m: m.proc.poll() is not None):
        if m.proc.poll() is None:
            stop_mount(m)
        else:
            cleanup(m.proc, m.path)


def image_register(r: Incoming) -> bool:
    """POST .../image/v1.0/images/: a registration."""
    return r.method == "POST" and "/image/" in r.path and r.path.rstrip("/").endswith("/images")


def shown(path: Path) -> tuple[str, str, dict[str, str]]:
    doc = json.loads(path.read_bytes())
    return doc["name"], doc["disk-format"], {k.upper(): v for k, v in doc["properties"].items()}


def _registered_file(site: Site, tmp_path: Path):
    """A mount with ``os.img`` registered as OLD_META through its sidecar."""
    m = site.mount()
    c = m.path / site.container
    os.mkdir(c)
    write_random(tmp_path / "os.img", MiB + 1)
    run("cp", str(tmp_path / "os.img"), str(c / "os.img"))
    (c / "os.img.meta").write_text(json.dumps(OLD_META))
    uuid = site.cloud.client.pithos.head(site.container, "os.img").uuid
    assert site.registration(uuid) == OLD
    return m, c, uuid


def _died(m, tool: subprocess.Popen, hold: Fault) -> None:
    """kill -9 the daemon while ``hold`` holds its request; the tool fails."""
    kill_daemon(m)
    unmount_dead(m, tool)
    hold.release(wait=True)
    _, err = tool.communicate(timeout=30)
    assert tool.returncode != 0, "the tool succeeded although its mount died"


@pytest.mark.parametrize("replay", ["finished", "refused"])
def test_daemon_killed_between_unregister_and_register(replay, site, tmp_path):
    """The unregister went through, the register is held: the image is unregistered.
    The next mount registers it as the new sidecar says (same id); if the service now
    refuses that, the previous registration comes back."""
    m, c, uuid = _registered_file(site, tmp_path)
    before = site.names()
    new_text = tmp_path / "new.meta"
    new_text.write_text(json.dumps(NEW_META))

    mark = site.cloud.proxy.mark()
    hold = site.cloud.proxy.arm(Fault(image_register, "hold", forward=False))
    cp = subprocess.Popen(["cp", str(new_text), str(c / "os.img.meta")],
                          stderr=subprocess.PIPE, text=True)
    hold.wait_reached()
    unregistered = [r for r in site.cloud.proxy.since(mark)
                    if r.method == "DELETE" and r.path.endswith(f"/images/{uuid}")]
    assert [r.status for r in unregistered] == [204]
    assert site.registration(uuid) is None, "the crash window: neither old nor new"
    assert len(site.intents()) == 1
    _died(m, cp, hold)
    assert site.registration(uuid) is None  # nothing ran since: no repair by hand

    refuse = None
    if replay == "refused":
        refuse = site.cloud.proxy.arm(Fault(image_register, "status", status=400))
    log_start = m.log_size()
    m2 = site.mount()
    expected = NEW if replay == "finished" else OLD
    assert site.registration(uuid) == expected
    if refuse is not None:
        assert refuse.fired == 1  # refused once, then the previous one registered
    image = site.cloud.client.plankton.get(uuid)
    assert image.status.lower() == ("testing" if replay == "finished" else "available")
    c2 = m2.path / site.container
    assert shown(c2 / "os.img.meta") == expected
    stored = site.stored_meta()
    assert (stored["name"], stored["id"]) == (expected[0], uuid)
    assert (c2 / "os.img").read_bytes() == (tmp_path / "os.img").read_bytes()
    assert site.names() == before
    assert site.intents() == []
    assert not any(name.startswith(f"{m.proc.pid}-") for name in site.lock_files())
    assert "recovered an image change interrupted by a crash" in tail(m2.log, log_start)
    site.cloud.check()

    # The same write again registers it; nothing is left of the journal.
    run("cp", str(new_text), str(c2 / "os.img.meta"))
    assert site.registration(uuid) == NEW
    assert site.intents() == [] and site.names() == before


def test_daemon_killed_between_unregister_and_sidecar_delete(site, tmp_path):
    """``rm NAME.meta``: unregistered, the stored sidecar not yet deleted. The next
    mount finishes: no registration, no stored sidecar, nothing shown."""
    m, c, uuid = _registered_file(site, tmp_path)
    before = site.names()
    assert "os.img.meta" in before

    hold = site.cloud.proxy.arm(Fault(object_delete(site.container), "hold", forward=False))
    rm = subprocess.Popen(["rm", str(c / "os.img.meta")], stderr=subprocess.PIPE, text=True)
    hold.wait_reached()
    assert site.registration(uuid) is None
    assert "os.img.meta" in site.names(), "the crash window: a stale metafile stays stored"
    _died(m, rm, hold)

    m2 = site.mount()
    assert site.registration(uuid) is None
    assert site.names() == before - {"os.img.meta"}
    assert sorted(os.listdir(m2.path / site.container)) == ["os.img"]
    assert site.intents() == []
    site.cloud.check()


def test_a_crash_before_the_unregister_changes_nothing(site, tmp_path):
    """The unregister itself is lost with the daemon: the old registration stays, and
    the next mount drops the intent without sending a change."""
    m, c, uuid = _registered_file(site, tmp_path)
    new_text = tmp_path / "new.meta"
    new_text.write_text(json.dumps(NEW_META))
    lost = site.cloud.proxy.arm(Fault(
        lambda r: r.method == "DELETE" and f"/images/{uuid}" in r.path, "hold", forward=False))
    cp = subprocess.Popen(["cp", str(new_text), str(c / "os.img.meta")],
                          stderr=subprocess.PIPE, text=True)
    lost.wait_reached()
    _died(m, cp, lost)
    assert len(site.intents()) == 1

    mark = site.cloud.proxy.mark()
    m2 = site.mount()
    changes = [r for r in site.cloud.proxy.since(mark)
               if "/image/" in r.path and r.method in ("POST", "PUT", "DELETE")]
    assert changes == []
    assert site.registration(uuid) == OLD
    assert shown(m2.path / site.container / "os.img.meta") == OLD
    assert site.intents() == []


def test_spill_files_of_a_running_mount_stay(site):
    """Mount B starts on the cache directory of mount A, which runs: A's spill files
    stay. Those of a mount that ended go, even when its pid (here 1) runs: the lock
    it held is free."""
    spill = site.cache / "spill"
    spill.mkdir(parents=True)
    (site.cache / "locks").mkdir()
    dead = spill / "1-0dead001-1.spill"
    dead.write_bytes(b"left by a killed mount")
    (site.cache / "locks" / "1-0dead001.lock").touch()

    a = site.mount("a")
    assert not dead.exists()
    [a_lock] = site.lock_files()  # the dead mount's went with its spill file
    assert a_lock.startswith(f"{a.proc.pid}-")
    a_spill = spill / f"{a_lock[:-len('.lock')]}-999.spill"
    a_spill.write_bytes(b"a file being written by mount A")

    b = site.mount("b")
    assert a_spill.exists(), "mount B removed a spill file of the running mount A"
    assert len(site.lock_files()) == 2
    stop_mount(b)
    assert site.lock_files() == [a_lock]
    stop_mount(a)
    assert site.lock_files() == [a_lock]  # its spill file is left: the lock file too

    c = site.mount("c")
    assert not a_spill.exists()
    assert [n for n in site.lock_files() if not n.startswith(f"{c.proc.pid}-")] == []
