"""HTTP transport of the client: sessions, timeouts, retries, and THE status table.

One ``requests.Session`` per thread (sessions are not thread-safe), each with
a connection pool and 1 MiB send blocks. Every request carries the token and
is never logged with it. ``requests`` is not allowed to decode
``Content-Encoding`` (kamaki stores ``gzip`` for ``.gz`` uploads; the bytes
are the object): bodies are read from ``resp.raw`` with ``decode_content``
off. Transient failures (5xx but 501/505/507, 408, 429, refused or dropped
connections, timeouts) are retried with exponential back-off and jitter
until ``deadline`` seconds have passed, then ``ServiceUnavailable``.
``raise_for_status`` is the only status -> exception table of imagefs.

A retry after an attempt whose answer was lost (the connection broke or
timed out once the request was out) may find that attempt's work done: the
retry of a container PUT answers "exists", of a DELETE or a move 404. The
client cannot tell that from someone else's doing, the caller can (it knows
what it wanted): such an answer, reply or failure, is marked
``after_lost_reply`` (``errors.after_lost_reply``) and the caller checks.
``retries_until`` lets a caller that already waited for the service make the
next requests give up sooner (an upload's commit after its blocks ran out of
retries).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from imagefs import errors, log as imagefs_log
from imagefs.protocol.headers import query_string

log = logging.getLogger(__name__)

T = TypeVar("T")

BLOCKSIZE = 1 << 20
#: Bytes of an error reply read for its message (error bodies are tiny; never trust that).
_FAULT_READ_LIMIT = 65536
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 5.0

#: The status -> exception table (api.md §1.5, behaviour.md §6). Other 5xx are Transient
#: (retried: the service is overloaded or restarting), other 4xx InvalidInput; a 400 about
#: a too long name and a 409 about a non-empty container are refined in raise_for_status.
_STATUS_EXCEPTIONS: dict[int, type[errors.ImagefsError]] = {
    304: errors.PreconditionFailed,
    400: errors.InvalidInput,
    401: errors.AuthRejected,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.Unsupported,
    408: errors.Transient,
    409: errors.Conflict,
    411: errors.InvalidInput,
    412: errors.PreconditionFailed,
    413: errors.QuotaExceeded,
    414: errors.NameTooLong,
    416: errors.RangeNotSatisfiable,
    422: errors.InvalidInput,
    429: errors.Transient,
    501: errors.Unsupported,
    505: errors.Unsupported,
    507: errors.StorageFull,
}

#: When set, a ``time.monotonic()`` at which retries stop (see ``retries_until``).
_RETRY_UNTIL: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "imagefs_retry_until", default=None)

TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    ConnectionError,
    TimeoutError,
)


def fault_message(resp: requests.Response) -> str:
    """The service's fault text: ``"<faultKey> (<message>)"`` from the JSON body, or the
    raw body's first line; "" for HEAD replies and empty bodies."""
    if resp.request is not None and resp.request.method == "HEAD":
        return ""
    body = _read_error_body(resp)
    if not body:
        return ""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:300] if text else ""
    if isinstance(doc, dict) and len(doc) == 1:
        key, value = next(iter(doc.items()))
        if isinstance(value, dict):
            message = str(value.get("message") or "")
            details = str(value.get("details") or "")
            if details and details != message:
                message = f"{message}: {details}" if message else details
            return f"{key} ({message})"
    return text[:300]


def _read_error_body(resp: requests.Response) -> bytes:
    if resp._content is not False:  # already read (a hand-built or non-streamed response)
        return resp._content or b""
    try:
        body = resp.raw.read(_FAULT_READ_LIMIT, decode_content=False) if resp.raw else b""
    except Exception:  # a broken error body must not hide the status
        return b""
    resp._content = body
    if len(body) < _FAULT_READ_LIMIT:
        resp._content_consumed = True
    return body


