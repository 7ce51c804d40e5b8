"""The write-ahead journal of image changes and the mounts' liveness locks (imagefs.fs.journal).

Pure parts as tables (the intent format, ``decide``, file names); the files
and locks on a temporary cache directory, with a real other process holding
a lock; ``recover`` against the session's real service, with the crash
states made by hand (an intent on disk, the registration half changed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.client.models import Image
from imagefs.fs import journal
from imagefs.fs.blocking import Workers
from imagefs.fs.journal import Decision, Intent, Journal, Kind, OwnerLock, decide
from imagefs.image.metafile import Registration
from imagefs.protocol import headers as H

ACCOUNT = "3f0c1e7a-0000-4000-8000-000000000001"
OTHER = "3f0c1e7a-0000-4000-8000-000000000002"
OLD = Registration(name="Old", properties={"os": "linux", "role": "old"})
NEW = Registration(name="New", disk_format="extdump", is_public=True, status="testing",
                   properties={"user": "root"})


def image(registration: Registration, *, status: str | None = None) -> Image:
    """What the service shows after registering ``registration``."""
    return Image(id="u1", name=registration.name, location="pithos://a/c/x", owner=ACCOUNT,
                 size=1, checksum="h", disk_format=registration.disk_format,
                 container_format=registration.container_format,
                 status=status or registration.status or "available",
                 is_public=registration.is_public, created_at="", updated_at="",
                 properties=dict(registration.properties))


def intent(kind: Kind = Kind.REGISTER, previous: Registration | None = OLD,
           new: Registration | None = NEW, account: str = ACCOUNT, owner: str = "7-ab12") -> Intent:
    return Intent(kind=kind, account=account, owner=owner, container="c", image_name="d/x.img",
                  uuid="u1", location="pithos://a/c/d/x.img", previous=previous,
                  new=new if kind is Kind.REGISTER else None)


# -- the format -------------------------------------------------------------------------------


@pytest.mark.parametrize("it", [intent(), intent(previous=None), intent(Kind.UNREGISTER),
                                intent(new=Registration(name="ü \u2603", status=None))],
                         ids=["override", "first", "unregister", "unicode"])
def test_intent_round_trip(it):
    assert Intent.from_json(it.to_json()) == it
    assert Intent.from_json(it.to_json().encode()) == it


def test_intent_holds_no_secret_and_the_fields_to_replay():
    doc = json.loads(intent().to_json())
    assert set(doc) == {"version", "kind", "account", "owner", "container", "image_name",
                        "uuid", "location", "previous", "new"}
    assert doc["new"] == {"name": "New", "disk_format": "extdump", "container_format": "bare",
                          "is_public": True, "status": "testing",
                          "properties": {"user": "root"}}


def _doc(**change) -> bytes:
    doc = json.loads(intent().to_json())
    doc.update(change)
    return json.dumps(doc).encode()


BAD = [
    (b"", "empty"),
    (b'{"version": 1, "kind": "register", "acc', "half written"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"[1, 2]", "not an object"),
    (_doc(kind="merge"), "unknown kind"),
    (_doc(account=""), "empty account"),
    (_doc(uuid=7), "uuid not a string"),
    (_doc(new=None), "register without new"),
    (_doc(new={"name": "x"}), "registration without formats"),
    (_doc(previous={**json.loads(intent().to_json())["previous"], "is_public": "yes"}),
     "is_public not a boolean"),
    (_doc(previous={**json.loads(intent().to_json())["previous"], "properties": {"a": 1}}),
     "property not a string"),
]


@pytest.mark.parametrize("text, why", BAD, ids=[b[1] for b in BAD])
def test_not_an_intent(text, why):
    with pytest.raises(ValueError):
        Intent.from_json(text)


# -- decisions ----------------------------------------------------------------------------------

DECISIONS = [
    # kind, previous, live registration (None: not registered), decision
    ("register", OLD, NEW, Decision.DONE),
    ("register", OLD, OLD, Decision.UNTOUCHED),  # the unregister never arrived
    ("register", OLD, None, Decision.REDO),  # unregistered, not registered again
    ("register", OLD, dataclasses.replace(NEW, status=None), Decision.REDO),  # status not set
    ("register", OLD, Registration(name="Else"), Decision.REDO),
    ("register", None, None, Decision.UNTOUCHED),
    ("register", None, NEW, Decision.DONE),
    ("register", None, dataclasses.replace(NEW, status=None), Decision.REDO),
    ("unregister", OLD, None, Decision.REDO),  # unregistered; the sidecar may be stored
    ("unregister", OLD, OLD, Decision.UNTOUCHED),
    ("unregister", None, Registration(name="Else"), Decision.UNTOUCHED),
]


@pytest.mark.parametrize("kind, previous, live, expected", DECISIONS,
                         ids=[f"{d[0]}-{i}" for i, d in enumerate(DECISIONS)])
def test_decide(kind, previous, live, expected):
    live_image = None if live is None else image(live)
    assert decide(intent(Kind(kind), previous), live_image) is expected


def test_decide_status_rules():
    """A registration without a status leaves ``available``; statuses compare in any case
    (a real deployment answers AVAILABLE)."""
    plain = dataclasses.replace(NEW, status=None)
    it = intent(new=plain)
    assert decide(it, image(plain, status="AVAILABLE")) is Decision.DONE
    assert decide(it, image(plain, status="testing")) is Decision.REDO
    assert decide(intent(), image(NEW, status="TESTING")) is Decision.DONE


TAGS = [
    ("123-ab12cd34-7.spill", "123-ab12cd34"),
    ("123-ab12cd34.lock", "123-ab12cd34"),
    ("123-ab12cd34-12.json", "123-ab12cd34"),
    (".123-ab12cd34-12.json.tmp", "123-ab12cd34"),
    ("notes.txt", None),
    ("x-1.spill", None),
    ("123.spill", None),
]


@pytest.mark.parametrize("name, tag", TAGS, ids=[t[0] for t in TAGS])
def test_tag_of(name, tag):
    assert journal.tag_of(name) == tag


# -- files ---------------------------------------------------------------------------------------


def test_write_is_private_and_remove_forgets(tmp_path):
    j = Journal(tmp_path, "7-ab12", ACCOUNT).open()
    path = j.write(intent())
    assert stat.S_IMODE(os.stat(j.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.name == "7-ab12-1.json" and j.left_by("7-ab12") == [path]
    assert j.read(path) == intent()
    again = j.write(dataclasses.replace(intent(), new=OLD), path)  # the restore phase
    assert again == path and j.read(path).new == OLD
    assert sorted(os.listdir(j.dir)) == [path.name]  # no temporary left
    j.remove(path)
    assert j.left_by("7-ab12") == [] and j.nothing_left("7-ab12")


def test_a_new_change_supersedes_a_kept_intent_of_the_same_image(tmp_path):
    """An intent kept after a failed restore must not undo a later change when a
    later mount replays it."""
    j = Journal(tmp_path, "7-ab12", ACCOUNT).open()
    kept = j.write(dataclasses.replace(intent(), new=OLD))
    other_image = j.write(dataclasses.replace(intent(), uuid="u2"))
    later = j.write(intent())
    assert j.left_by("7-ab12") == sorted([other_image, later])
    assert not kept.exists()


def _dead_mount(cache: Path, tag: str) -> Path:
    """What a mount killed at once leaves: its lock file, unlocked."""
    (cache / "locks").mkdir(parents=True, exist_ok=True)
    path = cache / "locks" / f"{tag}.lock"
    path.touch()
    return path


def test_corrupt_and_half_written_files_are_ignored_with_a_warning(tmp_path, caplog):
    dead = "1-dead"  # pid 1 runs, but it holds no lock: a reused pid is no mount
    _dead_mount(tmp_path, dead)
    j = Journal(tmp_path, "7-ab12", ACCOUNT).open()
    good = Journal(tmp_path, dead, ACCOUNT).open().write(intent(owner=dead))
    (j.dir / f"{dead}-2.json").write_bytes(b'{"version": 1, "kind": "regi')
    (j.dir / f"{dead}-3.json").write_bytes(b"\x00" * 40)
    (j.dir / f".{dead}-4.json.tmp").write_bytes(b'{"half')
    future = j.dir / f"{dead}-5.json"
    future.write_bytes(_doc(version=2))
    caplog.set_level(logging.WARNING, logger="imagefs.fs.journal")
    with j.ended_mounts() as ended:
        assert [lock.tag for lock in ended] == [dead]
        assert j.leftovers(ended) == [(good, intent(owner=dead))]
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("not a valid intent" in w for w in warnings) == 2, warnings
    assert any("left alone" in w for w in warnings)
    # The broken ones are gone, the temporary too; the other version's stays, and so
    # does the lock file (something of the dead mount is left).
    assert sorted(os.listdir(j.dir)) == sorted([good.name, future.name])
    assert (tmp_path / "locks" / f"{dead}.lock").exists()


def test_only_the_writing_account_replays(tmp_path):
    dead = "1-dead"
    _dead_mount(tmp_path, dead)
    writer = Journal(tmp_path, dead, OTHER).open()
    theirs = writer.write(intent(account=OTHER, owner=dead))
    mine = Journal(tmp_path, "7-ab12", ACCOUNT).open()
    with mine.ended_mounts() as ended:
        assert mine.leftovers(ended) == []
    assert theirs.exists()
    other = Journal(tmp_path, "8-cd34", OTHER).open()
    with other.ended_mounts() as ended:
        assert other.leftovers(ended) == [(theirs, intent(account=OTHER, owner=dead))]


def test_leftovers_oldest_first(tmp_path):
    dead = "1-dead"
    _dead_mount(tmp_path, dead)
    writer = Journal(tmp_path, dead, ACCOUNT).open()
    paths = [writer.write(dataclasses.replace(intent(owner=dead), uuid=f"u{i}"))
             for i in range(12)]
    j = Journal(tmp_path, "7-ab12", ACCOUNT).open()
    with j.ended_mounts() as ended:
        assert [p for p, _ in j.leftovers(ended)] == paths


# -- liveness ----------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from imagefs.fs.journal import OwnerLock
lock = OwnerLock.acquire(Path(sys.argv[1]), sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def other_mount(tmp_path):
    """Another process holding a mount's lock (as a mount daemon does), until killed."""
    procs = []

    def start(tag: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), tag],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()


