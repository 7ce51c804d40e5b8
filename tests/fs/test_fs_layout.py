"""Containers at the top, pseudo-directories inside, listings that cost a paged listing."""

from __future__ import annotations

import errno

import pytest
import trio

from imagefs import errors
from imagefs.fs.filesystem import Filesystem
from imagefs.fs.tree import ROOT_INODE, Kind


async def test_mkdir_at_top_creates_a_container_and_rmdir_removes_it(vfs, conn, fresh):
    name = fresh("top")
    attr = await vfs.mkdir(name)
    assert attr.kind is Kind.CONTAINER
    names = [c.name for c in await trio.to_thread.run_sync(conn.pithos.list_containers)]
    assert name in names
    assert name in await vfs.ls("/")
    with pytest.raises(errors.AlreadyExists):
        await vfs.mkdir(name)
    await vfs.rmdir(name)
    names = [c.name for c in await trio.to_thread.run_sync(conn.pithos.list_containers)]
    assert name not in names
    assert not await vfs.exists(name)


async def test_rmdir_of_a_non_empty_container_is_enotempty(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"x")
    with pytest.raises(errors.ContainerNotEmpty) as exc:
        await vfs.rmdir(c)
    assert errors.to_errno(exc.value) == errno.ENOTEMPTY
    assert await vfs.exists(c)


@pytest.mark.parametrize("name", [".Trash", ".Trash-1000", ".Trash-0"])
async def test_trash_at_the_top_is_refused_and_creates_nothing(vfs, conn, name):
    with pytest.raises(errors.Forbidden) as exc:
        await vfs.mkdir(name)
    assert errors.to_errno(exc.value) == errno.EACCES
    names = [c.name for c in await trio.to_thread.run_sync(conn.pithos.list_containers)]
    assert name not in names
    assert not await vfs.exists(name)


async def test_files_cannot_live_at_the_top(vfs):
    with pytest.raises(errors.NotPermitted):
        await vfs.create("file-at-top")


async def test_mkdir_creates_a_marker_and_the_empty_directory_survives_a_remount(
        vfs, conn, fresh, tmp_path):
    c = await vfs.container(fresh())
    attr = await vfs.mkdir(f"{c}/empty")
    assert attr.kind is Kind.DIR
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "empty")
    assert info.is_directory and info.size == 0
    other = Filesystem(conn, cache_dir=tmp_path / "other")
    await other.start()
    try:
        ino = (await other.lookup(ROOT_INODE, c)).ino
        assert (await other.lookup(ino, "empty")).kind is Kind.DIR
    finally:
        await other.close()
    with pytest.raises(errors.AlreadyExists):
        await vfs.mkdir(f"{c}/empty")


async def test_pseudo_directories_without_markers(vfs, conn, fresh):
    c = await vfs.container(fresh())

    def upload() -> None:
        conn.pithos.put_data(c, "a/b/c.txt", b"deep")
        conn.pithos.put_data(c, "a/top.txt", b"top")
    await trio.to_thread.run_sync(upload)
    top = await vfs.ls(c)
    assert set(top) == {"a"} and top["a"].kind is Kind.DIR
    inner = await vfs.ls(f"{c}/a")
    assert inner["b"].kind is Kind.DIR and inner["top.txt"].kind is Kind.FILE
    assert inner["top.txt"].size == 3
    assert await vfs.read_file(f"{c}/a/b/c.txt") == b"deep"
    with pytest.raises(errors.ContainerNotEmpty):
        await vfs.rmdir(f"{c}/a")


async def test_removing_the_last_file_keeps_a_markerless_directory(vfs, conn, fresh):
    """rm -r removes the files, then the directory: the directory must still be there."""
    c = await vfs.container(fresh())
    await trio.to_thread.run_sync(conn.pithos.put_data, c, "d/only", b"1")
    await vfs.unlink(f"{c}/d/only")
    assert (await vfs.stat(f"{c}/d")).kind is Kind.DIR
    assert await vfs.ls(f"{c}/d") == {}
    await vfs.rmdir(f"{c}/d")
    assert await vfs.names(c) == []


