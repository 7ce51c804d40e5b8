"""No token in any log of the whole run: a pytest plugin that reads them all at the end.

Registered by ``tests/conftest.py``. At ``pytest_sessionfinish`` (before pytest's own
hook may delete the basetemp) it walks the session's basetemp and the imagefs
directories of this process (``IMAGEFS_DATA``, ``IMAGEFS_CACHE``, ``IMAGEFS_RUNTIME``
or their platform defaults; there only files changed during the session), learns every
token the run issued, and reads every log there: service logs, mount daemon logs,
gunicorn's messages (they go to the service log), kamaki's logs, the stdout/stderr of
subprocesses kept in files. It prints ``log scan: N files, M bytes, T tokens, K found``
and fails the session (exit status 1) with file and line of each hit, never the token.

Where the tokens come from, since the database keeps only their SHA-256:

- the ``users`` table of every ``imagefs.db`` found: hashes of every user's token,
  however it was issued (a fixture, ``Store.add_user`` in a test, ``imagefs user add``);
- every ``default.token`` found, and the secrets this process registered with
  ``imagefs.log`` (every token ``Store`` issued here): the tokens themselves.

A token is 40 characters of the URL-safe base64 alphabet, so every run of 40 or more
such characters in a log is cut into 40-character windows and each window is looked up,
by value and by hash: one pass per file whatever the number of tokens, and a token
glued to other characters (``TOKENxxxx``) is still found.

Walks never enter a mount point (a live or dead FUSE mount left by a failed test would
hang or fail the walk): mount points are read from /proc/self/mountinfo, not stat()ed.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import time
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TOKEN_LEN = 40
_RUN = re.compile(rb"[A-Za-z0-9_-]{%d,}" % TOKEN_LEN)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{%d}" % TOKEN_LEN)
#: Read logs in pieces of this size: a huge line never sits whole in memory.
PIECE = 1 << 20
LOG_SUFFIXES = (".log", ".out", ".err", ".stdout", ".stderr")
LOG_NAMES = {"stdout", "stderr", "output"}
_ROTATED = re.compile(r"\.log\.\d+$")
#: Logs that are not ours, with why a token there does not fail the run (it is reported).
#: kamaki writes every command line to ~/.kamaki.log, ``kamaki config set cloud.X.token T``
#: included: that is how its users (and the tutorial) store a token. Its HTTP log
#: (``log_file``) masks tokens, and stays checked.
FOREIGN = {".kamaki.log": "kamaki's record of its command lines"}
#: Where tokens are: the default user's token file, and the database of token hashes.
TOKEN_FILES = ("default.token", "imagefs.db")


def is_log(path: Path) -> bool:
    """Whether a file name says log or captured output (``daemon.log``, ``daemon.out``)."""
    name = path.name
    return name.endswith(LOG_SUFFIXES) or name in LOG_NAMES or bool(_ROTATED.search(name))


def token_hash(token: str | bytes) -> str:
    """What ``imagefs.service.store.users`` keeps of a token."""
    return hashlib.sha256(token if isinstance(token, bytes) else token.encode()).hexdigest()


@dataclass
class Tokens:
    """Tokens known by value and tokens known only by hash (``hashes`` holds both)."""

    plain: set[bytes] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)
    unreadable: list[Path] = field(default_factory=list)

    def add(self, token: str) -> None:
        if _TOKEN.fullmatch(token):
            self.plain.add(token.encode())
            self.hashes.add(token_hash(token))

    def add_hash(self, digest: str) -> None:
        self.hashes.add(digest)

    def __len__(self) -> int:
        return len(self.hashes)

    def match(self, window: bytes) -> str | None:
        """The hash of ``window`` if it is one of the tokens, else None."""
        if window in self.plain:
            return token_hash(window)
        digest = token_hash(window)
        return digest if digest in self.hashes else None


@dataclass(frozen=True)
class Finding:
    """A token in a log; shows where, and the token's hash prefix only."""

    path: Path
    line: int
    digest: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: a token (sha256 {self.digest[:12]}..., redacted)"


@dataclass
class ScanResult:
    files: int = 0
    bytes: int = 0
    tokens: int = 0
    findings: list[Finding] = field(default_factory=list)
    foreign: list[Finding] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        line = (f"log scan: {self.files} files, {self.bytes} bytes, {self.tokens} tokens, "
                f"{len(self.findings)} found")
        if self.foreign:
            line += f" (and {len(self.foreign)} in logs of other tools, not failing)"
        if self.unreadable:
            line += f" ({len(self.unreadable)} token sources unreadable)"
        return line


# -- walking ----------------------------------------------------------------------------


def mount_points() -> set[str]:
    """Every mount point of this mount namespace, unescaped (``\\040`` is a space)."""
    found = set()
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4:
                    found.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                                     fields[4]))
    except OSError:
        pass
    return found


