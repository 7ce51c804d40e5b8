"""Extended-attribute rules (imagefs.image.xattrs), as tables.

Every row of behaviour.md §5's attribute table has rows here, for set and
for remove, with the errno the shell sees.
"""

from __future__ import annotations

import errno

import pytest

from imagefs.client.models import ContainerInfo, Image, ObjectInfo
from imagefs.errors import (
    InvalidInput, NoSuchAttribute, ReadOnlyField, Unsupported, ValueTooLarge, to_errno,
)
from imagefs.image import xattrs
from imagefs.image.xattrs import Change, Source, classify

UUID = "5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d"
OWNER = "0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f"

IMAGE = Image(
    id=UUID,
    name="Debian Base Gama",
    location=f"pithos://{OWNER}/pithos/debian_base3.diskdump",
    owner=OWNER,
    size=903471104,
    checksum="3cb03556ec971fe8dd6190443b560cb7",
    disk_format="diskdump",
    container_format="bare",
    status="available",
    is_public=False,
    created_at="2013-06-19 08:00:22",
    updated_at="2013-06-19 08:01:00",
    deleted_at="",
    properties={"os": "Linux", "user": "root"},
)
#: The same image after some edits: public, other formats, status cleared.
EDITED = Image(**{**IMAGE.__dict__, "is_public": True, "disk_format": "extdump",
                  "container_format": "ovf", "status": ""})

OBJ = ObjectInfo(
    name="debian_base3.diskdump", size=903471104, content_type="application/octet-stream",
    hash="3cb03556ec971fe8dd6190443b560cb7", uuid=UUID, version=1352, mtime=1371628822.0,
    meta={"Mtime": "1371628822", "Origin": "kamaki"},
)
PUBLISHED = ObjectInfo(**{**OBJ.__dict__, "public_url": "/public/abcdefghijklmnop"})
UNKNOWN_META = ObjectInfo(**{**OBJ.__dict__, "meta": None})
DIRECTORY = ObjectInfo(**{**OBJ.__dict__, "name": "images", "size": 0,
                          "content_type": "application/directory"})
CONTAINER = ContainerInfo(name="pithos", count=3, bytes_used=1234, versioning="auto", quota=0)

FIXED = ["id", "owner", "location", "checksum", "size", "created-at", "updated-at", "deleted-at"]
OTHER_NAMESPACES = ["security.selinux", "security.capability", "system.posix_acl_access",
                    "system.posix_acl_default", "system.nfs4_acl", "trusted.overlay.opaque"]
FOREIGN = OTHER_NAMESPACES + ["user.xdg.origin.url", "user.foo", "user.image.foo", "user.image.", "user.image",
           "user.image.properties.", "user.pithos.foo", "user.pithos.meta.", "user.imagefs.foo"]


# -- classify ---------------------------------------------------------------------------------

CLASSIFY = [
    # name, source, field, key, writable
    ("user.image.name", Source.IMAGE, "name", "", True),
    ("user.image.disk-format", Source.IMAGE, "disk_format", "", True),
    ("user.image.container-format", Source.IMAGE, "container_format", "", True),
    ("user.image.status", Source.IMAGE, "status", "", True),
    ("user.image.is-public", Source.IMAGE, "is_public", "", True),
    ("user.image.Disk_Format", Source.IMAGE, "disk_format", "", True),
    ("user.image.properties.OS", Source.IMAGE, "property", "os", True),
    ("user.image.properties.root-partition", Source.IMAGE, "property", "root_partition", True),
    ("user.image.id", Source.IMAGE, "id", "", False),
    ("user.image.owner", Source.IMAGE, "owner", "", False),
    ("user.image.location", Source.IMAGE, "location", "", False),
    ("user.image.checksum", Source.IMAGE, "checksum", "", False),
    ("user.image.size", Source.IMAGE, "size", "", False),
    ("user.image.created-at", Source.IMAGE, "created_at", "", False),
    ("user.image.updated-at", Source.IMAGE, "updated_at", "", False),
    ("user.image.deleted-at", Source.IMAGE, "deleted_at", "", False),
    ("user.pithos.hash", Source.OBJECT, "hash", "", False),
    ("user.pithos.uuid", Source.OBJECT, "uuid", "", False),
    ("user.pithos.version", Source.OBJECT, "version", "", False),
    ("user.pithos.public", Source.OBJECT, "public", "", True),
    ("user.pithos.meta.image_os", Source.OBJECT, "meta", "Image-Os", True),
    ("user.pithos.meta.Mtime", Source.OBJECT, "meta", "Mtime", True),
    ("user.pithos.versioning", Source.CONTAINER, "versioning", "", True),
    ("user.pithos.quota", Source.CONTAINER, "quota", "", False),
    ("user.pithos.usage", Source.CONTAINER, "usage", "", False),
    ("user.imagefs.error", Source.MOUNT, "error", "", False),
] + [(name, Source.NONE, "", "", False) for name in FOREIGN]


