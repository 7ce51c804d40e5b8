"""Writing through the mount (behaviour.md §4 "Upload").

Every case checks the service as soon as the tool returns: the object exists
with the hash of the local file, so ``close()`` returned only once the
service had it all. Block POSTs are counted at the proxy.
"""

from __future__ import annotations

import os
import shutil

import pytest
from e2e_util import block_posts, file_top_hash, names_on_service, run, write_random

MiB = 1 << 20
BLOCK = 4 * MiB


def _python_write(src, dst) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        while chunk := f.read(3 * MiB + 17):  # odd sizes: writes straddle blocks
            out.write(chunk)


WRITERS = {
    "cp": lambda src, dst: run("cp", str(src), str(dst)),
    "dd": lambda src, dst: run("dd", f"if={src}", f"of={dst}", "bs=1M", "status=none"),
    "redirect": lambda src, dst: run("sh", "-c", f'cat "{src}" > "{dst}"'),
    "rsync": lambda src, dst: run("rsync", str(src), str(dst)),
    "python": _python_write,
}


@pytest.mark.parametrize("tool", sorted(WRITERS))
def test_tool_writes_the_object_before_close_returns(tool, container, client, tmp_path):
    local = write_random(tmp_path / "local.bin", 2 * BLOCK + 123_457)
    WRITERS[tool](local, container.path / "image.bin")

    info = client.pithos.head(container.name, "image.bin")
    assert info.size == local.stat().st_size
    assert info.hash == file_top_hash(local)
    # rsync's .image.bin.XXXXXX and friends must be gone.
    assert names_on_service(client, container.name) == {"image.bin"}
    assert os.stat(container.path / "image.bin").st_size == info.size
    run("cmp", str(local), str(container.path / "image.bin"))


def test_empty_file(container, client):
    (container.path / "empty").touch()
    info = client.pithos.head(container.name, "empty")
    assert info.size == 0
    assert (container.path / "empty").read_bytes() == b""


def test_copy_of_known_blocks_sends_no_block(mounted, container, client, tmp_path):
    local = write_random(tmp_path / "local.bin", 3 * BLOCK)
    mark = mounted.proxy.mark()
    run("cp", str(local), str(container.path / "first.bin"))
    assert len(block_posts(mounted.requests(mark), container.name)) == 3

    mark = mounted.proxy.mark()
    run("cp", str(local), str(container.path / "second.bin"))
    run("cp", str(container.path / "first.bin"), str(container.path / "third.bin"))
    assert block_posts(mounted.requests(mark)) == []
    for name in ("first.bin", "second.bin", "third.bin"):
        assert client.pithos.head(container.name, name).hash == file_top_hash(local)


def test_dd_into_the_middle_resends_one_block(mounted, container, client, tmp_path):
    local = write_random(tmp_path / "local.bin", 5 * BLOCK)
    run("cp", str(local), str(container.path / "big.bin"))
    patch = tmp_path / "patch"
    patch.write_bytes(os.urandom(4096))
    offset_blocks = (2 * BLOCK + 5 * 4096) // 4096

    mark = mounted.proxy.mark()
    run("dd", f"if={patch}", f"of={container.path / 'big.bin'}", "bs=4096",
        f"seek={offset_blocks}", "count=1", "conv=notrunc", "status=none")
    posts = block_posts(mounted.requests(mark))
    assert len(posts) == 1
    assert posts[0].sent == BLOCK

    run("dd", f"if={patch}", f"of={local}", "bs=4096", f"seek={offset_blocks}", "count=1",
        "conv=notrunc", "status=none")
    info = client.pithos.head(container.name, "big.bin")
    assert info.size == 5 * BLOCK
    assert info.hash == file_top_hash(local)
    run("cmp", str(local), str(container.path / "big.bin"))


def test_truncate_shrinks_and_extends(container, client, tmp_path):
    local = write_random(tmp_path / "local.bin", 2 * BLOCK + 1000)
    target = container.path / "t.bin"
    run("cp", str(local), str(target))

    for size in (BLOCK + 10, 0, 3 * BLOCK + 5):
        run("truncate", "-s", str(size), str(target))
        run("truncate", "-s", str(size), str(local))
        info = client.pithos.head(container.name, "t.bin")
        assert info.size == size
        assert info.hash == file_top_hash(local)
        assert target.stat().st_size == size
    run("cmp", str(local), str(target))


def test_append_with_shell_redirection(container, client):
    target = container.path / "log.txt"
    run("sh", "-c", f'echo first > "{target}"')
    run("sh", "-c", f'echo second >> "{target}"')
    run("sh", "-c", f'echo third >> "{target}"')
    assert target.read_text() == "first\nsecond\nthird\n"
    data = client.pithos.read(container.name, "log.txt", 0, 100)
    assert data == b"first\nsecond\nthird\n"


def test_overwrite_in_place(container, client, tmp_path):
    local = write_random(tmp_path / "local.bin", BLOCK + 4096)
    target = container.path / "o.bin"
    shutil.copyfile(local, target)
    for path in (target, local):
        with open(path, "r+b") as f:
            f.seek(BLOCK - 3)
            f.write(b"across the block boundary")
            f.seek(10)
            f.write(b"head")
    assert client.pithos.head(container.name, "o.bin").hash == file_top_hash(local)
    # Overwrite with something shorter: O_TRUNC then write.
    target.write_bytes(b"short")
    assert client.pithos.read(container.name, "o.bin", 0, 100) == b"short"
    assert client.pithos.head(container.name, "o.bin").size == 5
