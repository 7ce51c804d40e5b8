"""The seed checklist of api.md §7, driven over HTTP the way kamaki 0.16 does it (§6).

``Kamaki`` below replays kamaki's request sequences: it reads every response
header lower-cased and unquoted, sends valueless query flags, uploads with
the hashmap protocol and, for ``image register``, checks the ``.meta``
sidecar first, registers, resolves the owner through ``user_catalogs`` and
uploads the decoded reply as the sidecar. Each test is one item of §7.
"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

import pytest
import requests

from imagefs.protocol.hashmap import hashmap_of

BS = 4 * 1024 * 1024
FIELDS = {"checksum", "container-format", "created-at", "deleted-at", "disk-format", "id",
          "is-public", "location", "name", "owner", "properties", "size", "status",
          "updated-at"}


class KamakiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


class Kamaki:
    """kamaki 0.16 as seen from the wire: one user, its token, the catalog's URLs."""

    def __init__(self, identity_url: str, token: str) -> None:
        self.http = requests.Session()
        self.token = token
        r = self.http.post(identity_url + "/tokens",
                           data=json.dumps({"auth": {"token": {"id": token}}}),
                           headers={"content-type": "application/json"})
        assert r.status_code == 200
        access = r.json()["access"]
        self.uuid = access["user"]["id"]
        urls = {s["type"]: s["endpoints"][0]["publicURL"] for s in access["serviceCatalog"]}
        self.os, self.img, self.acc = urls["object-store"], urls["image"], urls["account"]

    # -- transport ------------------------------------------------------------------------
    def call(self, method, url, *, query=(), headers=None, data=None, ok=(200,)):
        """One request; returns (status, lower-cased unquoted headers, body)."""
        if query:
            url += "?" + "&".join(k if v is None else f"{k}={quote(str(v))}" for k, v in query)
        hdrs = {"X-Auth-Token": self.token, **(headers or {})}
        r = self.http.request(method, url, headers=hdrs, data=data)
        if r.status_code not in ok:
            raise KamakiError(r.status_code, f"{r.reason} {r.text}")
        lower = {k.lower(): unquote(v) for k, v in r.headers.items()}
        return r.status_code, lower, r.content

    def obj_url(self, container, name=None):
        url = f"{self.os}/{self.uuid}/{quote(container)}"
        return url if name is None else f"{url}/{quote(name)}"

    # -- file commands ---------------------------------------------------------------------
    def upload(self, container, name, data, *, force=False, sharing=None,
               content_type="application/octet-stream"):
        """``file upload`` (§6.2): returns the X-Object-Version of the final PUT."""
        st, _h, _b = self.call("HEAD", self.obj_url(container, name), ok=(200, 404))
        if st == 200 and not force:
            raise KamakiError(409, f"Object /{container}/{name} already exists")
        _s, h, _b = self.call("HEAD", self.obj_url(container), ok=(204,))
        self.call("GET", self.obj_url(container), query=[("format", "json")])
        assert int(h["x-container-block-size"]) == BS and h["x-container-block-hash"] == "sha256"
        hashes = hashmap_of(data)
        body = json.dumps({"hashes": hashes if data else [], "bytes": len(data)})
        hdrs = {"Content-Type": content_type}
        if sharing:
            hdrs["X-Object-Sharing"] = sharing
        query = [("format", "json"), ("hashmap", "True")]
        st, h, b = self.call("PUT", self.obj_url(container, name), query=query, data=body,
                             headers=hdrs, ok=(201, 409))
        if st == 409:
            for h_missing in json.loads(b):
                i = hashes.index(h_missing)
                _s, _h, rb = self.call("POST", self.obj_url(container),
                                       query=[("update", None), ("format", "json")],
                                       data=data[i * BS:(i + 1) * BS],
                                       headers={"Content-Type": "application/octet-stream"},
                                       ok=(202,))
                assert json.loads(rb)[0] == h_missing
            st, h, b = self.call("PUT", self.obj_url(container, name), query=query, data=body,
                                 headers=hdrs, ok=(201,))
        return int(h["x-object-version"])

    def mkdir(self, container, name):
        self.call("PUT", self.obj_url(container, name), ok=(201,),
                  headers={"Content-Type": "application/directory", "Content-length": "0"})

    def cat(self, container, name, version=None):
        """``file cat`` (§6.6): hashmap GET then one Range GET per block."""
        extra = [("version", version)] if version else []
        _s, _h, b = self.call("GET", self.obj_url(container, name),
                              query=[("format", "json"), ("hashmap", "True"), *extra])
        hm = json.loads(b)
        out = b""
        for i, _h in enumerate(hm["hashes"]):
            end = min((i + 1) * hm["block_size"], hm["bytes"]) - 1
            _s, _h2, chunk = self.call("GET", self.obj_url(container, name),
                                       query=[("format", "json"), *extra], ok=(200, 206),
                                       headers={"Range": f"bytes={i * hm['block_size']}-{end}"})
            out += chunk
        return out

    def versions(self, container, name):
        _s, _h, b = self.call("GET", self.obj_url(container, name),
                              query=[("format", "json"), ("version", "list")])
        return json.loads(b)["versions"]

    def listing(self, container, prefix=None):
        q = [("format", "json")] + ([("prefix", prefix)] if prefix else [])
        _s, _h, b = self.call("GET", self.obj_url(container), query=q)
        return json.loads(b)

    # -- image commands --------------------------------------------------------------------
    @staticmethod
    def decode_image(headers):
        """kamaki's ``_format_image_headers``: dashed keys, properties lower-case, unquoted."""
        out, props = {}, {}
        for k, v in headers.items():
            if k.startswith("x-image-meta-property-"):
                props[k[len("x-image-meta-property-"):].replace("-", "_")] = v
            elif k.startswith("x-image-meta-"):
                out[k[len("x-image-meta-"):]] = v
        out["properties"] = props
        return out

    def owner_name(self, uuid):
        _s, _h, b = self.call("POST", self.acc + "/user_catalogs",
                              data=json.dumps({"uuids": [uuid]}),
                              headers={"content-type": "application/json"})
        return json.loads(b)["uuid_catalog"].get(uuid)

    def register(self, name, container, obj, *, force=False, public=False, properties=None,
                 metafile_upload=True, disk_format=None):
        """``image register --name NAME --location /C/O`` (§6.10): (printed dict, meta version)."""
        meta_name = obj + ".meta"
        if metafile_upload:
            st, _h, _b = self.call("HEAD", self.obj_url(container, meta_name), ok=(200, 404))
            if st == 200 and not force:
                raise KamakiError(0, f"A remote file /{container}/{meta_name} already exists")
        hdrs = {"X-Image-Meta-Name": quote(name),
                "X-Image-Meta-Location": f"pithos://{self.uuid}/{quote(container)}/{quote(obj)}"}
        if public:
            hdrs["x-image-meta-is-public"] = "True"
        if disk_format:
            hdrs["x-image-meta-disk-format"] = disk_format
        for k, v in (properties or {}).items():
            hdrs[f"x-image-meta-property-{k.upper().replace('-', '_')}"] = quote(v)
        _s, h, _b = self.call("POST", self.img + "/images/", headers=hdrs)
        image = self.decode_image(h)
        image["owner"] = f"{image['owner']} ({self.owner_name(image['owner'])})"
        version = None
        if metafile_upload:
            _s, oh, _b = self.call("HEAD", self.obj_url(container, obj))
            version = self.upload(container, meta_name, json.dumps(image, indent=2).encode(),
                                  force=True, sharing=oh.get("x-object-sharing"))
        return image, version

    def image_list(self, owner=None):
        path = "/images/detail" if owner else "/images/"
        _s, _h, b = self.call("GET", self.img + path, query=[("sort_dir", "asc")])
        items = json.loads(b)
        if owner:
            items = [i for i in items if i["owner"].lower() == owner.lower()]
        return items

    def image_info(self, image_id):
        _s, h, _b = self.call("HEAD", f"{self.img}/images/{image_id}")
        return self.decode_image(h)

    def image_modify(self, image_id, *, name=None, public=None, properties=None, status=None,
                     disk_format=None):
        """``image modify`` (§6.12): HEAD, then PUT re-sending every existing property."""
        current = self.image_info(image_id)
        hdrs = [("X-Auth-Token", self.token), ("Content-Length", "0")]
        if name is not None:
            hdrs.append(("X-Image-Meta-Name", quote(name)))
        if disk_format is not None:
            hdrs.append(("X-Image-Meta-Disk-Format", disk_format))
        if status is not None:
            hdrs.append(("X-Image-Meta-Status", status))
        if public is not None:
            hdrs.append(("X-Image-Meta-Is-Public", "True" if public else "False"))
        for k, v in current["properties"].items():
            hdrs.append((f"X-Image-Meta-Property-{k}", quote(v)))
        for k, v in (properties or {}).items():
            hdrs.append((f"X-Image-Meta-Property-{k.upper()}", quote(v)))
        from svc_http import raw_request

        base = self.img.split("/image/")[0]
        status_code, reason, headers, body = raw_request(
            base, "PUT", f"/image/v1.0/images/{image_id}", hdrs)
        if status_code != 200:
            raise KamakiError(status_code, f"{reason} {body.decode()}")
        return self.decode_image({k: unquote(v[-1]) for k, v in headers.items()})

    def unregister(self, image_id):
        self.call("DELETE", f"{self.img}/images/{image_id}", ok=(204,))


