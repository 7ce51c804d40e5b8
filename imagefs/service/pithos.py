"""Object-store (Pithos+) endpoints: account, container and object views (api.md §3).

Each level has one view that dispatches on the method; the storage engine
(``store``) does the semantics and the permission checks, this module does
the wire: query flags, header (de)coding, status codes, JSON shapes, Range
and the conditional headers.

Bodies are never held whole. A data PUT and a block POST hand the request
stream to ``store.put_blocks_stream``, which cuts it into 4 MiB blocks as it
arrives; a GET yields one stored block at a time. The hashmap upload is the
protocol kamaki and imagefs use: ``PUT ?hashmap`` answers 409 with the JSON
list of blocks the store lacks, the client POSTs those to the *container*
(``?update``, ``Content-Type: application/octet-stream`` exactly), and PUTs
the hashmap again.

Things that look odd and are deliberate (all from api.md):

- container HEAD answers 204 but object HEAD 200; a JSON listing answers 200
  with ``[]`` when empty, a text listing 204 (§3.4, §3.5, §10.1);
- a malformed ``Range`` is ignored (full 200), while a range reaching past the
  end is 416, not truncated as RFC 9110 would (real Pithos, §3.6.2);
- ``format=json`` on a data GET changes nothing (kamaki sends it always);
- without ``?update`` a POST *replaces* metadata, even on a block upload;
- every JSON object entry also carries ``x_object_meta`` ({key: value} of
  the user metadata), an extension kamaki ignores and the mount uses to get
  stored mtimes without a HEAD per file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterator

from imagefs import BLOCK_HASH, BLOCK_SIZE, errors
from imagefs.protocol import headers as wire
from imagefs.protocol import names
from imagefs.protocol.hashmap import EMPTY_HASH
from imagefs.service.app import (
    TEXT, LengthRequired, NotAllowed, NotImplementedHere, NotModified, Route,
    ServiceRequest, Unprocessable, json_reply, load_json, read_body, reply)

log = logging.getLogger(__name__)

ROOT = "/object-store/v1"
#: Real Pithos refuses a single plain PUT over 5 GiB.
MAX_UPLOAD = 5 * 1024 ** 3
#: A hashmap body: 1 TiB of blocks is ~17.8 MB of JSON, parsed into ~35 MB of strings; the
#: cap (objects up to ~1.2 TiB) bounds what one request can make a worker hold.
MAX_HASHMAP_BODY = 20 * 1024 ** 2
#: Serials, quotas and sizes are SQLite integers: larger numbers are refused before the query.
MAX_INT = 2 ** 63 - 1
MAX_LISTING = 10000
DIRECTORY_TYPES = ("application/directory", "application/folder")
OCTET_STREAM = "application/octet-stream"

#: Headers Pithos keeps as object metadata beside X-Object-Meta-*. They are stored in the
#: version's ``pithos`` domain under ``SYSTEM_META + name``; normalised user keys can never
#: look like that (they start each word with a capital after the "::"), so no clash.
SYSTEM_HEADERS = ("Content-Encoding", "Content-Disposition", "X-Object-Manifest")
SYSTEM_META = "::"
_REPLY_PREFIXES = ("X-Account-", "X-Container-", "X-Object-", "Content-")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX64_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")


# -- header coding -------------------------------------------------------------------------------

def _encode(headers: dict[str, str]) -> dict[str, str]:
    """Percent-encode reply headers as Pithos does (names and values of its own prefixes).
    Names keep no ``/``: a metadata key ``a/b`` must not make an invalid header name."""
    out = {}
    for name, value in headers.items():
        if name.startswith(_REPLY_PREFIXES):
            out[wire.quote(name, safe="")] = wire.quote_reply(str(value))
        else:
            out[name] = str(value)
    return out


def _header(request: ServiceRequest, name: str) -> str | None:
    """A request header, percent-decoded when it carries ``%`` (real Pithos decodes them all)."""
    value = request.headers.get(name)
    return None if value is None else wire.unquote(value)


def _meta(request: ServiceRequest, prefix: str, *, system: bool = False) -> dict[str, str]:
    """User metadata of the request (keys normalised, values decoded), limits checked."""
    meta = wire.meta_from_headers(prefix, request.all_headers())
    try:
        names.check_meta(meta)
    except errors.NameTooLong as exc:    # a long *key* is a bad request, as in Pithos
        raise errors.InvalidInput(str(exc)) from None
    if system:
        for name in SYSTEM_HEADERS:
            value = _header(request, name)
            if value is not None:
                meta[SYSTEM_META + name] = value
    return meta


def _user_meta(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if not k.startswith(SYSTEM_META)}


def _int_param(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _limit(request: ServiceRequest) -> int:
    limit = _int_param(request.query.get("limit"), MAX_LISTING)
    return limit if 0 < limit <= MAX_LISTING else MAX_LISTING


def _check_container(container: str) -> None:
    try:
        names.check_container_name(container)
    except errors.InvalidInput:
        raise errors.InvalidInput("Invalid container name") from None


def _public(request: ServiceRequest) -> bool | None:
    """X-Object-Public: None when absent, True for ``true``; ``false`` or empty unpublish."""
    value = request.headers.get("X-Object-Public")
    if value is None:
        return None
    value = value.replace(" ", "").lower()
    if value not in ("true", "false", ""):
        raise errors.InvalidInput("Bad X-Object-Public header value")
    return value == "true"


def _sharing(request: ServiceRequest) -> dict | None:
    value = _header(request, "X-Object-Sharing")
    return None if value is None else wire.parse_sharing(value)


def _listing_format(request: ServiceRequest) -> str:
    return "json" if request.query.get("format") == "json" else "text"


# -- conditional requests ------------------------------------------------------------------------

def _etags(value: str) -> list[str]:
    out = []
    for item in value.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        out.append(item.strip('"').lower())
    return out


def check_conditions(request: ServiceRequest, etag: str | None, mtime: float,
                     reply_headers: dict[str, str] | None = None) -> None:
    """If-Modified-Since / If-Unmodified-Since (1 s granularity), then If-Match /
    If-None-Match against the Merkle hash; 304 for reads, 412 otherwise."""
    read = request.method in ("GET", "HEAD")
    since = wire.parse_http_date(request.headers.get("If-Modified-Since"))
    if since is not None and int(mtime) <= since:
        raise _not_modified(reply_headers)
    since = wire.parse_http_date(request.headers.get("If-Unmodified-Since"))
    if since is not None and int(mtime) > since:
        raise errors.PreconditionFailed("Resource has been modified")
    match = request.headers.get("If-Match")
    if match is not None:
        tags = _etags(match)
        if etag is None or ("*" not in tags and etag.lower() not in tags):
            raise errors.PreconditionFailed("Resource ETag does not match")
    match = request.headers.get("If-None-Match")
    if match is not None and etag is not None:
        tags = _etags(match)
        if "*" in tags or etag.lower() in tags:
            if read:
                raise _not_modified(reply_headers)
            raise errors.PreconditionFailed("Resource ETag matches")


def _not_modified(reply_headers: dict[str, str] | None) -> NotModified:
    exc = NotModified("Resource has not been modified")
    keep = ("ETag", "Last-Modified", "X-Object-Version", "X-Object-Hash", "X-Object-UUID")
    exc.headers = {k: v for k, v in (reply_headers or {}).items() if k in keep}
    return exc


# -- ranges and data streaming -------------------------------------------------------------------

_RANGE = re.compile(r"^(\d*)-(\d*)$")


def parse_range(value: str | None, size: int) -> list[tuple[int, int]] | None:
    """(offset, length) pairs of a ``Range`` header, or None to ignore it (absent or
    malformed), exactly as Pithos parses it; bounds are checked by the caller."""
    if not value:
        return None
    value = value.replace(" ", "")
    if not value.startswith("bytes="):
        return None
    out = []
    for part in value[6:].split(","):
        m = _RANGE.match(part)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        first, last = m.group(1), m.group(2)
        if first:
            offset = int(first)
            if last:
                if offset > int(last):
                    return None
                out.append((offset, int(last) - offset + 1))
            else:
                out.append((offset, size - offset))
        else:
            length = int(last)
            out.append((size - length, length))
    return out


def iter_data(store, hashes: list[str], size: int, offset: int, length: int,
              block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield ``length`` bytes of an object from ``offset``, in pieces of its stored blocks.

    A stored block lacks its trailing NULs (they do not count in its hash);
    ``BlockStore.pieces`` pads it back to the block's logical length.
    """
    end = offset + length
    index = offset // block_size
    pos = offset
    while pos < end:
        start = index * block_size
        hi = min(block_size, size - start, end - start)
        yield from store.blocks.pieces(hashes[index], pos - start, hi)
        pos = start + hi
        index += 1


