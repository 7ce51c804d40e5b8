"""Content-addressed block files: ``blocks/ab/abcdef…`` named by their hash.

A block is stored without its trailing NUL bytes (they do not count in its
hash, api.md §3.3), and every read pads it back with NULs to the length the
reader asks for, so the all-zero block and the empty block are one empty file.
``H("")`` is always present: it is created on open and never collected.

Durability rule: a block file is complete before it has its name. It is
written to a temporary file in the same directory, fsynced, renamed, and the
directory is fsynced; a kill at any moment leaves either nothing, a stray
``.tmp-*`` file (removed by ``check --repair``), or the complete block. The
metadata that references a block is committed only after ``put`` returned, so
no visible object ever lacks its blocks.

Names come from hashes only, validated as lower-case hex, so no object or
container name ever becomes a path and nothing can escape the data directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from imagefs import BLOCK_SIZE
from imagefs.errors import Corrupted, InvalidInput
from imagefs.protocol.hashmap import EMPTY_HASH, block_hash

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def valid_hash(h: str) -> bool:
    return isinstance(h, str) and _HEX64.match(h) is not None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlockStore:
    """The block files under one directory, shared by every account."""

    def __init__(self, root: Path, block_size: int = BLOCK_SIZE) -> None:
        self.root = Path(root)
        self.block_size = block_size
        self.root.mkdir(mode=0o700, exist_ok=True)
        if not self.path_of(EMPTY_HASH).exists():
            self.put(b"")

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

        Storing a block that exists only refreshes its mtime, which tells
        ``collect`` that an upload is about to reference it.
        """
        view = memoryview(data)
        if len(view) > self.block_size:
            raise InvalidInput(f"a block of {len(view)} bytes is over the block size")
        h = block_hash(view)
        path = self.path_of(h)
        try:
            os.utime(path)
            return h
        except FileNotFoundError:
            pass
        stored = view[: _stripped_length(view)]
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self.root)  # the new fan-out directory must survive a power cut too
        tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(stored)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(path.parent)
        return h

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
        buf = bytearray(self.block_size)
        while length is None or total < length:
            want = self.block_size if length is None else min(self.block_size, length - total)
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
