"""The storage engine without HTTP: hashing, blocks, versions, uuid lifecycle, listing."""

from __future__ import annotations

import io

import pytest
from storekit import BS, alice, assert_intact, bob, names, read_all, st, upload  # noqa: F401

from imagefs.errors import (
    ContainerNotEmpty,
    Forbidden,
    InvalidInput,
    NameTooLong,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
)
from imagefs.protocol.hashmap import EMPTY_HASH
from imagefs.service.store import MissingBlocks, Store

# api.md §3.3 test vectors: content, hashmap (None = same as the row above), top hash.
H_HELLO = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
H_A = "299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05"
VECTORS = [
    (b"", [EMPTY_HASH], EMPTY_HASH),
    (b"hello\n", [H_HELLO], H_HELLO),
    (b"hello\n" + b"\0" * 10, [H_HELLO], H_HELLO),
    (b"a" * BS + b"b",
     [H_A, "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"],
     "565546ad93383e225e7cf808fb4d527a54dec54826a5c34a24c1f19a03c62583"),
    (b"a" * BS + b"b" * BS + b"c",
     [H_A, "61d678b48de600e6922df82ac9fb5d208d19e98064d0d1d5c14a2ee50481c593",
      "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6"],
     "e747b499f8f09ea48c537050c3492c984d867b410639bd5867603e259278f746"),
    (b"\0" * (2 * BS), [EMPTY_HASH, EMPTY_HASH],
     "2dba5dbc339e7316aea2683faf839c1b7b1ee2313db792112588118df066aa35"),
]


@pytest.mark.parametrize("data,hashes,top", VECTORS, ids=range(len(VECTORS)))
def test_hash_tree_vectors_through_put_and_get(st, alice, data, hashes, top):
    v = upload(st, alice, "obj", data)
    assert v.hash == top and v.size == len(data)
    got = st.get_version(alice, "pithos", "obj", alice)
    assert st.hashes_of(got) == hashes
    assert read_all(st, got) == data


def test_blocks_are_stored_without_trailing_nuls_and_read_padded(st):
    h = st.put_block(b"hello\n" + b"\0" * 100)
    assert h == H_HELLO
    assert st.blocks.path_of(h).read_bytes() == b"hello\n"
    assert st.read_block(h, 16) == b"hello\n" + b"\0" * 10
    assert st.read_block(EMPTY_HASH, 5) == b"\0" * 5
    assert st.put_block(b"hello\n") == h  # idempotent


def test_put_stream_cuts_blocks_and_computes_md5(st):
    data = b"x" * BS + b"tail"
    size, hashes, md5 = st.put_stream(io.BytesIO(data), None, md5=True)
    assert size == len(data) and len(hashes) == 2
    import hashlib
    assert md5 == hashlib.md5(data).hexdigest()
    assert st.put_blocks_stream(io.BytesIO(b""), 0) == [EMPTY_HASH]
    with pytest.raises(InvalidInput):
        st.put_stream(io.BytesIO(b"short"), 10)


def test_missing_blocks_create_nothing(st, alice):
    h2 = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"
    with pytest.raises(MissingBlocks) as err:
        st.put_object(alice, "pithos", "big", alice, size=3 * BS, hashes=[h2, EMPTY_HASH, h2],
                      content_type="x", meta={})
    assert err.value.hashes == [h2]
    assert st.missing_blocks([h2, EMPTY_HASH, h2]) == [h2]
    with pytest.raises(NotFound):
        st.get_version(alice, "pithos", "big", alice)
    assert st.put_block(b"b") == "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"
    v = st.put_object(alice, "pithos", "big", alice, size=2 * BS + 1,
                      hashes=[h2, EMPTY_HASH, h2], content_type="x", meta={})
    assert read_all(st, v) == b"b" + b"\0" * (BS - 1) + b"\0" * BS + b"b"