async def test_rmdir_of_a_non_empty_directory_is_enotempty(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.mkdir(f"{c}/d")
    await vfs.write_file(f"{c}/d/f", b"data")
    with pytest.raises(errors.ContainerNotEmpty):
        await vfs.rmdir(f"{c}/d")
    await vfs.unlink(f"{c}/d/f")
    await vfs.rmdir(f"{c}/d")
    assert not await vfs.exists(f"{c}/d")
    assert await vfs.names(c) == []


async def test_a_directory_with_an_open_new_file_is_not_empty(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.mkdir(f"{c}/d")
    fh = await vfs.create(f"{c}/d/new")
    with pytest.raises(errors.ContainerNotEmpty):
        await vfs.rmdir(f"{c}/d")
    await vfs.close(fh)


async def test_large_directory_costs_a_paged_listing_and_no_request_per_file(
        vfs, conn, fresh, requests_log, monkeypatch):
    c = await vfs.container(fresh())
    count = 250  # with pages of 100: what 10,000 files cost with the service's pages
    monkeypatch.setattr(conn.pithos, "page_size", 100)

    def fill(start: int) -> None:
        for i in range(start, count, 8):
            conn.pithos.put_data(c, f"big/f{i:05d}", b"%d" % i)
    async with trio.open_nursery() as nursery:
        for start in range(8):
            nursery.start_soon(trio.to_thread.run_sync, fill, start)
    requests_log.clear()
    listed = await vfs.ls(f"{c}/big", batch=97)
    assert len(listed) == count
    assert listed["f00042"].size == 2
    for name in ("f00000", "f00123", f"f{count - 1:05d}"):
        assert (await vfs.stat(f"{c}/big/{name}")).size == len(str(int(name[1:])))
    gets = requests_log.of("GET")
    heads = requests_log.of("HEAD")
    # the lookup of "big" (HEAD + one-entry listing), then 3 pages, nothing per file
    assert len([g for g in gets if g.params.get("delimiter") == "/"]) == 3
    assert not [h for h in heads if "/big/" in h.url]


async def test_readdir_ids_are_stable_while_entries_change(vfs, fresh):
    c = await vfs.container(fresh())
    for i in range(6):
        await vfs.write_file(f"{c}/f{i}", b"x")
    fh = await vfs.fs.opendir(await vfs.ino(c))
    seen = []

    def one(name, attr, next_id):
        if len(seen) >= 3:
            return False
        seen.append((name, next_id))
        return True

    await vfs.fs.readdir(fh, 0, one)
    await vfs.unlink(f"{c}/f4")  # changes during the listing skip or repeat nothing
    await vfs.write_file(f"{c}/g", b"y")
    rest = []
    await vfs.fs.readdir(fh, seen[-1][1], lambda n, a, i: rest.append(n) or True)
    await vfs.fs.releasedir(fh)
    names = [n for n, _ in seen] + rest
    assert names == [f"f{i}" for i in range(6)]


async def test_lookup_counts_and_forget(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"x")
    fs = vfs.fs
    parent = await vfs.ino(c)
    a = await fs.lookup(parent, "f")
    b = await fs.lookup(parent, "f")
    assert a.ino == b.ino
    node = fs.tree.get(a.ino)
    fs.forget([(a.ino, node.lookups)])
    with pytest.raises(errors.NotFound):
        fs.tree.get(a.ino)
    again = await fs.lookup(parent, "f")
    assert again.ino != a.ino  # numbers are never reused


async def test_other_clients_changes_show_within_the_cache_timeout(conn, tmp_path, fresh):
    fs = Filesystem(conn, cache_dir=tmp_path / "c", cache_timeout=0.3)
    await fs.start()
    c = fresh()
    try:
        await fs.mkdir(ROOT_INODE, c)
        ino = (await fs.lookup(ROOT_INODE, c)).ino
        with pytest.raises(errors.NotFound):
            await fs.lookup(ino, "later")
        await trio.to_thread.run_sync(conn.pithos.put_data, c, "later", b"hello")
        await trio.sleep(0.4)
        assert (await fs.lookup(ino, "later")).size == 5
        await trio.to_thread.run_sync(conn.pithos.put_data, c, "later", b"hello world")
        await trio.sleep(0.4)
        file_ino = (await fs.lookup(ino, "later")).ino
        assert (await fs.getattr(file_ino)).size == 11
    finally:
        await fs.close()
        for obj in await trio.to_thread.run_sync(lambda: list(conn.pithos.list_objects(c))):
            await trio.to_thread.run_sync(conn.pithos.delete, c, obj.name)
        await trio.to_thread.run_sync(conn.pithos.delete_container, c)
