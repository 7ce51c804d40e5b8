"""Identity (Astakos): who a token is, and where the services are (api.md §2).

Endpoints are found in the service catalog by *type*, as kamaki does, so the
same code works against the embedded service and a real deployment whose
services live on different hosts.
"""

from __future__ import annotations

import json
import logging

from imagefs import errors
from imagefs.client.http import Http
from imagefs.client.models import Endpoints

log = logging.getLogger(__name__)


def tokens_url(auth_url: str) -> str:
    """The ``.../tokens`` URL of an identity URL (given with or without ``/tokens``)."""
    base = auth_url.rstrip("/")
    return base if base.endswith("/tokens") else base + "/tokens"


def authenticate(http: Http, auth_url: str) -> Endpoints:
    """POST the token to ``<identity>/tokens``; AuthRejected (401) if refused."""
    resp = http.request(
        "POST", tokens_url(auth_url), expected=(200, 201, 203),
        headers={"Content-Type": "application/json"},
        data=json.dumps({"auth": {"token": {"id": http.token}}}).encode())
    try:
        access = json.loads(resp.content)["access"]
        user = access["user"]
        catalog = access.get("serviceCatalog") or []
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.InvalidInput(f"{auth_url}: malformed authentication reply") from exc
    return Endpoints(
        user_uuid=str(user["id"]),
        user_name=str(user.get("name") or ""),
        object_store=endpoint(catalog, "object-store", auth_url),
        image=endpoint(catalog, "image", auth_url),
        account=endpoint(catalog, "account", auth_url, required=False),
    )


def endpoint(catalog: list, service_type: str, auth_url: str = "", *,
             required: bool = True) -> str:
    """The ``publicURL`` of the first service of ``service_type`` (case-insensitive)."""
    for service in catalog:
        if not isinstance(service, dict):
            continue
        if str(service.get("type", "")).lower() != service_type:
            continue
        for ep in service.get("endpoints") or []:
            url = ep.get("publicURL") if isinstance(ep, dict) else None
            if url:
                return str(url).rstrip("/")
    if required:
        raise errors.ImagefsError(
            f"{auth_url}: no {service_type} service in the catalog; not a Synnefo cloud?")
    return ""


def user_catalogs(http: Http, account_url: str, uuids=(), names=()
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """(uuid -> username, username -> uuid) for the given uuids and names; unknown ones
    are absent."""
    uuids, names = list(uuids), list(names)
    if not uuids and not names:
        return {}, {}
    body: dict[str, list[str]] = {}
    if uuids:
        body["uuids"] = uuids
    if names:
        body["displaynames"] = names
    resp = http.request("POST", account_url.rstrip("/") + "/user_catalogs",
                        expected=(200, 201, 203), headers={"Content-Type": "application/json"},
                        data=json.dumps(body).encode())
    try:
        doc = json.loads(resp.content)
        by_uuid = {str(k): str(v) for k, v in (doc.get("uuid_catalog") or {}).items()}
        by_name = {str(k): str(v) for k, v in (doc.get("displayname_catalog") or {}).items()}
    except (ValueError, AttributeError) as exc:
        raise errors.InvalidInput(f"{account_url}: malformed user_catalogs reply") from exc
    return by_uuid, by_name
