"""Plankton image endpoints over HTTP (api.md §4): every endpoint, the header codecs, D1-D18."""

from __future__ import annotations

import json

import pytest

from imagefs.protocol.headers import quote, unquote
from svc_http import raw_request


def _location(api, container, name):
    return f"pithos://{api.uuid}/{quote(container)}/{quote(name)}"


def _register(api, container, name, *, image_name="Debian Base", headers=None, expect=200):
    hdrs = {"X-Image-Meta-Name": quote(image_name),
            "X-Image-Meta-Location": _location(api, container, name), **(headers or {})}
    r = api.post(api.img + "/images/", headers=hdrs)
    assert r.status_code == expect, r.text
    return r


def _meta(r):
    """Image headers as kamaki 0.16 reads them: lower-case, ``x-image-meta-`` stripped."""
    out, props = {}, {}
    for k, v in r.headers.items():
        k = k.lower()
        if k.startswith("x-image-meta-property-"):
            props[k[len("x-image-meta-property-"):].replace("-", "_")] = v
        elif k.startswith("x-image-meta-"):
            out[k[len("x-image-meta-"):]] = v
    out["properties"] = props
    return out


@pytest.fixture
def image_object(api, container):
    api.upload(container, "debian.diskdump", b"disk image bytes " + container.encode())
    return container, "debian.diskdump"


def test_register_reply_headers(api, image_object):
    container, name = image_object
    head = api.head(api.path(container, name)).headers
    r = _register(api, container, name, headers={"x-image-meta-property-OS": "Linux"})
    assert (r.status_code, r.reason) == (200, "OK")
    assert r.content == b""
    m = _meta(r)
    assert m["id"] == head["X-Object-UUID"]
    assert m["name"] == "Debian%20Base"
    assert m["location"] == _location(api, container, name)
    assert m["disk-format"] == "diskdump" and m["container-format"] == "bare"
    assert m["size"] == head["Content-Length"]
    assert m["checksum"] == head["X-Object-Hash"]
    assert m["deleted-at"] == ""
    assert m["status"] == "available"
    assert m["is-public"] == "False"
    assert m["owner"] == api.uuid
    assert len(m["created-at"]) == 19 and len(m["updated-at"]) == 19
    assert m["properties"] == {"os": "Linux"}
    assert "is-snapshot" not in m and "description" not in m        # D4


def test_register_creates_a_version_and_resets_sharing(api, other, image_object):
    """D16: registration leaves read=<owner> (+* when public); a new object version."""
    container, name = image_object
    url = api.path(container, name)
    api.post(url, params=[("update", None)],
             headers={"X-Object-Sharing": f"read={other.uuid};write={other.uuid}"})
    before = int(api.head(url).headers["X-Object-Version"])
    _register(api, container, name)
    h = api.head(url).headers
    assert int(h["X-Object-Version"]) > before
    assert h["X-Object-Sharing"] == f"read={api.uuid}"
    _register(api, container, name, headers={"X-Image-Meta-Is-Public": "true"})
    # "*" travels quoted (Pithos quotes reply values with safe "/=,:@; "); order is the store's
    sharing = unquote(api.head(url).headers["X-Object-Sharing"])
    assert sharing.startswith("read=") and set(sharing[5:].split(",")) == {api.uuid, "*"}


def test_registration_is_invisible_through_pithos(api, image_object):
    container, name = image_object
    _register(api, container, name, headers={"X-Image-Meta-Property-OS": "Linux"})
    h = api.head(api.path(container, name)).headers
    assert not [k for k in h if k.startswith("X-Object-Meta-")]
    [entry] = [e for e in api.listing(container) if e["name"] == name]
    assert entry["x_object_meta"] == {}


