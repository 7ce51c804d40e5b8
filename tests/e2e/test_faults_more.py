"""Lost answers and persistent faults through the real stack (behaviour.md §6).

More of ``test_faults.py``, same machinery: the real CLI mounted through a
``FaultProxy`` with a short retry deadline. Two kinds of cases:

- An answer lost after the service did the work (``lose-response``): the
  client retries, and the retry finds the work done: a container that
  "exists", a source or an image that is gone (404). The operation the user
  asked for succeeded, so ``mkdir``, ``rmdir``, ``mv``, ``rm`` and sidecar
  writes succeed; and a second ``mkdir`` is still EEXIST, a second ``rmdir``
  still ENOENT (the mount checks, it does not ignore errors). The proxy shows
  that the retry happened and what it was answered.
- A fault that does not clear while a file is written: the blocks sent while
  it is written retry for one deadline, and the commit at ``close()`` then
  makes one attempt per request instead of retrying for a second deadline
  (counted at the proxy per block, no timing). If the service came back
  meanwhile, that one attempt stores the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest
from e2e_util import expect_errno, file_top_hash, object_store_parts, wait_until, write_random
from fault_proxy import (DEADLINE, Fault, FaultProxy, IMPOSSIBLE_HASH, Incoming, Tally,
                         block_upload, fault_box, hashmap_put, object_delete, object_move)

from imagefs import errors

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


# --- what the proxy saw -----------------------------------------------------------------


def container_call(method: str, container: str):
    """``method`` on the container itself (PUT creates it, DELETE deletes it)."""
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return r.method == method and p is not None and len(p) == 2 and p[1] == container
    return match


def marker_put(container: str, name: str):
    """The PUT of a directory marker (``mkdir`` in a container)."""
    def match(r: Incoming) -> bool:
        p = r.store_parts
        return (r.method == "PUT" and p is not None and len(p) == 3 and p[1] == container
                and p[2] == name and "X-Move-From" not in r.headers)
    return match


def directory_move(container: str):
    """The move of a directory with everything below it (``?delimiter=/``)."""
    is_move = object_move(container)
    return lambda r: is_move(r) and "delimiter" in r.query


def image_call(method: str):
    """A request to the image service: POST registers, DELETE unregisters."""
    return lambda r: r.method == method and r.path.startswith("/image/")


class Watch:
    """A predicate that matches nothing and writes down, in order, the uploads of one
    container it sees: ("block", sha256 of the body), ("probe", "") for a hashmap PUT
    that only asks which blocks are missing, ("commit", "") for one that stores. Armed
    as ``Fault(watch, "status", times=0)`` before the faults it watches."""

    def __init__(self, container: str) -> None:
        self.is_block = block_upload(container)
        self.is_hashmap = hashmap_put(container)
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, r: Incoming) -> bool:
        if self.is_block(r):
            event = ("block", hashlib.sha256(r.body()).hexdigest())
        elif self.is_hashmap(r):
            probe = IMPOSSIBLE_HASH in json.loads(r.body()).get("hashes", [])
            event = ("probe" if probe else "commit", "")
        else:
            return False
        with self._lock:
            self.seen.append(event)
        return False

    def split_at_commit(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(what came before the first commit PUT, that PUT and what came after)."""
        with self._lock:
            seen = list(self.seen)
        at = seen.index(("commit", ""))
        return seen[:at], seen[at:]


def statuses(proxy: FaultProxy, mark: int, method: str, container: str | None,
             name: str | None = None) -> list[int]:
    """The statuses the proxy recorded since ``mark`` for ``method`` on ``container``
    (on its object ``name`` if given; on the image service if ``container`` is None). A
    lost answer is recorded with the status the service gave it."""
    found = []
    for r in proxy.since(mark):
        if r.method != method:
            continue
        if container is None:
            if r.path.startswith("/image/"):
                found.append(r.status)
            continue
        p = object_store_parts(r)
        if p is None or len(p) < 2 or p[1] != container:
            continue
        if (name is None and len(p) == 2) or (name is not None and p[2:] == [name]):
            found.append(r.status)
    return found


