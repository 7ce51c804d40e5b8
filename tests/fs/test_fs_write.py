"""Writing: close() stores the object; only changed blocks travel; nothing half written."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from imagefs import errors
from imagefs.fs.filesystem import Filesystem
from imagefs.fs.tree import MTIME_KEY, ROOT_INODE, parse_mtime
from imagefs.protocol.hashmap import hashmap_of

MiB = 1024 * 1024
BS = 4 * MiB


def pattern(size: int, seed: int = 0) -> bytes:
    """Distinct, incompressible-enough bytes per block (no two blocks alike)."""
    import random
    rng = random.Random(seed)
    return rng.randbytes(size)


async def hashmap(conn, container, name):
    return await trio.to_thread.run_sync(conn.pithos.get_hashmap, container, name)


@pytest.mark.parametrize("size", [0, 1, BS - 1, BS, BS + 1, 2 * BS + 123])
async def test_close_stores_the_whole_object(vfs, conn, fresh, size):
    c = await vfs.container(fresh())
    data = pattern(size, size)
    await vfs.write_file(f"{c}/f", data)
    assert await vfs.stored(c, "f") == data
    hm = await hashmap(conn, c, "f")
    assert hm.size == size
    if size:
        assert hm.hashes == hashmap_of(data)
    info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
    assert parse_mtime(info.meta[MTIME_KEY]) == (await vfs.stat(f"{c}/f")).mtime_ns
    assert await vfs.read_file(f"{c}/f") == data


async def test_an_empty_created_file_exists_after_close(vfs, fresh):
    c = await vfs.container(fresh())
    fh = await vfs.create(f"{c}/touched")
    await vfs.close(fh)
    assert await vfs.stored(c, "touched") == b""


async def test_a_file_created_and_unlinked_before_close_never_reaches_the_service(
        vfs, fresh, requests_log):
    c = await vfs.container(fresh())
    requests_log.clear()
    fh = await vfs.create(f"{c}/4913")
    await vfs.fs.write(fh, 0, b"probe")
    await vfs.unlink(f"{c}/4913")
    assert await vfs.fs.read(fh, 0, 100) == b"probe"  # still readable while open
    await vfs.close(fh)
    assert not requests_log.hashmap_puts()
    assert not requests_log.of("DELETE")
    assert await vfs.names(c) == []


async def test_writing_4k_into_the_middle_resends_one_block(vfs, conn, fresh, requests_log):
    c = await vfs.container(fresh())
    data = bytearray(pattern(3 * BS + 1000, 1))
    await vfs.write_file(f"{c}/big", bytes(data))
    before = (await hashmap(conn, c, "big")).hashes
    requests_log.clear()
    fh = await vfs.open(f"{c}/big", os.O_WRONLY)
    offset = BS + BS // 2
    await vfs.fs.write(fh, offset, b"\xff" * 4096)
    await vfs.close(fh)
    data[offset:offset + 4096] = b"\xff" * 4096
    assert len(requests_log.block_posts()) == 1
    data_gets = [r for r in requests_log.of("GET") if "hashmap" not in r.params
                 and "format" in r.params and "prefix" not in r.params]
    assert len(data_gets) == 1  # the rest of the one block written into
    after = (await hashmap(conn, c, "big")).hashes
    assert [a == b for a, b in zip(before, after, strict=True)] == [True, False, True, True]
    assert await vfs.stored(c, "big") == bytes(data)


async def test_copying_content_the_service_has_sends_no_block(vfs, fresh, requests_log):
    c = await vfs.container(fresh())
    data = pattern(2 * BS + 7, 2)
    await vfs.write_file(f"{c}/a", data)
    requests_log.clear()
    await vfs.write_file(f"{c}/b", await vfs.read_file(f"{c}/a"))
    assert requests_log.block_posts() == []
    assert len(requests_log.hashmap_puts()) == 1
    assert await vfs.stored(c, "b") == data


async def test_overwrite_in_place_append_and_truncate(vfs, conn, fresh):
    c = await vfs.container(fresh())
    path = f"{c}/f"
    data = bytearray(pattern(BS + 100, 3))
    await vfs.write_file(path, bytes(data))

    fh = await vfs.open(path, os.O_RDWR)  # overwrite in place, same size
    await vfs.fs.write(fh, 10, b"HELLO")
    assert await vfs.fs.read(fh, 8, 9) == bytes(data[8:10]) + b"HELLO" + bytes(data[15:17])
    await vfs.close(fh)
    data[10:15] = b"HELLO"
    assert await vfs.stored(c, "f") == bytes(data)

    fh = await vfs.open(path, os.O_WRONLY | os.O_APPEND)  # append (the kernel gives the end)
    await vfs.fs.write(fh, len(data), b"tail")
    await vfs.close(fh)
    data += b"tail"
    assert await vfs.stored(c, "f") == bytes(data)

    ino = await vfs.ino(path)
    await vfs.fs.setattr(ino, size=BS - 5)  # truncate(2) without an open descriptor
    assert await vfs.stored(c, "f") == bytes(data[:BS - 5])
    await vfs.fs.setattr(ino, size=BS + 20)  # grows with zeros, not with the old bytes
    expected = bytes(data[:BS - 5]) + bytes(25)
    assert await vfs.stored(c, "f") == expected
    assert await vfs.read_file(path) == expected

    fh = await vfs.open(path, os.O_WRONLY | os.O_TRUNC)
    await vfs.fs.write(fh, 0, b"new")
    await vfs.close(fh)
    assert await vfs.stored(c, "f") == b"new"
    assert (await hashmap(conn, c, "f")).hashes == hashmap_of(b"new")


async def test_ftruncate_then_write_through_one_handle(vfs, fresh):
    c = await vfs.container(fresh())
    data = pattern(2 * BS, 4)
    await vfs.write_file(f"{c}/f", data)
    fh = await vfs.open(f"{c}/f", os.O_RDWR)
    ino = await vfs.ino(f"{c}/f")
    await vfs.fs.setattr(ino, size=100)
    await vfs.fs.write(fh, 3 * BS, b"end")  # a hole in between
    assert (await vfs.fs.getattr(ino)).size == 3 * BS + 3
    await vfs.close(fh)
    expected = data[:100] + bytes(3 * BS - 100) + b"end"
    assert await vfs.stored(c, "f") == expected


async def test_random_writes_in_any_order(vfs, fresh):
    c = await vfs.container(fresh())
    fh = await vfs.create(f"{c}/swap")
    image = bytearray()
    for offset, size in [(BS + 3, 5000), (0, 4096), (2 * BS, 5000), (BS - 100, 300),
                         (4096, 100), (BS + 3, 10)]:
        chunk = pattern(size, offset)
        await vfs.fs.write(fh, offset, chunk)
        if len(image) < offset + size:
            image += bytes(offset + size - len(image))
        image[offset:offset + size] = chunk
        assert await vfs.fs.read(fh, 0, 3 * BS) == bytes(image)
    await vfs.fs.fsync(fh)
    assert await vfs.stored(c, "swap") == bytes(image)
    await vfs.fs.write(fh, 7, b"later")
    image[7:12] = b"later"
    await vfs.close(fh)
    assert await vfs.stored(c, "swap") == bytes(image)


async def test_blocks_are_hashed_while_writing_and_rehashed_when_rewritten(vfs, fresh):
    c = await vfs.container(fresh())
    fh = await vfs.create(f"{c}/f")
    data = bytearray(pattern(3 * BS, 5))
    for pos in range(0, len(data), MiB):
        await vfs.fs.write(fh, pos, bytes(data[pos:pos + MiB]))
    of = vfs.fs.tree.get(await vfs.ino(f"{c}/f")).openfile
    with trio.fail_after(20):
        while of.hashed_bytes() < 3 * BS:  # before close: hashed in the background
            await trio.sleep(0.01)
    status = vfs.fs.status()
    assert status["uploads"][0]["state"] == "writing"
    assert status["uploads"][0]["hashed"] == 3 * BS
    await vfs.fs.write(fh, BS + 1, b"!")  # rewrite a hashed block
    data[BS + 1:BS + 2] = b"!"
    await vfs.close(fh)
    assert await vfs.stored(c, "f") == bytes(data)
    assert vfs.fs.status()["uploads"] == []


async def test_memory_stays_bounded_by_the_buffer_pool(conn, tmp_path, fresh):
    fs = Filesystem(conn, cache_dir=tmp_path / "c", buffers=2)
    await fs.start()
    c = fresh()
    try:
        await fs.mkdir(ROOT_INODE, c)
        parent = (await fs.lookup(ROOT_INODE, c)).ino
        fh, _ = await fs.create(parent, "f", os.O_WRONLY)
        chunk = pattern(MiB, 6)
        for i in range(24):
            await fs.write(fh, i * MiB, chunk)
            assert all(p.in_use <= 2 for p in fs._pools.values())
        await fs.flush(fh)
        await fs.release(fh)
        assert all(p.in_use == 0 for p in fs._pools.values())
        info = await trio.to_thread.run_sync(conn.pithos.head, c, "f")
        assert info.size == 24 * MiB
    finally:
        await fs.close()
        assert list((tmp_path / "c" / "spill").iterdir()) == []
        await trio.to_thread.run_sync(conn.pithos.delete, c, "f")
        await trio.to_thread.run_sync(conn.pithos.delete_container, c)


async def test_release_without_flush_still_uploads(vfs, fresh):
    c = await vfs.container(fresh())
    fh = await vfs.create(f"{c}/f")
    await vfs.fs.write(fh, 0, b"data")
    await vfs.fs.release(fh)
    assert await vfs.stored(c, "f") == b"data"


async def test_two_handles_share_one_content(vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"0123456789")
    w = await vfs.open(f"{c}/f", os.O_WRONLY)
    r = await vfs.open(f"{c}/f", os.O_RDONLY)
    await vfs.fs.write(w, 2, b"ab")
    assert await vfs.fs.read(r, 0, 100) == b"01ab456789"
    await vfs.close(r)  # a reader's close uploads nothing
    assert await vfs.stored(c, "f") == b"0123456789"
    await vfs.close(w)
    assert await vfs.stored(c, "f") == b"01ab456789"


async def set_quota(conn, container: str, quota: int) -> None:
    url = conn.pithos.container_url(container)
    await trio.to_thread.run_sync(lambda: conn.http.request(
        "POST", url, expected=(202, 204), params={"update": None},
        headers={"X-Container-Policy-Quota": str(quota)}))


async def test_a_failure_at_close_is_reported_and_leaves_nothing_half_written(
        vfs, conn, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/old", b"previous")
    await set_quota(conn, c, MiB)
    fh = await vfs.create(f"{c}/new")
    await vfs.fs.write(fh, 0, pattern(2 * MiB, 7))
    with pytest.raises(errors.QuotaExceeded) as exc:
        await vfs.fs.flush(fh)
    assert errors.to_errno(exc.value) == errno.EDQUOT
    await vfs.fs.release(fh)  # never raises; does not try again
    assert await vfs.stored(c, "new") is None
    assert not await vfs.exists(f"{c}/new")
    assert vfs.fs.status()["errors"] == 1

    fh = await vfs.open(f"{c}/old", os.O_WRONLY | os.O_TRUNC)
    await vfs.fs.write(fh, 0, pattern(2 * MiB, 8))
    with pytest.raises(errors.QuotaExceeded):
        await vfs.fs.flush(fh)
    await vfs.fs.release(fh)
    assert await vfs.stored(c, "old") == b"previous"
    await set_quota(conn, c, 0)


async def test_unlinked_while_open_stays_readable_and_writable(vfs, fresh, requests_log):
    c = await vfs.container(fresh())
    data = pattern(BS + 10, 9)
    await vfs.write_file(f"{c}/f", data)
    r = await vfs.open(f"{c}/f")
    w = await vfs.open(f"{c}/f", os.O_RDWR)
    await vfs.unlink(f"{c}/f")
    assert not await vfs.exists(f"{c}/f")
    assert await vfs.read_fh(r) == data
    await vfs.fs.write(w, 0, b"XY")
    assert await vfs.fs.read(w, 0, 4) == b"XY" + data[2:4]
    requests_log.clear()
    await vfs.close(w)
    await vfs.close(r)
    assert not requests_log.hashmap_puts()
    assert await vfs.names(c) == []


async def test_unlinked_while_open_with_versioning_none(vfs, conn, fresh):
    c = await vfs.container(fresh())
    await trio.to_thread.run_sync(conn.pithos.set_versioning, c, "none")
    data = pattern(BS + 10, 10)
    await vfs.write_file(f"{c}/f", data)
    r = await vfs.open(f"{c}/f")
    assert await vfs.fs.read(r, 0, 10) == data[:10]
    await vfs.unlink(f"{c}/f")
    assert await vfs.read_fh(r) == data
    await vfs.close(r)


async def test_status_and_pending_while_uploading(vfs, fresh):
    c = await vfs.container(fresh())
    fh = await vfs.create(f"{c}/f")
    await vfs.fs.write(fh, 0, pattern(BS + 1, 11))
    seen = []

    async def watch():
        while True:
            status = vfs.fs.status()
            if status["pending"]:
                seen.append(status)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await vfs.fs.flush(fh)
        nursery.cancel_scope.cancel()
    await vfs.fs.release(fh)
    assert seen, "the upload never showed as pending"
    upload = seen[-1]["uploads"][0]
    assert upload["path"] == f"/{c}/f" and upload["total"] == BS + 1
    assert set(upload) >= {"hashed", "sent", "total", "rate", "started", "state"}
    assert vfs.fs.pending_uploads() == 0


async def test_writes_during_an_upload_wait_for_it(vfs, fresh):
    """Two descriptors: one closes (uploads) while the other keeps writing. The upload
    sends a consistent content and the later writes are stored by the next close."""
    c = await vfs.container(fresh())
    a = await vfs.create(f"{c}/f")
    content = bytearray(pattern(3 * BS, 12))
    await vfs.fs.write(a, 0, bytes(content))
    b = await vfs.open(f"{c}/f", os.O_WRONLY)

    async def writer():
        for k in range(12):
            chunk = pattern(MiB, 100 + k)
            await vfs.fs.write(b, k * MiB, chunk)
            content[k * MiB:(k + 1) * MiB] = chunk
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(vfs.fs.flush, a)
        nursery.start_soon(writer)
    await vfs.close(b)
    await vfs.close(a)
    assert await vfs.stored(c, "f") == bytes(content)
