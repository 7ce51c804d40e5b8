"""Faults on the service side: a service killed with SIGKILL in the middle of an upload and
restarted on the same data directory, and a service whose disk fills up.

What must hold every time: an object is its previous version, absent, or the new
version complete, never partial; ``imagefs check`` finds no problem; the client's
retry succeeds once the service is back (or space is freed); and nothing the
service acknowledged is lost.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from imagefs import BLOCK_SIZE, errors
from imagefs.client.connection import Connection
from imagefs.protocol.hashmap import hashmap_of
from imagefs.service.launcher import RunningService, running_service
from imagefs.service.store import Store
from svc_http import Api
from test_secrets import assert_no_secret_in_log

ROOT = Path(__file__).resolve().parents[2]
OCTET = {"Content-Type": "application/octet-stream"}


# -- helpers ---------------------------------------------------------------------------------------

def kill_hard(svc: RunningService) -> None:
    """SIGKILL the arbiter and its workers at once (they share one process group)."""
    os.killpg(svc.process.pid, signal.SIGKILL)
    svc.process.wait(30)


def port_of(svc: RunningService) -> int:
    return urlsplit(svc.base).port


def check_clean(data_dir: Path) -> None:
    """``imagefs check --data DIR`` reports nothing and exits 0."""
    result = subprocess.run([sys.executable, "-m", "imagefs", "check", "--data", str(data_dir)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout, result.stdout


def stored_versions(data_dir: Path, account: str, container: str, name: str
                    ) -> tuple[bytes | None, list[bytes]]:
    """(current content or None, content of every version), read from the store directly."""
    store = Store.open(data_dir)
    try:
        def content(version=None) -> bytes:
            v = store.get_version(account, container, name, account, version=version)
            out = bytearray()
            for i, h in enumerate(store.hashes_of(v)):
                out += store.read_block(h, min(BLOCK_SIZE, v.size - i * BLOCK_SIZE))
            assert len(out) == v.size
            return bytes(out)

        try:
            current = content()
        except errors.NotFound:
            current = None
        try:
            serials = [serial for serial, _ts in store.list_versions(account, container, name,
                                                                     account)]
        except errors.NotFound:
            serials = []
        return current, [content(serial) for serial in serials]
    finally:
        store.close()


def assert_whole(data_dir: Path, account: str, name: str, allowed: list[bytes]) -> bytes | None:
    """The object and each of its versions is one of ``allowed`` (or absent): never partial."""
    current, versions = stored_versions(data_dir, account, "pithos", name)
    assert current is None or current in allowed, (len(current), [len(a) for a in allowed])
    for data in versions:
        assert data in allowed, len(data)
    return current


def data_of(size: int, seed: int) -> bytes:
    """Distinct, incompressible, reproducible content."""
    import random

    return random.Random(seed).randbytes(size)


# -- kill during an upload by the imagefs client (which retries) -----------------------------------

#: (what the client just got an answer to when the service dies, the content on disk then)
KILL_POINTS = {
    "first-hashmap-put": (lambda calls: calls["PUT"] == 1, "old"),
    "second-block-post": (lambda calls: calls["POST"] == 2, "old"),
    "final-hashmap-put": (lambda calls: calls["PUT"] == 2, "new"),
}


@pytest.mark.parametrize("kill_at", list(KILL_POINTS))
def test_client_upload_survives_a_killed_service(tmp_path, kill_at):
    """The service dies under a 5-block upload (2 blocks in flight at once); on disk the
    object is still the old version (or already the whole new one); the client retries
    until the service is back on the same port and the upload completes."""
    data_dir = tmp_path / "data"
    old, new = data_of(2 * BLOCK_SIZE + 1000, 1), data_of(5 * BLOCK_SIZE + 777, 2)
    when, on_disk = KILL_POINTS[kill_at]
    calls = {"PUT": 0, "POST": 0}
    killed = threading.Event()
    outcome: dict[str, object] = {}

    with running_service(data_dir, verbose=True) as first:
        port, account, token = port_of(first), first.uuid, first.token
        conn = Connection.open(first.url, first.token, deadline=90)
        conn.pithos.upload("pithos", "disk.img", io.BytesIO(old))

        def hook(method: str, url: str, status: int) -> None:
            if method in calls and "/pithos" in url:
                calls[method] += 1
                if not killed.is_set() and when(calls):
                    kill_hard(first)
                    killed.set()

        def upload() -> None:
            try:
                outcome["info"] = conn.pithos.upload("pithos", "disk.img", io.BytesIO(new),
                                                     parallel=2)
            except BaseException as exc:  # reported by the test thread
                outcome["error"] = exc

        conn.http.hooks.append(hook)
        client = threading.Thread(target=upload, name="uploader")
        client.start()
        assert killed.wait(60), "the kill point was never reached"

    # The service is dead: what is on disk is whole, and consistent.
    current = assert_whole(data_dir, account, "disk.img", [old, new])
    assert current == (old if on_disk == "old" else new)
    check_clean(data_dir)

    with running_service(data_dir, "--listen", f"127.0.0.1:{port}", verbose=True) as second:
        client.join(120)
        assert not client.is_alive()
        assert "error" not in outcome, outcome.get("error")
        api = Api(second.base, second.token, second.uuid)
        r = api.get(api.path("pithos", "disk.img"))
        assert (r.status_code, r.content == new) == (200, True)
        assert outcome["info"].hash == r.headers["ETag"]
    conn.close()
    assert_whole(data_dir, account, "disk.img", [old, new])
    check_clean(data_dir)
    assert_no_secret_in_log(data_dir / "service.log", [token])


# -- kill in the middle of one raw request -------------------------------------------------------------

def _raw_head(svc: RunningService, method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
                        f"X-Auth-Token: {svc.token}", *lines, "", ""]).encode()


def _partial_requests(svc: RunningService, new: bytes) -> dict[str, bytes]:
    """Requests cut short: each sends its head and about half its body."""
    obj = f"/object-store/v1/{svc.uuid}/pithos/disk.img"
    cont = f"/object-store/v1/{svc.uuid}/pithos"
    half = len(new) // 2
    chunks = b"".join(b"%x\r\n" % len(new[i:i + 65536]) + new[i:i + 65536] + b"\r\n"
                      for i in range(0, half, 65536))
    return {
        "block-post-body": _raw_head(svc, "POST", cont + "?update&format=json",
                                     "Content-Type: application/octet-stream",
                                     f"Content-Length: {BLOCK_SIZE}") + new[:BLOCK_SIZE // 2],
        "plain-put-body": _raw_head(svc, "PUT", obj, "Content-Type: application/octet-stream",
                                    f"Content-Length: {len(new)}") + new[:half],
        "chunked-put-body": _raw_head(svc, "PUT", obj, "Content-Type: application/octet-stream",
                                      "Transfer-Encoding: chunked") + chunks,
    }


def _upload_blocks(api: Api, data: bytes) -> bytes:
    """Everything of a kamaki upload but the final hashmap PUT; returns that PUT's body."""
    hashes = hashmap_of(data)
    body = json.dumps({"bytes": len(data), "hashes": hashes}).encode()
    params = [("format", "json"), ("hashmap", "True")]
    r = api.put(api.path("pithos", "disk.img"), params=params, data=body, headers=OCTET)
    assert r.status_code == 409, r.text
    for i in range(len(hashes)):
        r = api.post(api.path("pithos"), params=[("update", None), ("format", "json")],
                     data=data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE], headers=OCTET)
        assert r.status_code == 202, r.text
    return body