def _block_file(app, request: ServiceRequest, hashes: list[str], offset: int, length: int):
    """The block file itself, for the server to ``sendfile`` (``wsgi.file_wrapper``), when
    the range lies in one block stored with all its bytes (no NULs to add); else None.

    A ranged GET of one block is how the mount and ``Pithos.download`` read."""
    wrapper = request.environ.get("wsgi.file_wrapper")
    index = offset // BLOCK_SIZE
    if wrapper is None or not hashes or (offset + length - 1) // BLOCK_SIZE != index or \
            hashes[index] == EMPTY_HASH:
        return None
    f = app.store.blocks.open_block(hashes[index])
    lo = offset - index * BLOCK_SIZE
    try:
        if os.fstat(f.fileno()).st_size < lo + length:
            f.close()
            return None
        f.seek(lo)
    except BaseException:
        f.close()
        raise
    return wrapper(f, 1 << 20)


def _data_body(app, request: ServiceRequest, hashes: list[str], size: int, offset: int,
               length: int):
    """The body of a 200 or single-range 206: a block file to sendfile, or pieces."""
    if not hashes:
        return b""
    body = _block_file(app, request, hashes, offset, length)
    return iter_data(app.store, hashes, size, offset, length) if body is None else body


def serve_data(app, request: ServiceRequest, version, headers: dict[str, str]):
    """The data reply of an object GET/HEAD (or a public GET): 200, 206 or 416."""
    size = version.size
    ranges = parse_range(request.headers.get("Range"), size)
    if ranges is not None:
        for offset, length in ranges:
            if length <= 0 or length > size or offset < 0 or offset >= size or \
                    offset + length > size:
                exc = errors.RangeNotSatisfiable("Requested range exceeds object limits")
                exc.size = size
                raise exc
        if_range = request.headers.get("If-Range")
        if if_range:
            when = wire.parse_http_date(if_range)
            if when is not None:
                if int(when) != int(version.latest_mtime):
                    ranges = None
            elif if_range.strip('"').lower() != (version.hash or "").lower():
                ranges = None
    hashes = app.store.hashes_of(version) if size and request.method != "HEAD" else []
    if ranges is None:
        headers["Content-Length"] = str(size)
        body = _data_body(app, request, hashes, size, 0, size)
        return reply(200, body, headers=_encode(headers),
                     content_type=version.content_type or OCTET_STREAM)
    if len(ranges) == 1:
        offset, length = ranges[0]
        headers["Content-Length"] = str(length)
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
        body = _data_body(app, request, hashes, size, offset, length)
        return reply(206, body, headers=_encode(headers),
                     content_type=version.content_type or OCTET_STREAM)
    boundary = secrets.token_hex(16)
    ctype = version.content_type or OCTET_STREAM
    parts = []
    total = 0
    for offset, length in ranges:
        head = (f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                f"Content-Range: bytes {offset}-{offset + length - 1}/{size}\r\n\r\n").encode()
        parts.append((head, offset, length))
        total += len(head) + length + 2
    tail = f"--{boundary}--\r\n".encode()
    total += len(tail)
    headers["Content-Length"] = str(total)
    headers.pop("Content-Type", None)

    def multipart() -> Iterator[bytes]:
        for head, offset, length in parts:
            yield head
            if hashes:
                yield from iter_data(app.store, hashes, size, offset, length)
            yield b"\r\n"
        yield tail

    return reply(206, multipart() if request.method != "HEAD" else b"",
                 headers=_encode(headers),
                 content_type=f"multipart/byteranges; boundary={boundary}")


