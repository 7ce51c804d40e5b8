"""Blocks leave while a file is written; close() then stores the hashmap.

What the early sender (``upload.Sender``) must guarantee: blocks the service
lacks go out before close, blocks it has never travel, its questions never
create anything, and memory stays within the buffer pool without ever
blocking a writer for good.
"""

from __future__ import annotations

import os

import pytest
import trio

from imagefs import errors
from imagefs.fs import upload
from imagefs.fs.filesystem import Filesystem
from imagefs.protocol.hashmap import block_hash, hashmap_of

from fs_support import Vfs, _remove_container, check_consistent

MiB = 1024 * 1024
BS = 4 * MiB


def pattern(size: int, seed: int) -> bytes:
    import random
    return random.Random(seed).randbytes(size)


async def until(condition, what: str) -> None:
    """Wait for ``condition()`` (generously: the machine may be busy)."""
    with trio.move_on_after(60) as scope:
        while not condition():
            await trio.sleep(0.02)
    assert not scope.cancelled_caught, f"never happened: {what}"


@pytest.fixture
async def small_vfs(conn, tmp_path):
    """A filesystem with a pool of two block buffers."""
    cache = tmp_path / "small"
    fs = Filesystem(conn, cache_dir=cache, buffers=2)
    await fs.start()
    v = Vfs(fs, conn)
    try:
        yield v
    finally:
        await fs.close()
    check_consistent(v, cache)
    for container in v.containers:
        await trio.to_thread.run_sync(_remove_container, conn, container)


async def test_blocks_go_out_before_close(vfs, fresh, requests_log):
    c = await vfs.container(fresh())
    data = pattern(3 * BS + 100, 1)
    requests_log.clear()
    fh = await vfs.create(f"{c}/img")
    for pos in range(0, len(data), MiB):
        await vfs.fs.write(fh, pos, data[pos:pos + MiB])
    await until(lambda: len(requests_log.block_posts()) >= 3, "three blocks sent")
    assert requests_log.hashmap_puts() == []  # nothing stored yet
    assert await vfs.names(c) == []
    await vfs.close(fh)
    assert len(requests_log.block_posts()) == 4  # and the last one, at close
    assert len(requests_log.hashmap_puts()) == 1  # close stores at the first try
    assert await vfs.stored(c, "img") == data


async def test_known_blocks_are_asked_about_not_sent(vfs, fresh, requests_log):
    c = await vfs.container(fresh())
    data = pattern(5 * BS, 2)
    await vfs.write_file(f"{c}/a", data)
    requests_log.clear()
    await vfs.write_file(f"{c}/b", data)
    assert requests_log.block_posts() == []
    assert 1 <= len(requests_log.probes()) <= 5
    assert len(requests_log.hashmap_puts()) == 1
    assert await vfs.stored(c, "b") == data


async def test_a_question_creates_nothing(conn, fresh):
    c = fresh()
    await trio.to_thread.run_sync(conn.pithos.create_container, c)
    try:
        known = os.urandom(1000)
        await trio.to_thread.run_sync(conn.pithos.put_data, c, "known", known)
        unknown = block_hash(os.urandom(1000))
        result = await trio.to_thread.run_sync(
            upload._probe, conn.pithos, c, "target", BS, [block_hash(known), unknown])
        assert not result.created
        assert set(result.missing) == {unknown, upload.PROBE_HASH}
        with pytest.raises(errors.NotFound):
            await trio.to_thread.run_sync(conn.pithos.head, c, "target")
    finally:
        await trio.to_thread.run_sync(_remove_container, conn, c)


async def test_a_fast_writer_waits_for_buffers(small_vfs, fresh):
    """Two buffers for eight blocks: the writer keeps pace with the sender, nothing spills
    into memory, and every byte arrives."""
    vfs = small_vfs
    c = await vfs.container(fresh())
    data = pattern(8 * BS + 7, 3)
    await vfs.write_file(f"{c}/img", data, chunk=MiB)
    pool = vfs.fs._pools[BS]
    assert pool.lent == 0 and pool.in_use == 0
    assert await vfs.stored(c, "img") == data


async def test_partly_written_blocks_holding_every_buffer_never_block_a_writer(small_vfs,
                                                                                fresh):
    vfs = small_vfs
    c = await vfs.container(fresh())
    data = pattern(4 * BS, 4)
    half = BS // 2
    fh = await vfs.create(f"{c}/img")
    for i in range(4):  # the first half of every block: two get buffers, two spill
        await vfs.fs.write(fh, i * BS, data[i * BS: i * BS + half])
    for i in reversed(range(4)):
        await vfs.fs.write(fh, i * BS + half, data[i * BS + half: (i + 1) * BS])
    await vfs.close(fh)
    assert await vfs.stored(c, "img") == data


async def test_a_block_rewritten_while_it_is_sent_is_stored_as_written_last(vfs, fresh):
    c = await vfs.container(fresh())
    first = pattern(2 * BS, 5)
    second = pattern(BS, 6)
    fh = await vfs.create(f"{c}/img")
    await vfs.fs.write(fh, 0, first)
    await vfs.fs.write(fh, 0, second)
    await vfs.close(fh)
    assert await vfs.stored(c, "img") == second + first[BS:]


async def test_renamed_while_written_stores_at_the_new_name(vfs, conn, fresh):
    c1 = await vfs.container(fresh())
    c2 = await vfs.container(fresh())
    data = pattern(4 * BS, 7)
    fh = await vfs.create(f"{c1}/img")
    await vfs.fs.write(fh, 0, data[:2 * BS])
    await vfs.rename(f"{c1}/img", f"{c2}/moved")
    await vfs.fs.write(fh, 2 * BS, data[2 * BS:])
    await vfs.close(fh)
    assert await vfs.names(c1) == []
    assert await vfs.stored(c2, "moved") == data
    hm = await trio.to_thread.run_sync(conn.pithos.get_hashmap, c2, "moved")
    assert hm.hashes == hashmap_of(data)


async def test_blocks_sealed_and_sent_read_back_and_change_before_close(vfs, fresh,
                                                                         requests_log):
    """Sealed blocks live on in the spill file (written past the page cache): reads and
    partial rewrites before close see and change exactly what was written."""
    c = await vfs.container(fresh())
    data = bytearray(pattern(3 * BS + 10, 8))
    requests_log.clear()
    fh = await vfs.create(f"{c}/img")
    for pos in range(0, len(data), MiB):
        await vfs.fs.write(fh, pos, bytes(data[pos:pos + MiB]))
    await until(lambda: len(requests_log.block_posts()) >= 3, "three blocks sent")
    assert await vfs.read_fh(fh) == data
    patch = b"\x5a" * 100
    await vfs.fs.write(fh, BS - 50, patch)  # across the boundary of two sent blocks
    data[BS - 50: BS + 50] = patch
    assert await vfs.fs.read(fh, BS - 4096, 8192) == data[BS - 4096: BS + 4096]
    await vfs.close(fh)
    assert await vfs.stored(c, "img") == data
