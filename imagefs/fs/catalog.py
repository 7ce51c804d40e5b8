"""What exists, cheaply: the image listing and the version lists, each cached for a short time.

``ImageCache`` answers "is this object an image, and with what
registration?" for every file of a listing from ONE ``GET /images/detail``
per cache period (behaviour.md §4: ``ls -l`` never costs one request per
file). It is keyed by image id (= the object's uuid, which survives
overwrites and moves) and by location for the user's own images. Concurrent
askers share one listing in flight. The mount's own changes are put in at
once and win over a listing that was already under way when they were made,
so a slow listing can never bring back a registration the user just
removed.

``VersionIndex`` lists the earlier versions of the files of one directory
for ``.versions/``. The store has no bulk call for that: one version list
per file, run in parallel under the HTTP limiter, plus one HEAD per version
for its size. Sizes of versions never change, so they are remembered
(bounded); lists are kept for the cache period.

Neither changes anything on the service; ``registry`` does, and tells them.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import NamedTuple

import trio

from imagefs import errors
from imagefs.client.models import Image, ObjectInfo
from imagefs.image import sidecar
from imagefs.protocol import headers as H

log = logging.getLogger(__name__)


def parent_of(path: str) -> str:
    """The directory part of an object path ("" at the top of a container)."""
    return path.rpartition("/")[0]


class ImageCache:
    """Registrations the user can see, from one image listing per ``timeout`` seconds."""

    def __init__(self, conn, blocking, *, timeout: float) -> None:
        self._conn = conn
        self._blocking = blocking
        self._timeout = timeout
        self._me = conn.account
        self._by_id: dict[str, Image] = {}
        self._by_loc: dict[tuple[str, str], str] = {}  # own images: (container, path) -> id
        self._fetched: float | None = None  # trio clock of the last listing's start
        self._listing: trio.Event | None = None
        self._failure: BaseException | None = None
        self._seq = 0  # bumped by every local change
        self._touched: dict[str, int] = {}  # image id -> seq of its latest local change

    # -- reading ---------------------------------------------------------------------------

    async def refresh(self, *, strict: bool = False) -> None:
        """Make sure the cache is at most ``timeout`` old (one listing, shared by all callers).

        A failed listing is logged and the old contents kept, so that files
        stay listable while the image service is down; ``strict`` raises
        instead (the catalog itself cannot be shown without it).
        """
        if self._fetched is not None and trio.current_time() - self._fetched < self._timeout:
            return
        if self._listing is not None:
            await self._listing.wait()
            if strict and self._failure is not None:
                raise self._failure
            return
        self._listing = trio.Event()
        self._failure = None
        started, seq = trio.current_time(), self._seq
        try:
            images = await self._blocking.http(
                functools.partial(self._conn.plankton.list, detail=True))
        except errors.ImagefsError as exc:
            self._failure = exc
            # Do not ask again at once: a failing service would get one request per file.
            self._fetched = started
            log.warning("image listing failed, showing registrations from before: %s", exc)
            if strict:
                raise
        else:
            self._install(images, seq)
            self._fetched = started
        finally:
            event, self._listing = self._listing, None
            event.set()

    def invalidate(self) -> None:
        """Forget the listing's age: the next ``refresh`` lists again."""
        self._fetched = None

    def by_id(self, image_id: str) -> Image | None:
        return self._by_id.get(image_id)

    def at(self, container: str, path: str) -> Image | None:
        """The user's image stored at ``container/path``, if registered."""
        image_id = self._by_loc.get((container, path))
        return self._by_id.get(image_id) if image_id else None

    def all(self) -> list[Image]:
        return list(self._by_id.values())

    def own_under(self, container: str, prefix: str) -> list[tuple[str, Image]]:
        """(path, image) of own images whose path starts with ``prefix``."""
        return [(path, self._by_id[i]) for (c, path), i in self._by_loc.items()
                if c == container and path.startswith(prefix) and i in self._by_id]

    def locate(self, image: Image) -> tuple[str, str] | None:
        """(container, path) of an own image; None for another account's."""
        try:
            account, container, path = H.parse_location(image.location)
        except errors.InvalidInput:
            return None
        return (container, path) if account == self._me else None

    # -- local changes ---------------------------------------------------------------------

    def put(self, image: Image) -> None:
        """The registration as the service returned it after one of our own changes."""
        self._unindex(image.id)
        loc = self.locate(image)
        if loc is not None:
            # The location now holds this object: whatever image was there is gone.
            old = self._by_loc.get(loc)
            if old is not None and old != image.id:
                self._by_id.pop(old, None)
                self._touch(old)
            self._by_loc[loc] = image.id
        self._by_id[image.id] = image
        self._touch(image.id)

    def drop(self, image_id: str) -> None:
        """The image was unregistered or its object deleted, by us."""
        self._unindex(image_id)
        self._by_id.pop(image_id, None)
        self._touch(image_id)

    def _touch(self, image_id: str) -> None:
        self._seq += 1
        self._touched[image_id] = self._seq

    def _unindex(self, image_id: str) -> None:
        old = self._by_id.get(image_id)
        if old is not None:
            loc = self.locate(old)
            if loc is not None and self._by_loc.get(loc) == image_id:
                del self._by_loc[loc]

    def _install(self, images: list[Image], seq: int) -> None:
        """Replace the contents with a listing that started when ``_seq`` was ``seq``."""
        fresh = {image.id: image for image in images if image.id}
        for image_id, when in self._touched.items():
            if when > seq:  # changed by us while the listing was under way: ours is newer
                if image_id in self._by_id:
                    fresh[image_id] = self._by_id[image_id]
                else:
                    fresh.pop(image_id, None)
        self._touched = {i: w for i, w in self._touched.items() if w > seq}
        self._by_id = fresh
        self._by_loc = {}
        for image in fresh.values():
            loc = self.locate(image)
            if loc is not None:
                self._by_loc[loc] = image.id