class _CountingReader:
    """The request body as a file object that counts (and optionally MD5s) what passes."""

    def __init__(self, stream, md5: bool) -> None:
        self._stream = stream
        self.count = 0
        self._md5 = hashlib.md5() if md5 else None

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.count += len(data)
        if self._md5 is not None and data:
            self._md5.update(data)
        return data

    def readinto(self, buf) -> int:
        readinto = getattr(self._stream, "readinto", None)
        if readinto is None:
            data = self.read(min(len(buf), 1 << 20))
            buf[: len(data)] = data
            return len(data)
        n = readinto(buf)   # under gunicorn: straight from the socket (server._BodyReader)
        self.count += n
        if self._md5 is not None and n:
            self._md5.update(memoryview(buf)[:n])
        return n

    @property
    def md5(self) -> str:
        return self._md5.hexdigest() if self._md5 else ""


# -- account ---------------------------------------------------------------------------------------

def _account_headers(info: dict) -> dict[str, str]:
    h = {
        "X-Account-Container-Count": str(info.get("containers", 0)),
        "X-Account-Bytes-Used": str(info.get("bytes", 0)),
        "X-Account-Policy-Quota": str(info.get("quota", 0)),
    }
    if info.get("mtime"):
        h["Last-Modified"] = wire.format_http_date(info["mtime"])
    for key, value in (info.get("meta") or {}).items():
        h[wire.ACCOUNT_META + key] = value
    for group, members in (info.get("groups") or {}).items():
        h[wire.ACCOUNT_GROUP + group] = ",".join(members) if not isinstance(members, str) \
            else members
    return h


