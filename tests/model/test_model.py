"""Random sequences of file, directory and image operations on the mount, against the
reference.

Hypothesis draws the operations (``MountMachine``: one rule per ``Op``): create,
write at offsets (rarely across the 4 MiB block boundary), append, truncate,
unlink, mkdir, rmdir, rename of files and directories within and across two
containers, ``user.pithos.meta.*``, sidecar writes (valid and refused) and
deletes, ``user.image.*``, and descriptors kept open across other operations.
The harness performs each on the mount and on the reference and compares
after every one (errno, listings, sizes, contents, metadata, sidecars, open
descriptors), and with the service every ``SERVICE_EVERY`` operations and at
the end of each run. Paths are drawn mostly from what exists (or a new name
in an existing directory) over a small pool of names, so that operations
collide: a file where a directory is wanted, a rename onto a non-empty
directory, into itself, over an image.

Batches of examples run until at least ``IMAGEFS_MODEL_OPS`` operations (2000 by
default) were performed and ``IMAGEFS_MODEL_SECONDS`` (60) have passed, so a
fast machine tests more and a slow one still runs the minimum; raise both for
a soak. A failure is shrunk by hypothesis; its message ends with the
operations as Python, to keep as a ``test_regression_*`` in
``test_regressions.py``.
"""

from __future__ import annotations

import os
import time

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from model_harness import COUNTERS, new_harness
from model_ops import (
    BLOCK_SIZE,
    CONTAINERS,
    D,
    Append,
    Create,
    HClose,
    HTruncate,
    HWrite,
    Mkdir,
    Open,
    RemoveImage,
    RemoveMeta,
    Rename,
    Rmdir,
    SetImage,
    SetMeta,
    Sidecar,
    Truncate,
    Unlink,
    Unsidecar,
    Write,
)

MIN_OPS = int(os.environ.get("IMAGEFS_MODEL_OPS", "2000"))
#: After MIN_OPS, more batches while the run is younger than this (seconds).
BUDGET = float(os.environ.get("IMAGEFS_MODEL_SECONDS", "60"))
STEPS = 50
BATCH = 8
NAMES = ("a", "b", "x", "y")
META_KEYS = ("color", "Color", "two-words", "TWO_WORDS")
META_VALUES = ("red", "blue", "", "a b")
SLOTS = 2
#: Sidecar texts: valid ones twice as often as refused ones.
DOC_CHOICES = [0, 1, 2, 3] * 2 + [4, 5, 6]
IMAGE_VALUES = {
    "name": ["Alpha", "Delta"],
    "is-public": ["true", "false", "maybe"],
    "disk-format": ["extdump", "diskdump", "qcow9"],
    "properties.os": ["Linux", "", "Plan 9"],
    "properties.USER": ["root", ""],
}
MAX_DEPTH = 3  # c0/a/b/c at most

#: Offsets and sizes: mostly small; rarely around the 4 MiB block boundary.
small = st.integers(0, 8192)
near_block = st.integers(-4096, 4096).map(lambda k: BLOCK_SIZE + k)
offsets = st.sampled_from(["small"] * 19 + ["block"]).flatmap(
    lambda w: small if w == "small" else near_block)
datas = st.builds(D, st.integers(0, 1 << 16),
                  st.sampled_from(["tiny"] * 3 + ["small"] * 2).flatmap(
                      lambda w: st.integers(0, 64) if w == "tiny" else st.integers(0, 8192)))


