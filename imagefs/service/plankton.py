"""Image (Plankton) endpoints: register, inspect, update, unregister, list, members (api.md §4).

An image is an object: the registration lives on the object's current
version (``store.register_image``), its id is the object's uuid, and
``is_public`` is a ``*`` in the object's read permission. This module only
translates ``X-Image-Meta-*`` headers to store calls and back.

Header rules worth knowing (api.md §4.3):

- property keys are case-insensitive and ``-`` equals ``_``; they are stored
  and returned lower-case; values, names and property keys travel
  percent-encoded;
- kamaki 0.16's ``image modify -p user=admin`` re-sends the old value under
  ``...-Property-user`` *and* the new one under ``...-Property-USER``. WSGI
  joins such repeats into ``old,admin``; decision D8 instead keeps a value
  that differs from the stored one. That needs the unjoined header list,
  which the server hands over through ``app.raw_headers_hook`` (gunicorn's
  ``pre_request``); served any other way, the joined value is used as is.

Where the embedded service differs from a current Synnefo (api.md §8), the
``--real-synnefo`` switch (``Settings.real_synnefo``) restores Synnefo's
behaviour: merge on re-registration (D2), the ``{"images": [...]}`` list
envelope (D5) and the mapped upper-case status of HEAD (D1).
"""

from __future__ import annotations

import logging
import re

from imagefs import errors
from imagefs.protocol import headers as wire
from imagefs.protocol import names
from imagefs.service.app import NotAllowed, NotImplementedHere, Route, ServiceRequest, \
    json_reply, load_json, read_body, reply

log = logging.getLogger(__name__)

ROOT = "/image/v1.0"
DISK_FORMATS = ("diskdump", "extdump", "ntfsdump")
CONTAINER_FORMATS = ("aki", "ari", "ami", "bare", "ovf")
SORT_KEYS = ("id", "name", "status", "size", "disk_format", "container_format", "created_at",
             "updated_at")
SHORT_FIELDS = ("id", "name", "status", "disk_format", "container_format", "size")
#: The members list (PUT .../members) is the only JSON body Plankton reads.
MAX_BODY = 1 << 20
#: Register (POST) refuses these: the server assigns them.
REGISTER_REFUSED = ("id", "status", "created_at", "updated_at", "deleted_at", "is_snapshot",
                    "description")
#: Update (PUT) refuses these: they are fixed by the object (the seed's "cannot modify").
IMMUTABLE = ("id", "location", "size", "checksum", "created_at", "updated_at", "deleted_at",
             "store", "is_snapshot", "description")
#: Synnefo's HEAD maps a stored status to one of its own words (D1, real mode only).
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
REAL_STATUS = {"AVAILABLE": "AVAILABLE", "UNAVAILABLE": "SAVING", "ERROR": "ERROR",
               "DELETED": "DELETED"}


def _check_id(image_id: str) -> None:
    """Ids are object uuids; anything else is a 400, as in real Plankton (kamaki: "No image")."""
    if not _UUID.match(image_id):
        raise errors.InvalidInput("Invalid image id")


# -- header decoding -----------------------------------------------------------------------------

def _decode(request: ServiceRequest, stored: dict[str, str] | None = None
            ) -> tuple[dict[str, str], dict[str, str], bool]:
    """(fields, properties, had_duplicates) of the request's ``X-Image-Meta-*`` headers.

    Repeated property keys (after normalisation) follow D8: a value that
    differs from ``stored`` wins, otherwise the last one.
    """
    fields: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for kind, key, value in wire.image_meta_items(request.all_headers()):
        if kind == "field":
            fields[key] = value
        else:
            groups.setdefault(key, []).append(value)
    properties = {}
    duplicates = False
    for key, values in groups.items():
        if len(values) > 1:
            duplicates = True
            old = (stored or {}).get(key)
            differing = [v for v in values if v != old]
            properties[key] = (differing or values)[-1]
        else:
            properties[key] = values[0]
    for key, value in properties.items():
        if len(key) > names.MAX_PROPERTY_KEY:
            raise errors.InvalidInput(f"Property key too long: {key[:20]}...")
        if len(value) > names.MAX_PROPERTY_VALUE:
            raise errors.InvalidInput(f"Property value too long for {key}")
    return fields, properties, duplicates


def _check_formats(fields: dict[str, str]) -> None:
    if "disk_format" in fields and fields["disk_format"] not in DISK_FORMATS:
        raise errors.InvalidInput(f"Invalid disk format {fields['disk_format']!r}")
    if "container_format" in fields and fields["container_format"] not in CONTAINER_FORMATS:
        raise errors.InvalidInput(
            f"Invalid container format {fields['container_format']!r}")


