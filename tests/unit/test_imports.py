"""The filesystem and its FUSE glue never talk HTTP themselves (aesthetics.md §5.3).

Blocking ``requests`` calls belong to ``imagefs.client``, reached from trio only
through ``imagefs.fs.blocking``; a module under ``imagefs/fs`` or
``imagefs/fuse`` that imported ``requests`` would be a shortcut around that
door. Checked on the source, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import imagefs

PACKAGE = Path(imagefs.__file__).parent
MODULES = sorted(p for sub in ("fs", "fuse") for p in (PACKAGE / sub).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_there_are_modules_to_check():
    assert any(p.name == "filesystem.py" for p in MODULES)
    assert any(p.name == "ops.py" for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_requests_under_fs_and_fuse(path):
    bad = {n for n in imported(path) if n == "requests" or n.startswith("requests.")
           or n in ("urllib3", "http.client")}
    assert not bad, f"{path} imports {bad}"


def test_only_blocking_calls_threads():
    users = [p for p in PACKAGE.joinpath("fs").rglob("*.py")
             if "to_thread" in p.read_text() and p.name != "blocking.py"]
    assert users == []
