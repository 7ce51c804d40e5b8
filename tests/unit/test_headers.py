"""Wire encodings shared by client and service (api.md §1.3, §1.4, §1.6, §3.7, §3.8, §4.3)."""

from __future__ import annotations

import pytest

from imagefs.errors import InvalidInput, NameTooLong
from imagefs.protocol import headers as H
from imagefs.protocol import names

T = 1371628822.565891  # 2013-06-19 08:00:22.565891 UTC


@pytest.mark.parametrize("text,quoted", [
    ("plain", "plain"),
    ("a b", "a%20b"),
    ("/pithos/dir/file", "/pithos/dir/file"),
    ("100%", "100%25"),
    ("Débian", "D%C3%A9bian"),
    ("κάτι", "%CE%BA%CE%AC%CF%84%CE%B9"),
    ("a=b;c,d", "a%3Db%3Bc%2Cd"),
    ("", ""),
])
def test_quote_round_trip(text, quoted):
    assert H.quote(text) == quoted
    assert H.unquote(quoted) == text


def test_unquote_leaves_plain_values_alone_and_rejects_bad_utf8():
    assert H.unquote("no escapes here") == "no escapes here"
    with pytest.raises(InvalidInput):
        H.unquote("%C3%28")


def test_quote_reply_keeps_sharing_readable():
    assert H.quote_reply("read=a,b; write=c") == "read=a,b; write=c"
    assert H.quote_reply("é") == "%C3%A9"


@pytest.mark.parametrize("key,normal", [
    ("image_os", "Image-Os"),
    ("IMAGE-OS", "Image-Os"),
    ("Image-Os", "Image-Os"),
    ("mtime", "Mtime"),
    ("a_b-c", "A-B-C"),
    ("x", "X"),
])
def test_meta_key_normalisation(key, normal):
    assert H.normalize_meta_key(key) == normal


@pytest.mark.parametrize("key,normal", [
    ("OS", "os"), ("Os", "os"), ("os", "os"),
    ("root-partition", "root_partition"), ("root_partition", "root_partition"),
    ("Root.Partition", "root_partition"), ("a:b/c", "a_b_c"),
    ("ÜBER", "über"),
])
def test_property_key_normalisation(key, normal):
    assert H.normalize_property_key(key) == normal


def test_meta_headers_quote_names_and_values_and_read_back():
    meta = {"image_os": "Débian 7", "empty": "", "pct": "50%"}
    sent = H.meta_headers(H.OBJECT_META, meta)
    assert sent == {"X-Object-Meta-image_os": "D%C3%A9bian%207",
                    "X-Object-Meta-empty": "", "X-Object-Meta-pct": "50%25"}
    # what comes back: lower-cased names (kamaki's httplib), other headers mixed in
    reply = [("x-object-meta-image-os", "D%C3%A9bian%207"), ("content-type", "text/plain"),
             ("X-Object-Meta-Pct", "50%25"), ("x-object-meta-%C3%A9t%C3%A9", "x")]
    assert H.meta_from_headers(H.OBJECT_META, reply) == {
        "Image-Os": "Débian 7", "Pct": "50%", "Été": "x"}
    assert H.meta_from_headers(H.CONTAINER_META, {"X-Container-Meta-a": "1"}) == {"A": "1"}


def test_http_dates():
    assert H.format_http_date(T) == "Wed, 19 Jun 2013 08:00:22 GMT"
    assert H.parse_http_date("Wed, 19 Jun 2013 08:00:22 GMT") == 1371628822.0
    assert H.parse_http_date(None) is None
    assert H.parse_http_date("not a date") is None


def test_iso_dates():
    assert H.format_iso_date(T) == "2013-06-19T08:00:22.565891+00:00"
    assert H.parse_iso_date("2013-06-19T08:00:22.565891+00:00") == pytest.approx(T)
    assert H.parse_iso_date("2013-06-19T08:00:22.565891") == pytest.approx(T)
    assert H.parse_iso_date("2013-06-19T08:00:22Z") == 1371628822.0
    assert H.parse_iso_date("") is None
    assert H.parse_iso_date("garbage") is None


def test_timestamps():
    assert H.format_timestamp(T) == "1371628822.565891"
    assert H.parse_timestamp("1371628822.565891") == pytest.approx(T)
    assert H.parse_timestamp(12) == 12.0
    assert H.parse_timestamp(None) is None
    assert H.parse_timestamp("x") is None


def test_image_dates():
    assert H.format_image_date(T) == "2013-06-19 08:00:22"
    assert H.parse_image_date("2013-06-19 08:00:22") == 1371628822.0
    assert H.parse_image_date("2013-06-19T08:00:22+00:00") == 1371628822.0
    assert H.parse_image_date("") is None


@pytest.mark.parametrize("account,container,name,text", [
    ("0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f", "pithos", "debian_base3.diskdump",
     "pithos://0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f/pithos/debian_base3.diskdump"),
    ("u", "pithos", "images/a b.img", "pithos://u/pithos/images/a%20b.img"),
    ("u", "c d", "é/x", "pithos://u/c%20d/%C3%A9/x"),
])
def test_locations(account, container, name, text):
    assert H.location(account, container, name) == text
    assert H.parse_location(text) == (account, container, name)


@pytest.mark.parametrize("bad", [
    "", "pithos://u/c", "pithos://u/c/", "pithos:/u/c/o", "http://u/c/o", "pithos:///c/o",
    "pithos://u//o",
])
def test_bad_locations(bad):
    with pytest.raises(InvalidInput):
        H.parse_location(bad)