@pytest.mark.parametrize("name, source, field, key, writable", CLASSIFY,
                         ids=[row[0] for row in CLASSIFY])
def test_classify(name, source, field, key, writable):
    attr = classify(name)
    assert (attr.source, attr.field, attr.key, attr.writable) == (source, field, key, writable)
    assert attr.known is (source is not Source.NONE)


# -- names ------------------------------------------------------------------------------------

IMAGE_NAMES = [
    "user.image.name", "user.image.disk-format", "user.image.container-format",
    "user.image.status", "user.image.is-public", "user.image.properties.OS",
    "user.image.properties.USER", "user.image.id", "user.image.owner", "user.image.location",
    "user.image.checksum", "user.image.size", "user.image.created-at", "user.image.updated-at",
    "user.image.deleted-at",
]
OBJECT_NAMES = ["user.pithos.hash", "user.pithos.uuid", "user.pithos.version",
                "user.pithos.meta.Mtime", "user.pithos.meta.Origin"]


def test_names_of_registered_file():
    """getfattr -d lists every field, name first (so cp -a registers before the rest)."""
    assert xattrs.names(IMAGE, obj=OBJ) == IMAGE_NAMES + OBJECT_NAMES


def test_names_of_unregistered_file():
    assert xattrs.names(None, obj=OBJ) == OBJECT_NAMES


def test_names_of_published_file():
    assert "user.pithos.public" in xattrs.names(None, obj=PUBLISHED)


def test_names_of_catalog_entry():
    """.images/ID.meta: the image's fields, no object."""
    assert xattrs.names(IMAGE) == IMAGE_NAMES


def test_names_of_container():
    assert xattrs.names(None, is_container=True) == [
        "user.pithos.versioning", "user.pithos.quota", "user.pithos.usage"]


def test_names_of_sidecar_with_error():
    assert xattrs.names(None, obj=OBJ, error="not valid JSON")[-1] == "user.imagefs.error"
    assert "user.imagefs.error" not in xattrs.names(None, obj=OBJ, error=None)


def test_names_without_known_meta_cost_nothing():
    """A real deployment's listing has no metadata: no HEAD just to list names."""
    assert xattrs.names(None, obj=UNKNOWN_META) == OBJECT_NAMES[:3]


def test_names_skip_what_the_kernel_cannot_name():
    image = Image(**{**IMAGE.__dict__, "properties": {"€" * 93: "x", "ok": "y"}})
    listed = xattrs.names(image)
    assert "user.image.properties.OK" in listed
    assert not any("€" in n for n in listed)  # 22 + 3 * 93 bytes > 255


def test_every_listed_name_reads():
    """getfattr -d reads each listed name: none may be ENODATA."""
    for name in xattrs.names(IMAGE, obj=PUBLISHED, error="e"):
        xattrs.get(IMAGE, name, obj=PUBLISHED, error="e")
    for name in xattrs.names(None, is_container=True):
        xattrs.get(None, name, container=CONTAINER)