@pytest.mark.parametrize("what", ["block-post-body", "plain-put-body", "chunked-put-body",
                                  "final-hashmap-put"])
def test_kill_in_the_middle_of_a_request(tmp_path, what):
    """SIGKILL while a request body is half sent (or right after a complete hashmap PUT
    went out): the object stays whole, ``check`` is clean, and the retried upload works
    after a restart."""
    data_dir = tmp_path / "data"
    old, new = data_of(BLOCK_SIZE + 5, 3), data_of(3 * BLOCK_SIZE + 99, 4)
    with running_service(data_dir, verbose=True) as first:
        account, token = first.uuid, first.token
        api = Api(first.base, first.token, first.uuid)
        api.upload("pithos", "disk.img", old)
        if what == "final-hashmap-put":
            body = _upload_blocks(api, new)
            path = f"/object-store/v1/{first.uuid}/pithos/disk.img?format=json&hashmap=True"
            request = _raw_head(first, "PUT", path, "Content-Type: application/octet-stream",
                                f"Content-Length: {len(body)}") + body
        else:
            request = _partial_requests(first, new)[what]
        sock = socket.create_connection(("127.0.0.1", port_of(first)), timeout=30)
        try:
            sock.sendall(request)
            if what != "final-hashmap-put":
                time.sleep(0.3)          # let a worker read (and store) what was sent
            kill_hard(first)
        finally:
            sock.close()

    allowed = [old, new] if what == "final-hashmap-put" else [old]
    assert assert_whole(data_dir, account, "disk.img", allowed) is not None
    check_clean(data_dir)

    with running_service(data_dir, verbose=True) as second:
        api = Api(second.base, second.token, second.uuid)
        api.upload("pithos", "disk.img", new)
        r = api.get(api.path("pithos", "disk.img"))
        assert r.status_code == 200 and r.content == new
    assert assert_whole(data_dir, account, "disk.img", [old, new]) == new
    check_clean(data_dir)
    assert_no_secret_in_log(data_dir / "service.log", [token])


