"""The sidecar's JSON <-> registration rules (imagefs.image.metafile), as tables.

The seed texts are copied byte for byte from the tutorial
(shared/seed/000_323e09c4e39487df.txt §5.1 and §5.5); the kamaki 0.16 text is
api.md §5.1's example with Python 2's trailing spaces.
"""

from __future__ import annotations

import codecs
import errno
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagefs.client.models import Image
from imagefs.errors import MetafileInvalid, to_errno
from imagefs.image import metafile
from imagefs.image.metafile import (
    MAX_METAFILE_BYTES, Registration, display_property_key, normalise_property_key, parse, render,
)

#: Tutorial §5.1, "Read the metafile": what kamaki ~0.10 wrote after the first registration.
SEED_GAMA = b"""{
  "status": "available",
  "name": "Debian Base Gama",
  "checksum": "3cb03556ec971f...e8dd6190443b560cb7",
  "id": "7h1rd-1m4g3-1d2",
  "updated-at": "2013-06-19 08:01:00",
  "created-at": "2013-06-19 08:00:22",
  "properties": {},
  "location": "pithos://s0m3-u53r-1d/pithos/debian_base3.diskdump",
  "is-public": "False",
  "owner": "s0m3-u53r-1d",
  "disk-format": "diskdump",
  "size": "903471104",
  "deleted-at": "",
  "container-format": "bare"
}
"""

#: Tutorial §5.5: the same file after the user added OS and USER in an editor.
SEED_EDITED = b"""{
  "status": "available",
  "name": "Debian Base Gama",
  "checksum": "3cb03556ec971f...e8dd6190443b560cb7",
  "id": "7h1rd-1m4g3-1d2",
  "updated-at": "2013-06-19 08:01:00",
  "created-at": "2013-06-19 08:00:22",
  "properties": {
    "OS": "Linux",
    "USER": "root"
  },
  "location": "pithos://s0m3-u53r-1d/pithos/debian_base3.diskdump",
  "is-public": "False",
  "owner": "s0m3-u53r-1d",
  "disk-format": "diskdump",
  "size": "903471104",
  "deleted-at": "",
  "container-format": "bare"
}
"""

#: api.md §5.1: kamaki 0.16's Python 2 json.dumps(indent=2): every line but the
#: last of a block ends with ", " (a trailing space), all values are strings.
KAMAKI_016 = "\n".join([
    "{",
    '  "status": "available", ',
    '  "name": "Debian Base Gama", ',
    '  "checksum": "3cb03556ec971f\u2026e8dd6190443b560cb7", ',
    '  "id": "5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d", ',
    '  "updated-at": "2013-06-19 08:01:00", ',
    '  "created-at": "2013-06-19 08:00:22", ',
    '  "properties": {',
    '    "os": "Linux", ',
    '    "user": "root"',
    "  }, ",
    '  "location": "pithos://0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f/pithos/debian_base3.diskdump", ',
    '  "is-public": "False", ',
    '  "owner": "0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f (someuser@example.org)", ',
    '  "disk-format": "diskdump", ',
    '  "size": "903471104", ',
    '  "deleted-at": "", ',
    '  "container-format": "bare"',
    "}",
]).encode("utf-8") + b"\n"

DEFAULT = "debian_base3.diskdump"


def reg(name="Debian Base Gama", disk="diskdump", cont="bare", public=False, status=None,
        **properties):
    return Registration(name=name, disk_format=disk, container_format=cont, is_public=public,
                        status=status, properties=properties)


def test_kamaki_016_sample_has_trailing_spaces():
    """The sample really is Python 2's shape (guards the table below)."""
    assert b'"name": "Debian Base Gama", \n' in KAMAKI_016


# -- accepted ---------------------------------------------------------------------------------

