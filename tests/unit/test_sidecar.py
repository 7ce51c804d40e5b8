"""Names with a meaning (imagefs.image.sidecar), as tables."""

from __future__ import annotations

import logging

import pytest

from imagefs.image import sidecar
from imagefs.image.metafile import Registration, parse
from imagefs.image.sidecar import PendingSidecars

# -- sidecars ---------------------------------------------------------------------------------

SIDECARS = [
    # name, is a sidecar, image it belongs to
    ("debian_base3.diskdump.meta", True, "debian_base3.diskdump"),
    ("images/debian.diskdump.meta", True, "images/debian.diskdump"),
    ("x.meta", True, "x"),
    (".hidden.meta", True, ".hidden"),
    ("a.meta.meta", True, "a.meta"),
    ("a b.meta", True, "a b"),
    (".meta", False, None),
    ("images/.meta", False, None),
    ("meta", False, None),
    ("x.META", False, None),
    ("x.meta~", False, None),
    (".x.meta.swp", False, None),
    ("#x.meta#", False, None),
    (".#x.meta", False, None),  # emacs' lock of x.meta
    ("x.metadata", False, None),
    ("x.diskdump", False, None),
]


@pytest.mark.parametrize("name, is_sidecar, image", SIDECARS, ids=[r[0] for r in SIDECARS])
def test_sidecar_names(name, is_sidecar, image):
    assert sidecar.is_sidecar(name) is is_sidecar
    if is_sidecar:
        assert sidecar.image_of(name) == image
        assert sidecar.sidecar_of(image) == name
    else:
        with pytest.raises(ValueError):
            sidecar.image_of(name)


# -- temporaries ------------------------------------------------------------------------------

TEMPORARIES = [
    # name, tool (None: an ordinary name)
    (".debian.diskdump.meta.swp", "vim swap"),
    (".x.meta.swo", "vim swap"),
    (".x.meta.swx", "vim swap"),
    (".bashrc.swp", "vim swap"),
    ("4913", "vim probe"),
    ("5036", "vim probe"),
    ("images/4913", "vim probe"),
    ("x.meta~", "backup"),
    ("x.meta.~1~", "backup"),
    ("#x.meta#", "emacs auto-save"),
    (".#x.meta", "emacs lock"),
    ("x.meta.save", "nano emergency save"),
    ("x.meta.save.1", "nano emergency save"),
    ("sedAb12Cd", "sed -i"),
    (".debian.diskdump.a1B2c3", "rsync"),
    (".x.meta.Zz09Qq", "rsync"),
    (".~lock.x.meta#", "LibreOffice lock"),
    (".goutputstream-ABC123", "gedit"),
    (".x.meta.kate-swp", "kate swap"),
    ("~$report.docx", "Office lock"),
    ("tmpa1b2c3_d", "Python tempfile"),
    ("tmpa1b2c3_d.meta", "Python tempfile"),
    ("x.tmp", "temporary"),
    ("debian_base3.diskdump", None),
    ("debian_base3.diskdump.meta", None),
    ("images", None),
    ("win8.diskdump", None),
    (".versions", None),
    ("4914", None),
    ("4912", None),
    ("README", None),
    ("sed", None),
    ("sedAb12C", None),
    (".x.swp.meta", None),
    ("x.swp", None),
    ("x.save.meta", None),
    ("~", None),
    ("tmp", None),
]


@pytest.mark.parametrize("name, tool", TEMPORARIES, ids=[r[0] for r in TEMPORARIES])
def test_temporary_names(name, tool):
    assert sidecar.temporary_kind(name) == tool
    assert sidecar.is_temporary(name) is (tool is not None)


# -- versions, catalog, reserved --------------------------------------------------------------

