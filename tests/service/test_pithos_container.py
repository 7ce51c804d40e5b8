"""Pithos container level over HTTP (api.md §3.2, §3.5): create, info, policy, listing, blocks."""

from __future__ import annotations

import pytest

from imagefs.protocol.hashmap import block_hash


def test_create_is_201_then_202(api, fresh):
    name = fresh("c")
    r = api.put(api.path(name))
    assert (r.status_code, r.reason) == (201, "CREATED")
    r = api.put(api.path(name))
    assert (r.status_code, r.reason) == (202, "ACCEPTED")


def test_head_container_is_204_with_block_parameters(api, container):
    api.put_object(container, "x", b"12345")
    r = api.head(api.path(container))
    assert r.status_code == 204
    h = {k.lower(): v for k, v in r.headers.items()}
    assert h["x-container-object-count"] == "1"
    assert h["x-container-bytes-used"] == "5"
    assert h["x-container-block-size"] == "4194304"
    assert h["x-container-block-hash"] == "sha256"
    assert h["x-container-policy-versioning"] == "auto"
    assert h["x-container-policy-quota"] == "0"
    assert h["x-container-policy-project"] == api.uuid
    assert "x-container-object-meta" in h
    assert h["last-modified"].endswith(" GMT")


def test_missing_container_is_404(api, fresh):
    assert api.head(api.path(fresh("none"))).status_code == 404
    r = api.get(api.path(fresh("none")), params=[("format", "json")])
    assert r.status_code == 404
    assert r.json()["itemNotFound"]["code"] == 404


def test_versioning_policy_on_create_and_modify(api, fresh):
    name = fresh("c")
    api.create_container(name, headers={"X-Container-Policy-Versioning": "none"})
    assert api.head(api.path(name)).headers["X-Container-Policy-Versioning"] == "none"
    r = api.post(api.path(name), params=[("update", None), ("format", "json")],
                 headers={"X-Container-Policy-Versioning": "auto"})
    assert r.status_code == 202
    assert api.head(api.path(name)).headers["X-Container-Policy-Versioning"] == "auto"


def test_invalid_policy_is_400(api, fresh):
    r = api.put(api.path(fresh("c")), headers={"X-Container-Policy-Versioning": "sometimes"})
    assert r.status_code == 400
    r = api.put(api.path(fresh("c")), headers={"X-Container-Policy-Quota": "lots"})
    assert r.status_code == 400


def test_meta_update_keeps_and_replace_wipes(api, container):
    """Losing ?update would turn a merge into a replace (api.md §1.4)."""
    api.post(api.path(container), headers={"X-Container-Meta-A": "1", "X-Container-Meta-B": "2"})
    r = api.post(api.path(container), params=[("update", None)],
                 headers={"X-Container-Meta-A": "9"})
    assert r.status_code == 202
    h = api.head(api.path(container)).headers
    assert (h["X-Container-Meta-A"], h["X-Container-Meta-B"]) == ("9", "2")
    r = api.post(api.path(container), params=[("update", None)],
                 headers={"X-Container-Meta-B": ""})
    assert "X-Container-Meta-B" not in api.head(api.path(container)).headers
    api.post(api.path(container))               # replace with nothing
    assert "X-Container-Meta-A" not in api.head(api.path(container)).headers


def test_delete_non_empty_is_409_then_delimiter_empties(api, container):
    api.put_object(container, "a")
    api.put_object(container, "b/c")
    r = api.delete(api.path(container))
    assert (r.status_code, r.reason) == (409, "CONFLICT")
    assert r.json()["conflict"]["code"] == 409
    r = api.delete(api.path(container), params=[("delimiter", "/")])
    assert r.status_code == 204
    assert api.listing(container) == []
    assert api.head(api.path(container)).status_code == 204     # the container stays
    assert api.delete(api.path(container)).status_code == 204
    assert api.head(api.path(container)).status_code == 404
    assert api.delete(api.path(container)).status_code == 404


def test_float_until_is_ignored_like_real_pithos(api, fresh):
    """kamaki's ``container delete`` sends until=<float>: treated as absent (plain delete)."""
    name = fresh("c")
    api.create_container(name)
    r = api.delete(api.path(name), params=[("until", "1371628822.12")])
    assert r.status_code == 204
    assert api.head(api.path(name)).status_code == 404


# -- listings (api.md §3.5) ------------------------------------------------------------------

@pytest.fixture
def tree(api, container):
    """The example container of api.md §3.5."""
    api.put(api.path(container, "images"), headers={"Content-Type": "application/directory",
                                                    "Content-Length": "0"})
    for name in ("images/debian.diskdump", "images/win8.diskdump",
                 "images/debian.diskdump.meta", "notes.txt"):
        api.put_object(container, name)
    return container


