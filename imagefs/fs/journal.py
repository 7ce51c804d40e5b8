"""What a mount writes in its cache directory so that a crash cannot leave an image half changed.

Some registration changes take several requests: an override is
unregister, register, then maybe a status update (``Plankton.reregister``,
api.md D2); deleting a sidecar is unregister, then delete of the stored
``NAME.meta``. A mount killed between them would leave neither the old
state nor the new one (an image unregistered, or registered without its
status). This module owns the two things that close that window:

- ``OwnerLock``: ``CACHE/locks/TAG.lock``, ``flock``ed by the mount for its
  whole life. ``TAG`` (``PID-RANDOM``) also starts the names of the mount's
  spill files and intents. A tag whose lock can be taken belongs to a mount
  that ended, however it ended: the kernel drops the lock with the process,
  whereas a pid may have been reused since.
- ``Journal``: ``CACHE/journal/TAG-N.json``, one ``Intent`` per change,
  written (fsync, rename) before the first request and removed after the
  last. It holds what to redo and what to go back to, never a token.

A mount that starts (``Journal.recover``) replays the intents that ended
mounts of the same account left (another account's are left alone): an
intent whose first request never changed anything is dropped (the old state
is intact, and the command that asked for it failed); one half done is
finished (``decide``); a new registration the service refuses puts the
previous one back. Recovery logs at INFO; an intent it cannot replay now
(service unreachable) stays for the next mount. A journal file that is not
a valid intent is removed with a warning, never followed.

Nothing here imports pyfuse3; the requests of a replay go through
``fs.blocking.Workers.http``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import functools
import itertools
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imagefs import errors
from imagefs.client.models import Image
from imagefs.config import make_private_dir
from imagefs.image import metafile, sidecar
from imagefs.image.metafile import Registration
from imagefs.protocol.hashmap import hashmap_of, top_hash

log = logging.getLogger(__name__)

#: Bumped if the intent format changes; an intent of another version is left alone.
VERSION = 1
LOCKS = "locks"
JOURNAL = "journal"
SPILL = "spill"
OCTET_STREAM = "application/octet-stream"


class Kind(str, enum.Enum):
    REGISTER = "register"  # override the registration with ``new`` (write_sidecar)
    UNREGISTER = "unregister"  # unregister, then delete the stored sidecar (rm NAME.meta)


class Decision(enum.Enum):
    """What recovery does with an intent, given the live registration."""

    DONE = "the change was complete"
    UNTOUCHED = "the change never reached the image service"
    REDO = "the change was half done"


@dataclass(frozen=True)
class Intent:
    """A registration change of several requests, as written before the first.

    ``previous`` is the registration to go back to (None: the file was not
    registered); ``new`` the one asked for (None for ``Kind.UNREGISTER``).
    ``owner`` is the writing mount's tag, ``account`` its user.
    """

    kind: Kind
    account: str
    owner: str
    container: str
    image_name: str
    uuid: str
    location: str
    previous: Registration | None
    new: Registration | None = None

    @property
    def sidecar_name(self) -> str:
        return sidecar.sidecar_of(self.image_name)

    def to_json(self) -> str:
        return json.dumps({
            "version": VERSION, "kind": self.kind.value, "account": self.account,
            "owner": self.owner, "container": self.container, "image_name": self.image_name,
            "uuid": self.uuid, "location": self.location,
            "previous": _fields(self.previous), "new": _fields(self.new),
        }, indent=1, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: bytes | str) -> Intent:
        """The intent ``text`` holds; ValueError if it is not one (of ``VERSION``)."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("version") != VERSION:
            raise _OtherVersion(f"intent version {doc.get('version')!r}")
        strings = {k: doc.get(k) for k in ("account", "owner", "container", "image_name",
                                           "uuid", "location")}
        for key, value in strings.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key}: not a non-empty string")
        kind = Kind(doc.get("kind"))
        new = _registration(doc.get("new"))
        if kind is Kind.REGISTER and new is None:
            raise ValueError("a register intent without a new registration")
        return cls(kind=kind, previous=_registration(doc.get("previous")), new=new,
                   **strings)  # type: ignore[arg-type]


class _OtherVersion(ValueError):
    """Written by another version of imagefs: not ours to follow or remove."""