def test_a_live_mount_is_not_claimed_a_killed_one_is(tmp_path, other_mount):
    proc = other_mount(f"{os.getpid()}-live")  # even with a pid that runs, the lock decides
    tag = f"{os.getpid()}-live"
    assert OwnerLock.claim(tmp_path, tag) is None
    proc.kill()
    proc.wait(timeout=30)
    lock = OwnerLock.claim(tmp_path, tag)
    assert lock is not None and lock.tag == tag
    assert OwnerLock.claim(tmp_path, tag) is None  # claimed: a second starter keeps off
    lock.release(remove=True)
    assert not (tmp_path / "locks" / f"{tag}.lock").exists()


def test_acquire_takes_a_new_file_when_a_claimer_removed_it(tmp_path):
    """A claimer may take a fresh lock file before its mount locks it, and remove it:
    the mount then locks a file that is at the path, not the removed one."""
    tag = "9-fresh"
    _dead_mount(tmp_path, tag)
    claimer = OwnerLock.claim(tmp_path, tag)
    claimer.release(remove=True)
    mine = OwnerLock.acquire(tmp_path, tag)
    try:
        assert (tmp_path / "locks" / f"{tag}.lock").exists()
        assert OwnerLock.claim(tmp_path, tag) is None
        assert stat.S_IMODE(os.stat(tmp_path / "locks").st_mode) == 0o700
    finally:
        mine.release(remove=True)


