"""The Pithos hash tree: every vector of api.md §3.3, and streaming == in-memory."""

from __future__ import annotations

import hashlib
import random

import pytest

from imagefs import BLOCK_SIZE
from imagefs.protocol.hashmap import (
    EMPTY_HASH, block_count, block_hash, hash_stream, hashmap_of, top_hash)

MIB = 1024 * 1024
A = "299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05"
HELLO = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

VECTORS = [
    # (name, content factory, size, hashmap, top hash)
    ("empty", lambda: b"", 0, [EMPTY_HASH], EMPTY_HASH),
    ("hello", lambda: b"hello\n", 6, [HELLO], HELLO),
    ("hello+10 NUL", lambda: b"hello\n" + b"\0" * 10, 16, [HELLO], HELLO),
    ("4MiB a + b", lambda: b"a" * (4 * MIB) + b"b", 4194305,
     [A, "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"],
     "565546ad93383e225e7cf808fb4d527a54dec54826a5c34a24c1f19a03c62583"),
    ("4MiB a, 4MiB b, c", lambda: b"a" * (4 * MIB) + b"b" * (4 * MIB) + b"c", 8388609,
     [A, "61d678b48de600e6922df82ac9fb5d208d19e98064d0d1d5c14a2ee50481c593",
      "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6"],
     "e747b499f8f09ea48c537050c3492c984d867b410639bd5867603e259278f746"),
    ("8MiB NUL", lambda: b"\0" * (8 * MIB), 8388608, [EMPTY_HASH, EMPTY_HASH],
     "2dba5dbc339e7316aea2683faf839c1b7b1ee2313db792112588118df066aa35"),
]


@pytest.mark.parametrize("name,make,size,hashes,top", VECTORS, ids=[v[0] for v in VECTORS])
def test_vectors(name, make, size, hashes, top):
    data = make()
    assert len(data) == size
    assert hashmap_of(data) == hashes
    assert top_hash(hashes) == top
    assert block_count(size) == len(hashes)
    streamed_size, streamed = hash_stream(data[i:i + 65536] for i in range(0, size, 65536))
    assert (streamed_size, streamed) == (size, hashes)


def test_empty_constant_is_sha256_of_nothing():
    assert EMPTY_HASH == hashlib.sha256(b"").hexdigest()
    assert EMPTY_HASH == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_trailing_nuls_do_not_count_but_leading_and_inner_do():
    assert block_hash(b"x\0\0") == block_hash(b"x")
    assert block_hash(b"\0x") != block_hash(b"x")
    assert block_hash(b"x\0y") != block_hash(b"xy")
    assert block_hash(b"\0" * 100000) == EMPTY_HASH
    # a long run of NULs after data spanning the 64 KiB back-scan chunks
    data = b"z" + b"\0" * 200000
    assert block_hash(memoryview(data)) == hashlib.sha256(b"z").hexdigest()


def test_top_hash_of_empty_list_and_single():
    assert top_hash([]) == EMPTY_HASH
    assert top_hash([A]) == A


def test_top_hash_pads_to_power_of_two_with_zero_digests():
    leaves = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    digests = [bytes.fromhex(h) for h in leaves] + [b"\0" * 32] * 3
    while len(digests) > 1:
        digests = [hashlib.sha256(digests[i] + digests[i + 1]).digest()
                   for i in range(0, len(digests), 2)]
    assert top_hash(leaves) == digests[0].hex()


@pytest.mark.parametrize("seed", range(4))
def test_hash_stream_equals_hashmap_of_on_random_data(seed):
    rnd = random.Random(seed)
    block = 4096
    size = rnd.randrange(0, 6 * block)
    data = bytes(rnd.getrandbits(8) for _ in range(size))
    if seed == 1 and size:  # zero tails inside and at the end of blocks
        data = data[: size // 2] + b"\0" * (size - size // 2)
    cuts = sorted(rnd.randrange(0, size + 1) for _ in range(rnd.randrange(0, 8)))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [size])]
    got_size, got = hash_stream(chunks, block_size=block)
    assert got_size == size
    assert got == hashmap_of(data, block_size=block)
    assert len(got) == block_count(size, block)


def test_hash_stream_default_block_size_multi_block():
    rnd = random.Random(7)
    data = rnd.randbytes(BLOCK_SIZE + 12345)
    pieces = [data[:1000], data[1000:BLOCK_SIZE + 1], data[BLOCK_SIZE + 1:]]
    size, hashes = hash_stream(iter(pieces))
    assert size == len(data)
    assert hashes == hashmap_of(data)
    assert len(hashes) == 2
