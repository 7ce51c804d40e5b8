"""Secrets: no token in a DEBUG log whatever clients send, no access without a token but
where the API says so, and a data directory only its owner can read.

``test_secrets_never_reach_a_debug_log`` replays the whole bad-input corpus
(``test_bad_requests``) and the odd names against a service started with
``-v``, adds requests that carry tokens in every place a client (or an
attacker) can put one, including malformed header lines that gunicorn would
quote in its warnings, and then greps the log for every token. The fault and
load tests run their services at ``-v`` too and grep their logs the same way, and at
the end of every session ``tests/log_scan.py`` reads every log the run left (services,
mounts, captured output) for every token the run issued.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import requests

from imagefs.service.app import _routes
from imagefs.service.launcher import RunningService, running_service
from imagefs.service.store import Store
from svc_http import Api
from test_bad_requests import CASES, NAMES, exchange, make_target, run_case, run_name, \
    still_serving


def assert_no_secret_in_log(log_path: Path, tokens: list[str]) -> str:
    """The log holds none of ``tokens`` and no traceback; returns its text."""
    text = log_path.read_text(errors="replace")
    for token in tokens:
        assert len(token) >= 20, "not a real token"
        assert token not in text, f"a token is in {log_path}"
    assert "Traceback" not in text
    return text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def verbose(tmp_path_factory):
    """A DEBUG-level service of this module's own, one worker (one log stream to read)."""
    with running_service(tmp_path_factory.mktemp("secrets") / "data", "--workers", "1",
                         verbose=True) as svc:
        yield svc


def _token_carriers(svc: RunningService, token: str) -> list[bytes]:
    """Requests that put ``token`` everywhere: valid places, and malformed lines."""
    path = f"/object-store/v1/{svc.uuid}/pithos"
    return [
        f"GET {path}?format=json&X-Auth-Token={token} HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n".encode(),
        f"GET {path}?X-Auth-Token={token} HTTP/9.9\r\nHost: x\r\n\r\n".encode(),
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token {token}\r\n\r\n".encode(),
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        f"Bad Header: {token}\r\n\r\n".encode(),
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        f" folded {token}\r\n\r\n".encode(),
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}{'x' * 20000}\r\n\r\n".encode(),
        f"GET /{token} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        "Connection: close\r\n\r\n".encode(),
        f"GET {path}/{token} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        "Connection: close\r\n\r\n".encode(),
        f"GET /image/v1.0/images/{token} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        "Connection: close\r\n\r\n".encode(),
        f"PUT {path}/obj HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        f"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        f"zz{token}\r\n".encode(),
    ]


def test_secrets_never_reach_a_debug_log(verbose):
    svc = verbose
    store = Store.open(svc.data_dir)
    try:
        corpus_user = store.add_user("corpus")
        second = store.add_user("second")
    finally:
        store.close()
    target = make_target(svc.base, corpus_user.uuid, corpus_user.token, "corpus")
    for case in CASES:
        run_case(target, case)
    for name in NAMES:
        run_name(target, name)
    still_serving(target)

    tokens = [svc.token, corpus_user.token, second.token]
    api = Api(svc.base, svc.token, svc.uuid)
    for token in tokens:
        requests.post(svc.url + "/tokens", data=json.dumps({"auth": {"token": {"id": token}}}))
        requests.post(svc.url + "/tokens", data=json.dumps(
            {"auth": {"passwordCredentials": {"username": svc.uuid, "password": token}}}))
        requests.post(svc.url + "/tokens", data=json.dumps(
            {"auth": {"token": {"id": token}, "tenantName": "someone-else"}}))
        api.head(api.path("pithos", "missing"), token=token)
        for request in _token_carriers(svc, token):
            reply = exchange(svc.base, request)
            assert 200 <= reply.status < 500, (reply.status, request[:60])
    still_serving(target)
    text = assert_no_secret_in_log(svc.log_path, tokens)
    assert " ERROR " not in text
    assert "refused a malformed request" in text      # the malformed carriers were seen
    assert f"GET /object-store/v1/{target.acc}/corpus/y -> 200" in text   # DEBUG was on


def _concrete(rule: str, values: dict[str, str]) -> str:
    """A route rule with every ``<...>`` placeholder replaced by a real value."""
    out, rest = "", rule
    while "<" in rest:
        head, _, tail = rest.partition("<")
        spec, _, rest = tail.partition(">")
        out += head + values[spec.rsplit(":", 1)[-1]]
    return out + rest