@pytest.fixture
def kamaki(service, new_api, fresh):
    """A fresh user (user names are unique) whose only state is the provisioned account."""
    name = fresh("someuser") + "@example.org"
    k = Kamaki(service.url, new_api(name).token)
    k.username = name
    return k


@pytest.fixture
def stranger(service, new_api, fresh):
    return Kamaki(service.url, new_api(fresh("stranger") + "@example.org").token)


IMAGE = b"debian base image " * 1000


def test_seed_01_upload_then_register_prints_the_14_fields(kamaki):
    kamaki.upload("pithos", "debian_base3.diskdump", IMAGE)
    _s, oh, _b = kamaki.call("HEAD", kamaki.obj_url("pithos", "debian_base3.diskdump"))
    image, _v = kamaki.register("Debian Base Alpha", "pithos", "debian_base3.diskdump",
                                properties={"OS": "Linux"})
    assert set(image) == FIELDS
    assert image["name"] == "Debian Base Alpha"
    assert image["disk-format"] == "diskdump" and image["container-format"] == "bare"
    assert image["is-public"] == "False" and image["status"] == "available"
    assert image["deleted-at"] == ""
    assert image["location"] == f"pithos://{kamaki.uuid}/pithos/debian_base3.diskdump"
    assert image["checksum"] == oh["x-object-hash"]
    assert image["size"] == str(len(IMAGE))
    assert image["owner"] == f"{kamaki.uuid} ({kamaki.username})"
    assert image["properties"] == {"os": "Linux"}
    assert image["id"] == oh["x-object-uuid"]


