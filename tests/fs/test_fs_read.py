"""Reading: whole-block ranged GETs with a bounded read-ahead, never the whole object."""

from __future__ import annotations

import os

import trio

from imagefs.fs.filesystem import Filesystem
from imagefs.fs.readahead import WINDOW
from imagefs.fs.tree import ROOT_INODE

MiB = 1024 * 1024
BS = 4 * MiB


def data_gets(log) -> list:
    return [r for r in log.of("GET") if "hashmap" not in r.params and "prefix" not in r.params
            and "limit" not in r.params]


async def upload(conn, container: str, name: str, data: bytes) -> None:
    import io
    await trio.to_thread.run_sync(lambda: conn.pithos.upload(container, name, io.BytesIO(data)))


async def test_reading_the_first_mib_does_not_download_the_object(vfs, conn, fresh,
                                                                  requests_log):
    c = await vfs.container(fresh())
    data = os.urandom(6 * BS)
    await upload(conn, c, "img", data)
    fh = await vfs.open(f"{c}/img")
    requests_log.clear()
    for pos in range(0, MiB, 128 * 1024):
        assert await vfs.fs.read(fh, pos, 128 * 1024) == data[pos:pos + 128 * 1024]
    await vfs.close(fh)
    gets = data_gets(requests_log)
    assert 1 <= len(gets) <= 1 + WINDOW  # the block read, plus the read-ahead


async def test_a_sequential_read_fetches_each_block_once(vfs, conn, fresh, requests_log):
    c = await vfs.container(fresh())
    data = os.urandom(5 * BS + 12345)
    await upload(conn, c, "img", data)
    requests_log.clear()
    assert await vfs.read_file(f"{c}/img", chunk=MiB) == data
    assert len(data_gets(requests_log)) == 6


async def test_seeks_read_the_right_bytes(vfs, conn, fresh):
    c = await vfs.container(fresh())
    data = os.urandom(4 * BS + 77)
    await upload(conn, c, "img", data)
    fh = await vfs.open(f"{c}/img")
    for offset, size in [(4 * BS, 200), (0, 10), (2 * BS - 5, 10), (BS, MiB), (4 * BS + 70, 50),
                         (3 * BS + 1, 2 * MiB), (5 * BS, 10)]:
        assert await vfs.fs.read(fh, offset, size) == data[offset:offset + size]
    await vfs.close(fh)


async def test_a_reader_keeps_the_version_it_opened(vfs, conn, fresh):
    """Close-to-open: another client's upload does not mix into an open descriptor."""
    c = await vfs.container(fresh())
    old = os.urandom(2 * BS)
    await upload(conn, c, "img", old)
    fh = await vfs.open(f"{c}/img")
    assert await vfs.fs.read(fh, 0, 10) == old[:10]
    await upload(conn, c, "img", os.urandom(2 * BS))
    assert await vfs.fs.read(fh, BS, BS) == old[BS:]
    await vfs.close(fh)


async def test_many_readers_in_parallel(conn, tmp_path, fresh):
    c = fresh()
    await trio.to_thread.run_sync(conn.pithos.create_container, c)
    data = os.urandom(3 * BS + 1)
    await upload(conn, c, "img", data)
    fs = Filesystem(conn, cache_dir=tmp_path / "c")
    await fs.start()
    try:
        parent = (await fs.lookup(ROOT_INODE, c)).ino
        ino = (await fs.lookup(parent, "img")).ino
        results = {}

        async def reader(k: int) -> None:
            fh = await fs.open(ino, os.O_RDONLY)
            parts, pos = [], 0
            while chunk := await fs.read(fh, pos, MiB):
                parts.append(chunk)
                pos += len(chunk)
            results[k] = b"".join(parts)
            await fs.release(fh)

        async with trio.open_nursery() as nursery:
            for k in range(4):
                nursery.start_soon(reader, k)
        assert all(r == data for r in results.values()) and len(results) == 4
    finally:
        await fs.close()
        await trio.to_thread.run_sync(conn.pithos.delete, c, "img")
        await trio.to_thread.run_sync(conn.pithos.delete_container, c)


async def test_concurrent_reads_of_one_handle_share_their_fetches(vfs, conn, fresh,
                                                                  requests_log):
    """The kernel sends read-ahead requests of one descriptor in parallel."""
    c = await vfs.container(fresh())
    data = os.urandom(8 * BS)
    await upload(conn, c, "img", data)
    fh = await vfs.open(f"{c}/img")
    requests_log.clear()
    got = {}

    async def read(offset):
        got[offset] = await vfs.fs.read(fh, offset, MiB)

    async with trio.open_nursery() as nursery:
        for offset in range(0, 2 * BS, MiB):
            nursery.start_soon(read, offset)
    await vfs.close(fh)
    assert all(got[o] == data[o:o + MiB] for o in got)
    ranges = [r.headers["Range"] for r in data_gets(requests_log)]
    assert len(ranges) == len(set(ranges)) <= 2 + WINDOW  # blocks 0-1 once each, read-ahead


async def test_the_last_reader_s_close_frees_the_kernel_pages(vfs, conn, fresh, monkeypatch):
    """Pages a reader fetched are of no use once no descriptor is open (every open
    starts without them): the kernel is asked to drop them then, and only then."""
    c = await vfs.container(fresh())
    data = os.urandom(BS + 99)
    await upload(conn, c, "img", data)
    dropped: list[int] = []
    monkeypatch.setattr(vfs.fs, "drop_pages", dropped.append)
    ino = await vfs.ino(f"{c}/img")
    first, second = await vfs.open(f"{c}/img"), await vfs.open(f"{c}/img")
    assert await vfs.fs.read(first, 0, MiB) == data[:MiB]
    assert await vfs.fs.read(second, BS, 99) == data[BS:]
    await vfs.close(first)
    assert dropped == []  # another reader still has the file open
    await vfs.close(second)
    assert dropped == [ino]
    await vfs.write_file(f"{c}/new", b"written, never read")
    assert dropped == [ino]  # a writer's close drops nothing