@pytest.mark.parametrize("size,hashes", [
    (6, []), (6, [H_HELLO, H_HELLO]), (0, [H_HELLO]), (BS + 1, [H_HELLO]), (6, ["XYZ"]),
    (-1, [H_HELLO]),
])
def test_inconsistent_hashmaps_are_invalid(st, alice, size, hashes):
    st.put_block(b"hello\n")
    with pytest.raises(InvalidInput):
        st.put_object(alice, "pithos", "o", alice, size=size, hashes=hashes,
                      content_type="x", meta={})


def test_zero_length_object_with_empty_hashmap(st, alice):
    v = st.put_object(alice, "pithos", "empty", alice, size=0, hashes=[], content_type="x",
                      meta={})
    assert v.hash == EMPTY_HASH and st.hashes_of(v) == [EMPTY_HASH]


def test_names_and_limits(st, alice):
    upload(st, alice, "é/ü/" + "x" * 1000)
    with pytest.raises(NameTooLong):
        upload(st, alice, "x" * 1025)
    with pytest.raises(InvalidInput):
        upload(st, alice, "")
    with pytest.raises(InvalidInput):
        upload(st, alice, "nul\0name")
    with pytest.raises(InvalidInput):
        st.create_container(alice, "a/b", alice)
    with pytest.raises(NameTooLong):
        st.create_container(alice, "c" * 257, alice)
    assert st.create_container(alice, "c" * 256, alice) is True
    upload(st, alice, "ok", meta={f"K{i}": "v" for i in range(32)})
    for meta in ({f"K{i}": "v" for i in range(33)}, {"k" * 129: "v"}, {"k": "v" * 257}):
        with pytest.raises(InvalidInput):
            upload(st, alice, "meta", meta=meta)


def test_names_never_become_paths(st, alice, tmp_path):
    v = upload(st, alice, "../../../../etc/passwd", b"evil")
    assert_intact(st, v)
    files = sorted(p.relative_to(st.data_dir).parts[0] for p in st.data_dir.rglob("*"))
    assert set(files) <= {"blocks", "imagefs.db", "imagefs.db-wal", "imagefs.db-shm"}


# -- accounts and containers ---------------------------------------------------------------

def test_account_autocreated_with_pithos(st, alice):
    info = st.account_info(alice, alice)
    assert info["containers"] == 1 and info["bytes"] == 0
    assert [c.name for c in st.list_containers(alice, alice)] == ["pithos"]
    stranger = "0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f"
    st.ensure_account(stranger)
    st.ensure_account(stranger)
    assert [c.name for c in st.list_containers(stranger, stranger)] == ["pithos"]


def test_containers_policy_meta_and_delete(st, alice):
    assert st.create_container(alice, "images", alice, policy={"versioning": "none"},
                               meta={"Color": "red"}) is True
    assert st.create_container(alice, "images", alice, meta={"Size": "big"}) is False
    c = st.get_container(alice, "images", alice)
    assert c.versioning == "none" and c.meta == {"Color": "red", "Size": "big"}
    st.update_container(alice, "images", alice, meta={"Size": ""}, replace=False)
    assert st.get_container(alice, "images", alice).meta == {"Color": "red"}
    st.update_container(alice, "images", alice, policy={"quota": "100"}, meta={}, replace=True)
    c = st.get_container(alice, "images", alice)
    assert c.meta == {} and c.quota == 100
    with pytest.raises(InvalidInput):
        st.update_container(alice, "images", alice, policy={"versioning": "sometimes"})
    upload(st, alice, "x", container="images")
    c = st.get_container(alice, "images", alice)
    assert (c.count, c.bytes_used) == (1, 6)
    with pytest.raises(ContainerNotEmpty):
        st.delete_container(alice, "images", alice)
    st.delete_container_objects(alice, "images", alice)
    assert st.list_objects(alice, "images", alice) == []
    st.delete_container(alice, "images", alice)
    with pytest.raises(NotFound):
        st.get_container(alice, "images", alice)
    assert st.check() == []