@pytest.mark.parametrize("headers,why", [
    ({"X-Image-Meta-Location": None}, "no location"),
    ({"X-Image-Meta-Name": None}, "no name"),
    ({"X-Image-Meta-Name": ""}, "empty name"),
    ({"X-Image-Meta-Location": "pithos://only/two"}, "bad location"),
    ({"X-Image-Meta-Location": "http://x/y/z"}, "bad scheme"),
    ({"X-Image-Meta-Disk-Format": "qcow2"}, "disk format"),
    ({"X-Image-Meta-Container-Format": "zip"}, "container format"),
    ({"X-Image-Meta-Id": "5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d"}, "id"),
    ({"X-Image-Meta-Status": "available"}, "status"),
    ({"X-Image-Meta-Created-At": "2013-06-19 08:00:22"}, "created_at"),
    ({"X-Image-Meta-Size": "1"}, "wrong size"),
    ({"X-Image-Meta-Size": "ten"}, "size not a number"),
    ({"X-Image-Meta-Checksum": "0" * 64}, "wrong checksum"),
    ({"X-Image-Meta-Store": "swift"}, "store"),
])
def test_register_errors_are_400(api, image_object, headers, why):
    container, name = image_object
    hdrs = {"X-Image-Meta-Name": "n",
            "X-Image-Meta-Location": _location(api, container, name), **headers}
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    r = api.post(api.img + "/images/", headers=hdrs)
    assert (r.status_code, r.reason) == (400, "BAD REQUEST"), why
    assert r.json()["badRequest"]["code"] == 400


def test_register_accepts_matching_size_checksum_store_and_ignores_owner(api, image_object):
    container, name = image_object
    head = api.head(api.path(container, name)).headers
    r = _register(api, container, name, headers={
        "X-Image-Meta-Size": head["Content-Length"], "X-Image-Meta-Checksum": head["ETag"],
        "X-Image-Meta-Store": "pithos", "X-Image-Meta-Owner": "someone (else@example.org)",
        "X-Image-Meta-Foo": "ignored"})
    assert _meta(r)["owner"] == api.uuid
    assert "foo" not in _meta(r)


def test_register_missing_object_is_404_and_foreign_is_403(api, other, container):
    _register(api, container, "absent", expect=404)
    api.put_object(container, "mine", b"x")
    r = other.post(other.img + "/images/", headers={
        "X-Image-Meta-Name": "steal", "X-Image-Meta-Location": _location(api, container, "mine")})
    assert r.status_code == 403
    assert r.json() == {"forbidden": {"code": 403, "message": "", "details": ""}}


def test_head_update_unregister(api, image_object):
    container, name = image_object
    image_id = _meta(_register(api, container, name))["id"]
    url = f"{api.img}/images/{image_id}"
    r = api.head(url)
    assert r.status_code == 200 and _meta(r)["name"] == "Debian%20Base"
    r = api.put(url, headers={"Content-Length": "0", "X-Image-Meta-Name": quote("Changed Name"),
                              "X-Image-Meta-Property-user": "root",
                              "X-Image-Meta-Disk-Format": "extdump",
                              "X-Image-Meta-Status": "ready", "X-Image-Meta-Owner": "x"})
    assert (r.status_code, r.reason) == (200, "OK")
    m = _meta(r)
    assert m["name"] == "Changed%20Name" and m["disk-format"] == "extdump"
    assert m["status"] == "ready" and m["owner"] == api.uuid
    assert m["properties"] == {"user": "root"}
    # "" deletes a property; "" status is stored as "" (D9)
    r = api.put(url, headers={"X-Image-Meta-Property-user": "", "X-Image-Meta-Status": ""})
    m = _meta(r)
    assert m["properties"] == {} and m["status"] == ""
    r = api.delete(url)
    assert (r.status_code, r.reason) == (204, "NO CONTENT")
    assert api.head(url).status_code == 404
    assert api.delete(url).status_code == 404
    assert api.head(api.path(container, name)).status_code == 200    # object untouched


@pytest.mark.parametrize("header,value", [
    ("Id", "5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d"), ("Location", "pithos://a/b/c"),
    ("Size", "1"), ("Checksum", "0" * 64), ("Created-At", "2013-06-19 08:00:22"),
    ("Updated-At", "x"), ("Deleted-At", ""), ("Store", "pithos"), ("Name", ""),
    ("Disk-Format", ""), ("Container-Format", "nope")])
def test_update_immutable_or_invalid_is_400(api, image_object, header, value):
    container, name = image_object
    image_id = _meta(_register(api, container, name))["id"]
    r = api.put(f"{api.img}/images/{image_id}", headers={f"X-Image-Meta-{header}": value})
    assert r.status_code == 400, header