VERSION_ENTRIES = [
    # entry, parsed
    ("debian_base3.diskdump.meta@1352", ("debian_base3.diskdump.meta", 1352)),
    ("a@b@12", ("a@b", 12)),
    ("user@example.org@7", ("user@example.org", 7)),
    ("x@0", ("x", 0)),
    ("@5", None),
    ("x@", None),
    ("x", None),
    ("x@1a", None),
    ("x@007", None),
    ("x@-1", None),
    ("x@١٢", None),  # Arabic-Indic digits are not a version
]


@pytest.mark.parametrize("entry, parsed", VERSION_ENTRIES, ids=[r[0] for r in VERSION_ENTRIES])
def test_version_entries(entry, parsed):
    assert sidecar.parse_version_entry(entry) == parsed
    if parsed:
        assert sidecar.version_entry(*parsed) == entry


def test_catalog_entries():
    assert sidecar.catalog_entry("5a8d2c44-2b9e") == "5a8d2c44-2b9e.meta"
    assert sidecar.image_id_of("5a8d2c44-2b9e.meta") == "5a8d2c44-2b9e"
    assert sidecar.image_id_of("7h1rd-1m4g3-1d.meta") == "7h1rd-1m4g3-1d"
    for entry in ("x", ".meta", "a b.meta", "a/b.meta", "x.meta~"):
        assert sidecar.image_id_of(entry) is None


@pytest.mark.parametrize("name, reserved", [
    (".images", True), (".versions", True), ("pithos/.versions", True), ("images", False),
    (".images.meta", False), (".Versions", False)])
def test_reserved_names(name, reserved):
    assert sidecar.is_reserved(name) is reserved


# -- pending sidecars -------------------------------------------------------------------------

A = Registration(name="A")
B = Registration(name="B")


def test_pending_waits_until_popped():
    """A sidecar written before its image waits for the image's upload."""
    pending = PendingSidecars()
    pending.add("pithos", "images/a.diskdump", A)
    assert ("pithos", "images/a.diskdump") in pending
    assert pending.get("pithos", "images/a.diskdump") == A
    assert pending.pop("pithos", "other") is None
    assert pending.pop("pithos", "images/a.diskdump") == A
    assert pending.pop("pithos", "images/a.diskdump") is None
    assert len(pending) == 0


def test_pending_later_sidecar_wins():
    pending = PendingSidecars()
    pending.add("pithos", "a", A)
    pending.add("pithos", "a", B)
    assert pending.pop("pithos", "a") == B


def test_pending_is_per_container():
    pending = PendingSidecars()
    pending.add("pithos", "a", A)
    pending.add("other", "a", B)
    assert pending.pop("other", "a") == B
    assert pending.pop("pithos", "a") == A


def test_pending_discard():
    """Deleting the waiting sidecar forgets it."""
    pending = PendingSidecars()
    pending.add("pithos", "a", A)
    pending.discard("pithos", "a")
    pending.discard("pithos", "a")
    assert len(pending) == 0


def test_pending_rename_follows_path_name():
    """mv of a waiting sidecar: a name taken from the path follows the path."""
    pending = PendingSidecars()
    pending.add("pithos", "a", parse(b"{}", default_name="a"))
    pending.add("pithos", "b", parse(b'{"name": "Bee"}', default_name="b"))
    pending.rename("pithos", "a", "other", "dir/a2")
    pending.rename("pithos", "b", "pithos", "b2")
    pending.rename("pithos", "missing", "pithos", "x")
    assert sorted(pending) == [("other", "dir/a2"), ("pithos", "b2")]
    assert pending.pop("other", "dir/a2").name == "dir/a2"
    assert pending.pop("pithos", "b2").name == "Bee"


def test_pending_is_bounded(caplog):
    pending = PendingSidecars(limit=2)
    pending.add("c", "1", A)
    pending.add("c", "2", A)
    pending.add("c", "1", B)  # refreshed: now the newest
    with caplog.at_level(logging.WARNING, logger="imagefs.image.sidecar"):
        pending.add("c", "3", A)
    assert sorted(pending) == [("c", "1"), ("c", "3")]
    assert "dropped c/2" in caplog.text
