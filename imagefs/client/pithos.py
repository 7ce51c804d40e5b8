"""Pithos+ object store client for one account (api.md §3).

Owns the account/container/object calls and the hashmap upload protocol;
returns the plain values of ``models``. It never buffers a whole object:
reads are ranged and streamed from ``resp.raw``, uploads send one block per
request, downloads write while they receive. Names and metadata are quoted
as kamaki quotes them and unquoted on the way back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import requests

from imagefs import BLOCK_HASH, BLOCK_SIZE, errors
from imagefs.client.http import Http, finish, raise_for_status
from imagefs.client.models import (
    AccountInfo, ContainerInfo, Hashmap, ObjectInfo, PutResult, Subdir)
from imagefs.protocol import headers as H
from imagefs.protocol.hashmap import EMPTY_HASH, block_hash, top_hash
from imagefs.protocol.names import check_container_name, check_object_name

log = logging.getLogger(__name__)

#: The service's cap on one listing page.
PAGE_LIMIT = 10000
OCTET_STREAM = "application/octet-stream"
DIRECTORY_TYPE = "application/directory"
#: Download/read pieces: big enough for few syscalls, small enough for bounded memory.
_CHUNK = 1 << 20


def _int(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _json(resp: requests.Response, what: str):
    try:
        return json.loads(resp.content or b"null")
    except ValueError as exc:
        raise errors.InvalidInput(f"{what}: malformed JSON reply") from exc


def object_info_from_headers(name: str, headers) -> ObjectInfo:
    """ObjectInfo of a HEAD/GET reply (names and values unquoted)."""
    get = headers.get
    mtime = H.parse_http_date(get("Last-Modified")) or 0.0
    version_mtime = H.parse_http_date(H.unquote(get("X-Object-Version-Timestamp") or "")) or mtime
    return ObjectInfo(
        name=name,
        size=_int(get("Content-Length")),
        content_type=H.unquote(get("Content-Type") or ""),
        hash=H.unquote(get("X-Object-Hash") or get("ETag") or "").strip('"'),
        uuid=H.unquote(get("X-Object-UUID") or ""),
        version=_int(get("X-Object-Version")),
        mtime=mtime,
        version_mtime=version_mtime,
        modified_by=H.unquote(get("X-Object-Modified-By") or ""),
        meta=H.meta_from_headers(H.OBJECT_META, headers),
        sharing=H.unquote(get("X-Object-Sharing") or ""),
        public_url=H.unquote(get("X-Object-Public") or ""),
    )


def object_info_from_json(entry: dict) -> ObjectInfo:
    """ObjectInfo of one JSON listing entry; ``meta`` only if the service included it."""
    raw_meta = entry.get("x_object_meta")
    meta = None
    if isinstance(raw_meta, dict):
        meta = {H.normalize_meta_key(str(k)): str(v) for k, v in raw_meta.items()}
    version_mtime = H.parse_timestamp(entry.get("x_object_version_timestamp"))
    mtime = H.parse_iso_date(entry.get("last_modified"))
    if mtime is None:
        mtime = version_mtime or 0.0
    return ObjectInfo(
        name=str(entry["name"]),
        size=_int(entry.get("bytes")),
        content_type=str(entry.get("content_type") or ""),
        hash=str(entry.get("x_object_hash") or ""),
        uuid=str(entry.get("x_object_uuid") or ""),
        version=_int(entry.get("x_object_version")),
        mtime=mtime,
        version_mtime=version_mtime if version_mtime is not None else mtime,
        modified_by=str(entry.get("x_object_modified_by") or ""),
        meta=meta,
        sharing=str(entry.get("x_object_sharing") or ""),
        public_url=str(entry.get("x_object_public") or ""),
    )


class Pithos:
    """The object store of one account, as seen by the token of ``http``."""

    def __init__(self, http: Http, url: str, account: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.account = account
        self._block_params: dict[str, tuple[int, str]] = {}
        self._block_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        #: Entries asked per listing request (the service caps it at 10000).
        self.page_size = PAGE_LIMIT

    def close(self) -> None:
        """Stop the upload threads (a later upload starts new ones)."""
        with self._block_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        """Upload threads, kept between uploads so their HTTP sessions are re-used."""
        with self._block_lock:
            if self._pool is None or self._pool._max_workers < workers:
                old, self._pool = self._pool, ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="pithos-upload")
                if old is not None:
                    old.shutdown(wait=False)
            return self._pool

    # -- URLs ------------------------------------------------------------------------------

    def account_url(self) -> str:
        return f"{self.url}/{H.quote(self.account)}"

    def container_url(self, container: str) -> str:
        check_container_name(container)
        return f"{self.account_url()}/{H.quote(container)}"

    def object_url(self, container: str, name: str) -> str:
        check_object_name(name)
        return f"{self.container_url(container)}/{H.quote(name)}"

    # -- account ---------------------------------------------------------------------------

    def account_info(self) -> AccountInfo:
        resp = self.http.request("HEAD", self.account_url(), expected=(204, 200))
        get = resp.headers.get
        return AccountInfo(
            containers=_int(get("X-Account-Container-Count")),
            bytes_used=_int(get("X-Account-Bytes-Used")),
            quota=_int(get("X-Account-Policy-Quota")),
            meta=H.meta_from_headers(H.ACCOUNT_META, resp.headers),
        )

    def list_containers(self) -> list[ContainerInfo]:
        out: list[ContainerInfo] = []
        marker = None
        while True:
            params: dict[str, object] = {"format": "json", "limit": self.page_size}
            if marker is not None:
                params["marker"] = marker
            resp = self.http.request("GET", self.account_url(), expected=(200, 204),
                                     params=params)
            page = _json(resp, "container list") if resp.status_code == 200 else []
            for entry in page or []:
                policy = entry.get("x_container_policy") or {}
                out.append(ContainerInfo(
                    name=str(entry["name"]),
                    count=_int(entry.get("count")),
                    bytes_used=_int(entry.get("bytes")),
                    versioning=str(policy.get("versioning") or "auto"),
                    quota=_int(policy.get("quota")),
                    mtime=H.parse_iso_date(entry.get("last_modified")) or 0.0,
                ))
            if not page or len(page) < self.page_size:
                return out
            marker = out[-1].name

    # -- containers ------------------------------------------------------------------------

    def container_info(self, container: str) -> ContainerInfo:
        resp = self.http.request("HEAD", self.container_url(container), expected=(204, 200))
        get = resp.headers.get
        info = ContainerInfo(
            name=container,
            count=_int(get("X-Container-Object-Count")),
            bytes_used=_int(get("X-Container-Bytes-Used")),
            block_size=_int(get("X-Container-Block-Size"), BLOCK_SIZE) or BLOCK_SIZE,
            block_hash=(get("X-Container-Block-Hash") or BLOCK_HASH).lower(),
            versioning=(get("X-Container-Policy-Versioning") or "auto").lower(),
            quota=_int(get("X-Container-Policy-Quota")),
            mtime=H.parse_http_date(get("Last-Modified")) or 0.0,
            meta=H.meta_from_headers(H.CONTAINER_META, resp.headers),
        )
        with self._block_lock:
            self._block_params[container] = (info.block_size, info.block_hash)
        return info

    def block_params(self, container: str) -> tuple[int, str]:
        """(block size, hash algorithm) of ``container``, asked once and remembered."""
        with self._block_lock:
            params = self._block_params.get(container)
        if params is None:
            info = self.container_info(container)
            params = (info.block_size, info.block_hash)
        return params

    def create_container(self, container: str, *, versioning: str | None = None) -> bool:
        """Create ``container``; False if it existed (its policy is then updated). An
        "exists" answered to a retry after a lost answer is our own first attempt's
        doing (``errors.after_lost_reply``): True."""
        headers = {}
        if versioning is not None:
            headers["X-Container-Policy-Versioning"] = versioning
        resp = self.http.request("PUT", self.container_url(container), expected=(201, 202),
                                 headers=headers)
        return resp.status_code == 201 or errors.after_lost_reply(resp)

    def delete_container(self, container: str) -> None:
        """Delete an empty container (ContainerNotEmpty otherwise)."""
        try:
            self.http.request("DELETE", self.container_url(container), expected=(204,))
        except errors.ContainerNotEmpty:
            raise
        except errors.Conflict as exc:
            raise errors.ContainerNotEmpty(str(exc), detail=exc.detail) from exc
        with self._block_lock:
            self._block_params.pop(container, None)

    def set_versioning(self, container: str, versioning: str) -> None:
        if versioning not in ("auto", "none"):
            raise errors.InvalidInput(f"versioning must be auto or none, not {versioning!r}")
        self.http.request("POST", self.container_url(container), expected=(202, 204),
                          params={"update": None, "format": "json"},
                          headers={"X-Container-Policy-Versioning": versioning})

    # -- listing ---------------------------------------------------------------------------

    def list_objects(self, container: str, *, prefix: str = "", delimiter: str | None = None,
                     marker: str | None = None, limit: int | None = None,
                     path: str | None = None) -> Iterator[ObjectInfo | Subdir]:
        """Objects (and, with a delimiter, pseudo-directories) in name order.

        Pages with ``marker`` while a page comes back full; ``limit`` caps the
        total. A pseudo-directory repeated at a page boundary is given once.
        """
        url = self.container_url(container)
        remaining = limit
        last_subdir = None
        while remaining is None or remaining > 0:
            page_limit = self.page_size if remaining is None else min(self.page_size, remaining)
            params: dict[str, object] = {"format": "json", "limit": page_limit}
            if path is not None:
                params["path"] = path
            else:
                if prefix:
                    params["prefix"] = prefix
                if delimiter:
                    params["delimiter"] = delimiter
            if marker is not None:
                params["marker"] = marker
            resp = self.http.request("GET", url, expected=(200, 204), params=params)
            page = _json(resp, "object list") if resp.status_code == 200 else []
            if not isinstance(page, list):
                raise errors.InvalidInput(f"{container}: object list is not a JSON array")
            for entry in page:
                if "subdir" in entry:
                    sub = str(entry["subdir"])
                    marker = sub
                    if sub == last_subdir:
                        continue
                    last_subdir = sub
                    name = sub[: -len(delimiter)] if delimiter and sub.endswith(delimiter) \
                        else sub.rstrip("/")
                    item: ObjectInfo | Subdir = Subdir(name)
                else:
                    item = object_info_from_json(entry)
                    marker = item.name
                yield item
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return
            if len(page) < page_limit:
                return

    # -- objects: metadata -----------------------------------------------------------------

    def head(self, container: str, name: str, *, version: int | None = None) -> ObjectInfo:
        params = {"version": version} if version is not None else None
        resp = self.http.request("HEAD", self.object_url(container, name), expected=(200,),
                                 params=params)
        return object_info_from_headers(name, resp.headers)

    def update_meta(self, container: str, name: str, meta: dict[str, str]) -> None:
        """Merge user metadata (``?update``); an empty value deletes the key."""
        if not meta:
            return
        self.http.request("POST", self.object_url(container, name), expected=(202, 204),
                          params={"update": None, "format": "json"},
                          headers=H.meta_headers(H.OBJECT_META, meta))

    def set_public(self, container: str, name: str, public: bool) -> str:
        """Publish or unpublish; the public URL ("" when unpublished)."""
        self.http.request("POST", self.object_url(container, name), expected=(202, 204),
                          params={"update": None, "format": "json"},
                          headers={"X-Object-Public": "True" if public else "False"})
        if not public:
            return ""
        return self.head(container, name).public_url

    def set_sharing(self, container: str, name: str, sharing: str) -> None:
        """Replace the permissions (``read=a,b; write=c``); "" removes them all."""
        self.http.request("POST", self.object_url(container, name), expected=(202, 204),
                          params={"update": None, "format": "json"},
                          headers={"X-Object-Sharing": sharing})

    def list_versions(self, container: str, name: str) -> list[tuple[int, float]]:
        resp = self.http.request("GET", self.object_url(container, name), expected=(200,),
                                 params={"format": "json", "version": "list"})
        doc = _json(resp, "version list")
        try:
            return [(int(serial), float(ts)) for serial, ts in doc["versions"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidInput(f"{container}/{name}: malformed version list") from exc

    # -- objects: data ---------------------------------------------------------------------

    def get_hashmap(self, container: str, name: str, *, version: int | None = None) -> Hashmap:
        params: dict[str, object] = {"format": "json", "hashmap": "True"}
        if version is not None:
            params["version"] = version
        resp = self.http.request("GET", self.object_url(container, name), expected=(200,),
                                 params=params)
        doc = _json(resp, "hashmap")
        try:
            hashes = [str(h) for h in doc["hashes"]]
            size = int(doc["bytes"])
            block_size = int(doc.get("block_size") or BLOCK_SIZE)
            algorithm = str(doc.get("block_hash") or BLOCK_HASH)
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidInput(f"{container}/{name}: malformed hashmap") from exc
        top = H.unquote(resp.headers.get("X-Object-Hash") or resp.headers.get("ETag") or "")
        return Hashmap(block_size=block_size, block_hash=algorithm, size=size, hashes=hashes,
                       hash=top.strip('"') or top_hash(hashes, algorithm),
                       version=_int(resp.headers.get("X-Object-Version")))

    def read(self, container: str, name: str, offset: int, length: int, *,
             version: int | None = None) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the object).

        The reply body is returned as received, without copying it again."""
        if length <= 0:
            return b""
        return self._get_range(container, name, offset, length, None, version)

    def readinto(self, container: str, name: str, offset: int, buf: memoryview, *,
                 version: int | None = None) -> int:
        """Fill ``buf`` from ``offset`` with one ranged GET; the count read, short at the
        end of the object (0 at or past it). A dropped connection is retried."""
        if len(buf) == 0:
            return 0
        return self._get_range(container, name, offset, len(buf), buf, version)

    def _get_range(self, container: str, name: str, offset: int, length: int,
                   buf: memoryview | None, version: int | None) -> bytes | int:
        """One ranged GET: the bytes (``buf`` None) or the count copied into ``buf``."""
        url = self.object_url(container, name)
        params: dict[str, object] = {"format": "json"}
        if version is not None:
            params["version"] = version

        def attempt() -> bytes | int:
            headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
            resp = self.http.request("GET", url, expected=(200, 206, 416), params=params,
                                     headers=headers, stream=True, retry=False)
            try:
                if resp.status_code != 416:
                    return _read_range(resp, offset, length, buf)
                size = _content_range(resp.headers.get("Content-Range"))[2]
            finally:
                finish(resp)
            # The range ran past the end (Pithos answers 416, not a short 206): clip it.
            if size is None:
                size = self.head(container, name, version=version).size
            if offset >= size:
                return b"" if buf is None else 0
            clipped = size - offset
            return self._get_range(container, name, offset, clipped,
                                   None if buf is None else buf[:clipped], version)

        return self.http.retrying(attempt, what=f"GET {container}/{name}")

    def download(self, container: str, name: str, fileobj: BinaryIO | str | Path, *,
                 version: int | None = None, parallel: int = 2) -> int:
        """Write the object into ``fileobj`` (or a path); bytes written.

        The version is pinned from the hashmap so a concurrent overwrite cannot
        mix contents, every block is checked against its hash (Corrupted on a
        mismatch), and a dropped connection resumes where it stopped. The next
        ``parallel`` blocks are fetched and hashed in threads while one is
        written, so receiving, hashing and writing overlap. Memory:
        ``parallel + 1`` blocks.
        """
        if isinstance(fileobj, (str, Path)):
            with open(fileobj, "wb") as out:
                return self.download(container, name, out, version=version,
                                     parallel=parallel)
        hm = self.get_hashmap(container, name, version=version)
        pinned = version if version is not None else (hm.version or None)
        bs = hm.block_size
        count = -(-hm.size // bs)

        def fetch(index: int) -> bytes:
            want = min(bs, hm.size - index * bs)
            data = self.read(container, name, index * bs, want, version=pinned)
            if len(data) != want:
                raise errors.Corrupted(f"{container}/{name}: object shorter than its hashmap")
            if block_hash(data, hm.block_hash) != hm.hashes[index]:
                raise errors.Corrupted(f"{container}/{name}: block {index} does not match "
                                       f"its hash")
            return data

        if parallel <= 1 or count <= 1:
            done = 0
            for index in range(count):
                data = fetch(index)
                fileobj.write(data)
                done += len(data)
            return done
        pool = self._executor(parallel)
        ahead = {i: pool.submit(fetch, i) for i in range(min(parallel, count))}
        done = 0
        try:
            for index in range(count):
                data = ahead.pop(index).result()
                if index + parallel < count:
                    ahead[index + parallel] = pool.submit(fetch, index + parallel)
                fileobj.write(data)
                done += len(data)
        finally:
            for future in ahead.values():
                future.cancel()
        return done

    # -- objects: writing ------------------------------------------------------------------

    def put_hashmap(self, container: str, name: str, size: int, hashes: list[str], *,
                    content_type: str = OCTET_STREAM, meta: dict[str, str] | None = None,
                    if_match: str | None = None) -> PutResult:
        """Create or replace an object from block hashes; the missing blocks if any."""
        body = json.dumps({"bytes": size, "hashes": [] if size == 0 else list(hashes)})
        headers = {"Content-Type": content_type}
        headers.update(H.meta_headers(H.OBJECT_META, meta or {}))
        if if_match is not None:
            headers["If-Match"] = if_match
        resp = self.http.request("PUT", self.object_url(container, name), expected=(201, 409),
                                 params={"format": "json", "hashmap": "True"},
                                 headers=headers, data=body.encode())
        if resp.status_code == 409:
            try:
                missing = json.loads(resp.content)
            except ValueError:
                missing = None
            if not isinstance(missing, list):
                raise_for_status(resp, (201,))
            return PutResult(missing=[str(h) for h in missing])
        return PutResult(missing=[], hash=_etag(resp), version=_int(
            resp.headers.get("X-Object-Version")))

    def post_block(self, container: str, data: bytes | bytearray | memoryview, *,
                   hash: str | None = None) -> str:
        """Upload one block; its hash (checked against the service's answer)."""
        _, algorithm = self.block_params(container)
        expected = hash or block_hash(data, algorithm)
        if len(data) == 0 or expected == EMPTY_HASH:
            return expected  # H("") is always present; an empty body would store nothing
        resp = self.http.request("POST", self.container_url(container), expected=(202, 200),
                                 params={"update": None, "format": "json"},
                                 headers={"Content-Type": OCTET_STREAM},
                                 data=memoryview(data))
        answer = _json(resp, "block upload")
        if not isinstance(answer, list) or not answer or answer[0] != expected:
            raise errors.Corrupted(
                f"{container}: block upload answered {answer!r}, expected [{expected!r}]")
        return expected

    def put_data(self, container: str, name: str, data: bytes, *,
                 content_type: str = OCTET_STREAM, meta: dict[str, str] | None = None
                 ) -> PutResult:
        """Create or replace a small object with one plain PUT."""
        headers = {"Content-Type": content_type}
        headers.update(H.meta_headers(H.OBJECT_META, meta or {}))
        resp = self.http.request("PUT", self.object_url(container, name), expected=(201,),
                                 headers=headers, data=bytes(data))
        return PutResult(missing=[], hash=_etag(resp),
                         version=_int(resp.headers.get("X-Object-Version")))

    def make_directory(self, container: str, name: str) -> None:
        """A zero-length ``application/directory`` marker object."""
        self.http.request("PUT", self.object_url(container, name), expected=(201,),
                          headers={"Content-Type": DIRECTORY_TYPE, "Content-Length": "0"},
                          data=b"")

    def copy(self, src_container: str, src: str, dst_container: str, dst: str, *,
             delimiter: bool = False, version: int | None = None,
             meta: dict[str, str] | None = None, content_type: str | None = None,
             src_account: str | None = None) -> int:
        """Server-side copy (new uuid at the destination); the new version."""
        headers = {"X-Copy-From": H.quote(f"/{src_container}/{src}")}
        if version is not None:
            headers["X-Source-Version"] = str(version)
        return self._copy_or_move(headers, src_container, src, dst_container, dst,
                                  delimiter, meta, content_type, src_account)

    def move(self, src_container: str, src: str, dst_container: str, dst: str, *,
             delimiter: bool = False, meta: dict[str, str] | None = None,
             content_type: str | None = None, sharing: str | None = None) -> int:
        """Server-side move (uuid and image registration kept); the version. The store
        drops the object's sharing (so a public image's ``*``) unless ``sharing``
        (``read=a,b;write=c``) gives the destination's, in the same request."""
        headers = {"X-Move-From": H.quote(f"/{src_container}/{src}")}
        if sharing:
            headers["X-Object-Sharing"] = sharing
        return self._copy_or_move(headers, src_container, src, dst_container, dst,
                                  delimiter, meta, content_type, None)

    def _copy_or_move(self, headers: dict[str, str], src_container: str, src: str,
                      dst_container: str, dst: str, delimiter: bool,
                      meta: dict[str, str] | None, content_type: str | None,
                      src_account: str | None) -> int:
        check_container_name(src_container)
        check_object_name(src)
        if src_account and src_account != self.account:
            headers["X-Source-Account"] = H.quote(src_account)
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers.update(H.meta_headers(H.OBJECT_META, meta or {}))
        headers["Content-Length"] = "0"
        resp = self.http.request("PUT", self.object_url(dst_container, dst), expected=(201,),
                                 params={"delimiter": "/"} if delimiter else None,
                                 headers=headers, data=b"")
        return _int(resp.headers.get("X-Object-Version"))

    def delete(self, container: str, name: str, *, delimiter: bool = False) -> None:
        """Delete an object; with ``delimiter`` also everything named ``<name>/...``."""
        self.http.request("DELETE", self.object_url(container, name), expected=(204,),
                          params={"delimiter": "/"} if delimiter else None)

    # -- whole files -----------------------------------------------------------------------

    def upload(self, container: str, name: str, source: BinaryIO | str | Path, *,
               content_type: str = OCTET_STREAM, meta: dict[str, str] | None = None,
               parallel: int = 4) -> ObjectInfo:
        """Upload a file with the hashmap protocol: hash it block by block, PUT the
        hashmap, send the blocks the service lacks (``parallel`` threads), PUT again.

        Memory: one block per thread. A non-seekable source is spooled to a
        temporary file first.
        """
        if isinstance(source, (str, Path)):
            with open(source, "rb") as fileobj:
                return self.upload(container, name, fileobj, content_type=content_type,
                                   meta=meta, parallel=parallel)
        if not _seekable(source):
            with tempfile.TemporaryFile() as spool:
                shutil.copyfileobj(source, spool, _CHUNK)
                spool.seek(0)
                return self.upload(container, name, spool, content_type=content_type,
                                   meta=meta, parallel=parallel)
        block_size, algorithm = self.block_params(container)
        reader = _BlockReader(source, block_size)
        size, hashes = reader.hash_all(algorithm, self._executor(parallel) if parallel > 1
                                       else None)
        for _round in range(4):
            result = self.put_hashmap(container, name, size, hashes, content_type=content_type,
                                      meta=meta)
            if result.created:
                return self.head(container, name)
            self._send_blocks(container, reader, hashes, result.missing, parallel)
        raise errors.Transient(f"{container}/{name}: the service keeps losing uploaded blocks")

    def _send_blocks(self, container: str, reader: "_BlockReader", hashes: list[str],
                     missing: list[str], parallel: int) -> None:
        where = {}
        for index, h in enumerate(hashes):
            where.setdefault(h, index)
        todo = [(h, where[h]) for h in dict.fromkeys(missing) if h in where]
        unknown = [h for h in missing if h not in where]
        if unknown:
            raise errors.InvalidInput(f"service asked for blocks not in the hashmap: {unknown}")

        def send(item: tuple[str, int]) -> None:
            h, index = item
            self.post_block(container, reader.block(index), hash=h)

        if parallel <= 1 or len(todo) <= 1:
            for item in todo:
                send(item)
            return
        pool = self._executor(parallel)
        futures = [pool.submit(send, item) for item in todo]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()


class _BlockReader:
    """Block ``i`` of a seekable file, safely from several threads.

    With a file descriptor, blocks are read with ``preadv`` into one buffer
    per thread, reused for every block that thread handles: no 4 MiB object is
    allocated per block. ``block`` returns a view of that buffer, valid until
    the same thread reads its next block.
    """

    def __init__(self, fileobj: BinaryIO, block_size: int) -> None:
        self.fileobj = fileobj
        self.block_size = block_size
        self.start = fileobj.tell()
        self._lock = threading.Lock()
        self._local = threading.local()
        try:
            self.fd: int | None = fileobj.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None

    def block(self, index: int) -> bytes | memoryview:
        offset = self.start + index * self.block_size
        if self.fd is None:
            with self._lock:
                self.fileobj.seek(offset)
                return self.fileobj.read(self.block_size)
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(self.block_size)
        view = memoryview(buf)
        got = 0
        while got < self.block_size:
            n = os.preadv(self.fd, [view[got:]], offset + got)
            if not n:
                break
            got += n
        return view[:got]

    def hash_all(self, algorithm: str, pool: ThreadPoolExecutor | None = None
                 ) -> tuple[int, list[str]]:
        """(size, block hashes) of the file from its current position; with ``pool``
        (and a regular file) the blocks are hashed in parallel, hashlib releasing
        the GIL."""
        if pool is not None and self.fd is not None and stat.S_ISREG(os.fstat(self.fd).st_mode):
            size = max(0, os.fstat(self.fd).st_size - self.start)
            count = max(1, -(-size // self.block_size))

            def one(index: int) -> tuple[str, int]:
                data = self.block(index)
                return block_hash(data, algorithm), len(data)

            results = list(pool.map(one, range(count)))
            expected = [min(self.block_size, size - i * self.block_size) for i in range(count)]
            if [n for _, n in results] == expected and \
                    os.fstat(self.fd).st_size - self.start == size:
                return size, [h for h, _ in results]
            log.debug("the file changed while it was hashed; hashing it again in order")
        size = 0
        hashes: list[str] = []
        index = 0
        while True:
            data = self.block(index)
            if not data and hashes:
                break
            hashes.append(block_hash(data, algorithm))
            size += len(data)
            index += 1
            if len(data) < self.block_size:
                break
        return size, hashes


def _seekable(fileobj: BinaryIO) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _etag(resp: requests.Response) -> str:
    return H.unquote(resp.headers.get("X-Object-Hash") or resp.headers.get("ETag") or ""
                     ).strip('"')


def _discard(resp: requests.Response, count: int) -> None:
    while count > 0:
        data = resp.raw.read(min(count, _CHUNK), decode_content=False)
        if not data:
            raise errors.Transient("connection closed before the requested range")
        count -= len(data)


def _read_range(resp: requests.Response, offset: int, length: int,
                buf: memoryview | None) -> bytes | int:
    """Body of a ranged GET (at most ``length`` bytes): 206 as asked, or 200 (Range
    ignored) skipped to ``offset``. Bytes, or the count put into ``buf``."""
    total = _int(resp.headers.get("Content-Length"), -1)
    if resp.status_code == 206:
        first, last, _size = _content_range(resp.headers.get("Content-Range"))
        if first is not None and first != offset:
            raise errors.Corrupted(f"asked for bytes from {offset}, got from {first}")
        if total < 0 and first is not None and last is not None:
            total = last - first + 1
        count = length if total < 0 else min(length, total)
        return _read_exactly(resp, count, buf)
    log.warning("the service ignored Range; skipping %d bytes", offset)
    if total >= 0 and offset >= total:
        return b"" if buf is None else 0
    _discard(resp, offset)
    count = length if total < 0 else min(length, total - offset)
    return _read_exactly(resp, count, buf)


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, size) of ``bytes a-b/size``; None for what is missing or ``*``."""
    if not value:
        return None, None, None
    try:
        unit, _, spec = value.strip().partition(" ")
        span, _, size = spec.partition("/")
        first, _, last = span.partition("-")
        return (int(first) if first not in ("", "*") else None,
                int(last) if last else None,
                int(size) if size not in ("", "*") else None)
    except ValueError:
        return None, None, None


def _read_exactly(resp: requests.Response, count: int, buf: memoryview | None) -> bytes | int:
    """Read ``count`` body bytes: as one bytes object (``buf`` None, no extra copy) or
    into ``buf`` (count capped at its length). A short body is Transient (the
    connection dropped)."""
    if buf is None:
        data = resp.raw.read(count, decode_content=False) if count else b""
        if len(data) < count:
            raise errors.Transient(f"connection closed after {len(data)} of {count} bytes")
        return data
    count = min(count, len(buf))
    got = 0
    while got < count:
        data = resp.raw.read(min(count - got, 4 * _CHUNK), decode_content=False)
        if not data:
            raise errors.Transient(f"connection closed after {got} of {count} bytes")
        buf[got: got + len(data)] = data
        got += len(data)
    return got