def test_public_and_private(api, other, image_object):
    container, name = image_object
    image_id = _meta(_register(api, container, name))["id"]
    url = f"{api.img}/images/{image_id}"
    assert other.head(url).status_code == 403                        # D12
    r = api.put(url, headers={"X-Image-Meta-Is-Public": "True"})
    assert _meta(r)["is-public"] == "True"
    assert other.head(url).status_code == 200
    assert image_id in [i["id"] for i in other.get(other.img + "/images/").json()]
    r = other.delete(url)
    assert (r.status_code, r.reason) == (403, "FORBIDDEN")
    assert r.json()["forbidden"]["message"] == ""
    r = other.put(url, headers={"X-Image-Meta-Name": "mine now"})
    assert r.status_code == 403
    api.put(url, headers={"X-Image-Meta-Is-Public": "false"})
    assert other.head(url).status_code == 403


def test_invalid_and_unknown_ids(api):
    r = api.head(api.img + "/images/not-a-uuid")
    assert r.status_code == 400
    r = api.head(api.img + "/images/5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d")
    assert r.status_code == 404
    r = api.get(api.img + "/images/5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d")
    assert (r.status_code, r.reason) == (501, "NOT IMPLEMENTED")
    r = api.get(api.img + "/nothing/here")
    assert r.status_code == 400
    assert r.json()["badRequest"]["message"] == "API endpoint not found"


def test_list_short_detail_filters_and_sort(new_api, fresh):
    user = new_api()
    c = fresh("imgs")
    user.create_container(c)
    ids = {}
    for i, (n, fmt) in enumerate([("b-img", "diskdump"), ("a-img", "extdump")]):
        user.upload(c, n, b"x" * (i + 1))
        ids[n] = _meta(_register(user, c, n, image_name=n,
                                 headers={"X-Image-Meta-Disk-Format": fmt}))["id"]
    r = user.get(user.img + "/images/", params=[("sort_dir", "asc")])
    assert r.status_code == 200
    assert isinstance(r.json(), list)                   # bare array for kamaki 0.16 (D5)
    # other users' public images are listed too (seed §7.4); look at ours only
    items = [i for i in r.json() if i["id"] in ids.values()]
    assert [i["name"] for i in items] == ["b-img", "a-img"]            # created_at asc
    assert set(items[0]) == {"id", "name", "status", "disk_format", "container_format", "size"}
    assert isinstance(items[0]["size"], int)
    r = user.get(user.img + "/images/detail", params=[("sort_key", "name"), ("sort_dir", "asc")])
    detail = [i for i in r.json() if i["owner"] == user.uuid]
    assert [i["name"] for i in detail] == ["a-img", "b-img"]
    d = detail[0]
    assert d["is_public"] is False and d["deleted_at"] == "" and d["owner"] == user.uuid
    assert d["properties"] == {} and d["location"].startswith("pithos://")
    r = user.get(user.img + "/images/detail", params=[("disk_format", "extdump")])
    assert [i["name"] for i in r.json() if i["owner"] == user.uuid] == ["a-img"]
    assert all(i["disk_format"] == "extdump" for i in r.json())
    r = user.get(user.img + "/images/detail", params=[("size_min", "2"), ("size_max", "2")])
    assert [i["name"] for i in r.json() if i["owner"] == user.uuid] == ["a-img"]
    assert all(i["size"] == 2 for i in r.json())
    for bad in ([("size_min", "x")], [("sort_key", "owner")], [("sort_dir", "up")]):
        assert user.get(user.img + "/images/", params=bad).status_code == 400


def test_list_without_own_images(new_api):
    user = new_api()
    r = user.get(user.img + "/images/detail")
    assert r.status_code == 200
    assert isinstance(r.json(), list)
    assert [i for i in r.json() if i["owner"] == user.uuid] == []
    assert all(i["is_public"] for i in r.json())       # only other users' public images


def test_members(api, other, image_object):
    container, name = image_object
    image_id = _meta(_register(api, container, name))["id"]
    base = f"{api.img}/images/{image_id}/members"
    r = api.put(f"{base}/{other.uuid}", headers={"Content-Length": "0"})
    assert (r.status_code, r.reason) == (204, "NO CONTENT")
    r = api.get(base)
    assert r.status_code == 200
    members = {m["member_id"] for m in r.json()["members"]}
    assert other.uuid in members                        # (owner too, D17)
    assert all(m["can_share"] is False for m in r.json()["members"])
    assert other.head(f"{api.img}/images/{image_id}").status_code == 200
    r = other.get(f"{other.img}/shared-images/{api.uuid}")
    assert r.status_code == 200
    assert {"image_id": image_id, "can_share": False} in r.json()["shared_images"]
    assert api.delete(f"{base}/{other.uuid}").status_code == 204
    assert other.head(f"{api.img}/images/{image_id}").status_code == 403
    r = api.put(base, data=json.dumps({"memberships": [{"member_id": other.uuid}]}))
    assert r.status_code == 204
    assert other.head(f"{api.img}/images/{image_id}").status_code == 200
    assert api.put(base, data="nonsense").status_code == 400
    assert api.put(base, data=json.dumps({"memberships": [{"x": 1}]})).status_code == 400
    assert other.put(f"{base}/{other.uuid}").status_code == 403