class VersionEntry(NamedTuple):
    """One entry of ``.versions/``: ``NAME@VERSION`` of the object ``path``."""

    entry: str
    version: int
    mtime: float
    size: int
    path: str


class VersionIndex:
    """Earlier versions of the files of a directory, for ``.versions/``."""

    #: Directories whose lists are kept, and version sizes remembered.
    MAX_LISTS = 64
    MAX_SIZES = 100_000

    def __init__(self, conn, blocking, *, timeout: float) -> None:
        self._conn = conn
        self._blocking = blocking
        self._timeout = timeout
        self._lists: OrderedDict[tuple[str, str], tuple[float, list[VersionEntry]]] = \
            OrderedDict()
        self._sizes: OrderedDict[tuple[str, str, int], int] = OrderedDict()

    async def _http(self, fn, *args, **kwargs):
        return await self._blocking.http(functools.partial(fn, *args, **kwargs))

    def forget(self, container: str, directory: str) -> None:
        """Our own change in ``directory``: list it again next time."""
        self._lists.pop((container, directory), None)

    async def list(self, container: str, directory: str) -> list[VersionEntry]:
        """Every earlier (not current) version of the files directly in ``directory``."""
        key = (container, directory)
        kept = self._lists.get(key)
        if kept is not None and trio.current_time() - kept[0] < self._timeout:
            return kept[1]
        started = trio.current_time()
        pithos = self._conn.pithos
        info = await self._http(pithos.container_info, container)
        entries: list[VersionEntry] = []
        if info.versioning == "auto":
            prefix = directory + "/" if directory else ""
            items = await self._http(lambda: list(
                pithos.list_objects(container, prefix=prefix, delimiter="/")))
            files = [i for i in items if isinstance(i, ObjectInfo) and not i.is_directory
                     and not sidecar.is_reserved(i.name)]
            found: list[list[VersionEntry]] = [[] for _ in files]
            async with trio.open_nursery() as nursery:
                for slot, obj in enumerate(files):
                    nursery.start_soon(self._earlier, container, obj, found, slot)
            entries = sorted((e for group in found for e in group),
                             key=lambda e: (e.path, e.version))
        self._lists[key] = (started, entries)
        self._lists.move_to_end(key)
        while len(self._lists) > self.MAX_LISTS:
            self._lists.popitem(last=False)
        return entries

    async def _earlier(self, container: str, obj: ObjectInfo, out: list, slot: int) -> None:
        try:
            versions = await self._http(self._conn.pithos.list_versions, container, obj.name)
        except errors.NotFound:  # deleted meanwhile
            return
        current = obj.version or max((v for v, _ in versions), default=0)
        earlier = [(v, ts) for v, ts in versions if v != current]
        sizes = [0] * len(earlier)
        async with trio.open_nursery() as nursery:
            for i, (version, _ts) in enumerate(earlier):
                nursery.start_soon(self._size_into, container, obj.name, version, sizes, i)
        base = obj.name.rpartition("/")[2]
        out[slot] = [VersionEntry(sidecar.version_entry(base, v), v, ts, size, obj.name)
                     for (v, ts), size in zip(earlier, sizes) if size >= 0]

    async def _size_into(self, container: str, path: str, version: int, out: list,
                         i: int) -> None:
        try:
            out[i] = await self.size(container, path, version)
        except errors.NotFound:  # purged meanwhile
            out[i] = -1

    async def size(self, container: str, path: str, version: int) -> int:
        """The size of one version (a HEAD the first time; versions never change)."""
        key = (container, path, version)
        size = self._sizes.get(key)
        if size is None:
            size = (await self._http(self._conn.pithos.head, container, path,
                                     version=version)).size
            self._sizes[key] = size
            while len(self._sizes) > self.MAX_SIZES:
                self._sizes.popitem(last=False)
        return size

    async def lookup(self, container: str, directory: str, entry: str) -> VersionEntry:
        """The entry ``NAME@VERSION`` of ``directory/.versions``; NotFound if there is none.

        Any stored version can be looked up by name, the current one too
        (``cat .versions/X@N`` with N from ``user.pithos.version``); the
        listing shows only the earlier ones.
        """
        parsed = sidecar.parse_version_entry(entry)
        if parsed is None or "/" in parsed[0] or sidecar.is_reserved(parsed[0]):
            raise errors.NotFound(f"{entry}: not a version entry (NAME@VERSION)")
        name, version = parsed
        kept = self._lists.get((container, directory))
        if kept is not None and trio.current_time() - kept[0] < self._timeout:
            for e in kept[1]:
                if e.entry == entry:
                    return e
        path = f"{directory}/{name}" if directory else name
        versions = dict(await self._http(self._conn.pithos.list_versions, container, path))
        if version not in versions:
            raise errors.NotFound(f"{path}: no version {version}")
        size = await self.size(container, path, version)
        return VersionEntry(entry, version, versions[version], size, path)