def _fields(registration: Registration | None) -> dict | None:
    if registration is None:
        return None
    return {"name": registration.name, "disk_format": registration.disk_format,
            "container_format": registration.container_format,
            "is_public": registration.is_public, "status": registration.status,
            "properties": dict(registration.properties)}


def _registration(doc: object) -> Registration | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ValueError("a registration is not a JSON object")
    for key in ("name", "disk_format", "container_format"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ValueError(f"registration {key}: not a non-empty string")
    status, props = doc.get("status"), doc.get("properties")
    if not isinstance(doc.get("is_public"), bool):
        raise ValueError("registration is_public: not a boolean")
    if status is not None and not isinstance(status, str):
        raise ValueError("registration status: not a string")
    if not isinstance(props, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in props.items()):
        raise ValueError("registration properties: not an object of strings")
    return Registration(name=doc["name"], disk_format=doc["disk_format"],
                        container_format=doc["container_format"],
                        is_public=doc["is_public"], status=status, properties=dict(props))


def is_live(registration: Registration, image: Image | None) -> bool:
    """``image`` is what registering ``registration`` leaves (a registration without a
    status leaves the service's default, ``available``)."""
    if image is None or not registration.matches(image):
        return False
    return registration.status is not None or image.status.casefold() == "available"


def decide(intent: Intent, live: Image | None) -> Decision:
    """What to do with ``intent`` now that the image service shows ``live`` (None: the
    object is not registered).

    A registration that already is the new one: DONE. One that still is the
    previous one (or none, when there was none): UNTOUCHED, since the first
    request (the unregister) never arrived. Anything else is a half-done
    override (unregistered, or registered without its status): REDO. An
    unregister that went through is finished (REDO: delete the stored
    sidecar); a registration still there means it never arrived.
    """
    if intent.kind is Kind.UNREGISTER:
        return Decision.REDO if live is None else Decision.UNTOUCHED
    assert intent.new is not None
    if is_live(intent.new, live):
        return Decision.DONE
    if intent.previous is None:
        return Decision.UNTOUCHED if live is None else Decision.REDO
    if live is not None and intent.previous.matches(live):
        return Decision.UNTOUCHED
    return Decision.REDO


def tag_of(filename: str) -> str | None:
    """The owner tag of a spill, journal or lock file name (``PID-RANDOM-...``)."""
    stem = filename.lstrip(".").split(".", 1)[0]
    parts = stem.split("-")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1]:
        return None
    return f"{parts[0]}-{parts[1]}"


# -- liveness ----------------------------------------------------------------------------


