"""Errors reach the shell as exact errnos and never kill the daemon
(behaviour.md §6); long uploads are visible with ``imagefs status``."""

from __future__ import annotations

import errno
import os
import subprocess

from e2e_util import expect_errno, imagefs_command, run, wait_until

MiB = 1 << 20


def test_errno_spot_checks(container):
    missing = container.path / "missing"
    expect_errno(errno.ENOENT, os.stat, missing)
    expect_errno(errno.ENOENT, open, missing, "rb")
    expect_errno(errno.ENOENT, os.unlink, missing)
    expect_errno(errno.ENOENT, os.rmdir, missing)
    expect_errno(errno.ENOENT, os.rename, missing, container.path / "elsewhere")
    expect_errno(errno.ENOENT, open, container.path / "no-dir" / "file", "wb")
    expect_errno(errno.ENOENT, os.listdir, container.path.parent / "no-such-container")

    (container.path / "file").write_bytes(b"f")
    os.mkdir(container.path / "dir")
    (container.path / "dir" / "inner").write_bytes(b"i")
    expect_errno(errno.ENOTDIR, os.listdir, container.path / "file")
    expect_errno(errno.EISDIR, open, container.path / "dir", "wb")
    expect_errno(errno.EEXIST, os.mkdir, container.path / "dir")
    expect_errno(errno.ENOTEMPTY, os.rmdir, container.path / "dir")
    expect_errno(errno.ENOTDIR, os.rmdir, container.path / "file")


def test_names_over_the_service_limits_are_enametoolong(mounted, container):
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mounted.path / ("c" * 300))
    # Each component is fine for the kernel; the whole object name (> 1024) is not.
    deep = container.path
    for i in range(4):
        deep = deep / (str(i) * 250)
        os.mkdir(deep)
    expect_errno(errno.ENAMETOOLONG, open, deep / ("f" * 250), "wb")
    # The daemon is still there and serving.
    assert mounted.proc.poll() is None
    (container.path / "after").write_bytes(b"still serving")
    assert (container.path / "after").read_bytes() == b"still serving"


def test_status_lists_a_long_upload(mounted, container, client):
    """The writer is another process: a fork of a process holding the file open
    (the status command's, here) closes the inherited descriptor, and every
    close of a descriptor is a flush, i.e. an upload."""
    target = container.path / "long-upload.img"
    writer = subprocess.Popen(["dd", f"of={target}", "bs=1M", "iflag=fullblock",
                               "status=none"], stdin=subprocess.PIPE)
    try:
        chunk = os.urandom(MiB)
        for _ in range(48):
            writer.stdin.write(chunk)
        writer.stdin.flush()

        def listed():
            out = run(*imagefs_command("status", str(mounted.path))).stdout
            return out if "long-upload.img" in out and "48 MiB" in out else None

        out = wait_until(listed, 15, interval=0.2, what="the upload in imagefs status")
        assert out.splitlines()[0].split() == ["HASHED", "SENT", "TOTAL", "RATE", "AGE", "PATH"]
        line = next(line for line in out.splitlines() if "long-upload.img" in line)
        assert line.endswith(f"/{container.name}/long-upload.img")
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert client.pithos.head(container.name, "long-upload.img").size == 48 * MiB
    out = run(*imagefs_command("status", str(mounted.path))).stdout
    assert out.strip() == "no uploads in progress"


def test_status_and_umount_refuse_what_is_not_an_imagefs_mount(tmp_path):
    for command in ("status", "umount"):
        done = run(*imagefs_command(command, str(tmp_path)), check=False)
        assert done.returncode == 1
        assert done.stderr.strip() == f"imagefs {command}: {tmp_path} is not mounted"