def write_close(local: Path, target: Path) -> None:
    """What cp does, in Python: the OSError of write() or close() reaches the caller."""
    with open(local, "rb") as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out, MiB)


# --- 1. answers lost after the service did the work --------------------------------------


def test_lost_answers_to_mkdir_and_rmdir_of_a_container(fmount, fproxy, client):
    """The retry of the container PUT answers "exists" (202), of the DELETE 404: both are
    the mount's own first attempt's doing, so mkdir and rmdir succeed."""
    name = f"m{os.getpid()}-lost-top"
    path = fmount.path / name
    put, delete = container_call("PUT", name), container_call("DELETE", name)

    mark = fproxy.mark()
    made = fproxy.arm(Fault(put, "lose-response"))
    TALLY.inject()
    os.mkdir(path)
    assert made.fired == 1
    assert statuses(fproxy, mark, "PUT", name) == [201, 202]  # created, then "exists"
    assert client.pithos.container_info(name).name == name
    assert os.listdir(path) == []
    expect_errno(errno.EEXIST, os.mkdir, path)  # a real "exists" is still EEXIST

    mark = fproxy.mark()
    removed = fproxy.arm(Fault(delete, "lose-response"))
    TALLY.inject()
    os.rmdir(path)
    assert removed.fired == 1
    assert statuses(fproxy, mark, "DELETE", name) == [204, 404]
    with pytest.raises(errors.NotFound):
        client.pithos.container_info(name)
    assert name not in os.listdir(fmount.path)
    expect_errno(errno.ENOENT, os.rmdir, path)
    assert fmount.proc.poll() is None
    survived(made, removed)


def test_lost_answers_to_mkdir_and_rmdir_in_a_container(box):
    put, delete = marker_put(box.name, "d"), object_delete(box.name)
    mark = box.proxy.mark()
    made = box.arm(Fault(put, "lose-response"))
    os.mkdir(box.path / "d")
    assert made.fired == 1
    assert statuses(box.proxy, mark, "PUT", box.name, "d") == [201, 201]  # idempotent
    assert box.client.pithos.head(box.name, "d").is_directory
    expect_errno(errno.EEXIST, os.mkdir, box.path / "d")

    mark = box.proxy.mark()
    removed = box.arm(Fault(delete, "lose-response"))
    os.rmdir(box.path / "d")
    assert removed.fired == 1
    assert statuses(box.proxy, mark, "DELETE", box.name, "d") == [204, 404]
    assert box.names() == {"probe"}
    assert sorted(os.listdir(box.path)) == ["probe"]
    expect_errno(errno.ENOENT, os.rmdir, box.path / "d")
    box.still_serving()
    survived(made, removed)


def test_lost_answer_to_a_directory_rename(box, tmp_path):
    """The retry of the move finds no source (404): the marker is at the destination and
    gone from the source, so the move went through and ``mv`` succeeds."""
    local = write_random(tmp_path / "f.img", 200_000)
    os.makedirs(box.path / "d" / "sub")
    shutil.copyfile(local, box.path / "d" / "sub" / "f.img")
    before = box.client.pithos.head(box.name, "d/sub/f.img")

    moves = directory_move(box.name)
    mark = box.proxy.mark()
    moved = box.arm(Fault(moves, "lose-response"))
    os.rename(box.path / "d", box.path / "e")
    assert moved.fired == 1
    assert statuses(box.proxy, mark, "PUT", box.name, "e") == [201, 404]
    assert box.names() == {"probe", "e", "e/sub", "e/sub/f.img"}
    assert box.client.pithos.head(box.name, "e/sub/f.img").uuid == before.uuid
    assert sorted(os.listdir(box.path)) == ["e", "probe"]
    assert os.listdir(box.path / "e" / "sub") == ["f.img"]
    assert file_top_hash(box.path / "e" / "sub" / "f.img") == file_top_hash(local)
    expect_errno(errno.ENOENT, os.stat, box.path / "d")
    # Not every 404 is a lost answer's: a source that is really gone is still ENOENT.
    box.client.pithos.delete(box.name, "e", delimiter=True)
    expect_errno(errno.ENOENT, os.rename, box.path / "e", box.path / "g")
    box.still_serving()
    survived(moved)


