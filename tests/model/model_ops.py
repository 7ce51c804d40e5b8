"""The reference: what a POSIX filesystem would do with the same operations.

``Reference`` keeps the tree of the test's containers in memory (paths to
inode numbers or ``DIR``, inodes to bytes, object metadata and image
registration, open handles to inodes) and predicts the errno of each
operation the way Linux's VFS orders its checks (``do_renameat2``,
``may_delete``), then applies it. What the service must hold follows from it:
with no descriptor open, every file's last content is stored.

Beyond POSIX it knows the mount's documented rules (docs/semantics-files.md,
docs/semantics-images.md): ``X.meta`` shows the registration of a registered
``X``, a refused text until it is fixed or deleted, or a stored metafile
(which stays, stale, when ``X`` goes and follows ``X`` when it moves); a
``truncate`` by path is stored at once unless a writer is open; a file being
written (changed and not stored yet) refuses ``user.image.*`` with EBUSY.

Operations are small dataclasses (``Op``) whose repr is the Python that
builds them, so a shrunk counterexample pastes into ``test_regressions.py``
as it is. Paths name the containers symbolically (``c0``, ``c1``); the
harness maps them to fresh containers.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field

from imagefs import BLOCK_SIZE

DIR = "dir"
SUFFIX = ".meta"
CONTAINERS = ("c0", "c1")
META_PREFIX = "user.pithos.meta."


@dataclass(frozen=True)
class D:
    """Bytes by recipe: ``size`` pseudo-random bytes from ``seed`` (short reprs)."""

    seed: int
    size: int

    def bytes(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)


#: Sidecar texts the tests write, with the registration each means (None: refused,
#: EINVAL). Property keys lower-case as the service keeps them; a missing name is
#: the file's path in its container.
DOCS: list[tuple[bytes, dict | None]] = [
    (b'{"name": "Alpha", "properties": {"OS": "Linux"}}',
     {"name": "Alpha", "properties": {"os": "Linux"}}),
    (b'{\n  "name": "Beta",\n  "is-public": true,\n  "disk-format": "extdump",\n'
     b'  "properties": {"user": "root", "OS": "BSD"}\n}\n',
     {"name": "Beta", "is-public": True, "disk-format": "extdump",
      "properties": {"user": "root", "os": "BSD"}}),
    (b'{"properties": {"OS": "Windows"}}', {"properties": {"os": "Windows"}}),
    (b'{"Name": "Gamma", "container_format": "ovf", "is-public": "False", "id": "other",'
     b' "size": "12"}', {"name": "Gamma", "container-format": "ovf"}),
    (b'{"name": "x",', None),
    (b'{"name": 42}', None),
    (b'{"name": "y", "properties": ["OS"]}', None),
]
DISK_FORMATS = ("diskdump", "extdump", "ntfsdump")


def registration(doc: dict, path: str) -> dict:
    """A registration with every field: ``doc``'s, the defaults for the rest."""
    return {"name": doc.get("name") or path.split("/", 1)[1],
            "disk-format": doc.get("disk-format", "diskdump"),
            "container-format": doc.get("container-format", "bare"),
            "is-public": doc.get("is-public", False),
            "properties": dict(doc.get("properties", {}))}


def meta_key(key: str) -> str:
    """Object metadata keys as the store compares them: any case, ``_`` as ``-``."""
    return key.lower().replace("_", "-")


def parent(path: str) -> str:
    return path.rpartition("/")[0]


def below(path: str, top: str) -> bool:
    """``path`` is strictly inside directory ``top``."""
    return path.startswith(top + "/")


@dataclass
class Inode:
    data: bytearray = field(default_factory=bytearray)
    meta: dict[str, str] = field(default_factory=dict)  # meta_key -> value
    image: dict | None = None  # the registration (``registration()``'s shape), if any
    stored: bool = True  # False while a file made by open(O_CREAT) was never closed
    dirty: bool = False  # changed through (or while) a writer is open, not stored yet


