"""The SQLite database of the embedded service: schema, connections, transactions.

Every piece of metadata lives here; block contents live in ``blocks.py``. The
service may run as several worker processes with several threads each, and
``imagefs user add`` or ``imagefs gc`` may run beside it, so nothing is cached
in memory: each thread of each process has its own connection, and SQLite's
locks are the only coordination.

- WAL journal: readers never block the writer and see a consistent snapshot
  for the length of their read transaction.
- ``synchronous=FULL``: a commit is fsynced to the WAL before it returns. With
  WAL, NORMAL would survive a killed process too, but could lose the last
  commits on a power cut *after* the client was told 201; the block files are
  fsynced anyway, so the one extra WAL fsync per mutation is cheap and makes a
  reported success durable.
- Every mutation is one ``BEGIN IMMEDIATE`` transaction: it takes the write
  lock up front, so two writers never deadlock on a read-to-write upgrade.
  Taking the lock is retried until ``LOCK_DEADLINE``; after that the caller
  gets ``Transient`` (503), never a half-applied change.

The SQL is plain DB-API with ``?`` placeholders passed through ``sql()``, the
one place a PostgreSQL backend would translate them; only the connection set-up
(PRAGMAs) and ``check``'s integrity check are SQLite-specific. A PostgreSQL
schema would say BYTEA for BLOB and BIGINT for the ids, and needs the "C"
collation on name columns: listings rely on names sorting in code-point order,
which is SQLite's BINARY order of UTF-8.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagefs.errors import ImagefsError, StorageFull, Transient

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: How long one statement waits for a lock inside SQLite (milliseconds).
BUSY_TIMEOUT_MS = 5000
#: Page cache per connection, in KiB (SQLite's default is 2000).
CACHE_KIB = 512
#: How long a writer keeps retrying to get the write lock (seconds).
LOCK_DEADLINE = 60.0

# Each statement is executed on its own (no executescript) so that the same
# text would run on PostgreSQL: INTEGER PRIMARY KEY values come from the
# ``counters`` table, never from SQLite's rowid, and BLOB maps to BYTEA.
SCHEMA = [
    # Key/value facts about the database itself.
    #   key    'schema_version' (an integer as text).
    #   value  its value.
    """CREATE TABLE IF NOT EXISTS schema_info (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    # Monotonic counters; a value is never handed out twice, even after the
    # rows it was used for are deleted.
    #   name   'serial': version serials, one global counter shared by every
    #          object of every account (api.md §3.1); 'id': row ids of
    #          accounts, containers, objects and hashmaps.
    #   value  the last value handed out.
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL)""",
    # Users of the embedded identity service.
    #   uuid        the user id, also the name of the user's account.
    #   name        display/user name, unique ("user" is the default user).
    #   token_hash  sha256 hex of the token; the token itself is not stored.
    #   created     creation time (epoch seconds).
    #   is_default  1 for the user `imagefs mount` uses without a cloud.
    """CREATE TABLE IF NOT EXISTS users (
        uuid TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        created DOUBLE PRECISION NOT NULL,
        is_default INTEGER NOT NULL DEFAULT 0)""",
    # Accounts: one per user uuid, created on the user's first access.
    #   id       row id.
    #   name     the account name = the owner's uuid.
    #   quota    bytes over all containers, 0 = unlimited.
    #   mtime    last change of the account's own metadata, groups or
    #            container set (container mtimes cover their objects).
    #   created  creation time.
    """CREATE TABLE IF NOT EXISTS accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        quota INTEGER NOT NULL DEFAULT 0,
        mtime DOUBLE PRECISION NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    # Account metadata (X-Account-Meta-*), keys as the HTTP layer normalised them.
    """CREATE TABLE IF NOT EXISTS account_meta (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (account_id, key))""",
    # Account groups (X-Account-Group-*): one row per member; a sharing entry
    # "<account>:<group>" grants access to every member.
    """CREATE TABLE IF NOT EXISTS account_groups (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        member TEXT NOT NULL,
        PRIMARY KEY (account_id, name, member))""",
    # Containers.
    #   name        ≤ 256 characters, no '/'.
    #   versioning  'auto' keeps old versions as history; 'none' purges every
    #               older version of an object when a new one is written.
    #   quota       bytes, 0 = unlimited; counts the current versions.
    #   project     X-Container-Policy-Project (informational), '' = account.
    #   mtime       last change of the container or of any object in it.
    """CREATE TABLE IF NOT EXISTS containers (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        versioning TEXT NOT NULL,
        quota INTEGER NOT NULL DEFAULT 0,
        project TEXT NOT NULL DEFAULT '',
        mtime DOUBLE PRECISION NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        UNIQUE (account_id, name))""",
    # Container metadata (X-Container-Meta-*).
    """CREATE TABLE IF NOT EXISTS container_meta (
        container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (container_id, key))""",
    # Object paths. A row exists for every name ever written in a container
    # and outlives deletes (its history stays listable); path-level state
    # lives here, per-version state in ``versions``.
    #   name       ≤ 1024 characters, may contain '/'; never a file path.
    #   current    serial of the version in cluster 'normal', NULL when the
    #              object is deleted (the latest version is a tombstone).
    #   public_id  16 random alphanumerics when published (X-Object-Public),
    #              else NULL.
    # Listings walk the (container_id, name, current, public_id) index, which
    # covers every column they need from this table.
    """CREATE TABLE IF NOT EXISTS objects (
        id INTEGER PRIMARY KEY,
        container_id INTEGER NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        current INTEGER,
        public_id TEXT UNIQUE,
        UNIQUE (container_id, name))""",
    "CREATE INDEX IF NOT EXISTS objects_listing "
    "ON objects (container_id, name, current, public_id)",
    # Sharing of a path (X-Object-Sharing), one row per grant. Objects below a
    # directory object (content type application/directory or
    # application/folder) without grants of their own inherit the nearest one's.
    #   access  'read' or 'write' (write implies read).
    #   member  a user uuid, '<account uuid>:<group>', or '*' (everyone).
    """CREATE TABLE IF NOT EXISTS permissions (
        object_id INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
        access TEXT NOT NULL,
        member TEXT NOT NULL,
        PRIMARY KEY (object_id, access, member))""",
    # Hashmaps (ordered block lists), shared by every version with the same
    # content: a metadata change, copy, move or registration reuses its
    # version's row instead of copying 2560 hashes of a 10 GiB image.
    #   size    object size in bytes (determines the number of blocks).
    #   hash    Merkle top hash of the blocks (api.md §3.3).
    #   blocks  the raw 32-byte block digests, concatenated in order.
    # A row is deleted as soon as no version references it; ``gc`` deletes
    # block files no row references.
    """CREATE TABLE IF NOT EXISTS hashmaps (
        id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        hash TEXT NOT NULL,
        blocks BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS hashmaps_hash ON hashmaps (hash, size)",
    # Versions of objects.
    #   serial        from counters 'serial'; never reused (X-Object-Version).
    #   object_id     the path this version belongs to.
    #   cluster       0 normal (current), 1 history, 2 deleted (tombstone).
    #   uuid          X-Object-UUID = image id; kept across overwrite, metadata
    #                 change and move, new on copy and after a delete.
    #   created       when this uuid was first assigned (image created_at, D3).
    #   size          bytes; 0 for a tombstone.
    #   content_type  as supplied; '' for a tombstone.
    #   hash          Merkle top hash; '' for a tombstone.
    #   checksum      MD5 hex supplied with a plain PUT, else ''.
    #   map_id        the hashmap; NULL for a tombstone.
    #   mtime         when the version was written (epoch seconds, float).
    #   modified_by   uuid of the user who wrote it.
    """CREATE TABLE IF NOT EXISTS versions (
        serial INTEGER PRIMARY KEY,
        object_id INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
        cluster INTEGER NOT NULL,
        uuid TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        hash TEXT NOT NULL,
        checksum TEXT NOT NULL,
        map_id INTEGER REFERENCES hashmaps(id),
        mtime DOUBLE PRECISION NOT NULL,
        modified_by TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS versions_object ON versions (object_id, serial)",
    "CREATE INDEX IF NOT EXISTS versions_uuid ON versions (uuid)",
    "CREATE INDEX IF NOT EXISTS versions_map ON versions (map_id)",
    # Metadata of a version, by domain: 'pithos' holds the user metadata the
    # object-store API reads and writes (keys normalised by the HTTP layer,
    # e.g. 'Mtime'); 'plankton' holds the image registration (keys 'name',
    # 'disk_format', 'container_format', 'status', 'property:<key>').
    # Domains other than the one an operation writes are copied to the new
    # version; a tombstone has none (api.md §3.10).
    """CREATE TABLE IF NOT EXISTS meta (
        serial INTEGER NOT NULL REFERENCES versions(serial) ON DELETE CASCADE,
        domain TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (serial, domain, key))""",
    # Finds registered images (domain 'plankton', key 'name') without a scan.
    "CREATE INDEX IF NOT EXISTS meta_domain_key ON meta (domain, key)",
]

