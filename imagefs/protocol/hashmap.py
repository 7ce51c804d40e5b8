"""Pithos block hashing and the hash tree (api.md §3.3).

A block's hash ignores its trailing NUL bytes, so a block full of zeros and an
empty block share one hash; readers must re-pad a stored block with NULs to
its logical length. The object hash is the root of a binary tree over the
block digests, padded with all-zero digests to a power of two (at least 2
leaves); a single block is its own root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from imagefs import BLOCK_SIZE

EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def block_hash(data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> str:
    """Hash one block the Pithos way: trailing NULs do not count."""
    view = memoryview(data)
    end = len(view)
    # rstrip on a memoryview would copy; find the last non-NUL byte instead.
    if end and view[end - 1] == 0:
        end = _stripped_length(view)
    return hashlib.new(algorithm, view[:end]).hexdigest()


def _stripped_length(view: memoryview) -> int:
    """Length of ``view`` without trailing NULs, scanning back in chunks."""
    end = len(view)
    chunk = 65536
    while end > 0:
        start = max(0, end - chunk)
        piece = bytes(view[start:end]).rstrip(b"\0")
        if piece:
            return start + len(piece)
        end = start
    return 0


def top_hash(hashes: Sequence[str], algorithm: str = "sha256") -> str:
    """Root of the Pithos hash tree over hex block hashes."""
    if not hashes:
        return hashlib.new(algorithm, b"").hexdigest()
    if len(hashes) == 1:
        return hashes[0]
    digests = [bytes.fromhex(h) for h in hashes]
    size = 2
    while size < len(digests):
        size *= 2
    width = len(digests[0])
    digests.extend([b"\0" * width] * (size - len(digests)))
    while len(digests) > 1:
        digests = [
            hashlib.new(algorithm, digests[i] + digests[i + 1]).digest()
            for i in range(0, len(digests), 2)
        ]
    return digests[0].hex()


def block_count(size: int, block_size: int = BLOCK_SIZE) -> int:
    """Number of hashmap entries for an object of ``size`` bytes (at least one)."""
    return max(1, -(-size // block_size))


def hashmap_of(data: bytes, block_size: int = BLOCK_SIZE, algorithm: str = "sha256") -> list[str]:
    """Hashmap of an in-memory byte string (tests and small objects only)."""
    if not data:
        return [hashlib.new(algorithm, b"").hexdigest()]
    view = memoryview(data)
    return [block_hash(view[i : i + block_size], algorithm) for i in range(0, len(data), block_size)]


def hash_stream(chunks: Iterable[bytes], block_size: int = BLOCK_SIZE,
                algorithm: str = "sha256") -> tuple[int, list[str]]:
    """Size and hashmap of a stream of chunks, holding at most one block."""
    hashes: list[str] = []
    size = 0
    buf = bytearray()
    for chunk in chunks:
        size += len(chunk)
        buf += chunk
        while len(buf) >= block_size:
            hashes.append(block_hash(memoryview(buf)[:block_size], algorithm))
            del buf[:block_size]
    if buf or not hashes:
        hashes.append(block_hash(buf, algorithm))
    return size, hashes
