"""Reads of a stored object through one open handle: whole blocks, read ahead a little.

The kernel asks for 128 KiB to 1 MiB at a time; the service is best asked
for whole blocks. A ``Reader`` fetches the block a read needs with one
ranged GET of the whole block, keeps the last few, and while reads stay
sequential fetches the next ``window`` blocks (default 2) in background
tasks, so the next read finds its block in memory. Nothing is fetched that
no read asked for beyond that window: reading the first MiB of a 1 GiB image
costs one block, plus the read-ahead.

Subtleties:

- The kernel sends reads of one file concurrently and slightly out of order
  (async reads), so "sequential" means "within the window of the last read",
  not "exactly at the last end".
- A seek outside the window drops the cached blocks and the read-ahead
  results that arrive for blocks no longer wanted; memory per handle stays
  below ``window + 3`` blocks.
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


class _Fetch:
    __slots__ = ("done", "data", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None


class Reader:
    def __init__(self, *, workers: Workers, pithos, spawn: Callable[..., None], container: str,
                 key: str, version: int | None, size: int, block_size: int,
                 window: int = 2) -> None:
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
        self._cache: dict[int, bytes] = {}
        self._inflight: dict[int, _Fetch] = {}
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
            data = await self._block(i)
            start = i * self.bs
            a = max(offset, start) - start
            b = min(end, start + len(data)) - start
            if b < min(end, start + self.bs) - start:  # the object shrank under us
                data = data + bytes(min(end, start + self.bs) - start - len(data))
                b = min(end, start + self.bs) - start
            parts.append(data[a:b] if (a, b) != (0, len(data)) else data)
        self._last = max(self._last, last) if sequential else last
        self._keep(self._last - 1, self._last + self.window)
        if sequential:
            for i in range(last + 1, last + 1 + self.window):
                self._prefetch(i)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _keep(self, low: int, high: int) -> None:
        """Forget cached blocks outside [low, high]."""
        for i in [i for i in self._cache if i < low or i > high]:
            del self._cache[i]

    async def _block(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is not None:
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
            self._cache[i] = fetch.data
        return fetch.data

    def _prefetch(self, i: int) -> None:
        if self._closed or i * self.bs >= self.size or i in self._cache or i in self._inflight:
            return
        fetch = self._inflight[i] = _Fetch()
        self.spawn(self._prefetch_task, i, fetch)

    async def _prefetch_task(self, i: int, fetch: _Fetch) -> None:
        await self._fetch(i, fetch)
        if fetch.error is None and not self._closed and \
                self._last - 1 <= i <= self._last + self.window + 1:
            self._cache[i] = fetch.data  # type: ignore[assignment]

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
        return self.pithos.read(self.container, self.key, offset, length, version=version)

    def close(self) -> None:
        """Drop cached blocks; read-ahead still running ends on its own and is dropped."""
        self._closed = True
        self._cache.clear()