def test_seed_02_metafile_holds_the_registration_and_its_version(kamaki):
    kamaki.upload("pithos", "img.diskdump", IMAGE)
    image, version = kamaki.register("Img", "pithos", "img.diskdump")
    _s, h, body = kamaki.call("GET", kamaki.obj_url("pithos", "img.diskdump.meta"))
    assert json.loads(body) == image
    assert int(h["x-object-version"]) == version
    assert h["x-object-sharing"] == f"read={kamaki.uuid}"


def test_seed_03_register_again_needs_force(kamaki):
    kamaki.upload("pithos", "f.diskdump", IMAGE)
    image, v1 = kamaki.register("First", "pithos", "f.diskdump")
    object_version = kamaki.call("HEAD", kamaki.obj_url("pithos", "f.diskdump"))[1][
        "x-object-version"]
    with pytest.raises(KamakiError, match="already exists"):
        kamaki.register("Second", "pithos", "f.diskdump")
    assert kamaki.image_info(image["id"])["name"] == "First"         # not registered again
    assert kamaki.call("HEAD", kamaki.obj_url("pithos", "f.diskdump"))[1][
        "x-object-version"] == object_version
    image2, v2 = kamaki.register("Second", "pithos", "f.diskdump", force=True)
    assert image2["name"] == "Second" and v2 > v1
    assert json.loads(kamaki.call("GET", kamaki.obj_url("pithos", "f.diskdump.meta"))[2]
                      )["name"] == "Second"