# -- get --------------------------------------------------------------------------------------

GET = [
    ("user.image.name", b"Debian Base Gama"),
    ("user.image.disk-format", b"diskdump"),
    ("user.image.container-format", b"bare"),
    ("user.image.status", b"available"),
    ("user.image.is-public", b"false"),
    ("user.image.id", UUID.encode()),
    ("user.image.owner", OWNER.encode()),
    ("user.image.location", f"pithos://{OWNER}/pithos/debian_base3.diskdump".encode()),
    ("user.image.checksum", b"3cb03556ec971fe8dd6190443b560cb7"),
    ("user.image.size", b"903471104"),
    ("user.image.created-at", b"2013-06-19 08:00:22"),
    ("user.image.updated-at", b"2013-06-19 08:01:00"),
    ("user.image.deleted-at", b""),
    ("user.image.properties.OS", b"Linux"),
    ("user.image.properties.os", b"Linux"),
    ("user.image.properties.User", b"root"),
    ("user.pithos.hash", b"3cb03556ec971fe8dd6190443b560cb7"),
    ("user.pithos.uuid", UUID.encode()),
    ("user.pithos.version", b"1352"),
    ("user.pithos.meta.Origin", b"kamaki"),
    ("user.pithos.meta.origin", b"kamaki"),
    ("user.pithos.meta.MTIME", b"1371628822"),
]


@pytest.mark.parametrize("name, value", GET, ids=[row[0] for row in GET])
def test_get(name, value):
    assert xattrs.get(IMAGE, name, obj=OBJ) == value


def test_get_public_flags():
    assert xattrs.get(EDITED, "user.image.is-public") == b"true"
    assert xattrs.get(None, "user.pithos.public", obj=PUBLISHED) == b"/public/abcdefghijklmnop"


def test_get_container():
    assert xattrs.get(None, "user.pithos.versioning", container=CONTAINER) == b"auto"
    assert xattrs.get(None, "user.pithos.quota", container=CONTAINER) == b"0"
    assert xattrs.get(None, "user.pithos.usage", container=CONTAINER) == b"1234"


def test_get_error():
    assert xattrs.get(None, "user.imagefs.error", error="not valid JSON: x") == b"not valid JSON: x"


GET_ABSENT = [
    # name, image, obj, error
    ("user.image.name", None, OBJ, None),  # not an image
    ("user.image.id", None, OBJ, None),
    ("user.image.properties.GREET", IMAGE, OBJ, None),
    ("user.pithos.public", IMAGE, OBJ, None),  # not published
    ("user.pithos.meta.Color", IMAGE, OBJ, None),
    ("user.pithos.hash", IMAGE, None, None),  # catalog entry: no object
    ("user.pithos.versioning", IMAGE, OBJ, None),  # a file is no container
    ("user.imagefs.error", None, OBJ, None),
] + [(name, IMAGE, OBJ, "e") for name in FOREIGN if name not in OTHER_NAMESPACES]


@pytest.mark.parametrize("name", OTHER_NAMESPACES)
def test_get_other_namespace_is_eopnotsupp(name):
    """Not ENODATA: ``ls -l`` stops probing a device that answers EOPNOTSUPP."""
    with pytest.raises(Unsupported) as info:
        xattrs.get(IMAGE, name, obj=OBJ, error="e")
    assert to_errno(info.value) == errno.EOPNOTSUPP


@pytest.mark.parametrize("name, image, obj, error", GET_ABSENT,
                         ids=[f"{i}-{row[0]}" for i, row in enumerate(GET_ABSENT)])
def test_get_absent_is_enodata(name, image, obj, error):
    with pytest.raises(NoSuchAttribute) as info:
        xattrs.get(image, name, obj=obj, error=error)
    assert to_errno(info.value) == errno.ENODATA


