"""The core image semantics on a mount of a service that behaves like a real deployment.

The service runs with ``--real-synnefo``: re-registering merges the old
properties and status into the new registration (D2), the image list comes
wrapped as ``{"images": [...]}`` (D5) and HEAD reports statuses upper-case
(D1). The mount must still give behaviour.md §5: writing a sidecar replaces
the whole registration (it unregisters, then registers), a registration
saved unchanged is recognised (statuses compared case-insensitively), and
the catalog, moves and attributes work. Only documented API calls are used.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
from e2e_proxy import CountingProxy
from e2e_util import (CACHE_TIMEOUT, Mount, cleanup, expect_errno, imagefs_command, run,
                      tail, umount, wait_for_mount, wait_until)

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.service.launcher import running_service


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("real") / "data", "--real-synnefo") as svc:
        yield svc


@pytest.fixture(scope="module")
def real_client(real):
    with Connection.open(real.url, real.token) as conn:
        yield conn


@pytest.fixture(scope="module")
def real_mount(real, tmp_path_factory):
    base = tmp_path_factory.mktemp("real-mount")
    mnt = base / "mnt"
    mnt.mkdir()
    with CountingProxy(real.url) as proxy:
        cmd = imagefs_command("mount", str(mnt), "--url", proxy.url_for(real.url),
                              "--token", real.token, "--foreground", "--log",
                              str(base / "daemon.log"), "--cache-dir", str(base / "cache"),
                              "--cache-timeout", str(CACHE_TIMEOUT))
        with open(base / "daemon.out", "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        mount = Mount(mnt, base / "daemon.log", base / "daemon.out", proc, proxy, real.uuid)
        try:
            wait_for_mount(proc, mnt, mount.describe)
            yield mount
            umount(proc, mnt)
            log_text = tail(mount.log, lines=100000)
            assert "Traceback" not in log_text, log_text[-6000:]
        finally:
            cleanup(proc, mnt)


@pytest.fixture
def folder(real_mount, request):
    path = real_mount.path / "pithos" / request.node.name.replace("[", "-").strip("]")
    path.mkdir()
    return path


def registrations(mount, mark):
    return [r for r in mount.requests(mark)
            if r.method == "POST" and r.path.rstrip("/").endswith("/images")]


def image_at(client, key):
    info = client.pithos.head("pithos", key)
    try:
        return client.plankton.get(info.uuid)
    except errors.NotFound:
        return None


def write(path, doc) -> None:
    with open(path, "wb") as f:
        f.write(json.dumps(doc).encode() if isinstance(doc, dict) else doc)


def test_the_service_merges_but_the_sidecar_overrides(real_mount, real_client, folder):
    img = folder / "debian.diskdump"
    img.write_bytes(b"a disk image")
    key = f"{folder.name}/debian.diskdump"
    meta = folder / "debian.diskdump.meta"
    write(meta, {"name": "Debian Base Gama", "status": "available",
                 "properties": {"OS": "Linux", "USER": "someuser"}})
    first = image_at(real_client, key)
    assert first.properties == {"os": "Linux", "user": "someuser"}
    assert first.status.lower() == "available"

    mark = real_mount.proxy.mark()
    write(meta, {"name": "Debian Base Delta", "properties": {"USER": "root"}})
    again = image_at(real_client, key)
    assert again.id == first.id and again.name == "Debian Base Delta"
    assert again.properties == {"user": "root"}  # OS is gone although the service merges
    deletes = [r for r in real_mount.requests(mark) if r.method == "DELETE"
               and f"/images/{first.id}" in r.path]
    assert len(deletes) == 1 and len(registrations(real_mount, mark)) == 1

    # Saving what the sidecar shows (status AVAILABLE) changes nothing.
    shown = meta.read_bytes()
    mark = real_mount.proxy.mark()
    write(meta, shown)
    assert registrations(real_mount, mark) == []
    assert image_at(real_client, key) == again


def test_catalog_attributes_moves_and_unregistering(real_mount, real_client, folder):
    img = folder / "a.img"
    img.write_bytes(b"public image")
    write(folder / "a.img.meta", {"name": "Public", "is-public": True})
    image = image_at(real_client, f"{folder.name}/a.img")
    catalog = real_mount.path / ".images" / f"{image.id}.meta"
    assert json.loads(catalog.read_bytes())["name"] == "Public"  # the wrapped image list

    os.setxattr(img, "user.image.status", b"custom")
    assert os.getxattr(img, "user.image.status") == b"custom"
    os.setxattr(img, "user.image.properties.K", b"v")
    assert real_client.plankton.get(image.id).properties == {"k": "v"}
    expect_errno(errno.EPERM, os.setxattr, img, "user.image.id", b"x")

    run("mv", str(img), str(folder / "b.img"))
    moved = image_at(real_client, f"{folder.name}/b.img")
    assert moved.id == image.id and moved.is_public
    assert sorted(os.listdir(folder)) == ["b.img", "b.img.meta"]

    os.unlink(folder / "b.img.meta")
    assert image_at(real_client, f"{folder.name}/b.img") is None
    wait_until(lambda: not catalog.exists(), CACHE_TIMEOUT + 5, what="the entry to go")


def test_a_sidecar_before_its_image_and_bad_input(real_mount, real_client, folder):
    write(folder / "late.img.meta", {"properties": {"A": "1"}})
    (folder / "late.img").write_bytes(b"arrives later")
    image = image_at(real_client, f"{folder.name}/late.img")
    assert image.name == f"{folder.name}/late.img" and image.properties == {"a": "1"}
    expect_errno(errno.EINVAL, write, folder / "late.img.meta", b'{"properties": [1]}')
    assert image_at(real_client, f"{folder.name}/late.img") == image
    assert "properties" in os.getxattr(folder / "late.img.meta", "user.imagefs.error").decode()