class OwnerLock:
    """``CACHE/locks/TAG.lock``, held with ``flock(LOCK_EX)`` while ``fd`` is open.

    ``acquire`` is a mount's own lock, for its lifetime; ``claim`` takes an
    ended mount's lock so that no other starting mount recovers it at the
    same time. Whoever removes a lock file holds it while doing so, and an
    acquirer checks that the file it locked is still the one at the path.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd
        self.tag = path.name[: -len(".lock")]

    @classmethod
    def acquire(cls, cache_dir: Path, tag: str) -> OwnerLock:
        path = make_private_dir(Path(cache_dir) / LOCKS) / f"{tag}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # only a claimer, for a moment, may hold it
                if _same_file(fd, path):
                    return cls(path, fd)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a claimer removed it meanwhile: make a new one

    @classmethod
    def claim(cls, cache_dir: Path, tag: str) -> OwnerLock | None:
        """The lock of the mount ``tag`` if it ended (None if it runs, or was just
        recovered by another mount). A tag without a lock file was written by a mount
        of an older imagefs: it ended if its pid is gone (``fd`` None then)."""
        path = Path(cache_dir) / LOCKS / f"{tag}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return cls(path, None) if not _pid_runs(tag) else None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not _same_file(fd, path):
            os.close(fd)
            return None
        return cls(path, fd)

    def release(self, *, remove: bool) -> None:
        """Unlock; ``remove`` the lock file first (nothing of the tag is left)."""
        if remove:
            self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _pid_runs(tag: str) -> bool:
    pid = int(tag.split("-", 1)[0])
    if pid == os.getpid():
        return False  # a tag of this process without a lock is not a mount
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the journal -----------------------------------------------------------------------------


class Journal:
    """The intents of one mount (``tag``, ``account``) in ``CACHE/journal``.

    ``write``/``remove`` block (fsync): call them through ``Workers.disk``.
    """

    def __init__(self, cache_dir: Path, tag: str, account: str) -> None:
        self.cache_dir = Path(cache_dir)
        self.dir = self.cache_dir / JOURNAL
        self.tag = tag
        self.account = account
        self._numbers = itertools.count(1)
        self._mine: dict[str, Path] = {}  # image uuid -> the intent this mount keeps
        self._lock = threading.Lock()  # write/remove run in worker threads

    def open(self) -> Journal:
        make_private_dir(self.dir)
        return self

    def intent(self, kind: Kind, *, container: str, image_name: str, uuid: str,
               location: str, previous: Registration | None,
               new: Registration | None = None) -> Intent:
        return Intent(kind=kind, account=self.account, owner=self.tag, container=container,
                      image_name=image_name, uuid=uuid, location=location,
                      previous=previous, new=new)

    def write(self, intent: Intent, path: Path | None = None) -> Path:
        """Store ``intent`` durably (at ``path``: replace that intent); its path.

        A new intent supersedes one this mount still keeps for the same image (a
        restore that failed): replaying that one later would undo the new change.
        """
        path = path or self.dir / f"{self.tag}-{next(self._numbers)}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, intent.to_json().encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.dir)
        with self._lock:
            older = self._mine.get(intent.uuid)
            self._mine[intent.uuid] = path
        if older is not None and older != path:
            older.unlink(missing_ok=True)
        return path

    def remove(self, path: Path) -> None:
        """The change is complete (or undone): forget the intent."""
        path.unlink(missing_ok=True)
        with self._lock:
            for uuid in [u for u, p in self._mine.items() if p == path]:
                del self._mine[uuid]

    # -- recovery ------------------------------------------------------------------------

    @contextlib.contextmanager
    def ended_mounts(self) -> Iterator[list[OwnerLock]]:
        """Claim every mount that left locks, spill files or intents here and ended;
        on exit, release them, removing the lock files of those that left nothing."""
        tags = set()
        for sub in (LOCKS, SPILL, JOURNAL):
            with contextlib.suppress(FileNotFoundError):
                tags.update(t for n in os.listdir(self.cache_dir / sub)
                            if (t := tag_of(n)) is not None)
        tags.discard(self.tag)
        claimed = [lock for t in sorted(tags) if (lock := OwnerLock.claim(self.cache_dir, t))]
        try:
            yield claimed
        finally:
            for lock in claimed:
                lock.release(remove=self.nothing_left(lock.tag))

    def nothing_left(self, tag: str) -> bool:
        """The mount ``tag`` left no intent and no spill file here."""
        return not self.left_by(tag) and not _spill_of(self.cache_dir, tag)

    def left_by(self, tag: str) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if tag_of(p.name) == tag)
        except FileNotFoundError:
            return []

    def read(self, path: Path) -> Intent | None:
        """The intent at ``path``; None (logged) if it is not one. A file that is not an
        intent is removed; one of another imagefs version is left alone."""
        try:
            return Intent.from_json(path.read_bytes())
        except _OtherVersion as exc:
            log.warning("journal %s: %s, left alone", path, exc)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("journal %s is not a valid intent (%s); ignored and removed",
                        path, exc)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        return None

    def leftovers(self, ended: list[OwnerLock]) -> list[tuple[Path, Intent]]:
        """The intents of this account that the ``ended`` mounts left, oldest first;
        half-written temporaries of theirs are removed."""
        found = []
        for lock in ended:
            for path in self.left_by(lock.tag):
                if path.name.startswith("."):
                    path.unlink(missing_ok=True)  # died before the rename: never used
                    continue
                intent = self.read(path)
                if intent is None:
                    continue
                if intent.account != self.account:
                    log.debug("journal %s belongs to another account; left alone", path)
                    continue
                found.append((path, intent))
        found.sort(key=lambda pair: _age(pair[0]))
        return found

    async def recover(self, ended: list[OwnerLock], conn, blocking) -> int:
        """Replay what ended mounts of this account left half done (see the module
        docstring); the number of intents settled. Never raises for an intent."""
        settled = 0
        for path, intent in self.leftovers(ended):
            try:
                outcome = await _replay(intent, conn, blocking)
            except errors.ImagefsError as exc:
                log.warning("%s/%s: an interrupted image change could not be recovered now "
                            "(kept for the next mount): %s", intent.container,
                            intent.sidecar_name, exc)
                continue
            log.info("%s/%s: recovered an image change interrupted by a crash: %s",
                     intent.container, intent.sidecar_name, outcome)
            await blocking.disk(self.remove, path)
            settled += 1
        return settled


def _age(path: Path) -> tuple[int, int]:
    """Oldest first: by time written, then by number (one mount's are numbered)."""
    tail = path.name.split(".", 1)[0].rsplit("-", 1)[-1]
    try:
        written = path.stat().st_mtime_ns
    except FileNotFoundError:
        written = 0
    return written, int(tail) if tail.isdigit() else 0


def _spill_of(cache_dir: Path, tag: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return any(tag_of(n) == tag for n in os.listdir(Path(cache_dir) / SPILL))
    return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync of a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


# -- replaying one intent -------------------------------------------------------------------


async def _replay(intent: Intent, conn, blocking) -> str:
    """Settle ``intent`` with the service; what was done, for the log."""
    async def http(fn, *args, **kwargs):
        return await blocking.http(functools.partial(fn, *args, **kwargs))

    pithos, plankton = conn.pithos, conn.plankton
    if intent.kind is Kind.REGISTER:
        try:
            obj = await http(pithos.head, intent.container, intent.image_name)
        except errors.NotFound:
            obj = None
        if obj is None or obj.is_directory or (obj.uuid and obj.uuid != intent.uuid):
            return f"{intent.image_name} is no longer the object it was; nothing to do"
    try:
        live = await http(plankton.get, intent.uuid)
    except (errors.NotFound, errors.InvalidInput):
        live = None
    decision = decide(intent, live)
    if decision is Decision.UNTOUCHED:
        return f"{decision.value}; left as it was"
    if intent.kind is Kind.UNREGISTER:
        try:
            await http(pithos.delete, intent.container, intent.sidecar_name)
        except errors.NotFound:
            pass
        return "unregistered; the stored sidecar is deleted now"
    assert intent.new is not None
    if decision is Decision.DONE:
        await _store_metafile(intent, live, conn, http)
        return f"{decision.value} (registered as {live.name!r})"
    try:
        image = await _register(intent, intent.new, http, plankton)
    except errors.InvalidInput as exc:
        log.warning("%s/%s: the image service refuses the new registration (%s); putting "
                    "the previous one back", intent.container, intent.sidecar_name, exc)
        if intent.previous is None:
            with contextlib.suppress(errors.NotFound, errors.InvalidInput):
                await http(plankton.unregister, intent.uuid)
            return "the new registration was refused; the file is not registered, as before"
        try:
            image = await _register(intent, intent.previous, http, plankton)
        except errors.InvalidInput as again:
            log.error("%s/%s: the previous registration is refused too: %s",
                      intent.container, intent.sidecar_name, again)
            return "neither registration is accepted any more; the file is not registered"
        await _store_metafile(intent, image, conn, http)
        return f"the new registration was refused; the previous one is back ({image.name!r})"
    await _store_metafile(intent, image, conn, http)
    return f"{decision.value}; finished (registered as {image.name!r})"


async def _register(intent: Intent, registration: Registration, http, plankton) -> Image:
    image = await http(plankton.reregister, intent.location, registration.name,
                       disk_format=registration.disk_format,
                       container_format=registration.container_format,
                       is_public=registration.is_public, properties=registration.properties,
                       status=registration.status, existing_id=intent.uuid)
    if registration.status:  # a real deployment's reply maps it (UNKNOWN); keep what was set
        image = dataclasses.replace(image, status=registration.status)
    return image


async def _store_metafile(intent: Intent, image: Image, conn, http) -> None:
    """What ``Registry`` stores after a registration: the metafile, unless it is stored."""
    content = metafile.render(image)
    try:
        stored = await http(conn.pithos.head, intent.container, intent.sidecar_name)
    except errors.NotFound:
        stored = None
    if stored is not None and stored.hash == top_hash(hashmap_of(content)):
        return
    await http(conn.pithos.put_data, intent.container, intent.sidecar_name, content,
               content_type=OCTET_STREAM)
