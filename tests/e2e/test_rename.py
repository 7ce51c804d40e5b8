"""Rename and delete (behaviour.md §4 "Rename", "Delete").

A rename is a server-side move: the object's uuid is kept and no data goes
through the mount (no block POST, no object GET).
"""

from __future__ import annotations

import errno
import os

import pytest
from e2e_util import (
    block_posts, expect_errno, names_on_service, object_requests, run, write_random,
)

from imagefs import errors

MiB = 1 << 20


def _no_data_moved(mounted, mark, containers):
    sent = mounted.requests(mark)
    assert block_posts(sent) == []
    for c in containers:
        gets = [r for r in object_requests(sent, c, method="GET") if r.served]
        assert gets == [], [(r.path, r.served) for r in gets]


def test_mv_file_within_a_container_keeps_the_uuid(mounted, container, client, tmp_path):
    local = write_random(tmp_path / "f", 5 * MiB)
    run("cp", str(local), str(container.path / "a.img"))
    before = client.pithos.head(container.name, "a.img")

    mark = mounted.proxy.mark()
    run("mv", str(container.path / "a.img"), str(container.path / "b.img"))
    _no_data_moved(mounted, mark, [container.name])

    after = client.pithos.head(container.name, "b.img")
    assert (after.uuid, after.hash) == (before.uuid, before.hash)
    with pytest.raises(errors.NotFound):
        client.pithos.head(container.name, "a.img")
    assert os.listdir(container.path) == ["b.img"]
    expect_errno(errno.ENOENT, os.stat, container.path / "a.img")
    run("cmp", str(local), str(container.path / "b.img"))


def test_mv_file_across_containers(mounted, container, client):
    other = container.path.parent / (container.name + "-dst")
    os.mkdir(other)
    (container.path / "x.img").write_bytes(b"payload" * 1000)
    before = client.pithos.head(container.name, "x.img")

    mark = mounted.proxy.mark()
    run("mv", str(container.path / "x.img"), str(other / "y.img"))
    _no_data_moved(mounted, mark, [container.name, other.name])

    assert client.pithos.head(other.name, "y.img").uuid == before.uuid
    assert names_on_service(client, container.name) == set()
    assert (other / "y.img").read_bytes() == b"payload" * 1000
    assert os.listdir(container.path) == []


def _tree(root):
    os.makedirs(root / "sub")
    (root / "one").write_bytes(b"1")
    (root / "sub" / "two").write_bytes(b"22")


def test_mv_directory_within_a_container(mounted, container, client):
    _tree(container.path / "dir")
    before = {o.name: o.uuid for o in client.pithos.list_objects(container.name)}
    assert set(before) >= {"dir/one", "dir/sub/two"}

    mark = mounted.proxy.mark()
    run("mv", str(container.path / "dir"), str(container.path / "moved"))
    _no_data_moved(mounted, mark, [container.name])

    after = {o.name: o.uuid for o in client.pithos.list_objects(container.name)}
    assert not any(n.startswith("dir/") or n == "dir" for n in after)
    assert after["moved/one"] == before["dir/one"]
    assert after["moved/sub/two"] == before["dir/sub/two"]
    assert (container.path / "moved" / "sub" / "two").read_bytes() == b"22"
    assert os.listdir(container.path) == ["moved"]


def test_mv_directory_across_containers(mounted, container, client):
    other = container.path.parent / (container.name + "-dst")
    os.mkdir(other)
    _tree(container.path / "dir")
    before = {o.name: o.uuid for o in client.pithos.list_objects(container.name)}

    run("mv", str(container.path / "dir"), str(other / "dir"))

    after = {o.name: o.uuid for o in client.pithos.list_objects(other.name)}
    assert after["dir/one"] == before["dir/one"]
    assert after["dir/sub/two"] == before["dir/sub/two"]
    assert names_on_service(client, container.name) == set()
    assert sorted(os.listdir(other / "dir")) == ["one", "sub"]


def test_rename_over_an_existing_file_replaces_it(container, client):
    (container.path / "new").write_bytes(b"new content")
    (container.path / "old").write_bytes(b"old content")
    new_uuid = client.pithos.head(container.name, "new").uuid

    os.rename(container.path / "new", container.path / "old")

    info = client.pithos.head(container.name, "old")
    assert info.uuid == new_uuid
    assert client.pithos.read(container.name, "old", 0, 100) == b"new content"
    assert names_on_service(client, container.name) == {"old"}
    assert (container.path / "old").read_bytes() == b"new content"
    assert os.listdir(container.path) == ["old"]


def test_rm_deletes_the_object(container, client):
    (container.path / "gone").write_bytes(b"bye")
    run("rm", str(container.path / "gone"))
    with pytest.raises(errors.NotFound):
        client.pithos.head(container.name, "gone")
    expect_errno(errno.ENOENT, os.stat, container.path / "gone")
    assert os.listdir(container.path) == []


def test_rmdir_of_a_non_empty_directory_is_enotempty(container, client):
    os.mkdir(container.path / "d")
    (container.path / "d" / "f").write_bytes(b"f")
    expect_errno(errno.ENOTEMPTY, os.rmdir, container.path / "d")
    assert names_on_service(client, container.name) >= {"d/f"}
    os.unlink(container.path / "d" / "f")
    os.rmdir(container.path / "d")
    assert names_on_service(client, container.name) == set()
    assert os.listdir(container.path) == []