def test_duplicate_property_headers_prefer_the_new_value(service, api, image_object):
    """D8: kamaki 0.16 `image modify -p user=admin` re-sends the old value too."""
    container, name = image_object
    image_id = _meta(_register(api, container, name,
                               headers={"X-Image-Meta-Property-user": "root"}))["id"]
    path = f"/image/v1.0/images/{image_id}"
    cases = [  # (headers in order, expected) with the stored value before each request
        ([("x-image-meta-property-user", "root"), ("X-Image-Meta-Property-USER", "admin")],
         "admin"),                                       # stored: root
        ([("X-Image-Meta-Property-USER", "admin2"), ("x-image-meta-property-user", "admin")],
         "admin2"),                                      # stored: admin
        ([("x-image-meta-property-user", "admin2"), ("X-Image-Meta-Property-USER", "admin2")],
         "admin2"),                                      # nothing new: unchanged
    ]
    for headers, expected in cases:
        status, _reason, reply, _ = raw_request(
            service.base, "PUT", path, [("X-Auth-Token", api.token), *headers], body=b"")
        assert status == 200
        assert reply["x-image-meta-property-user"] == [expected]


def test_property_keys_are_normalised_and_values_quoted(api, image_object):
    container, name = image_object
    r = _register(api, container, name, headers={
        "X-Image-Meta-Property-Root-Partition": "1",
        "X-Image-Meta-Property-GREET": quote("καλημέρα κόσμε")})
    props = _meta(r)["properties"]
    assert props == {"root_partition": "1",
                     "greet": quote("καλημέρα κόσμε")}


def test_update_with_underscore_header_names(service, api, image_object):
    """Header names with ``_`` reach the app (gunicorn header_map=dangerous)."""
    container, name = image_object
    image_id = _meta(_register(api, container, name))["id"]
    status, _r, headers, _ = raw_request(
        service.base, "PUT", f"/image/v1.0/images/{image_id}",
        [("X-Auth-Token", api.token), ("X-Image-Meta-Property-root_partition", "2")], body=b"")
    assert status == 200
    assert headers["x-image-meta-property-root-partition"] == ["2"]


def test_moved_image_keeps_id_loses_sharing_copy_is_new_image(api, other, image_object):
    """D13, D14: move keeps id and registration but drops sharing; copy is a new image."""
    container, name = image_object
    image_id = _meta(_register(api, container, name,
                               headers={"X-Image-Meta-Is-Public": "true"}))["id"]
    r = api.put(api.path(container, "moved"), headers={
        "X-Move-From": f"/{container}/{name}", "Content-Length": "0"})
    assert r.status_code == 201
    m = _meta(api.head(f"{api.img}/images/{image_id}"))
    assert m["location"] == _location(api, container, "moved")
    assert m["is-public"] == "False"
    r = api.put(api.path(container, "copied"), headers={
        "X-Copy-From": f"/{container}/moved", "Content-Length": "0"})
    copy_id = api.head(api.path(container, "copied")).headers["X-Object-UUID"]
    assert copy_id != image_id
    m = _meta(api.head(f"{api.img}/images/{copy_id}"))
    assert m["name"] == "Debian%20Base" and m["is-public"] == "False"
    api.delete(api.path(container, "copied"))
    assert api.head(f"{api.img}/images/{copy_id}").status_code == 404


def test_overwrite_keeps_registration_with_new_size(api, image_object):
    container, name = image_object
    image_id = _meta(_register(api, container, name))["id"]
    api.upload(container, name, b"new content of another size")
    m = _meta(api.head(f"{api.img}/images/{image_id}"))
    assert m["size"] == str(len(b"new content of another size"))
    assert m["checksum"] == api.head(api.path(container, name)).headers["ETag"]
