"""The embedded service's WSGI application: routing, authentication, errors.

One Werkzeug ``Map`` routes the identity (Astakos), object-store (Pithos+),
image (Plankton) and public-object endpoints of api.md §1.1 to plain view
functions in ``identity``, ``pithos``, ``plankton`` and ``public``. Views
take ``(app, request, **url_values)`` and return a ``Response``, or raise an
``imagefs.errors`` exception; ``ERROR_STATUS`` below is the one table that
turns those into HTTP faults (resolved along the exception's MRO, so a new
subclass inherits its parent's status).

What this module refuses to know: SQL (``store``), the wire details of each
API (the view modules), and how the process is run (``server``).

Wire details handled here because every endpoint shares them:

- upper-case reason phrases (``404 NOT FOUND``): kamaki prints them, and the
  seed's ``(403) FORBIDDEN forbidden ()`` depends on it (api.md §1.5, D11);
- faults are JSON ``{"itemNotFound": {"code", "message", "details"}}``;
  replies to HEAD never carry a body, errors included;
- query strings are parsed with blank values kept, and flags are tested by
  presence: kamaki sends ``?update`` with no ``=``, and losing it turns a
  merge into a replace (api.md §1.4);
- the token comes from ``X-Auth-Token`` (header, or query parameter as real
  Pithos allows); only ``POST tokens`` and anonymous reads of ``/public/``
  do without one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import parse_qs

from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from imagefs import errors
from imagefs import log as imagefs_log
from imagefs.errors import ImagefsError

log = logging.getLogger(__name__)

JSON = "application/json; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"


@dataclass(frozen=True)
class Settings:
    """How the service presents itself.

    ``real_synnefo`` switches the documented differences from a current
    Synnefo deployment (api.md §8): merge on re-registration (D2), the
    wrapped image list (D5) and upper-case status in HEAD (D1).
    ``base_url`` is the URL advertised in the catalog and in public links;
    by default the one the client used to reach us (``Host`` header).
    """

    real_synnefo: bool = False
    base_url: str | None = None


# -- HTTP-only failures --------------------------------------------------------------------------
# The storage engine raises imagefs.errors; these few conditions exist only on the wire.

class LengthRequired(errors.InvalidInput):
    """A data PUT without Content-Length (or Content-Type): 411."""


class NotAllowed(errors.Forbidden):
    """Method not allowed on this resource: 405, with an ``Allow`` header."""

    def __init__(self, allowed: Iterable[str]) -> None:
        super().__init__("Method not allowed")
        self.allowed = sorted(set(allowed))


class NotModified(ImagefsError):
    """A conditional GET/HEAD whose condition says "you have it": 304, no body."""


class Unprocessable(errors.InvalidInput):
    """The body does not match the ETag the client sent: 422."""


class NotImplementedHere(errors.Unsupported):
    """A part of the API the embedded service does not serve: 501."""


class UriTooLong(errors.NameTooLong):
    """Name over the limit. Real Pithos says 400; we say 414 so clients can tell ENAMETOOLONG."""


#: THE exception -> (status, fault key) table, resolved by MRO (most derived class listed wins).
ERROR_STATUS: dict[type[BaseException], tuple[int, str]] = {
    NotModified: (304, "notModified"),
    errors.InvalidInput: (400, "badRequest"),
    errors.AuthRejected: (401, "unauthorized"),
    errors.Forbidden: (403, "forbidden"),
    errors.NotFound: (404, "itemNotFound"),
    NotAllowed: (405, "notAllowed"),
    errors.Conflict: (409, "conflict"),
    LengthRequired: (411, "lengthRequired"),
    errors.PreconditionFailed: (412, "preconditionFailed"),
    errors.QuotaExceeded: (413, "requestEntityTooLarge"),
    errors.NameTooLong: (414, "requestURITooLong"),
    errors.RangeNotSatisfiable: (416, "rangeNotSatisfiable"),
    Unprocessable: (422, "unprocessableEntity"),
    errors.Unsupported: (501, "notImplemented"),
    errors.Transient: (503, "serviceUnavailable"),
    errors.StorageFull: (507, "insufficientStorage"),
    ImagefsError: (500, "internalServerError"),
}

#: Reason phrases as Django 1.4 (and so the Synnefo kamaki was written against) sent them.
REASONS = {
    200: "OK", 201: "CREATED", 202: "ACCEPTED", 204: "NO CONTENT", 206: "PARTIAL CONTENT",
    304: "NOT MODIFIED", 400: "BAD REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN",
    404: "NOT FOUND", 405: "METHOD NOT ALLOWED", 409: "CONFLICT", 411: "LENGTH REQUIRED",
    412: "PRECONDITION FAILED", 413: "REQUEST ENTITY TOO LARGE", 414: "REQUEST-URI TOO LONG",
    416: "REQUESTED RANGE NOT SATISFIABLE", 417: "EXPECTATION FAILED", 422: "UNPROCESSABLE ENTITY",
    431: "REQUEST HEADER FIELDS TOO LARGE",
    500: "INTERNAL SERVER ERROR", 501: "NOT IMPLEMENTED", 503: "SERVICE UNAVAILABLE",
    507: "INSUFFICIENT STORAGE",
}


def status_of(exc: BaseException) -> tuple[int, str]:
    """(status, fault key) of an exception, walking its MRO through ``ERROR_STATUS``."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500, "internalServerError"


