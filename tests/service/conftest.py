"""Fixtures of the service tests: users as ``Api`` objects (``svc_http``), fresh containers."""

from __future__ import annotations

import pytest

from svc_http import Api


@pytest.fixture(scope="session")
def api(service) -> Api:
    return Api(service.base, service.token, service.uuid)


@pytest.fixture(scope="session")
def other(service) -> Api:
    """A second user, for isolation, sharing and foreign-image tests."""
    uuid, token = service.new_user("other user")
    return Api(service.base, token, uuid)


@pytest.fixture
def new_api(service):
    """A function returning an Api for a brand-new user."""
    def make(name: str | None = None) -> Api:
        uuid, token = service.new_user(name)
        return Api(service.base, token, uuid)
    return make


@pytest.fixture
def container(api, fresh) -> str:
    """A fresh container of the default user."""
    name = fresh("c")
    api.create_container(name)
    return name
