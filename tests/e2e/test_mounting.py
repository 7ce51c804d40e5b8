"""Mounting and unmounting (behaviour.md §2): every way in, every early failure.

Failures come before anything is mounted, as one line on stderr and a
non-zero exit code. Each test here runs its own mount.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_util import (
    cleanup, imagefs_command, mount_fields, mount_listed, process_running, run, umount,
    wait_for_mount,
)

from imagefs.client.connection import Connection
from imagefs.service.launcher import read_default_token, read_service_file


def _mountpoint(tmp_path: Path) -> Path:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return mnt


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, IMAGEFS_RUNTIME=str(tmp_path / "run"),
                IMAGEFS_CACHE=str(tmp_path / "cache"), **extra)


def _fails_in_one_line(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_bad_token_fails_before_mounting(service, tmp_path):
    mnt = _mountpoint(tmp_path)
    done = run(*imagefs_command("mount", str(mnt), "--url", service.url, "--token", "bogus"),
               check=False, env=_env(tmp_path))
    _fails_in_one_line(done, "token refused")
    assert not mount_listed(mnt)


def test_unreachable_url_fails_before_mounting(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mnt = _mountpoint(tmp_path)
    url = f"http://127.0.0.1:{port}/identity/v2.0"
    done = run(*imagefs_command("mount", str(mnt), "--url", url, "--token", "t0k3n"),
               check=False, env=_env(tmp_path))
    _fails_in_one_line(done, "cannot reach", url)
    assert not mount_listed(mnt)


@pytest.mark.parametrize("problem", ["not empty", "not a directory", "does not exist"])
def test_bad_mountpoint_fails_before_mounting(problem, service, tmp_path):
    mnt = tmp_path / "mnt"
    if problem == "not empty":
        mnt.mkdir()
        (mnt / "something").write_text("x")
    elif problem == "not a directory":
        mnt.write_text("x")
    done = run(*imagefs_command("mount", str(mnt), "--url", service.url,
                                "--token", service.token), check=False, env=_env(tmp_path))
    assert done.returncode == 1
    line = _fails_in_one_line(done, problem)
    assert line.startswith(f"imagefs mount: mount point {mnt} "), line
    assert not mount_listed(mnt)


def test_cloud_from_kamakirc_in_the_background(service, client, tmp_path):
    """`--cloud NAME` reads kamaki's file; the parent returns once the mount is up."""
    kamakirc = tmp_path / "kamakirc"
    kamakirc.write_text(f'[global]\ndefault_cloud = test\n\n[cloud "test"]\n'
                        f"url = {service.url}\ntoken = {service.token}\n")
    client.pithos.create_container("kamakirc-test")
    client.pithos.put_data("kamakirc-test", "hello.txt", b"hello from the service")
    mnt = _mountpoint(tmp_path)
    env = _env(tmp_path, KAMAKIRC=str(kamakirc))

    done = run(*imagefs_command("mount", str(mnt), "--cloud", "test"), env=env, timeout=60)
    try:
        assert done.stderr == ""
        assert os.path.ismount(mnt)  # up as soon as the parent returned
        assert (mnt / "kamakirc-test" / "hello.txt").read_bytes() == b"hello from the service"
        pidfiles = list((tmp_path / "run" / "mounts").iterdir())
        assert len(pidfiles) == 1
        pid = int(pidfiles[0].read_text())
        assert os.getsid(pid) == pid  # its own session: it outlives the terminal
        # In the background the log goes to the cache directory.
        log_text = (tmp_path / "cache" / "mount.log").read_text()
        assert "serving" in log_text
        assert service.token not in log_text

        status = run(*imagefs_command("status", str(mnt)), env=env)
        assert status.stdout.strip() == "no uploads in progress"

        run(*imagefs_command("umount", str(mnt)), env=env)
        assert not mount_listed(mnt)
        assert not process_running(pid)  # umount returned after the daemon exited
        assert list((tmp_path / "run" / "mounts").iterdir()) == []
    finally:
        cleanup(None, mnt)


def test_unknown_cloud_name_fails_in_one_line(tmp_path):
    kamakirc = tmp_path / "kamakirc"
    kamakirc.write_text('[cloud "other"]\nurl = http://127.0.0.1:9/\ntoken = x\n')
    mnt = _mountpoint(tmp_path)
    done = run(*imagefs_command("mount", str(mnt), "--cloud", "test"), check=False,
               env=_env(tmp_path, KAMAKIRC=str(kamakirc)))
    _fails_in_one_line(done, '[cloud "test"]', "other")


def test_sigterm_unmounts_cleanly(service, client, tmp_path):
    mnt = _mountpoint(tmp_path)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        imagefs_command("mount", str(mnt), "--url", service.url, "--token", service.token,
                        "--foreground", "--log", str(log)),
        stdin=subprocess.DEVNULL, env=_env(tmp_path))
    try:
        wait_for_mount(proc, mnt, lambda: log.read_text() if log.exists() else "")
        client.pithos.create_container("sigterm-test")
        (mnt / "sigterm-test" / "written.txt").write_bytes(b"before the signal")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not mount_listed(mnt)
        assert client.pithos.read("sigterm-test", "written.txt", 0, 100) == b"before the signal"
    finally:
        cleanup(proc, mnt)