def raise_for_status(resp: requests.Response, expected: Iterable[int] = (200,)
                     ) -> requests.Response:
    """Return ``resp`` if its status is expected, else raise the exception of its status.

    The message is ``"<METHOD> <path>: <status> <reason> <fault> (<message>)"``,
    kamaki-like, so a user sees the service's own words. 409 on a container
    or directory that is not empty is ``ContainerNotEmpty``; a 400 about a
    name that is too long is ``NameTooLong``.
    """
    status = resp.status_code
    if status in tuple(expected):
        return resp
    fault = fault_message(resp)
    cls = _STATUS_EXCEPTIONS.get(status)
    if cls is None:
        if status >= 500:
            cls = errors.Transient
        elif status >= 400:
            cls = errors.InvalidInput
        else:
            cls = errors.ImagefsError
    lowered = fault.lower()
    if status == 409 and "not empty" in lowered:
        cls = errors.ContainerNotEmpty
    elif status == 400 and "too long" in lowered:
        cls = errors.NameTooLong
    where = ""
    if resp.request is not None and resp.request.url:
        where = f"{resp.request.method} {urlsplit(resp.request.url).path}: "
    reason = resp.reason or ""
    message = f"{where}{status} {reason}".rstrip() + (f" {fault}" if fault else "")
    exc = cls(message, detail=fault)
    exc.status = status  # type: ignore[attr-defined]
    raise exc


@contextlib.contextmanager
def retries_until(when: float | None) -> Iterator[None]:
    """Requests made in this block (and in the threads and trio tasks it starts, which
    copy the context) retry only until ``when`` (``time.monotonic()``; None: as usual).
    Each still makes its first attempt."""
    token = _RETRY_UNTIL.set(when)
    try:
        yield
    finally:
        _RETRY_UNTIL.reset(token)


def _maybe_applied(exc: BaseException) -> bool:
    """Whether a failed attempt may have reached the service and been applied, its
    answer lost. Not a refused or timed-out connect (nothing was sent), not an error
    status (the service answered; it applies a request whole or not at all), but a
    gateway's 502 or 504 (the service behind it may have done the work)."""
    if isinstance(exc, errors.ImagefsError):
        if getattr(exc, "status", None) in (502, 504):
            return True
        if exc.__cause__ is None:  # a status, or a transport error wrapped by the caller
            return False
        exc = exc.__cause__
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps it
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return False
    return isinstance(exc, TRANSPORT_ERRORS)


class _Adapter(HTTPAdapter):
    """HTTPAdapter whose connections send bodies in 1 MiB pieces (perf-baseline §5)."""

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs.setdefault("blocksize", BLOCKSIZE)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)


def _rewindable(data: object) -> bool:
    return data is None or isinstance(data, (bytes, bytearray, memoryview, str))


