"""The log's redaction and file mode: secrets never reach a log, and a log file is private."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from imagefs import log as imagefs_log

SECRET = "Zq3-example-secret-token-that-is-long_x"


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("text", [
    "X-Auth-Token: abc123secret",
    "headers={'X-Auth-Token': 'abc123secret'}",
    "GET /v1/a?X-Auth-Token=abc123secret&format=json",
    '{"token": "abc123secret"}',
])
def test_token_shaped_values_are_masked(text):
    assert "abc123secret" not in imagefs_log.redact(text)


def test_a_registered_secret_is_masked_anywhere():
    imagefs_log.register_secret(SECRET)
    assert imagefs_log.redact(f"url http://x/{SECRET}/y and {SECRET}") == \
        "url http://x/***/y and ***"


def test_the_log_file_is_private_and_masked(tmp_path, restore_root):
    imagefs_log.register_secret(SECRET)
    path = tmp_path / "mount.log"
    old = os.umask(0)
    try:
        imagefs_log.setup(logging.INFO, str(path))
    finally:
        os.umask(old)
    logging.getLogger("imagefs.test").warning("sending %s", SECRET)
    try:
        raise ValueError(SECRET)
    except ValueError:
        logging.getLogger("imagefs.test").exception("failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "sending ***" in text and "ValueError: ***" in text
    assert SECRET not in text
