"""The kamaki metafile: the JSON text of a sidecar ``NAME.meta`` <-> a registration.

kamaki uploads this file after every ``image register`` and users edit it
and feed it back, so imagefs must read every shape that exists in the wild
and write one that all of them read:

- kamaki 0.16 (api.md §5.1): Python 2 ``json.dumps(indent=2)``, so lines end
  with a space, every value is a string (``"is-public": "False"``,
  ``"size": "903471104"``), ``owner`` carries a `` (username)`` suffix and
  property keys are lower-case; non-ASCII arrives as ``\\uXXXX``.
- the tutorial's older kamaki (the seed): the same with upper-case property
  keys (``"OS": "Linux"``) and no suffix.
- a person with an editor: any key case, ``disk_format`` for ``disk-format``,
  ``true`` instead of ``"True"``, a UTF-8 BOM, a number as a property value.

Parsing is lenient about form and strict about meaning. Keys are
case-insensitive with ``-`` and ``_`` alike; the keys the service owns
(``id``, ``owner``, ``location``, ``checksum``, ``size``, the dates, ...)
are ignored, so one image's metafile is a template for another; unknown keys
are ignored and reported in ``Registration.ignored``. What cannot be meant
(a list as a property value, ``"is-public": "maybe"``, a format the service
refuses, a value over its limits, text that is not UTF-8 or not JSON) raises
``MetafileInvalid`` with a message that names the line, the key and the
type, because the user reads it in ``user.imagefs.error`` and fixes the file.

``render`` writes the shape behaviour.md §5 shows (sorted dashed keys,
``indent=2``, ``"is-public"`` and ``"size"`` as JSON boolean and number,
property keys upper-case as the tutorial shows them), as UTF-8 rather than
``\\uXXXX`` so that ``cat`` shows the name as it is.
"""

from __future__ import annotations

import codecs
import json
import logging
import string
from dataclasses import dataclass, field

from imagefs.client.models import Image
from imagefs.errors import InvalidInput, MetafileInvalid, ValueTooLarge
from imagefs.protocol import names
from imagefs.protocol.headers import normalize_property_key

log = logging.getLogger(__name__)

#: A sidecar larger than this is refused before it is decoded (kamaki's are ~700 bytes).
MAX_METAFILE_BYTES = 1024 * 1024

#: What the image service accepts (api.md §4.2); a deployment may configure others,
#: so ``parse`` and ``xattrs.set`` take the lists as arguments (``None``: any value).
DISK_FORMATS = ("diskdump", "extdump", "ntfsdump")
CONTAINER_FORMATS = ("aki", "ari", "ami", "bare", "ovf")
DEFAULT_DISK_FORMAT = "diskdump"
DEFAULT_CONTAINER_FORMAT = "bare"

#: Limits of the registration record (api.md §4.2): every value (name, formats,
#: status, property values) up to 256 characters, a property key up to 93, and
#: 32 keys in all, four of which are always taken (name, the two formats,
#: created_at) and one more when a status is stored.
MAX_VALUE = names.MAX_PROPERTY_VALUE
MAX_PROPERTY_KEY = names.MAX_PROPERTY_KEY
MAX_REGISTRATION_KEYS = 32
_ALWAYS_STORED = 4

#: Keys the service owns, in normalised form: read and ignored (never sent).
SERVER_KEYS = frozenset({
    "id", "owner", "location", "checksum", "size", "created_at", "updated_at",
    "deleted_at", "is_snapshot", "description", "store",
})
#: Keys that register: everything else is ignored.
WRITABLE_KEYS = ("name", "disk_format", "container_format", "is_public", "status", "properties")


# -- property keys ----------------------------------------------------------------------------

_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def normalise_property_key(key: str) -> str:
    """A property key as the service stores it: lower-case, ASCII punctuation -> ``_``.

    ``OS``, ``os`` and ``Os`` are one property, and so are ``root-partition``
    and ``root_partition`` (api.md §4.3). Compare keys only in this form.
    """
    return normalize_property_key(key)