def test_account_meta_and_groups(st, alice, bob):
    st.update_account(alice, alice, {"A": "1", "B": "2"}, {"team": [bob]}, replace=False)
    st.update_account(alice, alice, {"A": ""}, None, replace=False)
    info = st.account_info(alice, alice)
    assert info["meta"] == {"B": "2"} and info["groups"] == {"team": [bob]}
    st.update_account(alice, alice, {}, {}, replace=True)
    info = st.account_info(alice, alice)
    assert info["meta"] == {} and info["groups"] == {}
    with pytest.raises(Forbidden):
        st.update_account(alice, bob, {"X": "y"}, None, replace=False)


def test_quota(st, alice):
    st.create_container(alice, "small", alice, policy={"quota": 10})
    upload(st, alice, "a", b"123456", container="small")
    with pytest.raises(QuotaExceeded):
        upload(st, alice, "b", b"123456", container="small")
    upload(st, alice, "a", b"654321", container="small")  # replacing: no growth
    with pytest.raises(QuotaExceeded):
        st.copy_object(alice, "small", "a", alice, "small", "c", alice)
    st.move_object(alice, "small", "a", alice, "small", "d", alice)  # moving: no growth
    with st.db.write() as tx:
        tx.execute("UPDATE accounts SET quota = 8 WHERE name = ?", (alice,))
    with pytest.raises(QuotaExceeded):
        upload(st, alice, "x", b"12345", container="pithos")
    upload(st, alice, "x", b"12", container="pithos")


# -- versions ------------------------------------------------------------------------------

def test_versions_auto(st, alice):
    v1 = upload(st, alice, "f", b"one")
    v2 = upload(st, alice, "f", b"two")
    v3 = upload(st, alice, "f", b"three")
    assert v1.serial < v2.serial < v3.serial
    assert [s for s, _ in st.list_versions(alice, "pithos", "f", alice)] == [
        v1.serial, v2.serial, v3.serial]
    old = st.get_version(alice, "pithos", "f", alice, version=v1.serial)
    assert old.cluster == "history" and read_all(st, old) == b"one"
    assert old.latest_mtime == v3.mtime and old.uuid == v3.uuid
    st.delete_object(alice, "pithos", "f", alice)
    with pytest.raises(NotFound):
        st.get_version(alice, "pithos", "f", alice)
    assert len(st.list_versions(alice, "pithos", "f", alice)) == 3  # tombstone not listed
    assert read_all(st, st.get_version(alice, "pithos", "f", alice, version=v2.serial)) == b"two"
    with st.db.read() as tx:
        tomb = tx.scalar("SELECT MAX(serial) FROM versions")
    with pytest.raises(NotFound):
        st.get_version(alice, "pithos", "f", alice, version=tomb)
    with pytest.raises(NotFound):
        st.get_version(alice, "pithos", "f", alice, version=123456)
    with pytest.raises(NotFound):
        st.delete_object(alice, "pithos", "f", alice)
    other = upload(st, alice, "g")
    with pytest.raises(NotFound):  # a serial of another object
        st.get_version(alice, "pithos", "f", alice, version=other.serial)


def test_versions_none_purges_and_serials_are_never_reused(st, alice):
    st.create_container(alice, "flat", alice, policy={"versioning": "none"})
    v1 = upload(st, alice, "f", b"one" * 1000, container="flat")
    v2 = upload(st, alice, "f", b"two", container="flat")
    assert st.list_versions(alice, "flat", "f", alice) == [(v2.serial, v2.mtime)]
    with pytest.raises(NotFound):
        st.get_version(alice, "flat", "f", alice, version=v1.serial)
    assert st.gc(grace_seconds=-1) == (1, 3000)  # the first content's block is garbage now
    assert_intact(st, st.get_version(alice, "flat", "f", alice))
    st.delete_object(alice, "flat", "f", alice)
    assert st.list_versions(alice, "flat", "f", alice) == []
    v3 = upload(st, alice, "f", b"three", container="flat")
    assert v3.serial > v2.serial + 1 and v3.uuid != v2.uuid
    assert st.check() == []