@dataclass
class Handle:
    ino: int
    writable: bool
    created: bool = False  # its open made the file: its close stores it


class Reference:
    """The expected tree. Each ``op_*`` returns the expected errno (0 on success)
    and changes the tree only on success."""

    def __init__(self, containers=CONTAINERS) -> None:
        self.tree: dict[str, int | str] = {c: DIR for c in containers}
        self.inodes: dict[int, Inode] = {}
        self.handles: dict[int, Handle] = {}
        self._next_ino = 1
        #: Sidecar objects ``X.meta`` on the service (written through the sidecar; they
        #: stay, stale, when X goes, and follow X when it moves).
        self.sidecar_objects: set[str] = set()
        #: Refused sidecar texts, shown as ``X.meta`` until fixed or deleted.
        self.kept: dict[str, bytes] = {}

    # -- queries -----------------------------------------------------------------------

    def is_dir(self, path: str) -> bool:
        return self.tree.get(path) == DIR

    def is_file(self, path: str) -> bool:
        return isinstance(self.tree.get(path), int)

    def inode(self, path: str) -> Inode:
        return self.inodes[self.tree[path]]

    def children(self, path: str) -> list[str]:
        """What ``ls -A`` shows: the tree's entries and the sidecars ``X.meta`` of
        registered files, stored sidecar objects and refused texts."""
        return sorted({p.rsplit("/", 1)[1] for p in self.sidecars() | set(self.tree)
                       if parent(p) == path})

    def sidecars(self) -> set[str]:
        """Every ``X.meta`` the mount shows."""
        registered = {p + SUFFIX for p in self.files() if self.inode(p).image is not None}
        return registered | self.sidecar_objects | set(self.kept)

    def image(self, path: str) -> dict | None:
        return self.inode(path).image if self.is_file(path) else None

    def dirs(self) -> list[str]:
        return sorted(p for p, v in self.tree.items() if v == DIR)

    def files(self) -> list[str]:
        return sorted(p for p, v in self.tree.items() if v != DIR)

    def open_inodes(self) -> set[int]:
        return {h.ino for h in self.handles.values()}

    def writers(self, ino: int) -> bool:
        return any(h.ino == ino and h.writable for h in self.handles.values())

    def busy(self, path: str) -> bool:
        """Being written: what a registration would take is not on the service yet."""
        inode = self.inode(path)
        return inode.dirty or not inode.stored

    # -- path resolution -----------------------------------------------------------------

    def _walk(self, path: str) -> int:
        """The errno of resolving ``path``'s parent (ENOENT/ENOTDIR), else 0."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            kind = self.tree.get("/".join(parts[:i]))
            if kind is None:
                return errno.ENOENT
            if kind != DIR:
                return errno.ENOTDIR
        return 0

    def _file(self, path: str) -> int:
        """Errno of opening an existing file for writing, truncating or stat-ing it."""
        if err := self._walk(path):
            return err
        kind = self.tree.get(path)
        if kind is None:
            return errno.ENOENT
        if kind == DIR:
            return errno.EISDIR
        return 0

    def _new_inode(self, data: bytes = b"") -> int:
        ino = self._next_ino
        self._next_ino += 1
        self.inodes[ino] = Inode(bytearray(data))
        return ino

    def _drop(self, path: str) -> None:
        """Unlink ``path``; its inode lives on while a handle holds it (its image goes with
        the object)."""
        ino = self.tree.pop(path)
        if ino != DIR:
            self.inodes[ino].image = None
            if ino not in self.open_inodes():
                del self.inodes[ino]

    def _stored(self, path: str) -> None:
        """A close (or a truncate by path) stored everything, other writers' changes too."""
        self.inode(path).dirty = False
        self.inode(path).stored = True

    # -- files -------------------------------------------------------------------------

    def op_create(self, path: str, data: D) -> int:
        """open(O_WRONLY|O_CREAT|O_TRUNC), write, close."""
        if err := self._walk(path):
            return err
        if self.is_dir(path):
            return errno.EISDIR
        if self.is_file(path):
            self.inode(path).data[:] = data.bytes()  # same inode: metadata stays
            self._stored(path)
        else:
            self.tree[path] = self._new_inode(data.bytes())
        return 0

    def op_write(self, path: str, offset: int, data: D) -> int:
        if err := self._file(path):
            return err
        _write(self.inode(path).data, offset, data.bytes())
        self._stored(path)
        return 0

    def op_append(self, path: str, data: D) -> int:
        if err := self._file(path):
            return err
        self.inode(path).data.extend(data.bytes())
        self._stored(path)
        return 0

    def op_truncate(self, path: str, size: int) -> int:
        if err := self._file(path):
            return err
        _truncate(self.inode(path).data, size)
        # Stored at once, unless a writer is open: its close stores it.
        if self.writers(self.tree[path]):
            self.inode(path).dirty = True
        else:
            self._stored(path)
        return 0

    def op_unlink(self, path: str) -> int:
        if err := self._file(path):
            return err
        self._drop(path)
        return 0

    # -- directories -------------------------------------------------------------------

    def op_mkdir(self, path: str) -> int:
        if err := self._walk(path):
            return err
        if path in self.tree:
            return errno.EEXIST
        self.tree[path] = DIR
        return 0

    def op_rmdir(self, path: str) -> int:
        if err := self._walk(path):
            return err
        if path not in self.tree:
            return errno.ENOENT
        if not self.is_dir(path):
            return errno.ENOTDIR
        if self.children(path):
            return errno.ENOTEMPTY
        del self.tree[path]
        return 0

    def op_rename(self, src: str, dst: str) -> int:
        """rename(2), checks in do_renameat2/vfs_rename order."""
        if err := self._walk(src) or self._walk(dst):
            return err
        if src not in self.tree:
            return errno.ENOENT
        if below(parent(dst), src) or parent(dst) == src:
            return errno.EINVAL  # into itself
        if below(src, dst):
            return errno.ENOTEMPTY  # onto its own ancestor
        if src == dst:
            return 0
        src_dir = self.is_dir(src)
        if dst in self.tree:
            if src_dir and not self.is_dir(dst):
                return errno.ENOTDIR
            if not src_dir and self.is_dir(dst):
                return errno.EISDIR
            if src_dir and self.children(dst):
                return errno.ENOTEMPTY
            self._drop(dst)
        moved = [p for p in self.tree if p == src or below(p, src)]
        entries = {p: self.tree.pop(p) for p in moved}
        for p, v in entries.items():
            self.tree[dst + p[len(src):]] = v
        # Stored sidecars and refused texts follow their file (or directory).
        side = (lambda p: below(p, src)) if src_dir else (lambda p: p == src + SUFFIX)
        for p in [p for p in self.sidecar_objects if side(p)]:
            self.sidecar_objects.discard(p)
            self.sidecar_objects.add(dst + p[len(src):])
        for p in [p for p in self.kept if side(p)]:
            self.kept[dst + p[len(src):]] = self.kept.pop(p)
        return 0

    # -- object metadata (user.pithos.meta.KEY) ----------------------------------------

    def op_setmeta(self, path: str, key: str, value: str) -> int:
        if err := self._file(path):
            return _meta_errno(err)
        meta = self.inode(path).meta
        if value:
            meta[meta_key(key)] = value
        else:
            meta.pop(meta_key(key), None)
        return 0

    def op_removemeta(self, path: str, key: str) -> int:
        if err := self._file(path):
            return _meta_errno(err)
        meta = self.inode(path).meta
        if meta_key(key) not in meta:
            return errno.ENODATA
        del meta[meta_key(key)]
        return 0

    # -- images: the sidecar X.meta and user.image.* ----------------------------------

    def op_sidecar(self, path: str, doc: int) -> int:
        """Write ``DOCS[doc]`` to ``path``.meta (open, write, close) for a stored file."""
        if not self.is_file(path) or not self.inode(path).stored:
            raise ValueError("sidecars are written for stored files only")
        text, doc_fields = DOCS[doc]
        if doc_fields is None:
            self.kept[path + SUFFIX] = text
            return errno.EINVAL
        self.inode(path).image = registration(doc_fields, path)
        self.sidecar_objects.add(path + SUFFIX)
        self.kept.pop(path + SUFFIX, None)
        return 0

    def op_unsidecar(self, path: str) -> int:
        """``rm path.meta``: unregisters, deletes the stored sidecar, forgets a refused text."""
        side = path + SUFFIX
        if err := self._walk(side):
            return err
        if side not in self.sidecars():
            return errno.ENOENT
        if self.is_file(path):
            self.inode(path).image = None
        self.sidecar_objects.discard(side)
        self.kept.pop(side, None)
        return 0

    def op_setimage(self, path: str, attr: str, value: str) -> int:
        if err := self._file(path):
            if err == errno.EISDIR:
                raise ValueError("image attributes of directories are not generated")
            return err
        inode = self.inode(path)
        if self.busy(path):
            return errno.EBUSY  # "set it once it is closed"
        image = inode.image
        if attr == "name":
            if image is None:
                inode.image = registration({"name": value}, path)
            else:
                image["name"] = value
            return 0
        if image is None:
            return errno.EINVAL  # "set user.image.name first"
        if attr == "is-public":
            if value.lower() not in ("true", "false"):
                return errno.EINVAL
            image["is-public"] = value.lower() == "true"
        elif attr == "disk-format":
            if value.lower() not in DISK_FORMATS:
                return errno.EINVAL
            image["disk-format"] = value.lower()
        elif attr.startswith("properties."):
            key = attr.split(".", 1)[1].lower()
            if value:
                image["properties"][key] = value
            else:
                image["properties"].pop(key, None)
        else:
            raise ValueError(attr)
        return 0

    def op_removeimage(self, path: str, attr: str) -> int:
        if err := self._file(path):
            if err == errno.EISDIR:
                raise ValueError("image attributes of directories are not generated")
            return err
        if self.busy(path):
            return errno.EBUSY
        image = self.inode(path).image
        if image is None:
            return errno.ENODATA
        if attr == "name":
            return errno.EINVAL  # an image needs a name
        if attr == "is-public":
            image["is-public"] = False
        elif attr == "disk-format":
            image["disk-format"] = "diskdump"
        elif attr.startswith("properties."):
            key = attr.split(".", 1)[1].lower()
            if key not in image["properties"]:
                return errno.ENODATA
            del image["properties"][key]
        else:
            raise ValueError(attr)
        return 0

    # -- descriptors kept open across operations ---------------------------------------

    def op_open(self, slot: int, path: str, create: bool, trunc: bool, writable: bool) -> int:
        if slot in self.handles:
            raise ValueError(f"slot {slot} is open")
        if err := self._walk(path):
            return err
        if self.is_dir(path):
            if not writable:
                raise ValueError("read-only opens of directories are not generated")
            return errno.EISDIR
        created = not self.is_file(path)
        if created:
            if not create:
                return errno.ENOENT
            self.tree[path] = self._new_inode()
            self.inode(path).stored = False
        if trunc and writable:
            self.inode(path).data.clear()
            self.inode(path).dirty = True
        self.handles[slot] = Handle(self.tree[path], writable, created)
        return 0

    def op_hwrite(self, slot: int, offset: int, data: D) -> int:
        handle = self.handles[slot]
        if not handle.writable:
            return errno.EBADF
        _write(self.inodes[handle.ino].data, offset, data.bytes())
        if data.size:
            self.inodes[handle.ino].dirty = True
        return 0

    def op_htruncate(self, slot: int, size: int) -> int:
        handle = self.handles[slot]
        if not handle.writable:
            return errno.EINVAL  # ftruncate of a read-only descriptor
        _truncate(self.inodes[handle.ino].data, size)
        self.inodes[handle.ino].dirty = True  # an ftruncate is stored by the close
        return 0

    def handle_data(self, slot: int) -> bytes:
        return bytes(self.inodes[self.handles[slot].ino].data)

    def op_hclose(self, slot: int) -> int:
        handle = self.handles.pop(slot)
        inode = self.inodes[handle.ino]
        if handle.writable or handle.created:
            # A writer's close stores every change; so does the close of the open that
            # made the file. A reader's close stores nothing (never a half-written file).
            inode.dirty = False
            inode.stored = True
        if handle.ino not in self.open_inodes() and handle.ino not in self.tree.values():
            del self.inodes[handle.ino]
        return 0