def display_property_key(key: str) -> str:
    """A property key as the sidecar and the attribute names show it: ``OS``, ``ROOT_PARTITION``.

    Only ASCII letters are upper-cased (as the tutorial's kamaki did), so that
    ``normalise_property_key(display_property_key(k)) == k`` for every stored
    key: a full Unicode upper-case would turn ``straße`` into ``STRASSE`` and
    lose the key.
    """
    return key.translate(_ASCII_UPPER).replace("-", "_")


# -- the registration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What a sidecar asks for: the writable fields of an image.

    ``status`` is ``None`` when the file does not say (the service then
    derives it); a register call cannot carry it, so the filesystem sends it
    in a follow-up update when it differs from what the register reply says.
    ``properties`` keys are normalised (lower-case). ``ignored`` lists the
    unknown keys as written, for a log line; ``named_by_path`` says the file
    had no name and ``name`` is the object's path. Neither takes part in
    equality.
    """

    name: str
    disk_format: str = DEFAULT_DISK_FORMAT
    container_format: str = DEFAULT_CONTAINER_FORMAT
    is_public: bool = False
    status: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = field(default=(), compare=False)
    named_by_path: bool = field(default=False, compare=False)

    @classmethod
    def from_image(cls, image: Image) -> Registration:
        """The registration that would recreate ``image`` as it is."""
        return cls(
            name=image.name,
            disk_format=image.disk_format,
            container_format=image.container_format,
            is_public=image.is_public,
            status=image.status,
            properties={normalise_property_key(k): v for k, v in image.properties.items()},
        )

    def matches(self, image: Image) -> bool:
        """True if registering this would leave ``image`` as it is (status compared
        case-insensitively, as a real deployment may answer ``AVAILABLE``)."""
        return (
            self.name == image.name
            and self.disk_format == image.disk_format
            and self.container_format == image.container_format
            and self.is_public == image.is_public
            and (self.status is None or self.status.casefold() == image.status.casefold())
            and self.properties
            == {normalise_property_key(k): v for k, v in image.properties.items()}
        )


# -- value rules (shared with xattrs) ---------------------------------------------------------


def check_text(value: str, what: str) -> str:
    """``value`` if it can travel as UTF-8 (JSON ``\\ud800`` escapes cannot) and be stored
    (the services refuse a NUL character: checked here, before an override unregisters)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} contains an unpaired surrogate (\\uD800-\\uDFFF)") from None
    if "\0" in value:
        raise InvalidInput(f"{what} contains a NUL character (\\u0000)")
    return value


def _check_length(value: str, what: str) -> str:
    if len(value) > MAX_VALUE:
        raise ValueTooLarge(
            f"{what} is {len(value)} characters long; the image service allows {MAX_VALUE}")
    return value


def check_name(value: str, what: str = "name") -> str:
    """An image name: not blank (the service refuses it), at most 256 characters."""
    check_text(value, what)
    if not value.strip():
        raise InvalidInput(f"{what} is empty; an image needs a name")
    return _check_length(value, what)