def account(app, request: ServiceRequest, account: str):
    store, user = app.store, request.user
    method = request.method
    if method in ("HEAD", "GET"):
        info = store.account_info(account, user.uuid)
        headers = _account_headers(info)
        check_conditions(request, None, info.get("mtime") or 0, headers)
        if method == "HEAD":
            return reply(204, headers=_encode(headers))
        q = request.query
        if q.flag("public") and account != user.uuid:
            raise errors.Forbidden("Not allowed")
        containers = store.list_containers(
            account, user.uuid, marker=q.get("marker") or None, limit=_limit(request),
            shared=q.flag("shared"), public=q.flag("public"))
        if _listing_format(request) == "json":
            return json_reply([_container_entry(c) for c in containers],
                              headers=_encode(headers))
        if not containers:
            return reply(204, headers=_encode(headers))
        return reply(200, "".join(c.name + "\n" for c in containers),
                     headers=_encode(headers), content_type=TEXT)
    if method == "POST":
        meta = _meta(request, wire.ACCOUNT_META)
        groups = {}
        for name, value in request.all_headers():
            if name.lower().startswith(wire.ACCOUNT_GROUP.lower()) and \
                    len(name) > len(wire.ACCOUNT_GROUP):
                group = wire.unquote(name[len(wire.ACCOUNT_GROUP):]).lower()
                members = [m.strip() for m in wire.unquote(value).split(",") if m.strip()]
                groups[group] = members
        store.update_account(account, user.uuid, meta, groups,
                             not request.query.flag("update"))
        return reply(202)
    raise NotAllowed(("GET", "HEAD", "POST"))


def _container_entry(c) -> dict:
    return {
        "name": c.name, "count": c.count, "bytes": c.bytes_used,
        "last_modified": wire.format_iso_date(c.mtime),
        "x_container_policy": {"quota": str(c.quota), "versioning": c.versioning,
                               "project": c.account},
    }


# -- container -------------------------------------------------------------------------------------

def _container_headers(c) -> dict[str, str]:
    h = {
        "X-Container-Object-Count": str(c.count),
        "X-Container-Bytes-Used": str(c.bytes_used),
        "Last-Modified": wire.format_http_date(c.mtime),
        "X-Container-Block-Size": str(BLOCK_SIZE),
        "X-Container-Block-Hash": BLOCK_HASH,
        "X-Container-Object-Meta": "",
        "X-Container-Policy-Versioning": c.versioning,
        "X-Container-Policy-Quota": str(c.quota),
        "X-Container-Policy-Project": c.account,
    }
    for key, value in (c.meta or {}).items():
        h[wire.CONTAINER_META + key] = value
    return h