def test_get_matches_keys_stored_in_another_form():
    """A deployment that returns keys un-normalised is still read case-insensitively."""
    image = Image(**{**IMAGE.__dict__, "properties": {"Root-Partition": "1"}})
    obj = ObjectInfo(**{**OBJ.__dict__, "meta": {"image_os": "Linux"}})
    assert xattrs.get(image, "user.image.properties.ROOT_PARTITION") == b"1"
    assert xattrs.get(None, "user.pithos.meta.Image-Os", obj=obj) == b"Linux"


def test_get_meta_needs_a_head():
    with pytest.raises(ValueError):
        xattrs.get(None, "user.pithos.meta.Origin", obj=UNKNOWN_META)


# -- set --------------------------------------------------------------------------------------

SET = [
    # id, image, name, value, kwargs, expected Change
    ("name", IMAGE, "user.image.name", b"Changed Name", {},
     Change(Source.IMAGE, name="Changed Name")),
    ("name-unchanged", IMAGE, "user.image.name", b"Debian Base Gama", {}, Change(Source.IMAGE)),
    ("name-registers", None, "user.image.name", b"Debian Base Gama", {"obj": OBJ},
     Change(Source.IMAGE, name="Debian Base Gama", register=True)),
    ("name-unicode", IMAGE, "user.image.name", "Δέλτα".encode(), {},
     Change(Source.IMAGE, name="Δέλτα")),
    ("name-trailing-nul", IMAGE, "user.image.name", b"X\0", {}, Change(Source.IMAGE, name="X")),
    ("disk-format", IMAGE, "user.image.disk-format", b"extdump", {},
     Change(Source.IMAGE, disk_format="extdump")),
    ("disk-format-any-case", IMAGE, "user.image.disk-format", b"NTFSDUMP", {},
     Change(Source.IMAGE, disk_format="ntfsdump")),
    ("disk-format-unchecked", IMAGE, "user.image.disk-format", b"qcow2", {"disk_formats": None},
     Change(Source.IMAGE, disk_format="qcow2")),
    ("disk-format-unchanged", IMAGE, "user.image.disk-format", b"DiskDump", {},
     Change(Source.IMAGE)),
    ("container-format", IMAGE, "user.image.container-format", b"ovf", {},
     Change(Source.IMAGE, container_format="ovf")),
    ("status", IMAGE, "user.image.status", b"deprecated", {},
     Change(Source.IMAGE, status="deprecated")),
    ("status-empty", IMAGE, "user.image.status", b"", {}, Change(Source.IMAGE, status="")),
    ("is-public-true", IMAGE, "user.image.is-public", b"true", {},
     Change(Source.IMAGE, is_public=True)),
    ("is-public-True", IMAGE, "user.image.is-public", b"True", {},
     Change(Source.IMAGE, is_public=True)),
    ("is-public-false", EDITED, "user.image.is-public", b"false", {},
     Change(Source.IMAGE, is_public=False)),
    ("is-public-unchanged", IMAGE, "user.image.is-public", b"false", {}, Change(Source.IMAGE)),
    ("property-add", IMAGE, "user.image.properties.GREET", b"Hi there", {},
     Change(Source.IMAGE, properties={"greet": "Hi there"})),
    ("property-change", IMAGE, "user.image.properties.user", b"user", {},
     Change(Source.IMAGE, properties={"user": "user"})),
    ("property-unchanged", IMAGE, "user.image.properties.OS", b"Linux", {}, Change(Source.IMAGE)),
    ("property-empty-deletes", IMAGE, "user.image.properties.OS", b"", {},
     Change(Source.IMAGE, properties={"os": ""})),
    ("property-empty-absent", IMAGE, "user.image.properties.NEW", b"", {}, Change(Source.IMAGE)),
    ("property-dash-key", IMAGE, "user.image.properties.root-partition", b"1", {},
     Change(Source.IMAGE, properties={"root_partition": "1"})),
    ("pithos-public", None, "user.pithos.public", b"true", {"obj": OBJ},
     Change(Source.OBJECT, public=True)),
    ("pithos-unpublish", None, "user.pithos.public", b"false", {"obj": PUBLISHED},
     Change(Source.OBJECT, public=False)),
    ("pithos-public-unchanged", None, "user.pithos.public", b"TRUE", {"obj": PUBLISHED},
     Change(Source.OBJECT)),
    ("pithos-meta", None, "user.pithos.meta.color", b"blue", {"obj": OBJ},
     Change(Source.OBJECT, meta={"Color": "blue"})),
    ("pithos-meta-empty-deletes", None, "user.pithos.meta.origin", b"", {"obj": OBJ},
     Change(Source.OBJECT, meta={"Origin": ""})),
    ("pithos-meta-unchanged", None, "user.pithos.meta.Origin", b"kamaki", {"obj": OBJ},
     Change(Source.OBJECT)),
    ("pithos-meta-unknown-meta", None, "user.pithos.meta.Origin", b"kamaki",
     {"obj": UNKNOWN_META}, Change(Source.OBJECT, meta={"Origin": "kamaki"})),
    ("versioning-none", None, "user.pithos.versioning", b"none", {"is_container": True},
     Change(Source.CONTAINER, versioning="none")),
    ("versioning-auto", None, "user.pithos.versioning", b"Auto\n", {"is_container": True},
     Change(Source.CONTAINER, versioning="auto")),
]


