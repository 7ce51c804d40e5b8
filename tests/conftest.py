"""Session fixtures shared by every test tier.

``service`` is the real embedded service (``imagefs serve`` under gunicorn)
started through ``imagefs.service.launcher`` on a free loopback port with a
temporary data directory, once per session. Tests stay independent by using
fresh container names (``fresh``) or fresh users (``service.new_user()``),
never by resetting the service.
"""

from __future__ import annotations

import itertools
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from imagefs.service.launcher import RunningService, running_service

#: At the end of the session, every log the run wrote is read for every token it issued.
pytest_plugins = ["log_scan"]


class NewUser(NamedTuple):
    uuid: str
    token: str


@dataclass
class Service:
    """What tests need to reach the session's service."""

    running: RunningService
    _store: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Identity URL (``http://127.0.0.1:PORT/identity/v2.0``)."""
        return self.running.url

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.running.base

    @property
    def token(self) -> str:
        return self.running.token

    @property
    def uuid(self) -> str:
        return self.running.uuid

    @property
    def name(self) -> str:
        return self.running.name

    @property
    def data_dir(self) -> Path:
        return self.running.data_dir

    @property
    def log_path(self) -> Path:
        return self.running.log_path

    @property
    def pid(self) -> int:
        return self.running.process.pid

    def new_user(self, name: str | None = None) -> NewUser:
        """Create a user in the service's data directory (what ``imagefs user add`` does)."""
        from imagefs.service.store import Store

        with self._lock:
            if self._store is None:
                self._store = Store.open(self.data_dir)
            user = self._store.add_user(name or f"user-{uuidlib.uuid4().hex[:8]}")
        return NewUser(user.uuid, user.token)


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("service") / "data"
    with running_service(data_dir) as running:
        svc = Service(running)
        yield svc
        if svc._store is not None and hasattr(svc._store, "close"):
            svc._store.close()


_counter = itertools.count()


@pytest.fixture
def fresh():
    """A function returning a new unique name each call (containers, objects, users)."""
    run = uuidlib.uuid4().hex[:6]
    return lambda prefix="t": f"{prefix}-{run}-{next(_counter)}"