def walk(roots: Iterable[Path], want=lambda name: True,
         skip: set[str] | None = None) -> Iterator[tuple[Path, os.stat_result]]:
    """(path, lstat) of the regular files under ``roots`` whose name is ``want``ed, each
    once, never through symlinks or mount points."""
    skip = mount_points() if skip is None else skip
    seen: set[str] = set()
    for root in roots:
        for top, dirs, files in os.walk(root):
            if top in seen:
                dirs[:] = []
                continue
            seen.add(top)
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
            for name in files:
                if not want(name):
                    continue
                path = os.path.join(top, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield Path(path), st


# -- tokens -----------------------------------------------------------------------------


def read_token_hashes(db: Path) -> list[str]:
    """Every user's token hash in an imagefs database, read-only."""
    uri = f"file:{urllib.parse.quote(str(db))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        return [row[0] for row in conn.execute("SELECT token_hash FROM users")]
    finally:
        conn.close()


def gather_tokens(files: Iterable[Path], known: Iterable[str] = ()) -> Tokens:
    """The tokens of every ``default.token`` and every ``imagefs.db`` among ``files``."""
    tokens = Tokens()
    for token in known:
        tokens.add(token)
    for path in files:
        if path.name == "default.token":
            try:
                for word in path.read_text(errors="replace").split():
                    tokens.add(word)
            except OSError:
                tokens.unreadable.append(path)
        elif path.name == "imagefs.db":
            try:
                for digest in read_token_hashes(path):
                    tokens.add_hash(digest)
            except sqlite3.Error:
                tokens.unreadable.append(path)
    return tokens


# -- scanning ---------------------------------------------------------------------------


def _pieces(f) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a file, a long line in pieces of PIECE bytes that overlap
    by TOKEN_LEN - 1, so a token across a piece boundary is still whole in one piece."""
    lineno, carry = 1, b""
    while True:
        piece = f.readline(PIECE)
        if not piece:
            return
        yield lineno, carry + piece
        if piece.endswith(b"\n"):
            lineno, carry = lineno + 1, b""
        else:
            carry = piece[-(TOKEN_LEN - 1):]


def scan_file(path: Path, tokens: Tokens, clean: set[bytes] | None = None) -> list[Finding]:
    """Every token of ``tokens`` in the file, by line. ``clean`` caches runs without one."""
    clean = set() if clean is None else clean
    found: dict[tuple[int, str], Finding] = {}
    with open(path, "rb") as f:
        for lineno, piece in _pieces(f):
            for run in _RUN.finditer(piece):
                text = run.group()
                if text in clean:
                    continue
                hit = False
                for i in range(len(text) - TOKEN_LEN + 1):
                    digest = tokens.match(text[i:i + TOKEN_LEN])
                    if digest:
                        found.setdefault((lineno, digest), Finding(path, lineno, digest))
                        hit = True
                if not hit:
                    if len(clean) > 200_000:
                        clean.clear()
                    clean.add(text)
    return list(found.values())


def _wanted(name: str) -> bool:
    return name in TOKEN_FILES or is_log(Path(name))


def scan(roots: Iterable[Path], recent_roots: Iterable[Path] = (), since: float | None = None,
         known: Iterable[str] = ()) -> ScanResult:
    """Gather the tokens under all roots, then read every log for them. ``recent_roots``
    are shared with life outside the test run: there only logs changed since ``since``
    count (tokens count wherever they are)."""
    skip = mount_points()
    found = dict(walk(roots, _wanted, skip))
    for path, st in walk(recent_roots, _wanted, skip):
        if path.name in TOKEN_FILES or since is None or st.st_mtime >= since:
            found.setdefault(path, st)
    tokens = gather_tokens(found, known)
    result = ScanResult(tokens=len(tokens), unreadable=tokens.unreadable)
    clean: set[bytes] = set()
    for path in found:
        if not is_log(path):
            continue
        try:
            found = scan_file(path, tokens, clean)
            (result.foreign if path.name in FOREIGN else result.findings).extend(found)
            result.bytes += path.stat().st_size
        except OSError:
            continue
        result.files += 1
    return result


# -- the plugin -------------------------------------------------------------------------


def _imagefs_dirs() -> list[Path]:
    from imagefs import config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # platformdirs warns without XDG_RUNTIME_DIR
        return [config.data_dir(), config.cache_dir(), config.runtime_dir()]


def _registered_secrets() -> list[str]:
    """Tokens this process issued (``Store`` registers each with ``imagefs.log``)."""
    from imagefs import log as imagefs_log

    with imagefs_log._LOCK:
        return list(imagefs_log._SECRETS)


_STARTED = "log_scan_started"
_RESULT = "log_scan_result"


def pytest_configure(config: pytest.Config) -> None:
    setattr(config, _STARTED, time.time() - 1)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Before tmpdir's own hook, which may remove the basetemp."""
    config = session.config
    if hasattr(config, "workerinput"):    # an xdist worker: the controller scans
        return
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    roots = [basetemp] if basetemp is not None and basetemp.is_dir() else []
    result = scan(roots, [d for d in _imagefs_dirs() if d.is_dir()],
                  since=getattr(config, _STARTED, None), known=_registered_secrets())
    setattr(config, _RESULT, result)
    if result.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    result: ScanResult | None = getattr(config, _RESULT, None)
    if result is None:
        return
    if result.findings:
        terminalreporter.write_sep("=", "tokens in logs", red=True)
        for finding in result.findings:
            terminalreporter.write_line(str(finding), red=True)
    for finding in result.foreign:
        terminalreporter.write_line(f"{finding} [{FOREIGN[finding.path.name]}]")
    terminalreporter.write_line(result.summary(), red=bool(result.findings))