@pytest.mark.parametrize("image, name, value, kwargs, expected", [r[1:] for r in SET],
                         ids=[r[0] for r in SET])
def test_set(image, name, value, kwargs, expected):
    change = xattrs.set(image, name, value, **kwargs)
    assert change == expected
    assert change.is_noop is (expected == Change(expected.target))


def test_change_fields():
    change = Change(Source.IMAGE, name="n", status="", properties={"a": "1"})
    assert change.fields == {"name": "n", "status": ""}
    assert not change.is_noop


SET_REFUSED = [
    # id, image, name, value, kwargs, exception, errno
    *[(f"fixed-{f}", IMAGE, f"user.image.{f}", b"x", {}, ReadOnlyField, errno.EPERM)
      for f in FIXED],
    ("fixed-on-unregistered", None, "user.image.id", b"x", {"obj": OBJ}, ReadOnlyField,
     errno.EPERM),
    *[(f"foreign-{n}", IMAGE, n, b"x", {"obj": OBJ}, Unsupported, errno.EOPNOTSUPP)
      for n in FOREIGN],
    ("name-empty", IMAGE, "user.image.name", b"", {}, InvalidInput, errno.EINVAL),
    ("name-257", IMAGE, "user.image.name", b"n" * 257, {}, ValueTooLarge, errno.E2BIG),
    ("name-on-directory", None, "user.image.name", b"x", {"obj": DIRECTORY}, Unsupported,
     errno.EOPNOTSUPP),
    ("name-on-container", None, "user.image.name", b"x", {"is_container": True}, Unsupported,
     errno.EOPNOTSUPP),
    ("not-utf8", IMAGE, "user.image.name", b"Caf\xe9", {}, InvalidInput, errno.EINVAL),
    ("inner-nul", IMAGE, "user.image.name", b"a\0b", {}, InvalidInput, errno.EINVAL),
    ("disk-format-unknown", IMAGE, "user.image.disk-format", b"qcow2", {}, InvalidInput,
     errno.EINVAL),
    ("disk-format-empty", IMAGE, "user.image.disk-format", b"", {}, InvalidInput, errno.EINVAL),
    ("disk-format-empty-unchecked", IMAGE, "user.image.disk-format", b"",
     {"disk_formats": None}, InvalidInput, errno.EINVAL),
    ("container-format-unknown", IMAGE, "user.image.container-format", b"docker", {},
     InvalidInput, errno.EINVAL),
    ("status-257", IMAGE, "user.image.status", b"s" * 257, {}, ValueTooLarge, errno.E2BIG),
    ("is-public-yes", IMAGE, "user.image.is-public", b"yes", {}, InvalidInput, errno.EINVAL),
    ("is-public-1", IMAGE, "user.image.is-public", b"1", {}, InvalidInput, errno.EINVAL),
    ("field-on-unregistered", None, "user.image.disk-format", b"extdump", {"obj": OBJ},
     InvalidInput, errno.EINVAL),
    ("property-on-unregistered", None, "user.image.properties.OS", b"Linux", {"obj": OBJ},
     InvalidInput, errno.EINVAL),
    ("property-value-257", IMAGE, "user.image.properties.OS", b"v" * 257, {}, ValueTooLarge,
     errno.E2BIG),
    ("property-key-94", IMAGE, "user.image.properties." + "k" * 94, b"v", {}, ValueTooLarge,
     errno.E2BIG),
    ("property-key-space", IMAGE, "user.image.properties.my key", b"v", {}, InvalidInput,
     errno.EINVAL),
    *[(f"pithos-{f}", None, f"user.pithos.{f}", b"x", {"obj": OBJ}, ReadOnlyField, errno.EPERM)
      for f in ("hash", "uuid", "version")],
    ("pithos-public-word", None, "user.pithos.public", b"yes", {"obj": OBJ}, InvalidInput,
     errno.EINVAL),
    ("pithos-public-no-object", IMAGE, "user.pithos.public", b"true", {}, Unsupported,
     errno.EOPNOTSUPP),
    ("pithos-meta-no-object", None, "user.pithos.meta.a", b"b", {}, Unsupported,
     errno.EOPNOTSUPP),
    ("pithos-meta-257", None, "user.pithos.meta.a", b"v" * 257, {"obj": OBJ}, ValueTooLarge,
     errno.E2BIG),
    ("pithos-meta-key-129", None, "user.pithos.meta." + "k" * 129, b"v", {"obj": OBJ},
     ValueTooLarge, errno.E2BIG),
    ("pithos-meta-key-space", None, "user.pithos.meta.a b", b"v", {"obj": OBJ}, InvalidInput,
     errno.EINVAL),
    ("pithos-meta-on-container", None, "user.pithos.meta.a", b"v", {"is_container": True},
     Unsupported, errno.EOPNOTSUPP),
    ("versioning-on-file", None, "user.pithos.versioning", b"auto", {"obj": OBJ}, Unsupported,
     errno.EOPNOTSUPP),
    ("versioning-word", None, "user.pithos.versioning", b"sometimes", {"is_container": True},
     InvalidInput, errno.EINVAL),
    ("quota", None, "user.pithos.quota", b"1", {"is_container": True}, ReadOnlyField,
     errno.EPERM),
    ("usage", None, "user.pithos.usage", b"1", {"is_container": True}, ReadOnlyField,
     errno.EPERM),
    ("error", None, "user.imagefs.error", b"", {"obj": OBJ}, ReadOnlyField, errno.EPERM),
]


