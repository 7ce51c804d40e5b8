"""Pithos objects over HTTP: upload protocols, reads, Range, conditionals, versions (api.md §3.3, §3.6)."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from imagefs.protocol.hashmap import EMPTY_HASH, hashmap_of

MiB = 1024 * 1024
BS = 4 * MiB

# api.md §3.3 test vectors: (content, hashmap, top hash)
VECTORS = [
    ("empty", b"", [EMPTY_HASH], EMPTY_HASH),
    ("hello", b"hello\n",
     ["5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"],
     "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
    ("hello+nul", b"hello\n" + b"\0" * 10,
     ["5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"],
     "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
    ("a+b", b"a" * BS + b"b",
     ["299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05",
      "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"],
     "565546ad93383e225e7cf808fb4d527a54dec54826a5c34a24c1f19a03c62583"),
    ("a+b+c", b"a" * BS + b"b" * BS + b"c",
     ["299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05",
      "61d678b48de600e6922df82ac9fb5d208d19e98064d0d1d5c14a2ee50481c593",
      "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6"],
     "e747b499f8f09ea48c537050c3492c984d867b410639bd5867603e259278f746"),
    ("8MiB-nul", b"\0" * (2 * BS), [EMPTY_HASH, EMPTY_HASH],
     "2dba5dbc339e7316aea2683faf839c1b7b1ee2313db792112588118df066aa35"),
]


@pytest.mark.parametrize("label,data,hashes,top", VECTORS, ids=[v[0] for v in VECTORS])
def test_hash_vectors_through_plain_put(api, container, label, data, hashes, top):
    r = api.put_object(container, label, data)
    assert r.headers["ETag"] == top
    h = api.head(api.path(container, label)).headers
    assert h["X-Object-Hash"] == top and h["ETag"] == top
    assert h["Content-Length"] == str(len(data))
    r = api.get(api.path(container, label), params=[("format", "json"), ("hashmap", "True")])
    assert r.status_code == 200
    assert r.json() == {"block_hash": "sha256", "block_size": BS, "bytes": len(data),
                        "hashes": hashes}
    body = api.get(api.path(container, label)).content
    assert body == data                      # trailing NULs come back (re-padded)


@pytest.mark.parametrize("label,data,hashes,top", VECTORS[1:5], ids=[v[0] for v in VECTORS[1:5]])
def test_hash_vectors_through_hashmap_upload(api, container, label, data, hashes, top):
    r = api.upload(container, label, data)
    assert r.headers["ETag"] == top
    assert api.get(api.path(container, label)).content == data


def test_hashmap_put_409_lists_missing_blocks_then_201(api, container):
    data = b"unique block " + container.encode() + b"\n"
    [h] = hashmap_of(data)
    body = json.dumps({"hashes": [h], "bytes": len(data)})
    url = api.path(container, "notes.txt")
    params = [("format", "json"), ("hashmap", "True")]
    r = api.put(url, params=params, data=body, headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.reason) == (409, "CONFLICT")
    assert r.json() == [h]
    assert api.head(url).status_code == 404          # nothing created
    r = api.post(api.path(container), params=[("update", None), ("format", "json")],
                 data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.json() == [h]
    r = api.put(url, params=params, data=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 201
    assert r.headers["ETag"] == h
    assert int(r.headers["X-Object-Version"]) > 0
    head = api.head(url).headers
    assert head["Content-Type"] == "text/plain"
    assert head["X-Object-Version"] == r.headers["X-Object-Version"]


def test_hashmap_409_deduplicates(api, container):
    data = b"dup " + container.encode()
    h = hashmap_of(data)[0]
    body = json.dumps({"bytes": 2 * BS + len(data), "hashes": [h, h, h]})
    r = api.put(api.path(container, "x"), params=[("hashmap", None)], data=body,
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 409
    assert r.json() == [h]


def test_zero_length_hashmap_put_is_201_at_once(api, container):
    body = json.dumps({"bytes": 0, "hashes": []})
    r = api.put(api.path(container, "empty"), params=[("format", "json"), ("hashmap", "True")],
                data=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["ETag"] == EMPTY_HASH
    r = api.get(api.path(container, "empty"))
    assert (r.status_code, r.content) == (200, b"")


@pytest.mark.parametrize("body", [
    "not json", json.dumps({"bytes": 5}), json.dumps({"hashes": []}),
    json.dumps({"bytes": 5, "hashes": ["zz"]}),
    json.dumps({"bytes": 5, "hashes": [EMPTY_HASH, EMPTY_HASH]}),
    json.dumps({"bytes": BS + 1, "hashes": [EMPTY_HASH]}),
    json.dumps({"bytes": 0, "hashes": ["5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"]}),
])
def test_bad_hashmaps_are_400(api, container, body):
    r = api.put(api.path(container, "bad"), params=[("hashmap", "True")], data=body,
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400
    assert r.json()["badRequest"]["code"] == 400


def test_put_without_content_type_is_411(api, container):
    r = api.session.put(api.path(container, "x"), data=b"abc",
                        headers={"X-Auth-Token": api.token, "Content-Type": ""})
    assert (r.status_code, r.reason) == (411, "LENGTH REQUIRED")
    assert r.json()["lengthRequired"]["message"] == "Missing Content-Type header"


def test_put_without_content_length_is_411(service, api, container):
    from svc_http import raw_request

    path = api.path(container, "x")[len(service.base):]
    status, reason, _h, body = raw_request(service.base, "PUT", path, [
        ("X-Auth-Token", api.token), ("Content-Type", "text/plain")])
    assert (status, reason) == (411, "LENGTH REQUIRED")
    assert "lengthRequired" in json.loads(body)


def test_chunked_put(api, container):
    pieces = [b"x" * 1000, b"y" * (BS + 17), b"z"]
    r = api.put(api.path(container, "chunked"), data=iter(pieces),
                headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    data = b"".join(pieces)
    assert api.get(api.path(container, "chunked")).content == data
    assert api.head(api.path(container, "chunked")).headers["Content-Length"] == str(len(data))


def test_put_etag_md5_is_checked(api, container):
    data = b"checked content\n"
    md5 = hashlib.md5(data).hexdigest()
    r = api.put(api.path(container, "ok"), data=data,
                headers={"Content-Type": "text/plain", "ETag": md5})
    assert r.status_code == 201
    [entry] = [e for e in api.listing(container) if e["name"] == "ok"]
    assert entry["hash"] == md5
    r = api.put(api.path(container, "bad"), data=data,
                headers={"Content-Type": "text/plain", "ETag": "0" * 32})
    assert (r.status_code, r.reason) == (422, "UNPROCESSABLE ENTITY")
    assert api.head(api.path(container, "bad")).status_code == 404


def test_object_head_headers(api, container):
    r = api.put_object(container, "dir/file.txt", b"0123456789", content_type="text/plain",
                       headers={"X-Object-Meta-image_os": "debian",
                                "X-Object-Meta-Greeting": "hello%20w%CE%B3rld"})
    r = api.head(api.path(container, "dir/file.txt"))
    assert (r.status_code, r.reason) == (200, "OK")
    h = {k.lower(): v for k, v in r.headers.items()}
    assert h["content-length"] == "10"
    assert h["content-type"] == "text/plain"
    assert h["etag"] == h["x-object-hash"]
    assert len(h["x-object-uuid"]) == 36
    assert int(h["x-object-version"]) > 0
    assert h["x-object-version-timestamp"].endswith(" GMT")
    assert h["last-modified"].endswith(" GMT")
    assert h["x-object-modified-by"] == api.uuid
    assert h["x-object-meta-image-os"] == "debian"
    # decoded on arrival, re-quoted on the way out with Pithos' safe set (space kept)
    assert h["x-object-meta-greeting"] == "hello w%CE%B3rld"
    assert "x-object-sharing" not in h and "x-object-public" not in h
    assert r.content == b""


def test_missing_object_is_404(api, container):
    assert api.head(api.path(container, "nope")).status_code == 404
    r = api.get(api.path(container, "nope"))
    assert (r.status_code, r.reason) == (404, "NOT FOUND")
    assert r.json()["itemNotFound"]["code"] == 404
    assert api.delete(api.path(container, "nope")).status_code == 404


def test_format_json_does_not_change_a_data_get(api, container):
    api.put_object(container, "f", b"raw bytes")
    r = api.get(api.path(container, "f"), params=[("format", "json")])
    assert r.content == b"raw bytes"


def test_non_ascii_and_odd_names(api, container):
    for name in ("ελληνικά/αρχείο.txt", "with space", "a/b/c/", "percent%41", "trailing.meta"):
        api.put_object(container, name, name.encode())
        assert api.get(api.path(container, name)).content == name.encode()
    names = {e["name"] for e in api.listing(container)}
    assert names == {"ελληνικά/αρχείο.txt", "with space", "a/b/c/", "percent%41",
                     "trailing.meta"}


# -- Range -----------------------------------------------------------------------------------

@pytest.fixture
def ranged(api, container):
    data = bytes(range(256)) * (BS // 256) + b"tail!"        # two blocks
    api.upload(container, "r", data)
    return api.path(container, "r"), data


def test_range_forms(api, ranged):
    url, data = ranged
    size = len(data)
    r = api.get(url, headers={"Range": "bytes=0-9"})
    assert (r.status_code, r.reason) == (206, "PARTIAL CONTENT")
    assert r.content == data[:10]
    assert r.headers["Content-Range"] == f"bytes 0-9/{size}"
    assert r.headers["Content-Length"] == "10"
    r = api.get(url, headers={"Range": f"bytes={BS - 3}-{BS + 2}"})      # across blocks
    assert r.content == data[BS - 3:BS + 3]
    r = api.get(url, headers={"Range": f"bytes={size - 5}-"})
    assert r.content == b"tail!"
    r = api.get(url, headers={"Range": "bytes=-5"})
    assert r.content == b"tail!"
    assert r.headers["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    r = api.get(url, params=[("format", "json")], headers={"Range": f"bytes={BS}-{size - 1}"})
    assert r.content == data[BS:]                          # kamaki's block GET


def test_range_out_of_bounds_is_416(api, ranged):
    url, data = ranged
    size = len(data)
    for spec in (f"bytes={size}-", f"bytes=0-{size}", f"bytes=-{size + 1}", "bytes=5-2x"):
        r = api.get(url, headers={"Range": spec})
        if spec.endswith("x"):
            assert r.status_code == 200            # malformed: ignored
            continue
        assert (r.status_code, r.reason) == (416, "REQUESTED RANGE NOT SATISFIABLE"), spec
        assert r.headers["Content-Range"] == f"bytes */{size}"


def test_malformed_range_is_ignored(api, ranged):
    url, data = ranged
    for spec in ("bytes=9-2", "items=0-1", "bytes=", "bytes=a-b", "bytes=-"):
        r = api.get(url, headers={"Range": spec})
        assert r.status_code == 200, spec
        assert len(r.content) == len(data)


def test_multiple_ranges_are_multipart(api, ranged):
    url, data = ranged
    r = api.get(url, headers={"Range": "bytes=0-9,30-39"})
    assert r.status_code == 206
    ctype = r.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1]
    parts = r.content.split(b"--" + boundary.encode())
    assert data[:10] in parts[1] and data[30:40] in parts[2]
    assert b"Content-Range: bytes 0-9/" in parts[1]
    assert parts[-1].startswith(b"--")


def test_if_range(api, ranged):
    url, data = ranged
    etag = api.head(url).headers["ETag"]
    r = api.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206
    r = api.get(url, headers={"Range": "bytes=0-9", "If-Range": "0" * 64})
    assert r.status_code == 200 and len(r.content) == len(data)


def test_zero_byte_object_range_is_416_and_get_is_200(api, container):
    api.put_object(container, "z", b"")
    r = api.get(api.path(container, "z"))
    assert (r.status_code, r.content) == (200, b"")
    assert api.get(api.path(container, "z"), headers={"Range": "bytes=0-0"}).status_code == 416


# -- conditional requests --------------------------------------------------------------------

def test_if_match_and_if_none_match(api, container):
    r = api.put_object(container, "c", b"v1")
    etag = r.headers["ETag"]
    url = api.path(container, "c")
    assert api.get(url, headers={"If-Match": etag}).status_code == 200
    assert api.get(url, headers={"If-Match": "*"}).status_code == 200
    r = api.get(url, headers={"If-Match": "0" * 64})
    assert (r.status_code, r.reason) == (412, "PRECONDITION FAILED")
    assert r.json()["preconditionFailed"]["code"] == 412
    r = api.get(url, headers={"If-None-Match": etag})
    assert (r.status_code, r.reason) == (304, "NOT MODIFIED")
    assert r.content == b""
    assert api.head(url, headers={"If-None-Match": "*"}).status_code == 304
    assert api.get(url, headers={"If-None-Match": "0" * 64}).status_code == 200


def test_dates_conditionals(api, container):
    api.put_object(container, "d", b"x")
    url = api.path(container, "d")
    last = api.head(url).headers["Last-Modified"]
    assert api.get(url, headers={"If-Modified-Since": last}).status_code == 304
    assert api.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
                   ).status_code == 200
    assert api.get(url, headers={"If-Unmodified-Since": last}).status_code == 200
    r = api.get(url, headers={"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 412


def test_put_if_none_match_star_creates_only(api, container):
    url = api.path(container, "once")
    hdrs = {"Content-Type": "text/plain", "If-None-Match": "*"}
    assert api.put(url, data=b"1", headers=hdrs).status_code == 201
    assert api.put(url, data=b"2", headers=hdrs).status_code == 412
    assert api.get(url).content == b"1"


def test_put_if_match(api, container):
    url = api.path(container, "cas")
    etag = api.put_object(container, "cas", b"1").headers["ETag"]
    r = api.put(url, data=b"2", headers={"Content-Type": "text/plain", "If-Match": "0" * 64})
    assert r.status_code == 412
    r = api.put(url, data=b"2", headers={"Content-Type": "text/plain", "If-Match": etag})
    assert r.status_code == 201


# -- versions --------------------------------------------------------------------------------

def test_versions_list_and_read_old(api, container):
    serials = []
    for content in (b"first", b"second", b"third"):
        serials.append(int(api.put_object(container, "v", content).headers["X-Object-Version"]))
    assert serials == sorted(serials)
    url = api.path(container, "v")
    r = api.get(url, params=[("format", "json"), ("version", "list")])
    assert r.status_code == 200
    versions = r.json()["versions"]
    assert [v[0] for v in versions] == serials
    assert all(isinstance(ts, str) and float(ts) > 0 for _s, ts in versions)
    r = api.get(url, params=[("version", str(serials[0]))])
    assert r.content == b"first"
    h = api.head(url, params=[("version", str(serials[1]))]).headers
    assert h["X-Object-Version"] == str(serials[1])
    assert h["Content-Length"] == "6"
    r = api.get(url, params=[("format", "json"), ("hashmap", "True"),
                             ("version", str(serials[0]))])
    assert r.json()["bytes"] == 5
    assert api.get(url, params=[("version", "999999999")]).status_code == 404
    assert api.get(url, params=[("version", "abc")]).status_code == 404


def test_versions_survive_delete_and_exclude_tombstones(api, container):
    api.put_object(container, "gone", b"1")
    api.put_object(container, "gone", b"2")
    assert api.delete(api.path(container, "gone")).status_code == 204
    assert api.head(api.path(container, "gone")).status_code == 404
    r = api.get(api.path(container, "gone"), params=[("format", "json"), ("version", "list")])
    assert r.status_code == 200
    assert len(r.json()["versions"]) == 2


def test_versioning_none_keeps_only_current(api, fresh):
    name = fresh("c")
    api.create_container(name, headers={"X-Container-Policy-Versioning": "none"})
    first = api.put_object(name, "f", b"1").headers["X-Object-Version"]
    api.put_object(name, "f", b"2")
    r = api.get(api.path(name, "f"), params=[("format", "json"), ("version", "list")])
    assert len(r.json()["versions"]) == 1
    assert api.get(api.path(name, "f"), params=[("version", first)]).status_code == 404


# -- metadata POST ---------------------------------------------------------------------------

def test_meta_update_and_replace(api, container):
    api.put_object(container, "m", headers={"X-Object-Meta-A": "1", "X-Object-Meta-B": "2"})
    url = api.path(container, "m")
    v0 = api.head(url).headers["X-Object-Version"]
    r = api.post(url, params=[("update", None), ("format", "json")],
                 headers={"X-Object-Meta-A": "9", "X-Object-Meta-C": "3"})
    assert r.status_code == 202
    assert int(r.headers["X-Object-Version"]) > int(v0)
    h = api.head(url).headers
    assert (h["X-Object-Meta-A"], h["X-Object-Meta-B"], h["X-Object-Meta-C"]) == ("9", "2", "3")
    assert api.post(url, params=[("update", None)], headers={"X-Object-Meta-B": ""}
                    ).status_code == 202
    assert "X-Object-Meta-B" not in api.head(url).headers
    # ?update with nothing: no new version
    before = api.head(url).headers["X-Object-Version"]
    r = api.post(url, params=[("update", None)])
    assert r.status_code == 202 and "X-Object-Version" not in r.headers
    assert api.head(url).headers["X-Object-Version"] == before
    # replace: everything else goes, and a version is created even with nothing supplied
    r = api.post(url, headers={"X-Object-Meta-Only": "me"})
    h = api.head(url).headers
    assert h["X-Object-Meta-Only"] == "me" and "X-Object-Meta-A" not in h
    r = api.post(url)
    assert "X-Object-Version" in r.headers
    assert not [k for k in api.head(url).headers if k.startswith("X-Object-Meta-")]


def test_meta_keys_are_normalised_and_values_decoded(api, container):
    api.put_object(container, "n")
    url = api.path(container, "n")
    api.post(url, params=[("update", None)], headers={
        "X-Object-Meta-image_os": "debian", "X-Object-Meta-%CE%B1%CE%B2": "%CE%B3 x"})
    [entry] = api.listing(container)
    assert entry["x_object_meta"] == {"Image-Os": "debian", "Αβ": "γ x"}
    h = api.head(url).headers
    assert h["X-Object-Meta-%CE%91%CE%B2"] == "%CE%B3 x"


def test_data_update_post_is_501(api, container):
    api.put_object(container, "d", b"abc")
    r = api.post(api.path(container, "d"), data=b"zz",
                 headers={"Content-Type": "application/octet-stream",
                          "Content-Range": "bytes 0-1/*"})
    assert (r.status_code, r.reason) == (501, "NOT IMPLEMENTED")


def test_post_to_missing_object_is_404(api, container):
    r = api.post(api.path(container, "missing"), params=[("update", None)],
                 headers={"X-Object-Meta-A": "1"})
    assert r.status_code == 404


def test_content_encoding_is_kept_as_object_meta(api, container):
    api.put_object(container, "f.gz", b"\x1f\x8bxx", content_type="application/x-tar",
                   headers={"Content-Encoding": "gzip",
                            "Content-Disposition": 'attachment; filename="f.gz"'})
    r = requests.get(api.path(container, "f.gz"), headers={"X-Auth-Token": api.token},
                     stream=True)
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Content-Disposition"] == 'attachment; filename="f.gz"'
    assert r.raw.read(decode_content=False) == b"\x1f\x8bxx"
    [entry] = api.listing(container)
    assert entry["x_object_meta"] == {}
