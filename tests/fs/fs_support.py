"""Helpers of the tier-3 tests, importable by name (``conftest`` is not:
every test folder has one, and only the first imported wins the name)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import trio

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.fs.filesystem import Filesystem
from imagefs.fs.tree import ROOT_INODE, Attr
from imagefs.protocol.hashmap import block_count

MiB = 1024 * 1024


def _collect(got: list, batch: int | None, name, attr, next_id) -> bool:
    """A readdir reply that accepts ``batch`` entries per call (all if None)."""
    if batch is not None and len(got) >= batch:
        return False
    got.append((name, attr, next_id))
    return True


class Vfs:
    """Path-based calls over a Filesystem, as a shell would make them."""

    def __init__(self, fs: Filesystem, conn: Connection) -> None:
        self.fs = fs
        self.conn = conn
        self.containers: set[str] = set()

    async def ino(self, path: str) -> int:
        ino = ROOT_INODE
        for part in [p for p in path.strip("/").split("/") if p]:
            ino = (await self.fs.lookup(ino, part)).ino
        return ino

    async def parent(self, path: str) -> tuple[int, str]:
        head, _, name = path.strip("/").rpartition("/")
        return await self.ino(head), name

    async def stat(self, path: str) -> Attr:
        return await self.fs.getattr(await self.ino(path))

    async def exists(self, path: str) -> bool:
        try:
            await self.ino(path)
        except errors.NotFound:
            return False
        return True

    async def ls(self, path: str, *, batch: int | None = None) -> dict[str, Attr]:
        """readdir through to the end; ``batch`` accepts that many entries per call."""
        fh = await self.fs.opendir(await self.ino(path))
        out: dict[str, Attr] = {}
        try:
            start = 0
            while True:
                got: list = []
                await self.fs.readdir(fh, start, functools.partial(_collect, got, batch))
                if not got:
                    return out
                for name, attr, next_id in got:
                    assert name not in out, f"readdir gave {name} twice"
                    out[name] = attr
                    start = next_id
        finally:
            await self.fs.releasedir(fh)

    async def mkdir(self, path: str) -> Attr:
        parent, name = await self.parent(path)
        attr = await self.fs.mkdir(parent, name)
        if parent == ROOT_INODE:
            self.containers.add(name)
        return attr

    async def container(self, name: str) -> str:
        await self.mkdir(name)
        return name

    async def create(self, path: str) -> int:
        parent, name = await self.parent(path)
        fh, _attr = await self.fs.create(parent, name, os.O_RDWR)
        return fh

    async def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        return await self.fs.open(await self.ino(path), flags)

    async def close(self, fh: int) -> None:
        try:
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def write_file(self, path: str, data: bytes, *, chunk: int = MiB) -> None:
        if await self.exists(path):
            fh = await self.open(path, os.O_WRONLY | os.O_TRUNC)
        else:
            fh = await self.create(path)
        try:
            for pos in range(0, len(data), chunk):
                assert await self.fs.write(fh, pos, data[pos:pos + chunk]) == \
                    len(data[pos:pos + chunk])
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def read_fh(self, fh: int, *, chunk: int = 128 * 1024) -> bytes:
        parts = []
        pos = 0
        while True:
            data = await self.fs.read(fh, pos, chunk)
            if not data:
                return b"".join(parts)
            parts.append(data)
            pos += len(data)

    async def read_file(self, path: str, **kw) -> bytes:
        fh = await self.open(path)
        try:
            return await self.read_fh(fh, **kw)
        finally:
            await self.fs.release(fh)

    async def unlink(self, path: str) -> None:
        parent, name = await self.parent(path)
        await self.fs.unlink(parent, name)

    async def rmdir(self, path: str) -> None:
        parent, name = await self.parent(path)
        await self.fs.rmdir(parent, name)

    async def rename(self, old: str, new: str, flags: int = 0) -> None:
        p1, n1 = await self.parent(old)
        p2, n2 = await self.parent(new)
        await self.fs.rename(p1, n1, p2, n2, flags)

    # -- the service's view ----------------------------------------------------------

    async def stored(self, container: str, name: str) -> bytes:
        """An object's content as the service has it (None if absent)."""
        def get() -> bytes | None:
            try:
                info = self.conn.pithos.head(container, name)
            except errors.NotFound:
                return None
            return self.conn.pithos.read(container, name, 0, info.size) if info.size else b""
        return await trio.to_thread.run_sync(get)

    async def names(self, container: str) -> list[str]:
        def get() -> list[str]:
            return [o.name for o in self.conn.pithos.list_objects(container)]
        return await trio.to_thread.run_sync(get)


def check_consistent(vfs: Vfs, cache_dir: Path) -> None:
    """Nothing half done: no upload, handle or spill file left; every object whole."""
    fs = vfs.fs
    assert fs.pending_uploads() == 0
    assert not fs.handles, f"handles left open: {fs.handles}"
    spill = cache_dir / "spill"
    leftovers = list(spill.glob("*")) if spill.exists() else []
    assert not leftovers, f"spill files left: {leftovers}"
    pithos = vfs.conn.pithos
    for container in vfs.containers:
        try:
            objects = list(pithos.list_objects(container))
        except errors.NotFound:
            continue
        for obj in objects:
            hm = pithos.get_hashmap(container, obj.name)
            assert hm.size == obj.size
            expected = block_count(obj.size, hm.block_size) if obj.size else 0
            assert len(hm.hashes) in (expected, max(expected, 1)), obj.name


def _remove_container(conn: Connection, container: str) -> None:
    try:
        url = conn.pithos.container_url(container)
        conn.http.request("DELETE", url, expected=(204,), params={"delimiter": "/"})
        conn.pithos.delete_container(container)
    except errors.NotFound:
        pass
