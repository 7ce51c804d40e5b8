"""Times, attributes, extended attributes and free space."""

from __future__ import annotations

import dataclasses
import errno
import os

import pytest
import trio

from imagefs import errors
from imagefs.fs.filesystem import Filesystem
from imagefs.fs.tree import MTIME_KEY, ROOT_INODE, format_mtime, parse_mtime

T1 = 1_371_628_822_565_891_123  # 2013-06-19, to the nanosecond
T2 = 1_500_000_000_000_000_000


async def test_utimens_on_a_closed_file_updates_the_stored_mtime(vfs, conn, fresh,
                                                                 requests_log):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"data")
    ino = await vfs.ino(f"{c}/f")
    requests_log.clear()
    attr = await vfs.fs.setattr(ino, mtime_ns=T1)
    assert attr.mtime_ns == T1
    assert requests_log.hashmap_puts() == []  # metadata only, no re-upload
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
    assert parse_mtime(info.meta[MTIME_KEY]) == T1
    assert await vfs.stored(c, "f") == b"data"


async def test_utimens_while_writing_is_stored_by_the_upload(vfs, conn, fresh):
    """cp -p: write, futimens on the open descriptor, close."""
    c = await vfs.container(fresh())
    fh = await vfs.create(f"{c}/f")
    await vfs.fs.write(fh, 0, b"copied")
    ino = await vfs.ino(f"{c}/f")
    await vfs.fs.setattr(ino, mtime_ns=T2)
    assert (await vfs.fs.getattr(ino)).mtime_ns == T2
    await vfs.close(fh)
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
    assert parse_mtime(info.meta[MTIME_KEY]) == T2
    assert (await vfs.stat(f"{c}/f")).mtime_ns == T2


async def test_mtime_without_stored_meta_is_last_modified(vfs, conn, fresh):
    c = await vfs.container(fresh())
    await trio.to_thread.run_sync(conn.pithos.put_data, c, "plain", b"x")
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "plain")
    assert (await vfs.stat(f"{c}/plain")).mtime_ns == int(info.mtime * 1e9)


async def test_user_metadata_survives_a_rewrite(vfs, conn, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"one")
    await vfs.fs.setxattr(await vfs.ino(f"{c}/f"), "user.pithos.meta.colour", b"blue")
    await vfs.write_file(f"{c}/f", b"two")
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
    assert info.meta["Colour"] == "blue" and MTIME_KEY in info.meta


async def test_chmod_and_chown_are_accepted_and_ignored(vfs, fresh, requests_log):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"data")
    ino = await vfs.ino(f"{c}/f")
    before = await vfs.fs.getattr(ino)
    requests_log.clear()
    after = await vfs.fs.setattr(ino)  # what ops passes for mode/uid/gid-only changes
    assert after == before
    assert requests_log.requests == []


async def test_pithos_xattrs_on_files(vfs, conn, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"content")
    ino = await vfs.ino(f"{c}/f")
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
    fs = vfs.fs
    assert await fs.getxattr(ino, "user.pithos.hash") == info.hash.encode()
    assert await fs.getxattr(ino, "user.pithos.uuid") == info.uuid.encode()
    assert await fs.getxattr(ino, "user.pithos.version") == str(info.version).encode()
    names = fs.listxattr(ino)
    assert {"user.pithos.hash", "user.pithos.uuid", "user.pithos.version",
            "user.pithos.meta.Mtime"} <= set(names)

    await fs.setxattr(ino, "user.pithos.meta.image_os", b"Linux")
    assert await fs.getxattr(ino, "user.pithos.meta.Image-Os") == b"Linux"
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
    assert info.meta["Image-Os"] == "Linux"
    await fs.removexattr(ino, "user.pithos.meta.image_os")
    with pytest.raises(errors.NoSuchAttribute):
        await fs.getxattr(ino, "user.pithos.meta.image_os")

    with pytest.raises(errors.NoSuchAttribute):
        await fs.getxattr(ino, "user.pithos.public")  # not published
    await fs.setxattr(ino, "user.pithos.public", b"true")
    url = (await fs.getxattr(ino, "user.pithos.public")).decode()
    assert "/public/" in url
    assert "user.pithos.public" in fs.listxattr(ino)
    await fs.setxattr(ino, "user.pithos.public", b"false")
    with pytest.raises(errors.NoSuchAttribute):
        await fs.getxattr(ino, "user.pithos.public")
    with pytest.raises(errors.InvalidInput):
        await fs.setxattr(ino, "user.pithos.public", b"maybe")
    with pytest.raises(errors.ReadOnlyField) as exc:
        await fs.setxattr(ino, "user.pithos.hash", b"0" * 64)
    assert errors.to_errno(exc.value) == errno.EPERM


