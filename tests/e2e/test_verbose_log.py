"""A DEBUG-level mount (``imagefs -v mount``) through cp, ls, setfattr and a sidecar write.

Its log is left in the test's directory for the end-of-run scan (tests/log_scan.py),
which reads every log of the session for every token the run issued: at DEBUG the
daemon logs each request it sends, so this is where a token would show first.
"""

from __future__ import annotations

import json
import os
import subprocess

from e2e_util import (CACHE_TIMEOUT, cleanup, imagefs_command, run, umount, wait_for_mount,
                      write_random)

MiB = 1 << 20


def test_a_verbose_mount_logs_every_step_but_no_token(service, client, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    output = tmp_path / "daemon.out"
    cmd = imagefs_command("-v", "mount", str(mnt), "--url", service.url,
                          "--token", service.token, "--foreground", "--log", str(log),
                          "--cache-dir", str(tmp_path / "cache"),
                          "--cache-timeout", str(CACHE_TIMEOUT))
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=dict(os.environ, IMAGEFS_RUNTIME=str(tmp_path / "run")))
    try:
        wait_for_mount(proc, mnt, lambda: log.read_text() if log.exists() else "")
        container = mnt / "verbose-log"
        container.mkdir()
        src = write_random(tmp_path / "disk.img", 5 * MiB + 17)
        run("cp", str(src), str(container / "disk.img"))
        assert "disk.img" in run("ls", "-l", str(container)).stdout
        run("setfattr", "-n", "user.pithos.meta.color", "-v", "blue", str(container / "disk.img"))
        assert "blue" in run("getfattr", "-d", str(container / "disk.img")).stdout
        run("cp", "/dev/stdin", str(container / "disk.img.meta"),
            input=json.dumps({"name": "Verbose", "properties": {"OS": "Linux"}}))
        umount(proc, mnt)
    finally:
        cleanup(proc, mnt)

    info = client.pithos.head("verbose-log", "disk.img")
    assert info.size == src.stat().st_size
    assert (info.meta or {})["Color"] == "blue"
    assert client.plankton.get(info.uuid).name == "Verbose"
    text = log.read_text()
    assert " DEBUG " in text and "Traceback" not in text
    assert service.token not in text + output.read_text()