@pytest.mark.parametrize("text,parsed", [
    ("", {}),
    ("  ", {}),
    ("read=a,b", {"read": ["a", "b"]}),
    ("read=A, B ;write=c", {"read": ["a", "b"], "write": ["c"]}),
    ("write=c; read=a", {"read": ["a"], "write": ["c"]}),
    ("read=a,*,b", {"read": ["*"]}),
    ("read=a,b;write=b", {"read": ["a"], "write": ["b"]}),
    ("read=b;write=b", {"write": ["b"]}),
    ("read=u:group", {"read": ["u:group"]}),
])
def test_parse_sharing(text, parsed):
    assert H.parse_sharing(text) == parsed


@pytest.mark.parametrize("bad", ["read=", "read", "owner=a", "read=;write=b"])
def test_bad_sharing(bad):
    with pytest.raises(InvalidInput):
        H.parse_sharing(bad)


def test_format_sharing():
    assert H.format_sharing({}) == ""
    assert H.format_sharing({"write": ["c"], "read": ["a", "b"]}) == "read=a,b; write=c"
    assert H.parse_sharing(H.format_sharing({"read": ["a", "*"]})) == {"read": ["*"]}


def test_image_headers_request_side():
    sent = H.image_headers(
        {"name": "Debian Base Alpha", "location": "pithos://u/pithos/a%20b", "is_public": True,
         "disk_format": "diskdump", "container_format": None, "status": ""},
        {"OS": "Linux", "root_partition": "1", "desc": "ä b"})
    assert sent == {
        "X-Image-Meta-Name": "Debian%20Base%20Alpha",
        "X-Image-Meta-Location": "pithos://u/pithos/a%20b",
        "X-Image-Meta-Is-Public": "True",
        "X-Image-Meta-Disk-Format": "diskdump",
        "X-Image-Meta-Status": "",
        "X-Image-Meta-Property-OS": "Linux",
        "X-Image-Meta-Property-root-partition": "1",
        "X-Image-Meta-Property-desc": "%C3%A4%20b",
    }


def test_image_headers_reply_side_round_trip():
    fields = {"id": "5a8d", "name": "Débian", "is_public": False, "size": 903471104,
              "deleted_at": "", "location": "pithos://u/pithos/x"}
    sent = H.image_headers(fields, {"os": "Linux"}, lower=True)
    assert sent["x-image-meta-name"] == "D%C3%A9bian"
    assert sent["x-image-meta-is-public"] == "False"
    assert sent["x-image-meta-deleted-at"] == ""
    assert sent["x-image-meta-property-os"] == "Linux"
    got_fields, got_props = H.image_meta_from_headers(sent)
    assert got_fields == {"id": "5a8d", "name": "Débian", "is_public": "False",
                          "size": "903471104", "deleted_at": "", "location": "pithos://u/pithos/x"}
    assert got_props == {"os": "Linux"}


def test_image_meta_items_normalise_skip_unknown_and_keep_duplicates():
    items = [("X-Image-Meta-Property-USER", "admin"), ("x-image-meta-property-user", "root"),
             ("X-Image-Meta-Foo", "ignored"), ("X-Image-Meta-Disk_Format", "diskdump"),
             ("X-Image-Meta-Property-%C3%A9t%C3%A9", "%C3%A9"), ("Content-Type", "x"),
             ("X-Image-Meta-Location", "pithos://u/c/a%20b")]
    assert list(H.image_meta_items(items)) == [
        ("property", "user", "admin"), ("property", "user", "root"),
        ("field", "disk_format", "diskdump"), ("property", "été", "é"),
        ("field", "location", "pithos://u/c/a%20b")]
    fields, props = H.image_meta_from_headers(items)
    assert props["user"] == "root"
    assert fields["location"] == "pithos://u/c/a%20b"  # parts are decoded by parse_location


@pytest.mark.parametrize("params,text", [
    ({"update": None, "format": "json"}, "update&format=json"),
    ({"format": "json", "hashmap": "True"}, "format=json&hashmap=True"),
    ({"prefix": "a b/", "delimiter": "/"}, "prefix=a%20b/&delimiter=/"),
    ({"marker": "é&x"}, "marker=%C3%A9%26x"),
    ({"shared": ""}, "shared"),
    ({"limit": 5}, "limit=5"),
])
def test_query_string(params, text):
    assert H.query_string(params) == text


def test_names():
    assert names.check_container_name("pithos") == "pithos"
    assert names.check_object_name("a/b c") == "a/b c"
    assert names.check_object_name("x" * 1024)
    assert names.check_container_name("c" * 256)
    with pytest.raises(NameTooLong):
        names.check_object_name("x" * 1025)
    with pytest.raises(NameTooLong):
        names.check_container_name("c" * 257)
    for bad in ("", "a/b"):
        with pytest.raises(InvalidInput):
            names.check_container_name(bad)
    with pytest.raises(InvalidInput):
        names.check_object_name("")
    assert names.check_object_name("dir/", addressable=False) == "dir/"
    for bad in ("dir/", "/a", "a//b"):
        assert not names.is_valid_object_name(bad, addressable=True)
    assert names.is_valid_object_name("a/b", addressable=True)
    assert not names.is_valid_container_name("x" * 300)
    with pytest.raises(NameTooLong):
        names.check_meta({"k" * 129: "v"})
    with pytest.raises(InvalidInput):
        names.check_meta({"k": "v" * 257})
    names.check_meta({"k": "v" * 256})
