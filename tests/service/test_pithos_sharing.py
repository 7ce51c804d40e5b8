"""Pithos copy/move/delete, sharing, publishing and two users' isolation (api.md §3.6-§3.10)."""

from __future__ import annotations

import requests

from imagefs.protocol.headers import quote


def _uuid(api, container, name):
    return api.head(api.path(container, name)).headers["X-Object-UUID"]


def test_copy_gets_new_uuid_and_merged_meta(api, container):
    api.put_object(container, "src", b"data", content_type="text/plain",
                   headers={"X-Object-Meta-A": "1", "X-Object-Meta-B": "2"})
    r = api.put(api.path(container, "dst"), headers={
        "X-Copy-From": quote(f"/{container}/src"), "Content-Length": "0",
        "X-Object-Meta-B": "", "X-Object-Meta-C": "3"})
    assert (r.status_code, r.reason) == (201, "CREATED")
    assert "X-Object-Version" in r.headers
    h = api.head(api.path(container, "dst")).headers
    assert h["X-Object-UUID"] != _uuid(api, container, "src")
    assert h["Content-Type"] == "text/plain"
    assert (h["X-Object-Meta-A"], h["X-Object-Meta-C"]) == ("1", "3")
    assert "X-Object-Meta-B" not in h
    assert api.get(api.path(container, "dst")).content == b"data"


def test_copy_of_an_old_version(api, container):
    old = api.put_object(container, "s", b"old").headers["X-Object-Version"]
    api.put_object(container, "s", b"new")
    r = api.put(api.path(container, "s-old"), headers={
        "X-Copy-From": f"/{container}/s", "X-Source-Version": old, "Content-Length": "0"})
    assert r.status_code == 201
    assert api.get(api.path(container, "s-old")).content == b"old"


def test_copy_errors(api, container):
    url = api.path(container, "dst")
    r = api.put(url, headers={"X-Copy-From": f"/{container}/nothing", "Content-Length": "0"})
    assert r.status_code == 404
    for bad in ("no-slash", f"/{container}", f"/{container}/", "/"):
        r = api.put(url, headers={"X-Copy-From": bad, "Content-Length": "0"})
        assert r.status_code == 400, bad


def test_move_keeps_uuid_and_tombstones_source(api, container):
    api.put_object(container, "a/one", b"1")
    uuid = _uuid(api, container, "a/one")
    r = api.put(api.path(container, "b/one"), headers={
        "X-Move-From": quote(f"/{container}/a/one"), "Content-Length": "0"})
    assert r.status_code == 201
    assert _uuid(api, container, "b/one") == uuid
    assert api.head(api.path(container, "a/one")).status_code == 404


def test_move_subtree_with_delimiter(api, container):
    api.put(api.path(container, "d"), headers={"Content-Type": "application/directory",
                                               "Content-Length": "0"})
    api.put_object(container, "d/x", b"x")
    api.put_object(container, "d/y/z", b"z")
    r = api.put(api.path(container, "e"), params=[("delimiter", "/")],
                headers={"X-Move-From": f"/{container}/d", "Content-Length": "0"})
    assert r.status_code == 201
    names = [e["name"] for e in api.listing(container)]
    assert names == ["e", "e/x", "e/y/z"]


def test_copy_subtree_with_delimiter(api, container):
    api.put_object(container, "p", b"")
    api.put_object(container, "p/1", b"1")
    r = api.put(api.path(container, "q"), params=[("delimiter", "/")],
                headers={"X-Copy-From": f"/{container}/p", "Content-Length": "0"})
    assert r.status_code == 201
    assert [e["name"] for e in api.listing(container)] == ["p", "p/1", "q", "q/1"]


def test_delete_with_delimiter(api, container):
    api.put_object(container, "t", b"")
    api.put_object(container, "t/1", b"1")
    api.put_object(container, "t/2/3", b"3")
    api.put_object(container, "tt", b"")
    assert api.delete(api.path(container, "t"), params=[("delimiter", "/")]).status_code == 204
    assert [e["name"] for e in api.listing(container)] == ["tt"]


def test_overwrite_keeps_uuid_delete_and_recreate_does_not(api, container):
    api.put_object(container, "o", b"1")
    first = _uuid(api, container, "o")
    api.put_object(container, "o", b"2")
    assert _uuid(api, container, "o") == first
    api.delete(api.path(container, "o"))
    api.put_object(container, "o", b"3")
    assert _uuid(api, container, "o") != first


# -- sharing ---------------------------------------------------------------------------------

def test_sharing_lets_another_user_read(api, other, container):
    api.put_object(container, "shared.txt", b"for you")
    url = api.path(container, "shared.txt")
    assert other.get(url).status_code == 403
    r = api.post(url, params=[("update", None), ("format", "json")],
                 headers={"X-Object-Sharing": f"read={other.uuid}"})
    assert r.status_code == 202
    assert api.head(url).headers["X-Object-Sharing"] == f"read={other.uuid}"
    r = other.get(url)
    assert (r.status_code, r.content) == (200, b"for you")
    assert r.headers["X-Object-Allowed-To"] == "read"
    # a reader cannot change, delete or re-share
    assert other.put(url, data=b"x", headers={"Content-Type": "text/plain"}).status_code == 403
    assert other.delete(url).status_code == 403
    assert other.post(url, headers={"X-Object-Sharing": "read=*"}).status_code == 403
    # removing all permissions
    api.post(url, params=[("update", None)], headers={"X-Object-Sharing": ""})
    assert "X-Object-Sharing" not in api.head(url).headers
    assert other.get(url).status_code == 403


