"""Files open for writing: their bytes, block by block, and where each byte lives.

An ``OpenFile`` is the content of one inode while it is open for writing
(shared by every handle of that inode). The content is cut into the
container's blocks (4 MiB). Block ``i`` is described by:

- ``base_len``: how many bytes of block ``i`` of the *source* (the stored
  version the file was opened from) still underlie it; beyond ``base_len``
  the block reads as zeros (a truncate cut it, or the file grew).
- ``cov``: the ranges written since (sorted, disjoint), whose bytes are in
  ``buf`` (a pooled block buffer) when the block has one, else in the spill
  file at the block's offset.
- ``hash``: the block hash of its whole content, once computed and until it
  is written again.

So a byte reads from ``buf``/spill if a range of ``cov`` holds it, from the
source if it is below ``base_len``, else as zero. Blocks nobody touched have
no ``Block`` object at all (``base_len`` follows from the source and from
``src_limit``, the lowest size the file was truncated to). Nothing is
fetched from the service until a read or a partial write needs the rest of a
block ("materialize"): a sequential overwrite never downloads, writing 4 KiB
into the middle of a 1 GiB object fetches (and later re-sends) one block.

Memory stays flat: a block gets a pooled buffer (``BufferPool``) only when
its first write starts at the block's start (a sequential writer);
otherwise writes go straight to the spill file, a sparse file in
``cache_dir/spill``. When a block's ``cov`` spans a full block it is
"sealed" in the background: two threads at once write the buffer to the
spill file (past the page cache, ``_write_buffer``) and hash it, and the
buffer goes on to ``upload.Sender``, which sends the block to the service
while the file is still being written and then gives the buffer back. A
writer that finds the pool empty waits for a buffer while some are out in
that pipeline (so a fast writer runs at the speed of the upload, with
memory bounded by the pool); only when every buffer sits in a partly
written block does it write to the spill file instead. ``close()`` then
starts from the blocks still unhashed, usually the last one, and usually
finds every other block on the service already.

Invariants between awaits (all state changes on the trio thread):

- a block's ``lock`` is held across every await that reads or changes its
  bytes (write into the spill, materialize, seal, send), so a thread never
  sees a block change under it, and ``buf``/``cov``/``hash`` change only
  with the lock held;
- a sealed block's buffer passes to the sender as a snapshot the block no
  longer refers to (its bytes are in the spill file too): only the sender
  reads it, then gives it back to the pool;
- writes and truncates wait while an upload runs (``wait_commit``), and an
  upload waits for those already running (``wait_quiet``): the hashes being
  sent describe exactly the bytes in the spill file;
- spill bytes at or beyond ``size`` are zero (a shrink truncates the spill
  file), so growing a file never resurrects old bytes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from imagefs import errors
from imagefs.fs import upload
from imagefs.fs.blocking import Workers, one_error
from imagefs.protocol.hashmap import block_count, block_hash

log = logging.getLogger(__name__)

Spawn = Callable[..., None]
Buffer = mmap.mmap
#: Offsets and lengths an O_DIRECT write may use (a page: every device's block size fits).
DIRECT_ALIGN = 4096


# -- ranges -------------------------------------------------------------------------------


def cov_add(cov: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """``cov`` with [start, end) added, merged with what it touches."""
    out: list[tuple[int, int]] = []
    for a, b in cov:
        if b < start or a > end:
            out.append((a, b))
        else:
            start, end = min(a, start), max(b, end)
    out.append((start, end))
    out.sort()
    return out


def cov_covers(cov: list[tuple[int, int]], start: int, end: int) -> bool:
    if start >= end:
        return True
    return any(a <= start and end <= b for a, b in cov)


def cov_gaps(cov: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that ``cov`` does not hold."""
    gaps = []
    pos = start
    for a, b in cov:
        if b <= pos:
            continue
        if a >= end:
            break
        if a > pos:
            gaps.append((pos, min(a, end)))
        pos = max(pos, b)
        if pos >= end:
            break
    if pos < end:
        gaps.append((pos, end))
    return gaps


