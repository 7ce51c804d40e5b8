"""The pyfuse3 glue: errors become errnos at one boundary; attributes carry the right knobs."""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest

from imagefs.fs.tree import ROOT_INODE
from imagefs.fuse.ops import Operations


@pytest.fixture
def ops(vfs):
    return Operations(vfs.fs)


async def test_errors_become_errnos(ops, vfs, fresh):
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await ops.lookup(ROOT_INODE, fresh("missing").encode(), None)
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await ops.lookup(ROOT_INODE, b"\xff\xfe", None)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await ops.mkdir(ROOT_INODE, b".Trash-1000", 0o755, None)
    assert exc.value.errno == errno.EACCES
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await ops.read(12345, 0, 10)
    assert exc.value.errno == errno.EBADF
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await ops.getxattr(ROOT_INODE, b"user.nothing", None)
    assert exc.value.errno == pyfuse3.ENOATTR


async def test_an_unexpected_exception_is_eio_not_a_dead_mount(ops, vfs, monkeypatch, caplog):
    async def broken(ino):
        raise KeyError("bug")
    monkeypatch.setattr(vfs.fs, "getattr", broken)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await ops.getattr(ROOT_INODE, None)
    assert exc.value.errno == errno.EIO
    assert "bug" in caplog.text


async def test_attributes_carry_timeouts_blksize_and_owner(ops, vfs, fresh):
    c = await vfs.container(fresh())
    await vfs.write_file(f"{c}/f", b"12345")
    entry = await ops.lookup(await vfs.ino(c), b"f", None)
    assert entry.entry_timeout == entry.attr_timeout == vfs.fs.cache_timeout == 2.0
    assert entry.st_blksize == 4 * 1024 * 1024
    assert entry.st_mode == 0o100644 and entry.st_size == 5
    assert entry.st_uid == os.getuid() and entry.st_gid == os.getgid()
    root = await ops.getattr(ROOT_INODE, None)
    assert root.st_mode == 0o40755
    fi = await ops.open(entry.st_ino, os.O_RDONLY, None)
    assert fi.keep_cache is False
    assert await ops.read(fi.fh, 0, 10) == b"12345"
    await ops.release(fi.fh)
    await ops.release(fi.fh)  # twice: release never raises


def test_fuse_options():
    options = Operations.fuse_options("imagefs:test")
    assert "default_permissions" not in options
    assert {"fsname=imagefs:test", "subtype=imagefs"} <= options
