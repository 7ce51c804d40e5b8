"""Other clients' changes show up within the cache lifetime; one's own at once
(behaviour.md §4). Polls with a bound; never asserts the exact delay."""

from __future__ import annotations

import errno
import os

from e2e_util import CACHE_TIMEOUT, expect_errno, wait_until

BOUND = CACHE_TIMEOUT + 10


def _read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def test_upload_by_another_client_appears(container, client):
    assert os.listdir(container.path) == []  # the mount has now cached the empty listing
    client.pithos.put_data(container.name, "from-kamaki.img", b"uploaded elsewhere")
    wait_until(lambda: "from-kamaki.img" in os.listdir(container.path), BOUND,
               what="the new object in the listing")
    assert (container.path / "from-kamaki.img").read_bytes() == b"uploaded elsewhere"


def test_change_and_delete_by_another_client_appear(container, client):
    target = container.path / "shared.txt"
    target.write_bytes(b"version one")
    assert target.read_bytes() == b"version one"
    client.pithos.put_data(container.name, "shared.txt", b"version two, longer")
    wait_until(lambda: _read(target) == b"version two, longer", BOUND, what="the new content")
    assert target.stat().st_size == len(b"version two, longer")

    client.pithos.delete(container.name, "shared.txt")
    wait_until(lambda: "shared.txt" not in os.listdir(container.path) and not target.exists(),
               BOUND, what="the deletion")
    expect_errno(errno.ENOENT, os.stat, target)
    expect_errno(errno.ENOENT, open, target, "rb")


def test_own_changes_are_visible_at_once(container, client):
    os.listdir(container.path)
    target = container.path / "mine.txt"
    target.write_bytes(b"one")
    assert os.listdir(container.path) == ["mine.txt"]
    assert target.stat().st_size == 3
    target.write_bytes(b"three")
    assert target.stat().st_size == 5
    assert target.read_bytes() == b"three"
    os.rename(target, container.path / "renamed.txt")
    assert os.listdir(container.path) == ["renamed.txt"]
    os.unlink(container.path / "renamed.txt")
    assert os.listdir(container.path) == []
    expect_errno(errno.ENOENT, os.stat, container.path / "renamed.txt")
    assert list(client.pithos.list_objects(container.name)) == []