def _policy(request: ServiceRequest) -> dict | None:
    """Policy headers of the request (None when none is present); values validated."""
    policy = {}
    versioning = request.headers.get("X-Container-Policy-Versioning")
    if versioning is not None:
        versioning = versioning.strip().lower()
        if versioning not in ("auto", "none", ""):
            raise errors.InvalidInput("Invalid versioning policy")
        policy["versioning"] = versioning
    quota = request.headers.get("X-Container-Policy-Quota")
    if quota is not None:
        quota = quota.strip()
        if quota and not (quota.isascii() and quota.isdigit() and int(quota) <= MAX_INT):
            raise errors.InvalidInput("Invalid quota policy")
        policy["quota"] = quota
    project = request.headers.get("X-Container-Policy-Project")
    if project is not None:
        policy["project"] = project.strip()
    return policy or None


def container(app, request: ServiceRequest, account: str, container: str):
    _check_container(container)
    store, user = app.store, request.user
    method = request.method
    q = request.query
    if method in ("HEAD", "GET"):
        c = store.get_container(account, container, user.uuid)
        headers = _container_headers(c)
        check_conditions(request, None, c.mtime, headers)
        if method == "HEAD":
            return reply(204, headers=_encode(headers))
        if q.flag("public") and account != user.uuid:
            raise errors.Forbidden("Not allowed")
        prefix = (q.get("prefix") or "").lstrip("/")
        delimiter = q.get("delimiter") or None
        path = q.get("path")
        items = store.list_objects(
            account, container, user.uuid, prefix=prefix, delimiter=delimiter,
            marker=q.get("marker") or None, limit=_limit(request),
            path=path if path is not None else None,
            shared=q.flag("shared"), public=q.flag("public"))
        if _listing_format(request) == "json":
            base = app.base_url(request)
            body = [{"subdir": i} if isinstance(i, str) else
                    object_entry(i, user.uuid, base) for i in items]
            return json_reply(body, headers=_encode(headers))
        if not items:
            return reply(204, headers=_encode(headers))
        return reply(200, "".join((i if isinstance(i, str) else i.name) + "\n" for i in items),
                     headers=_encode(headers), content_type=TEXT)
    if method == "PUT":
        created = store.create_container(account, container, user.uuid,
                                         policy=_policy(request),
                                         meta=_meta(request, wire.CONTAINER_META) or None)
        return reply(201 if created else 202)
    if method == "POST":
        return _container_post(app, request, account, container)
    if method == "DELETE":
        delimiter = q.get("delimiter")
        until = q.get("until")
        if until is not None and until.isdigit():
            # History purge is not implemented: the container stays, as real Pithos keeps it.
            store.get_container(account, container, user.uuid)
            return reply(204)
        if delimiter:
            store.delete_container_objects(account, container, user.uuid)
        else:
            store.delete_container(account, container, user.uuid)
        return reply(204)
    raise NotAllowed(("DELETE", "GET", "HEAD", "POST", "PUT"))


def _container_post(app, request: ServiceRequest, account: str, container: str):
    """Metadata/policy update and/or block upload (api.md §3.5 POST)."""
    store, user = app.store, request.user
    replace = not request.query.flag("update")
    policy = _policy(request)
    meta = _meta(request, wire.CONTAINER_META)
    if policy or meta or replace:
        store.update_container(account, container, user.uuid, policy=policy,
                               meta=meta, replace=replace)
    # Exactly application/octet-stream: with a charset parameter nothing is stored (real Pithos).
    ctype = request.environ.get("CONTENT_TYPE", "")
    if ctype != OCTET_STREAM or not request.has_body():
        return reply(202)
    if account != user.uuid:
        raise errors.Forbidden("Only the owner may upload blocks to a container")
    store.get_container(account, container, user.uuid)
    length = None if request.is_chunked else request.content_length
    hashes = store.put_blocks_stream(_CountingReader(request.stream, md5=False), length,
                                     BLOCK_SIZE)
    fmt = request.query.get("format")
    if fmt in (None, "", "json", "xml"):
        return json_reply(hashes, status=202)
    return reply(202, "".join(h + "\n" for h in hashes), content_type=TEXT)


# -- object ------------------------------------------------------------------------------------------

def public_url(base: str, public_id: str) -> str:
    return f"{base}/public/{public_id}"


