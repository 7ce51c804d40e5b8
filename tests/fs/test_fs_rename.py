"""Rename is a server-side move; editors' save dances leave exactly the saved file."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from imagefs import errors
from imagefs.fs.filesystem import RENAME_NOREPLACE
from imagefs.fs.tree import Kind

MiB = 1024 * 1024


async def test_rename_a_file_moves_it_on_the_service_without_data(vfs, conn, fresh,
                                                                  requests_log):
    c = await vfs.container(fresh())
    data = os.urandom(5 * MiB)
    await vfs.write_file(f"{c}/a", data)
    uuid = (await trio.to_thread.run_sync(conn.pithos.head, c, "a")).uuid
    ino = await vfs.ino(f"{c}/a")
    requests_log.clear()
    await vfs.rename(f"{c}/a", f"{c}/b")
    assert requests_log.block_posts() == [] and requests_log.hashmap_puts() == []
    moves = [r for r in requests_log.of("PUT")]
    assert len(moves) == 1
    assert await vfs.names(c) == ["b"]
    assert (await trio.to_thread.run_sync(conn.pithos.head, c, "b")).uuid == uuid
    assert await vfs.ino(f"{c}/b") == ino  # the kernel keeps its inode
    assert not await vfs.exists(f"{c}/a")
    assert await vfs.read_file(f"{c}/b") == data


async def test_rename_over_an_existing_file_replaces_it(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/a", b"new")
    await vfs.write_file(f"{c}/b", b"old")
    await vfs.rename(f"{c}/a", f"{c}/b")
    assert await vfs.names(c) == ["b"]
    assert await vfs.stored(c, "b") == b"new"
    assert await vfs.read_file(f"{c}/b") == b"new"
    await vfs.write_file(f"{c}/x", b"x")
    with pytest.raises(errors.AlreadyExists):
        await vfs.rename(f"{c}/x", f"{c}/b", RENAME_NOREPLACE)


async def test_rename_across_containers_and_directories(vfs, fresh):
    c1 = await vfs.container(fresh())
    c2 = await vfs.container(fresh())
    await vfs.mkdir(f"{c2}/sub")
    await vfs.write_file(f"{c1}/f", b"moving")
    await vfs.rename(f"{c1}/f", f"{c2}/sub/g")
    assert await vfs.names(c1) == []
    assert await vfs.stored(c2, "sub/g") == b"moving"
    assert set(await vfs.ls(f"{c2}/sub")) == {"g"}


async def test_rename_a_whole_directory_with_its_marker(vfs, conn, fresh):
    c1 = await vfs.container(fresh())
    c2 = await vfs.container(fresh())
    await vfs.mkdir(f"{c1}/d")
    await vfs.mkdir(f"{c1}/d/e")
    await vfs.write_file(f"{c1}/d/f1", b"1")
    await vfs.write_file(f"{c1}/d/e/f2", b"2")
    fh = await vfs.create(f"{c1}/d/open")  # a file being written moves with it
    await vfs.fs.write(fh, 0, b"written during the move")
    child = await vfs.ino(f"{c1}/d/e/f2")
    await vfs.rename(f"{c1}/d", f"{c1}/moved")
    assert sorted(await vfs.names(c1)) == ["moved", "moved/e", "moved/e/f2", "moved/f1"]
    assert (await trio.to_thread.run_sync(conn.pithos.head, c1, "moved")).is_directory
    assert await vfs.ino(f"{c1}/moved/e/f2") == child
    await vfs.close(fh)
    assert await vfs.stored(c1, "moved/open") == b"written during the move"
    await vfs.rename(f"{c1}/moved", f"{c2}/there")
    assert await vfs.names(c1) == []
    assert sorted(await vfs.names(c2)) == ["there", "there/e", "there/e/f2", "there/f1",
                                           "there/open"]
    assert await vfs.read_file(f"{c2}/there/e/f2") == b"2"


async def test_rename_a_markerless_directory(vfs, conn, fresh):
    c = await vfs.container(fresh())
    await trio.to_thread.run_sync(conn.pithos.put_data, c, "p/q/r", b"r")
    await vfs.rename(f"{c}/p", f"{c}/s")
    assert "s/q/r" in await vfs.names(c)
    assert not [n for n in await vfs.names(c) if n.startswith("p")]
    assert await vfs.read_file(f"{c}/s/q/r") == b"r"


async def test_rename_errors(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.mkdir(f"{c}/d")
    await vfs.write_file(f"{c}/d/f", b"x")
    await vfs.mkdir(f"{c}/full")
    await vfs.write_file(f"{c}/full/g", b"y")
    await vfs.write_file(f"{c}/file", b"z")
    with pytest.raises(errors.IsADirectory):
        await vfs.rename(f"{c}/file", f"{c}/d")
    with pytest.raises(errors.NotADirectory):
        await vfs.rename(f"{c}/d", f"{c}/file")
    with pytest.raises(errors.ContainerNotEmpty) as exc:
        await vfs.rename(f"{c}/d", f"{c}/full")
    assert errors.to_errno(exc.value) == errno.ENOTEMPTY
    with pytest.raises(errors.InvalidInput):
        await vfs.rename(f"{c}/d", f"{c}/d/inside")
    with pytest.raises(errors.NotPermitted):
        await vfs.rename(c, fresh())
    with pytest.raises(errors.NotFound):
        await vfs.rename(f"{c}/missing", f"{c}/other")
    await vfs.mkdir(f"{c}/empty")
    await vfs.rename(f"{c}/d", f"{c}/empty")  # onto an empty directory: replaces it
    assert await vfs.read_file(f"{c}/empty/f") == b"x"


async def test_vim_save(vfs, fresh):
    """vim: 4913 probe, backup by rename, write the new file, fsync, drop the backup;
    a swap file lives while editing."""
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/notes.txt", b"version 1\n")
    swap = await vfs.create(f"{c}/.notes.txt.swp")
    await vfs.fs.write(swap, 0, b"b0VIM 9.0" + bytes(4000))
    await vfs.fs.fsync(swap)
    probe = await vfs.create(f"{c}/4913")
    await vfs.close(probe)
    await vfs.unlink(f"{c}/4913")
    await vfs.rename(f"{c}/notes.txt", f"{c}/notes.txt~")
    fh = await vfs.create(f"{c}/notes.txt")
    await vfs.fs.write(fh, 0, b"version 2\n")
    await vfs.fs.fsync(fh)
    await vfs.close(fh)
    await vfs.unlink(f"{c}/notes.txt~")
    await vfs.close(swap)
    await vfs.unlink(f"{c}/.notes.txt.swp")
    assert await vfs.names(c) == ["notes.txt"]
    assert await vfs.stored(c, "notes.txt") == b"version 2\n"


async def test_sed_in_place_and_python_replace(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/conf", b"a=1\n")
    # sed -i: a temporary in the same directory, then rename over the original
    fh = await vfs.create(f"{c}/sedAb12Cd")
    await vfs.fs.write(fh, 0, b"a=2\n")
    ino = await vfs.ino(f"{c}/sedAb12Cd")
    await vfs.fs.setattr(ino)  # fchmod/fchown: accepted, nothing to store
    await vfs.close(fh)
    await vfs.rename(f"{c}/sedAb12Cd", f"{c}/conf")
    # Python: write a temporary, rename over before closing it
    fh = await vfs.create(f"{c}/tmpk2j3h4g5")
    await vfs.fs.write(fh, 0, b"a=3\n")
    await vfs.rename(f"{c}/tmpk2j3h4g5", f"{c}/conf")
    assert await vfs.read_file(f"{c}/conf") == b"a=3\n"
    await vfs.close(fh)
    assert await vfs.names(c) == ["conf"]
    assert await vfs.stored(c, "conf") == b"a=3\n"


async def test_nano_truncates_in_place(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"a long first version\n")
    fh = await vfs.open(f"{c}/f", os.O_WRONLY | os.O_TRUNC)
    await vfs.fs.write(fh, 0, b"short\n")
    await vfs.close(fh)
    assert await vfs.stored(c, "f") == b"short\n"
    assert (await vfs.stat(f"{c}/f")).size == 6


async def test_a_new_file_renamed_over_a_stored_one_then_removed(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/target", b"old")
    fh = await vfs.create(f"{c}/tmp")
    await vfs.fs.write(fh, 0, b"new")
    await vfs.rename(f"{c}/tmp", f"{c}/target")
    await vfs.unlink(f"{c}/target")
    await vfs.close(fh)
    assert await vfs.names(c) == []


async def test_mknod_of_a_regular_file_and_what_cannot_be_stored(vfs, fresh):
    import stat
    c = await vfs.container(fresh())
    parent = await vfs.ino(c)
    attr = await vfs.fs.mknod(parent, "plain", stat.S_IFREG | 0o644)
    assert attr.kind is Kind.FILE and attr.size == 0
    assert await vfs.stored(c, "plain") == b""
    with pytest.raises(errors.NotPermitted):
        await vfs.fs.mknod(parent, "fifo", stat.S_IFIFO | 0o644)
