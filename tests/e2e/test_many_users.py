"""Several users and many writers at once, on real mounts (behaviour.md §5, §7).

Two users each mount their own account at the same time: neither sees the
other's private containers or images, and a public image of one is visible
but unchangeable to the other. Then eight threads hammer one mount with
writes (across 4 MiB blocks), reads and renames; every file is checked
through the mount and on the service, by its Pithos top hash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from e2e_util import (CACHE_TIMEOUT, Mount, cleanup, expect_errno, imagefs_command, tail,
                      umount, wait_for_mount, wait_until)

from imagefs.client.connection import Connection
from imagefs.protocol.hashmap import hashmap_of, top_hash

WAIT = CACHE_TIMEOUT + 5
WRITERS = 8
RUN_FOR = 15.0
MIB = 1 << 20
SIZES = (3 * 1024, 50 * 1024, 700 * 1024, 4 * MIB - 1, 4 * MIB, 4 * MIB + 1, 6 * MIB,
         9 * MIB)


@contextlib.contextmanager
def mount_as(service, token: str, base: Path):
    """``imagefs mount`` of the account of ``token``; unmounted cleanly at the end."""
    base.mkdir()
    mnt = base / "mnt"
    mnt.mkdir()
    logfile, output = base / "daemon.log", base / "daemon.out"
    env = dict(os.environ, IMAGEFS_RUNTIME=str(base / "run"))
    cmd = imagefs_command("mount", str(mnt), "--url", service.url, "--token", token,
                          "--foreground", "--log", str(logfile),
                          "--cache-dir", str(base / "cache"),
                          "--cache-timeout", str(CACHE_TIMEOUT))
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    mount = Mount(mnt, logfile, output, proc, None, "")
    try:
        wait_for_mount(proc, mnt, mount.describe)
        yield mount
        umount(proc, mnt)
        text = tail(logfile, lines=100000)
        assert "Traceback" not in text, f"the daemon logged a traceback:\n{text[-6000:]}"
    finally:
        cleanup(proc, mnt)


@pytest.fixture(scope="module")
def two(service, tmp_path_factory):
    """Users A and B, each with its own mount: ((uuid, token, Mount), (uuid, token, Mount))."""
    base = tmp_path_factory.mktemp("many")
    a, b = service.new_user("alice-many"), service.new_user("bob-many")
    with mount_as(service, a.token, base / "a") as ma, mount_as(service, b.token, base / "b") as mb:
        ma.account, mb.account = a.uuid, b.uuid
        yield (a, ma), (b, mb)


def register(container: Path, name: str, doc: dict) -> str:
    """Write ``name`` and its sidecar through the mount; return the image id."""
    (container / name).write_bytes(f"image {name}\n".encode())
    with open(container / f"{name}.meta", "wb") as f:
        f.write(json.dumps(doc).encode())
    return json.loads((container / f"{name}.meta").read_bytes())["id"]


def write_through(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_two_users_see_only_their_own_and_public(two, service):
    (a, ma), (b, mb) = two
    os.mkdir(ma.path / "alice-private")
    os.mkdir(mb.path / "bob-private")
    a_private = register(ma.path / "alice-private", "a1.img", {"name": "A private"})
    a_public = register(ma.path / "alice-private", "a2.img",
                        {"name": "A public", "is-public": True})
    b_private = register(mb.path / "bob-private", "b1.img", {"name": "B private"})

    # Containers: each sees its own only (both the listing and a direct lookup).
    top_a, top_b = set(os.listdir(ma.path)), set(os.listdir(mb.path))
    assert "alice-private" in top_a and "bob-private" not in top_a
    assert "bob-private" in top_b and "alice-private" not in top_b
    assert not (mb.path / "alice-private" / "a1.img").exists()

    # The catalogs: own images and public ones, nothing else.
    def catalog(mount, wanted):
        names = set(os.listdir(mount.path / ".images"))
        return names if {f"{i}.meta" for i in wanted} <= names else None

    names_b = wait_until(lambda: catalog(mb, (b_private, a_public)), WAIT, what="B's catalog")
    names_a = wait_until(lambda: catalog(ma, (a_private, a_public)), WAIT, what="A's catalog")
    assert f"{a_private}.meta" not in names_b and f"{b_private}.meta" not in names_a
    expect_errno(errno.ENOENT, os.stat, mb.path / ".images" / f"{a_private}.meta")
    expect_errno(errno.ENOENT, os.stat, ma.path / ".images" / f"{b_private}.meta")
    for mount, names in ((ma, names_a), (mb, names_b)):
        for name in names:
            doc = json.loads((mount.path / ".images" / name).read_bytes())
            assert doc["owner"] == mount.account or doc["is-public"] is True, (name, doc)

    # B sees A's public image and cannot change it by any path.
    entry = mb.path / ".images" / f"{a_public}.meta"
    assert json.loads(entry.read_bytes())["owner"] == a.uuid
    expect_errno(errno.EACCES, os.unlink, entry)
    expect_errno(errno.EACCES, os.setxattr, entry, "user.image.name", b"Bob's now")
    expect_errno(errno.EACCES, write_through, entry, b'{"name": "Bob\'s now"}')
    with Connection.open(service.url, a.token) as conn:
        image = conn.plankton.get(a_public)
    assert (image.name, image.is_public, image.owner) == ("A public", True, a.uuid)
    assert entry.exists()


def content(seed: int, size: int) -> bytes:
    """The bytes of one file, regenerated on demand so the test holds few at once."""
    return random.Random(seed).randbytes(size)


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_eight_concurrent_writers_and_readers(two, service):
    (a, ma), _ = two
    os.mkdir(ma.path / "busy")
    root = ma.path / "busy"
    rss_start = vm_rss_kib(ma.proc.pid)
    lock = threading.Lock()
    done: dict[str, tuple[int, int]] = {}  # final name -> (seed, size), finished files only
    errors: list[BaseException] = []
    reads = [0]
    deadline = time.monotonic() + RUN_FOR

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            i = 0
            while time.monotonic() < deadline and i < 40:
                seed, size = rng.getrandbits(64), rng.choice(SIZES)
                data = content(seed, size)
                name = f"w{n}-{i}.bin"
                with open(root / name, "wb") as f:
                    for at in range(0, size, MIB):
                        f.write(data[at:at + MIB])
                if rng.random() < 0.3:
                    new = f"w{n}-{i}-renamed.bin"
                    os.rename(root / name, root / new)
                    name = new
                with lock:
                    done[name] = (seed, size)
                    others = [k for k in done if not k.startswith(f"w{n}-")]
                if others:
                    other = rng.choice(others)
                    with lock:
                        expected = content(*done[other])
                    assert (root / other).read_bytes() == expected, other
                    reads[0] += 1
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=RUN_FOR + 60)
    assert not any(t.is_alive() for t in threads), "a worker hangs"
    assert errors == [], errors
    rss_end = vm_rss_kib(ma.proc.pid)
    total = sum(size for _, size in done.values())
    print(f"\n{len(done)} files, {total / MIB:.1f} MiB written, {reads[0]} cross reads; "
          f"daemon VmRSS start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB")
    assert len(done) >= WRITERS
    assert sorted(os.listdir(root)) == sorted(done)
    with Connection.open(service.url, a.token) as conn:
        for name, (seed, size) in done.items():
            data = content(seed, size)
            assert (root / name).read_bytes() == data, name
            info = conn.pithos.head("busy", name)
            assert info.size == len(data), name
            assert info.hash == top_hash(hashmap_of(data)), name
    assert rss_end < 400 * 1024, f"daemon VmRSS {rss_end} KiB"