ACCEPTED = [
    # id, text, default_name, expected
    ("seed-gama", SEED_GAMA, DEFAULT, reg(status="available")),
    ("seed-edited", SEED_EDITED, DEFAULT, reg(status="available", os="Linux", user="root")),
    ("kamaki-0.16", KAMAKI_016, DEFAULT, reg(status="available", os="Linux", user="root")),
    ("python2-unicode-escapes", b'{"name": "\\u0394\\u03ad\\u03bb\\u03c4\\u03b1"}', DEFAULT,
     reg(name="\u0394\u03ad\u03bb\u03c4\u03b1")),
    ("utf8-name", '{"name": "Δέλτα"}'.encode(), DEFAULT, reg(name="Δέλτα")),
    ("bom", codecs.BOM_UTF8 + b'{"name": "x"}', DEFAULT, reg(name="x")),
    ("missing-name-is-path", b"{}", "images/debian.diskdump", reg(name="images/debian.diskdump")),
    ("null-name-is-path", b'{"name": null}', "a/b", reg(name="a/b")),
    ("keys-any-case-dash-or-underscore",
     b'{"NAME": "x", "Disk_Format": "extdump", "IS_PUBLIC": true, "Container-Format": "OVF",'
     b' "Status": "ok", "PROPERTIES": {"a": "1"}}', DEFAULT,
     reg(name="x", disk="extdump", cont="ovf", public=True, status="ok", a="1")),
    ("is-public-true", b'{"is-public": true}', "n", reg(name="n", public=True)),
    ("is-public-false", b'{"is-public": false}', "n", reg(name="n")),
    ("is-public-True-string", b'{"is-public": "True"}', "n", reg(name="n", public=True)),
    ("is-public-FALSE-string", b'{"is-public": "FALSE"}', "n", reg(name="n")),
    ("is-public-spaced-string", b'{"is-public": " true "}', "n", reg(name="n", public=True)),
    ("is-public-null", b'{"is-public": null}', "n", reg(name="n")),
    ("empty-formats-are-defaults", b'{"disk-format": "", "container-format": null}', "n",
     reg(name="n")),
    ("status-empty-kept", b'{"status": ""}', "n", reg(name="n", status="")),
    ("status-verbatim", b'{"status": "AVAILABLE"}', "n", reg(name="n", status="AVAILABLE")),
    ("property-scalars-as-written",
     b'{"properties": {"i": 1, "f": 1.10, "e": 1e3, "t": true, "n": false, "neg": -2}}', "n",
     reg(name="n", i="1", f="1.10", e="1e3", t="true", n="false", neg="-2")),
    ("property-null-or-empty-is-absent", b'{"properties": {"a": null, "b": "", "c": "x"}}', "n",
     reg(name="n", c="x")),
    ("property-keys-normalised",
     b'{"properties": {"Root-Partition": "1", "OS": "Linux", "a.b": "2"}}', "n",
     reg(name="n", root_partition="1", os="Linux", a_b="2")),
    ("property-unicode-key", '{"properties": {"Straße": "x"}}'.encode(), "n",
     reg(name="n", **{"straße": "x"})),
    ("duplicate-keys-same-value", b'{"name": "x", "NAME": "x", "properties": {"OS": "L",'
     b' "os": "L"}}', "n", reg(name="x", os="L")),
    ("properties-null", b'{"properties": null}', "n", reg(name="n")),
    ("server-keys-any-type-ignored",
     b'{"size": 903471104, "id": 5, "location": {"a": 1}, "checksum": [1], "owner": null,'
     b' "created_at": true, "is-snapshot": "False", "description": "", "store": "pithos",'
     b' "deleted-at": "", "updated-at": "x"}', "n", reg(name="n")),
    ("name-with-at-and-slash", b'{"name": "images/a@b c"}', "n", reg(name="images/a@b c")),
    ("name-256", ('{"name": "%s"}' % ("n" * 256)).encode(), "x", reg(name="n" * 256)),
    ("28-properties-without-status",
     json.dumps({"properties": {f"k{i}": "v" for i in range(28)}}).encode(), "n",
     reg(name="n", **{f"k{i}": "v" for i in range(28)})),
    ("crlf-line-ends", SEED_EDITED.replace(b"\n", b"\r\n"), DEFAULT,
     reg(status="available", os="Linux", user="root")),
]


@pytest.mark.parametrize("text, default_name, expected",
                         [row[1:] for row in ACCEPTED], ids=[row[0] for row in ACCEPTED])
def test_parse_accepts(text, default_name, expected):
    """Lenient form (api.md §5.3): every shape in the wild registers what it says."""
    assert parse(text, default_name=default_name) == expected


