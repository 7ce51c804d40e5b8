"""The storage engine of the embedded service: metadata in SQLite, blocks in files.

``Store`` knows nothing of HTTP: it takes and returns plain values
(``records.py``) and raises ``imagefs.errors`` exceptions, plus
``MissingBlocks`` for a hashmap naming blocks it does not have. It is safe to
use from many threads and from several processes on one data directory (the
gunicorn workers, and ``imagefs user``/``gc``/``check`` beside them): it
keeps no state in memory that another process would need.

Layout of a data directory (0700)::

    imagefs.db      SQLite (WAL) with every piece of metadata, 0600 (db.py)
    blocks/ab/ab…   block files named by their sha256 (blocks.py)
    default.token   "UUID TOKEN" of the default user, 0600 (users.py)

The work is split by subject: ``objects.py`` (accounts, containers, objects,
versions, sharing, listing), ``images.py`` (registration on objects),
``users.py`` (users and tokens), ``maintenance.py`` (gc and check).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from imagefs import BLOCK_HASH, BLOCK_SIZE
from imagefs.config import make_private_dir
from imagefs.service.store.blocks import BlockStore
from imagefs.service.store.db import Database, disk_space
from imagefs.service.store.images import ImagesMixin
from imagefs.service.store.maintenance import MaintenanceMixin
from imagefs.service.store.objects import MissingBlocks, ObjectsMixin
from imagefs.service.store.records import ContainerRecord, ImageRecord, User, Version
from imagefs.service.store.users import UsersMixin

__all__ = ["Store", "MissingBlocks", "User", "ContainerRecord", "Version", "ImageRecord"]

log = logging.getLogger(__name__)

DB_FILE = "imagefs.db"
BLOCKS_DIR = "blocks"


class Store(UsersMixin, ObjectsMixin, ImagesMixin, MaintenanceMixin):
    """One data directory: accounts, objects, images, users, blocks."""

    block_size = BLOCK_SIZE
    block_hash = BLOCK_HASH

    def __init__(self, data_dir: Path, db: Database, blocks: BlockStore) -> None:
        self.data_dir = data_dir
        self.db = db
        self.blocks = blocks

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        """Open (creating if needed) a data directory; idempotent, any process."""
        data_dir = make_private_dir(Path(data_dir))
        db = Database(data_dir / DB_FILE)
        blocks = BlockStore(data_dir / BLOCKS_DIR, BLOCK_SIZE)
        log.debug("opened store %s", data_dir)
        return cls(data_dir, db, blocks)

    def close(self) -> None:
        """Close this thread's database connection."""
        self.db.close()

    # -- blocks -----------------------------------------------------------------------------

    def put_block(self, data: bytes | bytearray | memoryview) -> str:
        """Store one block (≤ block_size bytes); returns its hash. It is made durable
        before a commit references it (``BlockStore.seal``)."""
        with disk_space():
            return self.blocks.put(data)

    def put_blocks_stream(self, stream: BinaryIO, length: int | None,
                          block_size: int = BLOCK_SIZE) -> list[str]:
        """Cut a body of ``length`` bytes (None: to EOF) into stored blocks."""
        if block_size != self.block_size:
            raise ValueError(f"block size {block_size} is not the store's {self.block_size}")
        with disk_space():
            return self.blocks.put_stream(stream, length)[1]

    def put_stream(self, stream: BinaryIO, length: int | None = None, *,
                   md5: bool = False) -> tuple[int, list[str], str]:
        """Like put_blocks_stream, also returning the byte count and the MD5 if asked."""
        with disk_space():
            return self.blocks.put_stream(stream, length, md5=md5)

    def missing_blocks(self, hashes: list[str]) -> list[str]:
        """The hashes not stored, deduplicated, first-seen order; H("") never."""
        return self.blocks.missing(hashes)

    def read_block(self, hash: str, length: int) -> bytes:
        """The block padded with NULs to ``length`` (Corrupted if missing)."""
        return self.blocks.read(hash, length)