def test_lost_answer_to_a_rename_over_an_existing_file(box, tmp_path):
    a = write_random(tmp_path / "a.img", 150_000)
    b = write_random(tmp_path / "b.img", 90_000)
    shutil.copyfile(a, box.path / "a.img")
    shutil.copyfile(b, box.path / "b.img")
    source = box.client.pithos.head(box.name, "a.img")

    moves = object_move(box.name)
    mark = box.proxy.mark()
    moved = box.arm(Fault(moves, "lose-response"))
    os.rename(box.path / "a.img", box.path / "b.img")
    assert moved.fired == 1
    assert statuses(box.proxy, mark, "PUT", box.name, "b.img") == [201, 404]
    assert box.names() == {"probe", "b.img"}
    assert box.client.pithos.head(box.name, "b.img").uuid == source.uuid
    assert sorted(os.listdir(box.path)) == ["b.img", "probe"]
    assert file_top_hash(box.path / "b.img") == file_top_hash(a)
    box.still_serving()
    survived(moved)


def test_a_moved_image_keeps_its_sharing_in_the_move_itself(box):
    """A store move drops the object's sharing unless the move request gives it, and the
    mount gives it: with every image update failing (so no re-publishing after the
    move, as if the daemon died before it), a moved public image stays public and a
    private one keeps the member another client added since the mount last looked."""
    pub, shared = box.path / "pub.img", box.path / "shared.img"
    for path, public in ((pub, "true"), (shared, "false")):
        path.write_bytes(b"image bytes of " + path.name.encode() + b"\n")
        (box.path / f"{path.name}.meta").write_bytes(
            b'{"name": "%s", "is-public": %s}' % (path.name.encode(), public.encode()))
    ids = {p.name: box.client.pithos.head(box.name, p.name).uuid for p in (pub, shared)}
    assert box.client.plankton.get(ids["pub.img"]).is_public
    box.client.plankton.add_member(ids["shared.img"], "friend-of-the-owner")  # not via us
    updates = box.arm(Fault(image_call("PUT"), "status", status=500, times=None))
    os.rename(pub, box.path / "pub-moved.img")
    os.rename(shared, box.path / "shared-moved.img")
    image = box.client.plankton.get(ids["pub.img"])
    assert image.is_public, "the move made the image private"
    assert image.location.endswith(f"/{box.name}/pub-moved.img")
    assert "friend-of-the-owner" in box.client.plankton.members(ids["shared.img"])
    assert not box.client.plankton.get(ids["shared.img"]).is_public
    box.proxy.disarm()
    assert os.getxattr(box.path / "pub-moved.img", "user.image.is-public") == b"true"
    box.still_serving()
    survived(updates)


def test_lost_answers_to_image_registration_and_unregistration(box, fmount):
    """A lost answer to a registration (the retry registers again, same id), to an
    unregistration through the catalog and through ``rm NAME.meta`` (the retry finds
    no image: 404), and to the delete of the metafile: every command succeeds once."""
    img, meta = box.path / "disk.img", box.path / "disk.img.meta"
    img.write_bytes(b"disk image bytes\n")
    text = b'{"name": "Lost And Found", "properties": {"OS": "Linux"}}'
    registers, unregisters = image_call("POST"), image_call("DELETE")

    def image():
        try:
            return box.client.plankton.get(box.client.pithos.head(box.name, img.name).uuid)
        except errors.NotFound:
            return None

    mark = box.proxy.mark()
    registered = box.arm(Fault(registers, "lose-response"))
    meta.write_bytes(text)
    assert registered.fired == 1
    assert len(statuses(box.proxy, mark, "POST", None)) == 2  # registered twice
    first = image()
    assert first is not None and first.name == "Lost And Found"
    assert json.loads(meta.read_bytes())["id"] == first.id

    entry = fmount.path / ".images" / f"{first.id}.meta"
    mark = box.proxy.mark()
    unregistered = box.arm(Fault(unregisters, "lose-response"))
    os.unlink(entry)
    assert unregistered.fired == 1
    assert statuses(box.proxy, mark, "DELETE", None)[1:] == [404]
    assert image() is None

    meta.write_bytes(text)  # registered again
    assert image() is not None
    mark = box.proxy.mark()
    again = box.arm(Fault(unregisters, "lose-response"))
    side = box.arm(Fault(object_delete(box.name), "lose-response"))
    os.unlink(meta)
    assert (again.fired, side.fired) == (1, 1)
    assert statuses(box.proxy, mark, "DELETE", None)[1:] == [404]
    assert statuses(box.proxy, mark, "DELETE", box.name, meta.name)[1:] == [404]
    assert image() is None
    assert box.names() == {"probe", "disk.img"}
    expect_errno(errno.ENOENT, os.unlink, meta)
    assert img.read_bytes() == b"disk image bytes\n"
    box.still_serving()
    survived(registered, unregistered, again, side)


