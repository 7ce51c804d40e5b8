"""Logging set-up shared by the mount and the service.

Secrets never reach a log: a filter on every handler masks whatever looks
like a token (the ``X-Auth-Token`` header, ``token=`` arguments, and every
token registered with ``register_secret``, such as the mount's own).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_PATTERNS = [
    re.compile(r"(?i)(x-auth-token['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]+)"),
    re.compile(r"(?i)(\btoken['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]+)"),
    re.compile(r"(?i)([?&]x-auth-token=)([^&\s]+)"),
]
MASK = "***"


def register_secret(secret: str) -> None:
    """Make sure ``secret`` is masked in every later log line."""
    if secret and len(secret) >= 4:
        with _LOCK:
            _SECRETS.add(secret)


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    for secret in list(_SECRETS):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Render the record once and mask secrets in the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            message = f"{record.msg!r} % {record.args!r}"
        clean = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg, record.args = clean, None
        return True


class RateLimitFilter(logging.Filter):
    """Let the same WARNING through at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            return False
        self._last[key] = now
        return True


def setup(level: int | str = logging.INFO, logfile: str | None = None, *, stream=None) -> None:
    """Configure the root logger: stderr (or a file), secrets masked."""
    handler: logging.Handler
    if logfile:
        # Private like the rest of the user's imagefs files: the log names their files
        # and images (tokens never reach it). An existing log keeps its mode.
        os.close(os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        handler = logging.FileHandler(logfile)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs every URL at DEBUG; URLs never carry tokens here but keep it quiet.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
