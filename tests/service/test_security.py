"""Security properties of the service: secrets never logged, private files, hostile names."""

from __future__ import annotations

import inspect
import json
import stat

import requests

from imagefs.service import launcher
from imagefs.service.store import users as store_users
from svc_http import Api, raw_request


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_and_secret_files_are_private(service):
    assert _mode(service.data_dir) == 0o700
    for name in ("default.token", "service.json", "service.log"):
        assert _mode(service.data_dir / name) == 0o600, name
    uuid, token = (service.data_dir / "default.token").read_text().split()
    assert (uuid, token) == (service.uuid, service.token)
    for path in service.data_dir.iterdir():
        if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
            assert _mode(path) & 0o077 == 0, path


def test_service_file_describes_the_running_service(service):
    info = json.loads((service.data_dir / "service.json").read_text())
    assert info == {"url": service.url, "pid": service.pid}


def test_tokens_are_compared_in_constant_time():
    """Code-review level: the lookup ends in hmac.compare_digest on the stored token hash."""
    source = inspect.getsource(store_users)
    assert "hmac.compare_digest" in source
    assert "token_hash" in source                    # tokens at rest are hashes, not tokens


def test_log_never_contains_a_token(tmp_path):
    """Run a DEBUG-level service, use tokens every way a client can, grep its log."""
    with launcher.running_service(tmp_path / "data", "--workers", "1",
                                  verbose=True) as svc:
        from imagefs.service.store import Store

        store = Store.open(svc.data_dir)
        try:
            second = store.add_user("second")
        finally:
            store.close()
        api = Api(svc.base, svc.token, svc.uuid)
        tokens = [svc.token, second.token, "wrong-token-that-looks-real-1234"]
        for tok in tokens:
            requests.post(svc.url + "/tokens", data=json.dumps({"auth": {"token": {"id": tok}}}))
            requests.post(svc.url + "/tokens", data=json.dumps(
                {"auth": {"passwordCredentials": {"username": svc.uuid, "password": tok}}}))
            api.get(api.path("pithos"), token=tok, params=[("format", "json")])
            api.get(api.path("pithos"), token=None, params=[("X-Auth-Token", tok)])
            api.head(api.path("pithos", "missing"), token=tok)
        api.put(api.path("pithos", "f"), data=b"x", headers={"Content-Type": "text/plain"})
        log_text = svc.log_path.read_text()
    assert "GET /object-store/v1/" in log_text           # the requests were logged
    for tok in tokens:
        assert tok not in log_text


def test_object_names_with_dot_segments_stay_in_their_container(service, api, container):
    """``..`` is an ordinary name component: nothing escapes the container."""
    path = f"/object-store/v1/{api.uuid}/{container}/../../escape"
    status, _r, _h, _b = raw_request(service.base, "PUT", path, [
        ("X-Auth-Token", api.token), ("Content-Type", "text/plain")], body=b"inside")
    assert status == 201
    assert [e["name"] for e in api.listing(container)] == ["../../escape"]
    status, _r, _h, body = raw_request(service.base, "GET", path, [("X-Auth-Token", api.token)])
    assert (status, body) == (200, b"inside")
    status, *_ = raw_request(service.base, "GET", f"/object-store/v1/{api.uuid}/escape",
                             [("X-Auth-Token", api.token)])
    assert status == 404


def test_nul_in_a_name_is_400(service, api, container):
    for path in (f"/object-store/v1/{api.uuid}/{container}/a%00b",
                 f"/object-store/v1/{api.uuid}/a%00b"):
        status, reason, _h, body = raw_request(service.base, "PUT", path, [
            ("X-Auth-Token", api.token), ("Content-Type", "text/plain")], body=b"x")
        assert (status, reason) == (400, "BAD REQUEST"), path
        assert "badRequest" in json.loads(body)


def test_invalid_utf8_in_a_name_is_400(service, api, container):
    path = f"/object-store/v1/{api.uuid}/{container}/bad%FFname"
    status, *_ = raw_request(service.base, "GET", path, [("X-Auth-Token", api.token)])
    assert status == 400


def test_overlong_names_are_414(api, container):
    r = api.put(api.path(container, "x" * 1025), data=b"x", headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.reason) == (414, "REQUEST-URI TOO LONG")
    assert r.json()["requestURITooLong"]["code"] == 414
    r = api.put(api.path(container, "é" * 1024), data=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 201                       # the limit counts characters
    assert api.put(api.path("c" * 257)).status_code == 414
    r = api.put(api.path(container, "ok"), data=b"x", headers={
        "Content-Type": "text/plain", "X-Object-Meta-" + "k" * 129: "v"})
    assert r.status_code == 400


def test_oversized_hashmap_and_meta_are_refused(api, container):
    r = api.put(api.path(container, "big"), params=[("hashmap", None)],
                data=b"[" + b" " * (64 * 1024 * 1024) + b"]",
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413
    r = api.put(api.path(container, "m"), data=b"x", headers={
        "Content-Type": "text/plain", "X-Object-Meta-K": "v" * 257})
    assert r.status_code == 400
    headers = {f"X-Object-Meta-K{i}": "v" for i in range(33)}
    r = api.put(api.path(container, "m"), data=b"x",
                headers={"Content-Type": "text/plain", **headers})
    assert r.status_code == 400


def test_garbage_requests_do_not_break_the_service(service, api, container):
    api.put_object(container, "y", b"0123")
    base = f"/object-store/v1/{api.uuid}/{container}"
    bad = [  # (method, path, headers, expected status)
        ("PUT", f"{base}/x", [("Content-Type", "text/plain"), ("Content-Length", "abc")], 400),
        ("GET", f"{base}?limit=-5&marker=%FF", [], 400),
        ("POST", "/image/v1.0/images/", [("X-Image-Meta-Name", "%FF%FE"),
                                         ("X-Image-Meta-Location", "pithos://a/b/c")], 400),
        ("PUT", f"{base}/z", [("X-Copy-From", "%FF"), ("Content-Length", "0")], 400),
        ("GET", f"{base}/y", [("Range", "bytes=99999999999999999999-")], 416),
        ("GET", f"{base}/y", [("If-Modified-Since", "not a date")], 200),
        ("GET", f"{base}/y", [("Range", "bytes=0-1,garbage")], 200),
    ]
    for method, path, headers, expected in bad:
        status, *_ = raw_request(service.base, method, path,
                                 [("X-Auth-Token", api.token), *headers])
        assert status == expected, (method, path, headers)
    assert api.head(api.path(container)).status_code == 204


def test_other_users_token_cannot_act_as_someone_else(api, other, container):
    api.put_object(container, "secret", b"s")
    r = other.get(api.path(container, "secret"))
    assert r.status_code == 403
    assert r.json()["forbidden"]["code"] == 403
    assert b"s" != r.content