def _names(items):
    return [i.get("name", i.get("subdir")) for i in items]


def test_listing_table_of_the_spec(api, tree):
    assert _names(api.listing(tree)) == [
        "images", "images/debian.diskdump", "images/debian.diskdump.meta",
        "images/win8.diskdump", "notes.txt"]
    items = api.listing(tree, delimiter="/")
    assert _names(items) == ["images", "images/", "notes.txt"]
    assert items[1] == {"subdir": "images/"}
    assert _names(api.listing(tree, prefix="images/", delimiter="/")) == [
        "images/debian.diskdump", "images/debian.diskdump.meta", "images/win8.diskdump"]
    assert _names(api.listing(tree, prefix="images"))[:2] == ["images", "images/debian.diskdump"]
    assert _names(api.listing(tree, path="images")) == [
        "images/debian.diskdump", "images/debian.diskdump.meta", "images/win8.diskdump"]
    assert _names(api.listing(tree, limit="2", marker="images")) == [
        "images/debian.diskdump", "images/debian.diskdump.meta"]


def test_prefix_without_trailing_delimiter_lists_children(api, tree):
    assert _names(api.listing(tree, prefix="images", delimiter="/")) == [
        "images/debian.diskdump", "images/debian.diskdump.meta", "images/win8.diskdump"]


def test_json_entry_fields(api, tree):
    entry = next(e for e in api.listing(tree) if e["name"] == "notes.txt")
    head = api.head(api.path(tree, "notes.txt")).headers
    assert entry["bytes"] == 6
    assert entry["content_type"] == "application/octet-stream"
    assert entry["hash"] == ""
    assert entry["x_object_hash"] == head["X-Object-Hash"]
    assert entry["x_object_uuid"] == head["X-Object-UUID"]
    assert entry["x_object_version"] == int(head["X-Object-Version"])
    assert isinstance(entry["x_object_version_timestamp"], str)
    float(entry["x_object_version_timestamp"])
    assert entry["last_modified"].endswith("+00:00")
    assert entry["x_object_modified_by"] == api.uuid
    assert entry["x_object_meta"] == {}
    directory = next(e for e in api.listing(tree) if e["name"] == "images")
    assert directory["content_type"] == "application/directory"


def test_listing_carries_user_meta_extension(api, container):
    api.put_object(container, "f", headers={"X-Object-Meta-mtime": "1700000000.5",
                                            "X-Object-Meta-image_os": "debian"})
    [entry] = api.listing(container)
    assert entry["x_object_meta"] == {"Mtime": "1700000000.5", "Image-Os": "debian"}


def test_empty_json_listing_is_200_and_text_is_204(api, container):
    r = api.get(api.path(container), params=[("format", "json")])
    assert (r.status_code, r.json()) == (200, [])
    r = api.get(api.path(container))
    assert r.status_code == 204
    assert r.text == ""


def test_text_listing(api, tree):
    r = api.get(api.path(tree), params=[("delimiter", "/")])
    assert r.status_code == 200
    assert r.text == "images\nimages/\nnotes.txt\n"


def test_limit_and_marker_paging(api, container):
    for i in range(5):
        api.put_object(container, f"o{i}")
    page1 = _names(api.listing(container, limit="2"))
    page2 = _names(api.listing(container, limit="2", marker=page1[-1]))
    page3 = _names(api.listing(container, limit="2", marker=page2[-1]))
    assert page1 + page2 + page3 == [f"o{i}" for i in range(5)]


# -- block upload (POST ?update to the container) ------------------------------------------

def test_block_post_returns_hashes(api, container):
    data = b"hello\n"
    r = api.post(api.path(container), params=[("update", None), ("format", "json")],
                 data=data, headers={"Content-Type": "application/octet-stream"})
    assert (r.status_code, r.reason) == (202, "ACCEPTED")
    assert r.json() == [block_hash(data)]
    assert r.json() == ["5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"]


def test_block_post_cuts_big_bodies(api, container):
    data = b"a" * (4 * 1024 * 1024) + b"b"
    r = api.post(api.path(container), params=[("update", None), ("format", "json")],
                 data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.json() == ["299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05",
                        "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"]


def test_block_post_with_charset_stores_nothing(api, container):
    """Content-Type with parameters is not the block upload (api.md §3.5, D21)."""
    r = api.post(api.path(container), params=[("update", None), ("format", "json")],
                 data=b"zzz-unique-block", headers={
                     "Content-Type": "application/octet-stream; charset=utf-8"})
    assert r.status_code == 202
    assert r.text == ""


def test_block_post_to_someone_elses_container_is_403(api, other, container):
    r = other.post(api.path(container), params=[("update", None)], data=b"x",
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 403
