"""Content-addressed block files: ``blocks/ab/abcdef…`` named by their hash.

A block is stored without its trailing NUL bytes (they do not count in its
hash, api.md §3.3), and every read pads it back with NULs to the length the
reader asks for, so the all-zero block and the empty block are one empty file.
``H("")`` is always present: it is created on open and never collected.

Durability: written at once, made durable at commit
----------------------------------------------------

A block file is complete before it has its name: it is written to a
temporary file in the same directory and renamed. A killed process (kill -9)
therefore leaves nothing, a stray ``.tmp-*`` file (removed by ``check
--repair``), or the complete block: the page cache outlives the process.

A power cut is different: a file renamed before its data reached the disk
may come back empty or short under its final name. fsyncing every block (and
its directory) as it arrives costs ~15 ms per 4 MiB block and capped uploads
near 150 MB/s, so a POSTed block is only *written* (its write-back to disk is
started at once), and made durable when it matters: before a commit makes a
version reference it. The state of a block is in its file:

- *pending* — created with mode 0400 (the mode is part of creating the
  inode, so no name ever points to a block without it) and an extended
  attribute ``user.imagefs.boot`` = the kernel's boot id, set before the
  rename;
- *sealed* — mode 0600, set with ``fchmod`` only after ``fsync`` of the file
  and of its directory returned, through the descriptor that was synced (a
  file renamed over it meanwhile stays pending). Files of stores written
  before this scheme are 0600: they were fsynced one by one.

``seal(hashes)``, called by ``put_object`` before it takes the database
write lock and again under it, fsyncs exactly the referenced blocks that are
still pending (the data, then their directories, then the 0600 mark) and
reports missing ones, so a committed version never references a block that
is not durable. A pending block whose boot id is not the current one (or
that lacks it) was written before a reboot, maybe a power cut: its content is
re-hashed before it is sealed, and if it does not match it is reported
missing (the client sends it again; ``put`` rewrites a pending file of
another boot instead of trusting it). Losing the 0600 mark in a crash only
makes a sealed block look pending: it is checked and sealed again.

Where extended attributes or modes do not work (probed on open), every
block is fsynced with its directory as it arrives, as before (and a pending
block found there is re-hashed before it is sealed).

Names come from hashes only, validated as lower-case hex, so no object or
container name ever becomes a path and nothing can escape the data directory.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from imagefs import BLOCK_SIZE
from imagefs.errors import Corrupted, InvalidInput
from imagefs.protocol.hashmap import EMPTY_HASH, block_hash

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")

#: Mode of a block not yet known to be durable (given at creation, so it is never missing).
PENDING_MODE = 0o400
#: Mode of a block fsynced with its directory (and of every block of older stores).
SEALED_MODE = 0o600
#: Extended attribute of a pending block: the boot id of the kernel that wrote it.
BOOT_XATTR = "user.imagefs.boot"
#: Piece size of streamed reads: under the malloc mmap threshold (``server.tune_malloc``),
#: so each piece reuses heap memory instead of being mapped, faulted in and unmapped.
READ_PIECE = 128 * 1024
_ZEROS = bytes(READ_PIECE)
#: Block buffers kept per process for uploads (more are allocated when busier).
BUFFERS_KEPT = 2
#: O_DIRECT alignment of offsets, lengths and memory (a page covers every disk's).
DIRECT_ALIGN = 4096
#: Descriptors one ``seal`` keeps open at a time.
SEAL_BATCH = 64
_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_SYNC_FILE_RANGE_WRITE = 2


def valid_hash(h: str) -> bool:
    return isinstance(h, str) and _HEX64.match(h) is not None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _boot_id() -> bytes | None:
    """This kernel's boot id (Linux); None elsewhere."""
    try:
        with open(_BOOT_ID, "rb") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _sealed(mode: int) -> bool:
    return bool(mode & stat.S_IWUSR)


def _load_sync_file_range():
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk, without waiting (Linux only).

    The disk then works while the upload goes on, and the fsync of ``seal``
    mostly finds the data written already.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _write_all(fd: int, data: memoryview) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])