# -- a full disk -----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (we are root); unmounted at the end whatever happens."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        piece = bytes(1 << 16)
        try:
            while True:
                f.write(piece)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert os.statvfs(path.parent).f_bavail == 0


def _insufficient(r) -> None:
    assert (r.status_code, r.reason) == (507, "INSUFFICIENT STORAGE"), (r.status_code, r.text)
    assert r.json()["insufficientStorage"]["code"] == 507


def test_full_disk_refuses_writes_cleanly_and_recovers(small_disk):
    """Uploads until the disk is full: the one that does not fit gets 507 and leaves
    nothing behind; metadata writes get 507 once the database cannot grow; reads go on;
    after deletes and a block collection free space, the same upload succeeds."""
    data_dir = small_disk / "data"
    with running_service(data_dir, "--workers", "1", verbose=True) as svc:
        api = Api(svc.base, svc.token, svc.uuid)
        api.create_container("full", headers={"X-Container-Policy-Versioning": "none"})
        stored: dict[str, bytes] = {}
        refused = None
        for i in range(40):
            data = data_of(BLOCK_SIZE, 100 + i)
            r = api.put(api.path("full", f"o{i}"), data=data, headers=OCTET)
            if r.status_code != 201:
                _insufficient(r)
                refused = (f"o{i}", data)
                break
            stored[f"o{i}"] = data
        assert refused is not None and len(stored) >= 5, len(stored)
        name, data = refused

        # The hashmap protocol: the PUT names the missing block, the block POST is refused,
        # the object never appears.
        hashes = hashmap_of(data)
        body = json.dumps({"bytes": len(data), "hashes": hashes})
        params = [("format", "json"), ("hashmap", "True")]
        r = api.put(api.path("full", name), params=params, data=body, headers=OCTET)
        assert (r.status_code, r.json()) == (409, hashes)
        _insufficient(api.post(api.path("full"), params=[("update", None), ("format", "json")],
                               data=data, headers=OCTET))
        assert api.put(api.path("full", name), params=params, data=body,
                       headers=OCTET).status_code == 409
        assert api.head(api.path("full", name)).status_code == 404
        assert not list((data_dir / "blocks").rglob(".tmp-*"))

        # Not a byte left: the database cannot grow either.
        ballast = small_disk / "ballast"
        _fill(ballast)
        for k in range(300):
            r = api.post(api.path("full", "o0"), params=[("update", None)], headers={
                f"X-Object-Meta-K{j}": f"{k}-" + "v" * 250 for j in range(30)})
            if r.status_code != 202:
                break
        _insufficient(r)
        _insufficient(api.put(api.path("another")))
        for key, value in stored.items():       # reads go on; nothing acknowledged is lost
            r = api.get(api.path("full", key))
            assert r.status_code == 200 and r.content == value, key

        # Free space: the ballast, three objects and their blocks.
        ballast.unlink()
        for key in ("o0", "o1", "o2"):
            assert api.delete(api.path("full", key)).status_code == 204
            del stored[key]
        store = Store.open(data_dir)
        try:
            removed, _freed = store.gc(grace_seconds=0)
        finally:
            store.close()
        assert removed >= 3

        api.upload("full", name, data)
        stored[name] = data
        extra = data_of(BLOCK_SIZE, 999)
        assert api.put(api.path("full", "extra"), data=extra, headers=OCTET).status_code == 201
        stored["extra"] = extra
        for key, value in stored.items():
            r = api.get(api.path("full", key))
            assert r.status_code == 200 and r.content == value, key
        listed = {e["name"] for e in api.listing("full")}
        assert listed == set(stored)
    check_clean(data_dir)
    assert_no_secret_in_log(data_dir / "service.log", [svc.token])