def test_without_a_lock_file_the_pid_decides(tmp_path):
    """Spill files of an older imagefs (no lock files): kept while their pid runs."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = int(done.stdout)
    assert OwnerLock.claim(tmp_path, "1-old") is None  # pid 1 runs
    lock = OwnerLock.claim(tmp_path, f"{gone}-old")
    assert lock is not None and lock.fd is None


def test_ended_mounts_spares_running_ones(tmp_path, other_mount):
    """Spill files and intents of a mount that runs stay; a dead mount's are claimed;
    lock files of dead mounts that left nothing are removed."""
    other_mount("2-live")
    for tag in ("2-live", "1-dead"):
        (tmp_path / "spill").mkdir(exist_ok=True)
        (tmp_path / "spill" / f"{tag}-1.spill").write_bytes(b"x")
    _dead_mount(tmp_path, "1-dead")
    _dead_mount(tmp_path, "1-empty")
    j = Journal(tmp_path, "7-ab12", ACCOUNT).open()
    with j.ended_mounts() as ended:
        assert sorted(lock.tag for lock in ended) == ["1-dead", "1-empty"]
        (tmp_path / "spill" / "1-dead-1.spill").unlink()  # what the filesystem does
    assert sorted(os.listdir(tmp_path / "locks")) == ["2-live.lock"]


# -- recovery against the real service ---------------------------------------------------------


@pytest.fixture
def conn(service):
    with Connection.open(service.url, service.token, deadline=20.0) as c:
        yield c


@pytest.fixture
def stored(conn, fresh):
    """An object ``img`` in a fresh container, registered as ``OLD``."""
    container = fresh("journal")
    conn.pithos.create_container(container)
    conn.pithos.put_data(container, "img", b"an image\n")
    info = conn.pithos.head(container, "img")
    location = H.location(conn.account, container, "img")
    _register(conn, location, OLD, info.uuid)
    yield container, info.uuid, location
    conn.http.request("DELETE", conn.pithos.container_url(container), expected=(204,),
                      params={"delimiter": "/"})
    conn.pithos.delete_container(container)


def _register(conn, location: str, reg: Registration, uuid: str | None) -> Image:
    return conn.plankton.reregister(location, reg.name, disk_format=reg.disk_format,
                                    container_format=reg.container_format,
                                    is_public=reg.is_public, properties=reg.properties,
                                    status=reg.status, existing_id=uuid)


def _live(conn, uuid: str) -> Image | None:
    try:
        return conn.plankton.get(uuid)
    except errors.NotFound:
        return None


def _crashed_intent(tmp_path: Path, conn, container: str, uuid: str, location: str,
                    kind: Kind = Kind.REGISTER, new: Registration | None = NEW) -> Path:
    dead = "1-crashed"
    _dead_mount(tmp_path, dead)
    it = Intent(kind=kind, account=conn.account, owner=dead, container=container,
                image_name="img", uuid=uuid, location=location, previous=OLD,
                new=new if kind is Kind.REGISTER else None)
    return Journal(tmp_path, dead, conn.account).open().write(it)


async def _recover(tmp_path: Path, conn) -> int:
    j = Journal(tmp_path, "7-ab12", conn.account).open()
    with j.ended_mounts() as ended:
        return await j.recover(ended, conn, Workers(http=2))


async def test_recover_finishes_a_half_done_override(tmp_path, conn, stored, caplog):
    container, uuid, location = stored
    path = _crashed_intent(tmp_path, conn, container, uuid, location)
    conn.plankton.unregister(uuid)  # the daemon died right after the unregister
    caplog.set_level(logging.INFO, logger="imagefs.fs.journal")
    assert await _recover(tmp_path, conn) == 1
    live = _live(conn, uuid)
    assert live is not None and journal.is_live(NEW, live) and live.id == uuid
    size = conn.pithos.head(container, "img.meta").size
    stored_meta = json.loads(conn.pithos.read(container, "img.meta", 0, size))
    assert stored_meta["name"] == "New" and stored_meta["status"] == "testing"
    assert not path.exists() and os.listdir(tmp_path / "locks") == []
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_recover_leaves_an_untouched_override(tmp_path, conn, stored):
    container, uuid, location = stored
    path = _crashed_intent(tmp_path, conn, container, uuid, location)
    assert await _recover(tmp_path, conn) == 1  # the unregister never arrived
    assert journal.is_live(OLD, _live(conn, uuid))
    assert not path.exists()


async def test_recover_restores_the_previous_when_the_new_is_refused(tmp_path, conn, stored):
    container, uuid, location = stored
    refused = Registration(name="New", disk_format="qcow2")  # the service takes no qcow2
    _crashed_intent(tmp_path, conn, container, uuid, location, new=refused)
    conn.plankton.unregister(uuid)
    assert await _recover(tmp_path, conn) == 1
    live = _live(conn, uuid)
    assert journal.is_live(OLD, live) and live.id == uuid


async def test_recover_finishes_a_sidecar_delete(tmp_path, conn, stored):
    container, uuid, location = stored
    conn.pithos.put_data(container, "img.meta", b"{}\n")
    path = _crashed_intent(tmp_path, conn, container, uuid, location, Kind.UNREGISTER)
    conn.plankton.unregister(uuid)  # died before deleting the stored sidecar
    assert await _recover(tmp_path, conn) == 1
    assert _live(conn, uuid) is None
    with pytest.raises(errors.NotFound):
        conn.pithos.head(container, "img.meta")
    assert not path.exists()


async def test_recover_drops_an_intent_for_a_file_replaced_since(tmp_path, conn, stored):
    container, uuid, location = stored
    _crashed_intent(tmp_path, conn, container, uuid, location)
    conn.pithos.delete(container, "img")
    conn.pithos.put_data(container, "img", b"another object\n")  # a new uuid
    assert await _recover(tmp_path, conn) == 1
    assert _live(conn, conn.pithos.head(container, "img").uuid) is None


async def test_recover_keeps_an_intent_it_cannot_replay_now(tmp_path, service, stored):
    container, uuid, location = stored
    with Connection.open(service.url, service.token, deadline=20.0) as conn:
        path = _crashed_intent(tmp_path, conn, container, uuid, location)
        conn.plankton.unregister(uuid)
        saved = conn.plankton.url
        conn.plankton.url = service.base + "/nowhere/v1.0"  # registering answers 404
        try:
            assert await _recover(tmp_path, conn) == 0
        finally:
            conn.plankton.url = saved
        assert path.exists()  # for the next mount
        assert (tmp_path / "locks" / "1-crashed.lock").exists()
        assert await _recover(tmp_path, conn) == 1
        assert journal.is_live(NEW, _live(conn, uuid))
