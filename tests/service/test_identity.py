"""Identity (Astakos) endpoints over HTTP: api.md §2."""

from __future__ import annotations

import json

import requests


def _tokens(service, body, **kw):
    return requests.post(service.url + "/tokens", data=body if isinstance(body, (bytes, str))
                         else json.dumps(body), **kw)


def test_tokens_returns_user_token_and_catalog(service):
    r = _tokens(service, {"auth": {"token": {"id": service.token}}},
                headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.reason == "OK"
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    access = r.json()["access"]
    assert access["token"]["id"] == service.token
    assert access["token"]["tenant"] == {"id": service.uuid, "name": service.name}
    assert access["token"]["expires"].endswith("+00:00")
    assert access["user"]["id"] == service.uuid
    assert access["user"]["name"] == service.name
    assert access["user"]["roles"] == [{"id": "1", "name": "default"}]
    by_type = {}
    for svc in access["serviceCatalog"]:
        by_type.setdefault(svc["type"], []).append(svc)
    assert sorted(by_type) == ["account", "identity", "image", "object-store"]
    assert all(len(v) == 1 for v in by_type.values())
    account = by_type["account"][0]
    assert account["name"] == "astakos_account"
    endpoint = account["endpoints"][0]
    assert endpoint["versionId"] == "v1.0"
    assert endpoint["publicURL"] == service.base + "/account/v1.0"
    assert endpoint["SNF:uiURL"] == service.base + "/ui"
    assert by_type["identity"][0]["endpoints"][0]["publicURL"] == service.url
    assert by_type["object-store"][0]["endpoints"][0]["publicURL"] == \
        service.base + "/object-store/v1"
    assert by_type["image"][0]["endpoints"][0]["publicURL"] == service.base + "/image/v1.0"


def test_tokens_ignores_the_header_token(service):
    """The body counts: a bad X-Auth-Token header does not spoil a good body."""
    r = _tokens(service, {"auth": {"token": {"id": service.token}}},
                headers={"X-Auth-Token": "nonsense"})
    assert r.status_code == 200
    assert r.json()["access"]["user"]["id"] == service.uuid


def test_tokens_password_credentials(service):
    body = {"auth": {"passwordCredentials": {"username": service.uuid,
                                             "password": service.token},
                     "tenantName": service.uuid}}
    r = _tokens(service, body)
    assert r.status_code == 200
    assert r.json()["access"]["user"]["id"] == service.uuid


def test_tokens_password_credentials_of_someone_else(service):
    body = {"auth": {"passwordCredentials": {"username": "not-" + service.uuid,
                                             "password": service.token}}}
    assert _tokens(service, body).status_code == 401


def test_tokens_tenant_mismatch_is_400(service):
    body = {"auth": {"token": {"id": service.token}, "tenantName": "someone-else"}}
    r = _tokens(service, body)
    assert r.status_code == 400
    assert "badRequest" in r.json()


def test_tokens_unknown_token_is_401(service):
    r = _tokens(service, {"auth": {"token": {"id": "no-such-token"}}})
    assert r.status_code == 401
    assert r.reason == "UNAUTHORIZED"
    assert r.json() == {"unauthorized": {"code": 401, "message": "Invalid token",
                                         "details": ""}}


def test_tokens_malformed_bodies_are_400(service):
    for body in (b"not json", {"auth": {}}, {"nothing": 1}, [1, 2],
                 {"auth": {"token": {"id": 42}}}):
        r = _tokens(service, body)
        assert r.status_code == 400, body
        assert r.reason == "BAD REQUEST"
        assert r.json()["badRequest"]["code"] == 400


def test_tokens_empty_body_is_public_mode(service):
    r = requests.post(service.url + "/tokens")
    assert r.status_code == 200
    access = r.json()["access"]
    assert "token" not in access and "user" not in access
    assert {s["type"] for s in access["serviceCatalog"]} == {
        "account", "identity", "image", "object-store"}


def test_user_catalogs(service):
    uuid, _token = service.new_user("catalog-user@example.org")
    r = requests.post(service.base + "/account/v1.0/user_catalogs",
                      headers={"X-Auth-Token": service.token,
                               "Content-Type": "application/json"},
                      data=json.dumps({"uuids": [uuid, "unknown-uuid"],
                                       "displaynames": ["catalog-user@example.org", "nobody"]}))
    assert r.status_code == 200
    assert r.json() == {"uuid_catalog": {uuid: "catalog-user@example.org"},
                        "displayname_catalog": {"catalog-user@example.org": uuid}}


def test_user_catalogs_needs_a_token(service):
    url = service.base + "/account/v1.0/user_catalogs"
    body = json.dumps({"uuids": [service.uuid]})
    assert requests.post(url, data=body).status_code == 401
    assert requests.post(url, data=body, headers={"X-Auth-Token": "bad"}).status_code == 401


def test_user_catalogs_rejects_non_objects(service):
    url = service.base + "/account/v1.0/user_catalogs"
    for body in ("[1]", "nope", '{"uuids": "x"}'):
        r = requests.post(url, data=body, headers={"X-Auth-Token": service.token})
        assert r.status_code == 400, body


def test_ui_url_answers(service):
    assert requests.get(service.base + "/ui").status_code == 200


def test_wrong_method_is_405_with_allow(service):
    r = requests.get(service.url + "/tokens")
    assert r.status_code == 405
    assert r.reason == "METHOD NOT ALLOWED"
    assert "POST" in r.headers["Allow"]
    assert r.json()["notAllowed"]["code"] == 405
