"""Hostile and malformed input: every case gets a clear 4xx JSON fault (or the documented
"ignored" answer), never a 500, and the service keeps serving.

The corpus is one table, ``CASES``, sent over a raw socket so that nothing
(requests, http.client) normalises the bytes: bad request lines and headers,
broken chunked bodies, malformed and unsatisfiable ranges, bad hashmaps,
oversized bodies, bad JSON to the identity and image endpoints, bad tokens
and bad query and header values. ``NAMES`` is the table of odd object names:
each is either stored and read back byte for byte, or refused with a 4xx.
After every case the same object is read back intact.

``test_secrets`` replays both tables against a DEBUG-level service and greps
its log for tokens, so the cases are plain data plus ``run_case``.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import pytest

from imagefs.protocol.hashmap import hashmap_of

#: The object every case may touch and that must read back intact after each one.
HEALTH_DATA = b"0123456789"
BLOCK = 4 * 1024 * 1024
H1 = hashmap_of(b"hello\n")[0]
#: A block no test uploads: the hashmap 409 must name it.
ABSENT = hashmap_of(b"imagefs corpus: a block nobody ever uploads\n")[0]
TOKEN = "{tok}"            # the target user's token, substituted at send time


# -- a raw HTTP exchange ---------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]          # lower-case names, last value wins
    body: bytes

    def fault(self) -> tuple[str, dict]:
        """(fault key, fault dict) of a JSON error body; AssertionError if it is not one."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        doc = json.loads(self.body)
        assert isinstance(doc, dict) and len(doc) == 1, doc
        key, value = next(iter(doc.items()))
        assert value["code"] == self.status, doc
        assert isinstance(value["message"], str), doc
        return key, value


def exchange(base: str, data: bytes, *, head: bool = False, timeout: float = 30.0) -> Reply:
    """Send ``data`` as is on a new connection and read one reply (the request says
    ``Connection: close``). The sender runs in a thread, so a server that answers
    before reading the whole body is heard, not deadlocked against."""
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)

    def send() -> None:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)   # a body shorter than declared ends here
        except OSError:          # the server answered early and closed: fine
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = bytearray()
    try:
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if _complete(received, head):
                break
    finally:
        sock.close()
        sender.join(timeout)
    return _parse(bytes(received), head)


def _split_head(raw: bytes) -> tuple[bytes, bytes] | None:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = raw[:end]
    # A "100 Continue" interim reply precedes the real one.
    if head.startswith(b"HTTP/1.1 100"):
        return _split_head(raw[end + 4:])
    return head, raw[end + 4:]


def _complete(raw: bytes, head_request: bool) -> bool:
    split = _split_head(raw)
    if split is None:
        return False
    head, rest = split
    if head_request:
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return False


def _parse(raw: bytes, head_request: bool) -> Reply:
    split = _split_head(raw)
    assert split is not None, f"no complete reply: {raw[:200]!r}"
    head, rest = split
    lines = head.decode("latin-1").split("\r\n")
    _version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return Reply(int(status), reason, headers, b"" if head_request else rest[:length])


