"""The end-of-run log scan (tests/log_scan.py) finds a planted token, and fails a session.

Planted tokens live in ``tempfile`` directories removed at the end of each test, never
in this session's basetemp: the real scan of this very run must not find them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import log_scan
from imagefs.service.store import Store
from imagefs.service.store.users import new_token
from log_scan import PIECE, Finding, scan, token_hash, walk

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def scratch():
    with tempfile.TemporaryDirectory(prefix="log-scan-") as tmp:
        yield Path(tmp)


def test_a_planted_token_is_found_with_its_line_and_never_shown(scratch):
    token = new_token()
    log = scratch / "service.log"
    log.write_text(f"first\nsecond {token[:20]}\nGET /x?X-Auth-Token=zz{token}yy -> 200\n"
                   f"again {token}\n")
    result = scan([scratch], known=[token])
    assert (result.files, result.bytes, result.tokens) == (1, log.stat().st_size, 1)
    assert result.findings == [Finding(log, 3, token_hash(token)),
                               Finding(log, 4, token_hash(token))]
    shown = "\n".join([result.summary(), *map(str, result.findings)])
    assert token not in shown and token[:12] not in shown
    assert "service.log:3: a token" in shown
    assert result.summary().endswith("1 tokens, 2 found")


def test_a_token_known_only_by_its_hash_in_a_database_is_found(scratch):
    store = Store.open(scratch / "data")
    try:
        user = store.add_user("planted")
    finally:
        store.close()
    (scratch / "mount.log").write_text(f"debug: token={user.token}\n")
    result = scan([scratch])                        # nothing known by value
    assert result.tokens == 1
    assert [(f.path.name, f.line) for f in result.findings] == [("mount.log", 1)]


def test_default_token_files_are_read(scratch):
    token = new_token()
    (scratch / "data").mkdir()
    (scratch / "data" / "default.token").write_text(f"some-uuid {token}\n")
    (scratch / "daemon.out").write_text(f"token: {token}\n")
    result = scan([scratch])
    assert result.tokens == 1
    assert [f.path.name for f in result.findings] == ["daemon.out"]


def test_only_logs_and_captured_output_are_read(scratch):
    """A token file or a kamaki configuration holds the token by design."""
    token = new_token()
    for name in ("token", "kamakirc", "data.json", "log", "gunicorn.log.1", "x.err",
                 "stderr", "kamaki.log"):
        (scratch / name).write_text(f"{token}\n")
    result = scan([scratch], known=[token])
    assert sorted(f.path.name for f in result.findings) == ["gunicorn.log.1", "kamaki.log",
                                                            "stderr", "x.err"]


def test_a_token_across_two_pieces_of_a_huge_line_is_found_once(scratch):
    token = new_token()
    log = scratch / "big.log"
    with open(log, "wb") as f:
        f.write(b"start\n")
        f.write(b"." * (PIECE - 20) + token.encode() + b"." * (PIECE + 5) + token.encode())
        f.write(b"\nend\n")
    result = scan([scratch], known=[token])
    assert result.findings == [Finding(log, 2, token_hash(token))]


def test_outside_the_basetemp_only_logs_of_this_session_count(scratch):
    token = new_token()
    (scratch / "old.log").write_text(f"{token}\n")
    (scratch / "new.log").write_text(f"{token}\n")
    (scratch / "default.token").write_text(f"uuid {token}\n")
    long_ago = time.time() - 86400
    for name in ("old.log", "default.token"):
        os.utime(scratch / name, (long_ago, long_ago))
    result = scan([], [scratch], since=time.time() - 60)
    assert result.tokens == 1
    assert [f.path.name for f in result.findings] == ["new.log"]


def test_the_walk_never_enters_a_mount_point_or_a_symlink(scratch):
    (scratch / "mnt").mkdir()
    (scratch / "mnt" / "inside.log").write_text("x")
    (scratch / "kept").mkdir()
    (scratch / "kept" / "a.log").write_text("x")
    (scratch / "link").symlink_to(scratch / "kept")
    (scratch / "link.log").symlink_to(scratch / "kept" / "a.log")
    found = [p for p, _st in walk([scratch], skip={str(scratch / "mnt")})]
    assert found == [scratch / "kept" / "a.log"]
    assert "/" in log_scan.mount_points()


INNER_TEST = """
import os

def test_leaves_a_log(tmp_path):
    token = os.environ["PLANTED"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "default.token").write_text("some-uuid " + token + "\\n")
    (tmp_path / "daemon.log").write_text("mounted\\nGET /x -> 200 " + os.environ["LOGGED"] +
                                         "\\n")
"""


def _inner_session(scratch: Path, token: str, logged: str) -> subprocess.CompletedProcess:
    """A whole pytest session with the plugin, in a directory of its own."""
    (scratch / "pytest.ini").write_text("[pytest]\n")
    (scratch / "test_inner.py").write_text(INNER_TEST)
    env = dict(os.environ, PLANTED=token, LOGGED=logged,
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               IMAGEFS_DATA=str(scratch / "d"), IMAGEFS_CACHE=str(scratch / "c"),
               IMAGEFS_RUNTIME=str(scratch / "r"))
    basetemp = scratch / f"basetemp-{logged[:3]}"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "log_scan",
                           "-p", "no:cacheprovider", f"--basetemp={basetemp}", "test_inner.py"],
                          cwd=scratch, env=env, capture_output=True, text=True, timeout=120)


def test_a_session_whose_log_holds_a_token_fails(scratch):
    token = new_token()
    clean = _inner_session(scratch, token, "***")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "log scan: 1 files, " in clean.stdout and "1 tokens, 0 found" in clean.stdout

    leaked = _inner_session(scratch, token, f"X-Auth-Token: {token}")
    assert leaked.returncode == 1, leaked.stdout + leaked.stderr
    assert "1 passed" in leaked.stdout                  # the test passed, the scan failed
    assert "1 tokens, 1 found" in leaked.stdout
    assert "daemon.log:2: a token" in leaked.stdout
    assert token not in leaked.stdout + leaked.stderr


def test_a_token_in_kamakis_command_log_is_reported_but_does_not_fail(scratch):
    """kamaki records ``kamaki config set cloud.X.token T`` in ~/.kamaki.log by design."""
    token = new_token()
    (scratch / ".kamaki.log").write_text(f"kamaki: kamaki config set cloud.local.token {token}\n")
    result = scan([scratch], known=[token])
    assert result.findings == []
    assert [(f.path.name, f.line) for f in result.foreign] == [(".kamaki.log", 1)]
    assert result.summary().endswith("0 found (and 1 in logs of other tools, not failing)")
    assert token not in result.summary()
