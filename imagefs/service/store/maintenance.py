"""Collecting unreferenced blocks, and checking a data directory.

``gc`` decides which block files to delete while holding the database write
lock, the lock every ``put_object`` holds while it checks that its blocks
exist: either the object commits first and its blocks are seen as
referenced, or gc deletes first and the object's check reports them missing
(the client uploads them again). Blocks younger than the grace period are
kept whatever the database says: an upload may have sent them and not yet
committed the hashmap that references them; re-sending an existing block
refreshes its mtime for the same reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from imagefs.protocol.hashmap import EMPTY_HASH, block_count, top_hash
from imagefs.service.store.blocks import TEMP_PREFIX, valid_hash

log = logging.getLogger(__name__)

#: A temporary block file older than this is a leftover, not a write in progress.
TEMP_GRACE = 60.0


def _digests(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


class MaintenanceMixin:
    """gc and check (mixed into ``Store``)."""

    def gc(self, grace_seconds: float = 3600) -> tuple[int, int]:
        """Delete block files no hashmap references; returns (count, bytes freed)."""
        cutoff = time.time() - grace_seconds
        candidates = [name for name, _, st in self.blocks.scan()
                      if valid_hash(name) and name != EMPTY_HASH and st.st_mtime < cutoff]
        removed = freed = 0
        if not candidates:
            return 0, 0
        with self.db.write() as tx:
            referenced: set[bytes] = set()
            for (blob,) in tx.execute("SELECT blocks FROM hashmaps"):
                referenced.update(_digests(bytes(blob)))
            for name in candidates:
                if bytes.fromhex(name) in referenced:
                    continue
                size = self.blocks.remove(name, older_than=cutoff)
                if size or not self.blocks.path_of(name).exists():
                    removed += 1
                    freed += size
        log.info("gc removed %d blocks (%d bytes)", removed, freed)
        return removed, freed

    def check(self, repair: bool = False, *, verify_blocks: bool = True,
              temp_grace: float = TEMP_GRACE,
              on_repair: Callable[[str], None] | None = None) -> list[str]:
        """Problems found (after repairs, which are reported through ``on_repair``).

        Repair removes what interrupted writes leave: temporary block files
        older than ``temp_grace`` and hashmap rows no version references.
        Missing or corrupt blocks and inconsistent rows are only reported.
        """
        problems: list[str] = []

        def repaired(text: str) -> None:
            log.info("repaired: %s", text)
            if on_repair is not None:
                on_repair(text)

        # Block files.
        limit = time.time() - temp_grace
        present: set[str] = set()
        for name, path, st in self.blocks.scan():
            if name.startswith(TEMP_PREFIX):
                if st.st_mtime > limit:
                    continue  # a write in progress
                text = f"leftover temporary file {path}"
                if repair:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
                    repaired(f"removed {text}")
                else:
                    problems.append(text)
            elif not valid_hash(name) or path.parent.name != name[:2]:
                problems.append(f"stray file {path}")
            else:
                present.add(name)
                if verify_blocks and not self.blocks.verify(name):
                    problems.append(f"block {name} does not match its hash")
        present.add(EMPTY_HASH)

        with (self.db.write() if repair else self.db.read()) as tx:
            result = tx.scalar("PRAGMA integrity_check")  # SQLite-only, like the PRAGMAs
            if result != "ok":
                problems.append(f"database integrity: {result}")
            used_maps = {r[0] for r in tx.all("SELECT DISTINCT map_id FROM versions "
                                               "WHERE map_id IS NOT NULL")}
            missing: dict[str, int] = {}
            maps = tx.execute("SELECT id, size, hash, blocks FROM hashmaps")
            for map_id, size, top, blob in maps:
                blob = bytes(blob)
                if map_id not in used_maps:
                    if repair:
                        tx.execute("DELETE FROM hashmaps WHERE id = ?", (map_id,))
                        repaired(f"deleted unreferenced hashmap {map_id}")
                    else:
                        problems.append(f"hashmap {map_id} is referenced by no version")
                    continue
                if len(blob) % 32:
                    problems.append(f"hashmap {map_id} is truncated")
                    continue
                hashes = [d.hex() for d in _digests(blob)]
                if len(hashes) != block_count(size, self.block_size):
                    problems.append(f"hashmap {map_id} has {len(hashes)} blocks for {size} bytes")
                if top_hash(hashes) != top:
                    problems.append(f"hashmap {map_id} does not match its top hash {top}")
                for h in hashes:
                    if h not in present:
                        missing[h] = missing.get(h, 0) + 1
            for h, n in missing.items():
                # Written after the scan above by a running service? Then it is there now.
                if not self.blocks.exists(h):
                    problems.append(f"block {h} is missing ({n} reference(s))")
            for (serial,) in tx.all("SELECT v.serial FROM versions v LEFT JOIN hashmaps h "
                                    "ON h.id = v.map_id WHERE v.cluster <> 2 AND h.id IS NULL"):
                problems.append(f"version {serial} has no hashmap")
            for (serial,) in tx.all(
                    "SELECT v.serial FROM versions v JOIN hashmaps h ON h.id = v.map_id "
                    "WHERE v.size <> h.size OR v.hash <> h.hash"):
                problems.append(f"version {serial} disagrees with its hashmap")
            for (obj_id,) in tx.all(
                    "SELECT o.id FROM objects o LEFT JOIN versions v ON v.serial = o.current "
                    "WHERE o.current IS NOT NULL AND (v.serial IS NULL OR v.object_id <> o.id "
                    "OR v.cluster <> 0)"):
                problems.append(f"object {obj_id} points to a version that is not its current one")
            for (serial,) in tx.all(
                    "SELECT v.serial FROM versions v JOIN objects o ON o.id = v.object_id "
                    "WHERE v.cluster = 0 AND (o.current IS NULL OR o.current <> v.serial)"):
                problems.append(f"version {serial} is marked current but its object disagrees")
            for (serial,) in tx.all("SELECT m.serial FROM meta m LEFT JOIN versions v "
                                    "ON v.serial = m.serial WHERE v.serial IS NULL"):
                problems.append(f"metadata of a missing version {serial}")
            top_serial = tx.scalar("SELECT MAX(serial) FROM versions", (), 0)
            if top_serial > tx.scalar("SELECT value FROM counters WHERE name = 'serial'", (), 0):
                problems.append("the serial counter is behind the versions")
        for text in problems:
            log.warning("check: %s", text)
        return problems