# -- the corpus ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One request and the statuses it may get.

    ``path`` and str header values may hold ``{acc}``, ``{c}``, ``{img}`` and ``{tok}``.
    ``token`` None sends no X-Auth-Token. ``raw`` replaces the whole request (after the
    same substitutions); otherwise a ``Content-Length`` is added for a body unless
    ``length`` is False. ``fault`` is the expected fault key of an error reply.
    """

    id: str
    method: str = "GET"
    path: str = "/object-store/v1/{acc}/{c}/y"
    headers: tuple[tuple[str, str | bytes], ...] = ()
    body: bytes | None = None
    expect: int | tuple[int, ...] = 400
    token: str | bytes | None = TOKEN
    raw: bytes | None = None
    length: bool = True
    fault: str | None = None
    check: object = field(default=None, compare=False)   # extra assertion on the Reply
    #: False for the one error reply that is not a fault: the hashmap 409 (missing list).
    json_fault: bool = True


OBJ = "/object-store/v1/{acc}/{c}/y"
CONT = "/object-store/v1/{acc}/{c}"
ACCT = "/object-store/v1/{acc}"
IMG = "/image/v1.0/images"
TOKENS = "/identity/v2.0/tokens"
CATALOGS = "/account/v1.0/user_catalogs"
TEXT = (("Content-Type", "text/plain"),)
JSONCT = (("Content-Type", "application/json"),)
OCTET = (("Content-Type", "application/octet-stream"),)


def _request_head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", "X-Auth-Token: {tok}",
                        *lines, "Connection: close", "", ""]).encode("latin-1")


def _chunked(path: str, chunks: bytes, method: str = "PUT",
             ctype: str = "text/plain") -> bytes:
    return _request_head(method, path, f"Content-Type: {ctype}",
                         "Transfer-Encoding: chunked") + chunks


def _full(reply: Reply) -> None:
    assert reply.body == HEALTH_DATA, reply.body


def _unsatisfiable(reply: Reply) -> None:
    assert reply.headers.get("content-range") == f"bytes */{len(HEALTH_DATA)}", reply.headers


def _missing_absent(reply: Reply) -> None:
    """The hashmap 409 names the missing block, in lower case whatever the client sent."""
    assert json.loads(reply.body) == [ABSENT], reply.body


def _two_blocks(reply: Reply) -> None:
    """A block POST longer than a block is cut into blocks: one hash per block."""
    assert json.loads(reply.body) == hashmap_of(b"\1" * BLOCK + b"tail"), reply.body


def _hashmap(size: object, hashes: object) -> bytes:
    return json.dumps({"bytes": size, "hashes": hashes}).encode()


HTTP_CASES = [
    Case("http-garbage-line", raw=b"GARBAGE\r\n\r\n"),
    Case("http-binary-junk", raw=bytes(range(256)) * 4),
    Case("http-only-crlf", raw=b"\r\n\r\n\r\n"),
    Case("http-lowercase-method", raw=_request_head("get", OBJ)),
    Case("http-bad-method-char", raw=_request_head("G@T", OBJ)),
    Case("http-unknown-method", raw=_request_head("BREW", OBJ), expect=405, fault="notAllowed"),
    Case("http-bad-version", raw=b"GET /x HTTP/9.9\r\nHost: x\r\n\r\n"),
    Case("http-h2-preface", raw=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    Case("http-bare-lf", raw=b"GET / HTTP/1.1\nHost: x\n\n"),
    Case("http-raw-space-in-path", raw=_request_head("GET", "/object-store/v1/{acc}/{c}/a b")),
    Case("http-raw-high-byte-in-path",
         raw=_request_head("GET", "/object-store/v1/{acc}/{c}/a\xffb")),
    Case("http-raw-control-in-path",
         raw=_request_head("GET", "/object-store/v1/{acc}/{c}/a\x01b")),
    Case("http-request-line-64k", raw=_request_head("GET", OBJ + "?x=" + "a" * 65536),
         expect=414, fault="requestURITooLong"),
    Case("http-request-line-8m", raw=_request_head("GET", OBJ + "?x=" + "a" * (8 << 20)),
         expect=414, fault="requestURITooLong"),
    Case("http-header-20k", headers=(("X-Big", "a" * 20000),), expect=431),
    Case("http-500-headers", headers=tuple((f"X-H{i}", "a") for i in range(500)), expect=431),
    Case("http-header-name-space", raw=_request_head("GET", OBJ, "Bad Name: a")),
    Case("http-header-no-colon", raw=_request_head("GET", OBJ, "NoColon")),
    Case("http-header-space-before-colon", raw=_request_head("GET", OBJ, "X-A : b")),
    Case("http-header-folding", raw=_request_head("GET", OBJ, "X-A: a", " b")),
    Case("http-header-nul", raw=_request_head("GET", OBJ, "X-A: a\x00b")),
    Case("http-header-control", headers=(("If-Match", "\x01\x02"),)),
    Case("http-two-hosts", raw=_request_head("GET", OBJ, "Host: y")),
    Case("http-expect-teapot", method="PUT", path=OBJ + "2", headers=TEXT + (
        ("Expect", "teapot"),), body=b"x", expect=417),
    Case("http-content-length-abc", method="PUT", path=OBJ + "2",
         headers=TEXT + (("Content-Length", "abc"),), body=b"x", length=False),
    Case("http-content-length-negative", method="PUT", path=OBJ + "2",
         headers=TEXT + (("Content-Length", "-1"),), body=b"x", length=False),
    Case("http-content-length-twice", method="PUT", path=OBJ + "2", headers=TEXT + (
        ("Content-Length", "1"), ("Content-Length", "2")), body=b"xy", length=False),
    Case("http-content-length-and-chunked", method="PUT", path=OBJ + "2", headers=TEXT + (
        ("Content-Length", "2"), ("Transfer-Encoding", "chunked")),
        body=b"2\r\nab\r\n0\r\n\r\n", length=False),
    Case("http-transfer-encoding-gzip", method="PUT", path=OBJ + "2",
         headers=TEXT + (("Transfer-Encoding", "gzip"),), body=b"x", length=False,
         expect=(400, 501)),
    Case("http-chunk-size-not-hex", raw=_chunked(OBJ + "2", b"2\r\nab\r\nzz\r\nab\r\n0\r\n\r\n")),
    Case("http-chunk-no-terminator", raw=_chunked(OBJ + "2", b"2\r\nabXX0\r\n\r\n")),
    Case("http-chunk-truncated", raw=_chunked(OBJ + "2", b"2\r\nab\r\n10\r\nab")),
    Case("http-chunk-bad-extension", raw=_chunked(OBJ + "2", b"2;\x01\r\nab\r\n0\r\n\r\n")),
    Case("http-chunk-size-huge", raw=_chunked(OBJ + "2", b"f" * 40 + b"\r\nab\r\n0\r\n\r\n")),
    Case("http-chunked-block-post-broken",
         raw=_chunked(CONT + "?update", b"2\r\nab\r\nzz\r\n", "POST",
                      "application/octet-stream")),
    Case("http-chunked-hashmap-broken", raw=_chunked(OBJ + "2?hashmap", b"2\r\n{}\r\nzz\r\n")),
    Case("http-chunked-tokens-broken", raw=_chunked(TOKENS, b"2\r\n{}\r\nzz\r\n", "POST",
                                                    "application/json")),
    Case("http-absolute-uri", raw=_request_head("GET", "http://127.0.0.1" + OBJ), expect=200,
         check=_full),
    Case("http-fragment", raw=_request_head("GET", OBJ + "#frag"), expect=200, check=_full),
    Case("http-1.0", raw=b"GET " + OBJ.encode() + b" HTTP/1.0\r\nX-Auth-Token: {tok}\r\n\r\n",
         expect=200, check=_full),
    Case("http-copy-verb", method="COPY", expect=405, fault="notAllowed"),
    Case("http-options-verb", method="OPTIONS", expect=405, fault="notAllowed"),
    Case("http-unknown-path", path="/nothing/here", expect=404, fault="itemNotFound"),
    Case("http-unknown-image-path", path="/image/v1.0/nothing", fault="badRequest"),
]

_RANGE_IGNORED = ["bytes=abc", "bytes=5-2", "bytes=-", "bytes=--1", "bytes=1-2-3", "items=0-1",
                  "bytes=0-1,,", "bytes=0-0x1", "bytes=1e3-", "bytes=+1-2", "bytes=0-1,garbage",
                  "bytes", "=0-1", "bytes=\xff-\xfe", "bytes=\u00b2-\u00b3", ""]
_RANGE_UNSATISFIABLE = ["bytes=10-", "bytes=-0", "bytes=0-10", "bytes=-11", "bytes=10-20",
                        "bytes=99999999999999999999999-", "bytes=0-1,10-12", "bytes=0-0,-0"]
RANGE_CASES = [
    *[Case(f"range-ignored-{i}", headers=(("Range", value.encode("latin-1")),), expect=200,
           check=_full) for i, value in enumerate(_RANGE_IGNORED)],
    *[Case(f"range-unsatisfiable-{i}", headers=(("Range", value),), expect=416,
           fault="rangeNotSatisfiable", check=_unsatisfiable)
      for i, value in enumerate(_RANGE_UNSATISFIABLE)],
    Case("range-unsatisfiable-head", method="HEAD", headers=(("Range", "bytes=10-"),),
         expect=416),
    Case("range-if-range-junk", headers=(("Range", "bytes=0-1"), ("If-Range", "junk")),
         expect=200, check=_full),
]

HM = "/object-store/v1/{acc}/{c}/hm?format=json&hashmap=True"
_HASHMAPS = [
    ("not-json", b"nope"), ("empty-body", b""), ("json-list", b"[]"), ("json-string", b'"x"'),
    ("json-null", b"null"), ("bytes-missing", b'{"hashes": []}'),
    ("hashes-missing", b'{"bytes": 6}'), ("bytes-string", _hashmap("6", [H1])),
    ("bytes-float", _hashmap(6.5, [H1])), ("bytes-bool", _hashmap(True, [H1])),
    ("bytes-null", _hashmap(None, [])), ("bytes-negative", _hashmap(-1, [])),
    ("bytes-infinity", b'{"bytes": Infinity, "hashes": []}'),
    ("bytes-nan", b'{"bytes": NaN, "hashes": []}'),
    ("bytes-1e400", b'{"bytes": 1e400, "hashes": []}'),
    ("bytes-huge-int", b'{"bytes": 1' + b"0" * 5000 + b', "hashes": []}'),
    ("bytes-2**64", _hashmap(2 ** 64, [H1])),
    ("hashes-dict", _hashmap(6, {"a": 1})), ("hashes-string", _hashmap(6, H1)),
    ("hashes-ints", _hashmap(6, [1])), ("hashes-null-item", _hashmap(6, [None])),
    ("hash-not-hex", _hashmap(6, ["z" * 64])), ("hash-short", _hashmap(6, ["abc"])),
    ("hash-long", _hashmap(6, [H1 + "0"])), ("hash-newline", _hashmap(6, [H1 + "\n"])),
    ("hash-unicode-digits", _hashmap(6, ["\u0663" * 64])),
    ("count-too-many", _hashmap(6, [H1, H1])), ("count-zero", _hashmap(6, [])),
    ("count-too-few", _hashmap(BLOCK + 1, [H1])),
    ("empty-object-with-hash", _hashmap(0, [H1])),
    ("bad-utf8", b'{"bytes": 6, "hashes": ["\xff"]}'),
    ("lone-surrogate", b'{"bytes": 6, "hashes": ["\\ud800"]}'),
    ("deep-nesting", b"[" * 100000 + b"]" * 100000),
    ("huge-list-wrong-count", _hashmap(6, [H1] * 200000)),
]
HASHMAP_CASES = [
    *[Case(f"hashmap-{name}", method="PUT", path=HM, headers=TEXT, body=body,
           fault="badRequest") for name, body in _HASHMAPS],
    Case("hashmap-upper-case-hex-accepted", method="PUT", path=HM, headers=TEXT,
         body=_hashmap(6, [ABSENT.upper()]), expect=409, json_fault=False,
         check=_missing_absent),
    Case("hashmap-over-20mib-declared", method="PUT", path=HM, headers=TEXT + (
        ("Content-Length", str(20 * 1024 * 1024 + 1)),), length=False, expect=413,
        fault="requestEntityTooLarge"),
    Case("hashmap-over-20mib-chunked", raw=_chunked(HM, (b"%x\r\n" % (1 << 20) + b" " * (1 << 20)
                                                         + b"\r\n") * 21 + b"0\r\n\r\n"),
         expect=413, fault="requestEntityTooLarge"),
    Case("hashmap-missing-content-type", method="PUT", path=HM, body=_hashmap(6, [H1]),
         expect=411, fault="lengthRequired"),
]

BODY_CASES = [
    Case("body-block-post-over-block-size-is-cut", method="POST", path=CONT + "?update&format=json",
         headers=OCTET, body=b"\1" * BLOCK + b"tail", expect=202, check=_two_blocks),
    Case("body-plain-put-over-5gib-declared", method="PUT", path=OBJ + "2", headers=TEXT + (
        ("Content-Length", str(5 * 1024 ** 3 + 1)),), length=False, expect=413),
    Case("body-plain-put-shorter-than-declared",
         raw=_request_head("PUT", OBJ + "2", "Content-Type: text/plain",
                           "Content-Length: 100") + b"ab"),
    Case("body-data-put-without-length", method="PUT", path=OBJ + "2", headers=TEXT,
         expect=411, fault="lengthRequired"),
    Case("body-data-put-without-content-type", method="PUT", path=OBJ + "2", body=b"x",
         expect=411, fault="lengthRequired"),
    Case("body-etag-mismatch", method="PUT", path=OBJ + "2", headers=TEXT + (("ETag", "zz"),),
         body=b"x", expect=422, fault="unprocessableEntity"),
    Case("body-tokens-over-1mib", method="POST", path=TOKENS, headers=JSONCT,
         body=b" " * (2 << 20), token=None, expect=413),
    Case("body-catalogs-over-1mib", method="POST", path=CATALOGS, headers=JSONCT,
         body=b" " * (2 << 20), expect=413),
    Case("body-members-over-1mib", method="PUT", path=IMG + "/{img}/members", headers=JSONCT,
         body=b" " * (2 << 20), expect=413),
    Case("body-data-post-not-supported", method="POST", path=OBJ, headers=OCTET + (
        ("Content-Range", "bytes */*"),), body=b"x", expect=501, fault="notImplemented"),
]

_TOKEN_BODIES = [
    ("not-json", b"{"), ("list", b"[]"), ("string", b'"x"'), ("number", b"1"),
    ("auth-null", b'{"auth": null}'), ("auth-list", b'{"auth": []}'),
    ("token-int", b'{"auth": {"token": {"id": 1}}}'),
    ("token-list", b'{"auth": {"token": ["a"]}}'),
    ("token-empty", b'{"auth": {"token": {"id": ""}}}'),
    ("token-lone-surrogate", b'{"auth": {"token": {"id": "\\ud800"}}}'),
    ("password-not-string", b'{"auth": {"passwordCredentials": {"username": "u", '
                            b'"password": 5}}}'),
    ("deep-nesting", b"[" * 100000 + b"]" * 100000), ("bad-utf8", b'{"auth": "\xff"}'),
    ("nan", b'{"auth": NaN}'),
]
_CATALOG_BODIES = [
    ("not-json", b"{"), ("list", b"[]"), ("empty", b""), ("uuids-string", b'{"uuids": "x"}'),
    ("uuids-ints", b'{"uuids": [1]}'), ("names-nested", b'{"displaynames": [["a"]]}'),
    ("deep-nesting", b"[" * 100000 + b"]" * 100000),
    ("lone-surrogate", b'{"uuids": ["\\ud800"]}'), ("bad-utf8", b'{"uuids": ["\xff"]}'),
]
_MEMBER_BODIES = [
    ("not-json", b"{"), ("list", b"[]"), ("empty-object", b"{}"), ("empty", b""),
    ("memberships-string", b'{"memberships": "x"}'),
    ("member-int", b'{"memberships": [{"member_id": 1}]}'),
    ("member-empty", b'{"memberships": [{"member_id": ""}]}'),
    ("member-missing", b'{"memberships": [{}]}'),
    ("member-lone-surrogate", b'{"memberships": [{"member_id": "\\ud800"}]}'),
    ("member-nul", b'{"memberships": [{"member_id": "\\u0000"}]}'),
    ("deep-nesting", b"[" * 100000 + b"]" * 100000),
]
JSON_CASES = [
    *[Case(f"json-tokens-{name}", method="POST", path=TOKENS, headers=JSONCT, body=body,
           token=None, fault="badRequest") for name, body in _TOKEN_BODIES],
    Case("json-tokens-unknown-token", method="POST", path=TOKENS, headers=JSONCT,
         body=b'{"auth": {"token": {"id": "no-such-token"}}}', token=None, expect=401,
         fault="unauthorized"),
    Case("json-tokens-huge-token", method="POST", path=TOKENS, headers=JSONCT,
         body=b'{"auth": {"token": {"id": "%s"}}}' % (b"a" * 100000), token=None, expect=401),
    Case("json-tokens-nul-token", method="POST", path=TOKENS, headers=JSONCT,
         body=b'{"auth": {"token": {"id": "\\u0000"}}}', token=None, expect=401),
    Case("json-tokens-tenant-not-string", method="POST", path=TOKENS, headers=JSONCT,
         body=b'{"auth": {"token": {"id": "{tok}"}, "tenantName": [1]}}', token=None),
    *[Case(f"json-catalogs-{name}", method="POST", path=CATALOGS, headers=JSONCT, body=body,
           fault="badRequest") for name, body in _CATALOG_BODIES],
    *[Case(f"json-members-{name}", method="PUT", path=IMG + "/{img}/members", headers=JSONCT,
           body=body, fault="badRequest") for name, body in _MEMBER_BODIES],
]

TOKEN_CASES = [
    Case("token-absent", token=None, expect=401, fault="unauthorized"),
    Case("token-empty", token="", expect=401),
    Case("token-blank", token="   ", expect=401),
    Case("token-unknown", token="no-such-token-0123456789", expect=401),
    Case("token-huge", token="a" * 16000, expect=401),
    Case("token-over-header-limit", token="a" * 20000, expect=431),
    Case("token-utf8", token="t\u00f6k\u00e9n".encode(), expect=401),
    Case("token-latin1-byte", token=b"t\xf6k", expect=401),
    Case("token-with-tab", token=b"a\tb", expect=401),
    Case("token-valid-plus-garbage", token="{tok}x", expect=401),
    Case("token-query-bad-utf8", path=OBJ + "?X-Auth-Token=%FF%FE", token=None),
    Case("token-query-bad-escape", path=OBJ + "?X-Auth-Token=%ZZ", token=None, expect=401),
    Case("token-query-nul", path=OBJ + "?X-Auth-Token=%00", token=None, expect=401),
    Case("token-query-empty", path=OBJ + "?X-Auth-Token=", token=None, expect=401),
    Case("token-header-twice", raw=_request_head("GET", OBJ, "X-Auth-Token: bogus"),
         expect=401),
    Case("token-container-list", path=CONT + "?format=json", token=None, expect=401),
    Case("token-account", path=ACCT, token="bogus", expect=401),
    Case("token-catalogs", method="POST", path=CATALOGS, headers=JSONCT, body=b"{}",
         token="bogus", expect=401),
    Case("token-image-list", path=IMG + "/", token=None, expect=401),
    Case("token-image-register", method="POST", path=IMG + "/", token="", expect=401),
]

QUERY_CASES = [
    # Real Pithos ignores a limit it cannot use (default 10000): so does the service.
    *[Case(f"query-limit-{i}", path=CONT + "?format=json&limit=" + value, expect=200)
      for i, value in enumerate(["-1", "abc", "0", "", "1e3", "9" * 30, "%00"])],
    Case("query-marker-bad-utf8", path=CONT + "?marker=%FF"),
    Case("query-marker-nul", path=CONT + "?format=json&marker=%00", expect=200),
    Case("query-marker-huge", path=CONT + "?format=json&marker=" + "a" * 5000, expect=200),
    Case("query-prefix-nul", path=CONT + "?format=json&prefix=%00", expect=200),
    Case("query-delimiter-odd", path=CONT + "?format=json&delimiter=%00%00", expect=200),
    Case("query-format-bad-utf8", path=CONT + "?format=%FF"),
    Case("query-broken-escapes", path=CONT + "?%%%=&&&a=%", expect=(200, 204)),
    Case("query-until-junk", path=CONT + "?format=json&until=abc", expect=200),
    Case("query-account-limit-junk", path=ACCT + "?format=json&limit=-1", expect=200),
    *[Case(f"query-version-{name}", path=OBJ + "?version=" + value, expect=404,
           fault="itemNotFound")
      for name, value in [("abc", "abc"), ("negative", "-1"), ("huge", "9" * 30),
                          ("float", "1.5"), ("hex", "0x10"), ("nul", "%00"),
                          ("2**63", str(2 ** 63))]],
    Case("query-hashmap-version-abc", path=OBJ + "?hashmap&version=abc", expect=404),
    Case("query-image-sort-key", path=IMG + "/detail?sort_key=evil"),
    Case("query-image-sort-dir", path=IMG + "/detail?sort_dir=up"),
    Case("query-image-size-min-abc", path=IMG + "/detail?size_min=abc"),
    Case("query-image-size-min-superscript", path=IMG + "/detail?size_min=%C2%B2"),
    Case("query-image-size-max-huge", path=IMG + "/detail?size_max=" + "9" * 30, expect=200),
    Case("query-image-name-bad-utf8", path=IMG + "/detail?name=%FF"),
    Case("query-container-delete-until-huge", method="DELETE",
         path=CONT + "-nope?until=" + "9" * 30, expect=404),
]

_OBJ_HEADERS = [
    ("sharing-garbage", ("X-Object-Sharing", "garbage")),
    ("sharing-empty-list", ("X-Object-Sharing", "read=")),
    ("sharing-bad-utf8", ("X-Object-Sharing", "read=%FF")),
    ("sharing-nul", ("X-Object-Sharing", "read=a%00b")),
    ("public-garbage", ("X-Object-Public", "maybe")),
    ("meta-value-bad-utf8", ("X-Object-Meta-K", "%FF")),
    ("meta-name-bad-utf8", ("X-Object-Meta-%FF", "v")),
    ("meta-value-nul", ("X-Object-Meta-K", "a%00b")),
    ("meta-value-surrogate", ("X-Object-Meta-K", "%ED%A0%80")),
    ("meta-value-too-long", ("X-Object-Meta-K", "v" * 257)),
    ("meta-key-too-long", ("X-Object-Meta-" + "k" * 129, "v")),
    ("content-encoding-bad-utf8", ("Content-Encoding", "%FF")),
]
HEADER_CASES = [
    *[Case(f"header-put-{name}", method="PUT", path=OBJ + "3", headers=TEXT + (h,), body=b"x")
      for name, h in _OBJ_HEADERS],
    *[Case(f"header-post-{name}", method="POST", path=OBJ + "?update", headers=(h,))
      for name, h in _OBJ_HEADERS],
    Case("header-too-many-meta", method="PUT", path=OBJ + "3", headers=TEXT + tuple(
        (f"X-Object-Meta-K{i}", "v") for i in range(91)), body=b"x"),
    Case("header-if-modified-since-junk", headers=(("If-Modified-Since", "99 Foo 99999"),),
         expect=200, check=_full),
    Case("header-if-modified-since-year-99999",
         headers=(("If-Modified-Since", "Fri, 31 Dec 99999 23:59:59 GMT"),), expect=200),
    Case("header-if-unmodified-since-junk", headers=(("If-Unmodified-Since", "0"),),
         expect=200),
    Case("header-if-none-match-commas", headers=(("If-None-Match", ",,,"),), expect=200),
    Case("header-if-match-no-match", method="PUT", path=OBJ + "3", headers=TEXT + (
        ("If-Match", "nope"),), body=b"x", expect=412, fault="preconditionFailed"),
    Case("header-copy-from-no-slash", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "nonsense"), ("Content-Length", "0")), length=False),
    Case("header-copy-from-bad-utf8", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/%FF"), ("Content-Length", "0")), length=False),
    Case("header-copy-from-nul", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/a%00b"), ("Content-Length", "0")), length=False),
    Case("header-copy-from-missing", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/missing"), ("Content-Length", "0")), length=False, expect=404),
    Case("header-copy-from-too-long", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/" + "a" * 1025), ("Content-Length", "0")), length=False,
        expect=414),
    Case("header-copy-source-version-huge", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/y"), ("X-Source-Version", "9" * 30), ("Content-Length", "0")),
        length=False, expect=404),
    Case("header-copy-source-version-abc", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/y"), ("X-Source-Version", "abc"), ("Content-Length", "0")),
        length=False, expect=404),
    Case("header-copy-without-length", method="PUT", path=OBJ + "3", headers=(
        ("X-Copy-From", "/{c}/y"),), expect=411),
    Case("header-move-from-other-account", method="PUT", path=OBJ + "3", headers=(
        ("X-Move-From", "/pithos/y"), ("X-Source-Account", "someone-else"),
        ("Content-Length", "0")), length=False, expect=403),
    *[Case(f"header-container-{method.lower()}-{name}", method=method,
           path=CONT + "-h" + suffix,
           headers=(h,))
      for name, h in [("quota-abc", ("X-Container-Policy-Quota", "abc")),
                      ("quota-negative", ("X-Container-Policy-Quota", "-1")),
                      ("quota-superscript", ("X-Container-Policy-Quota", b"\xb2")),
                      ("quota-2**63", ("X-Container-Policy-Quota", str(2 ** 63))),
                      ("versioning-bad", ("X-Container-Policy-Versioning", "sometimes")),
                      ("meta-bad-utf8", ("X-Container-Meta-K", "%FF"))]
      for method, suffix in [("PUT", ""), ("POST", "?update")]],
    Case("header-container-name-257", method="PUT", path=ACCT + "/" + "c" * 257, expect=414),
    Case("header-container-name-nul", method="PUT", path=ACCT + "/c%00"),
    Case("header-account-group-bad-utf8", method="POST", path=ACCT + "?update",
         headers=(("X-Account-Group-g", "%FF"),)),
    Case("header-account-meta-surrogate", method="POST", path=ACCT + "?update",
         headers=(("X-Account-Meta-%ED%A0%80", "v"),)),
    Case("header-account-other-user", path="/object-store/v1/someone-else", expect=403),
    Case("header-account-bad-utf8", path="/object-store/v1/%FF"),
]

LOC = "pithos://{acc}/{c}/y"
_REGISTER = [
    ("no-name", [("X-Image-Meta-Location", LOC)]),
    ("no-location", [("X-Image-Meta-Name", "n")]),
    ("blank-name", [("X-Image-Meta-Name", "  "), ("X-Image-Meta-Location", LOC)]),
    ("location-garbage", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", "garbage")]),
    ("location-http", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", "http://x/y/z")]),
    ("location-bad-utf8", [("X-Image-Meta-Name", "n"),
                           ("X-Image-Meta-Location", "pithos://{acc}/{c}/%FF")]),
    ("size-superscript", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                          ("X-Image-Meta-Size", b"\xb2")]),
    ("size-huge", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                   ("X-Image-Meta-Size", "9" * 40)]),
    ("size-wrong", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                    ("X-Image-Meta-Size", "11")]),
    ("checksum-junk", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                       ("X-Image-Meta-Checksum", "junk")]),
    ("disk-format-unknown", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                             ("X-Image-Meta-Disk-Format", "qcow9")]),
    ("property-key-too-long", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                               ("X-Image-Meta-Property-" + "k" * 200, "v")]),
    ("property-value-too-long", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                                 ("X-Image-Meta-Property-K", "v" * 300)]),
    ("property-bad-utf8", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                           ("X-Image-Meta-Property-K", "%FF")]),
    ("property-nul", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                      ("X-Image-Meta-Property-K", "%00")]),
    ("too-many-properties", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                             *[(f"X-Image-Meta-Property-K{i}", "v") for i in range(40)]]),
    ("name-bad-utf8", [("X-Image-Meta-Name", "%FF"), ("X-Image-Meta-Location", LOC)]),
    ("name-nul", [("X-Image-Meta-Name", "a%00"), ("X-Image-Meta-Location", LOC)]),
    ("name-too-long", [("X-Image-Meta-Name", "n" * 5000), ("X-Image-Meta-Location", LOC)]),
    ("id-given", [("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", LOC),
                  ("X-Image-Meta-Id", "{img}")]),
]
IMAGE_CASES = [
    *[Case(f"image-register-{name}", method="POST", path=IMG + "/", headers=tuple(h),
           fault="badRequest") for name, h in _REGISTER],
    Case("image-register-missing-object", method="POST", path=IMG + "/", headers=(
        ("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", "pithos://{acc}/{c}/nope")),
        expect=404),
    Case("image-register-foreign-object", method="POST", path=IMG + "/", headers=(
        ("X-Image-Meta-Name", "n"), ("X-Image-Meta-Location", "pithos://someone/pithos/y")),
        expect=403),
    Case("image-update-location", method="PUT", path=IMG + "/{img}", headers=(
        ("X-Image-Meta-Location", "x"), ("Content-Length", "0")), length=False),
    Case("image-update-blank-name", method="PUT", path=IMG + "/{img}", headers=(
        ("X-Image-Meta-Name", ""), ("Content-Length", "0")), length=False),
    *[Case(f"image-id-{name}", method="HEAD", path=IMG + "/" + value, expect=expect)
      for name, value, expect in [("word", "nope", 400), ("zeros", "0" * 36, 400),
                                  ("long", "a" * 5000, 400), ("bad-utf8", "%FF", 400),
                                  ("dot-dot", "..%2F..", 400),
                                  ("unknown-uuid", "00000000-0000-0000-0000-000000000000",
                                   404)]],
    Case("image-members-bad-id", path=IMG + "/nope/members"),
    Case("image-member-bad-utf8", method="PUT", path=IMG + "/{img}/members/%FF",
         headers=(("Content-Length", "0"),), length=False),
    Case("image-member-star", method="PUT", path=IMG + "/{img}/members/*",
         headers=(("Content-Length", "0"),), length=False),
    Case("image-data-get", path=IMG + "/{img}", expect=501, fault="notImplemented"),
    Case("image-shared-bad-utf8", path="/image/v1.0/shared-images/%FF"),
]

CASES = [*HTTP_CASES, *RANGE_CASES, *HASHMAP_CASES, *BODY_CASES, *JSON_CASES, *TOKEN_CASES,
         *QUERY_CASES, *HEADER_CASES, *IMAGE_CASES]


# -- odd object names ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Name:
    id: str
    encoded: str        # as it appears in the path
    expect: int         # status of the PUT


NAMES = [
    Name("non-ascii", quote("\u00fcn\u00ef c\u00f8d\u00e9/\u30d5\u30a1\u30a4\u30eb"), 201),
    Name("greek", quote("\u03b5\u03b9\u03ba\u03cc\u03bd\u03b1.diskdump"), 201),
    Name("emoji", quote("\U0001f600.img"), 201),
    Name("component-255-bytes", quote("\u00e9" * 127 + "a"), 201),
    Name("component-256-bytes", quote("\u00e9" * 128), 201),
    Name("1024-chars", "a" * 1024, 201),
    Name("1024-two-byte-chars", quote("\u00e9" * 1024), 201),
    Name("1025-chars", "a" * 1025, 414),
    Name("1025-two-byte-chars", quote("\u00e9" * 1025), 414),
    Name("850-cjk-chars", quote("\u6587" * 850), 201),
    # Over gunicorn's 8190-byte request line once percent-encoded (docs/service.md).
    Name("1024-cjk-chars", quote("\u6587" * 1024), 414),
    Name("deep-path", "/".join(["d"] * 500), 201),
    Name("invalid-utf8", "a%C3%28", 400),
    Name("overlong-utf8", "a%C0%AFb", 400),
    Name("utf8-surrogate", "a%ED%A0%80b", 400),
    Name("lone-continuation-byte", "a%80b", 400),
    Name("truncated-utf8", "a%E2%82", 400),
    Name("nul", "a%00b", 400),
    Name("nul-only", "%00", 400),
    Name("newline", "a%0Ab", 201),
    Name("crlf", "a%0D%0Ab", 201),
    Name("tab", "a%09b", 201),
    Name("del", "a%7Fb", 201),
    Name("dot-dot", "../../escape", 201),
    Name("dot", "./x", 201),
    Name("only-dots", "..", 201),
    Name("double-slash-and-trailing", "a//b/", 201),
    Name("leading-slash", "/lead", 201),
    Name("meta-sidecar-look-alike", "image.diskdump.meta", 201),
    Name("meta-only", ".meta", 201),
    Name("version-look-alike", quote("image;version=3"), 201),
    Name("query-look-alike", quote("a?b=c&version=list"), 201),
    Name("hash-sign", quote("a#b"), 201),
    Name("literal-percent", quote("100%"), 201),
    Name("bad-escape-kept-literally", "a%ZZb", 201),
    Name("plus-sign", "a+b", 201),
    Name("spaces", quote("  spaced  out  "), 201),
]


# -- running ---------------------------------------------------------------------------------------

@dataclass
class Target:
    """Where the corpus runs: a user with a container, an object and an image."""

    base: str
    acc: str
    token: str
    c: str
    img: str

    def fill(self, text: str) -> str:
        return (text.replace("{acc}", self.acc).replace("{c}", self.c)
                .replace("{img}", self.img).replace("{tok}", self.token))

    def fill_bytes(self, data: bytes) -> bytes:
        return self.fill(data.decode("latin-1")).encode("latin-1")


def make_target(base: str, acc: str, token: str, container: str) -> Target:
    """Create the container, the object ``y`` and an image on it."""
    target = Target(base, acc, token, container, "")
    for method, path, headers, body in [
            ("PUT", CONT, (), None),
            ("PUT", OBJ, TEXT, HEALTH_DATA),
            ("POST", IMG + "/", (("X-Image-Meta-Name", "corpus"),
                                 ("X-Image-Meta-Location", LOC)), None)]:
        reply = send(target, Case("setup", method=method, path=path, headers=headers,
                                  body=body, expect=()))
        assert reply.status in (200, 201, 202), reply
    target.img = reply.headers["x-image-meta-id"]
    return target


def send(target: Target, case: Case) -> Reply:
    if case.raw is not None:
        data = target.fill_bytes(case.raw)
    else:
        lines = [f"{case.method} {target.fill(case.path)} HTTP/1.1".encode("latin-1"),
                 b"Host: 127.0.0.1"]
        if case.token is not None:
            token = case.token if isinstance(case.token, bytes) else \
                target.fill(case.token).encode("latin-1")
            lines.append(b"X-Auth-Token: " + token)
        for name, value in case.headers:
            if isinstance(value, str):
                value = target.fill(value).encode("latin-1")
            lines.append(name.encode("latin-1") + b": " + value)
        body = case.body
        if body and b"{tok}" in body:
            body = target.fill_bytes(body)
        if body is not None and case.length:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        lines += [b"Connection: close", b"", b""]
        data = b"\r\n".join(lines) + (body or b"")
    return exchange(target.base, data, head=case.method == "HEAD")


def run_case(target: Target, case: Case) -> Reply:
    """Send one case and check the reply: an expected status, a JSON fault for an error
    (HEAD replies have no body), an upper-case reason phrase; never a 5xx but those
    the case expects."""
    reply = send(target, case)
    expect = case.expect if isinstance(case.expect, tuple) else (case.expect,)
    assert reply.status in expect, (case.id, reply.status, reply.reason, reply.body[:300])
    assert reply.reason == reply.reason.upper(), (case.id, reply.reason)
    if reply.status >= 400 and case.method != "HEAD" and case.json_fault:
        key, _fault = reply.fault()
        if case.fault:
            assert key == case.fault, (case.id, key)
    if callable(case.check):
        case.check(reply)
    return reply


def still_serving(target: Target) -> None:
    """The object every case may touch reads back intact."""
    reply = send(target, Case("health", path=OBJ, expect=()))
    assert (reply.status, reply.body) == (200, HEALTH_DATA), reply


def run_name(target: Target, name: Name) -> None:
    """PUT an object under an odd name: refused with the expected 4xx, or stored, read back,
    listed under its exact name and deleted."""
    path = f"/object-store/v1/{target.acc}/{target.c}/{name.encoded}"
    data = f"data of {name.id}".encode()
    put = run_case(target, Case(name.id, method="PUT", path=path, headers=TEXT, body=data,
                                expect=name.expect))
    if put.status != 201:
        return
    got = run_case(target, Case(name.id, path=path, expect=200))
    assert got.body == data
    decoded = unquote(name.encoded, errors="strict")
    listing = run_case(target, Case(name.id, path=CONT + "?format=json", expect=200))
    assert decoded in [entry.get("name") for entry in json.loads(listing.body)], decoded
    run_case(target, Case(name.id, method="DELETE", path=path, expect=204))


# -- tests -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def target(service) -> Target:
    uuid, token = service.new_user()
    return make_target(service.base, uuid, token, "corpus")


def test_the_corpus_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES] + [name.id for name in NAMES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 250 and len(NAMES) >= 30, (len(CASES), len(NAMES))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_request(target, case):
    run_case(target, case)
    still_serving(target)


@pytest.mark.parametrize("name", NAMES, ids=[name.id for name in NAMES])
def test_odd_name(target, name):
    run_name(target, name)
    still_serving(target)

