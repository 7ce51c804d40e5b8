"""Helpers for the storage-engine tests (test_store*.py): a store on a tmp dir,
uploads that go the way the HTTP layer goes (blocks first, then the hashmap),
and reads that re-pad blocks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from imagefs.protocol.hashmap import hashmap_of, top_hash
from imagefs.service.store import Store, Version

BS = Store.block_size


def upload(store: Store, account: str, name: str, data: bytes = b"hello\n", *,
           container: str = "pithos", requester: str | None = None,
           content_type: str = "application/octet-stream", meta: dict | None = None,
           **kw) -> Version:
    size, hashes, _ = store.put_stream(io.BytesIO(data), len(data))
    assert size == len(data)
    return store.put_object(account, container, name, requester or account, size=size,
                            hashes=hashes, content_type=content_type, meta=meta or {}, **kw)


def read_all(store: Store, version: Version) -> bytes:
    hashes = store.hashes_of(version)
    out = bytearray()
    for i, h in enumerate(hashes):
        out += store.read_block(h, min(BS, version.size - i * BS))
    return bytes(out)


def assert_intact(store: Store, version: Version) -> bytes:
    """The version's blocks exist and rebuild exactly its hashmap and hash."""
    data = read_all(store, version)
    assert len(data) == version.size
    assert hashmap_of(data) == store.hashes_of(version)
    assert top_hash(store.hashes_of(version)) == version.hash
    return data


def names(entries) -> list[str]:
    return [e if isinstance(e, str) else e.name for e in entries]


@pytest.fixture
def st(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def alice(st: Store) -> str:
    return st.add_user("alice").uuid


@pytest.fixture
def bob(st: Store) -> str:
    return st.add_user("bob").uuid


@pytest.fixture
def carol(st: Store) -> str:
    return st.add_user("carol").uuid