def test_preconditions(st, alice):
    v = upload(st, alice, "p")
    with pytest.raises(PreconditionFailed):
        upload(st, alice, "p", if_none_match="*")
    with pytest.raises(PreconditionFailed):
        upload(st, alice, "p", b"x", if_match="0" * 64)
    with pytest.raises(PreconditionFailed):
        upload(st, alice, "new", if_match="*")
    upload(st, alice, "p", b"x", if_match=f'"{v.hash.upper()}"')
    upload(st, alice, "new", if_none_match="*")


# -- §3.10 uuid and metadata-domain lifecycle, row by row ----------------------------------

def _read_domains(st, serial):
    with st.db.read() as tx:
        return st._domains(tx, serial)


@pytest.fixture
def image_obj(st, alice, bob):
    """An object with user meta, a registration (domain plankton) and grants."""
    upload(st, alice, "img", b"disk", meta={"Mtime": "1"})
    st.register_image(alice, alice, "pithos", "img", image_name="Debian",
                      properties={"os": "linux"}, is_public=False)
    st.set_sharing(alice, "pithos", "img", alice, {"read": [bob]})
    return st.get_version(alice, "pithos", "img", alice)


def test_310_put_to_existing_path(st, alice, bob, image_obj):
    v = upload(st, alice, "img", b"new disk", meta={"Other": "x"})
    assert v.uuid == image_obj.uuid and v.created == image_obj.created
    assert v.meta == {"Other": "x"}
    assert _read_domains(st, v.serial)["plankton"]["name"] == "Debian"
    assert v.sharing == {"read": [bob]}


def test_310_put_to_new_or_deleted_path(st, alice, bob, image_obj):
    st.delete_object(alice, "pithos", "img", alice)
    v = upload(st, alice, "img", b"again", meta={"A": "1"})
    assert v.uuid != image_obj.uuid and v.created > image_obj.created
    assert _read_domains(st, v.serial) == {"pithos": {"A": "1"}}
    assert v.sharing == {}
    fresh = upload(st, alice, "fresh")
    assert fresh.uuid not in (v.uuid, image_obj.uuid)


def test_310_post_metadata(st, alice, bob, image_obj):
    v = st.update_object_meta(alice, "pithos", "img", alice, meta={"New": "1"}, replace=False)
    assert v.uuid == image_obj.uuid and v.serial > image_obj.serial
    assert v.meta == {"Mtime": "1", "New": "1"}
    assert "plankton" in _read_domains(st, v.serial) and v.sharing == {"read": [bob]}
    v = st.update_object_meta(alice, "pithos", "img", alice, meta={"Mtime": ""}, replace=False)
    assert v.meta == {"New": "1"}
    v = st.update_object_meta(alice, "pithos", "img", alice, meta={"Only": "1"}, replace=True)
    assert v.meta == {"Only": "1"}
    assert st.update_object_meta(alice, "pithos", "img", alice, meta={}, replace=False) is None
    v2 = st.update_object_meta(alice, "pithos", "img", alice, meta={}, replace=True)
    assert v2.meta == {} and v2.serial > v.serial


def test_310_copy_to_another_path(st, alice, bob, image_obj):
    v = st.copy_object(alice, "pithos", "img", alice, "pithos", "copy", alice,
                       meta_update={"Extra": "1", "Mtime": ""})
    assert v.uuid != image_obj.uuid and v.hash == image_obj.hash
    assert v.meta == {"Extra": "1"}
    assert _read_domains(st, v.serial)["plankton"]["name"] == "Debian"
    assert v.sharing == {}
    assert st.get_version(alice, "pithos", "img", alice).serial == image_obj.serial


def test_310_copy_onto_itself(st, alice, bob, image_obj):
    v = st.copy_object(alice, "pithos", "img", alice, "pithos", "img", alice,
                       meta_update={"Extra": "1"})
    assert v.uuid == image_obj.uuid and v.serial > image_obj.serial
    assert v.meta == {"Mtime": "1", "Extra": "1"}
    assert "plankton" in _read_domains(st, v.serial) and v.sharing == {"read": [bob]}


