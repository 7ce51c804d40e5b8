"""The one door from trio to threads: every blocking call of the filesystem goes here.

``requests`` calls, SHA-256 of 4 MiB blocks and spill-file I/O block the
thread that runs them, so the filesystem runs them in worker threads with
``trio.to_thread.run_sync`` and this is the only module that calls it.
Three ``CapacityLimiter``s bound them:

- ``http``: about the number of pooled connections (default 8). It also
  bounds memory: a thread that sends a block at close reads it from the
  spill file itself, so at most ``http`` blocks are in memory for that.
- ``cpu``: the core count, for hashing.
- ``disk``: spill-file reads and writes (the copy of a sealed block, written
  while another thread hashes it; a random write that bypasses the block
  buffers, a truncate).

``detach`` starts cleanup nobody waits for (closing a large spill file).

Rules for the callables (s3ql 5.x's rule): they get plain values and return
plain values; they never touch the filesystem's dicts or nodes. State shared
between tasks changes only on the trio thread, so between two ``await``s a
task sees it unchanged. ``abandon_on_cancel`` stays False: a cancelled task
waits for its thread, whose HTTP calls end by their own timeouts and retry
deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import trio

from imagefs.errors import ImagefsError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: glibc's mallopt() parameter for the number of malloc heaps ("arenas").
M_ARENA_MAX = -8


class Workers:
    """The limiters of one filesystem; create inside ``trio.run``."""

    def __init__(self, *, http: int = 8, cpu: int | None = None, disk: int = 4) -> None:
        self.http_limiter = trio.CapacityLimiter(max(1, http))
        self.cpu_limiter = trio.CapacityLimiter(max(1, cpu or os.cpu_count() or 1))
        self.disk_limiter = trio.CapacityLimiter(max(1, disk))

    async def http(self, fn: Callable[..., T], *args) -> T:
        """Run a client call (network I/O) in a thread."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.http_limiter)

    async def cpu(self, fn: Callable[..., T], *args) -> T:
        """Run CPU work (hashing, possibly with the spill read it needs) in a thread."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.cpu_limiter)

    async def disk(self, fn: Callable[..., T], *args) -> T:
        """Run spill-file I/O in a thread."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.disk_limiter)

    def detach(self, fn: Callable[..., object], *args) -> None:
        """Run ``fn`` in a thread and do not wait for it (no checkpoint either, so the
        caller's state changes stay atomic); a failure is logged."""
        trio.lowlevel.start_thread_soon(functools.partial(fn, *args),
                                        functools.partial(_log_failure, fn))


def _log_failure(fn: Callable[..., object], result) -> None:
    """The end of a ``detach``ed call (``result`` is trio's outcome of it)."""
    try:
        result.unwrap()
    except Exception as exc:
        log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)


def one_malloc_arena() -> None:
    """Make every thread of this process allocate from one malloc heap (glibc).

    glibc gives each new thread a heap of its own ("arena", up to eight per
    core) and keeps what is freed there for that heap's next allocations.
    The HTTP threads receive 4 MiB blocks that the trio thread frees later,
    so each of them kept a few blocks' worth: the daemon's peak grew from
    110 to 184 MiB after reading, for no speed (measured: one arena, same
    CPU and throughput; the threads hold the GIL anyway whenever they
    allocate). Call it early, before threads start; elsewhere than glibc it
    does nothing.
    """
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def one_error() -> Iterator[None]:
    """Around a nursery: raise its first failure itself, not an ExceptionGroup.

    trio nurseries group their children's exceptions; callers of the
    filesystem want the ``ImagefsError`` (quota, not found) that decides the
    errno. Cancellation passes through untouched, so cancel scopes still
    catch their own ``Cancelled``.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if group.subgroup((trio.Cancelled, KeyboardInterrupt, SystemExit)) is not None:
            raise
        leaves = list(_leaves(group))
        for exc in leaves:
            if isinstance(exc, ImagefsError):
                raise exc from None
        raise leaves[0] from None


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