# -- encoding --------------------------------------------------------------------------------------

def _status(app, rec, *, head: bool) -> str:
    status = rec.status if rec.status is not None else "available"
    if not app.settings.real_synnefo:
        return status
    if status == "available":          # the derived default: real Synnefo says AVAILABLE
        status = "AVAILABLE"
    if head:
        return REAL_STATUS.get(status.upper(), "UNKNOWN")
    return status


def image_dict(app, rec, *, head: bool = False) -> dict[str, object]:
    """All fields of an image record, in the types of the JSON detail list."""
    return {
        "id": rec.id,
        "name": rec.name,
        "status": _status(app, rec, head=head),
        "disk_format": rec.disk_format,
        "container_format": rec.container_format,
        "size": rec.size,
        "checksum": rec.checksum,
        "location": rec.location,
        "created_at": wire.format_image_date(rec.created_at),
        "updated_at": wire.format_image_date(rec.updated_at),
        "deleted_at": "",
        "is_public": bool(rec.is_public),
        "owner": rec.owner,
        "properties": dict(rec.properties or {}),
    }


def image_reply(app, rec, status: int = 200):
    """The header form of an image (HEAD, register, update): lower-case names, empty body."""
    fields = image_dict(app, rec, head=True)
    properties = fields.pop("properties")
    return reply(status, headers=wire.image_headers(fields, properties, lower=True))


# -- views -----------------------------------------------------------------------------------------

def images(app, request: ServiceRequest):
    """``/images`` and ``/images/``: GET lists (short form), POST registers."""
    if request.method == "POST":
        return register(app, request)
    if request.method in ("GET", "HEAD"):
        return _list(app, request, detail=False)
    raise NotAllowed(("GET", "HEAD", "POST"))


def images_detail(app, request: ServiceRequest):
    if request.method not in ("GET", "HEAD"):
        raise NotAllowed(("GET", "HEAD"))
    return _list(app, request, detail=True)


def register(app, request: ServiceRequest):
    """``POST /images/``: register an object of the caller as an image (api.md §4.4)."""
    fields, properties, _ = _decode(request)
    refused = [f for f in REGISTER_REFUSED if f in fields]
    if refused:
        raise errors.InvalidInput("Invalid parameters")
    name = fields.get("name")
    if name is None:
        raise errors.InvalidInput("Missing image name")
    if not name.strip():
        raise errors.InvalidInput("Invalid image name")
    location = fields.get("location")
    if not location:
        raise errors.InvalidInput("Missing image location")
    account, container, object_name = wire.parse_location(location)
    fields.setdefault("disk_format", "diskdump")
    fields.setdefault("container_format", "bare")
    _check_formats(fields)
    if "store" in fields and fields["store"] != "pithos":
        raise errors.InvalidInput("Invalid store field")
    size = None
    if "size" in fields:
        if not re.fullmatch(r"[0-9]+", fields["size"].strip()):
            raise errors.InvalidInput("Invalid size field")
        size = int(fields["size"])
    rec = app.store.register_image(
        request.user.uuid, account, container, object_name,
        image_name=name, disk_format=fields["disk_format"],
        container_format=fields["container_format"],
        is_public=fields.get("is_public", "").strip().lower() == "true",
        properties=properties, size=size, checksum=fields.get("checksum") or None,
        merge=app.settings.real_synnefo)
    return image_reply(app, rec)


def image(app, request: ServiceRequest, image_id: str):
    """``/images/<id>``: HEAD (metadata), PUT (update), DELETE (unregister); GET is 501."""
    _check_id(image_id)
    store, user = app.store, request.user
    method = request.method
    if method == "HEAD":
        return image_reply(app, store.get_image(user.uuid, image_id))
    if method == "GET":
        raise NotImplementedHere("Image data is served by the object store")
    if method == "DELETE":
        store.unregister_image(user.uuid, image_id)
        return reply(204)
    if method == "PUT":
        return _update(app, request, image_id)
    raise NotAllowed(("DELETE", "GET", "HEAD", "PUT"))