def test_310_move(st, alice, bob, image_obj):
    st.set_public(alice, "pithos", "img", alice, True)
    v = st.move_object(alice, "pithos", "img", alice, "pithos", "moved", alice,
                       meta_update={"Extra": "1"}, content_type="application/x-disk")
    assert v.uuid == image_obj.uuid and v.created == image_obj.created
    assert v.meta == {"Mtime": "1", "Extra": "1"} and v.content_type == "application/x-disk"
    assert _read_domains(st, v.serial)["plankton"]["name"] == "Debian"
    assert v.sharing == {} and v.public_id == ""
    with pytest.raises(NotFound):
        st.get_version(alice, "pithos", "img", alice)
    with pytest.raises(Forbidden):  # the source's grants are gone with it
        st.get_version(alice, "pithos", "img", bob)
    with pytest.raises(Forbidden):
        st.move_object(alice, "pithos", "moved", alice, "pithos", "x", bob)


def test_310_delete(st, alice, bob, image_obj):
    st.set_public(alice, "pithos", "img", alice, True)
    st.delete_object(alice, "pithos", "img", alice)
    with st.db.read() as tx:
        obj_id, current, public_id = tx.one(
            "SELECT id, current, public_id FROM objects WHERE name = 'img'")
        tomb = tx.one("SELECT serial, cluster, size, hash, uuid FROM versions "
                      "WHERE object_id = ? ORDER BY serial DESC LIMIT 1", (obj_id,))
        assert current is None and public_id is None
        assert tomb[1:] == (2, 0, "", image_obj.uuid)
        assert tx.all("SELECT * FROM meta WHERE serial = ?", (tomb[0],)) == []
        assert tx.all("SELECT * FROM permissions WHERE object_id = ?", (obj_id,)) == []


def test_copy_and_move_with_delimiter(st, alice):
    st.put_object(alice, "pithos", "dir", alice, size=0, hashes=[],
                  content_type="application/directory", meta={})
    for n in ("dir/a", "dir/b/c", "dirx"):
        upload(st, alice, n, n.encode())
    st.copy_object(alice, "pithos", "dir", alice, "pithos", "copy", alice, delimiter="/")
    assert names(st.list_objects(alice, "pithos", alice, prefix="copy")) == [
        "copy", "copy/a", "copy/b/c"]
    st.move_object(alice, "pithos", "copy", alice, "pithos", "moved", alice, delimiter="/")
    assert names(st.list_objects(alice, "pithos", alice, prefix="copy")) == []
    moved = st.get_version(alice, "pithos", "moved/b/c", alice)
    assert read_all(st, moved) == b"dir/b/c"
    with pytest.raises(InvalidInput):  # "dir/a" would be both a source and a destination
        st.copy_object(alice, "pithos", "dir", alice, "pithos", "dir/a", alice, delimiter="/")
    st.move_object(alice, "pithos", "moved", alice, "pithos", "moved/b", alice, delimiter="/")
    assert names(st.list_objects(alice, "pithos", alice, prefix="moved")) == [
        "moved/b", "moved/b/a", "moved/b/b/c"]
    st.delete_object(alice, "pithos", "moved/b", alice, delimiter="/")
    assert names(st.list_objects(alice, "pithos", alice)) == ["dir", "dir/a", "dir/b/c", "dirx"]
    assert st.check() == []


# -- listing (api.md §3.5) -----------------------------------------------------------------

@pytest.fixture
def example(st, alice):
    st.put_object(alice, "pithos", "images", alice, size=0, hashes=[],
                  content_type="application/directory", meta={})
    for n in ("images/debian.diskdump", "images/win8.diskdump", "images/debian.diskdump.meta",
              "notes.txt"):
        upload(st, alice, n, meta={"Mtime": n})
    return alice