# --- the embedded service --------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_data(tmp_path_factory):
    """A data directory for the embedded service that `imagefs mount` starts; stopped after."""
    data = tmp_path_factory.mktemp("embedded") / "data"
    yield data
    info = read_service_file(data)
    if info:
        try:
            os.kill(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(info["pid"], signal.SIGKILL)


def _announced(stdout: str) -> tuple[str, str]:
    url = token = ""
    for line in stdout.splitlines():
        if line.startswith("embedded service: "):
            url = line.split(": ", 1)[1].split()[0]
        elif line.startswith("token: "):
            token = line.split(": ", 1)[1]
    assert url and token, stdout
    return url, token


def test_default_mount_starts_the_embedded_service(embedded_data, tmp_path):
    mnt = _mountpoint(tmp_path)
    env = _env(tmp_path, IMAGEFS_DATA=str(embedded_data))
    done = run(*imagefs_command("mount", str(mnt)), env=env, timeout=90)
    try:
        url, token = _announced(done.stdout)
        assert os.path.ismount(mnt)
        assert "pithos" in os.listdir(mnt)
        (mnt / "pithos" / "via-mount.txt").write_bytes(b"written through the mount")
        # Another client (kamaki, say) reaches the same data with what was printed.
        with Connection.open(url, token) as conn:
            assert conn.pithos.read("pithos", "via-mount.txt", 0, 100) == \
                b"written through the mount"
        run(*imagefs_command("umount", str(mnt)), env=env)
        assert not mount_listed(mnt)
    finally:
        cleanup(None, mnt)


def test_fstab_line_mounts_through_mount_fuse(embedded_data, tmp_path):
    """The documented fstab line, through mount(8) -> mount.fuse3 -> mount.imagefs."""
    mnt = _mountpoint(tmp_path)
    fstab = tmp_path / "fstab"
    # mount(8) runs helpers without PATH: the program is named by its full path.
    helper = Path(sys.executable).parent / "mount.imagefs"
    fstab.write_text(f"{helper}#imagefs  {mnt}  fuse  "
                     f"data={embedded_data},noauto,_netdev,x-systemd.automount  0 0\n")
    env = _env(tmp_path)
    before = read_service_file(embedded_data)
    run("mount", "-T", str(fstab), str(mnt), env=env, timeout=90)
    try:
        assert os.path.ismount(mnt)
        assert mount_fields(mnt)[2] == "fuse.imagefs"
        (mnt / "pithos" / "via-fstab.txt").write_bytes(b"written through the fstab mount")
        info = read_service_file(embedded_data)
        if before is not None and process_running(before["pid"]):
            assert info["pid"] == before["pid"]  # a running service is reused
        with Connection.open(info["url"], read_default_token(embedded_data)[1]) as conn:
            assert conn.pithos.read("pithos", "via-fstab.txt", 0, 100) == \
                b"written through the fstab mount"
        run("umount", str(mnt))
        assert not mount_listed(mnt)
    finally:
        cleanup(None, mnt)


def test_mount_helper_called_as_mount8_calls_it(service, client, tmp_path):
    """What mount(8) runs for `-t fuse.imagefs` once /sbin/mount.fuse.imagefs links to
    mount.imagefs: `HELPER SOURCE MOUNTPOINT -o OPTIONS`."""
    mnt = _mountpoint(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(service.token + "\n")
    client.pithos.create_container("helper-test")
    helper = str(Path(sys.executable).parent / "mount.imagefs")
    run(helper, service.url, str(mnt), "-o",
        f"rw,nosuid,nodev,noatime,token_file={token_file},cache_timeout=1", env=_env(tmp_path))
    try:
        assert os.path.ismount(mnt)
        options = mount_fields(mnt)[3].split(",")
        assert {"nosuid", "nodev", "noatime"} <= set(options)
        assert "helper-test" in os.listdir(mnt)
        run(*imagefs_command("umount", str(mnt)), env=_env(tmp_path))
        assert not mount_listed(mnt)
    finally:
        cleanup(None, mnt)
    # -f is mount(8)'s "fake": nothing happens.
    run(helper, "imagefs", str(mnt), "-f", "-o", "data=/nonexistent")
    assert not mount_listed(mnt)


def test_foreground_mount_and_fusermount(service, tmp_path):
    mnt = _mountpoint(tmp_path)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        imagefs_command("mount", str(mnt), "--url", service.url, "--token", service.token,
                        "-f", "--log", str(log)),
        stdin=subprocess.DEVNULL, env=_env(tmp_path))
    try:
        wait_for_mount(proc, mnt, lambda: log.read_text() if log.exists() else "")
        os.listdir(mnt)
        umount(proc, mnt)
        assert service.token not in log.read_text()
    finally:
        cleanup(proc, mnt)


def test_mount_of_a_killed_daemon(service, tmp_path):
    """kill -9 leaves a dead mount: mounting again says so, imagefs umount clears it."""
    mnt = _mountpoint(tmp_path)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        imagefs_command("mount", str(mnt), "--url", service.url, "--token", service.token,
                        "-f", "--log", str(log)),
        stdin=subprocess.DEVNULL, env=_env(tmp_path))
    try:
        wait_for_mount(proc, mnt, lambda: log.read_text() if log.exists() else "")
        proc.kill()
        proc.wait(timeout=10)
        assert mount_listed(mnt)
        done = run(*imagefs_command("mount", str(mnt), "--url", service.url,
                                    "--token", service.token), check=False, env=_env(tmp_path))
        _fails_in_one_line(done, "dead mount", f"fusermount3 -u {mnt}")
        done = run(*imagefs_command("umount", str(mnt)), env=_env(tmp_path))
        assert "is gone" in done.stderr
        assert not mount_listed(mnt)
    finally:
        cleanup(proc, mnt)
