"""Anonymous reads of published objects: ``GET/HEAD /public/<id>`` (api.md §3.8).

A published object (``X-Object-Public: true``) is readable by anyone who
knows its random id. The reply says only what a stranger may know: ETag,
length, type, dates and the content headers, never ``X-Object-*`` (no uuid,
no owner, no sharing). Range and the conditional headers work as on the
authenticated path. Unrelated to an image's ``is_public`` (D19).
"""

from __future__ import annotations

import re

from imagefs import errors
from imagefs.protocol import headers as wire
from imagefs.service.app import NotAllowed, Route, ServiceRequest
from imagefs.service.pithos import SYSTEM_META, check_conditions, serve_data

_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_PUBLIC_HEADERS = ("Content-Encoding", "Content-Disposition")


def public_object(app, request: ServiceRequest, public_id: str):
    if request.method not in ("GET", "HEAD"):
        raise NotAllowed(("GET", "HEAD"))
    if not _ID.match(public_id):
        raise errors.NotFound("Object does not exist")
    v = app.store.get_public(public_id)
    headers = {
        "ETag": v.hash,
        "Content-Type": v.content_type,
        "Last-Modified": wire.format_http_date(v.latest_mtime or v.mtime),
    }
    for name in _PUBLIC_HEADERS:
        value = (v.meta or {}).get(SYSTEM_META + name)
        if value is not None:
            headers[name] = value
    check_conditions(request, v.hash, v.latest_mtime or v.mtime, headers)
    return serve_data(app, request, v, headers)


ROUTES = [
    Route("/public/<public_id>", public_object, ("GET", "HEAD", "PUT", "POST", "DELETE"),
          auth=False),
]
