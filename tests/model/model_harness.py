"""Running operations on the mount and the reference side by side, and comparing.

``Harness.do(op)`` performs ``op`` with plain syscalls on the real mount
(``Real``) and on the ``Reference``, asserts that both gave the same errno,
then compares everything the op could have changed (``check``): every
directory's ``os.listdir`` (sidecars included, ``.images``/``.versions``
never), every entry's type and size, the contents and object metadata of the
files it touched, what their sidecars show (the registration, a refused
text) and ``user.image.name``, and what each open descriptor reads. Every
``SERVICE_EVERY`` operations and at the end every file is compared, and
``check_service`` compares the containers on the service, read through the
client, with the reference: the same objects with the same bytes and
metadata, directory markers only for directories, and the image service's
registrations of exactly the registered files, with their fields.

A failure message ends with the operations so far, written as Python, ready
to become a ``test_regression_*``.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from model_ops import (CONTAINERS, DIR, DOCS, META_PREFIX, SUFFIX, D, HClose, Op, Reference,
                       below, meta_key, parent)

from imagefs.client.connection import Connection
from imagefs.protocol import headers as H

#: Every this many operations, also compare with the service (when no descriptor is open).
SERVICE_EVERY = 25
#: Read back every file after each operation while the reference holds less than this.
FULL_READ_LIMIT = 64 * 1024
MTIME = "mtime"
IMAGE_PREFIX = "user.image."


@dataclass
class Counters:
    """Totals over a test session (printed in the terminal summary)."""

    ops: int = 0
    failed_ops: int = 0  # operations that ended in an (expected) errno
    runs: int = 0
    service_checks: int = 0
    outcomes: Counter = field(default_factory=Counter)  # (op kind, errno name)


COUNTERS = Counters()


_runs = itertools.count(1)
_session = uuid.uuid4().hex[:4]


def new_harness(root: Path, client: Connection) -> "Harness":
    """A ``Harness`` over two fresh containers (``c0``, ``c1`` in the operations)."""
    run = next(_runs)
    return Harness(root, client, {c: f"m{_session}-{run}-{c}" for c in CONTAINERS})


def errname(code: int) -> str:
    return "OK" if code == 0 else errno.errorcode.get(code, str(code))


class Real:
    """The operations as syscalls on the mount."""

    def __init__(self, root: Path, containers: dict[str, str]) -> None:
        self.root = root
        self.containers = containers
        self.fds: dict[int, int] = {}

    def path(self, path: str) -> str:
        c, _, rest = path.partition("/")
        return os.path.join(self.root, self.containers[c], rest) if rest else \
            os.path.join(self.root, self.containers[c])

    def op_create(self, path: str, data: D) -> None:
        fd = os.open(self.path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_close(fd, 0, data.bytes())

    def op_write(self, path: str, offset: int, data: D) -> None:
        fd = os.open(self.path(path), os.O_WRONLY)
        _write_close(fd, offset, data.bytes())

    def op_append(self, path: str, data: D) -> None:
        fd = os.open(self.path(path), os.O_WRONLY | os.O_APPEND)
        _write_close(fd, None, data.bytes())

    def op_truncate(self, path: str, size: int) -> None:
        os.truncate(self.path(path), size)

    def op_unlink(self, path: str) -> None:
        os.unlink(self.path(path))

    def op_mkdir(self, path: str) -> None:
        os.mkdir(self.path(path))

    def op_rmdir(self, path: str) -> None:
        os.rmdir(self.path(path))

    def op_rename(self, src: str, dst: str) -> None:
        os.rename(self.path(src), self.path(dst))

    def op_setmeta(self, path: str, key: str, value: str) -> None:
        os.setxattr(self.path(path), META_PREFIX + key, value.encode())

    def op_removemeta(self, path: str, key: str) -> None:
        os.removexattr(self.path(path), META_PREFIX + key)

    def op_sidecar(self, path: str, doc: int) -> None:
        fd = os.open(self.path(path) + SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_close(fd, 0, DOCS[doc][0])

    def op_unsidecar(self, path: str) -> None:
        os.unlink(self.path(path) + SUFFIX)

    def op_setimage(self, path: str, attr: str, value: str) -> None:
        os.setxattr(self.path(path), IMAGE_PREFIX + attr, value.encode())

    def op_removeimage(self, path: str, attr: str) -> None:
        os.removexattr(self.path(path), IMAGE_PREFIX + attr)

    def op_open(self, slot: int, path: str, create: bool, trunc: bool, writable: bool) -> None:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | (os.O_CREAT if create else 0) | \
            (os.O_TRUNC if trunc else 0)
        self.fds[slot] = os.open(self.path(path), flags, 0o644)

    def op_hwrite(self, slot: int, offset: int, data: D) -> None:
        _write_all(self.fds[slot], offset, data.bytes())

    def op_htruncate(self, slot: int, size: int) -> None:
        os.ftruncate(self.fds[slot], size)

    def op_hclose(self, slot: int) -> None:
        os.close(self.fds.pop(slot))

    def close_all(self) -> None:
        """After a failure: close what is open, ignoring errors."""
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def _write_all(fd: int, offset: int | None, data: bytes) -> None:
    """Write all of ``data``; an empty write is still a syscall (EBADF on a reader)."""
    view = memoryview(data)
    while True:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n
        if not view:
            return


def _write_close(fd: int, offset: int | None, data: bytes) -> None:
    """Write, then close; the first error wins (close reports a failed upload)."""
    try:
        _write_all(fd, offset, data)
    except OSError:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    os.close(fd)


def read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def read_path(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def mount_meta(path: str) -> dict[str, str]:
    """``user.pithos.meta.*`` of a file on the mount, keys as the reference keeps them."""
    out = {}
    for name in os.listxattr(path):
        if name.startswith(META_PREFIX):
            key = meta_key(name[len(META_PREFIX):])
            if key != MTIME:
                out[key] = os.getxattr(path, name).decode()
    return out


class Harness:
    """One run: fresh containers, a reference, and the operations done so far."""

    def __init__(self, root: Path, client: Connection, containers: dict[str, str]) -> None:
        self.root = root
        self.client = client
        self.containers = containers
        self.ref = Reference(tuple(containers))
        self.real = Real(root, containers)
        self.history: list[Op] = []
        self.broken = False
        for name in containers.values():
            os.mkdir(root / name)
        COUNTERS.runs += 1

    # -- doing -----------------------------------------------------------------------

    def do(self, op: Op) -> None:
        self.history.append(op)
        try:
            expected = getattr(self.ref, "op_" + op.kind)(**op.args())
            try:
                getattr(self.real, "op_" + op.kind)(**op.args())
                got = 0
            except OSError as exc:
                got = exc.errno
            COUNTERS.ops += 1
            COUNTERS.failed_ops += got != 0
            COUNTERS.outcomes[op.kind, errname(got)] += 1
            self.expect(got == expected,
                        f"{op!r}: the reference says {errname(expected)}, the mount "
                        f"{errname(got)}")
            try:
                self.check(op)
                if len(self.history) % SERVICE_EVERY == 0:
                    self.check_all(f"after {op!r}")
            except OSError as exc:
                self.expect(False, f"after {op!r}: comparing failed: {exc!r}")
            if len(self.history) % SERVICE_EVERY == 0 and not self.ref.handles:
                self.check_service()
        except BaseException:
            self.broken = True
            raise

    def run(self, ops: list[Op]) -> None:
        """Replay ``ops`` (a regression), then close what is open and compare the service."""
        for op in ops:
            self.do(op)
        self.finish()

    def finish(self) -> None:
        """Close every descriptor (each close is an op) and compare with the service."""
        if os.environ.get("IMAGEFS_MODEL_TRACE"):
            print(f"run: {len(self.history)} ops, {len(self.ref.files())} files, "
                  f"{len(self.ref.dirs())} dirs: " + " ".join(
                      type(o).__name__ for o in self.history))
        if self.broken:
            self.real.close_all()
            return
        for slot in sorted(self.ref.handles):
            self.do(HClose(slot))
        try:
            try:
                self.check_all("at the end")
            except OSError as exc:
                self.expect(False, f"at the end: comparing failed: {exc!r}")
            self.check_service()
        except Exception:
            self.broken = True
            raise

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise AssertionError(f"{message}\n--- operations so far ---\n{self.transcript()}")

    def transcript(self) -> str:
        return "[\n" + "".join(f"    {op!r},\n" for op in self.history) + "]"

    # -- comparing with the mount --------------------------------------------------------

    def check(self, op: Op) -> None:
        ref = self.ref
        for d in ref.dirs():
            got = sorted(os.listdir(self.real.path(d)))
            self.expect(got == ref.children(d), f"after {op!r}: listing of {d}: the mount "
                        f"shows {got}, the reference {ref.children(d)}")
        for path, kind in ref.tree.items():
            if "/" not in path:
                continue
            st = os.stat(self.real.path(path))
            if kind == DIR:
                self.expect(_is_dir(st), f"after {op!r}: {path} should be a directory")
            else:
                size = len(ref.inodes[kind].data)
                self.expect(not _is_dir(st) and st.st_size == size,
                            f"after {op!r}: {path} should be a file of {size} bytes, "
                            f"stat says mode {st.st_mode:o} size {st.st_size}")
        for side in ref.sidecars():
            st = os.stat(self.real.path(side))
            self.expect(not _is_dir(st), f"after {op!r}: {side} should be a file")
        touched = op.paths()
        everything = sum(len(i.data) for i in ref.inodes.values()) < FULL_READ_LIMIT
        for path in ref.files():
            if everything or any(path == t or below(path, t) for t in touched):
                self.check_file(path, f"after {op!r}")
        for path in self.image_paths():
            if any(path == t or below(path, t) for t in touched):
                self.check_sidecar(path, f"after {op!r}")
        for slot in sorted(ref.handles):
            got = read_fd(self.real.fds[slot])
            want = ref.handle_data(slot)
            self.expect(got == want, f"after {op!r}: descriptor {slot} reads "
                        f"{_describe(got, want)}")

    def check_file(self, path: str, when: str) -> None:
        inode = self.ref.inode(path)
        real = self.real.path(path)
        got = read_path(real)
        self.expect(got == inode.data, f"{when}: {path} reads {_describe(got, inode.data)}")
        meta = mount_meta(real)
        self.expect(meta == inode.meta, f"{when}: {path} has metadata {meta}, the reference "
                    f"{inode.meta}")

    def image_paths(self) -> list[str]:
        """Files, and the names whose sidecar shows."""
        return sorted(set(self.ref.files()) | {p[:-len(SUFFIX)] for p in self.ref.sidecars()})

    def check_sidecar(self, path: str, when: str) -> None:
        """``path.meta`` shows the registration, a refused text, or a stored metafile;
        ``user.image.name`` of ``path`` says whether it is an image."""
        ref = self.ref
        real = self.real.path(path)
        side = path + SUFFIX
        image = ref.image(path)
        if side in ref.kept:  # a refused text shows instead of the registration
            text = read_path(real + SUFFIX)
            self.expect(text == ref.kept[side], f"{when}: {side} reads {text[:80]!r}, the "
                        f"refused text {ref.kept[side][:80]!r}")
            os.getxattr(real + SUFFIX, "user.imagefs.error")
        elif image is not None:
            text = read_path(real + SUFFIX)
            self.expect(os.stat(real + SUFFIX).st_size == len(text),
                        f"{when}: {side}: stat size differs from what reads")
            shown = _registration_shown(json.loads(text))
            self.expect(shown == image, f"{when}: {side} shows {shown}, the reference "
                        f"{image}")
        elif side in ref.sidecar_objects:
            json.loads(read_path(real + SUFFIX))  # a stale metafile, as stored
        if image is not None:
            name = os.getxattr(real, IMAGE_PREFIX + "name").decode()
            self.expect(name == image["name"], f"{when}: {path}: user.image.name is "
                        f"{name!r}, the reference {image['name']!r}")
        if ref.is_file(path) and image is None:
            try:
                os.getxattr(real, IMAGE_PREFIX + "name")
            except OSError as exc:
                self.expect(exc.errno == errno.ENODATA, f"{when}: {path}: user.image.name "
                            f"gives {errname(exc.errno)}")
            else:
                self.expect(False, f"{when}: {path} is an image, the reference says not")

    def check_all(self, when: str) -> None:
        for path in self.ref.files():
            self.check_file(path, when)
        for path in self.image_paths():
            self.check_sidecar(path, when)

    # -- comparing with the service ------------------------------------------------------

    def check_service(self) -> None:
        """The containers' objects as the service has them, against the reference."""
        assert not self.ref.handles
        COUNTERS.service_checks += 1
        pithos = self.client.pithos
        for sym, container in self.containers.items():
            files = {p[len(sym) + 1:]: self.ref.inode(p) for p in self.ref.files()
                     if p.startswith(sym + "/")}
            sidecars = {p[len(sym) + 1:] for p in self.ref.sidecar_objects
                        if p.startswith(sym + "/")}
            dirs = {p[len(sym) + 1:] for p in self.ref.dirs() if p.startswith(sym + "/")}
            objects = list(pithos.list_objects(container))
            stored = {o.name: o for o in objects if not o.is_directory}
            markers = {o.name for o in objects if o.is_directory}
            where = f"on the service, container {sym}"
            self.expect(sorted(stored) == sorted([*files, *sidecars]),
                        f"{where}: objects {sorted(stored)}, the reference has files "
                        f"{sorted(files)} and sidecars {sorted(sidecars)}")
            self.expect(markers <= dirs, f"{where}: directory markers {sorted(markers - dirs)} "
                        "for no directory")
            for d in dirs:
                self.expect(d in markers or any(o.name.startswith(d + "/") for o in objects),
                            f"{where}: directory {d} has neither a marker nor objects")
            for name in stored:
                self.expect(parent(name) == "" or parent(name) in dirs,
                            f"{where}: {name} is in no directory")
            for name, inode in files.items():
                info = stored[name]
                data = pithos.read(container, name, 0, info.size) if info.size else b""
                self.expect(info.size == len(inode.data) and data == inode.data,
                            f"{where}: {name} holds {_describe(data, inode.data)}")
                meta = info.meta if info.meta is not None else pithos.head(container,
                                                                             name).meta
                meta = {meta_key(k): v for k, v in (meta or {}).items()
                        if meta_key(k) != MTIME}
                self.expect(meta == inode.meta, f"{where}: {name} has metadata {meta}, "
                            f"the reference {inode.meta}")
        self.check_images()

    def check_images(self) -> None:
        """The image service's registrations of objects in the containers, against the
        reference: the same files registered, with the same fields."""
        account = self.client.account
        expected = {}
        for path in self.ref.files():
            image = self.ref.image(path)
            if image is not None:
                sym, _, key = path.partition("/")
                expected[H.location(account, self.containers[sym], key)] = (path, image)
        prefixes = tuple(H.location(account, c, "") for c in self.containers.values())
        found = {i.location: i for i in self.client.plankton.list()
                 if i.location.startswith(prefixes)}
        self.expect(sorted(found) == sorted(expected), f"on the service: images at "
                    f"{sorted(found)}, the reference {sorted(expected)}")
        for location, (path, image) in expected.items():
            got = found[location]
            sym, _, key = path.partition("/")
            uuid = self.client.pithos.head(self.containers[sym], key).uuid
            self.expect(got.id == uuid, f"on the service: the image of {path} has id "
                        f"{got.id}, the object {uuid}")
            shown = {"name": got.name, "disk-format": got.disk_format,
                     "container-format": got.container_format, "is-public": got.is_public,
                     "properties": dict(got.properties)}
            self.expect(shown == image, f"on the service: the image of {path} is {shown}, "
                        f"the reference {image}")


def _registration_shown(doc: dict) -> dict:
    """The fields of a sidecar's JSON the reference predicts."""
    return {"name": doc.get("name"), "disk-format": doc.get("disk-format"),
            "container-format": doc.get("container-format"),
            "is-public": doc.get("is-public"),
            "properties": {k.lower(): v for k, v in (doc.get("properties") or {}).items()}}


def _is_dir(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o040000


def _describe(got: bytes, want: bytes) -> str:
    """How two contents differ, briefly."""
    if got == want:
        return "the same bytes"
    if len(got) != len(want):
        return f"{len(got)} bytes, the reference {len(want)}"
    first = next(i for i in range(len(got)) if got[i] != want[i])
    return f"{len(got)} bytes differing from the reference first at offset {first}"
