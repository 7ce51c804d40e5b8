"""``imagefs serve`` as a process, and ``launcher.ensure_running`` (server.py, launcher.py)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time

import pytest
import requests

from imagefs.errors import UsageError
from imagefs.service import launcher, server
from svc_http import Api


def _wait_gone(path, timeout=15.0):
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_parse_listen():
    assert server.parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert server.parse_listen(":8080") == ("127.0.0.1", 8080)
    assert server.parse_listen("8080") == ("127.0.0.1", 8080)
    assert server.parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("host:port", "1.2.3.4:70000"):
        with pytest.raises(UsageError):
            server.parse_listen(bad)


def test_ready_lines_service_file_and_clean_stop(tmp_path):
    data = tmp_path / "data"
    with launcher.running_service(data, "--workers", "1", "--threads", "2") as svc:
        url, user, token = svc.output
        assert url.startswith("imagefs service: http://127.0.0.1:")
        assert url.endswith("/identity/v2.0")
        assert user == f"user: {svc.uuid} {svc.name}" and svc.name == "user"
        assert token == f"token: {svc.token}"
        info = json.loads((data / "service.json").read_text())
        assert info == {"url": svc.url, "pid": svc.process.pid}
        assert stat.S_IMODE((data / "service.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert (data / "default.token").read_text().split() == [svc.uuid, svc.token]
        proc = svc.process
    assert proc.returncode == 0                      # SIGTERM is a clean stop
    assert not (data / "service.json").exists()


def test_sigint_stops_cleanly_and_restart_keeps_the_default_user(tmp_path):
    data = tmp_path / "data"
    with launcher.running_service(data, "--workers", "1") as first:
        first.process.send_signal(signal.SIGINT)
        first.process.wait(15)
        assert first.process.returncode == 0
        assert not (data / "service.json").exists()
    with launcher.running_service(data, "--workers", "1") as second:
        assert (second.uuid, second.token) == (first.uuid, first.token)
        api = Api(second.base, second.token, second.uuid)
        assert api.head(api.path("pithos")).status_code == 204


def test_busy_port_fails_with_a_nonzero_exit(tmp_path, service):
    port = service.base.rsplit(":", 1)[1]
    proc = subprocess.run(launcher.serve_argv(tmp_path / "data", f"127.0.0.1:{port}"),
                          capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert b"token:" not in proc.stdout


def test_many_requests_on_one_keepalive_connection(service):
    api = Api(service.base, service.token, service.uuid)
    for _ in range(50):
        assert api.head(api.path("pithos")).status_code == 204


def test_real_synnefo_switch(tmp_path):
    """--real-synnefo: merge on re-registration (D2), {"images": [...]} (D5), HEAD status (D1)."""
    with launcher.running_service(tmp_path / "data", "--workers", "1", "--real-synnefo") as svc:
        api = Api(svc.base, svc.token, svc.uuid)
        api.upload("pithos", "img", b"image data")
        loc = f"pithos://{svc.uuid}/pithos/img"
        r = api.post(api.img + "/images/", headers={
            "X-Image-Meta-Name": "one", "X-Image-Meta-Location": loc,
            "X-Image-Meta-Property-A": "1", "X-Image-Meta-Disk-Format": "extdump"})
        assert r.status_code == 200
        assert r.headers["x-image-meta-status"] == "AVAILABLE"
        r = api.post(api.img + "/images/", headers={
            "X-Image-Meta-Name": "two", "X-Image-Meta-Location": loc,
            "X-Image-Meta-Property-B": "2"})
        assert r.headers["x-image-meta-name"] == "two"
        assert r.headers["x-image-meta-property-a"] == "1"          # merged, not replaced
        assert r.headers["x-image-meta-property-b"] == "2"
        image_id = r.headers["x-image-meta-id"]
        r = api.put(f"{api.img}/images/{image_id}", headers={"X-Image-Meta-Status": "weird"})
        assert r.headers["x-image-meta-status"] == "UNKNOWN"
        body = api.get(api.img + "/images/").json()
        assert list(body) == ["images"]
        assert [i["status"] for i in body["images"]] == ["weird"]


class _CountingStore:
    """Stands in for the Store in gc_loop: counts collections, takes a while like a real one."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def gc(self):
        with self.lock:
            self.calls += 1
        time.sleep(0.05)
        return 0, 0


def test_gc_runs_once_per_interval_whatever_the_number_of_workers(tmp_path, monkeypatch):
    """Several workers run the loop; the flock and the lock file's mtime elect one per period."""
    monkeypatch.setattr(server.threading.Event, "wait",
                        lambda self, timeout=None: (time.sleep(0.01), self.is_set())[1])
    store = _CountingStore()
    stop = threading.Event()
    lock = tmp_path / server.GC_LOCK
    lock.touch()
    os.utime(lock, (0, 0))                        # last collection long ago
    threads = [threading.Thread(target=server.gc_loop, args=(store, tmp_path, 3600.0, stop))
               for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    assert store.calls == 1                       # once for the period, not once per worker


def test_ensure_running_starts_reuses_and_replaces_a_dead_service(tmp_path):
    data = tmp_path / "data"
    cloud = launcher.ensure_running(data, timeout=30)
    pid = json.loads((data / "service.json").read_text())["pid"]
    try:
        assert cloud.url.startswith("http://127.0.0.1:") and cloud.url.endswith("/identity/v2.0")
        assert cloud.token == (data / "default.token").read_text().split()[1]
        r = requests.post(cloud.url + "/tokens",
                          data=json.dumps({"auth": {"token": {"id": cloud.token}}}))
        assert r.status_code == 200
        again = launcher.ensure_running(data)
        assert again == cloud
        assert json.loads((data / "service.json").read_text())["pid"] == pid
        assert cloud.token not in (data / "service.log").read_text()
        # A dead service leaves a stale service.json: the next call starts a new one.
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while launcher.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        replaced = launcher.ensure_running(data)
        new_pid = json.loads((data / "service.json").read_text())["pid"]
        assert new_pid != pid and replaced.token == cloud.token
        pid = new_pid
    finally:
        if launcher.pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        assert _wait_gone(data / "service.json")
