"""Tier 4: the real ``imagefs mount`` in a subprocess, driven with real tools.

The ``mounted`` fixture runs the CLI exactly as a user would (``python -m
imagefs mount MNT --url ... --token ... --foreground --log FILE``) against the
session's embedded service, seen through a counting proxy (``proxy.py``) so
tests can assert what the daemon sent. It is module-scoped because mounting
is slow; each test works in its own container (``container`` fixture). The
``client`` fixture talks to the service directly, so every test checks both
views: the mount and the store.

Teardown unmounts with ``fusermount3 -u`` and asserts that it and the daemon
exit 0; if anything is left, it falls back to a lazy unmount and a kill. When
a test fails, the daemon's log lines written during that test are printed
(after a second, so the daemon's last lines are in).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e2e_proxy import CountingProxy  # noqa: E402
from e2e_util import (CACHE_TIMEOUT, Mount, cleanup, imagefs_command, tail,  # noqa: E402
                      umount, wait_for_mount)
from fault_proxy import DEADLINE, TIMEOUT, FaultProxy, start_mount, stop_mount  # noqa: E402

from imagefs.client.connection import Connection  # noqa: E402

# --- fixtures --------------------------------------------------------------------------


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.mount)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"e2e_report_{report.when}", report)


@pytest.fixture(scope="session")
def proxy(service):
    with CountingProxy(service.url) as p:
        yield p


@pytest.fixture(scope="session")
def client(service) -> Connection:
    conn = Connection.open(service.url, service.token)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def mounted(service, proxy, tmp_path_factory):
    base = tmp_path_factory.mktemp("mount")
    mnt = base / "mnt"
    mnt.mkdir()
    logfile = base / "daemon.log"
    output = base / "daemon.out"
    env = dict(os.environ, IMAGEFS_RUNTIME=str(base / "run"))
    cmd = imagefs_command("mount", str(mnt), "--url", proxy.url_for(service.url),
                          "--token", service.token, "--foreground", "--log", str(logfile),
                          "--cache-dir", str(base / "cache"),
                          "--cache-timeout", str(CACHE_TIMEOUT))
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    mount = Mount(mnt, logfile, output, proc, proxy, service.uuid)
    try:
        wait_for_mount(proc, mnt, mount.describe)
        yield mount
        umount(proc, mnt)
        log_text = tail(logfile, lines=100000)
        assert "Traceback" not in log_text, f"the daemon logged a traceback:\n{log_text[-6000:]}"
    finally:
        cleanup(proc, mnt)


@pytest.fixture(autouse=True)
def _daemon_log_on_failure(request):
    """Print what the daemon logged during a failed test."""
    if "mounted" not in request.fixturenames:
        yield
        return
    mount: Mount = request.getfixturevalue("mounted")
    start = mount.log_size()
    yield
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed:
        time.sleep(1)
        print(f"\n--- daemon log during {request.node.name} ---\n{tail(mount.log, start)}")


_names = itertools.count(1)


@dataclass
class Container:
    name: str
    path: Path


@pytest.fixture
def container(mounted, request) -> Container:
    """A fresh container, created with mkdir at the top of the mount."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"c{next(_names)}-{stem}"
    path = mounted.path / name
    os.mkdir(path)
    return Container(name, path)


# -- the fault tiers (test_faults*.py): a fault proxy and a mount behind it, per module ----


@pytest.fixture(scope="module")
def fproxy(service):
    with FaultProxy(service.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def fmount(service, fproxy, tmp_path_factory, request):
    """The mount behind the fault proxy, with a short deadline and read timeout."""
    mount = start_mount(tmp_path_factory.mktemp(request.module.__name__), fproxy, service.url,
                        service.token, service.uuid, deadline=DEADLINE, timeout=TIMEOUT)
    try:
        yield mount
    finally:
        fproxy.disarm()
        stop_mount(mount)