@pytest.mark.parametrize("image, name, value, kwargs, exc, code", [r[1:] for r in SET_REFUSED],
                         ids=[r[0] for r in SET_REFUSED])
def test_set_refused(image, name, value, kwargs, exc, code):
    with pytest.raises(exc) as info:
        xattrs.set(image, name, value, **kwargs)
    assert to_errno(info.value) == code


# -- remove -----------------------------------------------------------------------------------

REMOVE = [
    # id, image, name, kwargs, expected Change
    ("disk-format-to-default", EDITED, "user.image.disk-format", {},
     Change(Source.IMAGE, disk_format="diskdump")),
    ("disk-format-already-default", IMAGE, "user.image.disk-format", {}, Change(Source.IMAGE)),
    ("container-format-to-default", EDITED, "user.image.container-format", {},
     Change(Source.IMAGE, container_format="bare")),
    ("status-to-empty", IMAGE, "user.image.status", {}, Change(Source.IMAGE, status="")),
    ("status-already-empty", EDITED, "user.image.status", {}, Change(Source.IMAGE)),
    ("is-public-to-false", EDITED, "user.image.is-public", {},
     Change(Source.IMAGE, is_public=False)),
    ("is-public-already-false", IMAGE, "user.image.is-public", {}, Change(Source.IMAGE)),
    ("property", IMAGE, "user.image.properties.USER", {},
     Change(Source.IMAGE, properties={"user": ""})),
    ("property-any-case", IMAGE, "user.image.properties.user", {},
     Change(Source.IMAGE, properties={"user": ""})),
    ("pithos-public", None, "user.pithos.public", {"obj": PUBLISHED},
     Change(Source.OBJECT, public=False)),
    ("pithos-public-unpublished", None, "user.pithos.public", {"obj": OBJ}, Change(Source.OBJECT)),
    ("pithos-meta", None, "user.pithos.meta.origin", {"obj": OBJ},
     Change(Source.OBJECT, meta={"Origin": ""})),
    ("pithos-meta-unknown-meta", None, "user.pithos.meta.origin", {"obj": UNKNOWN_META},
     Change(Source.OBJECT, meta={"Origin": ""})),
]