async def test_container_xattrs(vfs, conn, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"12345")
    fs = vfs.fs
    ino = await vfs.ino(c)
    assert set(fs.listxattr(ino)) == {"user.pithos.versioning", "user.pithos.quota",
                                      "user.pithos.usage"}
    assert await fs.getxattr(ino, "user.pithos.versioning") == b"auto"
    await fs.setxattr(ino, "user.pithos.versioning", b"none")
    assert await fs.getxattr(ino, "user.pithos.versioning") == b"none"
    info = await trio.to_thread.run_sync(conn.pithos.container_info, c)
    assert info.versioning == "none"
    with pytest.raises(errors.InvalidInput):
        await fs.setxattr(ino, "user.pithos.versioning", b"sometimes")
    with pytest.raises(errors.ReadOnlyField):
        await fs.setxattr(ino, "user.pithos.quota", b"1")
    assert int(await fs.getxattr(ino, "user.pithos.quota")) == 0


@pytest.mark.parametrize("name", ["security.selinux", "security.capability",
                                  "system.posix_acl_access", "system.posix_acl_default",
                                  "trusted.overlay", "user.other"])
async def test_foreign_xattrs_cost_no_request(vfs, fresh, requests_log, name):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"x")
    ino = await vfs.ino(f"{c}/f")
    await vfs.fs.getattr(ino)
    requests_log.clear()
    with pytest.raises((errors.NoSuchAttribute, errors.Unsupported)) as got:
        await vfs.fs.getxattr(ino, name)
    assert errors.to_errno(got.value) == \
        (errno.ENODATA if name.startswith("user.") else errno.EOPNOTSUPP)
    with pytest.raises(errors.Unsupported) as put:
        await vfs.fs.setxattr(ino, name, b"v")
    assert errors.to_errno(put.value) == errno.EOPNOTSUPP
    with pytest.raises(errors.Unsupported):
        await vfs.fs.removexattr(ino, name)
    vfs.fs.listxattr(ino)
    assert requests_log.requests == []


async def test_root_control_channel(vfs):
    import json
    status = json.loads(await vfs.fs.getxattr(ROOT_INODE, "user.imagefs.status"))
    assert status["uploads"] == [] and status["pending"] == 0
    assert await vfs.fs.getxattr(ROOT_INODE, "user.imagefs.pending") == b"0"
    with pytest.raises(errors.Unsupported):
        await vfs.fs.getxattr(ROOT_INODE, "security.selinux")
    with pytest.raises(errors.NoSuchAttribute):
        await vfs.fs.getxattr(ROOT_INODE, "user.other")


async def test_statfs_reports_room(vfs):
    info = await vfs.fs.statfs()
    assert info.free > 0 and info.blocks >= info.free
    assert info.block_size == 4 * 1024 * 1024


async def test_listing_without_metadata_fetches_mtimes_lazily(conn, tmp_path, fresh,
                                                              monkeypatch):
    """Against a real deployment listings carry no metadata: the stored mtime is
    fetched on getattr (in parallel for the listing's files), never guessed."""
    c = fresh()
    await trio.to_thread.run_sync(conn.pithos.create_container, c)

    def upload() -> None:
        for i in range(5):
            conn.pithos.put_data(c, f"f{i}", b"x", meta={MTIME_KEY: format_mtime(T1 + i)})
    await trio.to_thread.run_sync(upload)
    real_list = conn.pithos.list_objects

    def list_without_meta(*args, **kw):
        for item in real_list(*args, **kw):
            yield dataclasses.replace(item, meta=None) if hasattr(item, "meta") else item

    monkeypatch.setattr(conn.pithos, "list_objects", list_without_meta)
    fs = Filesystem(conn, cache_dir=tmp_path / "c")
    await fs.start()
    try:
        parent = (await fs.lookup(ROOT_INODE, c)).ino
        fh = await fs.opendir(parent)
        entries = []
        await fs.readdir(fh, 0, lambda n, a, i: entries.append((n, a)) or True)
        await fs.releasedir(fh)
        assert all(a.attr_timeout == 0 for _, a in entries)  # the kernel will ask again
        for name, attr in entries:
            got = await fs.getattr(attr.ino)
            assert got.mtime_ns == T1 + int(name[1:])
            assert got.attr_timeout is None
    finally:
        await fs.close()
        monkeypatch.undo()
        for i in range(5):
            await trio.to_thread.run_sync(conn.pithos.delete, c, f"f{i}")
        await trio.to_thread.run_sync(conn.pithos.delete_container, c)


def test_mtime_text_round_trips_to_the_nanosecond():
    for ns in (0, 1, T1, T2, 1_000_000_000, 123_456_789):
        assert parse_mtime(format_mtime(ns)) == ns
    assert format_mtime(T2) == "1500000000"
    assert format_mtime(1_500_000_000_500_000_000) == "1500000000.5"
    assert parse_mtime("1371628822.565891") == 1_371_628_822_565_891_000
    assert parse_mtime("bogus") is None and parse_mtime("") is None
    assert parse_mtime("1.2.3") is None


def test_new_files_are_not_chmod_sensitive():
    assert os.O_ACCMODE  # the glue maps modes; nothing to store