COUNTERS = ("serial", "id")


@contextmanager
def disk_space() -> Iterator[None]:
    """A full disk (or file system quota) while writing or syncing blocks is
    ``StorageFull`` (507), as SQLITE_FULL is in ``Database.write``.

    ``BlockStore.put`` has already removed its temporary file, so nothing
    half-written stays.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.warning("no space left for blocks in %s", exc.filename or "the data directory")
            raise StorageFull("No space left on the service's disk") from exc
        raise


#: Connections opened before a fork, never used or closed in the child.
_INHERITED: list[sqlite3.Connection] = []


def sql(text: str) -> str:
    """The statement for this driver's paramstyle (sqlite3: qmark, unchanged).

    Every statement goes through here, so a PostgreSQL backend only has to
    turn ``?`` into ``%s``.
    """
    return text


def placeholders(n: int) -> str:
    """``?, ?, ...`` for an IN list of ``n`` values."""
    return ", ".join("?" * n)


#: IN lists come in these lengths only (``chunks`` pads them), so that a few statement
#: shapes get prepared instead of one per length. sqlite3 keeps 128 prepared statements
#: per connection, and one with n placeholders holds about 180 n bytes of SQLite memory:
#: with listings of every length from 1 to 900 cached, each of a worker's 9 connections
#: grew by megabytes as users' containers filled (50 clients for 180 s: 85 MB in one
#: worker). Padded, a connection holds at most ~1.5 MB of such statements.
IN_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900)


def chunks(values: Sequence[Any], size: int = 900) -> Iterator[Sequence[Any]]:
    """Slices small enough for an IN list on any SQLite build (limit 999 before 3.32),
    each padded to an ``IN_LENGTHS`` length by repeating its last value (which changes
    nothing for ``IN``): use them for IN lists only."""
    for i in range(0, len(values), size):
        part = list(values[i : i + size])
        length = next((n for n in IN_LENGTHS if n >= len(part)), len(part))
        yield part + part[-1:] * (length - len(part))


class Tx:
    """One transaction on one connection: thin helpers over the cursor."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, text: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql(text), tuple(params))

    def all(self, text: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.execute(text, params).fetchall()

    def one(self, text: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(text, params).fetchone()

    def scalar(self, text: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.one(text, params)
        return default if row is None or row[0] is None else row[0]

    def next_value(self, counter: str) -> int:
        """The next value of a counter; only inside a write transaction."""
        self.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (counter,))
        return int(self.scalar("SELECT value FROM counters WHERE name = ?", (counter,)))


class Database:
    """Per-thread connections to one SQLite file, and transactions on them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        if not self.path.exists():
            # Create the file 0600 before SQLite does; -wal/-shm inherit its mode.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        with self.write() as tx:
            self._create(tx)

    def _create(self, tx: Tx) -> None:
        for statement in SCHEMA:
            tx.execute(statement)
        version = tx.scalar("SELECT value FROM schema_info WHERE key = 'schema_version'")
        if version is None:
            tx.execute("INSERT INTO schema_info (key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
        elif int(version) > SCHEMA_VERSION:
            raise ImagefsError(f"{self.path} was written by a newer imagefs "
                               f"(schema {version}, this one knows {SCHEMA_VERSION})")
        for name in COUNTERS:
            if tx.one("SELECT value FROM counters WHERE name = ?", (name,)) is None:
                tx.execute("INSERT INTO counters (name, value) VALUES (?, 0)", (name,))

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; a forked child opens its own."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == os.getpid():
                return conn
            # Inherited across fork (e.g. a preloading gunicorn master): closing it
            # here could checkpoint or remove the WAL under the parent's feet, so
            # it is kept, unused, for the life of this process.
            _INHERITED.append(conn)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Every worker thread keeps its own connection and page cache; SQLite's
        # default of 2 MB each made up most of a loaded service's memory growth
        # (16 threads x 2 MB), while the hot pages live in the OS cache anyway.
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        local.conn = conn
        local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction: one consistent snapshot for several queries."""
        conn = self._conn()
        _reset(conn)
        conn.execute("BEGIN")
        try:
            yield Tx(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction: all or nothing, serialised with every other writer."""
        conn = self._conn()
        _reset(conn)
        self._begin_immediate(conn)
        try:
            yield Tx(conn)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _reset(conn)
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
                log.warning("the database %s is on a full disk", self.path)
                raise StorageFull("No space left on the service's disk") from exc
            raise
        except BaseException:
            _reset(conn)
            raise

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + LOCK_DEADLINE
        delay = 0.01
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    log.warning("database write lock not obtained in %.0f s", LOCK_DEADLINE)
                    raise Transient("the database is busy") from exc
                log.debug("database locked, retrying: %s", exc)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)


def _reset(conn: sqlite3.Connection) -> None:
    """Roll back whatever a failed COMMIT or an interrupted caller left open."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("rollback failed: %s", exc)
