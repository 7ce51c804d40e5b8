"""Images on the mount: sidecars ``NAME.meta``, ``user.*`` attributes, ``.images/``, ``.versions/``.

The filesystem (``fs.filesystem``) calls this for everything that touches a
registration; this module applies the pure rules of ``image.metafile``,
``image.xattrs`` and ``image.sidecar`` with the image service and the store.
It owns:

- reading a sidecar: the live registration rendered as a kamaki metafile
  (``sidecar_view``), or, after a refused write, the text that was written,
  kept in memory until it is fixed or the sidecar deleted;
- writing a sidecar (``write_sidecar``): parse, then override the
  registration (unregister, register, status by update: ``Plankton.reregister``,
  so a deployment that merges on re-registration still replaces everything,
  api.md D2), then store the registration as the service returned it as a
  new version of the object ``NAME.meta``, written straight to the store so
  the filesystem never sees it as a sidecar write (no second registration).
  Saving a sidecar that asks for exactly the live registration sends nothing
  but two HEADs (``rsync``/``cp -a`` run twice, an editor's ``:wq``);
- sidecars written before their image (``cp -r`` in any order): the
  registration waits in ``PendingSidecars`` until ``object_committed``;
- the hooks the filesystem calls after its own data operations, so that
  moves keep the image public (a store move drops sharing, D14), sidecars
  follow their file, and caches stay right without asking the service;
- every ``user.*`` attribute (``user.image.*``, ``user.pithos.*``,
  ``user.imagefs.error``); other namespaces cost no request;
- the ``.images/`` catalog and ``.versions/`` (listings from ``catalog``).

It refuses to act on another user's image (``Forbidden``, EACCES) before
sending anything, whatever path or entry names it. Blocking calls go through
``fs.blocking.Workers.http`` only. Nothing here imports pyfuse3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from imagefs import errors
from imagefs.client.models import Image, ObjectInfo
from imagefs.client.plankton import same_status
from imagefs.fs.catalog import ImageCache, VersionEntry, VersionIndex, parent_of
from imagefs.fs.journal import Intent, Journal, Kind
from imagefs.image import metafile, sidecar, xattrs
from imagefs.image.metafile import Registration
from imagefs.protocol import headers as H
from imagefs.protocol.hashmap import hashmap_of, top_hash

log = logging.getLogger(__name__)

#: Refused sidecar texts are kept in memory; beyond this total the oldest are dropped.
MAX_KEPT_BYTES = 64 * 1024 * 1024
OCTET_STREAM = "application/octet-stream"
MTIME_KEY = "Mtime"


@dataclass(frozen=True)
class SidecarView:
    """What the mount shows as ``NAME.meta`` (or ``.images/ID.meta``) instead of a stored object.

    ``image`` is the registration rendered in ``content``; None when
    ``content`` is a refused text kept for the user to fix (``error`` says why).
    """

    content: bytes
    mtime: float
    image: Image | None = None
    error: str | None = None


@dataclass
class _Refused:
    text: bytes
    mtime: float


class _KeyedLocks:
    """One trio lock per key, alive while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[trio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = trio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _mtime_of(image: Image) -> float:
    return H.parse_image_date(image.updated_at) or H.parse_image_date(image.created_at) or 0.0


def _content_hash(data: bytes) -> str:
    """The store's hash (ETag) of an object with this content."""
    return top_hash(hashmap_of(data))


class Registry:
    """Image semantics of one mount; create inside ``trio.run`` (after ``Workers``).

    ``conn`` is the user's ``client.connection.Connection``, ``blocking`` the
    filesystem's ``fs.blocking.Workers``. ``cache_timeout`` is the mount's
    cache lifetime: other clients' registrations show up within it.
    """

    def __init__(self, conn, blocking, *, cache_timeout: float = 2.0,
                 disk_formats: tuple[str, ...] | None = metafile.DISK_FORMATS,
                 container_formats: tuple[str, ...] | None = metafile.CONTAINER_FORMATS,
                 journal: Journal | None = None) -> None:
        self._conn = conn
        self._journal = journal  # intents of changes of several requests (fs.journal)
        self._blocking = blocking
        self._me = conn.account
        self._formats = {"disk_formats": disk_formats, "container_formats": container_formats}
        self.images = ImageCache(conn, blocking, timeout=cache_timeout)
        self._versions = VersionIndex(conn, blocking, timeout=cache_timeout)
        self._pending = sidecar.PendingSidecars()
        self._refused: dict[tuple[str, str], _Refused] = {}  # (container, sidecar) -> text
        self._errors: dict[tuple[str, str], str] = {}  # (container, sidecar) -> reason
        self._locks = _KeyedLocks()

    async def _http(self, fn, *args, **kwargs):
        return await self._blocking.http(functools.partial(fn, *args, **kwargs))

    def invalidate(self) -> None:
        """Forget cached registrations (the next question lists images again)."""
        self.images.invalidate()

    # -- registrations of files ----------------------------------------------------------

    async def image_of(self, container: str, name: str, obj: ObjectInfo | None = None
                       ) -> Image | None:
        """The registration of the file ``container/name`` (``obj``: its listing entry or HEAD).

        From the cache (one image listing per cache period): by the object's
        uuid when ``obj`` is given, which survives overwrites and moves by
        other clients, else by location.
        """
        await self.images.refresh()
        return self.cached_image_of(container, name, obj)

    def cached_image_of(self, container: str, name: str, obj: ObjectInfo | None = None
                        ) -> Image | None:
        """``image_of`` from what is cached, without a request (for a synchronous
        ``listxattr``); may be older than the cache period, or empty before the first
        listing."""
        if obj is not None:
            if obj.is_directory:
                return None
            if obj.uuid:
                return self.images.by_id(obj.uuid)
        return self.images.at(container, name)

    async def sidecar_visible(self, container: str, image_name: str,
                              obj: ObjectInfo | None = None) -> bool:
        """Whether ``image_name.meta`` shows although no such object is stored.

        True for a registered file, and for a sidecar whose refused text is
        kept. Stored ``NAME.meta`` objects are listed by the filesystem as
        usual (they exist); call this for a file ``X`` without one.
        """
        if (container, sidecar.sidecar_of(image_name)) in self._refused:
            return True
        return await self.image_of(container, image_name, obj) is not None

    async def sidecar_view(self, container: str, sidecar_name: str,
                           image_obj: ObjectInfo | None = None) -> SidecarView | None:
        """What ``sidecar_name`` shows, or None: then the stored object ``sidecar_name``
        (if any) is the file, read like any other.

        ``image_obj`` is the listing entry of the image file (``sidecar_name``
        minus ``.meta``) when the filesystem has it; it saves nothing but
        makes the answer follow the object's uuid.
        """
        key = (container, sidecar_name)
        refused = self._refused.get(key)
        if refused is not None:
            return SidecarView(refused.text, refused.mtime, None, self._errors.get(key))
        image = await self.image_of(container, sidecar.image_of(sidecar_name), image_obj)
        if image is None:
            return None
        return SidecarView(metafile.render(image), _mtime_of(image), image, None)

    async def read_sidecar(self, container: str, sidecar_name: str,
                           image_obj: ObjectInfo | None = None) -> bytes:
        """The content of ``sidecar_name``: the view, else the stored object (NotFound).

        Prefer ``sidecar_view``: a stored ``NAME.meta`` is an ordinary object
        and should be read through the ordinary read path; this reads it
        whole and refuses one over ``metafile.MAX_METAFILE_BYTES``.
        """
        view = await self.sidecar_view(container, sidecar_name, image_obj)
        if view is not None:
            return view.content
        info = await self._http(self._conn.pithos.head, container, sidecar_name)
        if info.size > metafile.MAX_METAFILE_BYTES:
            raise errors.ValueTooLarge(f"{sidecar_name}: {info.size} bytes, too large for a "
                                       "metafile; read it as a file")
        return await self._http(self._conn.pithos.read, container, sidecar_name, 0, info.size)

    def error_of(self, container: str, sidecar_name: str) -> str | None:
        """Why the last write of this sidecar was refused (``user.imagefs.error``)."""
        return self._errors.get((container, sidecar_name))

    def is_pending(self, container: str, image_name: str) -> bool:
        """A sidecar of ``image_name`` waits for the image's upload."""
        return (container, image_name) in self._pending

    def keeps_text(self, container: str, sidecar_name: str) -> bool:
        """A refused text of this sidecar is kept (and shown) until fixed or deleted."""
        return (container, sidecar_name) in self._refused

    def kept_sidecars(self, container: str, directory: str) -> list[str]:
        """Sidecars directly in ``directory`` ("" = the top) whose refused text is kept,
        so that a listing shows them even when no object holds them."""
        return [name for c, name in self._refused
                if c == container and parent_of(name) == directory]

    def keeps_below(self, container: str, directory: str) -> bool:
        """A refused text is kept anywhere below ``directory`` ("" = the whole
        container): the directory shows it, so it is not empty."""
        prefix = directory + "/" if directory else ""
        return any(c == container and name.startswith(prefix) for c, name in self._refused)

    def is_own(self, image: Image | None) -> bool:
        """True for the user's own image (or no image at all)."""
        return image is None or image.owner == self._me

    async def refresh(self) -> None:
        """Bring the image cache up to the cache period (one listing, shared)."""
        await self.images.refresh()

    # -- writing and deleting sidecars ---------------------------------------------------

    async def write_sidecar(self, container: str, sidecar_name: str, data: bytes, *,
                            mtime: float | None = None, size: int | None = None
                            ) -> Image | None:
        """Register ``NAME`` as ``NAME.meta``'s new text ``data`` says; return when done.

        Called when a sidecar handle is closed after a write, or a file was
        renamed onto ``NAME.meta``; the filesystem stores nothing itself.

        - Invalid text: ``MetafileInvalid`` (EINVAL); the registration is
          unchanged, the reason is logged and kept for ``error_of``, and the
          text is shown by ``sidecar_view`` until fixed or deleted.
        - ``NAME`` not stored yet: the registration waits for
          ``object_committed(NAME)``; the text is stored as ``NAME.meta``.
          Returns None.
        - Otherwise the registration is overridden and then stored, rendered,
          as a new version of ``NAME.meta``. Returns the registration.

        ``mtime``: Unix seconds the filesystem holds for the sidecar (kept as
        the stored text's ``Mtime`` while it waits). ``size``: the written
        file's size when ``data`` holds only its start; the filesystem need
        not read more than ``metafile.MAX_METAFILE_BYTES + 1`` bytes, since a
        larger sidecar is refused (and its text is not kept).
        """
        image_name = sidecar.image_of(sidecar_name)
        key = (container, sidecar_name)
        data = bytes(data)
        async with self._locks.hold((container, image_name)):
            try:
                if size is not None and size > metafile.MAX_METAFILE_BYTES:
                    raise errors.MetafileInvalid(
                        f"too large: {size} bytes; a metafile may have at most "
                        f"{metafile.MAX_METAFILE_BYTES} (kamaki's are under 1 KiB)")
                registration = metafile.parse(data, default_name=image_name, **self._formats)
            except errors.MetafileInvalid as exc:
                self._refuse(key, data, exc.message)
                raise
            try:
                obj = await self._http(self._conn.pithos.head, container, image_name)
            except errors.NotFound:
                obj = None
            if obj is None:
                await self._store_text(container, sidecar_name, data, mtime)
                self._pending.add(container, image_name, registration)
                self._accept(key)
                log.info("%s/%s: waits for %s to be uploaded", container, sidecar_name,
                         image_name)
                return None
            if obj.is_directory:
                message = f"{image_name} is a directory; only a file can be an image"
                self._refuse(key, data, message)
                raise errors.MetafileInvalid(message)
            self._pending.discard(container, image_name)
            image = await self._apply(container, image_name, obj, registration, key, data)
            self._accept(key)
            return image

    async def delete_sidecar(self, container: str, sidecar_name: str) -> None:
        """``rm NAME.meta``: unregister ``NAME`` (the object stays) and delete the stored
        ``NAME.meta``. NotFound if there was nothing to delete."""
        image_name = sidecar.image_of(sidecar_name)
        key = (container, sidecar_name)
        intent = None
        async with self._locks.hold((container, image_name)):
            found = key in self._refused or (container, image_name) in self._pending
            self._pending.discard(container, image_name)
            try:
                obj = await self._http(self._conn.pithos.head, container, image_name)
            except errors.NotFound:
                obj = None
            if obj is not None and not obj.is_directory:
                image = self.images.by_id(obj.uuid)
                if image is not None and image.owner != self._me:
                    raise errors.Forbidden(f"{image_name}: the image belongs to {image.owner}")
                intent = await self._begin(Kind.UNREGISTER, container, image_name, obj.uuid,
                                           image)
                try:
                    await self._http(self._conn.plankton.unregister, obj.uuid)
                    found = True
                    log.info("%s/%s: unregistered (sidecar deleted)", container, image_name)
                except errors.NotFound as exc:
                    found = found or errors.after_lost_reply(exc)  # by a lost attempt
                except errors.InvalidInput:  # an id the service does not take: not an image
                    pass
                except errors.Forbidden:  # another user's, unknown to the cache: unchanged
                    await self._end(intent)
                    raise
                self.images.drop(obj.uuid)
            try:
                await self._http(self._conn.pithos.delete, container, sidecar_name)
                found = True
            except errors.NotFound as exc:
                found = found or errors.after_lost_reply(exc)  # deleted by a lost attempt
            await self._end(intent)
            self._accept(key)
            self._versions.forget(container, parent_of(sidecar_name))
            if not found:
                raise errors.NotFound(f"{container}/{sidecar_name}: no such sidecar")

    def _refuse(self, key: tuple[str, str], text: bytes, reason: str) -> None:
        """Remember why, and the text to show until it is fixed (not a text too large to
        be a metafile: reading the sidecar then shows the registration)."""
        log.warning("%s/%s refused: %s", key[0], key[1], reason)
        self._errors[key] = reason
        self._refused.pop(key, None)
        if len(text) > metafile.MAX_METAFILE_BYTES:
            return
        self._refused[key] = _Refused(text, time.time())
        total = sum(len(r.text) for r in self._refused.values())
        while total > MAX_KEPT_BYTES and len(self._refused) > 1:
            old_key = next(iter(self._refused))
            total -= len(self._refused.pop(old_key).text)
            log.warning("%s/%s: too many refused sidecar texts kept; this one is no "
                        "longer shown", *old_key)

    def _accept(self, key: tuple[str, str]) -> None:
        self._refused.pop(key, None)
        self._errors.pop(key, None)

    async def _apply(self, container: str, image_name: str, obj: ObjectInfo,
                     registration: Registration, key: tuple[str, str] | None,
                     text: bytes | None) -> Image:
        """Override the registration of ``obj`` and store the metafile; the new registration."""
        sidecar_name = sidecar.sidecar_of(image_name)
        await self.images.refresh()
        previous = self.images.by_id(obj.uuid)
        if previous is not None and previous.owner != self._me:
            raise errors.Forbidden(f"{image_name}: the image belongs to {previous.owner}")
        if previous is not None and self._unchanged(registration, previous):
            # Confirm with the service before sending nothing (the cache may be old).
            try:
                live = await self._http(self._conn.plankton.get, obj.uuid)
            except errors.NotFound:
                live = None
            if live is not None and self._unchanged(registration, live):
                self.images.put(live)
                await self._store_metafile(container, sidecar_name, live, check=True)
                log.debug("%s/%s: registration unchanged", container, image_name)
                return live
        location = H.location(self._me, container, image_name)
        intent = await self._begin(Kind.REGISTER, container, image_name, obj.uuid, previous,
                                   registration)
        try:
            image = await self._http(
                self._conn.plankton.reregister, location, registration.name,
                disk_format=registration.disk_format,
                container_format=registration.container_format,
                is_public=registration.is_public, properties=registration.properties,
                status=registration.status, existing_id=obj.uuid)
        except errors.ImagefsError as exc:
            # The unregister may have gone through: put the old registration back.
            await self._restore(location, previous, obj.uuid, intent)
            if not isinstance(exc, errors.InvalidInput):
                raise
            # The service refused what the parser let through (a format it does not take).
            reason = f"the image service refused it: {exc.message or exc}"
            if key is not None:
                if text is not None:
                    self._refuse(key, text, reason)
                else:
                    self._errors[key] = reason
            raise errors.MetafileInvalid(reason) from None
        if registration.status:
            image = dataclasses.replace(image, status=registration.status)
        self.images.put(image)
        log.info("%s/%s: registered as %r (%s)", container, image_name, image.name, image.id)
        try:
            await self._store_metafile(container, sidecar_name, image)
        finally:
            await self._end(intent)
        self._versions.forget(container, parent_of(image_name))
        return image

    @staticmethod
    def _unchanged(registration: Registration, image: Image) -> bool:
        """Registering this again would leave ``image`` as it is. A file without a
        status resets it to the service's default, so it matches only ``available``."""
        if not registration.matches(image):
            return False
        return registration.status is not None or same_status(image.status, "available")

    async def _restore(self, location: str, previous: Image | None, image_id: str,
                       intent: tuple[Intent, Path] | None = None) -> None:
        """Put back the registration a failed override removed. Until it is back, the
        intent says so: a crash now brings back the previous registration, not the new."""
        if previous is None:
            self.images.drop(image_id)
            await self._end(intent)
            return
        old = Registration.from_image(previous)
        if intent is not None:
            intent = await self._begin_again(intent, old)
        try:
            image = await self._http(
                self._conn.plankton.reregister, location, old.name,
                disk_format=old.disk_format, container_format=old.container_format,
                is_public=old.is_public, properties=old.properties, status=old.status,
                existing_id=image_id)
        except errors.ImagefsError as exc:
            log.error("%s: could not restore the previous registration (the next mount "
                      "will): %s", location, exc)
            self.images.drop(image_id)
            return
        await self._end(intent)
        self.images.put(image)

    async def _begin(self, kind: Kind, container: str, image_name: str, uuid: str,
                     previous: Image | None, new: Registration | None = None
                     ) -> tuple[Intent, Path] | None:
        """Journal a change of several requests before its first (``fs.journal``), so
        that a crash in between is finished or undone by the next mount."""
        if self._journal is None or not uuid:
            return None
        intent = self._journal.intent(
            kind, container=container, image_name=image_name, uuid=uuid,
            location=H.location(self._me, container, image_name),
            previous=Registration.from_image(previous) if previous is not None else None,
            new=new)
        return intent, await self._write_intent(intent, None)

    async def _begin_again(self, written: tuple[Intent, Path], new: Registration
                           ) -> tuple[Intent, Path]:
        intent = dataclasses.replace(written[0], new=new)
        return intent, await self._write_intent(intent, written[1])

    async def _write_intent(self, intent: Intent, path: Path | None) -> Path:
        try:
            return await self._blocking.disk(self._journal.write, intent, path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise errors.CacheFull(f"no room in the cache directory for the journal of "
                                       f"{intent.container}/{intent.sidecar_name}") from None
            raise

    async def _end(self, written: tuple[Intent, Path] | None) -> None:
        """The change is complete or undone: its intent goes."""
        if written is not None:
            await self._blocking.disk(self._journal.remove, written[1])

    async def _store_metafile(self, container: str, sidecar_name: str, image: Image, *,
                              check: bool = False) -> None:
        """Store the registration as a new version of ``sidecar_name`` (kamaki does the same
        after ``image register``). ``check``: only if the stored one differs."""
        content = metafile.render(image)
        if check:
            try:
                stored = await self._http(self._conn.pithos.head, container, sidecar_name)
            except errors.NotFound:
                stored = None
            if stored is not None and stored.hash == _content_hash(content):
                return
        await self._http(self._conn.pithos.put_data, container, sidecar_name, content,
                         content_type=OCTET_STREAM)
        self._versions.forget(container, parent_of(sidecar_name))

    async def _store_text(self, container: str, sidecar_name: str, data: bytes,
                          mtime: float | None) -> None:
        meta = {MTIME_KEY: _format_seconds(mtime)} if mtime is not None else None
        await self._http(self._conn.pithos.put_data, container, sidecar_name, data,
                         content_type=OCTET_STREAM, meta=meta)
        self._versions.forget(container, parent_of(sidecar_name))

    # -- hooks after the filesystem's own data operations ---------------------------------

    async def object_committed(self, container: str, name: str, info: ObjectInfo) -> None:
        """An upload of ``name`` completed (``info``: its HEAD or the PUT's answer).

        Registers a sidecar that waited for it; a failure is logged and kept
        for ``error_of`` of the sidecar, never raised: the data is stored.
        Otherwise updates the cached registration (size, checksum) at no cost.
        """
        self._versions.forget(container, parent_of(name))
        async with self._locks.hold((container, name)):
            registration = self._pending.pop(container, name)
            if registration is None:
                # Our own PUT does not tell the uuid; an overwrite keeps the path's object.
                image = self.images.by_id(info.uuid) if info.uuid else \
                    self.images.at(container, name)
                if image is not None:
                    self.images.put(dataclasses.replace(
                        image, size=info.size, checksum=info.hash or image.checksum,
                        updated_at=H.format_image_date(info.version_mtime or info.mtime)
                        if (info.version_mtime or info.mtime) else image.updated_at))
                return
            key = (container, sidecar.sidecar_of(name))
            if info.is_directory:
                log.warning("%s/%s is a directory; its sidecar cannot register it",
                            container, name)
                return
            if not info.uuid:
                info = await self._http(self._conn.pithos.head, container, name)
            try:
                await self._apply(container, name, info, registration, key, None)
            except errors.ImagefsError as exc:
                self._errors[key] = str(exc.message or exc)
                log.warning("%s/%s: the waiting sidecar did not register: %s", container,
                            name, exc)
            else:
                self._errors.pop(key, None)

    async def object_moved(self, src_container: str, src: str, dst_container: str, dst: str,
                           info: ObjectInfo | None = None, *,
                           sidecar_stored: bool | None = None, replaced: bool = False) -> None:
        """After a server-side move of the file ``src`` to ``dst`` (``info``: its new HEAD).

        The image keeps its id and registration, and its public status: the
        filesystem's move carried the sharing (the store drops it otherwise,
        D14), and a public image is confirmed public here. The stored sidecar
        follows (``sidecar_stored=False`` when the filesystem knows there is
        none, saving a request), and so do a waiting or refused sidecar.
        Renaming a sidecar itself is not a move of an image: the filesystem
        does not call this for ``X.meta``.
        """
        src_side, dst_side = sidecar.sidecar_of(src), sidecar.sidecar_of(dst)
        self._pending.rename(src_container, src, dst_container, dst)
        self._move_kept((src_container, src_side), (dst_container, dst_side))
        for c, path in ((src_container, src), (dst_container, dst)):
            self._versions.forget(c, parent_of(path))
        await self.images.refresh()
        image = self.images.by_id(info.uuid) if info is not None and info.uuid else None
        if image is None:
            image = self.images.at(src_container, src)
        if image is not None:
            await self._follow(image, dst_container, dst, replaced=replaced)
        if sidecar_stored is not False:
            try:
                await self._http(self._conn.pithos.move, src_container, src_side,
                                 dst_container, dst_side)
            except errors.NotFound:
                pass

    async def directory_moved(self, src_container: str, src_dir: str, dst_container: str,
                              dst_dir: str) -> None:
        """After a server-side move of a whole directory (``?delimiter=/``): every image
        below keeps its registration and public status; sidecars moved with it."""
        src_prefix, dst_prefix = src_dir.rstrip("/") + "/", dst_dir.rstrip("/") + "/"
        for c, n in list(self._pending):
            if c == src_container and n.startswith(src_prefix):
                self._pending.rename(c, n, dst_container, dst_prefix + n[len(src_prefix):])
        for c, n in list(self._refused) + list(self._errors):
            if c == src_container and n.startswith(src_prefix):
                self._move_kept((c, n), (dst_container, dst_prefix + n[len(src_prefix):]))
        self._versions.forget(src_container, src_dir.rstrip("/"))
        await self.images.refresh()
        for path, image in self.images.own_under(src_container, src_prefix):
            await self._follow(image, dst_container, dst_prefix + path[len(src_prefix):])

    async def _follow(self, image: Image, container: str, path: str, *,
                      replaced: bool = False) -> None:
        """The image moved to ``container/path``; it keeps its public status. The store's
        grants stay with the path: over a ``replaced`` object, a private image would
        take the old object's public grant, so it is made private again."""
        image = dataclasses.replace(image, location=H.location(self._me, container, path))
        if replaced and not image.is_public:
            try:
                image = await self._http(self._conn.plankton.update, image.id,
                                         is_public=False)
            except errors.ImagefsError as exc:
                log.warning("%s/%s: moved over another file, but could not keep the image "
                            "private: %s", container, path, exc)
        elif image.is_public:
            # A file's move carried its sharing (``Filesystem._rename_file``); this makes
            # sure, and re-publishes the images a directory move took along.
            try:
                image = await self._http(self._conn.plankton.update, image.id, is_public=True)
            except errors.ImagefsError as exc:
                log.warning("%s/%s: moved; could not confirm the image is still public: %s",
                            container, path, exc)
                self.images.drop(image.id)  # asked again when next needed
                return
        self.images.put(image)

    def _move_kept(self, src_key: tuple[str, str], dst_key: tuple[str, str]) -> None:
        if src_key in self._refused:
            self._refused[dst_key] = self._refused.pop(src_key)
        if src_key in self._errors:
            self._errors[dst_key] = self._errors.pop(src_key)

    async def object_deleted(self, container: str, name: str,
                             info: ObjectInfo | None = None) -> None:
        """The filesystem deleted ``name``: its image is gone with it (its stored sidecar
        stays, stale, as with any Synnefo client)."""
        image = None
        if info is not None and info.uuid:
            image = self.images.by_id(info.uuid)
        image = image or self.images.at(container, name)
        if image is not None:
            self.images.drop(image.id)
        self._versions.forget(container, parent_of(name))

    # -- attributes ----------------------------------------------------------------------

    async def listxattr(self, container: str, name: str, obj: ObjectInfo | None
                        ) -> list[bytes]:
        """What ``getfattr -d`` lists for ``container/name`` (``name`` "" = the container).

        Costs at most the (shared) image listing: ``user.pithos.meta.*`` names
        come from ``obj.meta`` when the listing carried it.
        """
        if not name:
            out = xattrs.names(None, is_container=True)
        else:
            image = await self.image_of(container, name, obj)
            error = self.error_of(container, name) if sidecar.is_sidecar(name) else None
            out = xattrs.names(image, obj=obj, error=error)
        return [n.encode("utf-8") for n in out]

    async def getxattr(self, container: str, name: str, obj: ObjectInfo | None,
                       attr: str) -> bytes:
        """The value of ``attr``; NoSuchAttribute (ENODATA) when absent.

        Unknown names and other namespaces (EOPNOTSUPP) answer without a request.
        """
        xattrs.check_namespace(attr)
        kind = xattrs.classify(attr)
        source = kind.source
        if source is xattrs.Source.NONE:
            raise errors.NoSuchAttribute(f"{attr}: no such attribute")
        if source is xattrs.Source.MOUNT:
            error = self.error_of(container, name) if name and sidecar.is_sidecar(name) \
                else None
            return xattrs.get(None, attr, error=error)
        if not name:
            if source is not xattrs.Source.CONTAINER:
                raise errors.NoSuchAttribute(f"{attr}: not an attribute of a container")
            info = await self._http(self._conn.pithos.container_info, container)
            return xattrs.get(None, attr, container=info)
        if source is xattrs.Source.IMAGE:
            return xattrs.get(await self.image_of(container, name, obj), attr)
        if source is xattrs.Source.OBJECT:
            if obj is None:
                raise errors.NoSuchAttribute(f"{attr}: there is no stored object here")
            if obj.meta is None:
                obj = await self._http(self._conn.pithos.head, container, name)
            return xattrs.get(None, attr, obj=obj)
        raise errors.NoSuchAttribute(f"{attr}: exists on a container's directory only")

    async def setxattr(self, container: str, name: str, obj: ObjectInfo | None, attr: str,
                       value: bytes) -> xattrs.Change:
        """``setfattr -n attr -v value``: applied at once; returns the ``Change`` made.

        ``change.target`` tells the filesystem what to refresh: ``OBJECT``
        (metadata or public URL changed: a new version of the object),
        ``CONTAINER`` (versioning policy) or ``IMAGE``.
        """
        return await self._change(container, name, obj, attr, value)

    async def removexattr(self, container: str, name: str, obj: ObjectInfo | None,
                          attr: str) -> xattrs.Change:
        """``setfattr -x attr``; see ``setxattr``."""
        return await self._change(container, name, obj, attr, None)

    async def _change(self, container: str, name: str, obj: ObjectInfo | None, attr: str,
                      value: bytes | None) -> xattrs.Change:
        kind = xattrs.classify(attr)
        is_container = not name
        image = None
        if kind.source is xattrs.Source.IMAGE and not is_container:
            image = await self.image_of(container, name, obj)
            self._check_owner(image, name)
        if kind.source is xattrs.Source.OBJECT and obj is not None and obj.meta is None:
            obj = await self._http(self._conn.pithos.head, container, name)
        if value is None:
            change = xattrs.remove(image, attr, obj=obj, is_container=is_container)
        else:
            change = xattrs.set(image, attr, value, obj=obj, is_container=is_container,
                                **self._formats)
        if change.is_noop:
            return change
        pithos = self._conn.pithos
        if change.target is xattrs.Source.IMAGE:
            await self._change_image(container, name, obj, image, change)
        elif change.target is xattrs.Source.OBJECT:
            if change.meta:
                await self._http(pithos.update_meta, container, name, change.meta)
            if change.public is not None:
                await self._http(pithos.set_public, container, name, change.public)
            self._versions.forget(container, parent_of(name))
        else:
            await self._http(pithos.set_versioning, container, change.versioning)
        return change

    async def apply_image_change(self, container: str, name: str, obj: ObjectInfo | None,
                                 change: xattrs.Change) -> None:
        """Apply a ``user.image.*`` ``Change`` that the caller computed with
        ``xattrs.set``/``remove`` from ``image_of`` (the filesystem's own attribute
        code): update, or register when ``change.register``; Forbidden on another
        user's image."""
        if change.is_noop:
            return
        image = await self.image_of(container, name, obj)
        self._check_owner(image, name)
        if image is None and not change.register:
            raise errors.InvalidInput(f"{name}: the file is not an image; set "
                                      "user.image.name first to register it")
        await self._change_image(container, name, obj, image, change)

    def _check_owner(self, image: Image | None, what: str) -> None:
        if image is not None and image.owner != self._me:
            raise errors.Forbidden(f"{what}: the image belongs to {image.owner}; only its "
                                   "owner may change it")

    async def _change_image(self, container: str | None, name: str | None,
                            obj: ObjectInfo | None, image: Image | None,
                            change: xattrs.Change) -> None:
        if change.register:
            if obj is None:
                obj = await self._http(self._conn.pithos.head, container, name)
            if obj.is_directory:
                raise errors.Unsupported(f"{name}: a directory cannot be an image")
            location = H.location(self._me, container, name)
            new = await self._http(self._conn.plankton.register, location, change.name)
            log.info("%s/%s: registered as %r (%s)", container, name, new.name, new.id)
        else:
            fields = change.fields
            if (set(fields) == {"status"} and not change.properties
                    and change.is_public is None and same_status(fields["status"], image.status)):
                return  # statuses compare case-insensitively (AVAILABLE is available)
            new = await self._http(self._conn.plankton.update, image.id, **fields,
                                   is_public=change.is_public,
                                   properties=change.properties or None)
            if change.status:  # a real deployment's reply maps it (UNKNOWN); keep what was set
                new = dataclasses.replace(new, status=change.status)
        self.images.put(new)
        loc = self.images.locate(new)
        if loc is not None:
            self._versions.forget(loc[0], parent_of(loc[1]))

    # -- the catalog .images/ ------------------------------------------------------------

    async def catalog(self) -> list[tuple[str, Image]]:
        """``("ID.meta", image)`` for every image the user can see (own, public, shared)."""
        await self.images.refresh(strict=True)
        return sorted(((sidecar.catalog_entry(i.id), i) for i in self.images.all()),
                      key=lambda pair: pair[0])

    async def catalog_entry(self, entry: str) -> Image:
        """The image ``.images/ID.meta`` names; NotFound if the user cannot see one."""
        image_id = sidecar.image_id_of(entry)
        if image_id is None:
            raise errors.NotFound(f".images/{entry}: not an image entry (ID.meta)")
        await self.images.refresh(strict=True)
        image = self.images.by_id(image_id)
        if image is None:
            raise errors.NotFound(f".images/{entry}: no such image")
        return image

    async def catalog_view(self, entry: str) -> SidecarView:
        """The content of ``.images/ID.meta``: as the image's sidecar shows it."""
        image = await self.catalog_entry(entry)
        loc = self.images.locate(image)
        if loc is not None:
            key = (loc[0], sidecar.sidecar_of(loc[1]))
            refused = self._refused.get(key)
            if refused is not None:
                return SidecarView(refused.text, refused.mtime, None, self._errors.get(key))
        return SidecarView(metafile.render(image), _mtime_of(image), image, None)

    async def catalog_write(self, entry: str, data: bytes) -> Image | None:
        """Writing ``.images/ID.meta`` is writing the image's sidecar (own images only)."""
        container, path = self._own_location(await self.catalog_entry(entry), entry)
        return await self.write_sidecar(container, sidecar.sidecar_of(path), data)

    async def catalog_unlink(self, entry: str) -> None:
        """``rm .images/ID.meta``: unregister an own image (``kamaki image unregister``;
        its stored sidecar stays); another user's: Forbidden (EACCES), nothing sent."""
        image = await self.catalog_entry(entry)
        self._check_owner(image, f".images/{entry}")
        try:
            await self._http(self._conn.plankton.unregister, image.id)
        except errors.NotFound as exc:
            if not errors.after_lost_reply(exc):  # else: unregistered by a lost attempt
                raise
        self.images.drop(image.id)
        loc = self.images.locate(image)
        if loc is not None:
            self._versions.forget(loc[0], parent_of(loc[1]))
        log.info(".images/%s: unregistered %r", entry, image.name)

    def _own_location(self, image: Image, what: str) -> tuple[str, str]:
        self._check_owner(image, f".images/{what}")
        loc = self.images.locate(image)
        if loc is None:
            raise errors.Forbidden(f".images/{what}: stored in another account")
        return loc

    async def catalog_listxattr(self, entry: str) -> list[bytes]:
        image = await self.catalog_entry(entry)
        return [n.encode("utf-8") for n in xattrs.names(image)]

    async def catalog_getxattr(self, entry: str, attr: str) -> bytes:
        kind = xattrs.classify(attr)
        if kind.source is not xattrs.Source.IMAGE:
            raise errors.NoSuchAttribute(f"{attr}: no such attribute on a catalog entry")
        return xattrs.get(await self.catalog_entry(entry), attr)

    async def catalog_setxattr(self, entry: str, attr: str, value: bytes) -> xattrs.Change:
        return await self._catalog_change(entry, attr, value)

    async def catalog_removexattr(self, entry: str, attr: str) -> xattrs.Change:
        return await self._catalog_change(entry, attr, None)

    async def _catalog_change(self, entry: str, attr: str, value: bytes | None
                              ) -> xattrs.Change:
        kind = xattrs.classify(attr)
        if kind.source is not xattrs.Source.IMAGE:
            raise errors.Unsupported(f"{attr}: a catalog entry has user.image.* only")
        image = await self.catalog_entry(entry)
        self._check_owner(image, f".images/{entry}")
        if value is None:
            change = xattrs.remove(image, attr)
        else:
            change = xattrs.set(image, attr, value, **self._formats)
        if not change.is_noop:
            await self._change_image(None, None, None, image, change)
        return change

    # -- .versions/ ----------------------------------------------------------------------

    async def versions(self, container: str, directory: str) -> list[VersionEntry]:
        """``(NAME@VERSION, version, mtime, size, path)`` for the earlier versions of the
        files in ``directory`` ("" = the container's top); read one with
        ``pithos.read(container, path, ..., version=version)``."""
        return await self._versions.list(container, directory.strip("/"))

    async def version_lookup(self, container: str, directory: str, entry: str
                             ) -> VersionEntry:
        """One entry of ``directory/.versions/`` by name (any stored version); NotFound."""
        return await self._versions.lookup(container, directory.strip("/"), entry)


def _format_seconds(seconds: float) -> str:
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return text or "0"