def test_seed_04_image_list_shows_own_shared_and_public(kamaki, stranger):
    kamaki.upload("pithos", "mine.diskdump", IMAGE)
    mine, _ = kamaki.register("Mine", "pithos", "mine.diskdump")
    stranger.upload("pithos", "pub.diskdump", IMAGE)
    public, _ = stranger.register("Public", "pithos", "pub.diskdump", public=True)
    stranger.upload("pithos", "private.diskdump", IMAGE)
    private, _ = stranger.register("Private", "pithos", "private.diskdump")
    stranger.upload("pithos", "shared.diskdump", IMAGE)
    shared, _ = stranger.register("Shared", "pithos", "shared.diskdump")
    stranger.call("PUT", f"{stranger.img}/images/{shared['id']}/members/{kamaki.uuid}",
                  headers={"Content-Length": "0"}, ok=(204,))
    ids = {i["id"] for i in kamaki.image_list()}
    assert {mine["id"], public["id"], shared["id"]} <= ids
    assert private["id"] not in ids
    own = kamaki.image_list(owner=kamaki.uuid)
    assert [i["id"] for i in own] == [mine["id"]]
    theirs = {i["id"] for i in kamaki.image_list(owner=stranger.uuid)}
    assert theirs == {public["id"], shared["id"]}


def test_seed_05_unregister_own_silently_foreign_is_403(kamaki, stranger):
    kamaki.upload("pithos", "u.diskdump", IMAGE)
    image, _ = kamaki.register("U", "pithos", "u.diskdump", public=True)
    with pytest.raises(KamakiError) as err:
        stranger.unregister(image["id"])
    assert err.value.status == 403
    assert err.value.text == 'FORBIDDEN {"forbidden": {"code": 403, "message": "", ' \
                             '"details": ""}}'
    kamaki.unregister(image["id"])
    assert kamaki.image_list(owner=kamaki.uuid) == []


def test_seed_06_reregistering_the_same_object_keeps_the_id(kamaki):
    kamaki.upload("pithos", "same.diskdump", IMAGE)
    first, _ = kamaki.register("Same", "pithos", "same.diskdump")
    kamaki.unregister(first["id"])
    again, _ = kamaki.register("Same", "pithos", "same.diskdump", force=True)
    assert again["id"] == first["id"]


def test_seed_07_reregistration_overrides(kamaki):
    kamaki.upload("pithos", "o.diskdump", IMAGE)
    kamaki.register("Old", "pithos", "o.diskdump", disk_format="extdump",
                    properties={"OS": "Linux", "USER": "root"})
    image, _ = kamaki.register("New", "pithos", "o.diskdump", force=True,
                               properties={"OS": "Windows"})
    assert image["name"] == "New"
    assert image["disk-format"] == "diskdump"                          # not given again: gone
    assert image["properties"] == {"os": "Windows"}                    # USER gone, OS replaced


def test_seed_08_modify_mutable_fields_only(kamaki):
    kamaki.upload("pithos", "m.diskdump", IMAGE)
    image, _ = kamaki.register("M", "pithos", "m.diskdump")
    changed = kamaki.image_modify(image["id"], name="Changed Name", public=True,
                                  status="ready", disk_format="ntfsdump",
                                  properties={"greet": "hi"})
    assert changed["name"] == "Changed Name" and changed["is-public"] == "True"
    assert changed["status"] == "ready" and changed["disk-format"] == "ntfsdump"
    assert changed["properties"] == {"greet": "hi"}
    for field in ("id", "location", "checksum", "size", "created-at", "updated-at"):
        assert changed[field] == image[field] or field == "updated-at"
    for header, value in (("Id", "x"), ("Location", "pithos://a/b/c"), ("Checksum", "0"),
                          ("Size", "1"), ("Created-At", "2013-06-19 08:00:22")):
        with pytest.raises(KamakiError) as err:
            kamaki.call("PUT", f"{kamaki.img}/images/{image['id']}",
                        headers={f"X-Image-Meta-{header}": value, "Content-Length": "0"})
        assert err.value.status == 400
    r = kamaki.call("PUT", f"{kamaki.img}/images/{image['id']}",
                    headers={"X-Image-Meta-Owner": "someone-else", "Content-Length": "0"})
    assert r[1]["x-image-meta-owner"] == kamaki.uuid


def test_seed_09_properties_are_case_insensitive(kamaki):
    kamaki.upload("pithos", "p.diskdump", IMAGE)
    image, _ = kamaki.register("P", "pithos", "p.diskdump", properties={"USER": "root"})
    assert image["properties"] == {"user": "root"}
    changed = kamaki.image_modify(image["id"], properties={"user": "admin"})   # D8
    assert changed["properties"] == {"user": "admin"}
    changed = kamaki.image_modify(image["id"], properties={"User": "guest"})
    assert changed["properties"] == {"user": "guest"}


