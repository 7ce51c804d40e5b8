"""Counterexamples the model test found, shrunk, kept as named tests.

Each replays its operations through the same harness as ``test_model.py``
(errno, listings, contents and metadata compared after every operation, the
service compared at the end), so a fixed bug stays fixed.
"""

from __future__ import annotations

from model_ops import (D, Create, HClose, HWrite, Mkdir, Open, RemoveImage, Rename, Rmdir,
                       RemoveMeta, SetImage, SetMeta, Sidecar, Truncate, Unlink, Write)


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


def test_regression_a_readers_close_does_not_store_a_file_being_created(harness):
    """A file made by ``open(O_CREAT)`` is not on the service until that descriptor
    closes: another reader's ``close()`` (the harness's own ``cat``) stored it, half
    written, so ``user.image.*`` no longer said EBUSY."""
    harness.run([
        Open(0, "c0/a", create=True, trunc=False, writable=False),
        Mkdir("c0/x"),
        RemoveImage("c0/a", "disk-format"),
        Open(1, "c0/a", create=False, trunc=False, writable=True),
        HWrite(1, 0, D(1, 100)),
        SetImage("c0/a", "name", "Alpha"),
        HClose(0),
        SetImage("c0/a", "name", "Alpha"),
        HClose(1),
        SetImage("c0/a", "name", "Alpha"),
    ])


def test_regression_metadata_set_before_the_first_close_reads_back(harness):
    """``setfattr -n user.pithos.meta.color`` on a file still being created was accepted
    (kept for the upload) but ``getfattr`` said ENODATA until the file was closed."""
    harness.run([
        Open(0, "c0/x", create=True, trunc=False, writable=False),
        SetMeta("c0/x", "color", "red"),
        HClose(0),
    ])


def test_regression_metadata_of_a_new_file_renamed_over_a_stored_one(harness):
    """A file not stored yet, renamed over a stored one (``mv new old`` while ``new`` is
    still open): its attributes were read from the replaced object, so ``getfattr``
    listed ``color`` but could not read it, and removing it said ENODATA."""
    harness.run([
        Create("c1/b", D(1, 5)),
        SetMeta("c1/b", "TWO_WORDS", "a b"),
        Open(0, "c0/a", create=True, trunc=False, writable=False),
        SetMeta("c0/a", "color", "red"),
        Rename("c0/a", "c1/b"),
        SetMeta("c1/b", "two-words", "blue"),
        RemoveMeta("c1/b", "color"),
        HClose(0),
    ])


def test_regression_a_private_image_moved_over_a_public_one_stays_private(harness):
    """``mv a b`` where ``b`` was a public image: the store keeps grants with the path,
    so ``a``'s private image became public (behaviour.md: a move keeps the public
    status)."""
    harness.run([
        Create("c0/a", D(1, 5)),
        Create("c0/b", D(2, 5)),
        Sidecar("c0/a", 0),
        Sidecar("c0/b", 1),
        Rename("c0/a", "c0/b"),
    ])


def test_regression_a_refused_sidecar_text_keeps_its_directory_non_empty(harness):
    """A refused ``x.meta`` text stays listed after ``x`` is removed, so its directory is
    not empty: renaming an empty directory over it said OK and dropped the text."""
    harness.run([
        Mkdir("c0/a"),
        Mkdir("c0/b"),
        Create("c0/a/x", D(41827, 59)),
        Sidecar("c0/a/x", 4),
        Unlink("c0/a/x"),
        Rename("c0/b", "c0/a"),
        Rmdir("c0/a"),
    ])