def cov_trim(cov: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    return [(a, min(b, length)) for a, b in cov if a < length]


# -- buffers ------------------------------------------------------------------------------


def block_buffer(size: int) -> Buffer:
    """A block buffer (anonymous memory of its own, page-aligned, zeros).

    Not a bytearray: 4 MiB malloc blocks stay in the heap (or in a worker
    thread's arena) after they are freed, so the daemon's memory would keep
    its peak; an anonymous mapping goes back to the system when dropped.
    """
    return mmap.mmap(-1, size)


class BufferPool:
    """A bounded set of reused block buffers (``block_buffer``s of one block size).

    Allocating a fresh 4 MiB object per block costs more than hashing it
    (perf-baseline.md §5); reused buffers cost one slice assignment per write.
    ``lent`` counts the buffers out in background work (a full block being
    hashed, a block being sent): they come back without any writer's help,
    so a writer may wait for one (``take_waiting``). When the last buffer
    comes back the pool drops them all: an idle mount holds none.
    """

    def __init__(self, block_size: int, count: int) -> None:
        self.block_size = block_size
        self.count = count
        self._free: list[Buffer] = []
        self._made = 0
        self.lent = 0
        self._given = trio.Event()
        self.zeros = bytes(block_size)

    def take(self) -> Buffer | None:
        """A buffer, or None when all are in use (the caller writes to the spill file)."""
        if self._free:
            return self._free.pop()
        if self._made < self.count:
            self._made += 1
            return block_buffer(self.block_size)
        return None

    async def take_waiting(self) -> Buffer | None:
        """A buffer; while none is free but some are lent, wait for one to come back.
        None only when every buffer sits in a partly written block."""
        while True:
            buf = self.take()
            if buf is not None or self.lent == 0:
                return buf
            await self._given.wait()

    def give(self, buf: Buffer, *, lent: bool = False) -> None:
        if lent:
            self.lent -= 1
        self._free.append(buf)
        if len(self._free) == self._made:
            self._free.clear()
            self._made = 0
        self._wake()

    def unlend(self) -> None:
        """A lent buffer stays in its block after all (its seal failed, e.g. the cache
        disk is full): writers in ``take_waiting`` must look again, or with nothing
        lent any more they would wait forever (a write hung for good)."""
        self.lent -= 1
        self._wake()

    def _wake(self) -> None:
        self._given.set()
        self._given = trio.Event()

    @property
    def in_use(self) -> int:
        return self._made - len(self._free)


# -- thread workers (plain values in, plain values out) -----------------------------------


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``; what lies past the end of the file reads as zeros."""
    data = os.pread(fd, length, offset)
    if len(data) < length:
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(fd, length - got, offset + got)
            if not more:
                parts.append(bytes(length - got))
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def _write_buffer(fd: int, direct: int, buf: memoryview, offset: int) -> None:
    """Write a block buffer to the spill file, past the page cache when it can.

    The spill copy of a block is written once and rarely read again (a read
    or a partial rewrite while the file is open, a block the service lost
    before the commit), so it has no business in the page cache: there it
    evicts what the machine does need (the very image being copied), and
    each new page costs more than the copy (allocating and zeroing; measured
    here 1.1-1.5 s of system time per GiB written into fresh pages, against
    0.03 s with O_DIRECT). ``direct`` is an O_DIRECT descriptor of the same
    file (-1 if the cache directory's filesystem has none); buffers are
    page-aligned (``block_buffer``), so whole blocks qualify. The kernel
    keeps both descriptors coherent (a direct write drops the cached pages
    it overwrites).
    """
    if direct >= 0 and len(buf) % DIRECT_ALIGN == 0 and offset % DIRECT_ALIGN == 0:
        try:
            _pwrite_all(direct, buf, offset)
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # not for this file after all: the page cache
                raise
    _pwrite_all(fd, buf, offset)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _hash_spill(fd: int, offset: int, length: int, algorithm: str) -> str:
    return block_hash(_pread_exact(fd, length, offset), algorithm)


def _fill_gaps(fd: int, block_offset: int, gaps: list[tuple[int, int]], base: bytes,
               zeros: bytes) -> None:
    """Write the source bytes (zeros past them) into the uncovered ranges of a block."""
    for a, b in gaps:
        pos = a
        if pos < len(base):
            end = min(b, len(base))
            _pwrite_all(fd, memoryview(base)[pos:end], block_offset + pos)
            pos = end
        if pos < b:
            _pwrite_all(fd, memoryview(zeros)[: b - pos], block_offset + pos)


# -- the file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The stored version a file was opened from (its blocks are fetched from here)."""

    container: str
    key: str
    version: int | None
    size: int


class Block:
    __slots__ = ("base_len", "cov", "buf", "hash", "lock", "written", "sealing", "lent")

    def __init__(self, base_len: int) -> None:
        self.base_len = base_len
        self.cov: list[tuple[int, int]] = []
        self.buf: Buffer | None = None
        self.hash: str | None = None
        self.lock = trio.Lock()
        self.written = False  # content differs from the source block (or may)
        self.sealing = False  # a background seal is queued or running
        self.lent = False  # ``buf`` counts in ``BufferPool.lent`` (it is being sealed)


class OpenFile:
    """The content of one inode open for writing. See the module docstring."""

    def __init__(self, *, workers: Workers, pithos, spawn: Spawn, pool: BufferPool,
                 spill_dir: Path, spill_name: str, block_size: int, algorithm: str,
                 source: Source | None, meta: dict[str, str] | None, content_type: str,
                 mtime_ns: int) -> None:
        self.workers = workers
        self.pithos = pithos
        self.spawn = spawn
        self.pool = pool
        self.spill_path = spill_dir / spill_name
        self.bs = block_size
        self.algorithm = algorithm
        self.empty_hash = block_hash(b"", algorithm)
        self.source = source
        self.src_limit = source.size if source else 0
        self.src_hashes: list[str] | None = None
        self._hashes_lock = trio.Lock()
        self.size = source.size if source else 0
        self.blocks: dict[int, Block] = {}
        self.meta = dict(meta) if meta is not None else None  # None: HEAD before upload
        self.content_type = content_type
        self.mtime_ns = mtime_ns
        self.gen = 0  # bumped by every change
        self.changed_at: float | None = None  # wall time of the first unsaved change
        self.committed_gen = 0  # the generation the service has
        self.attempted_gen = -1  # the generation the last upload tried
        self.unlinked = False  # out of the namespace: never uploaded again
        self.committing: trio.Event | None = None  # set when the running upload ends
        self.upload = None  # upload.Progress while an upload runs
        self.error: BaseException | None = None  # why the last upload failed
        #: Where the file will be stored, (container, key), or None once it never will
        #: be (unlinked); the filesystem sets it. Blocks go out early only if known.
        self.target: Callable[[], tuple[str, str] | None] | None = None
        self.sender = upload.Sender(self)
        self._fd: int | None = None
        self._direct = -1  # the spill file opened O_DIRECT (``_write_buffer``), if it can be
        self._tasks = 0
        self._idle = trio.Event()
        self._idle.set()
        self._mutating = 0  # writes and truncates in progress
        self._quiet = trio.Event()
        self._quiet.set()
        self._closed = False

    # -- state ------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self.gen != self.committed_gen

    def _changed(self) -> None:
        self.gen += 1
        self.mtime_ns = time.time_ns()
        if self.changed_at is None:
            self.changed_at = time.time()

    def mark_new(self) -> None:
        """A created file: it must reach the service on close even if empty."""
        self._changed()

    def has_local(self) -> bool:
        """True if reads must come from here rather than from the stored source."""
        return (self.source is None or bool(self.blocks) or self.size != self.source.size
                or self.src_limit != self.source.size)

    def block_len(self, i: int) -> int:
        return max(0, min(self.bs, self.size - i * self.bs))

    def _source_len(self, i: int) -> int:
        if self.source is None:
            return 0
        return max(0, min(self.bs, self.source.size - i * self.bs))

    def _pristine_base(self, i: int) -> int:
        return max(0, min(self.bs, self.src_limit - i * self.bs))

    def _block(self, i: int) -> Block:
        blk = self.blocks.get(i)
        if blk is None:
            blk = self.blocks[i] = Block(self._pristine_base(i))
        return blk

    def _spill(self) -> int:
        if self._fd is None:
            if self._closed:
                raise errors.ImagefsError("file already released")
            self._fd = os.open(self.spill_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._direct = os.open(self.spill_path, os.O_WRONLY | os.O_DIRECT)
            except OSError as exc:  # the cache directory's filesystem cannot
                log.debug("%s: no O_DIRECT (%s), spilling through the page cache",
                          self.spill_path, exc)
        return self._fd

    async def wait_commit(self) -> None:
        while self.committing is not None:
            await self.committing.wait()

    async def wait_quiet(self) -> None:
        """Until no write or truncate is in progress (an upload waits for this after
        raising ``committing``, so it hashes a content nobody is changing)."""
        while self._mutating:
            await self._quiet.wait()

    @contextlib.asynccontextmanager
    async def _mutation(self) -> AsyncIterator[None]:
        await self.wait_commit()
        self._mutating += 1  # no checkpoint since wait_commit saw no upload
        if self._quiet.is_set():
            self._quiet = trio.Event()
        try:
            yield
        finally:
            self._mutating -= 1
            if self._mutating == 0:
                self._quiet.set()

    # -- writing ----------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        n = len(data)
        if n == 0:
            return 0
        async with self._mutation():
            end = offset + n
            if end > self.size:
                self.size = end
            view = memoryview(data)
            pos = offset
            while pos < end:
                i = pos // self.bs
                start = i * self.bs
                a = pos - start
                b = min(end - start, self.bs)
                await self._write_block(i, a, b, view[pos - offset: pos - offset + (b - a)])
                pos = start + b
            self._changed()
        return n

    async def _write_block(self, i: int, a: int, b: int, chunk: memoryview) -> None:
        while True:
            blk = self._block(i)
            async with blk.lock:
                if self.blocks.get(i) is not blk:
                    continue  # truncated away while we waited for the lock
                blk.hash = None
                blk.written = True
                if blk.buf is None and not blk.cov and a == 0:
                    blk.buf = await self.pool.take_waiting()
                if blk.buf is not None:
                    blk.buf[a:b] = chunk
                else:
                    fd = self._spill()
                    await self.workers.disk(_pwrite_all, fd, chunk, i * self.bs + a)
                blk.cov = cov_add(blk.cov, a, b)
                full = blk.cov == [(0, self.bs)]
            break
        if full and not blk.sealing:
            blk.sealing = True
            if blk.buf is not None and not blk.lent:
                blk.lent = True
                self.pool.lent += 1
            self._start_task(self._seal_background, i, blk)

    def _start_task(self, fn, *args) -> None:
        self._tasks += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self.spawn(self._run_task, fn, *args)

    async def _run_task(self, fn, *args) -> None:
        try:
            await fn(*args)
        finally:
            self._tasks -= 1
            if self._tasks == 0:
                self._idle.set()

    async def _seal_background(self, i: int, blk: Block) -> None:
        try:
            await self.seal(i, blk)
        except Exception as exc:  # retried in the foreground by the upload, which reports it
            log.debug("background hashing of block %d of %s failed: %s", i, self.spill_path,
                      exc)
        finally:
            blk.sealing = False
            if blk.lent:  # the seal failed with the buffer still in the block
                blk.lent = False
                self.pool.unlend()

    def _release(self, blk: Block) -> None:
        """Give the block's buffer back to the pool (the caller holds ``blk.lock`` or
        the block is gone)."""
        if blk.buf is not None:
            self.pool.give(blk.buf, lent=blk.lent)
            blk.buf = None
            blk.lent = False

    async def truncate(self, size: int) -> None:
        async with self._mutation():
            if size < self.size:
                await self._shrink(size)
            self.size = size
            self._changed()

    async def _shrink(self, size: int) -> None:
        last = (size - 1) // self.bs if size > 0 else -1
        for i in sorted(k for k in self.blocks if k > last):
            blk = self.blocks[i]
            async with blk.lock:
                if self.blocks.get(i) is blk:
                    del self.blocks[i]
                    self._release(blk)
        if size % self.bs:
            length = size - last * self.bs
            blk = self._block(last)
            async with blk.lock:
                blk.cov = cov_trim(blk.cov, length)
                blk.base_len = min(blk.base_len, length)
                blk.hash = None
                blk.written = True
        self.src_limit = min(self.src_limit, size)
        if self._fd is not None:
            await self.workers.disk(os.ftruncate, self._fd, size)

    def set_mtime(self, mtime_ns: int) -> None:
        """utimens while open: the time the upload stores (later writes move it on)."""
        self.mtime_ns = mtime_ns

    # -- reading ----------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        parts = []
        pos = offset
        while pos < end:
            i = pos // self.bs
            start = i * self.bs
            a = pos - start
            b = min(end - start, self.bs)
            parts.append(await self._read_block(i, a, b))
            pos = start + b
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _read_block(self, i: int, a: int, b: int) -> bytes:
        blk = self.blocks.get(i)
        base_len = blk.base_len if blk is not None else self._pristine_base(i)
        if (blk is None or not blk.cov) and a >= base_len:
            return bytes(b - a)  # a hole or past what the source holds: zeros
        blk = self._block(i)
        async with blk.lock:
            if not cov_covers(blk.cov, a, b):
                await self._materialize(i, blk)
            if blk.buf is not None:
                return bytes(blk.buf[a:b])
            return await self.workers.disk(_pread_exact, self._spill(), b - a, i * self.bs + a)

    async def _fetch_source(self, offset: int, length: int) -> bytes:
        """Bytes of the source; a version that no longer exists (versioning ``none``,
        replaced since) falls back to the current object at the same path."""
        src = self.source
        assert src is not None
        try:
            data = await self.workers.http(self._read_source, src.container, src.key, offset,
                                           length, src.version)
        except errors.NotFound:
            if src.version is None:
                raise
            log.info("%s/%s: version %s is gone; reading the current object", src.container,
                     src.key, src.version)
            data = await self.workers.http(self._read_source, src.container, src.key, offset,
                                           length, None)
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def _read_source(self, container: str, key: str, offset: int, length: int,
                     version: int | None) -> bytes:
        return self.pithos.read(container, key, offset, length, version=version)

    async def _materialize(self, i: int, blk: Block) -> None:
        """Make ``cov`` span the whole block: fill its gaps from the source or with zeros.
        The caller holds ``blk.lock``."""
        length = self.block_len(i)
        gaps = cov_gaps(blk.cov, 0, length)
        if not gaps:
            return
        base = b""
        need = min(blk.base_len, max(b for _a, b in gaps))
        if any(a < blk.base_len for a, _b in gaps) and need > 0:
            base = await self._fetch_source(i * self.bs, need)
        if blk.buf is not None:
            for a, b in gaps:
                pos = a
                if pos < len(base):
                    stop = min(b, len(base))
                    blk.buf[pos:stop] = memoryview(base)[pos:stop]
                    pos = stop
                if pos < b:
                    blk.buf[pos:b] = memoryview(self.pool.zeros)[: b - pos]
        else:
            await self.workers.disk(_fill_gaps, self._spill(), i * self.bs, gaps, base,
                                    self.pool.zeros)
        blk.cov = [(0, length)] if length else []

    # -- hashing ----------------------------------------------------------------------

    async def seal(self, i: int, blk: Block | None = None) -> str | None:
        """Hash block ``i`` (materializing it first); its buffer goes back to the pool.
        None if the block was truncated away meanwhile."""
        blk = blk or self._block(i)
        async with blk.lock:
            if self.blocks.get(i) is not blk:
                return None
            if blk.hash is not None and blk.buf is None:
                return blk.hash
            length = self.block_len(i)
            if not cov_covers(blk.cov, 0, length):
                await self._materialize(i, blk)
            if blk.buf is not None:
                view = memoryview(blk.buf)[:length]
                digest = await self._hash_and_spill(view, i * self.bs)
                view.release()
                buf, lent = blk.buf, blk.lent
                blk.buf, blk.lent = None, False
                blk.hash = digest
                self.sender.offer(i, digest, length, buf, lent)
            else:
                digest = await self.workers.cpu(_hash_spill, self._spill(), i * self.bs, length,
                                                self.algorithm)
                blk.hash = digest
                self.sender.offer(i, digest, length, None, False)
            return digest

    async def _hash_and_spill(self, view: memoryview, offset: int) -> str:
        """Hash a block buffer and write it to the spill file, in two threads at once: the
        write waits on the disk (``_write_buffer``) while the hash keeps a core busy."""
        fd = self._spill()
        digest: list[str] = []

        async def hash_it() -> None:
            digest.append(await self.workers.cpu(block_hash, view, self.algorithm))

        with one_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hash_it)
                await self.workers.disk(_write_buffer, fd, self._direct, view, offset)
        return digest[0]

    async def source_hashes(self) -> list[str]:
        """The source's hashmap (fetched once, for the version opened)."""
        async with self._hashes_lock:
            if self.src_hashes is None:
                src = self.source
                assert src is not None
                try:
                    hm = await self.workers.http(self._hashmap, src.container, src.key,
                                                 src.version)
                except errors.NotFound:
                    if src.version is None:
                        raise
                    hm = await self.workers.http(self._hashmap, src.container, src.key, None)
                if hm.size != src.size:
                    raise errors.PreconditionFailed(
                        f"{src.container}/{src.key} changed on the service while open "
                        f"({hm.size} bytes, expected {src.size})")
                self.src_hashes = list(hm.hashes)
            return self.src_hashes

    def _hashmap(self, container: str, key: str, version: int | None):
        return self.pithos.get_hashmap(container, key, version=version)

    async def known_hash(self, i: int) -> str | None:
        """The hash of block ``i`` if it needs no hashing: computed already, a hole, or
        untouched source content (zeros past it do not change a Pithos block hash)."""
        blk = self.blocks.get(i)
        if blk is not None:
            if blk.hash is not None and blk.buf is None:
                return blk.hash
            if blk.written:
                return None
            base_len = blk.base_len
        else:
            base_len = self._pristine_base(i)
        if base_len == 0:
            return self.empty_hash
        if base_len == self._source_len(i):
            return (await self.source_hashes())[i]
        return None

    async def hashmap(self, progress: Callable[[int], None] | None = None) -> list[str]:
        """Every block's hash, hashing in parallel (CPU limiter) what is not known."""
        count = block_count(self.size, self.bs)
        if self.size == 0:
            return []
        hashes: list[str | None] = [None] * count
        todo = []
        for i in range(count):
            hashes[i] = await self.known_hash(i)
            if hashes[i] is None:
                todo.append(i)
            elif progress:
                progress(self.block_len(i))

        async def one(i: int) -> None:
            digest = await self.seal(i)
            if digest is None:
                raise errors.ImagefsError(f"block {i} vanished while hashing")
            hashes[i] = digest
            if progress:
                progress(self.block_len(i))

        if todo:
            with one_error():
                async with trio.open_nursery() as nursery:
                    for i in todo:
                        nursery.start_soon(one, i)
        return hashes  # type: ignore[return-value]

    async def send(self, i: int, container: str, expected: str) -> int:
        """Upload block ``i``, read from the spill file inside the worker thread."""
        blk = self._block(i)
        async with blk.lock:
            length = self.block_len(i)
            if not cov_covers(blk.cov, 0, length) or blk.buf is not None:
                if not cov_covers(blk.cov, 0, length):
                    await self._materialize(i, blk)
                if blk.buf is not None:
                    await self.workers.disk(_write_buffer, self._spill(), self._direct,
                                            memoryview(blk.buf)[:length], i * self.bs)
                    self._release(blk)
            fd = self._spill()
            await self.workers.http(self._post_block, container, fd, i * self.bs, length,
                                    expected)
            return length

    async def send_sealed(self, i: int, container: str, digest: str) -> int:
        """Upload block ``i`` from the spill file if its content still hashes to
        ``digest`` (the early sender's way for blocks it holds no buffer of); bytes sent."""
        blk = self.blocks.get(i)
        if blk is None:
            return 0
        async with blk.lock:
            if self.blocks.get(i) is not blk or blk.hash != digest or blk.buf is not None:
                return 0
            length = self.block_len(i)
            await self.workers.http(self._post_block, container, self._spill(), i * self.bs,
                                    length, digest)
            return length

    def _post_block(self, container: str, fd: int, offset: int, length: int,
                    expected: str) -> str:
        data = _pread_exact(fd, length, offset)
        return self.pithos.post_block(container, data, hash=expected)

    def committed(self, gen: int, source: Source, hashes: list[str]) -> None:
        """The service now holds generation ``gen`` as ``source``."""
        self.committed_gen = gen
        if not self.dirty:
            self.changed_at = None
        self.error = None
        self.source = source
        self.src_limit = source.size
        self.src_hashes = list(hashes) if source.size else []
        for i in list(self.blocks):
            blk = self.blocks[i]
            if blk.buf is None and not blk.cov and not blk.lock.locked():
                del self.blocks[i]  # reads as the new source again
            else:
                blk.base_len = self._source_len(i)
                blk.written = blk.written and blk.hash is None

    # -- unlink while open ------------------------------------------------------------

    async def detach_from_source(self) -> None:
        """Copy every block still only on the service into the spill file, before the
        object is deleted or replaced (versioning ``none`` purges the old version)."""
        if self.source is None:
            return
        for i in range(block_count(self.size, self.bs) if self.size else 0):
            blk = self._block(i)
            async with blk.lock:
                if self.blocks.get(i) is blk and not cov_covers(blk.cov, 0, self.block_len(i)):
                    await self._materialize(i, blk)
                    blk.written = True
        self.source = None
        self.src_limit = 0

    # -- end --------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait for background hashing, give buffers back, remove the spill file."""
        with trio.CancelScope(shield=True):
            self.sender.stop()
            await self._idle.wait()
            for blk in self.blocks.values():
                self._release(blk)
            self.blocks.clear()
            self._closed = True
            if self._fd is not None:
                fds = [self._fd] + ([self._direct] if self._direct >= 0 else [])
                self._fd, self._direct = None, -1
                try:
                    os.unlink(self.spill_path)
                except FileNotFoundError:
                    pass
                # The last close frees the file's extents, which takes a while for a
                # large one (0.4 s for 1 GiB): in a thread, nothing waits for it.
                self.workers.detach(_close_all, fds)

    def hashed_bytes(self) -> int:
        """Bytes whose block hash is already known (for status)."""
        return sum(self.block_len(i) for i, blk in self.blocks.items()
                   if blk.hash is not None)