def test_seed_10_versions(kamaki):
    kamaki.upload("pithos", "v.diskdump", IMAGE)
    kamaki.register("V1", "pithos", "v.diskdump")
    kamaki.register("V2", "pithos", "v.diskdump", force=True)
    kamaki.register("V3", "pithos", "v.diskdump", force=True)
    versions = kamaki.versions("pithos", "v.diskdump.meta")
    assert len(versions) == 3
    serials = [v[0] for v in versions]
    assert serials == sorted(serials) and len(set(serials)) == 3
    assert all(float(ts) > 0 for _s, ts in versions)
    first = json.loads(kamaki.cat("pithos", "v.diskdump.meta", version=serials[0]))
    assert first["name"] == "V1"
    assert json.loads(kamaki.cat("pithos", "v.diskdump.meta"))["name"] == "V3"


def test_seed_11_container_versioning(kamaki):
    _s, h, _b = kamaki.call("HEAD", kamaki.obj_url("pithos"), ok=(204,))
    assert h["x-container-policy-versioning"] == "auto"
    kamaki.call("POST", kamaki.obj_url("pithos"), query=[("update", None), ("format", "json")],
                headers={"X-Container-Policy-Versioning": "none"}, ok=(202,))
    assert kamaki.call("HEAD", kamaki.obj_url("pithos"), ok=(204,))[1][
        "x-container-policy-versioning"] == "none"
    kamaki.call("POST", kamaki.obj_url("pithos"), query=[("update", None), ("format", "json")],
                headers={"X-Container-Policy-Versioning": "auto"}, ok=(202,))
    assert kamaki.call("HEAD", kamaki.obj_url("pithos"), ok=(204,))[1][
        "x-container-policy-versioning"] == "auto"
    _s, _h, _b = kamaki.call("PUT", kamaki.obj_url("vers"), ok=(201,),
                             headers={"X-Container-Policy-Versioning": "none"})
    with pytest.raises(KamakiError) as err:              # `container create` needs 201
        kamaki.call("PUT", kamaki.obj_url("vers"), ok=(201,))
    assert err.value.status == 202


def test_seed_12_recursive_upload_and_subpath_location(kamaki):
    _s, _h, b = kamaki.call("GET", kamaki.obj_url("pithos"),
                            query=[("format", "json"), ("path", "images")])
    assert json.loads(b) == []
    kamaki.call("HEAD", kamaki.obj_url("pithos", "images"), ok=(404,))
    kamaki.mkdir("pithos", "images")
    kamaki.mkdir("pithos", "images/old")
    kamaki.upload("pithos", "images/debian.diskdump", IMAGE)
    kamaki.upload("pithos", "images/old/win8.diskdump", IMAGE[:100])
    names = [(e["name"], e["content_type"]) for e in kamaki.listing("pithos", "images/")]
    assert names == [("images/debian.diskdump", "application/octet-stream"),
                     ("images/old", "application/directory"),
                     ("images/old/win8.diskdump", "application/octet-stream")]
    image, _ = kamaki.register("Win8", "pithos", "images/old/win8.diskdump")
    assert image["location"] == f"pithos://{kamaki.uuid}/pithos/images/old/win8.diskdump"
    assert kamaki.call("HEAD", kamaki.obj_url("pithos", "images/old/win8.diskdump.meta")
                       )[0] == 200


def test_seed_13_public_registration(kamaki, stranger):
    kamaki.upload("pithos", "pub.diskdump", IMAGE)
    image, _ = kamaki.register("Pub", "pithos", "pub.diskdump", public=True)
    assert image["is-public"] == "True"
    assert stranger.image_info(image["id"])["name"] == "Pub"


def test_seed_14_no_metafile_upload(kamaki):
    kamaki.upload("pithos", "nometa.diskdump", IMAGE)
    image, version = kamaki.register("NoMeta", "pithos", "nometa.diskdump",
                                     metafile_upload=False)
    assert version is None and image["name"] == "NoMeta"
    kamaki.call("HEAD", kamaki.obj_url("pithos", "nometa.diskdump.meta"), ok=(404,))