@pytest.mark.parametrize("image, name, kwargs, expected", [r[1:] for r in REMOVE],
                         ids=[r[0] for r in REMOVE])
def test_remove(image, name, kwargs, expected):
    assert xattrs.remove(image, name, **kwargs) == expected


REMOVE_REFUSED = [
    # id, image, name, kwargs, exception, errno
    ("name", IMAGE, "user.image.name", {}, InvalidInput, errno.EINVAL),
    *[(f"fixed-{f}", IMAGE, f"user.image.{f}", {}, ReadOnlyField, errno.EPERM) for f in FIXED],
    *[(f"foreign-{n}", IMAGE, n, {"obj": OBJ}, Unsupported, errno.EOPNOTSUPP) for n in FOREIGN],
    ("unregistered-name", None, "user.image.name", {"obj": OBJ}, NoSuchAttribute, errno.ENODATA),
    ("unregistered-property", None, "user.image.properties.OS", {"obj": OBJ}, NoSuchAttribute,
     errno.ENODATA),
    ("property-absent", IMAGE, "user.image.properties.GREET", {}, NoSuchAttribute, errno.ENODATA),
    ("pithos-meta-absent", None, "user.pithos.meta.Color", {"obj": OBJ}, NoSuchAttribute,
     errno.ENODATA),
    ("pithos-hash", None, "user.pithos.hash", {"obj": OBJ}, ReadOnlyField, errno.EPERM),
    ("versioning", None, "user.pithos.versioning", {"is_container": True}, InvalidInput,
     errno.EINVAL),
    ("quota", None, "user.pithos.quota", {"is_container": True}, ReadOnlyField, errno.EPERM),
    ("error", None, "user.imagefs.error", {"obj": OBJ}, ReadOnlyField, errno.EPERM),
]


@pytest.mark.parametrize("image, name, kwargs, exc, code", [r[1:] for r in REMOVE_REFUSED],
                         ids=[r[0] for r in REMOVE_REFUSED])
def test_remove_refused(image, name, kwargs, exc, code):
    with pytest.raises(exc) as info:
        xattrs.remove(image, name, **kwargs)
    assert to_errno(info.value) == code


def test_two_kinds_of_public_stay_apart():
    """user.image.is-public is the image's; user.pithos.public the store's URL (api.md D19)."""
    image_change = xattrs.set(IMAGE, "user.image.is-public", b"true")
    store_change = xattrs.set(IMAGE, "user.pithos.public", b"true", obj=OBJ)
    assert (image_change.target, image_change.is_public, image_change.public) == (
        Source.IMAGE, True, None)
    assert (store_change.target, store_change.public, store_change.is_public) == (
        Source.OBJECT, True, None)


def test_messages_name_the_attribute():
    with pytest.raises(InvalidInput, match="user.image.is-public must be true or false"):
        xattrs.set(IMAGE, "user.image.is-public", b"maybe")
    with pytest.raises(InvalidInput, match="delete the sidecar"):
        xattrs.remove(IMAGE, "user.image.name")
