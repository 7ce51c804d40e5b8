"""Reads of a stored object through one open handle: whole blocks, read ahead.

The kernel asks for 128 KiB to 1 MiB at a time; the service is best asked
for whole blocks. A ``Reader`` fetches the block a read needs with one
ranged GET of the whole block, keeps the last few, and while reads stay
sequential fetches the next ``window`` blocks (default 4) in background
tasks, so the next read finds its block in memory. Several GETs in flight
are what hides the service's latency: one at a time, a ranged GET of 4 MiB
runs at half the speed the service can deliver. Nothing is fetched that no
read asked for beyond that window: reading the first MiB of a 1 GiB image
costs one block, plus the read-ahead.

Memory: blocks are received straight into a few reused block buffers (a
fresh 4 MiB object per block, zero-filled and then copied, cost more than
the copy a read makes of the part it returns). A handle holds about
``window + 4`` of them, and gives them up at close.

Subtleties:

- The kernel sends reads of one file concurrently and slightly out of order
  (async reads), so "sequential" means "within the window of the last read",
  not "exactly at the last end".
- A seek outside the window drops the cached blocks and the read-ahead
  results that arrive for blocks no longer wanted.
- Concurrent reads of one block share one fetch (``_Fetch``).
- A read returns a copy (``bytes``), never a view of a buffer that a later
  block will reuse. A buffer is reused only once nobody waits on its fetch
  (``_Fetch.users``): a read copies its part right after the fetch is done,
  with no await in between.
- The version is pinned at open (close-to-open consistency: another client's
  upload never mixes into a read); if that version is gone (versioning
  ``none``), the current object is read instead.

Every field changes on the trio thread; a fetch thread only fills the
buffer its fetch owns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from imagefs import errors
from imagefs.fs.blocking import Workers
from imagefs.fs.files import Buffer, block_buffer

log = logging.getLogger(__name__)

#: Blocks fetched ahead of a sequential reader.
WINDOW = 4


class _Fetch:
    __slots__ = ("done", "buf", "users", "error")

    def __init__(self, buf: Buffer) -> None:
        self.done = trio.Event()
        self.buf = buf  # filled by the fetch thread, then read by the trio thread only
        self.users = 0  # reads waiting for it or copying from it: never reuse ``buf`` then
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
        self._cache: dict[int, _Fetch] = {}  # complete, successful fetches
        self._inflight: dict[int, _Fetch] = {}
        self._spare: list[Buffer] = []
        self._last = -1  # block of the last read
        self._closed = False

    async def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        first, last = offset // self.bs, (end - 1) // self.bs
        sequential = first == 0 or (self._last >= 0 and
                                    self._last - 1 <= first <= self._last + self.window + 1)
        if not sequential:
            self._keep(first, last)
        parts = []
        for i in range(first, last + 1):
            fetch = await self._block(i)
            try:
                start = i * self.bs
                a = max(offset, start) - start
                b = min(end, start + self.bs) - start
                parts.append(bytes(memoryview(fetch.buf)[a:b]))
            finally:
                fetch.users -= 1
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._last = max(self._last, last) if sequential else last
        self._keep(self._last - 1, self._last + self.window)
        if sequential:
            for i in range(last + 1, last + 1 + self.window):
                self._prefetch(i)
        return data

    def _buffer(self) -> Buffer:
        return self._spare.pop() if self._spare else block_buffer(self.bs)

    def _recycle(self, fetch: _Fetch) -> None:
        """``fetch`` is no longer cached: keep its buffer for another block if it is free."""
        if fetch.users == 0 and fetch.done.is_set() and not self._closed and \
                len(self._spare) < 2:
            self._spare.append(fetch.buf)

    def _keep(self, low: int, high: int) -> None:
        """Forget cached blocks outside [low, high]."""
        for i in [i for i in self._cache if i < low or i > high]:
            self._recycle(self._cache.pop(i))

    async def _block(self, i: int) -> _Fetch:
        """The fetch holding block ``i``, done, with one more user (the caller drops it)."""
        fetch = self._cache.get(i)
        if fetch is None:
            fetch = self._inflight.get(i)
            if fetch is None:
                fetch = self._inflight[i] = _Fetch(self._buffer())
                fetch.users += 1
                await self._fetch(i, fetch)
            else:
                fetch.users += 1
                await fetch.done.wait()
                if fetch.error is not None:  # a read-ahead failed: once more for this read
                    fetch.users -= 1
                    fetch = _Fetch(self._buffer())
                    fetch.users += 1
                    await self._fetch(i, fetch)
            if fetch.error is not None:
                fetch.users -= 1
                raise fetch.error
            if not self._closed:
                self._cache.setdefault(i, fetch)
        else:
            fetch.users += 1
        return fetch

    def _prefetch(self, i: int) -> None:
        if self._closed or i * self.bs >= self.size or i in self._cache or i in self._inflight:
            return
        fetch = self._inflight[i] = _Fetch(self._buffer())
        self.spawn(self._prefetch_task, i, fetch)

    async def _prefetch_task(self, i: int, fetch: _Fetch) -> None:
        await self._fetch(i, fetch)
        if fetch.error is None and not self._closed and i not in self._cache and \
                self._last - 1 <= i <= self._last + self.window + 1:
            self._cache[i] = fetch
        elif self._cache.get(i) is not fetch:
            self._recycle(fetch)

    async def _fetch(self, i: int, fetch: _Fetch) -> None:
        """Fetch block ``i`` into ``fetch``; never raises (the reader re-raises)."""
        length = min(self.bs, self.size - i * self.bs)
        log.debug("%s/%s: fetching block %d", self.container, self.key, i)
        try:
            try:
                await self.workers.http(self._get, fetch.buf, i * self.bs, length,
                                        self.version)
            except errors.NotFound:
                if self.version is None:
                    raise
                log.info("%s/%s: version %s is gone; reading the current object",
                         self.container, self.key, self.version)
                self.version = None
                await self.workers.http(self._get, fetch.buf, i * self.bs, length, None)
        except Exception as exc:
            fetch.error = exc
        finally:
            if self._inflight.get(i) is fetch:
                del self._inflight[i]
            fetch.done.set()

    def _get(self, buf: Buffer, offset: int, length: int, version: int | None) -> None:
        """Fill ``buf`` with the block; what the object no longer has reads as zeros."""
        view = memoryview(buf)
        n = self.pithos.readinto(self.container, self.key, offset, view[:length],
                                 version=version)
        if n < length:  # it shrank under us
            view[n:length] = bytes(length - n)

    def close(self) -> None:
        """Drop cached blocks; read-ahead still running ends on its own and is dropped."""
        self._closed = True
        self._cache.clear()
        self._spare.clear()