def fault(status: int, key: str, message: str, details: str = "") -> Response:
    body = json.dumps({key: {"code": status, "message": message, "details": details}})
    return Response(body, status=status, content_type=JSON)


# -- requests ------------------------------------------------------------------------------------

class BodyStream:
    """``wsgi.input`` whose read failures are the client's: a 400, never a 500.

    The server raises its own exceptions while a view reads the body (a
    malformed chunk, a client gone mid-body); views only know
    ``imagefs.errors``, so every such failure becomes ``InvalidInput``.
    """

    def __init__(self, stream) -> None:
        self._stream = stream

    def _guard(self, method, *args):
        try:
            return method(*args)
        except ImagefsError:
            raise
        except Exception as exc:
            log.debug("request body unreadable: %s", type(exc).__name__)
            raise errors.InvalidInput("Malformed or incomplete request body") from None

    def read(self, size: int | None = -1) -> bytes:
        return self._guard(self._stream.read, size)

    def readinto(self, buf) -> int:
        """Fill (part of) ``buf``; the server's own ``readinto`` saves copies (server.py)."""
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            return self._guard(readinto, buf)
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        return self._guard(self._stream.readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return self._guard(self._stream.readlines, hint)

    def __iter__(self):
        return iter(self.readline, b"")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_text(value: object) -> None:
    """Raise ValueError on a string that cannot be UTF-8 (a lone ``\\ud800`` escape)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)


def load_json(raw: bytes, *, check_text: bool = True) -> object:
    """Strict JSON of a request body: UTF-8, no NaN/Infinity, bounded nesting, valid text.

    ``check_text=False`` skips the walk over every string, for callers that
    validate each string themselves (the hashmap's hex digests).
    """
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        if check_text:
            _check_text(value)
    except (ValueError, UnicodeError, RecursionError):
        raise errors.InvalidInput("Invalid JSON data") from None
    return value


def read_body(request: ServiceRequest, limit: int) -> bytes:
    """The whole (small) body of a request; 413 over ``limit`` bytes, read no further."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.QuotaExceeded("Request body too large")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise errors.QuotaExceeded("Request body too large")
    return data


class Query:
    """A query string with blank values kept: ``?update&format=json`` has the flag ``update``.

    Values are the *last* occurrence (Django's ``QueryDict.get``), decoded as UTF-8.
    """

    def __init__(self, query_string: str) -> None:
        try:
            self._values = parse_qs(query_string, keep_blank_values=True,
                                    encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise errors.InvalidInput("Invalid UTF-8 in query string") from None

    def flag(self, name: str) -> bool:
        """Whether the parameter is present at all (its value does not matter)."""
        return name in self._values

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values.get(name)
        return values[-1] if values else default

    def __contains__(self, name: str) -> bool:
        return name in self._values


class ServiceRequest(Request):
    """A Werkzeug request plus what the service needs on every call."""

    #: gunicorn's header list for this request, duplicates kept (see ``raw_headers_hook``).
    raw_headers: list[tuple[str, str]] | None = None
    #: the authenticated user (a store ``User``) or None for anonymous calls.
    user = None

    @cached_property
    def query(self) -> Query:
        raw = self.environ.get("QUERY_STRING", "")
        # WSGI hands the query over as latin-1 text of the raw bytes; clients percent-encode.
        return Query(raw.encode("latin-1", "replace").decode("ascii", "replace"))

    def has_body(self) -> bool:
        """A request body is coming: a positive Content-Length or chunked framing."""
        if self.is_chunked:
            return True
        return bool(self.content_length)

    @property
    def is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def all_headers(self) -> list[tuple[str, str]]:
        """Every request header as (name, value), duplicates kept when the server told us."""
        if self.raw_headers is not None:
            return list(self.raw_headers)
        return list(self.headers.items())


# Repeated headers: WSGI joins them with "," into one environ key, which loses the
# boundary kamaki 0.16's `image modify -p` relies on (api.md D8). gunicorn's
# pre_request hook runs in the thread that then calls the app, so it parks the
# parsed header list here and the app picks it up for that one request.
_raw = threading.local()


def raw_headers_hook(headers: list[tuple[str, str]]) -> None:
    """Called by the server right before the app handles a request, in the same thread."""
    _raw.headers = headers


def _take_raw_headers() -> list[tuple[str, str]] | None:
    headers = getattr(_raw, "headers", None)
    _raw.headers = None
    return headers


def reply(status: int = 200, body: bytes | str | Iterable[bytes] = b"", *,
          headers: dict[str, str] | None = None, content_type: str = JSON) -> Response:
    """A response with ``status``; an iterable body is streamed as it is produced."""
    direct = not isinstance(body, (bytes, str))
    resp = Response(body, status=status, content_type=content_type,
                    direct_passthrough=direct)
    if headers:
        for name, value in headers.items():
            resp.headers[name] = value
    return resp


def json_reply(data: object, status: int = 200, headers: dict[str, str] | None = None
               ) -> Response:
    return reply(status, json.dumps(data), headers=headers)


# -- routing -------------------------------------------------------------------------------------

class RegexConverter(BaseConverter):
    """``<regex("[A-Za-z0-9_-]+"):image_id>``: the exact id syntax Plankton routes on."""

    def __init__(self, url_map: Map, pattern: str) -> None:
        super().__init__(url_map)
        self.regex = pattern


class ObjectNameConverter(BaseConverter):
    """Everything after ``/<account>/<container>/``: may hold ``/``, even a trailing one."""

    regex = "(?s:.+)"   # newlines too: a name is any text but NUL
    part_isolating = False


@dataclass(frozen=True)
class Route:
    rule: str
    view: Callable[..., Response]
    methods: tuple[str, ...]
    #: False for the calls that need no token: POST tokens (the token is in the body),
    #: anonymous reads of /public/ and the UI URL.
    auth: bool = True


def _routes() -> list[Route]:
    from imagefs.service import identity, pithos, plankton, public

    return [*identity.ROUTES, *pithos.ROUTES, *plankton.ROUTES, *public.ROUTES]


class ServiceApp:
    """The WSGI callable. One per worker process; the store is opened there (after fork)."""

    def __init__(self, store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._known_accounts: set[str] = set()
        self._lock = threading.Lock()
        rules = []
        self._routes: dict[str, Route] = {}
        for i, route in enumerate(_routes()):
            endpoint = f"{route.view.__module__.rsplit('.', 1)[-1]}.{route.view.__name__}.{i}"
            self._routes[endpoint] = route
            rules.append(Rule(route.rule, endpoint=endpoint, methods=list(route.methods)))
        self.url_map = Map(rules, converters={"object": ObjectNameConverter, "regex": RegexConverter},
                           strict_slashes=False, merge_slashes=False)

    # -- helpers the views use ------------------------------------------------------------------

    def base_url(self, request: ServiceRequest) -> str:
        """``http://host:port`` the catalog and public links advertise (no trailing slash)."""
        return (self.settings.base_url or request.host_url).rstrip("/")

    def ensure_account(self, uuid: str) -> None:
        """Provision the user's account (and its ``pithos`` container) once per process."""
        if uuid in self._known_accounts:
            return
        self.store.ensure_account(uuid)
        with self._lock:
            self._known_accounts.add(uuid)

    def authenticate(self, request: ServiceRequest):
        token = request.headers.get("X-Auth-Token") or request.query.get("X-Auth-Token")
        if not token:
            raise errors.AuthRejected("Access denied. No authentication token")
        user = self.store.user_for_token(token.strip())
        if user is None:
            log.info("refused an unknown token from %s", request.remote_addr)
            raise errors.AuthRejected("Invalid token")
        # A valid token is masked in every later log line of this process, wherever a
        # client puts it (a path, a header value quoted in an error).
        imagefs_log.register_secret(token.strip())
        self.ensure_account(user.uuid)
        return user

    # -- WSGI -----------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        if "wsgi.input" in environ:
            environ["wsgi.input"] = BodyStream(environ["wsgi.input"])
        request = ServiceRequest(environ)
        request.raw_headers = _take_raw_headers()
        response = self.dispatch(request)
        code = response.status_code
        response.status = f"{code} {REASONS.get(code, 'UNKNOWN')}"
        if log.isEnabledFor(logging.DEBUG):
            # The query may carry X-Auth-Token=...; the log filter masks it (imagefs.log).
            query = environ.get("QUERY_STRING")
            log.debug("%s %s%s -> %d", request.method, request.path,
                      f"?{query}" if query else "", code)
        if request.method == "HEAD":
            # No body on HEAD, errors included; keep an explicit Content-Length (object size).
            length = response.headers.get("Content-Length")
            response.response = []
            if length is not None and code < 300:
                response.headers["Content-Length"] = length
            elif "Content-Length" in response.headers:
                response.headers["Content-Length"] = "0"
        return response(environ, start_response)

    def dispatch(self, request: ServiceRequest) -> Response:
        route = None
        try:
            adapter = self.url_map.bind_to_environ(request.environ)
            try:
                endpoint, values = adapter.match()
            except MethodNotAllowed as exc:
                raise NotAllowed(exc.valid_methods or ()) from None
            except RouteNotFound:
                if request.path.startswith("/image/"):
                    raise errors.InvalidInput("API endpoint not found") from None
                raise errors.NotFound("Resource not found") from None
            route = self._routes[endpoint]
            _check_path(request)
            if route.auth:
                request.user = self.authenticate(request)
            return route.view(self, request, **values)
        except ImagefsError as exc:
            return self.error_response(request, route, exc)
        except HTTPException as exc:     # Werkzeug's own (e.g. a malformed request line)
            code = exc.code or 400
            return fault(code, "badRequest" if code < 500 else "internalServerError",
                         exc.description or "")
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return fault(500, "internalServerError", "Internal server error")

    def error_response(self, request: ServiceRequest, route: Route | None,
                       exc: ImagefsError) -> Response:
        status, key = status_of(exc)
        if status == 304:
            resp = Response(b"", status=304)
            for name, value in getattr(exc, "headers", {}).items():
                resp.headers[name] = value
            return resp
        message = exc.message or str(exc)
        if status == 403 and request.path.startswith("/image/"):
            # Plankton's "not yours" carries no message: kamaki prints "403 FORBIDDEN forbidden ()".
            message = ""
        if status == 500:
            log.error("%s %s: %s", request.method, request.path, message)
        elif status in (503, 507):         # the service's own trouble, not the client's
            log.warning("%s %s -> %d %s", request.method, request.path, status, message)
        else:
            log.debug("%s %s -> %d %s", request.method, request.path, status, message)
        resp = fault(status, key, message, exc.detail)
        if isinstance(exc, NotAllowed):
            resp.headers["Allow"] = ", ".join(exc.allowed)
        if status == 416 and getattr(exc, "size", None) is not None:
            resp.headers["Content-Range"] = f"bytes */{exc.size}"
        return resp


def _check_path(request: ServiceRequest) -> None:
    """Refuse paths that are not UTF-8 or carry NUL before any view sees them."""
    raw = request.environ.get("PATH_INFO", "")
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise errors.InvalidInput("Invalid UTF-8 in the request path") from None
    if "\0" in text:
        raise errors.InvalidInput("Invalid character in the request path")


def create_app(store, settings: Settings | None = None) -> ServiceApp:
    """The WSGI application over an open ``Store``."""
    return ServiceApp(store, settings or Settings())


__all__ = ["create_app", "Settings", "ServiceApp", "ServiceRequest", "ERROR_STATUS",
           "raw_headers_hook", "reply", "json_reply", "Route", "load_json", "read_body"]
