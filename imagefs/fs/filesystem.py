"""The filesystem's semantics: one async method per FUSE operation, with no FUSE in sight.

``Filesystem`` maps the store onto a tree: containers at the top,
pseudo-directories (a name prefix up to ``/``, with or without an
``application/directory`` marker object) inside them, objects as files. It
takes and returns plain values (``Attr``, ``StatFs``, bytes, str names),
so tests drive it directly and ``fuse/ops.py`` is thin glue.

Where things live:

- ``tree.Tree``: inode numbers, lookup counts, cached attributes and listings;
- ``files.OpenFile``: the bytes of a file open for writing (spill file,
  blocks, hashing while writing);
- ``upload``: storing an ``OpenFile`` with the hashmap protocol;
- ``readahead.Reader``: reads of stored objects;
- ``registry.Registry``: images: what a sidecar ``X.meta`` shows and what
  writing it registers, ``user.image.*``, the catalog ``.images/`` and the
  old versions in ``.versions/`` (the filesystem routes, the registry decides);
- ``blocking.Workers``: every blocking call (HTTP, hashing, disk) runs
  there, in threads.

Rules that shape the code:

- Upload completes in ``flush`` (the ``close()`` of a writer), so close
  reports quota and network errors; only when data changed, and ``release``
  of a dirty file that no flush tried uploads too (mountpoint-s3's rule).
  ``dd``/``fork`` duplicate descriptors, so one file may be flushed several
  times: each flush uploads what changed since the last.
- A file created and removed before its first close never reaches the
  service; a file that exists at close is on the service when close returns.
- Own changes are visible at once: every change updates the cached
  attributes and listings. Other clients' changes show within the cache
  timeout, which is also what the kernel is told (never pyfuse3's 300 s).
- A file unlinked (or renamed over) while open stays readable and writable
  through its open handles and is never uploaded again.

Concurrency: all state lives on the trio thread; a method may be suspended
at any ``await`` while another handler runs. Between awaits the tree and
the handles are consistent; across an await a method re-reads what it needs
(a node may have been opened, renamed or unlinked meanwhile). Uploads of
one file are serialised (``OpenFile.committing``), and rename/unlink wait
for a running upload of what they touch.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import functools
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from imagefs import BLOCK_HASH, BLOCK_SIZE, errors
from imagefs.client.models import AccountInfo, ContainerInfo, ObjectInfo, Subdir
from imagefs.config import make_private_dir
from imagefs.fs import journal
from imagefs.fs.blocking import Workers
from imagefs.fs.catalog import VersionEntry
from imagefs.fs.files import BufferPool, OpenFile, Source
from imagefs.fs.readahead import Reader
from imagefs.fs.registry import Registry, SidecarView
from imagefs.fs.tree import (
    MTIME_KEY,
    Attr,
    Entry,
    Kind,
    Listing,
    Node,
    Tree,
    format_mtime,
    is_below,
    join,
    object_mtime_ns,
    parent_of,
    split,
)
from imagefs.fs.upload import Progress, upload
from imagefs.image import metafile, sidecar
from imagefs.image import xattrs as X
from imagefs.protocol.names import check_container_name, check_object_name

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
STATUS_XATTR = "user.imagefs.status"
PENDING_XATTR = "user.imagefs.pending"
#: A file manager's trash at the top level would become a container: refused, so
#: the file manager falls back to deleting (behaviour.md §4).
TRASH = re.compile(r"\.Trash(-[0-9]+)?")
#: Reported free space when the account has no quota (statfs must never say 0).
UNLIMITED = 1 << 50
#: Parallel HEADs of a listing's files whose metadata the listing did not carry.
META_FETCHES = 8
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class StatFs:
    block_size: int
    fragment_size: int
    blocks: int
    free: int  # in fragments
    files: int
    free_files: int
    name_max: int = 255


class _Exists:
    """A directory entry whose object exists, attributes unknown (a HEAD says them)."""

    def __repr__(self) -> str:
        return "EXISTS"


#: The registry stores sidecars straight to the store, and a sidecar that no object
#: holds is listed because a registration shows it: either way the listing knows the
#: name, not the attributes.
EXISTS = _Exists()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class Place(enum.Enum):
    """The mount's own entries, which no object holds (behaviour.md §5)."""

    IMAGES = "images"  # the catalog directory .images at the top
    CATALOG = "catalog"  # .images/ID.meta
    VERSIONS = "versions"  # DIR/.versions in every directory of a container
    VERSION = "version"  # DIR/.versions/NAME@VERSION


def place_of(path: str) -> Place | None:
    """Which of the mount's own entries ``path`` is, if any. The names are reserved
    (never stored), so the path alone decides."""
    if sidecar.IMAGES_DIR not in path and sidecar.VERSIONS_DIR not in path:
        return None
    parts = path.split("/")
    if parts[0] == sidecar.IMAGES_DIR:
        return Place.IMAGES if len(parts) == 1 else Place.CATALOG
    if sidecar.VERSIONS_DIR in parts[1:]:
        return Place.VERSIONS if parts[-1] == sidecar.VERSIONS_DIR else Place.VERSION
    return None


@dataclass
class Handle:
    """One open file descriptor family (what the kernel calls a file handle)."""

    node: Node
    writable: bool
    source: Source | None = None  # read-only: the version seen at open
    reader: Reader | None = None
    content: bytes | None = None  # read-only: a sidecar or catalog entry as seen at open
    direct_io: bool = False  # content that changes without a write through the mount
    created: bool = False  # made the file (its close stores it, even if read-only)


@dataclass
class DirHandle:
    node: Node
    entries: list[tuple[str, Entry]]
    expires: float
    batch: object = None
    #: Sidecars, catalog and version entries: what stat shows instead of the object's
    #: attributes (size, mtime in ns).
    shown: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