class Http:
    """Authenticated, retrying HTTP for one token; share one instance between threads."""

    def __init__(self, token: str, *, timeout: tuple[float, float] = (5.0, 60.0),
                 deadline: float = 60.0, pool_size: int = 16) -> None:
        self.token = token
        self.timeout = timeout
        self.deadline = deadline
        self.pool_size = pool_size
        #: Called as hook(method, url, status) after every reply (tests count requests).
        self.hooks: list[Callable[[str, str, int], None]] = []
        self._local = threading.local()
        # Weak: a finished thread's session goes away with the thread.
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._lock = threading.Lock()
        imagefs_log.register_secret(token)

    # -- sessions --------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        """This thread's session (created on first use)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = _Adapter(pool_connections=4, pool_maxsize=self.pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["X-Auth-Token"] = self.token
            # Ask for the bytes as stored: no transparent compression to undo.
            session.headers["Accept-Encoding"] = "identity"
            session.headers["User-Agent"] = "imagefs"
            self._local.session = session
            with self._lock:
                self._sessions.add(session)
        return session

    def close(self) -> None:
        """Close every thread's connections (sessions re-open on next use)."""
        with self._lock:
            sessions, self._sessions = list(self._sessions), weakref.WeakSet()
        for session in sessions:
            session.close()
        self._local = threading.local()

    # -- retries ---------------------------------------------------------------------------

    def retrying(self, attempt: Callable[[], T], *, what: str = "request",
                 deadline: float | None = None) -> T:
        """Run ``attempt`` until it does not raise ``Transient`` (or a transport error),
        backing off exponentially with jitter; ``ServiceUnavailable`` after ``deadline``
        (or sooner, see ``retries_until``). After an attempt that may have been applied,
        the final answer (a ``Response`` or an ``ImagefsError``) is marked
        ``after_lost_reply``."""
        limit = self.deadline if deadline is None else deadline
        start = time.monotonic()
        until = _RETRY_UNTIL.get()
        if until is not None:
            limit = min(limit, until - start)
        tries = 0
        lost = False  # an earlier attempt may have been applied, its answer lost
        while True:
            tries += 1
            try:
                result = attempt()
            except errors.Transient as exc:
                last: BaseException = exc
            except TRANSPORT_ERRORS as exc:
                last = exc
            except errors.ImagefsError as exc:
                if lost:
                    exc.after_lost_reply = True
                raise
            else:
                if lost and isinstance(result, requests.Response):
                    result.after_lost_reply = True  # type: ignore[attr-defined]
                return result
            lost = lost or _maybe_applied(last)
            elapsed = time.monotonic() - start
            pause = min(_BACKOFF_MAX, _BACKOFF_FIRST * (2 ** (tries - 1)))
            pause *= 0.5 + random.random() / 2
            retry_after = getattr(last, "retry_after", None)
            if retry_after:
                pause = max(pause, retry_after)
            if elapsed + pause > limit:
                failure = errors.ServiceUnavailable(
                    f"{what}: service unavailable after {tries} attempt(s) in {elapsed:.1f}s: "
                    f"{_describe(last)}")
                failure.after_lost_reply = lost
                raise failure from last
            if tries == 1:
                log.warning("%s: %s; retrying for up to %.0fs", what, _describe(last), limit)
            else:
                log.debug("%s failed (%s), retry %d in %.2fs", what, _describe(last), tries,
                          pause)
            time.sleep(pause)

    # -- requests --------------------------------------------------------------------------

    def url_with(self, url: str, params: Mapping[str, object] | None) -> str:
        """``url`` plus a kamaki-style query string (None values are bare flags)."""
        if not params:
            return url
        return url + ("&" if "?" in url else "?") + query_string(params)

    def request(self, method: str, url: str, *, expected: tuple[int, ...] = (200,),
                headers: Mapping[str, str] | None = None,
                params: Mapping[str, object] | None = None, data: object = None,
                stream: bool = False, retry: bool = True,
                deadline: float | None = None) -> requests.Response:
        """Send one request (retried if transient) and return the reply if its status is
        in ``expected``; any other status goes through ``raise_for_status``.

        With ``stream`` the body is left unread: read it with
        ``resp.raw.read(n, decode_content=False)`` and close the response.
        Without it the body is read (undecoded) into ``resp.content``.
        """
        full_url = self.url_with(url, params)
        if isinstance(data, memoryview) and data.nbytes == 0:
            data = b""  # an empty iterable body would be sent chunked
        send_headers = dict(headers or {})

        def attempt() -> requests.Response:
            return self._once(method, full_url, send_headers, data, stream, expected, deadline)

        if retry and _rewindable(data):
            return self.retrying(attempt, what=f"{method} {urlsplit(url).path}",
                                 deadline=deadline)
        try:
            return attempt()
        except TRANSPORT_ERRORS as exc:
            raise errors.Transient(f"{method} {urlsplit(url).path}: {_describe(exc)}") from exc

    def _once(self, method: str, url: str, headers: dict[str, str], data: object,
              stream: bool, expected: tuple[int, ...], deadline: float | None
              ) -> requests.Response:
        connect, read = self.timeout
        limit = self.deadline if deadline is None else deadline
        timeout = (max(0.05, min(connect, limit)), read)
        resp = self.session.request(method, url, headers=headers, data=data, stream=True,
                                    timeout=timeout, allow_redirects=False)
        resp.raw.decode_content = False
        for hook in self.hooks:
            hook(method, url, resp.status_code)
        ok = resp.status_code in expected
        try:
            if not ok:
                try:
                    raise_for_status(resp, expected)
                except errors.Transient as exc:
                    exc.retry_after = _retry_after(resp)  # type: ignore[attr-defined]
                    raise
            if not stream:
                resp._content = resp.raw.read(decode_content=False)
                resp._content_consumed = True
        finally:
            if not ok or not stream:
                finish(resp)
        return resp


def finish(resp: requests.Response) -> None:
    """Release a reply's connection: drain a small unread rest so the connection goes
    back to the pool, close it otherwise."""
    if not resp._content_consumed and resp.raw is not None:
        try:
            rest = resp.raw.read(_FAULT_READ_LIMIT, decode_content=False)
            if len(rest) < _FAULT_READ_LIMIT:
                resp._content_consumed = True
        except Exception:  # a broken connection is closed below anyway
            pass
    resp.close()


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return min(float(value), _BACKOFF_MAX) if value else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    """One line about a failure, without the noise of urllib3's nested reprs."""
    if isinstance(exc, errors.ImagefsError):
        return str(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "read timed out"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "connection refused"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "unknown host"
        if "RemoteDisconnected" in text or "Connection aborted" in text:
            return "connection closed by the service"
        return "connection failed"
    return f"{type(exc).__name__}: {exc}"[:300]