@pytest.mark.parametrize("params,expected", [
    ({}, ["images", "images/debian.diskdump", "images/debian.diskdump.meta",
          "images/win8.diskdump", "notes.txt"]),
    ({"delimiter": "/"}, ["images", "images/", "notes.txt"]),
    ({"prefix": "images/", "delimiter": "/"},
     ["images/debian.diskdump", "images/debian.diskdump.meta", "images/win8.diskdump"]),
    ({"prefix": "images", "delimiter": "/"},
     ["images/debian.diskdump", "images/debian.diskdump.meta", "images/win8.diskdump"]),
    ({"prefix": "images"}, ["images", "images/debian.diskdump", "images/debian.diskdump.meta",
                            "images/win8.diskdump"]),
    ({"path": "images"},
     ["images/debian.diskdump", "images/debian.diskdump.meta", "images/win8.diskdump"]),
    ({"limit": 2, "marker": "images"}, ["images/debian.diskdump", "images/debian.diskdump.meta"]),
    ({"prefix": "/images/", "delimiter": "/", "limit": 1}, ["images/debian.diskdump"]),
    ({"prefix": "nothing"}, []),
    ({"marker": "notes.txt"}, []),
])
def test_listing_examples(st, example, params, expected):
    entries = st.list_objects(example, "pithos", example, **params)
    assert names(entries) == expected
    assert [isinstance(e, str) for e in entries] == [n.endswith("/") for n in expected]


def test_listing_entries_carry_user_meta(st, example):
    entries = st.list_objects(example, "pithos", example, prefix="images/")
    assert [e.meta for e in entries] == [{"Mtime": e.name} for e in entries]
    assert all(e.hashes is None and e.cluster == "normal" for e in entries)


def test_listing_delimiter_rules(st, alice):
    for n in ("/abs", "a/", "a/b/", "a/b/c", "a/x", "ab", "x/", "x/a", "x/b/c", "y//z"):
        upload(st, alice, n)
    assert names(st.list_objects(alice, "pithos", alice, delimiter="/")) == [
        "/abs", "a/", "ab", "x/", "y/"]
    # The object named exactly the prefix is listed (it starts with the prefix, as in real
    # Pithos); the object "a/b/" wins over the subdir "a/b/".
    assert names(st.list_objects(alice, "pithos", alice, prefix="a/", delimiter="/")) == [
        "a/", "a/b/", "a/x"]
    assert names(st.list_objects(alice, "pithos", alice, prefix="y/", delimiter="/")) == ["y//"]
    # Paging with the last entry as marker reproduces the full listing.
    full = names(st.list_objects(alice, "pithos", alice, delimiter="/"))
    paged, marker = [], None
    while True:
        page = names(st.list_objects(alice, "pithos", alice, delimiter="/", limit=1,
                                     marker=marker))
        if not page:
            break
        paged += page
        marker = page[-1]
    assert paged == full
    assert names(st.list_objects(alice, "pithos", alice, delimiter="/", marker="a/b")) == [
        "ab", "x/", "y/"]


def test_listing_unicode_order_and_prefix_bounds(st, alice):
    for n in ("a", "a\U0010fffe", "a\uffff", "ab", "é", "z"):
        upload(st, alice, n)
    assert names(st.list_objects(alice, "pithos", alice, prefix="a")) == [
        "a", "ab", "a\uffff", "a\U0010fffe"]
    assert names(st.list_objects(alice, "pithos", alice)) == sorted(
        ["a", "a\U0010fffe", "a\uffff", "ab", "é", "z"])


def test_listing_pages_of_many_objects(st, alice):
    want = sorted(f"d{i % 7}/f{i:04d}" for i in range(300))
    for n in want:
        st.put_object(alice, "pithos", n, alice, size=0, hashes=[], content_type="x",
                      meta={"N": n})
    got, marker = [], None
    while True:
        page = st.list_objects(alice, "pithos", alice, limit=64, marker=marker)
        if not page:
            break
        got += page
        marker = page[-1].name
    assert [v.name for v in got] == want and all(v.meta == {"N": v.name} for v in got)
    assert names(st.list_objects(alice, "pithos", alice, delimiter="/")) == [
        f"d{i}/" for i in range(7)]
    assert len(st.list_objects(alice, "pithos", alice, prefix="d3/", delimiter="/")) == 43


