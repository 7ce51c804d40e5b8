"""Header and value encodings of the Synnefo APIs (api.md §1.3, §1.6, §3.7, §3.8, §4.3).

Pure functions shared by the client and the embedded service, so both sides
quote, normalise and date things the same way. Header values must be ASCII:
whatever is not is percent-encoded as UTF-8 (kamaki's ``quote`` with safe
``/``); the service quotes its replies with a wider safe set. Keys are
normalised the way real Synnefo stores them: Pithos metadata keys
capitalised with dashes (``image_os`` -> ``Image-Os``), image property keys
lower-case with punctuation turned into ``_``.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote as _quote
from urllib.parse import unquote_to_bytes

from imagefs.errors import InvalidInput

# -- percent-encoding -------------------------------------------------------------------------

#: What kamaki leaves unquoted in request header values, paths and query values.
SAFE = "/"
#: What real Pithos leaves unquoted in X-Account-/X-Container-/X-Object-/Content- reply values.
SAFE_REPLY = '/=,:@; "'


def quote(value: str, safe: str = SAFE) -> str:
    """Percent-encode ``value`` (UTF-8) for a header value, path or query value."""
    return _quote(value, safe=safe, encoding="utf-8", errors="strict")


def quote_reply(value: str) -> str:
    """Quote a reply header value the way Pithos does (sharing strings stay readable)."""
    return _quote(value, safe=SAFE_REPLY, encoding="utf-8", errors="strict")


def unquote(value: str) -> str:
    """Decode percent-escapes as UTF-8; bad UTF-8 is InvalidInput (the service's 400).

    A value without ``%`` is returned unchanged, so plain ASCII costs nothing.
    """
    if "%" not in value:
        return value
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("Invalid UTF-8 in percent-encoded header value") from exc


def latin1_to_text(value: str) -> str:
    """Undo WSGI/http.client's latin-1 decoding of a raw header value (UTF-8 sent unquoted)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


# -- key normalisation ------------------------------------------------------------------------


def normalize_meta_key(key: str) -> str:
    """Pithos user-metadata key as stored: ``_`` -> ``-``, each word capitalised.

    ``image_os`` and ``IMAGE-OS`` both become ``Image-Os`` (api.md §3.7).
    """
    return "-".join(word.capitalize() for word in key.replace("_", "-").split("-"))


_PUNCT = str.maketrans({c: "_" for c in string.punctuation})


def normalize_property_key(key: str) -> str:
    """Image property (and field) key as stored: lower-case, ASCII punctuation -> ``_``.

    ``OS``, ``os`` and ``Os`` are one key; so are ``root-partition`` and
    ``root_partition`` (api.md §4.3).
    """
    return key.lower().translate(_PUNCT)


# -- Pithos metadata headers ------------------------------------------------------------------

OBJECT_META = "X-Object-Meta-"
CONTAINER_META = "X-Container-Meta-"
ACCOUNT_META = "X-Account-Meta-"
ACCOUNT_GROUP = "X-Account-Group-"


def meta_headers(prefix: str, meta: Mapping[str, str]) -> dict[str, str]:
    """Request headers for user metadata: names and values quoted as kamaki does.

    An empty value is kept (with ``?update`` it deletes the key).
    """
    return {prefix + quote(key, safe=""): quote(str(value)) for key, value in meta.items()}


def meta_from_headers(prefix: str, headers: Iterable[tuple[str, str]] | Mapping[str, str]
                      ) -> dict[str, str]:
    """User metadata from headers (a mapping or pairs): prefix stripped, names normalised,
    names and values unquoted. Header-name case does not matter."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lowered = prefix.lower()
    out: dict[str, str] = {}
    for name, value in items:
        if name.lower().startswith(lowered) and len(name) > len(prefix):
            out[normalize_meta_key(unquote(name[len(prefix):]))] = unquote(value)
    return out


# -- dates (api.md §1.6) ----------------------------------------------------------------------


def format_http_date(ts: float) -> str:
    """RFC 1123 date, whole seconds, GMT: ``Wed, 19 Jun 2013 08:00:22 GMT``."""
    return formatdate(int(ts), usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """Unix seconds of an HTTP date, or None when absent or malformed."""
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def format_iso_date(ts: float) -> str:
    """``last_modified`` of JSON listings: ``2013-06-19T08:00:22.565891+00:00``."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def parse_iso_date(value: str | None) -> float | None:
    """Unix seconds of an ISO 8601 date (naive means UTC), or None."""
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def format_timestamp(ts: float) -> str:
    """Unix seconds as the string listings and ``version=list`` carry: ``"1371628822.565891"``."""
    return f"{ts:.6f}"


def parse_timestamp(value: str | float | int | None) -> float | None:
    """Unix seconds from a timestamp string or number, or None."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


IMAGE_DATE = "%Y-%m-%d %H:%M:%S"


def format_image_date(ts: float) -> str:
    """Image ``created_at``/``updated_at``: ``2013-06-19 08:00:22`` (UTC)."""
    return time.strftime(IMAGE_DATE, time.gmtime(ts))


def parse_image_date(value: str | None) -> float | None:
    """Unix seconds of an image date (also tolerates ISO 8601), or None."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip(), IMAGE_DATE).replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        return parse_iso_date(value)


# -- image locations (api.md §4.2, §4.4) ------------------------------------------------------

LOCATION_SCHEME = "pithos://"


def location(account: str, container: str, name: str) -> str:
    """``pithos://<account>/<container>/<name>``, every part percent-encoded, ``/`` kept."""
    return f"{LOCATION_SCHEME}{quote(account)}/{quote(container)}/{quote(name)}"


def parse_location(value: str) -> tuple[str, str, str]:
    """(account, container, name) of a location, unquoted; InvalidInput ("Invalid location")
    unless it splits into ``pithos:``, ``""``, account, container, object."""
    parts = (value or "").split("/", 4)
    if (len(parts) != 5 or parts[0] != "pithos:" or parts[1] != ""
            or not parts[2] or not parts[3] or not parts[4]):
        raise InvalidInput("Invalid location")
    return unquote(parts[2]), unquote(parts[3]), unquote(parts[4])


# -- sharing (api.md §3.8) --------------------------------------------------------------------

SHARING_KINDS = ("read", "write")


def parse_sharing(value: str | None) -> dict[str, list[str]]:
    """``read=a,b; write=c`` -> {"read": [...], "write": [...]} with the server's rules.

    Items are lower-cased; a list holding ``*`` is just ``["*"]``; a user in both
    lists stays only in ``write``; an empty value means no permissions ({}).
    An empty list (``read=``) or an unknown kind is InvalidInput.
    """
    out: dict[str, list[str]] = {}
    if value is None or not value.strip():
        return out
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        kind, eq, members = part.partition("=")
        kind = kind.strip().lower()
        if not eq or kind not in SHARING_KINDS:
            raise InvalidInput(f"Bad X-Object-Sharing header value: {value!r}")
        items = [m.strip().lower() for m in members.replace(" ", "").split(",") if m.strip()]
        if not items:
            raise InvalidInput(f"Bad X-Object-Sharing header value: {value!r}")
        current = out.setdefault(kind, [])
        for item in items:
            if item not in current:
                current.append(item)
    for kind, items in out.items():
        if "*" in items:
            out[kind] = ["*"]
    if "read" in out and "write" in out:
        writers = set(out["write"])
        out["read"] = [u for u in out["read"] if u not in writers]
        if not out["read"]:
            del out["read"]
    return out


def format_sharing(sharing: Mapping[str, Iterable[str]]) -> str:
    """{"read": [...], "write": [...]} -> ``read=a,b; write=c`` ("" when nothing is granted)."""
    parts = []
    for kind in SHARING_KINDS:
        items = list(sharing.get(kind) or ())
        if items:
            parts.append(f"{kind}={','.join(items)}")
    return "; ".join(parts)


# -- image headers (api.md §4.3) --------------------------------------------------------------

IMAGE_META = "x-image-meta-"
IMAGE_PROPERTY = "x-image-meta-property-"
#: The ``X-Image-Meta-<field>`` names Plankton recognises (normalised); others are ignored.
IMAGE_FIELDS = (
    "name", "disk_format", "container_format", "size", "checksum", "location", "created_at",
    "updated_at", "deleted_at", "status", "is_public", "owner", "id", "is_snapshot",
    "description", "store",
)
#: Fields whose values are percent-encoded on the wire.
QUOTED_IMAGE_FIELDS = ("name", "description")


def image_meta_items(headers: Iterable[tuple[str, str]] | Mapping[str, str]
                     ) -> Iterator[tuple[str, str, str]]:
    """Decode ``X-Image-Meta-*`` headers into ("field"|"property", key, value) triples.

    Keys are normalised (lower-case, punctuation -> ``_``); property keys and
    values, and the name/description values, are unquoted; unknown fields are
    skipped; other values (``location`` included) are verbatim. Repeated
    headers yield repeated triples, so a caller can resolve duplicates itself.
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        lname = name.lower()
        if lname.startswith(IMAGE_PROPERTY):
            key = normalize_property_key(unquote(name[len(IMAGE_PROPERTY):]))
            if key:
                yield "property", key, unquote(value)
        elif lname.startswith(IMAGE_META):
            key = normalize_property_key(name[len(IMAGE_META):])
            if key in IMAGE_FIELDS:
                yield "field", key, unquote(value) if key in QUOTED_IMAGE_FIELDS else value


def image_meta_from_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]
                            ) -> tuple[dict[str, str], dict[str, str]]:
    """(fields, properties) of ``X-Image-Meta-*`` headers; the last duplicate wins."""
    fields: dict[str, str] = {}
    properties: dict[str, str] = {}
    for kind, key, value in image_meta_items(headers):
        (fields if kind == "field" else properties)[key] = value
    return fields, properties


def _image_value(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def image_headers(fields: Mapping[str, object], properties: Mapping[str, str] | None = None,
                  *, lower: bool = False) -> dict[str, str]:
    """``X-Image-Meta-*`` headers for fields and properties; None values are left out.

    Field names take dashes (``disk_format`` -> ``X-Image-Meta-Disk-Format``),
    property keys too (some proxies drop header names with ``_``); name,
    description and every property key and value are quoted; booleans are
    ``True``/``False``. ``lower`` gives the lower-case names Plankton replies with.
    """
    out: dict[str, str] = {}
    for key, value in fields.items():
        if value is None:
            continue
        text = _image_value(value)
        if key in QUOTED_IMAGE_FIELDS:
            text = quote(text)
        suffix = key.replace("_", "-")
        name = (IMAGE_META + suffix) if lower else "X-Image-Meta-" + suffix.title()
        out[name] = text
    for key, value in (properties or {}).items():
        if value is None:
            continue
        suffix = quote(key.replace("_", "-"), safe="")
        name = (IMAGE_PROPERTY if lower else "X-Image-Meta-Property-") + suffix
        out[name] = quote(str(value))
    return out


# -- query strings (api.md §1.4) --------------------------------------------------------------


def query_string(params: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """kamaki-style query string: a None or "" value is a bare flag (``update``), others
    ``k=quote(v)``; order kept. No leading ``?``."""
    items = params.items() if isinstance(params, Mapping) else params
    parts = []
    for key, value in items:
        if value is None or value == "":
            parts.append(quote(str(key), safe=""))
        else:
            if isinstance(value, bool):
                value = "True" if value else "False"
            parts.append(f"{quote(str(key), safe='')}={quote(str(value))}")
    return "&".join(parts)