def object_headers(version, requester: str, base: str, *, versioned: bool) -> dict[str, str]:
    """Reply headers of an object HEAD/GET (api.md §3.6.1), not yet percent-encoded."""
    v = version
    h = {
        "ETag": v.hash,
        "Content-Type": v.content_type,
        "Last-Modified": wire.format_http_date(v.latest_mtime or v.mtime),
        "X-Object-Hash": v.hash,
        "X-Object-UUID": v.uuid,
        "X-Object-Version": str(v.serial),
        "X-Object-Version-Timestamp": wire.format_http_date(v.mtime),
        "X-Object-Modified-By": v.modified_by,
    }
    for key, value in (v.meta or {}).items():
        if key.startswith(SYSTEM_META):
            h[key[len(SYSTEM_META):]] = value
        else:
            h[wire.OBJECT_META + key] = value
    if not versioned:
        if v.sharing:
            h["X-Object-Sharing"] = wire.format_sharing(v.sharing)
        if v.shared_by:
            h["X-Object-Shared-By"] = v.shared_by
        if v.public_id and requester == v.account:
            h["X-Object-Public"] = public_url(base, v.public_id)
    if v.allowed_to:
        h["X-Object-Allowed-To"] = v.allowed_to
    return h


def object_entry(v, requester: str, base: str) -> dict:
    """One object of a JSON listing, plus the ``x_object_meta`` extension."""
    entry = {
        "name": v.name,
        "bytes": v.size,
        "content_type": v.content_type,
        "hash": v.checksum or "",
        "x_object_hash": v.hash,
        "x_object_uuid": v.uuid,
        "x_object_version": v.serial,
        "x_object_version_timestamp": wire.format_timestamp(v.mtime),
        "last_modified": wire.format_iso_date(v.mtime),
        "x_object_modified_by": v.modified_by,
        "available": 1,
        "map_check_timestamp": None,
        "x_object_meta": _user_meta(v.meta or {}),
    }
    if v.sharing and not v.shared_by:
        entry["x_object_sharing"] = wire.format_sharing(v.sharing)
    if v.shared_by:
        entry["x_object_shared_by"] = v.shared_by
    if v.allowed_to:
        entry["x_object_allowed_to"] = v.allowed_to
    if v.public_id and requester == v.account:
        entry["x_object_public"] = public_url(base, v.public_id)
    return entry


def _version_param(request: ServiceRequest) -> int | None:
    value = request.query.get("version")
    if value in (None, ""):
        return None
    return _serial(value, "Version does not exist")


def _serial(value: str, message: str) -> int:
    """A version serial from the wire; anything that cannot be one is a 404."""
    try:
        serial = int(value)
    except ValueError:
        raise errors.NotFound(message) from None
    if not 0 <= serial <= MAX_INT:
        raise errors.NotFound(message)
    return serial


def obj(app, request: ServiceRequest, account: str, container: str, name: str):
    _check_container(container)
    names.check_object_name(name)
    method = request.method
    if method in ("GET", "HEAD"):
        return _object_get(app, request, account, container, name)
    if method == "PUT":
        return _object_put(app, request, account, container, name)
    if method == "POST":
        return _object_post(app, request, account, container, name)
    if method == "DELETE":
        delimiter = request.query.get("delimiter") or None
        app.store.delete_object(account, container, name, request.user.uuid,
                                delimiter=delimiter)
        return reply(204)
    raise NotAllowed(("DELETE", "GET", "HEAD", "POST", "PUT"))


def _object_get(app, request: ServiceRequest, account: str, container: str, name: str):
    store, user = app.store, request.user
    if request.query.get("version") == "list":
        versions = store.list_versions(account, container, name, user.uuid)
        return json_reply({"versions": [[serial, wire.format_timestamp(ts)]
                                        for serial, ts in versions]})
    version_no = _version_param(request)
    v = store.get_version(account, container, name, user.uuid, version=version_no)
    headers = object_headers(v, user.uuid, app.base_url(request),
                             versioned=version_no is not None)
    check_conditions(request, v.hash, v.latest_mtime or v.mtime, headers)
    if request.query.flag("hashmap"):
        hashes = store.hashes_of(v)
        del headers["Content-Type"]
        body = {"block_hash": BLOCK_HASH, "block_size": BLOCK_SIZE, "bytes": v.size,
                "hashes": hashes}
        return json_reply(body, headers=_encode(headers))
    return serve_data(app, request, v, headers)


