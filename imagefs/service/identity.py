"""Identity (Astakos) endpoints: ``POST tokens`` and ``POST user_catalogs`` (api.md §2).

The reply to ``tokens`` is the only place a client learns the other URLs,
so the catalog must satisfy astakosclient and kamaki exactly: an
``astakos_account`` service whose ``v1.0`` endpoint has both ``publicURL``
and ``SNF:uiURL`` (astakosclient fails authentication without it), and
exactly one ``object-store`` and one ``image`` endpoint. Every URL is on the
listener the client reached, because astakosclient sends ``user_catalogs``
to the identity URL's host:port whatever the catalog says.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from werkzeug.wrappers import Response

from imagefs import errors
from imagefs import log as imagefs_log
from imagefs.service.app import Route, ServiceRequest, json_reply, load_json, read_body, reply

log = logging.getLogger(__name__)

IDENTITY = "/identity/v2.0"
ACCOUNT = "/account/v1.0"
OBJECT_STORE = "/object-store/v1"
IMAGE = "/image/v1.0"
UI = "/ui"
#: Tokens of the embedded service do not expire; advertise a date a year ahead.
TOKEN_LIFETIME = 365 * 24 * 3600
MAX_BODY = 1 << 20


def catalog(base: str) -> list[dict]:
    """The service catalog for a service reachable at ``base`` (``http://host:port``)."""

    def service(name: str, kind: str, path: str, version: str) -> dict:
        return {"name": name, "type": kind, "endpoints_links": [],
                "endpoints": [{"versionId": version, "publicURL": base + path,
                               "SNF:uiURL": base + UI, "region": "default"}]}

    return [
        service("astakos_account", "account", ACCOUNT, "v1.0"),
        service("astakos_identity", "identity", IDENTITY, "v2.0"),
        service("pithos_object-store", "object-store", OBJECT_STORE, "v1"),
        service("cyclades_plankton", "image", IMAGE, "v1.0"),
    ]


def _read_json(request: ServiceRequest) -> object | None:
    """The JSON body, None when there is none; 400 when it is not JSON, 413 over 1 MiB."""
    length = request.content_length
    if not request.is_chunked and not length:
        return None
    data = read_body(request, MAX_BODY)
    if not data.strip():
        return None
    return load_json(data)


def _expires() -> str:
    ts = time.time() + TOKEN_LIFETIME
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def tokens(app, request: ServiceRequest) -> Response:
    """``POST tokens``: authenticate by the token in the body (header ignored, as Astakos)."""
    base = app.base_url(request)
    body = _read_json(request)
    if body is None:
        # "Public mode": the catalog alone, for clients that only want the URLs.
        return json_reply({"access": {"serviceCatalog": catalog(base)}})
    try:
        auth = body["auth"]
        tenant = auth.get("tenantName")
        if "token" in auth:
            token, claimed_uuid = auth["token"]["id"], None
        else:
            creds = auth["passwordCredentials"]
            token, claimed_uuid = creds["password"], creds["username"]
        if not isinstance(token, str) or not token:
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise errors.InvalidInput("Malformed request") from None
    user = app.store.user_for_token(token)
    if user is None or (claimed_uuid is not None and claimed_uuid != user.uuid):
        log.info("authentication refused for a client at %s", request.remote_addr)
        raise errors.AuthRejected("Invalid token")
    imagefs_log.register_secret(token)     # masked in this process's log from now on
    if tenant is not None and tenant != user.uuid:
        raise errors.InvalidInput("Not conforming tenantName")
    app.ensure_account(user.uuid)
    return json_reply({"access": {
        "token": {"id": token, "expires": _expires(),
                  "tenant": {"id": user.uuid, "name": user.name}},
        "user": {"id": user.uuid, "name": user.name,
                 "roles": [{"id": "1", "name": "default"}], "roles_links": [],
                 "projects": []},
        "serviceCatalog": catalog(base),
    }})


def user_catalogs(app, request: ServiceRequest) -> Response:
    """``POST user_catalogs``: uuid -> username and username -> uuid maps (api.md §2.2)."""
    body = _read_json(request)
    if not isinstance(body, dict):
        raise errors.InvalidInput("Request body should be a JSON object")
    uuids = body.get("uuids") or []
    names = body.get("displaynames") or []
    if not isinstance(uuids, list) or not isinstance(names, list) or not all(
            isinstance(x, str) for x in [*uuids, *names]):
        raise errors.InvalidInput("uuids and displaynames must be lists of strings")
    return json_reply({
        "uuid_catalog": app.store.users_by_uuid(uuids) if uuids else {},
        "displayname_catalog": app.store.users_by_name(names) if names else {},
    })


def ui(app, request: ServiceRequest) -> Response:
    """The catalog's ``SNF:uiURL``: nothing to show, but the URL should answer."""
    return reply(200, "imagefs embedded Synnefo service\n", content_type="text/plain")


ROUTES = [
    Route(IDENTITY + "/tokens", tokens, ("POST",), auth=False),
    Route(IDENTITY + "/tokens/", tokens, ("POST",), auth=False),
    Route(ACCOUNT + "/user_catalogs", user_catalogs, ("POST",)),
    Route(ACCOUNT + "/user_catalogs/", user_catalogs, ("POST",)),
    Route(UI, ui, ("GET",), auth=False),
]
