"""Tier 5: the model tests drive a real mount (as tier 4 does) and compare with a reference.

``model_mount`` runs ``python -m imagefs mount --foreground`` against the
session's service, as the end-to-end tier does (its helpers are reused from
``tests/e2e/e2e_util.py``), once per module. ``harness`` gives a test a
``Harness`` over two fresh containers. The terminal summary says how many
operations the model tier ran, and what they answered.

``IMAGEFS_MODEL_VERBOSE=1`` mounts with ``-v`` (a DEBUG daemon log);
``IMAGEFS_MODEL_TRACE=1`` prints each run's operations (with ``-s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "e2e"))
sys.path.insert(0, str(Path(__file__).parent))

from e2e_util import (CACHE_TIMEOUT, cleanup, imagefs_command, tail, umount,  # noqa: E402
                      wait_for_mount)
from model_harness import COUNTERS, new_harness  # noqa: E402

from imagefs.client.connection import Connection  # noqa: E402


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.mount)


def pytest_terminal_summary(terminalreporter):
    if COUNTERS.runs:
        terminalreporter.write_line(
            f"model tier: {COUNTERS.ops} operations on the mount ({COUNTERS.failed_ops} "
            f"ending in an expected errno) in {COUNTERS.runs} runs, "
            f"{COUNTERS.service_checks} comparisons with the service")
        outcomes = sorted(COUNTERS.outcomes.items(), key=lambda kv: (kv[0][0], -kv[1]))
        terminalreporter.write_line("  " + ", ".join(f"{kind} {err} {n}"
                                                     for (kind, err), n in outcomes))


class ModelMount:
    def __init__(self, path: Path, log: Path, output: Path, proc: subprocess.Popen) -> None:
        self.path = path
        self.log = log
        self.output = output
        self.proc = proc

    def describe(self, since: int = 0) -> str:
        return (f"--- daemon output ---\n{tail(self.output)}\n"
                f"--- daemon log ---\n{tail(self.log, since)}")

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0


@pytest.fixture(scope="module")
def model_mount(service, tmp_path_factory):
    base = tmp_path_factory.mktemp("model")
    mnt = base / "mnt"
    mnt.mkdir()
    logfile, output = base / "daemon.log", base / "daemon.out"
    env = dict(os.environ, IMAGEFS_RUNTIME=str(base / "run"))
    verbose = ["-v"] if os.environ.get("IMAGEFS_MODEL_VERBOSE") else []  # a DEBUG log
    cmd = imagefs_command(*verbose, "mount", str(mnt), "--url", service.url,
                          "--token", service.token, "--foreground", "--log", str(logfile),
                          "--cache-dir", str(base / "cache"),
                          "--cache-timeout", str(CACHE_TIMEOUT))
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    mount = ModelMount(mnt, logfile, output, proc)
    try:
        wait_for_mount(proc, mnt, mount.describe)
        yield mount
        umount(proc, mnt)
        log_text = tail(logfile, lines=100000)
        assert "Traceback" not in log_text, f"the daemon logged a traceback:\n{log_text[-6000:]}"
    finally:
        cleanup(proc, mnt)


@pytest.fixture(scope="session")
def model_client(service) -> Connection:
    conn = Connection.open(service.url, service.token)
    yield conn
    conn.close()


@pytest.fixture
def harness(model_mount, model_client, request):
    h = new_harness(model_mount.path, model_client)
    start = model_mount.log_size()
    yield h
    h.real.close_all()
    report = getattr(request.node, "model_report_call", None)
    if report is not None and report.failed:
        time.sleep(1)
        print(f"\n--- daemon log during {request.node.name} ---\n"
              f"{tail(model_mount.log, start)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"model_report_{report.when}", report)
