"""Names and size limits the Synnefo services enforce (api.md §3.1, §3.7, §4.2).

Checked on both sides: the client refuses a name before sending it (so the
shell sees ENAMETOOLONG, not a 400), the service refuses it on arrival.
Lengths are counted in characters, as Pithos counts them.
"""

from __future__ import annotations

from imagefs.errors import InvalidInput, NameTooLong

MAX_CONTAINER_NAME = 256
MAX_OBJECT_NAME = 1024
#: User metadata (per domain): key and value lengths, keys per object, headers per request.
MAX_META_KEY = 128
MAX_META_VALUE = 256
MAX_META_KEYS = 32
MAX_META_HEADERS = 90
#: Image registration: property key (after the ``plankton:property:`` prefix) and value.
MAX_PROPERTY_KEY = 93
MAX_PROPERTY_VALUE = 256


def check_container_name(name: str) -> str:
    """Return ``name`` if Pithos accepts it as a container name, else raise."""
    if not name or "/" in name or "\0" in name:
        raise InvalidInput(f"Invalid container name: {name!r}")
    if len(name) > MAX_CONTAINER_NAME:
        raise NameTooLong(f"Container name too long ({len(name)} > {MAX_CONTAINER_NAME})")
    return name


def check_object_name(name: str, *, addressable: bool = False) -> str:
    """Return ``name`` if Pithos accepts it as an object name, else raise.

    ``addressable`` adds kamaki's limits: no leading or trailing ``/`` and no
    ``//`` (kamaki cannot name such objects, so imagefs never creates them).
    """
    if not name or "\0" in name:
        raise InvalidInput(f"Invalid object name: {name!r}")
    if len(name) > MAX_OBJECT_NAME:
        raise NameTooLong(f"Object name too long ({len(name)} > {MAX_OBJECT_NAME})")
    if addressable and (name.startswith("/") or name.endswith("/") or "//" in name):
        raise InvalidInput(f"Object name not addressable by kamaki: {name!r}")
    return name


def is_valid_container_name(name: str) -> bool:
    try:
        check_container_name(name)
    except (InvalidInput, NameTooLong):
        return False
    return True


def is_valid_object_name(name: str, *, addressable: bool = False) -> bool:
    try:
        check_object_name(name, addressable=addressable)
    except (InvalidInput, NameTooLong):
        return False
    return True


def check_meta(meta: dict[str, str]) -> None:
    """Raise if user metadata exceeds the per-key/value limits (NameTooLong / InvalidInput)."""
    if len(meta) > MAX_META_HEADERS:
        raise InvalidInput(f"Too many metadata headers ({len(meta)} > {MAX_META_HEADERS})")
    for key, value in meta.items():
        if not key:
            raise InvalidInput("Empty metadata key")
        if len(key) > MAX_META_KEY:
            raise NameTooLong(f"Metadata key too long ({len(key)} > {MAX_META_KEY})")
        if len(value) > MAX_META_VALUE:
            raise InvalidInput(f"Metadata value too long ({len(value)} > {MAX_META_VALUE})")
