"""Extended attributes: what each name reads and what setting or removing it asks for.

Three namespaces carry meaning (behaviour.md §5 "Extended attributes"):

- ``user.image.*``: the registration of the file's image, one attribute per
  field and ``user.image.properties.KEY`` per property (keys shown
  upper-case, compared case-insensitively with ``-`` and ``_`` alike).
  ``name``, the formats, ``status``, ``is-public`` and properties can be set;
  ``id``, ``owner``, ``location``, ``checksum``, ``size`` and the dates are
  fixed by the service (EPERM).
- ``user.pithos.*``: the store's view of the object (``hash``, ``uuid``,
  ``version``, the anonymous URL ``public``, free-form ``meta.KEY``) and, on
  a container's directory, ``versioning``, ``quota`` and ``usage``.
- ``user.imagefs.error``: on a sidecar, why the last write of it was refused.

Every other name is answered at once, without a request. Other ``user.*``
names and unknown names in the three namespaces: ENODATA on read,
EOPNOTSUPP on write. Other namespaces (``security.*``,
``system.posix_acl_*``, ``trusted.*``): EOPNOTSUPP on read too, since the
mount keeps no labels and no ACLs. That is also what makes ``ls -l`` fast:
it probes ``security.selinux`` and ``system.posix_acl_access`` on every file,
but coreutils remembers a device that answered EOPNOTSUPP and stops asking
(measured: 20,000 probes, 1.3 s of a 1.5 s ``ls -l`` of 10,000 files, with
ENODATA). ``cp -a`` and ``rsync -AX`` treat EOPNOTSUPP quietly.

The filesystem asks ``classify(name).source`` what it must fetch (the image,
the object's HEAD, the container's HEAD, nothing), then calls ``get`` for
the value or ``set``/``remove`` for a ``Change`` it applies. Nothing here
does I/O. A ``Change`` that would not change anything (``is_noop``) needs no
request, which keeps ``cp -a`` of a file onto itself and repeated
``setfattr`` cheap.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from imagefs.client.models import ContainerInfo, Image, ObjectInfo
from imagefs.errors import (
    InvalidInput, NoSuchAttribute, ReadOnlyField, Unsupported, ValueTooLarge,
)
from imagefs.image.metafile import (
    CONTAINER_FORMATS, DEFAULT_CONTAINER_FORMAT, DEFAULT_DISK_FORMAT, DISK_FORMATS, check_format,
    check_name, check_property, check_status, check_text, display_property_key,
    normalise_property_key, parse_bool,
)
from imagefs.protocol import names as limits
from imagefs.protocol.headers import normalize_meta_key

USER_PREFIX = "user."
IMAGE_PREFIX = "user.image."
PROPERTY_PREFIX = "user.image.properties."
PITHOS_PREFIX = "user.pithos."
META_PREFIX = "user.pithos.meta."
ERROR_NAME = "user.imagefs.error"

#: The kernel's limit on an attribute name (XATTR_NAME_MAX), in bytes.
XATTR_NAME_MAX = 255

VERSIONING_POLICIES = ("auto", "none")


class Source(enum.Enum):
    """What the filesystem must have at hand to answer for a name."""

    NONE = "none"  # nothing: ENODATA on read, EOPNOTSUPP on write, no request
    IMAGE = "image"  # the registration (an Image, or None if the file is not an image)
    OBJECT = "object"  # the object's HEAD (an ObjectInfo with meta)
    CONTAINER = "container"  # the container's HEAD (a ContainerInfo)
    MOUNT = "mount"  # the mount's own state: the last error of a sidecar


@dataclass(frozen=True)
class Attr:
    """One attribute name, understood.

    ``field`` is the ``Image`` attribute (``name``, ``disk_format``, ...,
    ``property``), the store field (``hash``, ``uuid``, ``version``,
    ``public``, ``meta``, ``versioning``, ``quota``, ``usage``) or ``error``;
    empty for names imagefs does not know. ``key`` is the property key
    normalised as the service stores it (``os``) or the metadata key as the
    store capitalises it (``Image-Os``); ``raw_key`` is the key as given.
    """

    name: str
    source: Source
    field: str = ""
    key: str = ""
    raw_key: str = ""
    writable: bool = False

    @property
    def known(self) -> bool:
        return self.source is not Source.NONE


#: user.image.<suffix> -> Image attribute, writable; in the order getfattr -d lists them.
#: ``name`` comes first so that a tool replaying attributes in list order
#: (``cp -a``, ``rsync -X``) registers before it sets the other fields.
_WRITABLE_FIELDS = (
    ("name", "name"), ("disk-format", "disk_format"), ("container-format", "container_format"),
    ("status", "status"), ("is-public", "is_public"),
)
_FIXED_FIELDS = (
    ("id", "id"), ("owner", "owner"), ("location", "location"), ("checksum", "checksum"),
    ("size", "size"), ("created-at", "created_at"), ("updated-at", "updated_at"),
    ("deleted-at", "deleted_at"),
)
_IMAGE_FIELDS = {suffix: (attr, True) for suffix, attr in _WRITABLE_FIELDS} | {
    suffix: (attr, False) for suffix, attr in _FIXED_FIELDS}

#: user.pithos.<suffix> -> (source, writable)
_PITHOS_FIELDS = {
    "hash": (Source.OBJECT, False),
    "uuid": (Source.OBJECT, False),
    "version": (Source.OBJECT, False),
    "public": (Source.OBJECT, True),
    "versioning": (Source.CONTAINER, True),
    "quota": (Source.CONTAINER, False),
    "usage": (Source.CONTAINER, False),
}

CONTAINER_NAMES = tuple(PITHOS_PREFIX + s for s, (src, _) in _PITHOS_FIELDS.items()
                        if src is Source.CONTAINER)


def _suffix(text: str) -> str:
    """Field names are read like metafile keys: any case, ``_`` for ``-``."""
    return text.lower().replace("_", "-")


def classify(name: str) -> Attr:
    """What ``name`` is. Never raises and never needs a request."""
    if name.startswith(PROPERTY_PREFIX):
        key = name[len(PROPERTY_PREFIX):]
        if key:
            return Attr(name, Source.IMAGE, "property", normalise_property_key(key), key, True)
    elif name.startswith(IMAGE_PREFIX):
        found = _IMAGE_FIELDS.get(_suffix(name[len(IMAGE_PREFIX):]))
        if found:
            return Attr(name, Source.IMAGE, found[0], writable=found[1])
    elif name.startswith(META_PREFIX):
        key = name[len(META_PREFIX):]
        if key:
            return Attr(name, Source.OBJECT, "meta", normalize_meta_key(key), key, True)
    elif name.startswith(PITHOS_PREFIX):
        suffix = _suffix(name[len(PITHOS_PREFIX):])
        if suffix in _PITHOS_FIELDS:
            source, writable = _PITHOS_FIELDS[suffix]
            return Attr(name, source, suffix, writable=writable)
    elif name == ERROR_NAME:
        return Attr(name, Source.MOUNT, "error")
    return Attr(name, Source.NONE)


# -- list and read ----------------------------------------------------------------------------


def names(image: Image | None, *, is_container: bool = False, obj: ObjectInfo | None = None,
          error: str | None = None) -> list[str]:
    """What ``getfattr -d`` lists: every name here can be read with ``get``.

    ``image``: the file's registration (or ``.images/ID.meta``'s), None if
    not an image. ``obj``: the object, for ``user.pithos.*`` (None for
    catalog entries and pseudo-directories); when ``obj.meta`` is None (a
    real deployment's listing did not say), the ``meta.*`` names are left
    out rather than costing a HEAD. ``error``: the sidecar's last error.
    ``is_container``: the container's directory, which lists only the
    container attributes.
    """
    if is_container:
        return list(CONTAINER_NAMES)
    out: list[str] = []
    if image is not None:
        out += [IMAGE_PREFIX + suffix for suffix, _ in _WRITABLE_FIELDS]
        out += [PROPERTY_PREFIX + display_property_key(k) for k in sorted(image.properties)]
        out += [IMAGE_PREFIX + suffix for suffix, _ in _FIXED_FIELDS]
    if obj is not None:
        out += [PITHOS_PREFIX + "hash", PITHOS_PREFIX + "uuid", PITHOS_PREFIX + "version"]
        if obj.public_url:
            out.append(PITHOS_PREFIX + "public")
        out += [META_PREFIX + k for k in sorted(obj.meta or ())]
    if error:
        out.append(ERROR_NAME)
    return [n for n in out if len(n.encode("utf-8", "replace")) <= XATTR_NAME_MAX]


def check_namespace(name: str) -> None:
    """``Unsupported`` (EOPNOTSUPP) unless ``name`` is in ``user.``, the one namespace
    the mount keeps."""
    if not name.startswith(USER_PREFIX):
        raise Unsupported(f"{name}: imagefs keeps only user.* attributes")


def get(image: Image | None, name: str, *, obj: ObjectInfo | None = None,
        container: ContainerInfo | None = None, error: str | None = None) -> bytes:
    """The value of ``name``, or ``NoSuchAttribute`` (ENODATA); ``Unsupported`` outside
    ``user.*`` (``check_namespace``).

    Pass what ``classify(name).source`` asks for; what is None does not
    exist (no image: no ``user.image.*``). ``is-public`` reads ``true`` or
    ``false``; ``user.pithos.public`` reads the anonymous URL and exists
    only while the object is published; ``quota`` ``0`` means unlimited.
    ``obj.meta`` must be known (a HEAD) to read ``user.pithos.meta.KEY``.
    """
    check_namespace(name)
    attr = classify(name)
    value = _value(attr, image, obj, container, error)
    if value is None:
        raise NoSuchAttribute(f"{name}: no such attribute")
    return value.encode("utf-8")


def _value(attr: Attr, image: Image | None, obj: ObjectInfo | None,
           container: ContainerInfo | None, error: str | None) -> str | None:
    if attr.source is Source.IMAGE:
        if image is None:
            return None
        if attr.field == "property":
            return _lookup(image.properties, attr.key, normalise_property_key)
        if attr.field == "is_public":
            return "true" if image.is_public else "false"
        return str(getattr(image, attr.field))
    if attr.source is Source.OBJECT:
        if obj is None:
            return None
        if attr.field == "meta":
            if obj.meta is None:
                raise ValueError("object metadata unknown: HEAD the object first")
            return _lookup(obj.meta, attr.key, normalize_meta_key)
        if attr.field == "public":
            return obj.public_url or None
        return str({"hash": obj.hash, "uuid": obj.uuid, "version": obj.version}[attr.field])
    if attr.source is Source.CONTAINER:
        if container is None:
            return None
        return str({"versioning": container.versioning, "quota": container.quota,
                    "usage": container.bytes_used}[attr.field])
    if attr.source is Source.MOUNT:
        return error or None
    return None


def _lookup(mapping: Mapping[str, str], key: str, normalise: Callable[[str], str]
            ) -> str | None:
    """``mapping[key]``, matching keys the way the service normalises them."""
    if key in mapping:
        return mapping[key]
    for k, v in mapping.items():
        if normalise(k) == key:
            return v
    return None


# -- set and remove ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What one ``setxattr``/``removexattr`` asks the filesystem to do.

    ``target`` says where it goes: ``IMAGE`` (an image update, or a
    registration when ``register``), ``OBJECT`` (object metadata or its
    anonymous URL) or ``CONTAINER`` (the versioning policy). Fields left
    None are not touched. In ``properties`` and ``meta`` an empty value
    deletes the key, exactly as the services read it. ``register`` means the
    file is not an image yet: register it with ``name`` and defaults for the
    rest (private, diskdump, bare, no properties).
    """

    target: Source
    name: str | None = None
    disk_format: str | None = None
    container_format: str | None = None
    status: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    is_public: bool | None = None
    register: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    public: bool | None = None
    versioning: str | None = None

    @property
    def fields(self) -> dict[str, str]:
        """The image fields to update, by ``Image`` attribute name."""
        return {k: v for k, v in (("name", self.name), ("disk_format", self.disk_format),
                                  ("container_format", self.container_format),
                                  ("status", self.status)) if v is not None}

    @property
    def is_noop(self) -> bool:
        """True if applying it changes nothing (the value was already so)."""
        return not (self.fields or self.properties or self.meta or self.register
                    or self.is_public is not None or self.public is not None
                    or self.versioning is not None)


def set(image: Image | None, name: str, value: bytes, *,  # noqa: A001 - xattrs.set reads well
        obj: ObjectInfo | None = None, is_container: bool = False,
        disk_formats: tuple[str, ...] | None = DISK_FORMATS,
        container_formats: tuple[str, ...] | None = CONTAINER_FORMATS) -> Change:
    """The ``Change`` that ``setfattr -n name -v value`` asks for, or raise.

    ``Unsupported`` (EOPNOTSUPP): a name imagefs does not store, or one that
    does not belong here (``user.pithos.versioning`` on a file).
    ``ReadOnlyField`` (EPERM): a field the service fixes. ``InvalidInput``
    (EINVAL): a malformed value, or a field other than ``name`` on a file
    that is not an image. ``ValueTooLarge`` (E2BIG): over the service's
    limits. Setting a property or a metadata key to the empty value deletes
    it (the services cannot store an empty one).
    """
    attr = _writable(name, obj=obj, is_container=is_container)
    text = _decode(value, name)
    if attr.source is Source.IMAGE:
        return _set_image(attr, image, text, obj, disk_formats, container_formats)
    if attr.source is Source.OBJECT:
        if attr.field == "public":
            public = parse_bool(text, name)
            if public == bool(obj.public_url):
                return Change(Source.OBJECT)
            return Change(Source.OBJECT, public=public)
        key, text = _check_meta(attr, text)
        if obj.meta is not None and _lookup(obj.meta, key, normalize_meta_key) == (text or None):
            return Change(Source.OBJECT)
        return Change(Source.OBJECT, meta={key: text})
    # CONTAINER: versioning
    policy = text.strip().lower()
    if policy not in VERSIONING_POLICIES:
        raise InvalidInput(f"{name} must be auto or none, not {text!r}")
    return Change(Source.CONTAINER, versioning=policy)


def remove(image: Image | None, name: str, *, obj: ObjectInfo | None = None,
           is_container: bool = False) -> Change:
    """The ``Change`` that ``setfattr -x name`` asks for, or raise.

    Formats go back to their defaults (the service refuses an empty one),
    ``status`` becomes empty (as ``kamaki image meta delete``), ``is-public``
    and ``user.pithos.public`` become false, a property or metadata key is
    deleted. Removing ``user.image.name`` is EINVAL: an image needs a name,
    and unregistering is done by deleting the sidecar, never as a side effect
    of a tool that mirrors attributes (``rsync -X`` removes what the source
    lacks). ``NoSuchAttribute`` (ENODATA) when there is nothing to remove.
    """
    attr = _writable(name, obj=obj, is_container=is_container)
    if attr.source is Source.IMAGE:
        if image is None:
            raise NoSuchAttribute(f"{name}: the file is not an image")
        if attr.field == "name":
            raise InvalidInput(f"{name} cannot be removed: an image needs a name "
                               "(delete the sidecar NAME.meta to unregister the image)")
        if attr.field == "property":
            if _lookup(image.properties, attr.key, normalise_property_key) is None:
                raise NoSuchAttribute(f"{name}: no such property")
            return Change(Source.IMAGE, properties={attr.key: ""})
        if attr.field == "is_public":
            return Change(Source.IMAGE, is_public=False) if image.is_public else _NOOP_IMAGE
        empty = {"disk_format": DEFAULT_DISK_FORMAT, "container_format": DEFAULT_CONTAINER_FORMAT,
                 "status": ""}[attr.field]
        if getattr(image, attr.field) == empty:
            return _NOOP_IMAGE
        return Change(Source.IMAGE, **{attr.field: empty})
    if attr.source is Source.OBJECT:
        if attr.field == "public":
            return Change(Source.OBJECT, public=False) if obj.public_url else Change(Source.OBJECT)
        if obj.meta is not None and _lookup(obj.meta, attr.key, normalize_meta_key) is None:
            raise NoSuchAttribute(f"{name}: no such metadata key")
        return Change(Source.OBJECT, meta={attr.key: ""})
    raise InvalidInput(f"{name} cannot be removed; set it to auto or none")


_NOOP_IMAGE = Change(Source.IMAGE)


def _writable(name: str, *, obj: ObjectInfo | None, is_container: bool) -> Attr:
    """The attribute, if a write of it can be considered here at all."""
    attr = classify(name)
    if not attr.known:
        raise Unsupported(f"{name}: imagefs stores no such attribute")
    if attr.source is Source.CONTAINER and not is_container:
        raise Unsupported(f"{name} exists on a container's directory only")
    if attr.source in (Source.IMAGE, Source.OBJECT) and is_container:
        raise Unsupported(f"{name} does not exist on a container")
    if attr.source is Source.MOUNT:
        raise ReadOnlyField(f"{name} is read-only: it says why the last write of this "
                            "sidecar was refused")
    if not attr.writable:
        raise ReadOnlyField(f"{name} is fixed by the service and cannot be changed")
    if attr.source is Source.OBJECT and obj is None:
        raise Unsupported(f"{name}: there is no stored object here")
    return attr


def _decode(value: bytes, name: str) -> str:
    """Attribute bytes as text. One trailing NUL is dropped: C programs often
    pass ``strlen + 1``; any other NUL is refused (it cannot be sent)."""
    if value.endswith(b"\0"):
        value = value[:-1]
    if b"\0" in value:
        raise InvalidInput(f"{name}: the value contains a NUL byte")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{name}: the value is not UTF-8 text") from None


def _set_image(attr: Attr, image: Image | None, text: str, obj: ObjectInfo | None,
               disk_formats: tuple[str, ...] | None,
               container_formats: tuple[str, ...] | None) -> Change:
    name = attr.name
    if attr.field == "name":
        new = check_name(text, name)
        if image is None:
            if obj is not None and obj.is_directory:
                raise Unsupported(f"{name}: a directory cannot be an image")
            return Change(Source.IMAGE, name=new, register=True)
        return _NOOP_IMAGE if new == image.name else Change(Source.IMAGE, name=new)
    if image is None:
        raise InvalidInput(f"{name}: the file is not an image; set user.image.name "
                           "first to register it")
    if attr.field == "property":
        key, new = check_property(attr.raw_key, text)
        if _lookup(image.properties, key, normalise_property_key) == (new or None):
            return _NOOP_IMAGE
        return Change(Source.IMAGE, properties={key: new})
    if attr.field == "is_public":
        public = parse_bool(text, name)
        return _NOOP_IMAGE if public == image.is_public else Change(Source.IMAGE, is_public=public)
    if attr.field == "disk_format":
        new = check_format(text, disk_formats, name)
    elif attr.field == "container_format":
        new = check_format(text, container_formats, name)
    else:
        new = check_status(text, name)
    if getattr(image, attr.field) == new:
        return _NOOP_IMAGE
    return Change(Source.IMAGE, **{attr.field: new})


def _check_meta(attr: Attr, value: str) -> tuple[str, str]:
    raw = attr.raw_key
    check_text(raw, attr.name)
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise InvalidInput(f"{attr.name}: the key contains a space or a control character")
    if len(attr.key) > limits.MAX_META_KEY:
        raise ValueTooLarge(f"{attr.name}: the key is {len(attr.key)} characters long; "
                            f"the store allows {limits.MAX_META_KEY}")
    if len(value) > limits.MAX_META_VALUE:
        raise ValueTooLarge(f"{attr.name}: the value is {len(value)} characters long; "
                            f"the store allows {limits.MAX_META_VALUE}")
    return attr.key, value
