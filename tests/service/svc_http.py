"""Raw HTTP helpers for the service tests, the way kamaki 0.16 speaks.

``Api`` is deliberately thin (requests, no imagefs client code): tests must
see exact statuses and headers. Query strings are built like kamaki's, with
valueless flags (``?update&format=json``), and paths are percent-quoted with
``/`` kept. ``raw_request`` sends exact header lists (repeats kept).
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlsplit

import requests

from imagefs.protocol.headers import query_string


class Api:
    def __init__(self, base: str, token: str | None, uuid: str | None) -> None:
        self.base = base
        self.token = token
        self.uuid = uuid
        self.session = requests.Session()

    # -- URLs --------------------------------------------------------------------------------
    @property
    def os(self) -> str:
        return self.base + "/object-store/v1"

    @property
    def img(self) -> str:
        return self.base + "/image/v1.0"

    def path(self, container: str | None = None, name: str | None = None,
             account: str | None = None) -> str:
        """Object-store URL of an account, container or object (quoted, ``/`` kept)."""
        url = f"{self.os}/{quote(account or self.uuid)}"
        if container is not None:
            url += "/" + quote(container, safe="")
        if name is not None:
            url += "/" + quote(name)
        return url

    # -- requests ----------------------------------------------------------------------------
    def request(self, method: str, url: str, *, params=None, headers=None, data=None,
                token: str | None | bool = True, **kw) -> requests.Response:
        if params:
            url += "?" + query_string(params)
        hdrs = dict(headers or {})
        tok = self.token if token is True else token
        if tok:
            hdrs.setdefault("X-Auth-Token", tok)
        return self.session.request(method, url, headers=hdrs, data=data,
                                    allow_redirects=False, **kw)

    def head(self, url, **kw):
        return self.request("HEAD", url, **kw)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def put(self, url, **kw):
        return self.request("PUT", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)

    # -- Pithos shortcuts --------------------------------------------------------------------
    def create_container(self, container: str, headers=None) -> None:
        r = self.put(self.path(container), headers=headers)
        assert r.status_code == 201, r.text

    def put_object(self, container: str, name: str, data: bytes = b"hello\n",
                   content_type: str = "application/octet-stream", headers=None,
                   params=None) -> requests.Response:
        hdrs = {"Content-Type": content_type, **(headers or {})}
        r = self.put(self.path(container, name), data=data, headers=hdrs, params=params)
        assert r.status_code == 201, r.text
        return r

    def upload(self, container: str, name: str, data: bytes,
               content_type: str = "application/octet-stream", headers=None
               ) -> requests.Response:
        """The kamaki upload: hashmap PUT, 409, block POSTs, hashmap PUT again."""
        from imagefs.protocol.hashmap import hashmap_of

        hashes = hashmap_of(data)
        body = json.dumps({"bytes": len(data), "hashes": hashes if data else []})
        hdrs = {"Content-Type": content_type, **(headers or {})}
        params = [("format", "json"), ("hashmap", "True")]
        r = self.put(self.path(container, name), params=params, data=body, headers=hdrs)
        if r.status_code == 409:
            missing = set(r.json())
            bs = 4 * 1024 * 1024
            for i, h in enumerate(hashes):
                if h in missing:
                    rr = self.post(self.path(container), params=[("update", None),
                                                                 ("format", "json")],
                                   data=data[i * bs:(i + 1) * bs],
                                   headers={"Content-Type": "application/octet-stream"})
                    assert rr.status_code == 202, rr.text
                    assert rr.json() == [h]
                    missing.discard(h)
            r = self.put(self.path(container, name), params=params, data=body, headers=hdrs)
        assert r.status_code == 201, r.text
        return r

    def listing(self, container: str, **params) -> list:
        r = self.get(self.path(container), params=[("format", "json"), *params.items()])
        assert r.status_code == 200, r.text
        return r.json()


def raw_request(base: str, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes | None = None) -> tuple[int, str, dict[str, list[str]], bytes]:
    """One request with exact headers (repeats kept, order kept) over http.client.

    Returns (status, reason, headers as lower-case name -> list of values, body).
    """
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        out: dict[str, list[str]] = {}
        for name, value in resp.getheaders():
            out.setdefault(name.lower(), []).append(value)
        return resp.status, resp.reason, out, data
    finally:
        conn.close()
