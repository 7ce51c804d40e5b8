"""The client layer against the live embedded service: every client call at least once.

Uses the session fixture ``service`` (tests/conftest.py): ``.url`` identity URL,
``.token``, ``.uuid``, ``.new_user()``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import socket
import uuid as uuidlib

import pytest

from imagefs import BLOCK_SIZE, errors
from imagefs.client.connection import Connection
from imagefs.client.models import ObjectInfo, Subdir
from imagefs.protocol import headers as H
from imagefs.protocol.hashmap import EMPTY_HASH, block_hash, hashmap_of, top_hash


def _user(service):
    """(uuid, token) of a fresh user, whatever shape new_user() returns."""
    user = service.new_user()
    if isinstance(user, tuple):
        return user[0], user[1]
    return user.uuid, user.token


@pytest.fixture(scope="module")
def conn(service):
    with Connection.open(service.url, service.token, deadline=20.0) as c:
        yield c


@pytest.fixture(scope="module")
def other(service):
    """A second user, for sharing and foreign images."""
    _uuid, token = _user(service)
    with Connection.open(service.url, token, deadline=20.0) as c:
        yield c


@pytest.fixture
def container(conn):
    """A fresh container, emptied and removed afterwards."""
    name = "t-" + uuidlib.uuid4().hex[:10]
    assert conn.pithos.create_container(name) is True
    yield name
    try:
        for item in list(conn.pithos.list_objects(name)):
            conn.pithos.delete(name, item.name)
        conn.pithos.delete_container(name)
    except errors.NotFound:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- identity and connection -----------------------------------------------------------------


def test_open_authenticates_and_finds_endpoints(conn, service):
    ep = conn.endpoints
    assert conn.account == ep.user_uuid == service.uuid
    assert ep.object_store.startswith("http://") and ep.image.startswith("http://")
    assert ep.account.startswith("http://")


def test_bad_token_is_auth_rejected(service):
    with pytest.raises(errors.AuthRejected) as info:
        Connection.open(service.url, "not-a-token-" + uuidlib.uuid4().hex, deadline=5.0)
    assert "token refused" in str(info.value)


def test_unreachable_is_service_unavailable_within_the_deadline():
    url = f"http://127.0.0.1:{_free_port()}/identity/v2.0"
    with pytest.raises(errors.ServiceUnavailable) as info:
        Connection.open(url, "whatever-token", deadline=0.5, timeout=(0.5, 0.5))
    assert "cannot reach" in str(info.value)
    assert "whatever-token" not in str(info.value)
    assert errors.to_errno(info.value) == 5  # EIO


def test_user_catalogs(conn, other):
    by_uuid, by_name = conn.user_catalogs(uuids=[conn.account, other.account, "no-such-uuid"])
    assert set(by_uuid) == {conn.account, other.account}
    name = by_uuid[other.account]
    by_uuid2, by_name2 = conn.user_catalogs(names=[name])
    assert by_name2 == {name: other.account}
    assert conn.user_catalogs() == ({}, {})


# -- account and containers ------------------------------------------------------------------


def test_account_and_default_container(conn):
    info = conn.pithos.account_info()
    assert info.containers >= 1
    names = [c.name for c in conn.pithos.list_containers()]
    assert "pithos" in names


def test_container_life_cycle(conn):
    p = conn.pithos
    name = "life-" + uuidlib.uuid4().hex[:8]
    assert p.create_container(name, versioning="none") is True
    assert p.create_container(name) is False
    info = p.container_info(name)
    assert (info.name, info.count, info.versioning) == (name, 0, "none")
    assert info.block_size == BLOCK_SIZE and info.block_hash == "sha256"
    p.set_versioning(name, "auto")
    assert p.container_info(name).versioning == "auto"
    with pytest.raises(errors.InvalidInput):
        p.set_versioning(name, "sometimes")
    p.put_data(name, "x", b"x")
    assert any(c.name == name and c.count == 1 for c in p.list_containers())
    with pytest.raises(errors.ContainerNotEmpty):
        p.delete_container(name)
    p.delete(name, "x")
    p.delete_container(name)
    with pytest.raises(errors.NotFound):
        p.container_info(name)


def test_list_containers_pages(conn):
    p = conn.pithos
    made = [f"page-{uuidlib.uuid4().hex[:6]}-{i}" for i in range(4)]
    for name in made:
        p.create_container(name)
    try:
        p.page_size = 2
        paged = [c.name for c in p.list_containers()]
    finally:
        p.page_size = 10000
    assert paged == [c.name for c in p.list_containers()]
    assert set(made) <= set(paged)
    assert len(paged) == len(set(paged))
    for name in made:
        p.delete_container(name)


# -- objects ---------------------------------------------------------------------------------


def test_put_head_read(conn, container):
    p = conn.pithos
    data = b"hello\n"
    result = p.put_data(container, "notes.txt", data, content_type="text/plain",
                        meta={"image_os": "Débian", "plain": "50%"})
    assert result.created and result.version > 0
    assert result.hash == block_hash(data)
    info = p.head(container, "notes.txt")
    assert isinstance(info, ObjectInfo)
    assert (info.name, info.size, info.content_type) == ("notes.txt", 6, "text/plain")
    assert info.hash == block_hash(data)
    assert info.version == result.version
    assert info.uuid and info.modified_by == conn.account
    assert info.meta == {"Image-Os": "Débian", "Plain": "50%"}
    assert info.mtime > 0 and info.version_mtime > 0
    assert not info.is_directory
    assert p.read(container, "notes.txt", 0, 6) == data
    assert p.read(container, "notes.txt", 2, 3) == b"llo"
    assert p.read(container, "notes.txt", 4, 100) == b"o\n"  # short at the end
    assert p.read(container, "notes.txt", 6, 10) == b""
    assert p.read(container, "notes.txt", 60, 10) == b""
    buf = bytearray(4)
    assert p.readinto(container, "notes.txt", 1, memoryview(buf)) == 4
    assert bytes(buf) == b"ello"
    with pytest.raises(errors.NotFound):
        p.head(container, "missing")
    with pytest.raises(errors.NotFound):
        p.read(container, "missing", 0, 1)


def test_names_are_quoted(conn, container):
    p = conn.pithos
    name = "dir with space/κάτι #?&%.img"
    p.put_data(container, name, b"data")
    assert p.head(container, name).size == 4
    assert p.read(container, name, 0, 4) == b"data"
    assert [o.name for o in p.list_objects(container, prefix="dir with space/")] == [name]


def test_name_limits_checked_before_sending(conn, container):
    with pytest.raises(errors.NameTooLong):
        conn.pithos.head(container, "x" * 1025)
    with pytest.raises(errors.NameTooLong):
        conn.pithos.create_container("c" * 257)


def test_metadata_update_and_delete(conn, container):
    p = conn.pithos
    p.put_data(container, "m", b"m", meta={"keep": "1", "drop": "2"})
    v1 = p.head(container, "m").version
    p.update_meta(container, "m", {"drop": "", "new_key": "é x"})
    info = p.head(container, "m")
    assert info.meta == {"Keep": "1", "New-Key": "é x"}
    assert info.version > v1
    p.update_meta(container, "m", {})  # nothing to do, no request
    assert p.head(container, "m").version == info.version


def test_content_encoding_is_never_decoded(conn, container):
    p = conn.pithos
    raw = gzip.compress(b"compressed payload " * 100)
    conn.http.request("PUT", p.object_url(container, "x.gz"), expected=(201,),
                      headers={"Content-Type": "application/gzip",
                               "Content-Encoding": "gzip"}, data=raw)
    assert p.read(container, "x.gz", 0, len(raw) + 10) == raw
    out = io.BytesIO()
    assert p.download(container, "x.gz", out) == len(raw)
    assert out.getvalue() == raw


def test_directories_and_listing(conn, container):
    p = conn.pithos
    p.make_directory(container, "images")
    for name in ("images/a.img", "images/a.img.meta", "images/sub/b.img", "notes.txt"):
        p.put_data(container, name, name.encode())
    assert p.head(container, "images").is_directory
    everything = [o.name for o in p.list_objects(container)]
    assert everything == ["images", "images/a.img", "images/a.img.meta", "images/sub/b.img",
                          "notes.txt"]
    top = list(p.list_objects(container, delimiter="/"))
    assert [(type(o).__name__, o.name) for o in top] == [
        ("ObjectInfo", "images"), ("Subdir", "images"), ("ObjectInfo", "notes.txt")]
    assert isinstance(top[1], Subdir) and isinstance(top[0], ObjectInfo)
    inner = list(p.list_objects(container, prefix="images/", delimiter="/"))
    assert [(type(o).__name__, o.name) for o in inner] == [
        ("ObjectInfo", "images/a.img"), ("ObjectInfo", "images/a.img.meta"),
        ("Subdir", "images/sub")]
    listed = {o.name: o for o in inner if isinstance(o, ObjectInfo)}
    head = p.head(container, "images/a.img")
    entry = listed["images/a.img"]
    assert (entry.size, entry.hash, entry.uuid, entry.version) == (
        head.size, head.hash, head.uuid, head.version)
    assert entry.meta is None or entry.meta == head.meta
    assert abs(entry.version_mtime - head.version_mtime) < 1.0
    assert [o.name for o in p.list_objects(container, path="images")] == [
        "images/a.img", "images/a.img.meta"]
    assert [o.name for o in p.list_objects(container, limit=2, marker="images")] == [
        "images/a.img", "images/a.img.meta"]
    assert list(p.list_objects(container, prefix="nothing/")) == []


def test_listing_pages_with_marker(conn, container):
    p = conn.pithos
    names = sorted([f"f{i:03d}" for i in range(7)] + [f"d{i}/x{j}" for i in range(3)
                                                       for j in range(3)])
    for name in names:
        p.put_data(container, name, b"")
    try:
        p.page_size = 3
        flat = [o.name for o in p.list_objects(container)]
        delimited = [(type(o).__name__, o.name)
                     for o in p.list_objects(container, delimiter="/")]
        capped = [o.name for o in p.list_objects(container, limit=5)]
    finally:
        p.page_size = 10000
    assert flat == names
    assert delimited == [("Subdir", f"d{i}") for i in range(3)] + [
        ("ObjectInfo", f"f{i:03d}") for i in range(7)]
    assert capped == names[:5]


def test_hashmap_protocol_by_hand(conn, container):
    p = conn.pithos
    blocks = [random.Random(1).randbytes(1000), b"tail\0\0"]
    data = blocks[0] + b"\0" * (BLOCK_SIZE - 1000) + blocks[1]
    hashes = hashmap_of(data)
    size = len(data)
    first = p.put_hashmap(container, "hm", size, hashes)
    assert not first.created
    assert set(first.missing) <= set(hashes)
    assert EMPTY_HASH not in first.missing or hashes[0] == EMPTY_HASH
    assert p.post_block(container, data[:BLOCK_SIZE]) == hashes[0]
    assert p.post_block(container, memoryview(data)[BLOCK_SIZE:], hash=hashes[1]) == hashes[1]
    assert p.post_block(container, b"") == EMPTY_HASH
    done = p.put_hashmap(container, "hm", size, hashes, content_type="application/x-raw",
                         meta={"k": "v"})
    assert done.created and done.hash == top_hash(hashes) and done.version > 0
    hm = p.get_hashmap(container, "hm")
    assert (hm.size, hm.hashes, hm.block_size, hm.block_hash) == (size, hashes, BLOCK_SIZE,
                                                                  "sha256")
    assert hm.hash == top_hash(hashes) and hm.version == done.version
    assert p.read(container, "hm", BLOCK_SIZE - 2, 8) == b"\0\0tail\0\0"
    assert p.head(container, "hm").meta == {"K": "v"}
    with pytest.raises(errors.PreconditionFailed):
        p.put_hashmap(container, "hm", size, hashes, if_match="0" * 64)
    with pytest.raises(errors.InvalidInput):
        p.put_hashmap(container, "bad", 5, hashes)  # 2 hashes cannot make 5 bytes
    empty = p.put_hashmap(container, "empty", 0, [EMPTY_HASH])
    assert empty.created and empty.hash == EMPTY_HASH


def test_copy_move_delete(conn, container):
    p = conn.pithos
    p.put_data(container, "src", b"source", meta={"a": "1"})
    src = p.head(container, "src")
    v = p.copy(container, "src", container, "copy one", meta={"b": "2"})
    copy = p.head(container, "copy one")
    assert copy.version == v and copy.uuid != src.uuid
    assert copy.meta == {"A": "1", "B": "2"}
    assert p.read(container, "copy one", 0, 100) == b"source"
    v2 = p.move(container, "src", container, "moved/dst", content_type="text/x-moved")
    moved = p.head(container, "moved/dst")
    assert moved.version == v2 and moved.uuid == src.uuid
    assert moved.content_type == "text/x-moved"
    with pytest.raises(errors.NotFound):
        p.head(container, "src")
    # subtrees
    p.make_directory(container, "tree")
    p.put_data(container, "tree/x", b"x")
    p.copy(container, "tree", container, "tree2", delimiter=True)
    assert p.read(container, "tree2/x", 0, 1) == b"x"
    p.move(container, "tree2", container, "tree3", delimiter=True)
    assert p.head(container, "tree3/x").size == 1
    p.delete(container, "tree3", delimiter=True)
    with pytest.raises(errors.NotFound):
        p.head(container, "tree3/x")
    p.delete(container, "copy one")
    with pytest.raises(errors.NotFound):
        p.delete(container, "copy one")


def test_versions(conn, container):
    p = conn.pithos
    p.put_data(container, "v", b"one")
    p.put_data(container, "v", b"two!")
    versions = p.list_versions(container, "v")
    assert len(versions) == 2
    (old, t1), (new, t2) = versions
    assert old < new and t1 <= t2
    assert p.read(container, "v", 0, 10, version=old) == b"one"
    assert p.head(container, "v", version=old).size == 3
    assert p.get_hashmap(container, "v", version=old).hashes == hashmap_of(b"one")
    out = io.BytesIO()
    assert p.download(container, "v", out, version=old) == 3 and out.getvalue() == b"one"


def test_public_and_sharing(conn, other, container):
    p = conn.pithos
    p.put_data(container, "shared.img", b"shared bytes")
    url = p.set_public(container, "shared.img", True)
    assert url.startswith("http")
    assert p.head(container, "shared.img").public_url == url
    assert p.set_public(container, "shared.img", False) == ""
    theirs = other.pithos_for(conn.account)
    with pytest.raises((errors.Forbidden, errors.NotFound)):
        theirs.head(container, "shared.img")
    p.set_sharing(container, "shared.img", f"read={other.account}")
    assert p.head(container, "shared.img").sharing == f"read={other.account}"
    assert theirs.read(container, "shared.img", 0, 6) == b"shared"
    assert conn.pithos_for(conn.account) is conn.pithos
    p.set_sharing(container, "shared.img", "")
    assert p.head(container, "shared.img").sharing == ""


# -- whole-file upload and download ----------------------------------------------------------


def _count(http, method):
    calls = []
    hook = (lambda m, url, status: calls.append((m, url, status)) if m == method else None)
    http.hooks.append(hook)
    return calls, hook


def test_upload_download_round_trip_multi_block(conn, container, tmp_path):
    p = conn.pithos
    rnd = random.Random(42)
    data = rnd.randbytes(2 * BLOCK_SIZE + 12345)
    data = data[:BLOCK_SIZE] + b"\0" * 100 + data[BLOCK_SIZE + 100:]
    local = tmp_path / "image.raw"
    local.write_bytes(data)
    posts, hook = _count(conn.http, "POST")
    try:
        info = p.upload(container, "image.raw", local)
    finally:
        conn.http.hooks.remove(hook)
    assert info.size == len(data)
    assert info.hash == top_hash(hashmap_of(data))
    assert len(posts) == 3  # three distinct blocks
    out = tmp_path / "back.raw"
    assert p.download(container, "image.raw", out) == len(data)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    # the same content again: every block is there already, none is sent
    posts, hook = _count(conn.http, "POST")
    try:
        again = p.upload(container, "image-copy.raw", io.BytesIO(data))
    finally:
        conn.http.hooks.remove(hook)
    assert posts == []
    assert again.hash == info.hash and again.uuid != info.uuid


def test_upload_of_empty_and_unseekable_sources(conn, container):
    p = conn.pithos
    info = p.upload(container, "empty", io.BytesIO(b""), content_type="text/plain")
    assert (info.size, info.hash, info.content_type) == (0, EMPTY_HASH, "text/plain")
    out = io.BytesIO()
    assert p.download(container, "empty", out) == 0

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.buf = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.buf.readinto(b)

    payload = b"streamed " * 1000
    info = p.upload(container, "piped", io.BufferedReader(Pipe(payload)))
    assert info.size == len(payload)
    assert p.read(container, "piped", 0, len(payload)) == payload


# -- images ----------------------------------------------------------------------------------


def test_image_life_cycle(conn, container):
    p, img = conn.pithos, conn.plankton
    p.put_data(container, "debian.diskdump", b"disk image bytes")
    obj = p.head(container, "debian.diskdump")
    loc = H.location(conn.account, container, "debian.diskdump")
    image = img.register(loc, "Débian Base", properties={"OS": "Linux", "user": "root"})
    assert image.id == obj.uuid
    assert image.name == "Débian Base" and image.location == loc
    assert image.owner == conn.account and image.size == obj.size
    assert image.checksum == obj.hash
    assert (image.disk_format, image.container_format) == ("diskdump", "bare")
    assert image.status.lower() == "available" and image.is_public is False
    assert image.properties == {"os": "Linux", "user": "root"}
    assert image.created_at and image.updated_at and image.deleted_at == ""
    assert img.get(image.id) == image
    listed = {i.id: i for i in img.list()}
    assert listed[image.id].properties == image.properties
    assert listed[image.id].location == loc
    short = {i.id: i for i in img.list(detail=False)}
    assert short[image.id].name == "Débian Base"

    changed = img.update(image.id, name="Changed", status="", is_public=True,
                         properties={"user": "", "greet": "hi there"})
    assert changed.name == "Changed" and changed.is_public is True
    assert changed.properties == {"os": "Linux", "greet": "hi there"}
    assert changed.status == ""
    assert img.update(image.id, status="AVAILABLE").status.lower() == "available"
    assert img.update(image.id, disk_format="extdump").disk_format == "extdump"
    with pytest.raises(errors.InvalidInput):
        img.update(image.id, disk_format="floppy")

    img.unregister(image.id)
    with pytest.raises(errors.NotFound):
        img.get(image.id)
    with pytest.raises(errors.NotFound):
        img.unregister(image.id)
    again = img.register(loc, "Again")
    assert again.id == image.id  # same object, same id


def test_reregister_overrides(conn, container):
    p, img = conn.pithos, conn.plankton
    p.put_data(container, "os.img", b"bytes")
    loc = H.location(conn.account, container, "os.img")
    first = img.register(loc, "First", disk_format="extdump", properties={"old": "1"})
    second = img.reregister(loc, "Second", properties={"new": "2"}, status="testing",
                            existing_id=first.id)
    assert second.id == first.id
    assert second.name == "Second" and second.properties == {"new": "2"}
    assert second.disk_format == "diskdump" and second.status == "testing"
    third = img.reregister(loc, "Third", existing_id="0" * 8 + "-0000-4000-8000-" + "0" * 12)
    assert third.id == first.id and third.properties == {}


def test_members_and_foreign_images(conn, other, container):
    p, img = conn.pithos, conn.plankton
    p.put_data(container, "mine.img", b"mine")
    loc = H.location(conn.account, container, "mine.img")
    image = img.register(loc, "Mine")
    with pytest.raises(errors.Forbidden):
        other.plankton.get(image.id)
    assert image.id not in {i.id for i in other.plankton.list()}
    img.add_member(image.id, other.account)
    assert other.account in img.members(image.id)
    assert other.plankton.get(image.id).name == "Mine"
    with pytest.raises(errors.Forbidden):
        other.plankton.unregister(image.id)
    img.remove_member(image.id, other.account)
    assert other.account not in img.members(image.id)
    img.set_members(image.id, [other.account])
    assert other.account in img.members(image.id)
    img.set_members(image.id, [])
    img.update(image.id, is_public=True)
    assert image.id in {i.id for i in other.plankton.list()}
    with pytest.raises(errors.Forbidden):
        other.plankton.update(image.id, name="stolen")
    with pytest.raises(errors.NotFound):
        img.register(H.location(conn.account, container, "missing.img"), "x")
