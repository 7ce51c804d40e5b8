"""Inodes: which path each inode number names, what is known about it, and for how long.

The store has paths, the kernel wants inode numbers. ``Tree`` hands out a
number per path the first time the kernel meets it (lookup, create, mkdir,
an accepted readdir entry) and keeps it while the kernel holds a lookup
count or a handle is open; ``forget`` gives numbers back. Numbers are never
reused (a counter), so no generation numbers are needed.

Subtleties:

- A path whose kind changes (another client replaced a file by a directory)
  gets a new inode: the kernel must never see one inode change type.
- ``detach`` takes a node out of the namespace (unlink, rmdir, rename over it)
  but keeps it while the kernel or an open handle refers to it: a file
  unlinked while open stays readable and writable until its last release
  (pyfuse3 ``gotchas.rst``).
- ``move`` renames a node and every node below it; inode numbers stay, as
  the kernel expects after rename.
- What the service said about a path (``info``) is trusted until
  ``expires`` (the mount's cache timeout); a directory may also carry its
  last listing (``listing``) for the same time, which answers lookups of
  present and absent names without a request. A short negative cache
  remembers names found missing. The filesystem updates all three for its
  own changes, so they are visible at once.

Everything here runs on the trio thread and never awaits.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from imagefs.client.models import ContainerInfo, ObjectInfo
from imagefs.errors import NotFound

ROOT_INODE = 1  # pyfuse3.ROOT_INODE, without importing pyfuse3 here


class Kind(enum.Enum):
    ROOT = "root"
    CONTAINER = "container"
    DIR = "dir"
    FILE = "file"

    @property
    def is_dir(self) -> bool:
        return self is not Kind.FILE


@dataclass
class Attr:
    """What ``stat`` shows for an inode; the FUSE glue adds mode, owner and timeouts."""

    ino: int
    kind: Kind
    size: int
    mtime_ns: int
    #: Seconds the kernel may trust these attributes; None means the mount's cache timeout.
    #: 0 for a file whose stored mtime is not known yet (a real deployment's listing).
    attr_timeout: float | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind.is_dir


@dataclass
class Entry:
    """One name of a directory listing."""

    kind: Kind
    info: ObjectInfo | ContainerInfo | None = None
    marker: bool = False  # DIR: an application/directory object exists at the path


@dataclass
class Listing:
    entries: dict[str, Entry]
    expires: float
    batch: object = None  # filesystem.MetaBatch for entries listed without metadata


# -- paths --------------------------------------------------------------------------------


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def split(path: str) -> tuple[str, str]:
    """(container, object name) of a mount path; the name is "" for a container."""
    container, _, key = path.partition("/")
    return container, key


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def is_below(path: str, top: str) -> bool:
    return path.startswith(top + "/")


# -- the X-Object-Meta-Mtime convention ---------------------------------------------------

MTIME_KEY = "Mtime"


def format_mtime(ns: int) -> str:
    """Unix seconds as a decimal string, exact to the nanosecond (``1371628822.5``)."""
    seconds, frac = divmod(int(ns), 1_000_000_000)
    if not frac:
        return str(seconds)
    return f"{seconds}.{frac:09d}".rstrip("0")


def parse_mtime(text: str | None) -> int | None:
    """Nanoseconds of a stored ``Mtime`` (None if absent or malformed).

    Parsed as decimal text, not as a float, so that nanoseconds survive:
    rsync compares them.
    """
    if not text:
        return None
    text = text.strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not (whole.isdigit() or (not whole and frac)) or (frac and not frac.isdigit()):
        return None
    ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    return -ns if negative else ns


def object_mtime_ns(info: ObjectInfo) -> int:
    """st_mtime of an object: its stored Mtime if any, else its Last-Modified."""
    stored = parse_mtime((info.meta or {}).get(MTIME_KEY))
    if stored is not None:
        return stored
    return int(info.mtime * 1_000_000_000)


# -- nodes --------------------------------------------------------------------------------


class Node:
    """One inode. Fields change only on the trio thread."""

    __slots__ = ("ino", "kind", "path", "lookups", "handles", "info", "expires", "marker",
                 "stored", "unlinked", "openfile", "listing", "batch", "mtime_ns")

    def __init__(self, ino: int, kind: Kind, path: str) -> None:
        self.ino = ino
        self.kind = kind
        self.path = path
        self.lookups = 0  # the kernel's count (lookup, create, mkdir, readdir entries)
        self.handles = 0  # open file or directory handles
        self.info: ObjectInfo | ContainerInfo | None = None
        self.expires = 0.0  # monotonic time until which ``info`` is trusted
        self.marker = False  # DIR: an application/directory object exists at the path
        self.stored = True  # FILE: an object exists at the path (False: created, not closed)
        self.unlinked = False  # out of the namespace, kept for the kernel or open handles
        self.openfile = None  # files.OpenFile while open for writing
        self.listing: Listing | None = None  # DIR/CONTAINER/ROOT: last listing
        self.batch = None  # filesystem.MetaBatch that will fetch this file's metadata
        self.mtime_ns = 0  # DIR/ROOT without an object: when the mount first saw it

    def __repr__(self) -> str:
        return f"<Node {self.ino} {self.kind.value} {self.path!r}>"

    @property
    def container(self) -> str:
        return split(self.path)[0]

    @property
    def key(self) -> str:
        return split(self.path)[1]

    @property
    def name(self) -> str:
        return basename(self.path)

    def fresh(self, now: float) -> bool:
        """True while what the service said (``info``, or "a pseudo-directory") holds."""
        return now < self.expires

    def remember(self, info: ObjectInfo | ContainerInfo | None, expires: float) -> None:
        self.info = info
        self.expires = expires


class Tree:
    """The inode table: numbers, paths, lookup counts, listings and misses."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        root = Node(ROOT_INODE, Kind.ROOT, "")
        root.lookups = 1  # never forgotten
        root.mtime_ns = time.time_ns()
        self.root = root
        self.nodes: dict[int, Node] = {ROOT_INODE: root}
        self.paths: dict[str, Node] = {"": root}
        self._misses: dict[str, float] = {}
        self._next_ino = ROOT_INODE + 1

    # -- finding ----------------------------------------------------------------------

    def get(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise NotFound(f"inode {ino} is not known (forgotten)")
        return node

    def at(self, path: str) -> Node | None:
        return self.paths.get(path)

    def bind(self, path: str, kind: Kind) -> Node:
        """The node of ``path``, created if new; a node of another kind is detached."""
        node = self.paths.get(path)
        if node is not None:
            if node.kind is kind:
                return node
            self.detach(node)
        node = Node(self._next_ino, kind, path)
        self._next_ino += 1
        node.mtime_ns = time.time_ns()
        self.nodes[node.ino] = node
        self.paths[path] = node
        self._misses.pop(path, None)
        return node

    def below(self, path: str) -> list[Node]:
        """Nodes strictly below ``path`` still in the namespace."""
        if not path:
            return [n for p, n in self.paths.items() if p]
        prefix = path + "/"
        return [n for p, n in self.paths.items() if p.startswith(prefix)]

    # -- changing the namespace -------------------------------------------------------

    def detach(self, node: Node) -> None:
        """Take ``node`` out of the namespace; dropped once nothing refers to it."""
        if self.paths.get(node.path) is node:
            del self.paths[node.path]
        node.unlinked = True
        self.drop_if_unused(node)

    def move(self, node: Node, new_path: str) -> None:
        """Rename ``node`` and everything below it. The caller detached what was at
        ``new_path``."""
        old = node.path
        moving = [node] + self.below(old)
        for n in moving:
            if self.paths.get(n.path) is n:
                del self.paths[n.path]
        for n in moving:
            n.path = new_path + n.path[len(old):]
            stale = self.paths.get(n.path)
            if stale is not None and stale is not n:
                stale.unlinked = True
                self.drop_if_unused(stale)
            self.paths[n.path] = n
            self._misses.pop(n.path, None)

    def forget(self, ino: int, count: int) -> None:
        node = self.nodes.get(ino)
        if node is None or node.ino == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - count)
        self.drop_if_unused(node)

    def drop_if_unused(self, node: Node) -> None:
        """Forget ``node`` when neither the kernel nor a handle nor an upload needs it.

        A node still in the namespace whose kernel count fell to zero is dropped
        too: the path gets a new number the next time the kernel looks it up.
        """
        if node.ino == ROOT_INODE or node.lookups > 0 or node.handles > 0:
            return
        if node.openfile is not None:
            return
        self.nodes.pop(node.ino, None)
        if self.paths.get(node.path) is node:
            del self.paths[node.path]

    # -- negative cache ---------------------------------------------------------------

    def missing(self, path: str) -> bool:
        expires = self._misses.get(path)
        if expires is None:
            return False
        if self.clock() >= expires:
            del self._misses[path]
            return False
        return True

    def remember_missing(self, path: str, expires: float) -> None:
        if len(self._misses) > 4096:  # bounded: drop the expired, then everything
            now = self.clock()
            self._misses = {p: e for p, e in self._misses.items() if e > now}
            if len(self._misses) > 4096:
                self._misses.clear()
        self._misses[path] = expires

    def forget_missing(self, path: str) -> None:
        self._misses.pop(path, None)

    # -- listings ---------------------------------------------------------------------

    def listing(self, path: str) -> Listing | None:
        """The fresh listing of directory ``path``, if one is cached."""
        node = self.paths.get(path)
        if node is None or node.listing is None:
            return None
        if self.clock() >= node.listing.expires:
            node.listing = None
            return None
        return node.listing

    def listed(self, path: str, entry: Entry | None) -> None:
        """Record our own change of ``path`` in its parent's cached listing."""
        parent = self.paths.get(parent_of(path))
        if parent is None or parent.listing is None:
            return
        name = basename(path)
        if entry is None:
            parent.listing.entries.pop(name, None)
        else:
            parent.listing.entries[name] = entry

    def forget_listings(self, path: str) -> None:
        """Drop the cached listings of ``path`` and below (after a directory moved)."""
        for n in [self.paths.get(path)] + self.below(path):
            if n is not None:
                n.listing = None