def test_parse_reports_unknown_keys_but_not_server_keys():
    r = parse(b'{"name": "x", "nmae": "typo", "Foo-Bar": 1, "owner": "u (someone)", "id": "i"}',
              default_name="d")
    assert r.ignored == ("nmae", "Foo-Bar")


def test_parse_says_when_name_comes_from_path():
    assert parse(b"{}", default_name="a").named_by_path
    assert not parse(b'{"name": "a"}', default_name="a").named_by_path


def test_parse_without_format_lists_accepts_any_format():
    """A deployment with other formats: pass None, the service validates."""
    r = parse(b'{"disk-format": "qcow2", "container-format": "docker"}', default_name="n",
              disk_formats=None, container_formats=None)
    assert (r.disk_format, r.container_format) == ("qcow2", "docker")


# -- refused ----------------------------------------------------------------------------------

REFUSED = [
    # id, text, message fragment
    ("empty", b"", "empty"),
    ("blank", b"  \n\t", "empty"),
    ("bom-only", codecs.BOM_UTF8, "empty"),
    ("truncated", b"{", "not valid JSON: Expecting property name enclosed in double quotes "
     "at line 1, column 2"),
    ("missing-comma", b'{\n  "name": "a"\n  "status": "b"\n}',
     "not valid JSON: Expecting ',' delimiter at line 3, column 3"),
    ("seed-edited-missing-comma",
     SEED_EDITED.replace(b'"OS": "Linux",', b'"OS": "Linux"'),
     "Expecting ',' delimiter at line 10, column 5"),
    ("trailing-comma", b'{"name": "a",}', "at line 1, column 14"),
    ("single-quotes", b"{'name': 'a'}", "enclosed in double quotes"),
    ("extra-data", b'{"name": "a"} {}', "Extra data at line 1, column 15"),
    ("nan", b'{"properties": {"a": NaN}}', "NaN is not a JSON value"),
    ("infinity", b'{"size": Infinity}', "Infinity is not a JSON value"),
    ("list", b'[{"name": "a"}]', "must be a JSON object ({...}), not a list"),
    ("string", b'"name"', "not text"),
    ("number", b"42", "not a number"),
    ("null", b"null", "not null"),
    ("latin-1", '{"name": "Café"}'.encode("latin-1"),
     "not UTF-8 text: byte 0xE9 at line 1, column 14; save it as UTF-8"),
    ("latin-1-line-2", '{\n "name": "Ünal"}'.encode("latin-1"), "byte 0xDC at line 2, column 11"),
    ("utf-16", '{"name": "a"}'.encode("utf-16"), "UTF-16 or UTF-32"),
    ("huge", b"{" + b" " * MAX_METAFILE_BYTES + b"}", "too large"),
    ("deep-nesting", b"[" * 100_000, "nested too deeply"),
    ("name-number", b'{"name": 5}', '"name" must be text, not a number'),
    ("name-bool", b'{"Name": true}', '"Name" must be text, not true/false'),
    ("name-list", b'{"name": ["a"]}', '"name" must be text, not a list'),
    ("name-object", b'{"name": {}}', '"name" must be text, not an object'),
    ("name-empty", b'{"name": ""}', '"name" is empty'),
    ("name-blank", b'{"name": "  "}', '"name" is empty'),
    ("name-257", ('{"name": "%s"}' % ("n" * 257)).encode(), "257 characters long"),
    ("name-lone-surrogate", b'{"name": "\\ud800"}', "unpaired surrogate"),
    ("name-nul", b'{"name": "a\\u0000b"}', '"name" contains a NUL character'),
    ("property-value-nul", b'{"properties": {"OS": "\\u0000"}}', "contains a NUL character"),
    ("disk-format-unknown", b'{"disk-format": "qcow2"}',
     "\"disk-format\" 'qcow2' is not one of diskdump, extdump, ntfsdump"),
    ("container-format-unknown", b'{"container_format": "docker"}',
     "\"container_format\" 'docker' is not one of aki, ari, ami, bare, ovf"),
    ("disk-format-number", b'{"disk-format": 1}', '"disk-format" must be text, not a number'),
    ("status-number", b'{"status": 1}', '"status" must be text, not a number'),
    ("status-257", ('{"status": "%s"}' % ("s" * 257)).encode(), "257 characters long"),
    ("is-public-word", b'{"is-public": "yes"}', "\"is-public\" must be true or false, not 'yes'"),
    ("is-public-number", b'{"is-public": 1}', '"is-public" must be true or false, not a number'),
    ("is-public-list", b'{"is_public": []}', '"is_public" must be true or false, not a list'),
    ("properties-list", b'{"properties": [["OS", "Linux"]]}',
     '"properties" must be a JSON object ({"KEY": "value", ...}), not a list'),
    ("properties-text", b'{"properties": "OS=Linux"}', "not text"),
    ("property-list", b'{"properties": {"OS": ["Linux"]}}',
     "property 'OS' is a list; property values must be text, numbers or true/false"),
    ("property-object", b'{"properties": {"OS": {"name": "Linux"}}}', "property 'OS' is an object"),
    ("property-key-space", b'{"properties": {"my key": "x"}}', "contains a space"),
    ("property-key-control", b'{"properties": {"a\\tb": "x"}}', "contains a space or a control"),
    ("property-key-empty", b'{"properties": {"": "x"}}', "a property key is empty"),
    ("property-key-94", ('{"properties": {"%s": "x"}}' % ("k" * 94)).encode(),
     "is 94 characters long; the image service allows 93"),
    ("property-value-257", ('{"properties": {"k": "%s"}}' % ("v" * 257)).encode(),
     "property 'k' is 257 characters long; the image service allows 256"),
    ("29-properties", json.dumps({"properties": {f"k{i}": "v" for i in range(29)}}).encode(),
     "29 properties; the image service stores at most 28"),
    ("28-properties-and-status",
     json.dumps({"status": "ok", "properties": {f"k{i}": "v" for i in range(28)}}).encode(),
     "stores at most 27 besides a status"),
    ("duplicate-field", b'{"name": "a", "NAME": "b"}',
     '"name" and "NAME" are the same key with different values'),
    ("duplicate-field-dash", b'{"is-public": true, "is_public": false}', "same key"),
    ("duplicate-property", b'{"properties": {"OS": "Linux", "os": "BSD"}}',
     "properties 'OS' and 'os' are the same property"),
]


