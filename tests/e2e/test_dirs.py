"""Containers and directories through the mount (behaviour.md §3)."""

from __future__ import annotations

import errno
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e_util import (
    cleanup, expect_errno, imagefs_command, listings, names_on_service, object_requests, run,
    umount, wait_for_mount,
)

from imagefs import errors


def test_mkdir_rmdir_at_top_creates_and_deletes_a_container(mounted, client):
    name = "top-level-mkdir"
    os.mkdir(mounted.path / name)
    assert client.pithos.container_info(name).name == name
    assert name in os.listdir(mounted.path)
    assert (mounted.path / name).is_dir()

    os.rmdir(mounted.path / name)
    with pytest.raises(errors.NotFound):
        client.pithos.container_info(name)
    assert name not in os.listdir(mounted.path)
    expect_errno(errno.ENOENT, os.stat, mounted.path / name)


def test_rmdir_of_a_non_empty_container_is_enotempty(container, client):
    (container.path / "keep").write_bytes(b"x")
    expect_errno(errno.ENOTEMPTY, os.rmdir, container.path)
    assert client.pithos.container_info(container.name).count == 1
    assert os.listdir(container.path) == ["keep"]


def test_trash_directory_is_refused_at_the_top(mounted, client):
    """A file manager's .Trash-UID must not become a container (it falls back to delete)."""
    err = expect_errno(errno.EACCES, os.mkdir, mounted.path / ".Trash-0")
    assert err.filename is not None
    assert ".Trash-0" not in {c.name for c in client.pithos.list_containers()}
    assert ".Trash-0" not in os.listdir(mounted.path)


def test_mkdir_inside_a_container_creates_a_marker(container, client):
    os.mkdir(container.path / "images")
    os.mkdir(container.path / "images" / "old")
    for name in ("images", "images/old"):
        info = client.pithos.head(container.name, name)
        assert info.is_directory, info
        assert info.size == 0
    assert os.listdir(container.path) == ["images"]
    assert os.listdir(container.path / "images") == ["old"]
    assert (container.path / "images" / "old").is_dir()

    os.rmdir(container.path / "images" / "old")
    with pytest.raises(errors.NotFound):
        client.pithos.head(container.name, "images/old")
    assert os.listdir(container.path / "images") == []


def test_pseudo_directory_without_marker_is_a_directory(container, client):
    client.pithos.put_data(container.name, "a/b/c.txt", b"deep")
    assert (container.path / "a").is_dir()
    assert (container.path / "a" / "b").is_dir()
    assert (container.path / "a" / "b" / "c.txt").read_bytes() == b"deep"
    assert os.listdir(container.path / "a") == ["b"]


def test_empty_directory_survives_a_remount(container, service, tmp_path):
    os.mkdir(container.path / "empty")
    # A second, fresh mount has no cache: it must find the directory on the service.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        imagefs_command("mount", str(mnt), "--url", service.url, "--token", service.token,
                        "--foreground", "--log", str(log), "--cache-dir", str(tmp_path / "c")),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, IMAGEFS_RUNTIME=str(tmp_path / "run")))
    try:
        wait_for_mount(proc, mnt, lambda: log.read_text() if log.exists() else "")
        assert (mnt / container.name / "empty").is_dir()
        assert os.listdir(mnt / container.name) == ["empty"]
        assert os.listdir(mnt / container.name / "empty") == []
        umount(proc, mnt)
    finally:
        cleanup(proc, mnt)


COUNT = 10_000


def test_ls_l_of_10000_objects_is_one_paged_listing(mounted, client):
    name = "ten-thousand"
    client.pithos.create_container(name)

    def create(i: int) -> None:
        # Empty: the service stores no block, only the row (about 3 ms a request).
        client.pithos.put_data(name, f"obj{i:05d}.img", b"")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(COUNT)))

    mark = mounted.proxy.mark()
    out = run("ls", "-l", str(mounted.path / name), timeout=300).stdout.splitlines()
    sent = mounted.requests(mark)

    assert out[0].startswith("total ")
    entries = out[1:]
    assert len(entries) == COUNT
    assert entries[0].startswith("-") and entries[0].endswith("obj00000.img")
    assert entries[-1].endswith(f"obj{COUNT - 1:05d}.img")
    # A paged listing (10,000 per page: at most a second, empty page, and one more
    # listing for the kernel's re-read), never a request per file.
    assert 1 <= len(listings(sent, name)) <= 4, [(r.method, r.path, r.query) for r in sent]
    assert len(object_requests(sent, name)) <= 10
    assert len(sent) <= 20, [(r.method, r.path, r.query) for r in sent]
    assert len(names_on_service(client, name)) == COUNT


def test_directory_listing_shows_sizes_and_types(container, client, tmp_path):
    client.pithos.put_data(container.name, "one.img", b"1" * 1000)
    client.pithos.make_directory(container.name, "dir")
    entries = {e.name: e for e in os.scandir(container.path)}
    assert set(entries) == {"one.img", "dir"}
    assert entries["dir"].is_dir()
    assert entries["one.img"].is_file()
    st = entries["one.img"].stat()
    assert st.st_size == 1000
    assert st.st_uid == os.getuid()
    assert Path(container.path / "one.img").read_bytes() == b"1" * 1000
