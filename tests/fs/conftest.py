"""Tier 3: drive ``Filesystem`` directly (no mount) against the live embedded service.

``fs`` is a started ``Filesystem`` on a fresh cache directory, closed after
the test, which then checks that nothing is left behind: no upload
pending, no handle open, no spill file, and every object of the containers
the test made is whole (its hashmap matches its size; no partial object).
``vfs`` wraps it with path-based helpers (what a shell would do) so tests
read like the behaviour they check. ``requests_log`` records every HTTP
request the client sends (method, path, query), to assert what an
operation costs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
import trio

from imagefs.client.connection import Connection
from imagefs.fs.filesystem import Filesystem
from imagefs.fs.upload import PROBE_HASH

from fs_support import Vfs, _remove_container, check_consistent  # noqa: E402


@pytest.fixture(scope="session")
def conn(service):
    with Connection.open(service.url, service.token, deadline=20.0) as c:
        yield c


@dataclass
class Request:
    method: str
    url: str
    params: dict
    headers: dict = field(default_factory=dict)
    probe: bool = False  # a hashmap PUT that only asks which blocks are missing

    @property
    def path(self) -> str:
        return self.url.split("://", 1)[-1].split("/", 1)[-1]


@dataclass
class RequestLog:
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def of(self, method: str, *, has: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and
                    (has is None or has in r.params)]

    def block_posts(self) -> list[Request]:
        """Block uploads: POST ?update with data (object POSTs carry a name, these don't)."""
        return [r for r in self.of("POST", has="update") if r.path.count("/") == 3]

    def hashmap_puts(self) -> list[Request]:
        """Hashmap PUTs that store (not the sender's questions, ``upload.PROBE_HASH``)."""
        return [r for r in self.of("PUT", has="hashmap") if not r.probe]

    def probes(self) -> list[Request]:
        return [r for r in self.of("PUT", has="hashmap") if r.probe]


@pytest.fixture
def requests_log(conn, monkeypatch) -> RequestLog:
    log = RequestLog()
    original = conn.http.request

    def request(method, url, **kw):
        params = dict(kw.get("params") or {})
        probe = method == "PUT" and "hashmap" in params and \
            PROBE_HASH.encode() in bytes(kw.get("data") or b"")
        with log.lock:
            log.requests.append(Request(method, url, params, dict(kw.get("headers") or {}),
                                        probe))
        return original(method, url, **kw)

    monkeypatch.setattr(conn.http, "request", request)
    return log


@pytest.fixture
async def fs(conn, tmp_path):
    cache = tmp_path / "cache"
    filesystem = Filesystem(conn, cache_dir=cache, cache_timeout=2.0)
    await filesystem.start()
    filesystem.test_cache_dir = cache
    try:
        yield filesystem
    finally:
        await filesystem.close()


@pytest.fixture
async def vfs(fs, conn):
    v = Vfs(fs, conn)
    yield v
    await fs.close()
    check_consistent(v, fs.test_cache_dir)
    for container in v.containers:
        await trio.to_thread.run_sync(_remove_container, conn, container)