@pytest.mark.parametrize("text, fragment", [row[1:] for row in REFUSED],
                         ids=[row[0] for row in REFUSED])
def test_parse_refuses(text, fragment):
    """Strict meaning: the message says where and what, and close() gets EINVAL."""
    with pytest.raises(MetafileInvalid) as info:
        parse(text, default_name=DEFAULT)
    assert fragment in str(info.value)
    assert to_errno(info.value) == errno.EINVAL


def test_parse_refuses_default_name_over_limit():
    with pytest.raises(MetafileInvalid, match='no "name", and the file\'s path is 300'):
        parse(b"{}", default_name="p" * 300)


# -- property keys ----------------------------------------------------------------------------

KEYS = [
    # raw, normalised, displayed (from the normalised key)
    ("OS", "os", "OS"),
    ("os", "os", "OS"),
    ("Os", "os", "OS"),
    ("root-partition", "root_partition", "ROOT_PARTITION"),
    ("ROOT_PARTITION", "root_partition", "ROOT_PARTITION"),
    ("a.b:c", "a_b_c", "A_B_C"),
    ("Straße", "straße", "STRAßE"),
    ("ΔΕΛΤΑ", "δελτα", "δελτα"),
]


@pytest.mark.parametrize("raw, normalised, displayed", KEYS)
def test_property_key_rules(raw, normalised, displayed):
    """Keys are compared lower-case with punctuation as _ and shown upper-case (ASCII)."""
    assert normalise_property_key(raw) == normalised
    assert display_property_key(normalised) == displayed
    assert normalise_property_key(display_property_key(normalised)) == normalised


def test_display_turns_dash_into_underscore():
    assert display_property_key("root-partition") == "ROOT_PARTITION"


# -- render -----------------------------------------------------------------------------------

IMAGE = Image(
    id="5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d",
    name="Debian Base Alpha",
    location="pithos://0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f/pithos/debian_base3.diskdump",
    owner="0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f",
    size=903471104,
    checksum="3cb03556ec971fe8dd6190443b560cb7",
    disk_format="diskdump",
    container_format="bare",
    status="available",
    is_public=False,
    created_at="2013-06-19 08:00:22",
    updated_at="2013-06-19 08:01:00",
    deleted_at="",
    properties={"os": "Linux", "user": "root"},
)

