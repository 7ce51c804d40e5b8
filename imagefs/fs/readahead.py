"""Reads of a stored object through one open handle: whole blocks, read ahead.

The kernel asks for 128 KiB to 1 MiB at a time; the service is best asked
for whole blocks. A ``Reader`` fetches the block a read needs with one
ranged GET of the whole block, and while reads stay sequential fetches the
next ``window`` blocks (default 4) in background tasks, so the next read
finds its block in memory. Several GETs in flight are what hides the
service's latency: one at a time, a ranged GET of 4 MiB runs at half the
speed the service can deliver. Nothing is fetched that no read asked for
beyond that window: reading the first MiB of a 1 GiB image costs one block,
plus the read-ahead.

No copy on the way: a block arrives as one immutable ``bytes`` (the client
receives straight into it) and a read that falls within one block returns a
``memoryview`` of it, which pyfuse3 hands to the kernel as it is; the view
keeps the block alive for as long as anybody holds it, and nothing ever
writes into it. (Receiving into reused buffers instead costs a copy under
the GIL per block and another per read: measured about 20 % slower through
FUSE, with half as much CPU again.)

Which blocks stay: a block leaves once reads have taken all of its bytes
(a sequential reader never comes back), and at most ``2 * window + 1``
blocks stay in any case (the least recently used go first), so a handle
holds a few blocks and drops them at close; the daemon's single malloc
heap (``blocking.one_malloc_arena``) reuses their memory for the next ones.
Not by distance from the last read: the kernel sends the reads of one file
concurrently (its read-ahead keeps up to 12 requests of 1 MiB in flight)
and they arrive and finish in any order, the last MiB of a block sometimes
four blocks after the first. Measured on a 256-block ``cp``: keeping the
blocks near the last read fetched 455 blocks, this fetches 256.

Subtleties:

- "Sequential" means "near the furthest block asked for so far" (``_last``,
  moved when a read starts, not when it ends): from ``window`` blocks
  behind it to one past the read-ahead. A read elsewhere is a seek: no
  read-ahead until reads are sequential again, and read-ahead results that
  arrive for blocks no longer wanted are dropped.
- Concurrent reads of one block share one fetch (``_Fetch``).
- The version is pinned at open (close-to-open consistency: another client's
  upload never mixes into a read); if that version is gone (versioning
  ``none``), the current object is read instead.

Every field changes on the trio thread; fetch threads only return bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from imagefs import errors
from imagefs.fs.blocking import Workers

log = logging.getLogger(__name__)

#: Blocks fetched ahead of a sequential reader.
WINDOW = 4


class _Fetch:
    __slots__ = ("done", "data", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


class Reader:
    def __init__(self, *, workers: Workers, pithos, spawn: Callable[..., None], container: str,
                 key: str, version: int | None, size: int, block_size: int,
                 window: int = WINDOW) -> None:
        self.workers = workers
        self.pithos = pithos
        self.spawn = spawn
        self.container = container
        self.key = key
        self.version = version
        self.pinned = version  # as opened (``version`` drops to None if that one is gone)
        self.size = size
        self.bs = block_size
        self.window = window
        self._cache: dict[int, bytes] = {}  # least recently used first
        self._served: dict[int, int] = {}  # bytes reads took from a cached block
        self._inflight: dict[int, _Fetch] = {}
        self._last = -1  # the furthest block a read asked for
        self._closed = False

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes at ``offset``: a read-only bytes-like object."""
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        first, last = offset // self.bs, (end - 1) // self.bs
        if self._last >= 0 and self._last - self.window <= first <= self._last + self.window + 1:
            self._last = max(self._last, last)  # sequential, give or take the kernel's order
            self._ahead()
        else:  # the first read, or a seek
            self._last = last
            if first == 0:  # reading from the start: probably all of it
                self._ahead()
        parts = []
        for i in range(first, last + 1):
            data = await self._block(i)
            start = i * self.bs
            a = max(offset, start) - start
            b = min(end, start + self.bs) - start
            parts.append(memoryview(data)[a:b] if (a, b) != (0, len(data)) else data)
            self._taken(i, b - a, len(data))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _ahead(self) -> None:
        for i in range(self._last + 1, self._last + 1 + self.window):
            self._prefetch(i)

    def _wanted(self, i: int) -> bool:
        return not self._closed and self._last - self.window <= i <= self._last + self.window + 1

    def _store(self, i: int, data: bytes) -> None:
        """Cache block ``i`` as the most recently used; the least recent beyond the cap go."""
        self._cache.pop(i, None)
        self._cache[i] = data
        while len(self._cache) > 2 * self.window + 1:
            old = next(iter(self._cache))
            del self._cache[old]
            self._served.pop(old, None)

    def _taken(self, i: int, n: int, length: int) -> None:
        """A read took ``n`` bytes of block ``i``; once all are taken the block goes."""
        served = self._served.get(i, 0) + n
        if served >= length:
            self._served.pop(i, None)
            self._cache.pop(i, None)
        elif i in self._cache:
            self._served[i] = served

    async def _block(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is not None:
            self._store(i, data)
            return data
        fetch = self._inflight.get(i)
        if fetch is None:
            fetch = self._inflight[i] = _Fetch()
            await self._fetch(i, fetch)
        else:
            await fetch.done.wait()
            if fetch.error is not None:  # a read-ahead failed: once more for this read
                fetch = _Fetch()
                await self._fetch(i, fetch)
        if fetch.error is not None:
            raise fetch.error
        assert fetch.data is not None
        if not self._closed:
            self._store(i, fetch.data)
        return fetch.data

    def _prefetch(self, i: int) -> None:
        if self._closed or i * self.bs >= self.size or i in self._cache or i in self._inflight:
            return
        fetch = self._inflight[i] = _Fetch()
        self.spawn(self._prefetch_task, i, fetch)

    async def _prefetch_task(self, i: int, fetch: _Fetch) -> None:
        await self._fetch(i, fetch)
        if fetch.error is None and self._wanted(i) and i not in self._cache:
            self._store(i, fetch.data)  # type: ignore[arg-type]

    async def _fetch(self, i: int, fetch: _Fetch) -> None:
        """Fetch block ``i`` into ``fetch``; never raises (the reader re-raises)."""
        length = min(self.bs, self.size - i * self.bs)
        log.debug("%s/%s: fetching block %d", self.container, self.key, i)
        try:
            try:
                fetch.data = await self.workers.http(self._get, i * self.bs, length,
                                                     self.version)
            except errors.NotFound:
                if self.version is None:
                    raise
                log.info("%s/%s: version %s is gone; reading the current object",
                         self.container, self.key, self.version)
                self.version = None
                fetch.data = await self.workers.http(self._get, i * self.bs, length, None)
        except Exception as exc:
            fetch.error = exc
        finally:
            if self._inflight.get(i) is fetch:
                del self._inflight[i]
            fetch.done.set()

    def _get(self, offset: int, length: int, version: int | None) -> bytes:
        """The block; what the object no longer has reads as zeros."""
        data = self.pithos.read(self.container, self.key, offset, length, version=version)
        if len(data) < length:  # it shrank under us
            data += bytes(length - len(data))
        return data

    def close(self) -> None:
        """Drop cached blocks; read-ahead still running ends on its own and is dropped."""
        self._closed = True
        self._cache.clear()
        self._served.clear()