def _split_source(value: str, header: str) -> tuple[str, str]:
    """``/container/object`` of X-Copy-From / X-Move-From (400 unless both parts are there)."""
    if not value.startswith("/"):
        raise errors.InvalidInput(f"Invalid {header} header")
    container, sep, name = value[1:].partition("/")
    if not container or not sep or not name:
        raise errors.InvalidInput(f"Invalid {header} header")
    return container, name


def _content_length_given(request: ServiceRequest) -> bool:
    return request.is_chunked or request.environ.get("CONTENT_LENGTH", "") != ""


def _object_put(app, request: ServiceRequest, account: str, container: str, name: str):
    store, user = app.store, request.user
    q = request.query
    copy_from = _header(request, "X-Copy-From")
    move_from = _header(request, "X-Move-From")
    if copy_from is not None or move_from is not None:
        return _copy_or_move(app, request, account, container, name, copy_from, move_from)
    ctype = request.environ.get("CONTENT_TYPE")
    if not ctype:
        raise LengthRequired("Missing Content-Type header")
    meta = _meta(request, wire.OBJECT_META, system=True)
    common = dict(content_type=ctype, meta=meta, sharing=_sharing(request),
                  public=_public(request), if_match=request.headers.get("If-Match"),
                  if_none_match=request.headers.get("If-None-Match"))
    if q.flag("hashmap"):
        size, hashes = _read_hashmap(request)
        try:
            v = store.put_object(account, container, name, user.uuid, size=size,
                                 hashes=hashes, **common)
        except errors.Conflict as exc:
            if getattr(exc, "hashes", None) is None:
                raise
            # The protocol's 409: the body is the bare list of missing block hashes.
            return json_reply(list(exc.hashes), status=409)
        return reply(201, headers=_encode({"ETag": v.hash, "X-Object-Version": str(v.serial)}))
    if not _content_length_given(request):
        raise LengthRequired("Missing or invalid Content-Length header")
    length = None if request.is_chunked else request.content_length
    if length is None and not request.is_chunked:
        raise LengthRequired("Missing or invalid Content-Length header")
    if length is not None and length > MAX_UPLOAD:
        raise errors.QuotaExceeded("Upload over the 5 GiB limit of a single PUT")
    etag = request.headers.get("ETag")
    reader = _CountingReader(request.stream, md5=etag is not None)
    hashes = store.put_blocks_stream(reader, length, BLOCK_SIZE) if (length or length is None) \
        else []
    size = reader.count
    if length is not None and size != length:
        raise errors.InvalidInput("Request body shorter than Content-Length")
    if size > MAX_UPLOAD:
        raise errors.QuotaExceeded("Upload over the 5 GiB limit of a single PUT")
    if size == 0:
        hashes = [EMPTY_HASH]
    checksum = ""
    if etag is not None:
        checksum = reader.md5
        if etag.strip('"').lower() != checksum:
            raise Unprocessable("Object ETag does not match")
    v = store.put_object(account, container, name, user.uuid, size=size, hashes=hashes,
                         checksum=checksum, **common)
    return reply(201, headers=_encode({"ETag": v.hash, "X-Object-Version": str(v.serial)}))