def _write_direct(fd: int, data: memoryview) -> None:
    """Write a new block through an O_DIRECT descriptor: its aligned part straight to
    the disk, the tail (or all of it, if the memory is not aligned) through the page
    cache. Filling fresh page-cache pages costs more CPU than anything else an upload
    does on a virtual machine whose free memory goes back to the host (measured here:
    2.4-2.7 CPU s per GiB buffered, 0.06 s direct), and a block just written is
    rarely read at once."""
    aligned = len(data) - len(data) % DIRECT_ALIGN
    done = 0
    try:
        while done < aligned:
            done += os.pwrite(fd, data[done:aligned], done)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: memory not aligned, nothing written
            raise
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
    while done < len(data):
        done += os.pwrite(fd, data[done:], done)


class _BufferPool:
    """Block-sized buffers kept for the next upload while uploads go on.

    A fresh 4 MiB buffer per request is an mmap (``server.tune_malloc``), 1024
    page faults and 4 MiB of zeroing, then an munmap; keeping a few makes that
    a one-time cost per burst of uploads. They are dropped once no upload has
    used one for ``idle`` seconds, so an idle worker does not hold them.
    """

    def __init__(self, size: int, keep: int, idle: float = 2.0) -> None:
        self.size, self.keep, self.idle = size, keep, idle
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self._busy = 0
        self._last = 0.0
        self._timer: threading.Timer | None = None

    @contextmanager
    def take(self) -> Iterator[mmap.mmap]:
        with self._lock:
            buf = self._free.pop() if self._free else None
            self._busy += 1
        if buf is None:
            buf = mmap.mmap(-1, self.size)  # page-aligned, for O_DIRECT writes
        try:
            yield buf
        finally:
            with self._lock:
                self._busy -= 1
                if len(self._free) < self.keep:
                    self._free.append(buf)
                self._last = time.monotonic()
                if self._timer is None:
                    self._arm(self.idle)

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._trim)
        self._timer.daemon = True
        self._timer.start()

    def _trim(self) -> None:
        with self._lock:
            wait = self._last + self.idle - time.monotonic()
            if self._busy or wait > 0:
                self._arm(max(wait, 0.1))
                return
            self._free.clear()
            self._timer = None