def check_format(value: str, allowed: tuple[str, ...] | None, what: str) -> str:
    """A disk or container format: one of ``allowed`` (any case; returned lower-case)."""
    check_text(value, what)
    if allowed is None:
        if not value:
            raise InvalidInput(f"{what} is empty")
        return _check_length(value, what)
    lowered = value.strip().lower()
    if lowered not in allowed:
        raise InvalidInput(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return lowered


def check_status(value: str, what: str = "status") -> str:
    """A status: free text, verbatim; empty is allowed (api.md D9)."""
    return _check_length(check_text(value, what), what)


def check_property(key: str, value: str) -> tuple[str, str]:
    """A property as ``(normalised key, value)``, or raise.

    Keys with white space or control characters are refused rather than
    rewritten: they cannot be sent as a header name as written.
    """
    check_text(key, "a property key")
    if not key:
        raise InvalidInput("a property key is empty")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise InvalidInput(f"property key {key!r} contains a space or a control character")
    norm = normalise_property_key(key)
    if len(norm) > MAX_PROPERTY_KEY:
        raise ValueTooLarge(f"property key {key[:20]!r}... is {len(norm)} characters long; "
                            f"the image service allows {MAX_PROPERTY_KEY}")
    check_text(value, f"property {key!r}")
    _check_length(value, f"property {key!r}")
    return norm, value


def parse_bool(value: str, what: str) -> bool:
    """``true``/``false`` in any case (kamaki writes ``True``/``False``)."""
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise InvalidInput(f"{what} must be true or false, not {value!r}")


def check_property_count(count: int, *, with_status: bool) -> None:
    room = MAX_REGISTRATION_KEYS - _ALWAYS_STORED - (1 if with_status else 0)
    if count > room:
        raise ValueTooLarge(f"{count} properties; the image service stores at most {room}"
                            + (" besides a status" if with_status else ""))


# -- JSON decoding ----------------------------------------------------------------------------


class _Object(list):
    """A JSON object as its (key, value) pairs in file order: duplicates stay visible."""


class _Number(str):
    """A JSON number, kept as written (``1.10`` stays ``1.10``)."""


class _NotJson(ValueError):
    pass


def _reject_constant(word: str) -> object:
    raise _NotJson(f"{word} is not a JSON value")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, _Number):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, _Object):
        return "an object"
    return "a list"


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _load(data: bytes) -> object:
    if len(data) > MAX_METAFILE_BYTES:
        raise MetafileInvalid(f"too large: {len(data)} bytes; a metafile may have at most "
                              f"{MAX_METAFILE_BYTES} (kamaki's are under 1 KiB)")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise MetafileInvalid("UTF-16 or UTF-32 text; save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetafileInvalid(f"not UTF-8 text: byte 0x{data[exc.start]:02X} at "
                              f"{_position(data, exc.start)}; save it as UTF-8") from None
    if not text.strip():
        raise MetafileInvalid('empty; a metafile is a JSON object such as {"name": "My image"}')
    try:
        return json.loads(text, object_pairs_hook=_Object, parse_int=_Number,
                          parse_float=_Number, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MetafileInvalid(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except _NotJson as exc:
        raise MetafileInvalid(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise MetafileInvalid("not a metafile: its JSON is nested too deeply") from None


def _field_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


# -- parse ------------------------------------------------------------------------------------


def parse(text: bytes, *, default_name: str,
          disk_formats: tuple[str, ...] | None = DISK_FORMATS,
          container_formats: tuple[str, ...] | None = CONTAINER_FORMATS) -> Registration:
    """The registration a sidecar's bytes ask for, or ``MetafileInvalid`` saying why.

    ``default_name`` is the name when the file has none: the image object's
    path in its container (the tutorial's batch example names images
    ``images/debian.diskdump``). A missing or ``null`` value means the
    default for every field: formats ``diskdump``/``bare``, private, status
    left to the service, no properties, because re-registration replaces
    everything (behaviour.md §5).
    """
    try:
        return _parse(text, default_name, disk_formats, container_formats)
    except MetafileInvalid:
        raise
    except InvalidInput as exc:  # ValueTooLarge too: close() reports EINVAL for any bad sidecar
        raise MetafileInvalid(exc.message) from None


def _parse(text: bytes, default_name: str, disk_formats: tuple[str, ...] | None,
           container_formats: tuple[str, ...] | None) -> Registration:
    doc = _load(text)
    if not isinstance(doc, _Object):
        raise MetafileInvalid(f"a metafile must be a JSON object ({{...}}), not {_kind(doc)}")

    fields: dict[str, tuple[str, object]] = {}  # normalised key -> (key as written, value)
    ignored: list[str] = []
    for key, value in doc:
        norm = _field_key(key)
        if norm not in WRITABLE_KEYS:
            if norm not in SERVER_KEYS:
                ignored.append(key)
            continue
        if norm in fields:
            first, before = fields[norm]
            if before != value:
                raise MetafileInvalid(
                    f'"{first}" and "{key}" are the same key with different values')
            continue
        fields[norm] = (key, value)

    def text_of(norm: str) -> tuple[str, str | None]:
        """The key as written and its text; None when missing or null."""
        key, value = fields.get(norm, (norm.replace("_", "-"), None))
        if value is None or (isinstance(value, str) and not isinstance(value, _Number)):
            return key, value
        raise MetafileInvalid(f'"{key}" must be text, not {_kind(value)}')

    key, name = text_of("name")
    if name is None:
        if len(default_name) > MAX_VALUE:
            raise MetafileInvalid(
                f"no \"name\", and the file's path is {len(default_name)} characters "
                f"long, over the {MAX_VALUE} an image name may have; add a \"name\"")
        name = default_name
        named_by_path = True
    else:
        named_by_path = False
        name = check_name(name, f'"{key}"')

    key, disk_format = text_of("disk_format")
    disk_format = (check_format(disk_format, disk_formats, f'"{key}"')
                   if disk_format else DEFAULT_DISK_FORMAT)
    key, container_format = text_of("container_format")
    container_format = (check_format(container_format, container_formats, f'"{key}"')
                        if container_format else DEFAULT_CONTAINER_FORMAT)

    key, status = text_of("status")
    if status is not None:
        status = check_status(status, f'"{key}"')

    key, public = fields.get("is_public", ("is-public", None))
    if public is None:
        is_public = False
    elif isinstance(public, bool):
        is_public = public
    elif isinstance(public, str) and not isinstance(public, _Number):
        is_public = parse_bool(public, f'"{key}"')
    else:
        raise MetafileInvalid(f'"{key}" must be true or false, not {_kind(public)}')

    key, raw = fields.get("properties", ("properties", None))
    if raw is None:
        properties: dict[str, str] = {}
    elif isinstance(raw, _Object):
        properties = _properties(raw)
    else:
        raise MetafileInvalid(f'"{key}" must be a JSON object ({{"KEY": "value", ...}}), '
                              f"not {_kind(raw)}")
    check_property_count(len(properties), with_status=status is not None)

    if ignored:
        log.debug("metafile keys ignored: %s", ", ".join(ignored))
    return Registration(name=name, disk_format=disk_format, container_format=container_format,
                        is_public=is_public, status=status, properties=properties,
                        ignored=tuple(ignored), named_by_path=named_by_path)


def _properties(pairs: _Object) -> dict[str, str]:
    """Property pairs -> normalised dict. Numbers and booleans become text as
    written (``1.10``, ``true``); ``null`` or ``""`` means no such property
    (the service cannot store an empty one)."""
    out: dict[str, str] = {}
    written: dict[str, str] = {}
    for key, value in pairs:
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (_Object, list)):
            raise MetafileInvalid(f"property {key!r} is {_kind(value)}; property values "
                                  "must be text, numbers or true/false")
        norm, value = check_property(key, "" if value is None else str(value))
        if norm in out and out[norm] != value:
            raise MetafileInvalid(f"properties {written[norm]!r} and {key!r} are the same "
                                  "property (keys ignore case and punctuation) with different "
                                  "values")
        if norm not in out and value == "":
            continue
        out[norm] = value
        written.setdefault(norm, key)
    return out


# -- render -----------------------------------------------------------------------------------


def render(image: Image, *, owner_name: str | None = None) -> bytes:
    """The sidecar text of ``image``: kamaki's metafile with JSON types, UTF-8, final newline.

    ``owner_name`` adds kamaki's `` (username)`` suffix to ``owner``.
    ``parse(render(image), ...)`` gives back ``Registration.from_image(image)``.
    """
    owner = f"{image.owner} ({owner_name})" if owner_name else image.owner
    doc = {
        "checksum": image.checksum,
        "container-format": image.container_format,
        "created-at": image.created_at,
        "deleted-at": image.deleted_at,
        "disk-format": image.disk_format,
        "id": image.id,
        "is-public": bool(image.is_public),
        "location": image.location,
        "name": image.name,
        "owner": owner,
        "properties": {display_property_key(k): v for k, v in image.properties.items()},
        "size": int(image.size),
        "status": image.status,
        "updated-at": image.updated_at,
    }
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