def _read_hashmap(request: ServiceRequest) -> tuple[int, list[str]]:
    """(bytes, hashes) of a hashmap PUT body; 400 "Invalid data formatting" if malformed.

    ``bytes`` must be a JSON integer and every hash a string of 64 hex digits;
    the body is capped (413) so a huge list cannot exhaust a worker.
    """
    try:
        raw = read_body(request, MAX_HASHMAP_BODY)
    except errors.QuotaExceeded:
        raise errors.QuotaExceeded("Hashmap too large") from None
    try:
        data = load_json(raw, check_text=False)   # every string is checked as hex below
    except errors.InvalidInput:
        raise errors.InvalidInput("Invalid data formatting") from None
    size = data.get("bytes") if isinstance(data, dict) else None
    hashes = data.get("hashes") if isinstance(data, dict) else None
    if type(size) is not int or not 0 <= size <= MAX_INT or not isinstance(hashes, list):
        raise errors.InvalidInput("Invalid data formatting")
    for i, h in enumerate(hashes):
        if not isinstance(h, str) or not _HEX64_ANY_CASE.fullmatch(h):
            raise errors.InvalidInput("Invalid data formatting: bad block hash")
        if not _HEX64.fullmatch(h):
            hashes[i] = h.lower()
    if size == 0:
        if hashes not in ([], [EMPTY_HASH]):
            raise errors.InvalidInput("Invalid data formatting: hashes for an empty object")
        return 0, [EMPTY_HASH]
    if len(hashes) != -(-size // BLOCK_SIZE):
        raise errors.InvalidInput("Invalid data formatting: size and hashes disagree")
    return size, hashes


def _copy_or_move(app, request: ServiceRequest, account: str, container: str, name: str,
                  copy_from: str | None, move_from: str | None):
    store, user, q = app.store, request.user, request.query
    if not _content_length_given(request):
        raise LengthRequired("Missing Content-Length header")
    header = "X-Move-From" if move_from is not None else "X-Copy-From"
    src_container, src_name = _split_source(move_from if move_from is not None else copy_from,
                                            header)
    names.check_object_name(src_name)
    src_account = _header(request, "X-Source-Account") or user.uuid
    content_type = None if q.flag("ignore_content_type") else \
        (request.environ.get("CONTENT_TYPE") or None)
    kwargs = dict(meta_update=_meta(request, wire.OBJECT_META, system=True),
                  content_type=content_type, sharing=_sharing(request),
                  public=_public(request), delimiter=q.get("delimiter") or None)
    if move_from is not None:
        v = store.move_object(src_account, src_container, src_name, account, container, name,
                              user.uuid, **kwargs)
    else:
        src_version = request.headers.get("X-Source-Version")
        src_version = _serial(src_version, "Source version does not exist") \
            if src_version not in (None, "") else None
        v = store.copy_object(src_account, src_container, src_name, account, container, name,
                              user.uuid, src_version=src_version, **kwargs)
    return reply(201, headers=_encode({"ETag": v.hash, "X-Object-Version": str(v.serial)}))


def _object_post(app, request: ServiceRequest, account: str, container: str, name: str):
    store, user = app.store, request.user
    ctype = request.environ.get("CONTENT_TYPE", "")
    if ctype == OCTET_STREAM or request.headers.get("X-Source-Object") is not None:
        raise NotImplementedHere("Data updates through POST are not supported")
    if request.headers.get("If-Match") is not None or \
            request.headers.get("If-None-Match") is not None:
        current = store.get_version(account, container, name, user.uuid)
        check_conditions(request, current.hash, current.latest_mtime or current.mtime)
    sharing = _sharing(request)
    public = _public(request)
    meta = _meta(request, wire.OBJECT_META, system=True)
    replace = not request.query.flag("update")
    if sharing is not None:
        store.set_sharing(account, container, name, user.uuid, sharing)
    if public is not None:
        store.set_public(account, container, name, user.uuid, public)
    version = None
    if meta or replace:
        version = store.update_object_meta(account, container, name, user.uuid, meta=meta,
                                           replace=replace)
    elif sharing is None and public is None:
        store.get_version(account, container, name, user.uuid)   # 404 for a missing object
    headers = {}
    if version is not None:
        headers = {"ETag": version.hash, "X-Object-Version": str(version.serial)}
    return reply(202, headers=_encode(headers))


ROUTES = [
    Route(ROOT + "/<account>", account, ("GET", "HEAD", "POST", "PUT", "DELETE")),
    Route(ROOT + "/<account>/", account, ("GET", "HEAD", "POST", "PUT", "DELETE")),
    Route(ROOT + "/<account>/<container>", container,
          ("GET", "HEAD", "POST", "PUT", "DELETE")),
    Route(ROOT + "/<account>/<container>/", container,
          ("GET", "HEAD", "POST", "PUT", "DELETE")),
    Route(ROOT + "/<account>/<container>/<object:name>", obj,
          ("GET", "HEAD", "POST", "PUT", "DELETE")),
]

__all__ = ["ROUTES", "serve_data", "check_conditions", "parse_range", "iter_data",
           "object_headers", "object_entry"]