RENDERED = b"""{
  "checksum": "3cb03556ec971fe8dd6190443b560cb7",
  "container-format": "bare",
  "created-at": "2013-06-19 08:00:22",
  "deleted-at": "",
  "disk-format": "diskdump",
  "id": "5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d",
  "is-public": false,
  "location": "pithos://0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f/pithos/debian_base3.diskdump",
  "name": "Debian Base Alpha",
  "owner": "0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f",
  "properties": {
    "OS": "Linux",
    "USER": "root"
  },
  "size": 903471104,
  "status": "available",
  "updated-at": "2013-06-19 08:01:00"
}
"""


def test_render_is_the_behaviour_shape():
    """behaviour.md §5: sorted dashed keys, indent 2, boolean is-public, number size,
    upper-case property keys, final newline."""
    assert render(IMAGE) == RENDERED


def test_render_owner_name_suffix():
    """kamaki appends ' (username)' to the owner."""
    text = render(IMAGE, owner_name="someuser@example.org")
    assert json.loads(text)["owner"] == ("0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f "
                                         "(someuser@example.org)")


def test_render_writes_utf8_not_escapes():
    text = render(Image(**{**IMAGE.__dict__, "name": "Δέλτα"}))
    assert "Δέλτα".encode() in text


ROUND_TRIP = [
    IMAGE,
    Image(**{**IMAGE.__dict__, "is_public": True, "status": "", "properties": {}}),
    Image(**{**IMAGE.__dict__, "name": "images/Δέλτα \"q\" \\", "disk_format": "ntfsdump",
             "container_format": "ovf", "status": "AVAILABLE",
             "properties": {"root_partition": "1", "straße": "ü", "swap": "2:512"}}),
]


@pytest.mark.parametrize("image", ROUND_TRIP, ids=["plain", "public-empty-status", "unicode"])
def test_render_parse_round_trip(image):
    """Reading the sidecar and writing it back registers the same thing."""
    r = parse(render(image, owner_name="someone"), default_name="other")
    assert r == Registration.from_image(image)
    assert r.matches(image)
    assert r.ignored == ()


_key_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_é")
#: Any text the services can store: no lone surrogates, no NUL.
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                max_size=40)


@settings(max_examples=60, deadline=None)
@given(name=_text.filter(lambda s: s.strip()),
       disk=st.sampled_from(metafile.DISK_FORMATS),
       cont=st.sampled_from(metafile.CONTAINER_FORMATS),
       public=st.booleans(), status=_text,
       properties=st.dictionaries(st.text(_key_chars, min_size=1, max_size=20),
                                  _text.filter(bool), max_size=8))
def test_render_parse_round_trip_any(name, disk, cont, public, status, properties):
    image = Image(**{**IMAGE.__dict__, "name": name, "disk_format": disk,
                     "container_format": cont, "is_public": public, "status": status,
                     "properties": properties})
    assert parse(render(image), default_name="x") == Registration.from_image(image)


# -- matches ----------------------------------------------------------------------------------

MATCHES = [
    ("same", reg(name="Debian Base Alpha", os="Linux", user="root"), True),
    ("status-unsaid", reg(name="Debian Base Alpha", status=None, os="Linux", user="root"), True),
    ("status-other-case", reg(name="Debian Base Alpha", status="AVAILABLE", os="Linux",
                              user="root"), True),
    ("status-differs", reg(name="Debian Base Alpha", status="", os="Linux", user="root"), False),
    ("name-differs", reg(name="Other", os="Linux", user="root"), False),
    ("property-missing", reg(name="Debian Base Alpha", os="Linux"), False),
    ("public-differs", reg(name="Debian Base Alpha", public=True, os="Linux", user="root"), False),
    ("format-differs", reg(name="Debian Base Alpha", disk="extdump", os="Linux", user="root"),
     False),
]


@pytest.mark.parametrize("registration, expected", [r[1:] for r in MATCHES],
                         ids=[r[0] for r in MATCHES])
def test_matches(registration, expected):
    assert registration.matches(IMAGE) is expected