def _update(app, request: ServiceRequest, image_id: str):
    """``PUT /images/<id>`` (api.md §4.7): merge fields and properties, "" deletes a property."""
    store, user = app.store, request.user
    fields, properties, duplicates = _decode(request)
    if duplicates:
        current = store.get_image(user.uuid, image_id)
        fields, properties, _ = _decode(request, current.properties or {})
    if any(f in fields for f in IMMUTABLE):
        raise errors.InvalidInput("Invalid metadata")
    if "name" in fields and not fields["name"].strip():
        raise errors.InvalidInput("Invalid image name")
    _check_formats(fields)
    is_public = None
    if "is_public" in fields:
        is_public = fields["is_public"].strip().lower() == "true"
    changes = {k: fields[k] for k in ("name", "disk_format", "container_format", "status")
               if k in fields}
    rec = store.update_image(user.uuid, image_id, fields=changes, properties=properties,
                             is_public=is_public)
    return image_reply(app, rec)


def _list(app, request: ServiceRequest, *, detail: bool):
    """``GET /images/`` and ``/images/detail`` with filters (D6) and sorting (api.md §4.6)."""
    q = request.query
    filters = {k: q.get(k) for k in ("name", "container_format", "disk_format", "status")
               if q.get(k) is not None}
    try:
        size_min = int(q.get("size_min")) if q.get("size_min") is not None else None
        size_max = int(q.get("size_max")) if q.get("size_max") is not None else None
    except ValueError:
        raise errors.InvalidInput("Malformed request.") from None
    sort_key = q.get("sort_key", "created_at")
    sort_dir = q.get("sort_dir", "desc")
    if sort_key not in SORT_KEYS or sort_dir not in ("asc", "desc"):
        raise errors.InvalidInput("Malformed request.")
    pairs = [(rec, image_dict(app, rec)) for rec in app.store.list_images(request.user.uuid)]
    pairs = [(rec, i) for rec, i in pairs
             if all(i[k] == v for k, v in filters.items())
             and (size_min is None or i["size"] >= size_min)
             and (size_max is None or i["size"] <= size_max)]
    # Dates sort on the stored floats: the wire format has whole seconds only.
    pairs.sort(key=lambda p: (getattr(p[0], sort_key) if sort_key.endswith("_at")
                              else p[1][sort_key], p[1]["id"]),
               reverse=sort_dir == "desc")
    items = [i for _rec, i in pairs]
    if not detail:
        items = [{k: i[k] for k in SHORT_FIELDS} for i in items]
    if app.settings.real_synnefo:
        return json_reply({"images": items})
    return json_reply(items)


def members(app, request: ServiceRequest, image_id: str):
    """``/images/<id>/members``: GET lists, PUT replaces the list (api.md §4.9)."""
    _check_id(image_id)
    store, user = app.store, request.user
    if request.method in ("GET", "HEAD"):
        found = store.image_members(user.uuid, image_id)
        return json_reply({"members": [{"member_id": m, "can_share": False} for m in found]})
    if request.method == "PUT":
        body = load_json(read_body(request, MAX_BODY) or b"null")
        try:
            wanted = [m["member_id"] for m in body["memberships"]]
            if not all(isinstance(m, str) and m for m in wanted):
                raise TypeError
        except (KeyError, TypeError):
            raise errors.InvalidInput("Malformed request.") from None
        store.set_members(user.uuid, image_id, wanted)
        return reply(204)
    raise NotAllowed(("GET", "HEAD", "PUT"))


def member(app, request: ServiceRequest, image_id: str, member_id: str):
    _check_id(image_id)
    store, user = app.store, request.user
    if request.method == "PUT":
        store.add_member(user.uuid, image_id, member_id)
        return reply(204)
    if request.method == "DELETE":
        store.remove_member(user.uuid, image_id, member_id)
        return reply(204)
    raise NotAllowed(("DELETE", "PUT"))


def shared_images(app, request: ServiceRequest, owner: str):
    if request.method not in ("GET", "HEAD"):
        raise NotAllowed(("GET", "HEAD"))
    ids = app.store.shared_images(request.user.uuid, owner)
    return json_reply({"shared_images": [{"image_id": i, "can_share": False} for i in ids]})


_ALL = ("GET", "HEAD", "POST", "PUT", "DELETE")
ROUTES = [
    Route(ROOT + "/images", images, _ALL),
    Route(ROOT + "/images/", images, _ALL),
    Route(ROOT + "/images/detail", images_detail, _ALL),
    Route(ROOT + '/images/<regex("[A-Za-z0-9_-]+"):image_id>', image, _ALL),
    Route(ROOT + '/images/<regex("[A-Za-z0-9_-]+"):image_id>/members', members, _ALL),
    Route(ROOT + '/images/<regex("[A-Za-z0-9_-]+"):image_id>/members/'
          '<regex("[A-Za-z0-9_@.-]+"):member_id>', member, _ALL),
    Route(ROOT + '/shared-images/<regex("[A-Za-z0-9_@.-]+"):owner>', shared_images, _ALL),
]