class MountMachine(RuleBasedStateMachine):
    mount = None
    client = None

    def __init__(self) -> None:
        super().__init__()
        self.h = new_harness(self.mount.path, self.client)
        self.ref = self.h.ref

    # -- drawing paths ------------------------------------------------------------------

    def paths(self, data, want: str = "any", label: str = "path") -> str:
        """Mostly what the operation wants (an existing ``file`` or ``dir``, or a ``new``
        name in an existing directory), sometimes anything, so that operations collide."""
        files = self.ref.files()
        dirs = self.ref.dirs()
        entries = [p for p in dirs if "/" in p]
        new = [f"{d}/{n}" for d in dirs if d.count("/") < MAX_DEPTH for n in NAMES
               if f"{d}/{n}" not in self.ref.tree]
        pools = {
            "file": files,
            "dir": entries,
            "new": new,
        }
        weights = {"file": 6, "dir": 2, "new": 2, "any": 1} if want == "file" else \
            {"dir": 6, "file": 2, "new": 2, "any": 1} if want == "dir" else \
            {"new": 6, "file": 2, "dir": 2, "any": 1} if want == "new" else \
            {"file": 3, "dir": 3, "new": 3, "any": 1}
        kinds = [k for k, w in weights.items() for _ in range(w) if pools.get(k, True)]
        kind = data.draw(st.sampled_from(kinds), label=f"{label} kind")
        if kind == "any":
            return data.draw(st.builds(lambda c, ns: "/".join([c, *ns]),
                                       st.sampled_from(CONTAINERS),
                                       st.lists(st.sampled_from(NAMES), min_size=1,
                                                max_size=MAX_DEPTH)), label=label)
        return data.draw(st.sampled_from(pools[kind]), label=label)

    def slot(self, data) -> int:
        return data.draw(st.sampled_from(sorted(self.ref.handles)), label="slot")

    # -- rules ------------------------------------------------------------------------------

    @initialize(data=st.data(), count=st.integers(2, 8))
    def populate(self, data, count):
        """Start from a few directories and files (so that most runs have a tree)."""
        for _ in range(count):
            if data.draw(st.booleans(), label="directory"):
                self.h.do(Mkdir(self.paths(data, "new")))
            else:
                self.h.do(Create(self.paths(data, "new"), data.draw(datas, label="content")))

    @rule(data=st.data(), content=datas)
    def create(self, data, content):
        self.h.do(Create(self.paths(data, "new"), content))

    @rule(data=st.data(), content=datas)
    def create_more(self, data, content):
        self.h.do(Create(self.paths(data, "new"), content))

    @precondition(lambda self: self.ref.files())
    @rule(data=st.data(), offset=offsets, content=datas)
    def write(self, data, offset, content):
        if offset >= BLOCK_SIZE - 4096 and content.size == 0:
            content = D(content.seed, 8192)  # a write across the boundary, not a hole
        self.h.do(Write(self.paths(data, "file"), offset, content))

    @precondition(lambda self: self.ref.files())
    @rule(data=st.data(), content=datas)
    def append(self, data, content):
        self.h.do(Append(self.paths(data, "file"), content))

    @precondition(lambda self: self.ref.files())
    @rule(data=st.data(), size=offsets)
    def truncate(self, data, size):
        self.h.do(Truncate(self.paths(data, "file"), size))

    @precondition(lambda self: self.ref.files())
    @rule(data=st.data())
    def unlink(self, data):
        self.h.do(Unlink(self.paths(data, "file")))

    @rule(data=st.data())
    def mkdir(self, data):
        self.h.do(Mkdir(self.paths(data, "new")))

    @rule(data=st.data())
    def rmdir(self, data):
        self.h.do(Rmdir(self.paths(data, "dir")))

    @rule(data=st.data())
    def rename(self, data):
        self.h.do(Rename(self.paths(data, "any", "src"), self.paths(data, "any", "dst")))

    @rule(data=st.data())
    def rename_more(self, data):
        self.h.do(Rename(self.paths(data, "any", "src"), self.paths(data, "any", "dst")))

    @precondition(lambda self: self.ref.files())
    @rule(data=st.data(), key=st.sampled_from(META_KEYS), value=st.sampled_from(META_VALUES))
    def setmeta(self, data, key, value):
        self.h.do(SetMeta(self.paths(data, "file"), key, value))

    @precondition(lambda self: self.ref.files())
    @rule(data=st.data(), key=st.sampled_from(META_KEYS))
    def removemeta(self, data, key):
        self.h.do(RemoveMeta(self.paths(data, "file"), key))

    # -- images -------------------------------------------------------------------------

    def stored_files(self) -> list[str]:
        return [p for p in self.ref.files() if self.ref.inode(p).stored]

    def image_target(self, data) -> str:
        """A stored file mostly; sometimes a missing one (never a directory)."""
        files = self.stored_files()
        path = data.draw(st.sampled_from(files + ([None] if files else [None])), label="path")
        if path is None:
            path = self.paths(data, "new")
            if self.ref.is_dir(path):
                path = files[0] if files else path + "/none"
        return path

    @precondition(lambda self: self.stored_files())
    @rule(data=st.data(), doc=st.sampled_from(DOC_CHOICES))
    def sidecar(self, data, doc):
        path = data.draw(st.sampled_from(self.stored_files()), label="path")
        self.h.do(Sidecar(path, doc))

    @precondition(lambda self: self.ref.files() or self.ref.sidecars())
    @rule(data=st.data())
    def unsidecar(self, data):
        shown = sorted(p[:-len(".meta")] for p in self.ref.sidecars())
        choices = shown * 3 + self.ref.files()
        self.h.do(Unsidecar(data.draw(st.sampled_from(choices), label="path")))

    @precondition(lambda self: self.stored_files())
    @rule(data=st.data(), attr=st.sampled_from(sorted(IMAGE_VALUES)))
    def setimage(self, data, attr):
        value = data.draw(st.sampled_from(IMAGE_VALUES[attr]), label="value")
        self.h.do(SetImage(self.image_target(data), attr, value))

    @precondition(lambda self: self.stored_files())
    @rule(data=st.data(), attr=st.sampled_from(sorted(IMAGE_VALUES)))
    def removeimage(self, data, attr):
        self.h.do(RemoveImage(self.image_target(data), attr))

    # -- descriptors --------------------------------------------------------------------

    @precondition(lambda self: len(self.ref.handles) < SLOTS)
    @rule(data=st.data(), create=st.booleans(), trunc=st.booleans(), writable=st.booleans())
    def open(self, data, create, trunc, writable):
        path = self.paths(data, "file")
        if self.ref.is_dir(path):
            writable = True  # a read-only open of a directory is a directory handle
        free = min(set(range(SLOTS)) - set(self.ref.handles))
        self.h.do(Open(free, path, create, trunc and writable, writable))

    @precondition(lambda self: self.ref.handles)
    @rule(data=st.data(), offset=offsets, content=datas)
    def hwrite(self, data, offset, content):
        self.h.do(HWrite(self.slot(data), offset, content))

    @precondition(lambda self: self.ref.handles)
    @rule(data=st.data(), size=offsets)
    def htruncate(self, data, size):
        self.h.do(HTruncate(self.slot(data), size))

    @precondition(lambda self: self.ref.handles)
    @rule(data=st.data())
    def hclose(self, data):
        self.h.do(HClose(self.slot(data)))

    def teardown(self):
        self.h.finish()


def test_model(model_mount, model_client):
    """At least MIN_OPS random operations, each compared with the reference."""
    MountMachine.mount, MountMachine.client = model_mount, model_client
    start_ops, start = COUNTERS.ops, time.monotonic()
    batches = 0
    while COUNTERS.ops - start_ops < MIN_OPS or time.monotonic() - start < BUDGET:
        run_state_machine_as_test(MountMachine, settings=settings(
            max_examples=BATCH, stateful_step_count=STEPS, deadline=None, database=None,
            suppress_health_check=list(HealthCheck), print_blob=True))
        batches += 1
    print(f"\nmodel: {COUNTERS.ops - start_ops} operations in {batches} batches, "
          f"{time.monotonic() - start:.1f} s")