class BlockStore:
    """The block files under one directory, shared by every account."""

    def __init__(self, root: Path, block_size: int = BLOCK_SIZE) -> None:
        self.root = Path(root)
        self.block_size = block_size
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._buffers = _BufferPool(block_size, BUFFERS_KEPT)
        self.boot_id = _boot_id()
        #: New blocks are written with O_DIRECT (``_write_direct``) until a filesystem
        #: refuses it.
        self.direct = True
        #: True: blocks are fsynced by ``seal``; False: each one as it is written.
        self.deferred = self.boot_id is not None and self._probe()
        self._make_fanout()
        if not self.path_of(EMPTY_HASH).exists():
            self.put(b"")

    def _make_fanout(self) -> None:
        """Create the 256 fan-out directories at once, with one fsync of the root,
        rather than one fsync per directory during the first big upload."""
        if (self.root / "ff").is_dir():
            return
        for i in range(256):
            (self.root / f"{i:02x}").mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(self.root)

    def _probe(self) -> bool:
        """Whether this file system keeps a 0400 creation mode, fchmod and user xattrs."""
        tmp = self.root / f"{TEMP_PREFIX}probe-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PENDING_MODE)
            try:
                os.setxattr(fd, BOOT_XATTR, self.boot_id)
                works = (stat.S_IMODE(os.fstat(fd).st_mode) == PENDING_MODE
                         and os.getxattr(fd, BOOT_XATTR) == self.boot_id)
                os.fchmod(fd, SEALED_MODE)
                works = works and _sealed(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as exc:
            log.info("%s: no deferred block sync (%s); every block is fsynced as it arrives",
                     self.root, exc)
            return False
        if not works:
            log.info("%s: file modes or xattrs are not kept; every block is fsynced as it "
                     "arrives", self.root)
        return works

    def path_of(self, h: str) -> Path:
        if not valid_hash(h):
            raise InvalidInput(f"not a block hash: {h[:80]!r}")
        return self.root / h[:2] / h

    def exists(self, h: str) -> bool:
        return h == EMPTY_HASH or self.path_of(h).exists()

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """Hashes without a block file, deduplicated, in first-seen order."""
        seen: set[str] = set()
        out = []
        for h in hashes:
            if h in seen:
                continue
            seen.add(h)
            if not self.exists(h):
                out.append(h)
        return out

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store one block (at most ``block_size`` bytes); returns its hash.

        The block is durable once ``seal`` has seen it (see the module
        docstring). Storing a block that exists only refreshes its mtime,
        which tells ``collect`` that an upload is about to reference it.
        """
        view = memoryview(data)
        if len(view) > self.block_size:
            raise InvalidInput(f"a block of {len(view)} bytes is over the block size")
        h = block_hash(view)
        path = self.path_of(h)
        if not self._refresh(path):
            self._write(path, view[: _stripped_length(view)])
        return h

    def _refresh(self, path: Path) -> bool:
        """Touch a stored block that can be trusted; False if absent or pending since
        before a reboot (its content is then rewritten rather than believed)."""
        try:
            if not _sealed(os.stat(path).st_mode) and not self._this_boot(path):
                return False
            os.utime(path)
            return True
        except FileNotFoundError:
            return False

    def _this_boot(self, target: Path | int) -> bool:
        """Whether a pending block (path or descriptor) was written since the last boot."""
        try:
            return os.getxattr(target, BOOT_XATTR) == self.boot_id
        except OSError:  # no mark (lost in a crash), or gone
            return False

    def _write(self, path: Path, stored: memoryview) -> None:
        """Write ``stored`` under a temporary name and rename it to ``path``."""
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self.root)  # the new fan-out directory must survive a power cut too
        tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = self._create(tmp)
        try:
            try:
                if self.direct:
                    _write_direct(fd, stored)
                else:
                    _write_all(fd, stored)
                if self.deferred:
                    os.setxattr(fd, BOOT_XATTR, self.boot_id)
                    _start_writeback(fd)
                else:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if not self.deferred:
            _fsync_dir(path.parent)

    def _create(self, tmp: Path) -> int:
        """A new block file, with O_DIRECT where the filesystem has it (not tmpfs)."""
        mode = PENDING_MODE if self.deferred else SEALED_MODE
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if self.direct:
            try:
                return os.open(tmp, flags | os.O_DIRECT, mode)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("%s: no O_DIRECT here; blocks are written through the page cache",
                         self.root)
                self.direct = False
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return os.open(tmp, flags, mode)

    def seal(self, hashes: Iterable[str]) -> list[str]:
        """Make the blocks of a hashmap durable before a commit references them.

        Returns the hashes without a trustworthy block (deduplicated, first-seen
        order, never ``H("")``); when some are missing nothing is synced. A
        sealed block costs one ``stat``; a pending one is fsynced, then its
        directory, then it is marked sealed.
        """
        missing: list[str] = []
        pending: list[str] = []
        for h in dict.fromkeys(hashes):
            if h == EMPTY_HASH:
                continue
            try:
                st = os.stat(self.path_of(h))
            except FileNotFoundError:
                missing.append(h)
                continue
            if not _sealed(st.st_mode):
                pending.append(h)
        if missing:
            return missing
        for i in range(0, len(pending), SEAL_BATCH):
            missing += self._seal_batch(pending[i : i + SEAL_BATCH])
        return missing

    def _seal_batch(self, hashes: list[str]) -> list[str]:
        """fsync pending blocks, then their directories, then mark them sealed through the
        descriptors that were synced (a block renamed over one meanwhile stays pending)."""
        missing: list[str] = []
        fds: list[int] = []
        synced: list[int] = []
        dirs: set[Path] = set()
        try:
            for h in hashes:
                path = self.path_of(h)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    missing.append(h)
                    continue
                fds.append(fd)
                if not self._this_boot(fd) and not self._content_is(fd, h):
                    log.warning("block %s, written before a reboot, is damaged; "
                                "asking for it again", h)
                    missing.append(h)
                    continue
                os.fsync(fd)
                synced.append(fd)
                dirs.add(path.parent)
            for parent in dirs:
                _fsync_dir(parent)
            for fd in synced:
                os.fchmod(fd, SEALED_MODE)
        finally:
            for fd in fds:
                os.close(fd)
        return missing

    def _content_is(self, fd: int, h: str) -> bool:
        data = os.pread(fd, self.block_size + 1, 0)
        while len(data) <= self.block_size:
            more = os.pread(fd, self.block_size + 1 - len(data), len(data))
            if not more:
                break
            data += more
        return len(data) <= self.block_size and block_hash(data) == h

    def put_stream(self, stream: BinaryIO, length: int | None = None, *,
                   md5: bool = False) -> tuple[int, list[str], str]:
        """Cut a body into blocks and store them, holding one block at a time.

        ``length`` None reads to the end of the stream. Returns the byte count,
        the hashmap (``[H("")]`` for an empty body) and the MD5 hex when asked.
        A stream that ends before ``length`` raises ``InvalidInput``.
        """
        digest = hashlib.md5() if md5 else None
        hashes: list[str] = []
        total = 0
        with self._buffers.take() as buf:
            while length is None or total < length:
                want = self.block_size if length is None else min(self.block_size,
                                                                   length - total)
                got = _read_into(stream, memoryview(buf)[:want])
                if got:
                    piece = memoryview(buf)[:got]
                    hashes.append(self.put(piece))
                    if digest is not None:
                        digest.update(piece)
                    total += got
                if got < want:
                    if length is not None:
                        raise InvalidInput(f"body ended after {total} of {length} bytes")
                    break
        if not hashes:
            hashes.append(EMPTY_HASH)
        return total, hashes, digest.hexdigest() if digest is not None else ""

    def read(self, h: str, length: int) -> bytes:
        """The block's bytes padded with NULs (or cut) to ``length``."""
        if h == EMPTY_HASH:
            return bytes(length)
        try:
            with open(self.path_of(h), "rb") as f:
                data = f.read(length)
        except FileNotFoundError:
            raise Corrupted(f"block {h} is missing") from None
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def open_block(self, h: str) -> BinaryIO:
        """The block's file, unbuffered, as stored (without its trailing NULs)."""
        try:
            return open(self.path_of(h), "rb", buffering=0)
        except FileNotFoundError:
            raise Corrupted(f"block {h} is missing") from None

    def pieces(self, h: str, start: int, stop: int) -> Iterator[bytes]:
        """Bytes ``start``..``stop`` of the block padded with NULs, in pieces of at most
        ``READ_PIECE`` bytes, for streaming replies."""
        pos = start
        if h != EMPTY_HASH:
            with self.open_block(h) as f:
                f.seek(start)
                while pos < stop:
                    data = f.read(min(READ_PIECE, stop - pos))
                    if not data:
                        break
                    pos += len(data)
                    yield data
        while pos < stop:
            n = min(READ_PIECE, stop - pos)
            pos += n
            yield _ZEROS if n == READ_PIECE else bytes(n)

    def verify(self, h: str) -> bool:
        """Whether the file's content hashes to its name (missing: False)."""
        try:
            with open(self.path_of(h), "rb") as f:
                data = f.read(self.block_size + 1)
        except FileNotFoundError:
            return False
        return len(data) <= self.block_size and block_hash(data) == h

    def scan(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Every entry under the fan-out directories: (name, path, stat).

        Temporary files and strays are included; callers tell them apart
        with ``valid_hash``.
        """
        try:
            tops = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for top in tops:
            if not top.is_dir(follow_symlinks=False):
                yield top.name, Path(top.path), top.stat(follow_symlinks=False)
                continue
            for entry in os.scandir(top.path):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield entry.name, Path(entry.path), st

    def remove(self, h: str, *, older_than: float | None = None) -> int:
        """Delete a block file (never ``H("")``); returns the bytes freed.

        With ``older_than`` (epoch seconds) a file touched since then is kept:
        an upload has just sent it again.
        """
        if h == EMPTY_HASH:
            return 0
        path = self.path_of(h)
        try:
            st = path.stat()
            if older_than is not None and st.st_mtime >= older_than:
                return 0
            path.unlink()
        except FileNotFoundError:
            return 0
        return st.st_size


def _read_into(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; short only at the end of the stream."""
    filled = 0
    readinto = getattr(stream, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            chunk = stream.read(len(view) - filled)
            n = len(chunk) if chunk else 0
            view[filled : filled + n] = chunk or b""
        if not n:
            break
        filled += n
    return filled


def _stripped_length(view: memoryview) -> int:
    """Length without trailing NULs, scanning back in 64 KiB pieces."""
    end = len(view)
    while end > 0:
        start = max(0, end - 65536)
        piece = bytes(view[start:end]).rstrip(b"\0")
        if piece:
            return start + len(piece)
        end = start
    return 0
