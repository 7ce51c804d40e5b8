"""Pithos account level over HTTP (api.md §3.4) and the common wire rules (§1)."""

from __future__ import annotations


def test_head_account_is_204_with_counts(new_api):
    user = new_api()
    r = user.head(user.path())
    assert r.status_code == 204
    assert r.reason == "NO CONTENT"
    assert r.headers["X-Account-Container-Count"] == "1"     # "pithos", provisioned
    assert r.headers["X-Account-Bytes-Used"] == "0"
    assert r.headers["X-Account-Policy-Quota"] == "0"
    assert r.text == ""


def test_default_container_pithos_is_provisioned(new_api):
    user = new_api()
    r = user.get(user.path(), params=[("format", "json")])
    assert r.status_code == 200
    [entry] = r.json()
    assert entry["name"] == "pithos"
    assert entry["count"] == 0 and entry["bytes"] == 0
    assert entry["x_container_policy"] == {"quota": "0", "versioning": "auto",
                                           "project": user.uuid}
    assert entry["last_modified"].endswith("+00:00")


def test_container_listing_text_and_paging(new_api):
    user = new_api()
    for name in ("a", "b", "c"):
        user.create_container(name)
    r = user.get(user.path())
    assert r.status_code == 200
    assert r.text == "a\nb\nc\npithos\n"
    r = user.get(user.path(), params=[("format", "json"), ("limit", "2"), ("marker", "a")])
    assert [c["name"] for c in r.json()] == ["b", "c"]


def test_account_meta_replace_and_update(new_api):
    user = new_api()
    r = user.post(user.path(), headers={"X-Account-Meta-Color": "blue",
                                        "X-Account-Meta-Shape": "round"})
    assert r.status_code == 202
    r = user.post(user.path(), params=[("update", None)],
                  headers={"X-Account-Meta-Color": "red"})
    assert r.status_code == 202
    h = user.head(user.path()).headers
    assert h["X-Account-Meta-Color"] == "red"
    assert h["X-Account-Meta-Shape"] == "round"
    # Without ?update the metadata is replaced: Shape goes away.
    assert user.post(user.path(), headers={"X-Account-Meta-Color": "green"}).status_code == 202
    h = user.head(user.path()).headers
    assert h["X-Account-Meta-Color"] == "green"
    assert "X-Account-Meta-Shape" not in h


def test_no_token_is_401_and_bad_token_is_401(api):
    r = api.head(api.path(), token=None)
    assert r.status_code == 401
    assert r.reason == "UNAUTHORIZED"
    assert r.text == ""                       # HEAD: never a body, errors included
    r = api.get(api.path(), token=None)
    assert r.status_code == 401
    assert r.json()["unauthorized"]["message"] == "Access denied. No authentication token"
    r = api.get(api.path(), token="bad-token")
    assert r.status_code == 401
    assert r.json()["unauthorized"]["message"] == "Invalid token"


def test_token_as_query_parameter(api):
    r = api.head(api.path(), token=None, params=[("X-Auth-Token", api.token)])
    assert r.status_code == 204


def test_unknown_path_is_404_json(api):
    r = api.get(api.base + "/nowhere")
    assert r.status_code == 404
    assert r.reason == "NOT FOUND"
    assert r.json()["itemNotFound"]["code"] == 404


def test_account_put_is_405(api):
    r = api.put(api.path())
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]


def test_other_users_account(new_api):
    """Another account with nothing shared is forbidden (api.md §3.4); nothing can change it.
    (A fresh owner: the session's default user may share something by now.)"""
    api, stranger = new_api(), new_api()
    assert stranger.get(api.path(), params=[("format", "json")]).status_code == 403
    assert stranger.head(api.path()).status_code == 403
    r = stranger.post(api.path(), headers={"X-Account-Meta-X": "y"})
    assert (r.status_code, r.reason) == (403, "FORBIDDEN")
    assert stranger.put(api.path("newcontainer")).status_code == 403
