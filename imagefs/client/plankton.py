"""Plankton image service client (api.md §4).

Registration data travels in ``X-Image-Meta-*`` headers (quoted as kamaki
quotes them), listings in JSON. Tolerant of deployments: the list may be a
bare array or ``{"images": [...]}``, status may be upper-case, extra fields
are ignored. Size and checksum are never sent (a real service rejects them,
D7). ``reregister`` gives override semantics everywhere (D2).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from imagefs import errors
from imagefs.client.http import Http
from imagefs.client.models import Image
from imagefs.protocol import headers as H

log = logging.getLogger(__name__)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def image_from_fields(fields: Mapping[str, object], properties: Mapping[str, object]
                      ) -> Image:
    """Image from decoded fields (normalised keys) and properties, whatever their source."""
    get = fields.get
    return Image(
        id=str(get("id") or ""),
        name=str(get("name") or ""),
        location=str(get("location") or ""),
        owner=str(get("owner") or ""),
        size=_int(get("size")),
        checksum=str(get("checksum") or ""),
        disk_format=str(get("disk_format") or ""),
        container_format=str(get("container_format") or ""),
        status=str(get("status") or ""),
        is_public=_bool(get("is_public") or False),
        created_at=str(get("created_at") or ""),
        updated_at=str(get("updated_at") or ""),
        deleted_at=str(get("deleted_at") or ""),
        properties={H.normalize_property_key(str(k)): "" if v is None else str(v)
                    for k, v in properties.items()},
    )


def image_from_headers(headers) -> Image:
    fields, properties = H.image_meta_from_headers(headers)
    return image_from_fields(fields, properties)


def image_from_json(entry: dict) -> Image:
    fields = {H.normalize_property_key(str(k)): v for k, v in entry.items()}
    properties = entry.get("properties") or {}
    if not isinstance(properties, dict):
        properties = {}
    return image_from_fields(fields, properties)


def same_status(a: str, b: str) -> bool:
    """Statuses compare case-insensitively (real Synnefo says AVAILABLE, D1)."""
    return (a or "").lower() == (b or "").lower()


class Plankton:
    """The image service at ``url`` (``.../image/v1.0``)."""

    def __init__(self, http: Http, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")

    def image_url(self, image_id: str) -> str:
        return f"{self.url}/images/{H.quote(image_id, safe='')}"

    def register(self, location: str, name: str, *, disk_format: str | None = None,
                 container_format: str | None = None, is_public: bool | None = None,
                 properties: Mapping[str, str] | None = None) -> Image:
        """Register the object at ``location`` (``pithos://...``) as an image."""
        fields = {"name": name, "location": location, "disk_format": disk_format,
                  "container_format": container_format, "is_public": is_public}
        resp = self.http.request("POST", self.url + "/images/", expected=(200, 201),
                                 headers=H.image_headers(fields, properties or {}))
        image = image_from_headers(resp.headers)
        if not image.id:  # a service that answers with a JSON body instead
            image = self._from_body(resp) or image
        return image

    def _from_body(self, resp) -> Image | None:
        try:
            doc = json.loads(resp.content or b"null")
        except ValueError:
            return None
        if isinstance(doc, dict):
            doc = doc.get("image", doc)
            if isinstance(doc, dict) and doc.get("id"):
                return image_from_json(doc)
        return None

    def unregister(self, image_id: str) -> None:
        self.http.request("DELETE", self.image_url(image_id), expected=(204, 200))

    def get(self, image_id: str) -> Image:
        """The image (HEAD); NotFound if not an image, Forbidden if not readable."""
        resp = self.http.request("HEAD", self.image_url(image_id), expected=(200,))
        return image_from_headers(resp.headers)

    def list(self, detail: bool = True) -> list[Image]:
        """Every image the user can see (own, shared, public)."""
        path = "/images/detail" if detail else "/images/"
        resp = self.http.request("GET", self.url + path, expected=(200,),
                                 params={"sort_dir": "asc"})
        try:
            doc = json.loads(resp.content or b"[]")
        except ValueError as exc:
            raise errors.InvalidInput("image list: malformed JSON reply") from exc
        if isinstance(doc, dict):
            doc = doc.get("images", [])
        if not isinstance(doc, list):
            raise errors.InvalidInput("image list: not a list")
        return [image_from_json(entry) for entry in doc if isinstance(entry, dict)]

    def update(self, image_id: str, *, name: str | None = None,
               disk_format: str | None = None, container_format: str | None = None,
               status: str | None = None, is_public: bool | None = None,
               properties: Mapping[str, str] | None = None) -> Image:
        """Change fields; given properties are merged, an empty value deletes one."""
        fields = {"name": name, "disk_format": disk_format,
                  "container_format": container_format, "status": status,
                  "is_public": is_public}
        headers = H.image_headers(fields, properties or {})
        headers["Content-Length"] = "0"
        resp = self.http.request("PUT", self.image_url(image_id), expected=(200,),
                                 headers=headers, data=b"")
        image = image_from_headers(resp.headers)
        return image if image.id else self.get(image_id)

    def members(self, image_id: str) -> list[str]:
        resp = self.http.request("GET", self.image_url(image_id) + "/members", expected=(200,))
        try:
            doc = json.loads(resp.content or b"{}")
            return [str(m["member_id"]) for m in doc.get("members", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.InvalidInput("image members: malformed reply") from exc

    def add_member(self, image_id: str, member: str) -> None:
        self.http.request("PUT", self._member_url(image_id, member), expected=(204, 200),
                          headers={"Content-Length": "0"}, data=b"")

    def remove_member(self, image_id: str, member: str) -> None:
        self.http.request("DELETE", self._member_url(image_id, member), expected=(204, 200))

    def set_members(self, image_id: str, members: list[str]) -> None:
        """Replace the member list (publicity is kept)."""
        body = json.dumps({"memberships": [{"member_id": m} for m in members]})
        self.http.request("PUT", self.image_url(image_id) + "/members", expected=(204, 200),
                          headers={"Content-Type": "application/json"}, data=body.encode())

    def _member_url(self, image_id: str, member: str) -> str:
        return f"{self.image_url(image_id)}/members/{H.quote(member, safe='@')}"

    def reregister(self, location: str, name: str, *, disk_format: str | None = None,
                   container_format: str | None = None, is_public: bool | None = None,
                   properties: Mapping[str, str] | None = None, status: str | None = None,
                   existing_id: str | None = None) -> Image:
        """Register with override semantics on any deployment (D2): unregister the
        existing image first (a real Synnefo would merge old properties), then
        register, then set ``status`` (only settable by an update)."""
        if existing_id:
            try:
                self.unregister(existing_id)
            except errors.NotFound:
                pass
        image = self.register(location, name, disk_format=disk_format,
                              container_format=container_format, is_public=is_public,
                              properties=properties)
        if status is not None and not same_status(status, image.status):
            image = self.update(image.id, status=status)
        return image