def test_public_objects(st, alice, bob):
    upload(st, alice, "pub", b"public data")
    pid = st.set_public(alice, "pithos", "pub", alice, True)
    assert len(pid) == 16 and pid.isalnum()
    assert st.set_public(alice, "pithos", "pub", alice, True) == pid
    assert read_all(st, st.get_public(pid)) == b"public data"
    assert st.get_version(alice, "pithos", "pub", bob).allowed_to == "read"
    assert names(st.list_objects(alice, "pithos", alice, public=True)) == ["pub"]
    with pytest.raises(Forbidden):
        st.list_objects(alice, "pithos", bob, public=True)
    with pytest.raises(Forbidden):
        st.set_public(alice, "pithos", "pub", bob, False)
    assert st.set_public(alice, "pithos", "pub", alice, False) == ""
    with pytest.raises(NotFound):
        st.get_public(pid)


def test_gc_keeps_referenced_and_young_blocks(st, alice):
    import os
    import time

    v = upload(st, alice, "keep", b"referenced")
    young = st.put_block(b"uploaded, not committed yet")
    old = st.put_block(b"garbage")
    past = time.time() - 7200
    for h in (st.hashes_of(v)[0], old, EMPTY_HASH):
        os.utime(st.blocks.path_of(h), (past, past))
    assert st.gc(grace_seconds=3600) == (1, len(b"garbage"))
    assert st.missing_blocks([old, young, EMPTY_HASH, *st.hashes_of(v)]) == [old]
    assert_intact(st, v)
    # Sending an old unreferenced block again protects it from the next gc.
    os.utime(st.blocks.path_of(young), (past, past))
    st.put_block(b"uploaded, not committed yet")
    assert st.gc(grace_seconds=3600) == (0, 0)
    assert st.blocks.path_of(EMPTY_HASH).exists()


def test_check_reports_and_repairs(st, alice):
    v = upload(st, alice, "x", b"content")
    assert st.check() == []
    h = st.hashes_of(v)[0]
    tmp = st.blocks.path_of(h).parent / ".tmp-deadbeef"
    tmp.write_bytes(b"partial")
    assert st.check(temp_grace=3600) == []  # maybe a write in progress
    problems = st.check(temp_grace=0)
    assert len(problems) == 1 and "temporary" in problems[0]
    repaired = []
    assert st.check(repair=True, temp_grace=0, on_repair=repaired.append) == []
    assert not tmp.exists() and len(repaired) == 1
    st.blocks.path_of(h).write_bytes(b"tampered")
    assert any("does not match" in p for p in st.check())
    st.blocks.path_of(h).unlink()
    assert any("missing" in p for p in st.check())


def test_store_reopens(tmp_path, alice, st):
    upload(st, alice, "persist", b"data")
    again = Store.open(st.data_dir)
    assert read_all(again, again.get_version(alice, "pithos", "persist", alice)) == b"data"
    assert oct(st.data_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((st.data_dir / "imagefs.db").stat().st_mode & 0o777) == "0o600"


def test_restoring_an_old_version_by_copy_onto_itself(st, alice):
    v1 = upload(st, alice, "doc", b"first")
    v2 = upload(st, alice, "doc", b"second")
    v3 = st.copy_object(alice, "pithos", "doc", alice, "pithos", "doc", alice,
                        src_version=v1.serial)
    assert v3.uuid == v2.uuid and v3.serial > v2.serial and read_all(st, v3) == b"first"
    st.delete_object(alice, "pithos", "doc", alice)
    v4 = st.copy_object(alice, "pithos", "doc", alice, "pithos", "doc", alice,
                        src_version=v2.serial)
    assert v4.uuid != v2.uuid and read_all(st, v4) == b"second"