def test_sharing_is_inherited_from_a_directory(api, other, container):
    api.put(api.path(container, "dir"), headers={"Content-Type": "application/directory",
                                                 "Content-Length": "0",
                                                 "X-Object-Sharing": f"read={other.uuid}"})
    api.put_object(container, "dir/f", b"inherited")
    r = other.get(api.path(container, "dir/f"))
    assert (r.status_code, r.content) == (200, b"inherited")
    assert r.headers["X-Object-Shared-By"] == "dir"          # the directory object's name


def test_bad_sharing_is_400(api, container):
    api.put_object(container, "s")
    for bad in ("read=", "execute=x", "read"):
        r = api.post(api.path(container, "s"), params=[("update", None)],
                     headers={"X-Object-Sharing": bad})
        assert r.status_code == 400, bad


def test_users_are_isolated(api, other, container):
    api.put_object(container, "private", b"mine")
    assert other.get(api.path(container, "private")).status_code == 403
    assert other.head(api.path(container)).status_code == 403
    assert other.put(api.path(container, "intruder"), data=b"x",
                     headers={"Content-Type": "text/plain"}).status_code == 403
    assert other.delete(api.path(container)).status_code == 403
    # the other user's own namespace is separate: same names, different objects
    other.put_object("pithos", "private", b"theirs")
    assert api.get(api.path("pithos", "private", account=other.uuid)).status_code == 403
    assert other.get(other.path("pithos", "private")).content == b"theirs"


# -- publishing ------------------------------------------------------------------------------

def test_publish_and_anonymous_read(api, container):
    api.put_object(container, "pub.txt", b"0123456789", content_type="text/plain")
    url = api.path(container, "pub.txt")
    r = api.post(url, params=[("update", None), ("format", "json")],
                 headers={"X-Object-Public": "True"})
    assert r.status_code == 202
    public = api.head(url).headers["X-Object-Public"]
    assert public.startswith(api.base + "/public/")
    r = requests.get(public)
    assert (r.status_code, r.content) == (200, b"0123456789")
    assert r.headers["Content-Type"] == "text/plain"
    assert not [k for k in r.headers if k.lower().startswith("x-object-")]
    r = requests.get(public, headers={"Range": "bytes=2-4"})
    assert (r.status_code, r.content) == (206, b"234")
    assert requests.head(public).status_code == 200
    assert requests.put(public, data=b"x").status_code == 405
    [entry] = [e for e in api.listing(container) if e["name"] == "pub.txt"]
    assert entry["x_object_public"] == public
    api.post(url, params=[("update", None)], headers={"X-Object-Public": "False"})
    assert "X-Object-Public" not in api.head(url).headers
    assert requests.get(public).status_code == 404


def test_public_unknown_id_is_404(service):
    assert requests.get(service.base + "/public/doesnotexist").status_code == 404
    assert requests.get(service.base + "/public/..%2F..%2Fetc").status_code == 404


def test_publish_on_upload(api, container):
    r = api.put(api.path(container, "p"), data=b"x",
                headers={"Content-Type": "text/plain", "X-Object-Public": "true"})
    assert r.status_code == 201
    assert "X-Object-Public" in api.head(api.path(container, "p")).headers
    r = api.put(api.path(container, "p2"), data=b"x",
                headers={"Content-Type": "text/plain", "X-Object-Public": "maybe"})
    assert r.status_code == 400


# -- quota -------------------------------------------------------------------------------------

def test_quota_exceeded_is_413(api, fresh):
    name = fresh("q")
    api.create_container(name, headers={"X-Container-Policy-Quota": "10"})
    api.put_object(name, "fits", b"12345")
    r = api.put(api.path(name, "too-big"), data=b"123456789",
                headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.reason) == (413, "REQUEST ENTITY TOO LARGE")
    assert r.json()["requestEntityTooLarge"]["code"] == 413


def test_shared_and_public_listing_filters(api, other, container):
    api.put_object(container, "plain", b"p")
    api.put_object(container, "shared", b"s", headers={"X-Object-Sharing": f"read={other.uuid}"})
    api.put_object(container, "published", b"x", headers={"X-Object-Public": "true"})
    assert [e["name"] for e in api.listing(container, shared=None)] == ["shared"]
    assert [e["name"] for e in api.listing(container, public=None)] == ["published"]
    shared = [e for e in api.listing(container) if e["name"] == "shared"][0]
    assert shared["x_object_sharing"] == f"read={other.uuid}"
    # the other user sees the container and, inside it, only what is shared with them
    r = other.get(api.path(), params=[("format", "json")])
    assert r.status_code == 200
    assert container in [c["name"] for c in r.json()]
    seen = other.get(api.path(container), params=[("format", "json")]).json()
    assert [e["name"] for e in seen] == ["shared"]
    assert seen[0]["x_object_allowed_to"] == "read"
    assert "x_object_public" not in seen[0]
    r = other.get(api.path(container), params=[("format", "json"), ("public", None)])
    assert r.status_code == 403


def test_account_groups(new_api):
    user = new_api()
    friend = new_api()
    r = user.post(user.path(), params=[("update", None)],
                  headers={"X-Account-Group-Friends": f"{friend.uuid}"})
    assert r.status_code == 202
    h = user.head(user.path()).headers
    assert h["X-Account-Group-Friends"] == friend.uuid
    user.put_object("pithos", "for-friends", b"hi",
                    headers={"X-Object-Sharing": f"read={user.uuid}:friends"})
    r = friend.get(user.path("pithos", "for-friends"))
    assert (r.status_code, r.content) == (200, b"hi")
