"""behaviour.md §6 walked through two layers: status -> raise_for_status -> errors.to_errno.

Replies are built by hand (no server): the table is pure.
"""

from __future__ import annotations

import errno
import io
import json
import socket

import pytest
import requests

from imagefs import errors
from imagefs.client.http import Http, fault_message, raise_for_status


def reply(status: int, body: bytes | dict | None = None, *, method: str = "GET",
          reason: str = "", url: str = "http://127.0.0.1:9/object-store/v1/u/pithos/x"
          ) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.reason = reason
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    resp._content = body if body is not None else b""
    resp.raw = io.BytesIO(resp._content)
    resp.request = requests.Request(method, url).prepare()
    resp.url = url
    return resp


def fault(key: str, code: int, message: str) -> dict:
    return {key: {"code": code, "message": message, "details": ""}}


# (status, body, exception class, errno) — behaviour.md §6 first, then the rest of api.md §1.5
TABLE = [
    (401, fault("unauthorized", 401, "Invalid token"), errors.AuthRejected, errno.EACCES),
    (403, fault("forbidden", 403, ""), errors.Forbidden, errno.EACCES),
    (404, fault("itemNotFound", 404, "Object does not exist"), errors.NotFound, errno.ENOENT),
    (409, fault("conflict", 409, "Container is not empty"), errors.ContainerNotEmpty,
     errno.ENOTEMPTY),
    (413, fault("requestEntityTooLarge", 413, "Quota exceeded"), errors.QuotaExceeded,
     errno.EDQUOT),
    (414, None, errors.NameTooLong, errno.ENAMETOOLONG),
    (400, fault("badRequest", 400, "Object name too long"), errors.NameTooLong,
     errno.ENAMETOOLONG),
    (500, fault("internalServerError", 500, "boom"), errors.Transient, errno.EIO),
    (502, b"<html>bad gateway</html>", errors.Transient, errno.EIO),
    (503, None, errors.Transient, errno.EIO),
    (504, None, errors.Transient, errno.EIO),
    (408, None, errors.Transient, errno.EIO),
    (429, None, errors.Transient, errno.EIO),
    (400, fault("badRequest", 400, "Invalid data formatting"), errors.InvalidInput,
     errno.EINVAL),
    (411, fault("lengthRequired", 411, "Missing Content-Type header"), errors.InvalidInput,
     errno.EINVAL),
    (422, fault("unprocessableEntity", 422, "bad md5"), errors.InvalidInput, errno.EINVAL),
    (409, fault("conflict", 409, "Object exists"), errors.Conflict, errno.EEXIST),
    (412, fault("preconditionFailed", 412, "Precondition failed"), errors.PreconditionFailed,
     errno.EAGAIN),
    (416, fault("rangeNotSatisfiable", 416, "Requested range not satisfiable"),
     errors.RangeNotSatisfiable, errno.EINVAL),
    (405, fault("notAllowed", 405, "Method not allowed"), errors.Unsupported, errno.EOPNOTSUPP),
    (501, fault("notImplemented", 501, "Not Implemented"), errors.Unsupported,
     errno.EOPNOTSUPP),
    (418, None, errors.InvalidInput, errno.EINVAL),
]


@pytest.mark.parametrize("status,body,cls,code", TABLE,
                         ids=[f"{row[0]}-{row[2].__name__}" for row in TABLE])
def test_status_to_exception_to_errno(status, body, cls, code):
    with pytest.raises(errors.ImagefsError) as info:
        raise_for_status(reply(status, body), expected=(200,))
    assert type(info.value) is cls
    assert errors.to_errno(info.value) == code
    assert info.value.status == status


def test_expected_statuses_pass_through():
    resp = reply(409, b'["abc"]')
    assert raise_for_status(resp, expected=(201, 409)) is resp
    assert raise_for_status(reply(204), expected=(204, 200)).status_code == 204


def test_message_carries_the_service_fault():
    with pytest.raises(errors.NotFound) as info:
        raise_for_status(reply(404, fault("itemNotFound", 404, "Object does not exist"),
                               reason="NOT FOUND"))
    text = str(info.value)
    assert "GET /object-store/v1/u/pithos/x" in text
    assert "404 NOT FOUND itemNotFound (Object does not exist)" in text
    assert info.value.detail == "itemNotFound (Object does not exist)"


def test_seed_forbidden_with_empty_message():
    with pytest.raises(errors.Forbidden) as info:
        raise_for_status(reply(403, fault("forbidden", 403, ""), reason="FORBIDDEN",
                               method="DELETE", url="http://h/image/v1.0/images/x"))
    assert str(info.value).endswith("403 FORBIDDEN forbidden ()")


def test_head_errors_have_no_body_to_read():
    resp = reply(404, None, method="HEAD")
    assert fault_message(resp) == ""
    with pytest.raises(errors.NotFound):
        raise_for_status(resp)


def test_non_json_fault_body_is_quoted_in_one_line():
    resp = reply(500, b"Internal error\nTraceback ...")
    assert fault_message(resp) == "Internal error"


def test_service_unavailable_is_eio_and_token_never_in_message():
    with socket.socket() as sock:  # a port nothing listens on (any more)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    http = Http("secret-token-123", timeout=(0.2, 0.2), deadline=0.3)
    with pytest.raises(errors.ServiceUnavailable) as info:
        http.request("GET", f"http://127.0.0.1:{port}/identity/v2.0/tokens")
    assert errors.to_errno(info.value) == errno.EIO
    assert "secret-token-123" not in str(info.value)
    assert "connection refused" in str(info.value)