# --- 2. persistent faults: one deadline, not two ------------------------------------------


PERSISTENT = {
    # Every block upload after the first answers 500.
    "blocks": lambda c: Fault(block_upload(c), "status", status=500, after=1, times=None),
    # Every hashmap PUT (the questions asked while writing, and the commit) answers 503.
    "hashmaps": lambda c: Fault(hashmap_put(c), "status", status=503, times=None),
}


@pytest.mark.parametrize("kind", sorted(PERSISTENT))
def test_a_persistent_fault_is_retried_for_one_deadline_not_two(kind, box, tmp_path):
    """While the file is written, its blocks (or the questions about them) retry for a
    whole deadline; the commit at close() then makes one attempt per request and
    reports EIO, instead of retrying for a second deadline."""
    local = write_random(tmp_path / "new.img", 3 * BLOCK + 12345)
    watch = Watch(box.name)
    box.proxy.arm(Fault(watch, "status", times=0))
    fault = box.arm(PERSISTENT[kind](box.name))

    expect_errno(errno.EIO, write_close, local, box.path / "disk.img")
    assert box.logged("sending blocks early stopped")
    assert box.logged("/disk.img: upload failed: ")
    before, commit = watch.split_at_commit()
    kinds_before = Counter(k for k, _ in before)
    kinds_after = Counter(k for k, _ in commit)
    if kind == "blocks":
        # The sender retried its failing blocks (several attempts for some block)...
        assert max(Counter(h for k, h in before if k == "block").values()) > 1
        # ...and the commit asked once, then tried each missing block exactly once.
        assert kinds_after["commit"] == 1
        sent_by_commit = Counter(h for k, h in commit if k == "block")
        assert sent_by_commit and set(sent_by_commit.values()) == {1}
    else:
        assert kinds_before["probe"] > 1  # the question was retried...
        assert kinds_after == Counter(commit=1)  # ...the commit was not
    assert box.names() == {"probe"}
    box.still_serving()
    survived(fault)


def test_after_the_sender_gave_up_a_service_back_takes_the_file_at_once(box, tmp_path):
    """The blocks sent while writing ran out of retries; the service is back before
    close(): the commit's single attempts store the file (a transient fault still
    succeeds), each missing block sent once."""
    data = os.urandom(3 * BLOCK + 777)
    target = box.path / "back.img"
    fault = box.arm(Fault(block_upload(box.name), "status", status=500, times=None))
    with open(target, "wb", buffering=0) as out:
        out.write(data[:2 * BLOCK])
        wait_until(lambda: box.logged("sending blocks early stopped"), 10 * DEADLINE,
                   what="the sender giving up")
        box.proxy.disarm()
        watch = Watch(box.name)
        box.proxy.arm(Fault(watch, "status", times=0))
        out.write(data[2 * BLOCK:])
    _, commit = watch.split_at_commit()
    # The hashmap, then each block the service lacks once (a send that was still
    # retrying when the sender gave up may have got through), then the hashmap again.
    sent_by_commit = Counter(h for k, h in commit if k == "block")
    assert set(sent_by_commit.values()) == {1}
    assert [k for k, _ in commit if k != "block"] == ["commit", "commit"]
    expected = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    stored = box.client.pithos.read(box.name, "back.img", 0, len(data))
    assert hashlib.sha256(stored).hexdigest() == expected
    box.still_serving()
    survived(fault)
