"""Storing an open file as an object: the Pithos hashmap upload, and its progress.

``upload`` runs when a writer closes (flush), fsyncs or releases a dirty
file: hash every block not hashed yet (most were hashed in the background
while the file was written), PUT the hashmap; the service answers 201, or
409 with the hashes it lacks; send those blocks in parallel (each read from
the spill file inside its worker thread, so at most ``parallel`` blocks are
in memory per upload, and the HTTP limiter bounds them all); PUT again.

Why this is all-or-nothing: the object changes only with the hashmap PUT,
which the service applies atomically. A failure anywhere before it leaves
the previous version (or no object); blocks already sent are just unused
blocks, which the service's garbage collection drops. So nothing half
written ever appears, and running the command again finishes the job.

The caller (``Filesystem``) owns when to upload and what happens after;
this module owns how.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio

from imagefs import errors
from imagefs.client.models import PutResult
from imagefs.fs.blocking import Workers, one_error
from imagefs.fs.files import OpenFile

log = logging.getLogger(__name__)

#: Hashmap PUTs per upload before giving up (a block the service loses between
#: our POST and the PUT, e.g. to garbage collection, costs one more round).
ROUNDS = 4


@dataclass
class Progress:
    """One file being written or uploaded, as ``imagefs status`` shows it."""

    path: str
    total: int
    state: str = "writing"  # writing | hashing | sending | committing
    hashed: int = 0
    sent: int = 0
    started: float = field(default_factory=time.time)
    _clock: float = field(default_factory=time.monotonic, repr=False)

    def add_hashed(self, n: int) -> None:
        self.hashed += n

    def as_dict(self) -> dict:
        elapsed = max(time.monotonic() - self._clock, 1e-6)
        return {"path": self.path, "state": self.state, "hashed": self.hashed,
                "sent": self.sent, "total": self.total,
                "rate": round((self.hashed + self.sent) / elapsed),
                "started": self.started}


async def upload(of: OpenFile, *, workers: Workers, pithos, container: str, key: str,
                 meta: dict[str, str], progress: Progress, parallel: int = 4
                 ) -> tuple[PutResult, list[str]]:
    """Store the current content of ``of`` as ``container/key``; (result, hashmap)."""
    progress.state = "hashing"
    progress.total = of.size
    progress.hashed = 0
    hashes = await of.hashmap(progress.add_hashed)
    size = of.size
    for _round in range(ROUNDS):
        progress.state = "committing"
        result = await workers.http(_put, pithos, container, key, size, hashes,
                                    of.content_type, meta)
        if result.created:
            return result, hashes
        progress.state = "sending"
        await _send_missing(of, container, hashes, result.missing, progress, parallel)
    raise errors.ServiceUnavailable(
        f"{container}/{key}: the service keeps asking for blocks it was sent")


def _put(pithos, container: str, key: str, size: int, hashes: list[str], content_type: str,
         meta: dict[str, str]) -> PutResult:
    return pithos.put_hashmap(container, key, size, hashes, content_type=content_type,
                              meta=meta)


async def _send_missing(of: OpenFile, container: str, hashes: list[str], missing: list[str],
                        progress: Progress, parallel: int) -> None:
    where: dict[str, int] = {}
    for index, h in enumerate(hashes):
        where.setdefault(h, index)
    unknown = [h for h in missing if h not in where]
    if unknown:
        raise errors.InvalidInput(f"the service asked for blocks not in the hashmap: {unknown}")
    limiter = trio.CapacityLimiter(max(1, parallel))

    async def send(h: str, index: int) -> None:
        async with limiter:
            progress.sent += await of.send(index, container, h)

    with one_error():
        async with trio.open_nursery() as nursery:
            for h in dict.fromkeys(missing):
                nursery.start_soon(send, h, where[h])
