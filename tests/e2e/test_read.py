"""Reading through the mount (behaviour.md §4 "Download")."""

from __future__ import annotations

from e2e_util import object_requests, run, write_random

MiB = 1 << 20
BLOCK = 4 * MiB


def test_cmp_of_a_multi_block_file(container, client, tmp_path):
    local = write_random(tmp_path / "local.bin", 3 * BLOCK + 777)
    client.pithos.upload(container.name, "multi.bin", local)
    assert (container.path / "multi.bin").stat().st_size == local.stat().st_size
    run("cmp", str(local), str(container.path / "multi.bin"))
    # Reads at odd offsets across block boundaries.
    with open(local, "rb") as a, open(container.path / "multi.bin", "rb") as b:
        for offset in (0, BLOCK - 5, 2 * BLOCK + 1, 3 * BLOCK + 700, 3 * BLOCK + 777):
            a.seek(offset)
            b.seek(offset)
            assert b.read(100) == a.read(100)


def test_reading_the_head_of_a_big_object_downloads_a_part(mounted, container, client,
                                                          tmp_path):
    size = 64 * MiB
    local = write_random(tmp_path / "big.bin", size)
    client.pithos.upload(container.name, "big.bin", local)

    mark = mounted.proxy.mark()
    with open(container.path / "big.bin", "rb") as f:
        head = f.read(MiB)
    served = sum(r.served for r in object_requests(mounted.requests(mark), container.name,
                                                   "big.bin", "GET"))
    with open(local, "rb") as f:
        assert head == f.read(MiB)
    # Read-ahead may fetch a few blocks; never the whole image.
    assert MiB <= served <= size // 2, served
