"""The one exception hierarchy of imagefs, and the one exception -> errno table.

The client layer raises these from HTTP statuses (``client.http.raise_for_status``,
the only status -> exception table), the image semantics raise them for bad
input, and the FUSE boundary (``fuse.ops``) turns any of them into an errno
with ``to_errno``. The embedded service keeps the inverse table (exception ->
status) in ``service.app``. Each class carries the log level at which the
boundary reports it: lookups probe for missing names constantly, so ENOENT is
DEBUG; a refused token is something the user must act on, so it is WARNING.
"""

from __future__ import annotations

import errno
import logging


class ImagefsError(Exception):
    """Base of every failure imagefs knows how to report."""

    errno = errno.EIO
    log_level = logging.WARNING
    #: Set by the client (``client.http``) on the answer to a retry after an attempt
    #: whose answer was lost: that attempt may have been applied, so a 404 or "exists"
    #: may be this very request's own earlier success. See ``after_lost_reply``.
    after_lost_reply = False

    def __init__(self, message: str = "", *, detail: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        self.message = message
        self.detail = detail


class UsageError(ImagefsError):
    """A command-line mistake: reported as one line, no traceback."""

    exit_code = 2


class AuthRejected(ImagefsError):
    """The service refused the token (401)."""

    errno = errno.EACCES


class Forbidden(ImagefsError):
    """Not allowed for this user (403): another user's image or object."""

    errno = errno.EACCES
    log_level = logging.INFO


class ReadOnlyField(Forbidden):
    """A field the service fixes (id, owner, location, checksum, size, dates)."""

    errno = errno.EPERM
    log_level = logging.DEBUG


class NotPermitted(ImagefsError):
    """Something the store cannot represent: a file at the top level (only
    containers live there), a symlink or hard link, renaming a container."""

    errno = errno.EPERM
    log_level = logging.DEBUG


class NotFound(ImagefsError):
    """No such account, container, object, version or image (404)."""

    errno = errno.ENOENT
    log_level = logging.DEBUG


class Conflict(ImagefsError):
    """The request conflicts with the current state (409)."""

    errno = errno.EEXIST
    log_level = logging.INFO


class ContainerNotEmpty(Conflict):
    """A container or directory that still holds objects (409 on delete)."""

    errno = errno.ENOTEMPTY
    log_level = logging.DEBUG


class AlreadyExists(Conflict):
    """The name is taken."""

    errno = errno.EEXIST
    log_level = logging.DEBUG


class PreconditionFailed(ImagefsError):
    """An If-Match / If-Unmodified-Since condition did not hold (412)."""

    errno = errno.EAGAIN
    log_level = logging.INFO


class RangeNotSatisfiable(ImagefsError):
    """A byte range outside the object (416)."""

    errno = errno.EINVAL
    log_level = logging.DEBUG


class QuotaExceeded(ImagefsError):
    """Over quota or request too large (413)."""

    errno = errno.EDQUOT


class StorageFull(QuotaExceeded):
    """The service's disk is full (507): nothing was stored; retry once space is freed."""

    errno = errno.ENOSPC


class NameTooLong(ImagefsError):
    """A container, object or path component over the service's limit."""

    errno = errno.ENAMETOOLONG
    log_level = logging.DEBUG


class InvalidInput(ImagefsError):
    """Malformed input: a bad value, a 400 from the service."""

    errno = errno.EINVAL


class MetafileInvalid(InvalidInput):
    """A sidecar that is not a valid kamaki metafile."""


class ValueTooLarge(InvalidInput):
    """A value over the service's limit (attribute values, property values)."""

    errno = errno.E2BIG


class NoSuchAttribute(ImagefsError):
    """An extended attribute that does not exist."""

    errno = errno.ENODATA
    log_level = logging.DEBUG


class Unsupported(ImagefsError):
    """An operation or attribute namespace imagefs does not support."""

    errno = errno.EOPNOTSUPP
    log_level = logging.DEBUG


class ReadOnly(ImagefsError):
    """A read-only entry of the mount's own: ``.versions/`` (old versions never change)."""

    errno = errno.EROFS
    log_level = logging.DEBUG


class Busy(ImagefsError):
    """Not now: the file is being written (its image attributes wait for the upload)."""

    errno = errno.EBUSY
    log_level = logging.DEBUG


class NotADirectory(ImagefsError):
    errno = errno.ENOTDIR
    log_level = logging.DEBUG


class IsADirectory(ImagefsError):
    errno = errno.EISDIR
    log_level = logging.DEBUG


class Transient(ImagefsError):
    """A failure worth retrying: 5xx, 408, 429, timeouts, refused connections."""

    errno = errno.EIO


class ServiceUnavailable(ImagefsError):
    """Retries ran out of time: the service is down or too slow."""

    errno = errno.EIO


class CacheFull(ImagefsError):
    """The local cache directory has no room for the data being written."""

    errno = errno.ENOSPC


class Corrupted(ImagefsError):
    """Data that does not match its hash."""

    errno = errno.EIO


def after_lost_reply(answer: object) -> bool:
    """Whether ``answer`` (a failure, or a reply of the client) answers a retry of a
    request an earlier attempt of which may have gone through, its answer lost (a
    connection broken or timed out after the request was sent). A non-idempotent
    operation (create, delete, move) then checks the state before reporting the
    failure: what it asked for may be done, by itself."""
    return bool(getattr(answer, "after_lost_reply", False))


def to_errno(exc: BaseException) -> int:
    """The errno a filesystem call reports for ``exc`` (EIO when unknown)."""
    if isinstance(exc, ImagefsError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def log_level(exc: BaseException) -> int:
    """The level at which the filesystem boundary logs ``exc``."""
    if isinstance(exc, ImagefsError):
        return exc.log_level
    return logging.ERROR
