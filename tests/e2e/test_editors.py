"""Editors' and tools' save dances leave the right content and no stray object
(behaviour.md §4: swap files, vim's 4913 probe, backups, sed's temporary)."""

from __future__ import annotations

import os
import tempfile

import pytest
from e2e_util import names_on_service, run

TEXT = "alpha\nbeta\ngamma\n"
EDITED = "blpha\nbetb\ngbmma\n"


@pytest.fixture
def document(container, client):
    path = container.path / "notes.txt"
    path.write_text(TEXT)
    assert client.pithos.read(container.name, "notes.txt", 0, 1000) == TEXT.encode()
    return path


def _check(document, container, client):
    assert document.read_text() == EDITED
    assert client.pithos.read(container.name, "notes.txt", 0, 1000) == EDITED.encode()
    assert names_on_service(client, container.name) == {"notes.txt"}
    assert os.listdir(container.path) == ["notes.txt"]


def test_vim(document, container, client, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    run("vim", "-es", "-c", "%s/a/b/", "-c", "wq", str(document), env=env, timeout=60)
    _check(document, container, client)


def test_sed_in_place(document, container, client):
    run("sed", "-i", "s/a/b/", str(document))
    _check(document, container, client)


def test_nano_style_rewrite_in_place(document, container, client):
    """nano truncates and writes the same file (O_TRUNC), no rename."""
    fd = os.open(document, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, EDITED[:7].encode())
        os.write(fd, EDITED[7:].encode())
    finally:
        os.close(fd)
    _check(document, container, client)


def test_python_write_temporary_then_rename(document, container, client):
    fd, tmp = tempfile.mkstemp(dir=document.parent)
    with os.fdopen(fd, "w") as f:
        f.write(EDITED)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, document)
    _check(document, container, client)