class MetaBatch:
    """HEADs, in parallel and only once asked for, of the files of one listing that
    came without metadata (a real deployment's listings omit the stored mtime).

    The first ``getattr`` of one of them starts the batch; ``ls -l`` then finds
    the others' attributes fetched or in flight instead of one HEAD after the
    other.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.events = {p: trio.Event() for p in paths}
        self.results: dict[str, ObjectInfo | None] = {}
        self.started = False

    async def get(self, fs: Filesystem, path: str) -> ObjectInfo | None:
        event = self.events.get(path)
        if event is None:
            return None
        if not self.started:
            self.started = True
            fs._spawn(self._run, fs)
        await event.wait()
        return self.results.get(path)

    async def _run(self, fs: Filesystem) -> None:
        queue = iter(self.paths)

        async def worker() -> None:
            for path in queue:
                container, key = split(path)
                info = None
                try:
                    info = await fs.workers.http(fs.pithos.head, container, key)
                except Exception as exc:  # the getattr that waits does its own HEAD
                    log.debug("HEAD %s failed: %s", path, exc)
                finally:
                    self.results[path] = info
                    self.events[path].set()
                node = fs.tree.at(path)
                if info is not None and node is not None and node.kind is Kind.FILE \
                        and not fs._local(node) and not info.is_directory:
                    node.remember(info, fs._expiry())
                    node.batch = None

        async with trio.open_nursery() as nursery:
            for _ in range(META_FETCHES):
                nursery.start_soon(worker)


def _write_only(flags: int) -> bool:
    """An O_WRONLY descriptor (``cp``'s target) cannot be mapped nor read, so the kernel
    may pass its writes straight through: filling page cache that nobody reads costs
    more than the copy itself on this machine (perf: 2.7 s of a 1 GiB ``cp`` in
    ``copy_folio_from_iter_atomic``)."""
    return flags & os.O_ACCMODE == os.O_WRONLY


class Filesystem:
    """See the module docstring. Construct anywhere, ``start`` inside trio."""

    def __init__(self, conn, *, cache_dir: Path, cache_timeout: float = 2.0,
                 http_threads: int = 8, upload_parallel: int = 4, buffers: int = 16) -> None:
        self.conn = conn
        self.pithos = conn.pithos
        self.cache_dir = Path(cache_dir)
        self.spill_dir = self.cache_dir / "spill"
        self.cache_timeout = float(cache_timeout)
        self.http_threads = http_threads
        self.upload_parallel = upload_parallel
        self.buffers = buffers
        self.tree = Tree()
        self.workers: Workers | None = None  # type: ignore[assignment]
        self.registry: Registry | None = None  # type: ignore[assignment]
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._fh = itertools.count(1)
        self._spill_names = itertools.count(1)
        self._spill_tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._open_nodes: set[Node] = set()  # nodes with an OpenFile
        self._pools: dict[int, BufferPool] = {}
        self._geometry: dict[str, tuple[int, str]] = {}
        self._account: tuple[AccountInfo, float] | None = None
        self._commits = 0
        self._commits_idle = None
        self._errors = 0
        self._nursery: trio.Nursery | None = None
        self._background: trio.CancelScope | None = None
        self._owner: journal.OwnerLock | None = None  # held from start to close
        self.journal: journal.Journal | None = None
        self._closed = False
        #: Called with (parent inode, name) when an entry the kernel may cache changed
        #: behind its back; ``fuse.ops`` sets it to pyfuse3.invalidate_entry_async.
        self.invalidate_entry: Callable[[int, str], None] | None = None
        #: Called with an inode whose kernel page cache nobody will read (its last reader
        #: closed; every open starts without it); ``fuse.ops`` drops it in a thread.
        self.drop_pages: Callable[[int], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the limiters and the background nursery (inside trio); take this mount's
        lock, then clean up after mounts that ended (spill files) or crashed (intents,
        ``fs.journal``)."""
        self.workers = Workers(http=self.http_threads)
        self._owner = journal.OwnerLock.acquire(self.cache_dir, self._spill_tag)
        self.journal = journal.Journal(self.cache_dir, self._spill_tag,
                                       self.conn.account).open()
        self.registry = Registry(self.conn, self.workers, cache_timeout=self.cache_timeout,
                                 journal=self.journal)
        self._commits_idle = trio.Event()
        self._commits_idle.set()
        make_private_dir(self.spill_dir)
        with self.journal.ended_mounts() as ended:
            self._remove_stale_spill(ended)
            try:
                await self.journal.recover(ended, self.conn, self.workers)
            except Exception:  # never keep the mount from coming up
                log.exception("recovering interrupted image changes failed")
        ready = trio.Event()

        async def background() -> None:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._background = nursery.cancel_scope
                    ready.set()
                    await trio.sleep_forever()
            except Exception:  # never take the trio run down
                log.exception("background tasks failed")

        trio.lowlevel.spawn_system_task(background)
        await ready.wait()

    async def close(self) -> None:
        """Upload what writers left dirty, wait for uploads, remove spill files."""
        if self._closed:
            return
        self._closed = True
        for node in list(self._open_nodes):
            of = node.openfile
            if of is not None and of.dirty and not of.unlinked and of.attempted_gen != of.gen:
                try:
                    await self._commit(node)
                except Exception as exc:
                    log.warning("/%s: not stored at shutdown: %s", node.path, exc)
        while self._commits:
            await self._commits_idle.wait()
        for node in list(self._open_nodes):
            if node.openfile is not None:
                await self._close_openfile(node, node.openfile)
        for handle in self.handles.values():
            if handle.reader is not None:
                handle.reader.close()
        if self._background is not None:
            self._background.cancel()
        if self._owner is not None:  # an intent left (a failed restore) keeps the lock file
            self._owner.release(remove=self.journal is not None
                                and self.journal.nothing_left(self._spill_tag))
            self._owner = None

    def _remove_stale_spill(self, ended: list[journal.OwnerLock]) -> None:
        """Spill files of mounts that ended (``ended``: their locks, claimed) are of no
        use now; those of a mount that runs, even on another mount point, stay."""
        tags = {lock.tag for lock in ended}
        for path in self.spill_dir.glob("*.spill"):
            if journal.tag_of(path.name) in tags:
                log.info("removing %s, left by a mount that ended", path)
                path.unlink(missing_ok=True)

    def _spawn(self, fn, *args) -> None:
        """Run ``fn`` in the background; its failure is logged, never raised."""
        if self._nursery is None:
            raise RuntimeError("Filesystem.start() was not called")
        self._nursery.start_soon(self._guard, fn, *args)

    async def _guard(self, fn, *args) -> None:
        try:
            await fn(*args)
        except Exception:
            log.exception("background task %s failed", getattr(fn, "__name__", fn))

    def status(self) -> dict:
        """Files being written or uploaded (JSON-able), for ``imagefs status``."""
        uploads = []
        for node in self._open_nodes:
            of = node.openfile
            if of is None or of.unlinked:
                continue
            if of.upload is not None:
                uploads.append(of.upload.as_dict())
            elif of.dirty:
                hashed = of.hashed_bytes()
                since = of.changed_at or time.time()
                uploads.append({"path": "/" + node.path, "state": "writing",
                                "hashed": hashed, "sent": of.sender.sent, "total": of.size,
                                "rate": round(hashed / max(time.time() - since, 1e-6)),
                                "started": since})
        uploads.sort(key=lambda u: u["path"])
        return {"uploads": uploads, "pending": self.pending_uploads(), "errors": self._errors,
                "open_files": len(self.handles)}

    def pending_uploads(self) -> int:
        return self._commits

    # -- helpers ------------------------------------------------------------------------

    def _expiry(self) -> float:
        return self.tree.clock() + self.cache_timeout

    def _local_at(self, path: str) -> bool:
        node = self.tree.at(path)
        return node is not None and self._local(node)

    def _local(self, node: Node) -> bool:
        """True if the mount, not the service, knows this file's content best."""
        of = node.openfile
        return node.kind is Kind.FILE and of is not None and (
            of.dirty or not node.stored or of.has_local() or of.committing is not None)

    async def _list(self, container: str, prefix: str, delimiter: str | None,
                    limit: int | None = None) -> list:
        def work() -> list:
            return list(self.pithos.list_objects(container, prefix=prefix, delimiter=delimiter,
                                                 limit=limit))
        return await self.workers.http(work)

    async def _block_params(self, container: str) -> tuple[int, str]:
        params = self._geometry.get(container)
        if params is None:
            params = await self.workers.http(self.pithos.block_params, container)
            self._geometry[container] = params
        return params

    def _pool(self, block_size: int) -> BufferPool:
        pool = self._pools.get(block_size)
        if pool is None:
            pool = self._pools[block_size] = BufferPool(block_size, self.buffers)
        return pool

    async def _container_info(self, node: Node, *, fresh: bool = False) -> ContainerInfo:
        if not fresh and isinstance(node.info, ContainerInfo) and \
                node.fresh(self.tree.clock()):
            return node.info
        info = await self.workers.http(self.pithos.container_info, node.container)
        self._geometry[node.container] = (info.block_size, info.block_hash)
        node.remember(info, self._expiry())
        return info

    async def _versioning(self, container: str) -> str:
        """The container's versioning policy, asked now (it decides whether bytes of
        open files must be saved before a delete)."""
        node = self.tree.at(container)
        if node is not None and node.kind is Kind.CONTAINER:
            return (await self._container_info(node, fresh=True)).versioning
        info = await self.workers.http(self.pithos.container_info, container)
        return info.versioning

    def _handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "no such file handle")
        return handle

    # -- attributes ---------------------------------------------------------------------

    def _attr(self, node: Node) -> Attr:
        attr = self._base_attr(node)
        if node.kind is Kind.FILE and (sidecar.is_sidecar(node.name) or
                                       place_of(node.path) is not None):
            attr.attr_timeout = 0  # shown from a registration that changes without a write
        return attr

    def _base_attr(self, node: Node) -> Attr:
        if node.kind is Kind.FILE:
            of = node.openfile
            if of is not None and self._local(node):
                return Attr(node.ino, Kind.FILE, of.size, of.mtime_ns)
            info = node.info
            if isinstance(info, ObjectInfo):
                return Attr(node.ino, Kind.FILE, info.size, object_mtime_ns(info),
                            0 if info.meta is None else None)
            return Attr(node.ino, Kind.FILE, 0, node.mtime_ns)
        info = node.info
        if node.kind is Kind.CONTAINER and isinstance(info, ContainerInfo) and info.mtime:
            return Attr(node.ino, node.kind, 0, int(info.mtime * 1e9))
        if node.kind is Kind.DIR and isinstance(info, ObjectInfo):
            return Attr(node.ino, node.kind, 0, object_mtime_ns(info))
        return Attr(node.ino, node.kind, 0, node.mtime_ns)

    def _bind(self, path: str, entry: Entry, expires: float) -> Node:
        """The node of ``path`` for what a listing or a HEAD said about it."""
        node = self.tree.at(path)
        if node is not None and self._local(node):
            return node
        node = self.tree.bind(path, entry.kind)
        if expires >= node.expires or node.info is None:
            node.remember(None if entry.info is EXISTS else entry.info, expires)
            if entry.kind is Kind.DIR:
                node.marker = entry.marker
            if entry.kind is Kind.FILE:
                node.stored = True
        return node

    async def _stat(self, path: str) -> Entry:
        """Ask the service what ``path`` is (NotFound if nothing)."""
        container, key = split(path)
        if not key:
            info = await self.workers.http(self.pithos.container_info, container)
            self._geometry[container] = (info.block_size, info.block_hash)
            return Entry(Kind.CONTAINER, info)
        try:
            info = await self.workers.http(self.pithos.head, container, key)
        except errors.NotFound:
            pass
        else:
            if info.is_directory:
                return Entry(Kind.DIR, info, marker=True)
            return Entry(Kind.FILE, info)
        if await self._list(container, key + "/", None, 1):
            return Entry(Kind.DIR)
        raise errors.NotFound(f"/{path}: no such file or directory")

    def _check_name(self, parent: Node, name: str) -> None:
        if not name or "/" in name or "\0" in name:
            raise errors.InvalidInput(f"invalid name {name!r}")

    async def _child(self, parent: Node, name: str) -> Node:
        """The node named ``name`` in directory ``parent``; NotFound if none.

        Besides stored objects: the mount's own ``.images`` and ``.versions``
        (never listed, always reachable) and their entries, and a sidecar
        ``X.meta`` that no object holds but a registration (or a refused text)
        shows.
        """
        if not parent.kind.is_dir:
            raise errors.NotADirectory(f"/{parent.path} is not a directory")
        if name not in (".", ".."):
            place = place_of(parent.path)
            if place is not None:
                return await self._own_child(parent, place, name)
            if (name == sidecar.IMAGES_DIR and parent.kind is Kind.ROOT) or \
                    (name == sidecar.VERSIONS_DIR and parent.kind in (Kind.CONTAINER, Kind.DIR)):
                return self._own_dir(join(parent.path, name))
        try:
            return await self._stored_child(parent, name)
        except errors.NotFound:
            if parent.kind is Kind.ROOT or not sidecar.is_sidecar(name):
                raise
            node = await self._shown_sidecar(join(parent.path, name))
            if node is None:
                raise
            return node

    async def _stored_child(self, parent: Node, name: str) -> Node:
        if name == ".":
            return parent
        if name == "..":
            return self.tree.at(parent_of(parent.path)) or self.tree.root
        self._check_name(parent, name)
        path = join(parent.path, name)
        if parent.kind is not Kind.ROOT:
            check_object_name(split(path)[1])  # ENAMETOOLONG, whatever a listing says
        if sidecar.is_reserved(name) or (parent.kind is Kind.ROOT and TRASH.fullmatch(name)):
            raise errors.NotFound(f"/{path}: reserved name")
        now = self.tree.clock()
        node = self.tree.at(path)
        if node is not None and (self._local(node) or node.fresh(now)):
            return node
        listing = self.tree.listing(parent.path)
        if listing is not None:
            entry = listing.entries.get(name)
            if entry is None:
                raise errors.NotFound(f"/{path}: no such file or directory")
            node = self._bind(path, entry, listing.expires)
            if entry.kind is Kind.FILE and entry.info is not None and \
                    getattr(entry.info, "meta", {}) is None:
                node.batch = listing.batch
            return node
        if self.tree.missing(path):
            raise errors.NotFound(f"/{path}: no such file or directory")
        try:
            entry = await self._stat(path)
        except errors.NotFound:
            if self.tree.at(path) is None:
                self.tree.remember_missing(path, self._expiry())
            raise
        return self._bind(path, entry, self._expiry())

    async def _refresh_file(self, node: Node) -> None:
        """Bring a file's cached attributes up to date (a HEAD, or its listing's batch)."""
        info = None
        if node.batch is not None and isinstance(node.info, ObjectInfo) and \
                node.info.meta is None:
            batch, node.batch = node.batch, None
            info = await batch.get(self, node.path)
        if info is None:
            try:
                info = await self.workers.http(self.pithos.head, node.container, node.key)
            except errors.NotFound:
                if node.handles > 0 or self._local(node):
                    return  # open descriptors still see the file
                self.tree.detach(node)
                raise
        if self._local(node) or node.unlinked:
            return
        if info.is_directory:
            self.tree.detach(node)  # became a directory: the kernel looks it up anew
            raise errors.NotFound(f"/{node.path} is no longer a file")
        node.remember(info, self._expiry())

    # -- images: sidecars, .images/, .versions/ ---------------------------------------
    #
    # A sidecar X.meta shows the registration of X (or a refused text) when there
    # is one, else the stored object X.meta is an ordinary file; either way,
    # closing it after a write hands the text to the registry, which registers
    # and stores the metafile itself. .images and .versions are the mount's own:
    # no object holds them, their paths say what they are (``place_of``).

    @staticmethod
    def _is_sidecar(node: Node) -> bool:
        return node.kind is Kind.FILE and bool(node.key) and sidecar.is_sidecar(node.name) \
            and place_of(node.path) is None

    def _is_view_file(self, node: Node) -> bool:
        """A file whose text the registry keeps: a sidecar or a catalog entry."""
        return node.kind is Kind.FILE and (
            self._is_sidecar(node) or place_of(node.path) is Place.CATALOG)

    def _image_info(self, sidecar_path: str) -> ObjectInfo | None:
        """What is cached about the image file of a sidecar (its uuid finds the image)."""
        path = sidecar_path[: -len(sidecar.SUFFIX)]
        node = self.tree.at(path)
        info = node.info if node is not None and node.kind is Kind.FILE else None
        if not isinstance(info, ObjectInfo):
            listing = self.tree.listing(parent_of(path))
            entry = listing.entries.get(path.rpartition("/")[2]) if listing else None
            info = entry.info if entry is not None else None
        return info if isinstance(info, ObjectInfo) and not info.is_directory else None

    async def _sidecar_view(self, node: Node) -> SidecarView | None:
        return await self.registry.sidecar_view(node.container, node.key,
                                                self._image_info(node.path))

    async def _shown_sidecar(self, path: str) -> Node | None:
        """The node of a sidecar that no object holds, if a registration shows it."""
        container, key = split(path)
        view = await self.registry.sidecar_view(container, key, self._image_info(path))
        node = self.tree.at(path)
        if view is None:
            if node is not None and node.handles == 0 and not self._local(node):
                self.tree.detach(node)
            return None
        if node is None or node.kind is not Kind.FILE:
            node = self.tree.bind(path, Kind.FILE)
        if not self._local(node):
            node.stored = True
            node.remember(None, self._expiry())
        return node

    def _own_dir(self, path: str) -> Node:
        node = self.tree.at(path)
        if node is None or node.kind is not Kind.DIR:
            node = self.tree.bind(path, Kind.DIR)
        return node

    def _own_file(self, path: str) -> Node:
        node = self.tree.at(path)
        if node is None or node.kind is not Kind.FILE:
            node = self.tree.bind(path, Kind.FILE)
        node.stored = True
        return node

    @staticmethod
    def _versions_of(node: Node) -> tuple[str, str]:
        """(container, directory) whose versions ``node`` (a .versions dir or entry) shows."""
        key = node.key
        if place_of(node.path) is Place.VERSION:
            key = parent_of(key)
        return node.container, parent_of(key)

    async def _own_child(self, parent: Node, place: Place, name: str) -> Node:
        path = join(parent.path, name)
        self._check_name(parent, name)
        if place is Place.IMAGES:
            await self.registry.catalog_view(name)  # NotFound unless the user sees the image
            return self._own_file(path)
        container, directory = self._versions_of(parent)
        entry = await self.registry.version_lookup(container, directory, name)
        node = self._own_file(path)
        node.remember(entry, self._expiry())
        return node

    def _refuse_own(self, path: str, what: str) -> None:
        """Raise if ``path`` is one of the mount's own entries (or inside one)."""
        place = place_of(path)
        if place in (Place.IMAGES, Place.CATALOG):
            raise errors.Forbidden(f"/{path}: {what}: .images lists the images you can see; "
                                   "unregister with rm, change with setfattr or by writing "
                                   "the entry")
        if place is not None:
            raise errors.ReadOnly(f"/{path}: {what}: earlier versions cannot be changed")

    async def _show(self, node: Node) -> Attr | None:
        """Attributes of a sidecar (from the registration it shows) or of the mount's
        own entries; for any other node what is cached (``_attr``). None: a sidecar
        that shows a stored object, whose attributes need the usual refresh."""
        place = place_of(node.path)
        if node.kind.is_dir or self._local(node):
            return self._attr(node)
        if place is None and not self._is_sidecar(node):
            return self._attr(node) if isinstance(node.info, ObjectInfo) else None
        if place is Place.VERSION:
            entry = node.info
            if not isinstance(entry, VersionEntry):
                container, directory = self._versions_of(node)
                entry = await self.registry.version_lookup(container, directory, node.name)
                node.remember(entry, self._expiry())
            return Attr(node.ino, Kind.FILE, entry.size, _ns(entry.mtime))
        if place is Place.CATALOG:
            try:
                view = await self.registry.catalog_view(node.name)
            except errors.NotFound:
                if node.handles == 0:
                    self.tree.detach(node)
                raise
        else:
            view = await self._sidecar_view(node)
            if view is None:
                if node.info is None or not node.fresh(self.tree.clock()):
                    return None  # the stored object: the caller refreshes it
                return self._attr(node)
        return Attr(node.ino, Kind.FILE, len(view.content), _ns(view.mtime), 0)

    def _invalidate(self, path: str) -> None:
        """Tell the kernel to forget its entry for ``path`` (it changed behind its back)."""
        parent = self.tree.at(parent_of(path))
        if parent is not None and self.invalidate_entry is not None:
            self.invalidate_entry(parent.ino, path.rpartition("/")[2])

    def _sidecar_changed(self, path: str, *, kernel: bool = False) -> None:
        """The registration shown at sidecar ``path`` may have appeared, changed or gone."""
        node = self.tree.at(path)
        if node is not None and not self._local(node):
            node.expires = 0.0
        self.tree.forget_missing(path)
        if kernel:
            self._invalidate(path)

    # -- lookups and attributes --------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        """Resolve ``name``; counts one kernel reference."""
        node = await self._child(self.tree.get(parent_ino), name)
        node.lookups += 1  # every successful lookup reply counts, "." and ".." too
        try:
            attr = await self._show(node)
            if attr is None:
                attr = await self.getattr(node.ino)
        except BaseException:
            node.lookups -= 1
            self.tree.drop_if_unused(node)
            raise
        return attr

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            self.tree.forget(ino, count)

    async def getattr(self, ino: int) -> Attr:
        node = self.tree.get(ino)
        if self._is_view_file(node) or place_of(node.path) is not None:
            shown = await self._show(node)
            if shown is not None:
                return shown
        if node.kind is Kind.FILE and not node.unlinked and not self._local(node):
            info = node.info
            stale = not node.fresh(self.tree.clock())
            if stale or not isinstance(info, ObjectInfo) or info.meta is None:
                await self._refresh_file(node)
        return self._attr(node)

    async def setattr(self, ino: int, *, size: int | None = None,
                      mtime_ns: int | None = None, fh: int | None = None) -> Attr:
        """truncate and utimens; mode and owner are accepted and ignored (they cannot be
        stored), so ``cp -p`` and ``shutil.copy2`` succeed quietly. ``fh``: the handle of
        an ``ftruncate`` (None for the path-based ``truncate``)."""
        node = self.tree.get(ino)
        if (size is not None or mtime_ns is not None) and \
                place_of(node.path) in (Place.VERSION, Place.VERSIONS):
            self._refuse_own(node.path, "cannot be changed")
        if size is not None:
            if node.kind.is_dir:
                raise errors.IsADirectory(f"/{node.path} is a directory")
            await self._truncate(node, size, mtime_ns, by_path=fh is None)
        if mtime_ns is not None and node.kind is Kind.FILE:
            await self._set_mtime(node, mtime_ns)
        return await self._show(node) or self._attr(node)

    async def _truncate(self, node: Node, size: int, mtime_ns: int | None, *,
                        by_path: bool = True) -> None:
        of = node.openfile
        if of is not None:
            await of.truncate(size)
            # truncate(2) of a file only readers have open is stored at once, as for a
            # closed file; else the writer's close (or an ftruncate's) stores it.
            if by_path and not any(h.node is node and h.writable
                                   for h in self.handles.values()):
                await self._commit(node)
            return
        if isinstance(node.info, ObjectInfo) and node.info.size == size and \
                not self._is_view_file(node):
            return
        # truncate(2) of a file nobody has open: store the result at once.
        of = await self._writable_any(node)
        try:
            await of.truncate(size)
            if mtime_ns is not None:
                of.set_mtime(mtime_ns)
            await self._commit(node)
        finally:
            await of.wait_commit()  # a release may be uploading it: never close under it
            if node.handles == 0 and node.openfile is of:
                await self._close_openfile(node, of)

    async def _set_mtime(self, node: Node, mtime_ns: int) -> None:
        of = node.openfile
        if of is not None and (of.dirty or not node.stored):
            of.set_mtime(mtime_ns)  # stored by the upload at close
            return
        if self._is_view_file(node):
            # A registration shows its own time (cp -p of a sidecar succeeds quietly).
            if place_of(node.path) is Place.CATALOG or await self._sidecar_view(node):
                return
        if node.unlinked or not node.stored:
            return
        value = format_mtime(mtime_ns)
        await self.workers.http(self.pithos.update_meta, node.container, node.key,
                                {MTIME_KEY: value})
        info = node.info
        if isinstance(info, ObjectInfo):
            meta = dict(info.meta) if info.meta is not None else None
            if meta is not None:
                meta[MTIME_KEY] = value
            self._changed_info(node, dataclasses.replace(info, meta=meta))
            if meta is None:
                node.expires = 0.0  # the next getattr fetches the stored value
        if of is not None:
            of.set_mtime(mtime_ns)
            if of.meta is not None:
                of.meta[MTIME_KEY] = value

    def _changed_info(self, node: Node, info: ObjectInfo) -> None:
        """Our own change of a stored file's metadata: the node and its parent's cached
        listing both say it (a readdir would otherwise bring the old one back)."""
        node.remember(info, node.expires)
        self.tree.listed(node.path, Entry(Kind.FILE, info))

    # -- directories --------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        node = self.tree.get(ino)
        if not node.kind.is_dir:
            raise errors.NotADirectory(f"/{node.path} is not a directory")
        place = place_of(node.path)
        shown: dict[str, tuple[int, int]] = {}
        if place is not None:
            entries = await self._own_entries(node, place, shown)
            expires, batch = self._expiry(), None
        else:
            listing = await self._listing(node)
            entries = dict(listing.entries)
            expires, batch = listing.expires, listing.batch
            for other in self._open_nodes:
                if not other.unlinked and parent_of(other.path) == node.path and \
                        other.path and other.name not in entries:
                    entries[other.name] = Entry(Kind.FILE)
            if node.kind is not Kind.ROOT:
                await self._add_sidecars(node, entries, shown)
        fh = next(self._fh)
        self.dirs[fh] = DirHandle(node, list(entries.items()), expires, batch, shown)
        node.handles += 1
        return fh

    async def _add_sidecars(self, node: Node, entries: dict[str, Entry],
                            shown: dict[str, tuple[int, int]]) -> None:
        """A registered file always shows its sidecar, and every sidecar shows the
        registration's size and time. One image listing per cache period, shared."""
        container = node.container
        prefix = node.key + "/" if node.key else ""
        await self.registry.refresh()
        for name, entry in list(entries.items()):
            side = name + sidecar.SUFFIX
            if entry.kind is Kind.FILE and side not in entries:
                info = entry.info if isinstance(entry.info, ObjectInfo) else None
                if await self.registry.sidecar_visible(container, prefix + name, info):
                    entries[side] = Entry(Kind.FILE, EXISTS)
        for key in self.registry.kept_sidecars(container, node.key):
            entries.setdefault(key.rpartition("/")[2], Entry(Kind.FILE, EXISTS))
        for name, entry in entries.items():
            if entry.kind is Kind.FILE and sidecar.is_sidecar(name):
                path = join(node.path, name)
                view = await self.registry.sidecar_view(container, prefix + name,
                                                        self._image_info(path))
                if view is not None:
                    shown[name] = (len(view.content), _ns(view.mtime))

    async def _own_entries(self, node: Node, place: Place,
                           shown: dict[str, tuple[int, int]]) -> dict[str, Entry]:
        """The listing of .images/ or a .versions/ directory."""
        entries: dict[str, Entry] = {}
        if place is Place.IMAGES:
            for name, _image in await self.registry.catalog():
                view = await self.registry.catalog_view(name)
                entries[name] = Entry(Kind.FILE, EXISTS)
                shown[name] = (len(view.content), _ns(view.mtime))
        else:
            container, directory = self._versions_of(node)
            for version in await self.registry.versions(container, directory):
                entries[version.entry] = Entry(Kind.FILE, version)
                shown[version.entry] = (version.size, _ns(version.mtime))
        return entries

    async def _listing(self, node: Node) -> Listing:
        listing = self.tree.listing(node.path)
        if listing is not None:
            return listing
        if node.kind is Kind.ROOT:
            containers = await self.workers.http(self.pithos.list_containers)
            entries = {c.name: Entry(Kind.CONTAINER, c) for c in containers
                       if not sidecar.is_reserved(c.name)}
            listing = Listing(entries, self._expiry())
        else:
            prefix = node.key + "/" if node.key else ""
            items = await self._list(node.container, prefix, "/")
            listing = Listing(self._entries(items, prefix), self._expiry())
            unknown = [join(node.path, name) for name, e in listing.entries.items()
                       if e.kind is Kind.FILE and isinstance(e.info, ObjectInfo)
                       and e.info.meta is None]
            if unknown:
                listing.batch = MetaBatch(unknown)
        if self.tree.at(node.path) is node:
            node.listing = listing
        return listing

    @staticmethod
    def _entries(items: list, prefix: str) -> dict[str, Entry]:
        """Directory entries of a delimited listing. An object and a pseudo-directory of
        one name show as the object (what a HEAD finds first); reserved names hide."""
        entries: dict[str, Entry] = {}
        for item in items:
            rest = item.name[len(prefix):]
            if isinstance(item, Subdir):
                kind, info, marker, name = Kind.DIR, None, False, rest
            elif rest.endswith("/"):  # an S3-style "dir/" marker
                kind, info, marker, name = Kind.DIR, None, False, rest[:-1]
            elif item.is_directory:
                kind, info, marker, name = Kind.DIR, item, True, rest
            else:
                kind, info, marker, name = Kind.FILE, item, False, rest
            if not name or "/" in name or name in (".", "..") or sidecar.is_reserved(name):
                continue
            old = entries.get(name)
            if old is None or (old.kind is Kind.DIR and kind is Kind.FILE):
                entries[name] = Entry(kind, info, marker)
            elif old.kind is Kind.DIR and kind is Kind.DIR and marker:
                entries[name] = Entry(kind, info, marker)
        return entries

    async def readdir(self, fh: int, start: int,
                      reply: Callable[[str, Attr, int], bool]) -> None:
        """Entries from index ``start`` of the snapshot taken at opendir; ``reply`` returns
        False when the kernel's buffer is full (that entry is not counted)."""
        handle = self.dirs.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "no such directory handle")
        for index in range(start, len(handle.entries)):
            name, entry = handle.entries[index]
            path = join(handle.node.path, name)
            if entry.info is None and entry.kind is Kind.FILE:
                node = self.tree.at(path)  # a local file not in the listing
                if node is None:
                    continue
            elif entry.info is EXISTS or isinstance(entry.info, VersionEntry):
                node = self._own_file(path) if not self._local_at(path) else self.tree.at(path)
                if not self._local(node) and not isinstance(node.info, ObjectInfo):
                    node.remember(None if entry.info is EXISTS else entry.info, handle.expires)
            else:
                node = self._bind(path, entry, handle.expires)
                if entry.kind is Kind.FILE and isinstance(entry.info, ObjectInfo) and \
                        entry.info.meta is None and handle.batch is not None:
                    node.batch = handle.batch
            attr = self._attr(node)
            size_mtime = handle.shown.get(name)
            if size_mtime is not None and not self._local(node):
                attr = Attr(node.ino, Kind.FILE, size_mtime[0], size_mtime[1], 0)
            if not reply(name, attr, index + 1):
                self.tree.drop_if_unused(node)
                return
            node.lookups += 1

    async def releasedir(self, fh: int) -> None:
        handle = self.dirs.pop(fh, None)
        if handle is not None:
            handle.node.handles -= 1
            self.tree.drop_if_unused(handle.node)

    async def mkdir(self, parent_ino: int, name: str) -> Attr:
        parent = self.tree.get(parent_ino)
        if not parent.kind.is_dir:
            raise errors.NotADirectory(f"/{parent.path} is not a directory")
        self._check_name(parent, name)
        path = join(parent.path, name)
        self._refuse_own(path, "cannot create")
        if sidecar.is_reserved(name):
            raise errors.Forbidden(f"/{path}: the name is reserved by the mount")
        if parent.kind is Kind.ROOT:
            if TRASH.fullmatch(name):
                raise errors.Forbidden(f"/{path}: no trash container (delete instead)")
            check_container_name(name)
            if not await self.workers.http(self.pithos.create_container, name):
                raise errors.AlreadyExists(f"/{path} exists")
            node = self.tree.bind(path, Kind.CONTAINER)
            node.remember(ContainerInfo(name=name, mtime=time.time()), self._expiry())
            entry = Entry(Kind.CONTAINER, node.info)
        else:
            container, key = split(path)
            check_object_name(key)
            try:
                await self._child(parent, name)
            except errors.NotFound:
                pass
            else:
                raise errors.AlreadyExists(f"/{path} exists")
            await self.workers.http(self.pithos.make_directory, container, key)
            node = self.tree.bind(path, Kind.DIR)
            node.marker = True
            node.mtime_ns = time.time_ns()
            node.remember(None, self._expiry())
            entry = Entry(Kind.DIR, None, marker=True)
        self.tree.listed(path, entry)
        self.tree.forget_missing(path)
        node.lookups += 1
        return self._attr(node)

    def _local_children(self, node: Node) -> bool:
        return any(not n.unlinked and is_below(n.path, node.path) for n in self._open_nodes
                   if n.openfile is not None and not n.stored)

    async def _check_empty(self, node: Node) -> None:
        """ContainerNotEmpty (ENOTEMPTY) unless directory ``node`` holds nothing."""
        if self._local_children(node) or \
                self.registry.keeps_below(node.container, node.key):
            raise errors.ContainerNotEmpty(f"/{node.path}: directory not empty")
        if node.kind is Kind.DIR:
            marker = node.key + "/"
            items = await self._list(node.container, marker, None, 2)
            if any(item.name != marker for item in items):
                raise errors.ContainerNotEmpty(f"/{node.path}: directory not empty")

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self.tree.get(parent_ino)
        node = await self._child(parent, name)
        if not node.kind.is_dir:
            raise errors.NotADirectory(f"/{node.path} is not a directory")
        if node.kind is Kind.ROOT or name in (".", ".."):
            raise errors.InvalidInput("cannot remove . or ..")
        self._refuse_own(node.path, "cannot be removed")
        await self._check_empty(node)
        if node.kind is Kind.CONTAINER:
            try:
                await self.workers.http(self.pithos.delete_container, node.container)
            except errors.NotFound as exc:
                if not errors.after_lost_reply(exc):
                    raise
                log.info("/%s: deleted by an attempt whose answer was lost", node.path)
            self._geometry.pop(node.container, None)
        else:
            await self._delete_markers(node)
        self.tree.listed(node.path, None)
        self.tree.remember_missing(node.path, self._expiry())
        self.tree.detach(node)
        await self._keep_dir(parent)

    async def _delete_markers(self, node: Node) -> None:
        """Delete the marker objects of an empty directory ("d" and S3's "d/")."""
        names = [node.key] if node.marker else []
        items = await self._list(node.container, node.key + "/", None, 1)
        names += [item.name for item in items if item.name == node.key + "/"]
        for name in names:
            try:
                await self.workers.http(self.pithos.delete, node.container, name)
            except errors.NotFound:
                pass
        node.marker = False

    async def _keep_dir(self, parent: Node) -> None:
        """A pseudo-directory without a marker vanishes with its last object; POSIX
        says it stays (``rm -r`` removes the files, then the directory), so give it a
        marker when its last entry went."""
        if parent.kind is not Kind.DIR or parent.marker or parent.unlinked:
            return
        if self._local_children(parent):
            return
        if await self._list(parent.container, parent.key + "/", None, 1):
            return
        await self.workers.http(self.pithos.make_directory, parent.container, parent.key)
        parent.marker = True

    # -- files: create, open, read, write, close ---------------------------------------

    def _new_handle(self, node: Node, writable: bool) -> int:
        fh = next(self._fh)
        source = None
        if not writable and isinstance(node.info, ObjectInfo) and node.stored:
            source = Source(node.container, node.key, node.info.version or None,
                            node.info.size)
        self.handles[fh] = Handle(node, writable, source)
        node.handles += 1
        return fh

    def _openfile(self, node: Node, *, block_size: int, algorithm: str, source: Source | None,
                  meta: dict[str, str] | None, content_type: str, mtime_ns: int) -> OpenFile:
        of = OpenFile(workers=self.workers, pithos=self.pithos, spawn=self._spawn,
                      pool=self._pool(block_size), spill_dir=self.spill_dir,
                      spill_name=f"{self._spill_tag}-{next(self._spill_names)}.spill",
                      block_size=block_size, algorithm=algorithm, source=source, meta=meta,
                      content_type=content_type, mtime_ns=mtime_ns)
        # Blocks go out before close, except for texts the registry keeps (sidecars).
        of.target = lambda: None if self._is_view_file(node) else (node.container, node.key)
        node.openfile = of
        self._open_nodes.add(node)
        return of

    async def create(self, parent_ino: int, name: str, flags: int = os.O_WRONLY
                     ) -> tuple[int, Attr]:
        """Create and open a new, empty file; counts one kernel reference."""
        parent = self.tree.get(parent_ino)
        if not parent.kind.is_dir:
            raise errors.NotADirectory(f"/{parent.path} is not a directory")
        self._check_name(parent, name)
        path = join(parent.path, name)
        self._refuse_own(path, "cannot create")
        if parent.kind is Kind.ROOT:
            raise errors.NotPermitted(f"/{path}: only containers (directories) live at the top")
        if sidecar.is_reserved(name):
            raise errors.Forbidden(f"/{path}: the name is reserved by the mount")
        container, key = split(path)
        check_object_name(key)
        block_size, algorithm = await self._block_params(container)
        old = self.tree.at(path)
        stored = False
        if old is not None:
            stored = old.kind is Kind.FILE and old.stored and not old.unlinked
            if old.openfile is not None:
                old.openfile.unlinked = True
            self.tree.detach(old)
        node = self.tree.bind(path, Kind.FILE)
        node.stored = stored
        of = self._openfile(node, block_size=block_size, algorithm=algorithm, source=None,
                            meta={}, content_type=OCTET_STREAM, mtime_ns=time.time_ns())
        of.mark_new()
        fh = self._new_handle(node, (flags & os.O_ACCMODE) != os.O_RDONLY)
        self.handles[fh].direct_io = self._is_view_file(node) or _write_only(flags)
        self.handles[fh].created = True
        node.lookups += 1
        self.tree.listed(path, Entry(Kind.FILE))
        self.tree.forget_missing(path)
        return fh, self._attr(node)

    def direct_io(self, fh: int) -> bool:
        """Whether the kernel must bypass its page cache for this handle: the text of a
        sidecar or catalog entry changes without a write through the mount."""
        handle = self.handles.get(fh)
        return handle is not None and handle.direct_io

    async def _writable_any(self, node: Node, *, truncate: bool = False) -> OpenFile:
        """The OpenFile of any writable file: a sidecar or catalog entry starts from the
        text it shows (empty if ``truncate``), any other file from its stored object."""
        place = place_of(node.path)
        if place is not None and place is not Place.CATALOG:
            self._refuse_own(node.path, "cannot be written")
        if node.openfile is not None or not self._is_view_file(node):
            return await self._writable(node)
        if place is Place.CATALOG:
            image = await self.registry.catalog_entry(node.name)
            if not self.registry.is_own(image):
                raise errors.Forbidden(f"/{node.path}: the image belongs to {image.owner}; "
                                       "only its owner may change it")
            view = await self.registry.catalog_view(node.name)
        else:
            view = await self._sidecar_view(node)
            if view is None:
                return await self._writable(node)  # an ordinary stored X.meta
            if not self.registry.is_own(view.image):
                raise errors.Forbidden(f"/{node.path}: the image belongs to "
                                       f"{view.image.owner}; only its owner may change it")
        if node.openfile is not None:
            return node.openfile
        if place is Place.CATALOG:
            block_size, algorithm = BLOCK_SIZE, BLOCK_HASH
        else:
            block_size, algorithm = await self._block_params(node.container)
            if node.openfile is not None:
                return node.openfile
        of = self._openfile(node, block_size=block_size, algorithm=algorithm, source=None,
                            meta={}, content_type=OCTET_STREAM, mtime_ns=_ns(view.mtime))
        if view.content and not truncate:
            await of.write(0, view.content)
            of.committed_gen = of.gen  # what is shown is saved: nothing to register yet
            of.changed_at = None
        return of

    async def _writable(self, node: Node) -> OpenFile:
        """The OpenFile of a stored file, created on first need."""
        if node.openfile is not None:
            return node.openfile
        info = node.info
        if not isinstance(info, ObjectInfo) or info.meta is None:
            await self._refresh_file(node)
            info = node.info
        if node.openfile is not None:
            return node.openfile
        if not isinstance(info, ObjectInfo):
            raise errors.NotFound(f"/{node.path}: no such file")
        block_size, algorithm = await self._block_params(node.container)
        if node.openfile is not None:
            return node.openfile
        source = Source(node.container, node.key, info.version or None, info.size)
        return self._openfile(node, block_size=block_size, algorithm=algorithm, source=source,
                              meta=info.meta, content_type=info.content_type or OCTET_STREAM,
                              mtime_ns=object_mtime_ns(info))

    async def open(self, ino: int, flags: int) -> int:
        node = self.tree.get(ino)
        if node.kind.is_dir:
            raise errors.IsADirectory(f"/{node.path} is a directory")
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        place = place_of(node.path)
        if place is not None or self._is_view_file(node):
            return await self._open_shown(node, place, writable, flags)
        if writable:
            of = await self._writable(node)
            if flags & os.O_TRUNC:
                await of.truncate(0)
        elif node.info is None and node.openfile is None:
            await self._refresh_file(node)
        fh = self._new_handle(node, writable)
        self.handles[fh].direct_io = _write_only(flags)
        return fh

    async def _open_shown(self, node: Node, place: Place | None, writable: bool,
                          flags: int) -> int:
        """Open a sidecar, a catalog entry or an old version. Readers get the text as
        it is at open (or the version's bytes); writers start from that text."""
        content = None
        if writable:
            of = await self._writable_any(node, truncate=bool(flags & os.O_TRUNC))
            if flags & os.O_TRUNC and of.size:
                await of.truncate(0)
        elif place is Place.VERSION:
            attr = await self._show(node)  # the version entry, looked up again if needed
            entry = node.info
            fh = self._new_handle(node, False)
            self.handles[fh].source = Source(node.container, entry.path, entry.version,
                                             attr.size)
            return fh
        elif not self._local(node):
            if place is Place.CATALOG:
                view = await self.registry.catalog_view(node.name)
            else:
                view = await self._sidecar_view(node)
                if view is None and node.info is None:
                    await self._refresh_file(node)  # the stored object, read as it is
            content = view.content if view is not None else None
        fh = self._new_handle(node, writable)
        handle = self.handles[fh]
        handle.content = content
        handle.direct_io = True
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handle(fh)
        node = handle.node
        of = node.openfile
        if of is not None and of.has_local():
            return await of.read(offset, size)
        if handle.content is not None:
            return handle.content[offset:offset + size]
        source = of.source if of is not None else handle.source
        if source is None:
            if isinstance(node.info, ObjectInfo):
                source = handle.source = Source(node.container, node.key,
                                                node.info.version or None, node.info.size)
            else:
                return b""
        if source.container not in self._geometry:
            await self._block_params(source.container)
        # No await from here to the read: concurrent reads of one handle share a Reader.
        reader = handle.reader
        if reader is None or (reader.container, reader.key, reader.pinned, reader.size) != (
                source.container, source.key, source.version, source.size):
            if reader is not None:
                reader.close()
            block_size, _ = self._geometry[source.container]
            reader = handle.reader = Reader(
                workers=self.workers, pithos=self.pithos, spawn=self._spawn,
                container=source.container, key=source.key, version=source.version,
                size=source.size, block_size=block_size)
        return await reader.read(offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not handle.writable:
            raise OSError(errno.EBADF, "file not open for writing")
        of = handle.node.openfile
        if of is None:
            of = await self._writable_any(handle.node)
        return await of.write(offset, data)

    async def flush(self, fh: int) -> None:
        """close() of a descriptor: a writer's changes are stored before it returns."""
        handle = self._handle(fh)
        node = handle.node
        of = node.openfile
        # The file open(O_RDONLY|O_CREAT) made exists once that close() returns; other
        # readers' closes store nothing (never a half-written file).
        if of is not None and of.dirty and not of.unlinked and \
                (handle.writable or handle.created):
            await self._commit(node)

    async def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        of = handle.node.openfile
        if of is not None and of.dirty and not of.unlinked:
            await self._commit(handle.node)

    async def release(self, fh: int) -> None:
        """The last descriptor of a handle closed. Never raises: nobody would see it."""
        handle = self.handles.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        node.handles -= 1
        if handle.reader is not None:
            handle.reader.close()
            if node.handles == 0 and self.drop_pages is not None:
                # Pages read from the service stay cached after the close, and every open
                # drops them anyway (no keep_cache): freeing them now lets the next
                # reads reuse that memory instead of making the kernel reclaim it in
                # the middle of them (measured: 1 GiB reads steady at 1.25-1.4 s, against
                # 1.4-4.1 s with the system time of reclaim growing run after run).
                self.drop_pages(node.ino)
        of = node.openfile
        try:
            if of is not None and node.handles == 0:
                if of.dirty and not of.unlinked and of.attempted_gen != of.gen:
                    try:
                        await self._commit(node)
                    except Exception as exc:
                        log.warning("/%s: upload at release failed, changes lost: %s",
                                    node.path, exc)
                # Another release may be uploading it still: closing it under that upload
                # would lose the changes ("file already released").
                await of.wait_commit()
                if node.handles == 0 and node.openfile is of:
                    await self._close_openfile(node, of)
        finally:
            self.tree.drop_if_unused(node)

    async def _close_openfile(self, node: Node, of: OpenFile) -> None:
        node.openfile = None
        self._open_nodes.discard(node)
        await of.close()
        if not node.stored and not node.unlinked:
            # Never reached the service (its upload failed): it does not exist, and the
            # kernel must not show it from its entry cache either.
            path = node.path
            self.tree.listed(path, None)
            self.tree.detach(node)
            self._invalidate(path)

    async def _commit(self, node: Node) -> None:
        """Upload ``node``'s OpenFile if it changed; returns once the object is stored.
        A sidecar or catalog entry is not uploaded: its text goes to the registry."""
        if self._is_view_file(node):
            await self._commit_view(node)
            return
        of = node.openfile
        assert of is not None
        await of.wait_commit()
        if not of.dirty or of.unlinked or node.openfile is not of:
            return
        of.committing = trio.Event()
        container, key = node.container, node.key
        progress = of.upload = Progress("/" + node.path, of.size)
        self._commits += 1
        self._commits_idle = trio.Event() if self._commits_idle.is_set() else \
            self._commits_idle
        gen = of.gen
        try:
            await of.wait_quiet()
            gen = of.attempted_gen = of.gen
            meta = await self._upload_meta(node, of)
            result, hashes = await upload(of, workers=self.workers, pithos=self.pithos,
                                          container=container, key=key, meta=meta,
                                          progress=progress, parallel=self.upload_parallel)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._errors += 1
                of.error = exc
                log.log(errors.log_level(exc), "/%s: upload failed: %s", node.path, exc)
            raise
        finally:
            self._commits -= 1
            if self._commits == 0:
                self._commits_idle.set()
            of.upload = None
            event, of.committing = of.committing, None
            event.set()
        of.committed(gen, Source(container, key, result.version or None, of.size), hashes)
        of.meta = meta
        old = node.info if isinstance(node.info, ObjectInfo) else None
        info = ObjectInfo(name=key, size=of.size, content_type=of.content_type,
                          hash=result.hash, uuid=old.uuid if old else "",
                          version=result.version, mtime=time.time(), meta=dict(meta),
                          public_url=old.public_url if old else "")
        node.stored = True
        if not node.unlinked and node.path == join(container, key):
            node.remember(info, self._expiry())
            self.tree.listed(node.path, Entry(Kind.FILE, info))
        log.debug("/%s: stored %d bytes as version %s", node.path, of.size, result.version)
        await self._committed(container, key, info)

    async def _committed(self, container: str, key: str, info: ObjectInfo) -> None:
        """An upload completed: a sidecar waiting for this image registers it now (its
        failure is the sidecar's error, never this file's: the data is stored)."""
        waiting = self.registry.is_pending(container, key)
        try:
            await self.registry.object_committed(container, key, info)
        except errors.ImagefsError as exc:
            log.warning("/%s/%s: stored, but its waiting sidecar could not be applied: %s",
                        container, key, exc)
        if waiting:
            await self._image_changed(join(container, key))
        self._sidecar_changed(join(container, key) + sidecar.SUFFIX)

    async def _commit_view(self, node: Node) -> None:
        """close() of a sidecar (or catalog entry) after a write: hand the text to the
        registry, which registers and stores the metafile; returns once the image
        service accepted it. ``MetafileInvalid`` (EINVAL) leaves the registration as it
        was, and the text readable for the user to fix. A text that is still empty
        (``touch``, ``: >``) asks for nothing."""
        of = node.openfile
        assert of is not None
        await of.wait_commit()
        if not of.dirty or of.unlinked or node.openfile is not of:
            return
        of.committing = trio.Event()
        container, key, place = node.container, node.key, place_of(node.path)
        self._commits += 1
        self._commits_idle = trio.Event() if self._commits_idle.is_set() else \
            self._commits_idle
        gen = of.gen
        size = 0
        try:
            await of.wait_quiet()
            gen = of.attempted_gen = of.gen
            size = of.size
            if size:
                data = await of.read(0, min(size, metafile.MAX_METAFILE_BYTES + 1))
                if place is Place.CATALOG:
                    await self.registry.catalog_write(node.name, data)
                else:
                    await self.registry.write_sidecar(container, key, data,
                                                      mtime=of.mtime_ns / 1e9, size=size)
        except BaseException as exc:
            if isinstance(exc, Exception):
                of.error = exc
                if not isinstance(exc, errors.MetafileInvalid):
                    self._errors += 1
                    log.log(errors.log_level(exc), "/%s: not registered: %s", node.path, exc)
            if place is None and self.registry.keeps_text(container, key):
                node.stored = True  # the refused text shows until it is fixed or deleted
                self.tree.listed(node.path, Entry(Kind.FILE, EXISTS))
            raise
        finally:
            self._commits -= 1
            if self._commits == 0:
                self._commits_idle.set()
            event, of.committing = of.committing, None
            event.set()
        of.committed_gen = gen
        if not of.dirty:
            of.changed_at = None
        of.error = None
        if size and not node.unlinked:
            node.stored = True  # the registry stored the metafile (or the waiting text)
            node.remember(None, 0.0)
            if place is None:
                self.tree.listed(node.path, Entry(Kind.FILE, EXISTS))
                self.tree.forget_missing(node.path)
                await self._image_changed(node.path[: -len(sidecar.SUFFIX)])

    async def _image_changed(self, path: str) -> None:
        """A registration changed: the service stored it as a new version of the image
        file, whose cached attributes (version, time) are now old."""
        node = self.tree.at(path)
        listing = self.tree.listing(parent_of(path))
        if node is None and (listing is None or path.rpartition("/")[2] not in listing.entries):
            return  # nothing cached about it
        if node is not None and (node.kind is not Kind.FILE or self._local(node)):
            return
        container, key = split(path)
        try:
            info = await self.workers.http(self.pithos.head, container, key)
        except errors.NotFound:
            if node is not None:
                node.expires = 0.0
            return
        if info.is_directory:
            return
        node = self.tree.at(path)
        if node is not None and (node.kind is not Kind.FILE or self._local(node)):
            return
        if node is not None:
            node.remember(info, self._expiry())
        self.tree.listed(path, Entry(Kind.FILE, info))

    async def _upload_meta(self, node: Node, of: OpenFile) -> dict[str, str]:
        """The object metadata to store: what the object had, plus its mtime."""
        meta = of.meta
        if meta is None:
            meta = {}
            if node.stored:
                try:
                    info = await self.workers.http(self.pithos.head, node.container, node.key)
                    meta = dict(info.meta or {})
                except errors.NotFound:
                    pass
        meta = {k: v for k, v in meta.items() if v != ""}
        meta[MTIME_KEY] = format_mtime(of.mtime_ns)
        return meta

    # -- unlink and rename --------------------------------------------------------------

    async def _orphan(self, node: Node) -> None:
        """Before the object of an open file is deleted or replaced: keep its bytes for the
        open descriptors. Old versions stay readable unless versioning is ``none``."""
        if node.handles == 0 or not node.stored:
            return
        if await self._versioning(node.container) != "none":
            return
        of = await self._writable(node)
        await of.detach_from_source()

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.tree.get(parent_ino)
        node = await self._child(parent, name)
        if node.kind.is_dir:
            raise errors.IsADirectory(f"/{node.path} is a directory")
        place = place_of(node.path)
        if place is not None and place is not Place.CATALOG:
            self._refuse_own(node.path, "cannot be removed")
        of = node.openfile
        if of is not None:
            await of.wait_commit()
        image_info = node.info if isinstance(node.info, ObjectInfo) else None
        if place is Place.CATALOG:
            await self.registry.catalog_unlink(node.name)  # Forbidden: another's image
        elif self._is_sidecar(node):
            if node.stored and not node.unlinked:
                # Unregisters X (the object stays) and deletes the stored metafile.
                await self.registry.delete_sidecar(node.container, node.key)
        elif node.stored and not node.unlinked:
            await self._orphan(node)
            try:
                await self.workers.http(self.pithos.delete, node.container, node.key)
            except errors.NotFound:
                pass
            await self.registry.object_deleted(node.container, node.key, image_info)
            self._sidecar_changed(node.path + sidecar.SUFFIX, kernel=True)
        if node.openfile is not None:
            node.openfile.unlinked = True
        self.tree.listed(node.path, None)
        self.tree.remember_missing(node.path, self._expiry())
        self.tree.detach(node)
        if place is None:
            await self._keep_dir(parent)

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int = 0) -> None:
        """A server-side move of a file or a whole directory; over an existing file it
        replaces it (the store's move is atomic)."""
        if flags & RENAME_EXCHANGE:
            raise errors.InvalidInput("exchanging two names is not supported")
        p1 = self.tree.get(old_parent)
        p2 = self.tree.get(new_parent)
        node = await self._child(p1, old_name)
        if not p2.kind.is_dir:
            raise errors.NotADirectory(f"/{p2.path} is not a directory")
        self._check_name(p2, new_name)
        new_path = join(p2.path, new_name)
        if new_path == node.path:
            return
        self._refuse_own(node.path, "cannot be moved")
        self._refuse_own(new_path, "nothing can be moved there")
        if node.kind in (Kind.CONTAINER, Kind.ROOT):
            raise errors.NotPermitted(f"/{node.path}: containers cannot be renamed")
        if p2.kind is Kind.ROOT:
            raise errors.NotPermitted(f"/{new_path}: only containers live at the top")
        if sidecar.is_reserved(new_name):
            raise errors.Forbidden(f"/{new_path}: the name is reserved by the mount")
        if node.kind.is_dir and is_below(new_path, node.path):
            raise errors.InvalidInput(f"cannot move /{node.path} into itself")
        check_object_name(split(new_path)[1])
        try:
            target = await self._child(p2, new_name)
        except errors.NotFound:
            target = None
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise errors.AlreadyExists(f"/{new_path} exists")
            if node.kind is Kind.FILE and target.kind.is_dir:
                raise errors.IsADirectory(f"/{new_path} is a directory")
            if node.kind.is_dir and target.kind is Kind.FILE:
                raise errors.NotADirectory(f"/{new_path} is not a directory")
        if node.kind is Kind.FILE and sidecar.is_sidecar(new_name):
            await self._rename_onto_sidecar(node, new_path, target)
        elif node.kind is Kind.FILE and self._is_sidecar(node):
            await self._rename_sidecar_away(node, new_path, target)
        elif node.kind is Kind.FILE:
            await self._rename_file(node, new_path, target)
        else:
            await self._rename_dir(node, new_path, target)
        if p1 is not p2:
            await self._keep_dir(p1)

    async def _text_of(self, node: Node) -> tuple[bytes, int]:
        """(the first bytes a metafile may have, the size) of a file about to become a
        sidecar's text: what it shows (a sidecar), its local content, or its object."""
        if self._is_sidecar(node) and not self._local(node):
            view = await self._sidecar_view(node)
            if view is not None:
                return view.content, len(view.content)
        limit = metafile.MAX_METAFILE_BYTES + 1
        of = node.openfile
        if of is not None and self._local(node):
            return await of.read(0, min(of.size, limit)), of.size
        info = await self._object(node, need_meta=False)
        if info is None:
            raise errors.NotFound(f"/{node.path}: no such file")
        if not info.size:
            return b"", 0
        data = await self.workers.http(functools.partial(
            self.pithos.read, node.container, node.key, 0, min(info.size, limit),
            version=info.version or None))
        return data, info.size

    async def _rename_onto_sidecar(self, node: Node, new_path: str,
                                   target: Node | None) -> None:
        """An editor's temporary (sed -i, rsync, write-then-rename) renamed onto X.meta: a
        write of X's sidecar. On success the source is gone; refused (EINVAL), nothing
        changes, as a failed rename must leave things."""
        for n in (node, target):
            if n is not None and n.openfile is not None:
                await n.openfile.wait_commit()
        old_path = node.path
        c1, k1 = split(old_path)
        c2, k2 = split(new_path)
        keeps_source = self._is_sidecar(node) and await self._sidecar_view(node) is not None
        data, size = await self._text_of(node)
        mtime = self._attr(node).mtime_ns / 1e9
        await self.registry.write_sidecar(c2, k2, data, mtime=mtime, size=size)
        info = node.info if isinstance(node.info, ObjectInfo) else None
        if not keeps_source:
            # The source's object goes (a sidecar's registration stays: renaming a
            # sidecar away never unregisters).
            if node.stored and not node.unlinked:
                await self._orphan(node)
                try:
                    await self.workers.http(self.pithos.delete, c1, k1)
                except errors.NotFound:
                    pass
                if not self._is_sidecar(node):
                    await self.registry.object_deleted(c1, k1, info)
            if node.openfile is not None:
                node.openfile.unlinked = True
            self.tree.listed(old_path, None)
            self.tree.remember_missing(old_path, self._expiry())
        if target is not None:
            if target.openfile is not None:
                target.openfile.unlinked = True
            self.tree.detach(target)
        # The kernel now knows the source's inode by the new name: it is the sidecar.
        self.tree.move(node, new_path)
        self._follow_move(node, None)
        if not self._local(node):
            node.stored = True
            node.remember(None, 0.0)
        self.tree.listed(new_path, Entry(Kind.FILE, EXISTS))
        self.tree.forget_missing(new_path)

    async def _rename_sidecar_away(self, node: Node, new_path: str,
                                   target: Node | None) -> None:
        """X.meta renamed to a name that is not a sidecar (an editor's backup X.meta~):
        the new file holds the text the sidecar shows; the registration, and the stored
        metafile with its versions, stay. A sidecar showing no registration is an
        ordinary file and simply moves."""
        of = node.openfile
        if of is not None:
            await of.wait_commit()
            if of.dirty and not of.unlinked:
                await self._commit(node)
        view = None if self._local(node) else await self._sidecar_view(node)
        if view is None:
            await self._rename_file(node, new_path, target)
            return
        if target is not None and target.openfile is not None:
            await target.openfile.wait_commit()
        c2, k2 = split(new_path)
        if target is not None and target.stored and not target.unlinked:
            await self._orphan(target)
        await self.workers.http(functools.partial(self.pithos.put_data, c2, k2, view.content,
                                                  content_type=OCTET_STREAM))
        info = await self.workers.http(self.pithos.head, c2, k2)
        if target is not None:
            if target.openfile is not None:
                target.openfile.unlinked = True
            self.tree.detach(target)
        old_path = node.path
        self.tree.move(node, new_path)  # the kernel's inode follows the name
        self._follow_move(node, None)
        if not self._local(node):
            node.stored = True
            node.remember(info, self._expiry())
        self.tree.listed(new_path, Entry(Kind.FILE, info))
        self.tree.forget_missing(new_path)
        self._sidecar_changed(old_path)  # still shown: the registration stands

    async def _rename_file(self, node: Node, new_path: str, target: Node | None) -> None:
        for n in (node, target):
            if n is not None and n.openfile is not None:
                await n.openfile.wait_commit()
        old_path = node.path
        c1, k1 = split(old_path)
        c2, k2 = split(new_path)
        target_stored = target is not None and target.stored and not target.unlinked
        version = None
        if target is not None and target_stored:
            await self._orphan(target)
        if node.stored:
            # The object's sharing goes with it in the move itself: a public image (a
            # ``*`` reader) or one with members is never private in between, even if
            # the mount dies before the registry's re-publishing (``_moved``).
            sharing = await self._sharing_of(node, c1, k1)
            try:
                version = await self.workers.http(functools.partial(
                    self.pithos.move, c1, k1, c2, k2, sharing=sharing or None))
            except errors.NotFound as exc:
                version = await self._moved_already(exc, node, c2, k2)
                if version is None:
                    raise
            if target_stored:
                # The replaced object is gone, and its image with it (the moved object
                # keeps its own id): the cached registration must not show on the name.
                await self.registry.object_deleted(
                    c2, k2, target.info if isinstance(target.info, ObjectInfo) else None)
        else:
            node.stored = target_stored  # the commit at close replaces the target
        if target is not None:
            if target.openfile is not None:
                target.openfile.unlinked = True
            self.tree.detach(target)
        self.tree.listed(old_path, None)
        self.tree.move(node, new_path)
        self.tree.remember_missing(old_path, self._expiry())
        if isinstance(node.info, ObjectInfo):
            node.remember(dataclasses.replace(node.info, name=k2,
                                              version=version or node.info.version),
                          self._expiry())
        self.tree.listed(new_path, Entry(Kind.FILE, node.info if node.stored else None))
        self._follow_move(node, version)
        await self._moved(old_path, new_path, replaced=target_stored)

    async def _sharing_of(self, node: Node, container: str, key: str) -> str:
        """The object's sharing for its move: as last seen, or for an image (whose
        publicity and members are its read grants, which the move replaces) as it is
        now, since another client may have changed them within the cache period."""
        info = node.info if isinstance(node.info, ObjectInfo) else None
        sharing = info.sharing if info is not None else ""
        if self.registry.cached_image_of(container, key, info) is not None:
            try:
                fresh = await self.workers.http(self.pithos.head, container, key)
            except errors.NotFound:
                return sharing
            node.remember(fresh, self._expiry())
            sharing = fresh.sharing
        return sharing

    async def _moved_already(self, exc: errors.ImagefsError, node: Node, container: str,
                             key: str) -> int | None:
        """After a move answered 404: the version at ``key`` if an earlier attempt of
        this same move went through (its answer was lost, ``errors.after_lost_reply``,
        and the client's retry found no source), else None. The store's move keeps the
        uuid, so the destination holding the source's uuid says so (or its hash, when
        the uuid of a file this mount uploaded was never fetched)."""
        old = node.info
        if not errors.after_lost_reply(exc):
            return None
        if not isinstance(old, ObjectInfo) or not (old.uuid or old.hash):
            return None
        try:
            info = await self.workers.http(self.pithos.head, container, key)
        except errors.NotFound:
            return None
        if old.uuid and info.uuid != old.uuid:
            return None
        if not old.uuid and (info.hash, info.size) != (old.hash, old.size):
            return None
        log.info("/%s: moved to %s/%s by an attempt whose answer was lost", node.path,
                 container, key)
        return info.version

    def _follow_move(self, node: Node, version: int | None) -> None:
        """Open descriptors of a moved file read it at its new name."""
        if place_of(node.path) is not None:
            return  # an old version moved with its directory reads what it read
        of = node.openfile
        if of is not None and of.source is not None:
            of.source = dataclasses.replace(of.source, container=node.container, key=node.key,
                                            version=version)
        for handle in self.handles.values():
            if handle.node is node and handle.source is not None:
                handle.source = dataclasses.replace(handle.source, container=node.container,
                                                    key=node.key, version=version)

    async def _rename_dir(self, node: Node, new_path: str, target: Node | None) -> None:
        for n in list(self._open_nodes):
            if is_below(n.path, node.path) and n.openfile is not None:
                await n.openfile.wait_commit()
        c1, k1 = split(node.path)
        c2, k2 = split(new_path)
        if target is not None:
            await self._check_empty(target)
            if target.kind is Kind.DIR:
                await self._delete_markers(target)
            self.tree.listed(target.path, None)
            self.tree.detach(target)
        if not node.marker:
            # The store moves "d" and "d/..." together only when "d" exists.
            await self.workers.http(self.pithos.make_directory, c1, k1)
            node.marker = True
        try:
            await self.workers.http(functools.partial(self.pithos.move, c1, k1, c2, k2,
                                                      delimiter=True))
        except errors.NotFound as exc:
            if not await self._dir_moved_already(exc, node, c2, k2):
                raise
        old_path = node.path
        self.tree.listed(old_path, None)
        self.tree.forget_listings(old_path)
        self.tree.move(node, new_path)
        self.tree.remember_missing(old_path, self._expiry())
        self.tree.listed(new_path, Entry(Kind.DIR, None, marker=True))
        for n in self.tree.below(new_path):
            if n.kind is Kind.FILE:
                self._follow_move(n, None)
        await self._moved(old_path, new_path)

    async def _dir_moved_already(self, exc: errors.ImagefsError, node: Node, container: str,
                                 key: str) -> bool:
        """After a directory move answered 404: whether an earlier attempt of this same
        move went through, its answer lost (``errors.after_lost_reply``): the marker
        (made before the move) is at ``key`` and no longer at the source."""
        if not errors.after_lost_reply(exc):
            return False
        try:
            info = await self.workers.http(self.pithos.head, container, key)
        except errors.NotFound:
            return False
        if not info.is_directory:
            return False
        try:
            await self.workers.http(self.pithos.head, node.container, node.key)
        except errors.NotFound:
            log.info("/%s: moved to %s/%s by an attempt whose answer was lost", node.path,
                     container, key)
            return True
        return False

    async def _moved(self, old_path: str, new_path: str, *, replaced: bool = False) -> None:
        """A file or directory moved on the service: images keep their id and
        registration (the store's move keeps the object), are made public again if
        they were, and stored sidecars follow their file. A sidecar moving is not an
        image moving: nothing follows it."""
        node = self.tree.at(new_path)
        if node is None:
            return
        c1, k1 = split(old_path)
        c2, k2 = split(new_path)
        try:
            if node.kind.is_dir:
                await self.registry.directory_moved(c1, k1, c2, k2)
                return
            if sidecar.is_sidecar(k1):
                return
            old_side, new_side = old_path + sidecar.SUFFIX, new_path + sidecar.SUFFIX
            stored = self._stored_here(old_side)
            if stored is None:
                try:
                    await self.workers.http(self.pithos.head, c1, k1 + sidecar.SUFFIX)
                    stored = True
                except errors.NotFound:
                    stored = False
            info = node.info if isinstance(node.info, ObjectInfo) else None
            await self.registry.object_moved(c1, k1, c2, k2, info, sidecar_stored=stored,
                                             replaced=replaced)
        except errors.ImagefsError as exc:
            log.warning("/%s moved to /%s, but its image did not follow: %s", old_path,
                        new_path, exc)
            return
        if stored:
            self.tree.listed(old_side, None)
            self.tree.listed(new_side, Entry(Kind.FILE, EXISTS))
        elif stored is None:  # whether a metafile moved along: the next listings say
            for path in (old_side, new_side):
                parent = self.tree.at(parent_of(path))
                if parent is not None:
                    parent.listing = None
        old = self.tree.at(old_side)
        if old is not None and old.handles == 0 and not self._local(old):
            self.tree.detach(old)
        self._sidecar_changed(old_side, kernel=True)
        self._sidecar_changed(new_side, kernel=True)

    def _stored_here(self, path: str) -> bool | None:
        """Whether an object is stored at ``path``, from the cached listing (None: the
        listing is not cached)."""
        listing = self.tree.listing(parent_of(path))
        if listing is None:
            node = self.tree.at(path)
            if node is not None and isinstance(node.info, ObjectInfo) and node.stored and \
                    node.fresh(self.tree.clock()):
                return True
            return None
        entry = listing.entries.get(path.rpartition("/")[2])
        return entry is not None and entry.kind is Kind.FILE

    # -- statfs and extended attributes --------------------------------------------------

    async def statfs(self) -> StatFs:
        now = self.tree.clock()
        if self._account is None or now >= self._account[1]:
            info = await self.workers.http(self.pithos.account_info)
            self._account = (info, now + self.cache_timeout)
        info = self._account[0]
        fragment = 4096
        used = max(0, info.bytes_used)
        total = info.quota if info.quota > 0 else used + UNLIMITED
        free = max(0, total - used)
        files = 1 << 32
        return StatFs(block_size=4 * 1024 * 1024, fragment_size=fragment,
                      blocks=-(-max(total, used) // fragment), free=free // fragment,
                      files=files, free_files=files - 1)

    async def _object(self, node: Node, *, need_meta: bool) -> ObjectInfo | None:
        """The stored object of a file, HEADed if the cache cannot answer (None for a
        sidecar no object holds, and for the mount's own entries)."""
        if node.kind is not Kind.FILE or not node.stored or node.unlinked or \
                place_of(node.path) is not None or self._pending(node):
            return None
        info = node.info
        # After our own upload the uuid is not known yet (the PUT does not say it).
        if not isinstance(info, ObjectInfo) or not node.fresh(self.tree.clock()) or \
                not info.uuid or (need_meta and info.meta is None):
            if self._local(node) and isinstance(info, ObjectInfo) and \
                    not (need_meta and info.meta is None):
                return info
            try:
                info = await self.workers.http(self.pithos.head, node.container, node.key)
            except errors.NotFound:
                if self._is_sidecar(node):
                    return None  # shown from a registration, not stored
                raise
            if not self._local(node):
                node.remember(info, self._expiry())
        return info

    def _pending(self, node: Node) -> bool:
        """The object at the file's name is not its content yet: made and never stored,
        or a new file renamed over a stored one. Its metadata waits in its OpenFile for
        the upload (attributes read and change it there)."""
        of = node.openfile
        return of is not None and not node.unlinked and (not node.stored or of.source is None)

    async def _image(self, node: Node):
        """The registration of a file's object (None: not an image)."""
        if node.kind is not Kind.FILE or node.unlinked or place_of(node.path) is not None:
            return None
        info = node.info if isinstance(node.info, ObjectInfo) else None
        return await self.registry.image_of(node.container, node.key, info)

    def _error(self, node: Node) -> str | None:
        """Why the last write of a sidecar was refused (``user.imagefs.error``)."""
        if not self._is_sidecar(node):
            return None
        return self.registry.error_of(node.container, node.key)

    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self.tree.get(ino)
        X.check_namespace(name)
        if node.kind is Kind.ROOT:
            if name == STATUS_XATTR:
                return json.dumps(self.status()).encode()
            if name == PENDING_XATTR:
                return str(self.pending_uploads()).encode()
            raise errors.NoSuchAttribute(f"{name}: no such attribute")
        attr = X.classify(name)
        if not attr.known:
            raise errors.NoSuchAttribute(f"{name}: no such attribute")
        place = place_of(node.path)
        if place is Place.CATALOG:
            return await self.registry.catalog_getxattr(node.name, name)
        if place is not None:
            raise errors.NoSuchAttribute(f"{name}: no such attribute")
        image = obj = container = error = None
        if attr.source is X.Source.IMAGE:
            image = await self._image(node)
        elif attr.source is X.Source.OBJECT:
            obj = await self._object(node, need_meta=attr.field == "meta")
            if obj is None and attr.field == "meta" and node.kind is Kind.FILE and \
                    node.openfile is not None and not node.unlinked:
                obj = self._pending_object(node)  # set before its upload: reads back
        elif attr.source is X.Source.CONTAINER:
            if node.kind is Kind.CONTAINER:
                container = await self._container_info(node)
        else:
            error = self._error(node)
        return X.get(image, name, obj=obj, container=container, error=error)

    def listxattr(self, ino: int) -> list[str]:
        """Names from what is cached: listing attributes never costs a request
        (``list_xattrs`` brings the image cache up to date first)."""
        node = self.tree.get(ino)
        place = place_of(node.path)
        if place is Place.CATALOG:
            image_id = sidecar.image_id_of(node.name)
            return X.names(self.registry.images.by_id(image_id) if image_id else None)
        if place is not None:
            return []
        if node.kind is Kind.CONTAINER:
            return X.names(None, is_container=True)
        if node.kind is not Kind.FILE:
            return []
        obj = node.info if node.stored and isinstance(node.info, ObjectInfo) and \
            not self._pending(node) else None
        image = None if node.unlinked else \
            self.registry.cached_image_of(node.container, node.key, obj)
        names = X.names(image, obj=obj, error=self._error(node))
        if obj is None and node.openfile is not None and not node.unlinked:
            # Not stored yet: the metadata set meanwhile waits for the upload.
            names += [X.META_PREFIX + k for k in sorted(node.openfile.meta or ())]
        return names

    async def list_xattrs(self, ino: int) -> list[str]:
        """``listxattr`` after at most one image listing per cache period (shared by
        every file), so that a registration made elsewhere is listed."""
        node = self.tree.get(ino)
        place = place_of(node.path)
        if place is Place.CATALOG:
            await self.registry.catalog_entry(node.name)
        elif place is None and node.kind is Kind.FILE:
            await self.registry.refresh()
        return self.listxattr(ino)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        node = self.tree.get(ino)
        await self._change_xattr(node, name, value)

    async def removexattr(self, ino: int, name: str) -> None:
        node = self.tree.get(ino)
        await self._change_xattr(node, name, None)

    async def _change_xattr(self, node: Node, name: str, value: bytes | None) -> None:
        if node.kind is Kind.ROOT:
            raise errors.Unsupported(f"{name}: no attributes can be set on the mount's top")
        attr = X.classify(name)
        if not attr.known:
            raise errors.Unsupported(f"{name}: imagefs stores no such attribute")
        place = place_of(node.path)
        if place is Place.CATALOG:
            if value is None:
                await self.registry.catalog_removexattr(node.name, name)
            else:
                await self.registry.catalog_setxattr(node.name, name, value)
            return
        if place is not None:
            self._refuse_own(node.path, "has no attributes to change")
        is_container = node.kind is Kind.CONTAINER
        obj = image = None
        if attr.source is X.Source.IMAGE and node.kind is not Kind.FILE and not is_container:
            raise errors.Unsupported(f"{name}: only a file can be an image")
        if attr.source is X.Source.IMAGE and node.kind is Kind.FILE:
            of = node.openfile
            writing = of is not None and not of.unlinked and (of.dirty or not node.stored)
            if (writing and not self._is_view_file(node)) or sidecar.is_temporary(node.name):
                # What would be registered is not on the service yet, or is a tool's
                # temporary (rsync -X sets attributes on its closed .X.XXXXXX): cp -a and
                # rsync -X replay the source's user.image.* there, and a copy must not
                # become an image.
                raise errors.Busy(f"/{node.path} is being written; set {name} once it is "
                                  "closed under its own name")
        if attr.source is X.Source.OBJECT and node.kind is Kind.FILE:
            obj = await self._object(node, need_meta=False)
            if obj is None and node.openfile is not None and not node.unlinked:
                obj = self._pending_object(node)
        elif attr.source is X.Source.IMAGE:
            image = await self._image(node)
        if value is None:
            change = X.remove(image, name, obj=obj, is_container=is_container)
        else:
            change = X.set(image, name, value, obj=obj, is_container=is_container)
        if change.is_noop:
            return
        await self._apply(node, change)

    def _pending_object(self, node: Node) -> ObjectInfo:
        """A file not stored yet, as an object: its metadata waits for the upload."""
        of = node.openfile
        return ObjectInfo(name=node.key, size=of.size, content_type=of.content_type, hash="",
                          uuid="", version=0, mtime=of.mtime_ns / 1e9, meta=dict(of.meta or {}))

    async def _apply(self, node: Node, change: X.Change) -> None:
        if change.target is X.Source.IMAGE:
            await self._apply_image(node, change)
            return
        if change.target is X.Source.CONTAINER:
            if change.versioning is not None:
                await self.workers.http(self.pithos.set_versioning, node.container,
                                        change.versioning)
                if isinstance(node.info, ContainerInfo):
                    node.remember(dataclasses.replace(node.info, versioning=change.versioning),
                                  node.expires)
            return
        of = node.openfile
        if not node.stored or self._pending(node):
            if change.public is not None:
                raise errors.Unsupported(
                    f"/{node.path}: publish the file once it is stored (after close)")
            if of is not None:
                of.meta = _merged(of.meta or {}, change.meta)
            return
        if change.meta:
            await self.workers.http(self.pithos.update_meta, node.container, node.key,
                                    change.meta)
            if of is not None and of.meta is not None:
                of.meta = _merged(of.meta, change.meta)
            info = node.info
            if isinstance(info, ObjectInfo) and info.meta is not None:
                self._changed_info(node, dataclasses.replace(
                    info, meta=_merged(info.meta, change.meta)))
        if change.public is not None:
            url = await self.workers.http(self.pithos.set_public, node.container, node.key,
                                          change.public)
            info = node.info
            if isinstance(info, ObjectInfo):
                self._changed_info(node, dataclasses.replace(info, public_url=url))

    async def _apply_image(self, node: Node, change: X.Change) -> None:
        """setfattr of user.image.*: update the image, or register the file (name)."""
        info = node.info if isinstance(node.info, ObjectInfo) else None
        await self.registry.apply_image_change(node.container, node.key, info, change)
        await self._image_changed(node.path)
        self._sidecar_changed(node.path + sidecar.SUFFIX, kernel=True)

    # -- what cannot be stored ------------------------------------------------------------

    async def mknod(self, parent_ino: int, name: str, mode: int) -> Attr:
        """Regular files only (some tools create them this way); no devices, fifos or
        sockets: the store has nothing to keep them as."""
        import stat as _stat
        if not _stat.S_ISREG(mode):
            raise errors.NotPermitted(f"{name}: only regular files and directories can be "
                                      "stored")
        fh, attr = await self.create(parent_ino, name, os.O_WRONLY)
        await self.flush(fh)
        await self.release(fh)
        return attr


def _merged(meta: dict[str, str], change: dict[str, str]) -> dict[str, str]:
    out = dict(meta)
    for key, value in change.items():
        if value == "":
            out.pop(key, None)
        else:
            out[key] = value
    return out