def _meta_errno(err: int) -> int:
    """Object metadata of a directory: the store keeps none (EOPNOTSUPP on write)."""
    return errno.EOPNOTSUPP if err == errno.EISDIR else err


def _write(buf: bytearray, offset: int, data: bytes) -> None:
    if not data:
        return  # an empty write changes nothing, even past the end
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset:offset + len(data)] = data


def _truncate(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


# -- the operations ----------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One user action; ``kind`` names the ``Reference.op_*`` and ``Real.op_*``
    methods that perform it."""

    def args(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def paths(self) -> list[str]:
        """Paths this operation may change (their contents are re-read after it)."""
        return [v for k, v in self.args().items() if k in ("path", "src", "dst")]


@dataclass(frozen=True)
class Create(Op):
    path: str
    data: D


@dataclass(frozen=True)
class Write(Op):
    path: str
    offset: int
    data: D


@dataclass(frozen=True)
class Append(Op):
    path: str
    data: D


@dataclass(frozen=True)
class Truncate(Op):
    path: str
    size: int


@dataclass(frozen=True)
class Unlink(Op):
    path: str


@dataclass(frozen=True)
class Mkdir(Op):
    path: str


@dataclass(frozen=True)
class Rmdir(Op):
    path: str


@dataclass(frozen=True)
class Rename(Op):
    src: str
    dst: str


@dataclass(frozen=True)
class SetMeta(Op):
    path: str
    key: str
    value: str


@dataclass(frozen=True)
class RemoveMeta(Op):
    path: str
    key: str


@dataclass(frozen=True)
class Sidecar(Op):
    """Write ``DOCS[doc]`` to ``path + ".meta"``."""

    path: str
    doc: int


@dataclass(frozen=True)
class Unsidecar(Op):
    """Remove ``path + ".meta"``."""

    path: str


@dataclass(frozen=True)
class SetImage(Op):
    """``setfattr -n user.image.ATTR -v VALUE path``."""

    path: str
    attr: str
    value: str


@dataclass(frozen=True)
class RemoveImage(Op):
    path: str
    attr: str


@dataclass(frozen=True)
class Open(Op):
    slot: int
    path: str
    create: bool = False
    trunc: bool = False
    writable: bool = True


@dataclass(frozen=True)
class HWrite(Op):
    slot: int
    offset: int
    data: D


@dataclass(frozen=True)
class HTruncate(Op):
    slot: int
    size: int


@dataclass(frozen=True)
class HClose(Op):
    slot: int


__all__ = ["BLOCK_SIZE", "CONTAINERS", "D", "DIR", "DOCS", "META_PREFIX", "SUFFIX", "Reference",
           "Op", "Create", "Write", "Append", "Truncate", "Unlink", "Mkdir", "Rmdir", "Rename",
           "SetMeta", "RemoveMeta", "Sidecar", "Unsidecar", "SetImage", "RemoveImage", "Open",
           "HWrite", "HTruncate", "HClose", "meta_key"]