def test_every_route_refuses_a_missing_or_wrong_token(verbose):
    """401 on every method of every authenticated route, with no token, an empty one or a
    wrong one; only POST tokens, the UI page and published objects answer anonymously."""
    svc = verbose
    api = Api(svc.base, svc.token, svc.uuid)
    api.put_object("pithos", "published", b"for everyone")
    api.put_object("pithos", "private", b"for me")
    r = api.post(api.path("pithos", "published"), params=[("update", None)],
                 headers={"X-Object-Public": "true"})
    assert r.status_code == 202
    public_url = api.head(api.path("pithos", "published")).headers["X-Object-Public"]
    r = api.post(api.img + "/images/", headers={
        "X-Image-Meta-Name": "img", "X-Image-Meta-Location": f"pithos://{svc.uuid}/pithos/private"})
    image_id = r.headers["x-image-meta-id"]
    values = {"account": svc.uuid, "container": "pithos", "name": "private",
              "image_id": image_id, "member_id": svc.uuid, "owner": svc.uuid,
              "public_id": public_url.rsplit("/", 1)[1]}

    checked = 0
    for route in _routes():
        path = _concrete(route.rule, values)
        for method in route.methods:
            for token in (None, "", "wrong-token-0123456789abcdef"):
                headers = [] if token is None else [("X-Auth-Token", token)]
                reply = exchange(svc.base, _request(method, path, headers), head=method == "HEAD")
                checked += 1
                if route.auth:
                    assert reply.status == 401, (method, path, token, reply.status)
                    if method != "HEAD":
                        assert reply.fault()[0] == "unauthorized"
                        assert svc.token not in reply.body.decode()
                else:
                    anonymous = method in ("GET", "HEAD") or path.endswith(("/tokens",
                                                                            "/tokens/"))
                    assert reply.status == (200 if anonymous else 405), (method, path,
                                                                         reply.status)
    assert checked > 100
    anonymous = requests.get(public_url)
    assert (anonymous.status_code, anonymous.content) == (200, b"for everyone")
    assert "X-Object-UUID" not in anonymous.headers
    assert requests.get(public_url[:-1] + ("x" if public_url[-1] != "x" else "y")
                        ).status_code == 404
    assert requests.get(api.path("pithos", "private")).status_code == 401


def _request(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    if method in ("PUT", "POST"):
        lines.append("Content-Length: 0")
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode()


def test_data_directory_is_private_even_with_a_lax_umask(tmp_path):
    """0700 directories and 0600 files everywhere under the data directory (database and
    its WAL, tokens, service files; blocks 0400 or 0600), when the service starts under
    umask 000."""
    data_dir = tmp_path / "data"
    old = os.umask(0)
    try:
        with running_service(data_dir, "--workers", "1") as svc:
            api = Api(svc.base, svc.token, svc.uuid)
            api.upload("pithos", "big", os.urandom(4 * 1024 * 1024 + 1))
            api.put_object("pithos", "small", b"x")
            store = Store.open(svc.data_dir)
            try:
                store.add_user("someone")
            finally:
                store.close()
            found = {p.relative_to(data_dir).as_posix(): p for p in data_dir.rglob("*")}
            for required in ("imagefs.db", "imagefs.db-wal", "imagefs.db-shm", "default.token",
                             "service.json", "service.log", "blocks"):
                assert required in found, required
            assert _mode(data_dir) == 0o700
            for rel, path in found.items():
                if path.is_dir():
                    assert _mode(path) == 0o700, rel
                elif rel.startswith("blocks/"):    # 0400 until made durable, then 0600
                    assert _mode(path) in (0o400, 0o600), rel
                else:
                    assert _mode(path) == 0o600, rel
            uuid, token = (data_dir / "default.token").read_text().split()
            assert (uuid, token) == (svc.uuid, svc.token)
            assert token not in (data_dir / "service.json").read_text()
            assert token not in (data_dir / "service.log").read_text()
    finally:
        os.umask(old)


def test_a_data_directory_made_lax_is_private_again_at_the_next_start(tmp_path):
    """A data directory restored from a backup or chmod-ed by hand (0755, token 0644) is
    0700 with a 0600 token file once the service starts on it, and keeps its token."""
    data_dir = tmp_path / "data"
    with running_service(data_dir, "--workers", "1") as svc:
        token = svc.token
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "default.token", 0o644)
    with running_service(data_dir, "--workers", "1") as svc:
        assert svc.token == token               # the same default user, not a new token
        assert _mode(data_dir) == 0o700
        assert _mode(data_dir / "default.token") == 0o600
    assert "made it 0600" in (data_dir / "service.log").read_text()
