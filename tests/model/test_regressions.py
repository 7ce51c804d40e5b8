"""Counterexamples the model test found, shrunk, kept as named tests.

Each replays its operations through the same harness as ``test_model.py``
(errno, listings, contents and metadata compared after every operation, the
service compared at the end), so a fixed bug stays fixed.
"""

from __future__ import annotations

from model_ops import D, Create, HClose, Open, Rename, Rmdir, SetMeta, Sidecar, Truncate, Write


def test_regression_readonly_create_stored_at_close(harness):
    """``open(O_RDONLY|O_CREAT)`` then ``close()``: the empty file is on the service when
    close returns (flush stored only writers' changes; the upload came later, at release)."""
    harness.run([
        Open(0, "c0/y", create=True, trunc=False, writable=False),
        HClose(0),
    ])


def test_regression_rename_onto_itself_after_readonly_create(harness):
    """The same bug seen through rename: the file made by ``open(O_RDONLY|O_CREAT)``
    vanished after close, so renaming it onto itself said ENOENT."""
    harness.run([
        Rmdir("c0/a"),
        Open(0, "c0/a", create=True, trunc=False, writable=False),
        HClose(0),
        Rename("c0/a", "c0/a"),
    ])


def test_regression_setxattr_meta_survives_readdir(harness):
    """``setfattr -n user.pithos.meta.color`` on a listed file, then ``ls``: the cached
    listing still held the old metadata and readdir put it back on the file, so
    ``getfattr`` no longer showed the new key (until the cache expired)."""
    harness.run([
        Create("c0/a", D(0, 0)),
        SetMeta("c0/a", "color", "red"),
    ])


def test_regression_truncate_while_a_reader_is_open(harness):
    """``truncate`` by path while a reader keeps the file open, then the reader closes.
    The upload ran at release, after close(); a reader opened and closed meanwhile
    closed the file under that upload ("file already released"): the truncation was
    lost and the size went back to the old one."""
    harness.run([
        Create("c1/y", D(680, 7821)),
        Open(0, "c1/y", create=False, trunc=False, writable=False),
        Write("c1/y", 690, D(250, 168)),
        Truncate("c1/y", 888),
        HClose(0),
        Truncate("c1/a", 112),
        Truncate("c1/a", 112),
    ])


def test_regression_rename_over_an_image_drops_its_registration(harness):
    """``mv b a`` over a registered ``a``: the service drops a's image with its object
    (the moved object keeps b's id), but the mount kept showing the old registration on
    ``a`` (``user.image.name``) until its cache expired."""
    harness.run([
        Create("c0/a", D(0, 0)),
        Create("c0/b", D(0, 0)),
        Sidecar("c0/a", 0),
        Rename("c0/b", "c0/a"),
    ])
