"""Storing an open file as an object: the Pithos hashmap upload, and its progress.

Blocks go out while the file is still being written (``Sender``), so that
``close()`` has little left to do. The protocol allows it: a block POSTed to
the container is just a stored block until a hashmap PUT refers to it, and
nothing names it before then.

Which blocks to send early: only those the service lacks. ``cp`` of a new
image sends everything; ``cp`` of an image the service has (a copy, a
re-upload, an unchanged block rewritten in place) should send nothing:
sending it anyway makes the service receive and re-hash every byte. So the
sender asks, with the question the protocol already has: a hashmap PUT of
the blocks hashed since the last question plus one hash no block can have
(``PROBE_HASH``) is always answered 409 with the list of those blocks the
service lacks, and never creates anything. A question costs about a
millisecond of CPU on each side (a third of hashing the block), and waiting
for its answer before each send leaves senders idle. Measured (medians of
4 interleaved runs of ``cp`` of 1 GiB on a busy machine):

==================  ===========  =============
                    new data     known data
==================  ===========  =============
never asking        218-237      297-324 MB/s
asking every block  191          381
as below            200          386
==================  ===========  =============

So the sender asks less the more predictable the data is. One question is
in flight per file, and it covers every block hashed meanwhile:

- while blocks turn out missing (new data), blocks go out without asking:
  after each answer that all were missing, twice as many as the last time
  (up to ``MAX_BATCH``, 256 MiB: what a file that turns from new to known
  data may send for nothing), then one question again; a block is sent
  from its buffer;
- while blocks turn out present (known data), each question waits for twice
  as many blocks as the last (up to ``MAX_BATCH``), and blocks give their
  buffer back at once (one that turns out missing is read back from the
  spill file).

A mixed answer starts both over: ask about every block.

``upload`` runs when a writer closes (flush), fsyncs or releases a dirty
file: hash every block not hashed yet (most were hashed in the background
while the file was written), let the sender finish (usually just the last
block), PUT the hashmap; the service answers 201, or 409 with the hashes it
still lacks (a block the sender failed to send, or one garbage-collected
meanwhile): send those (each read from the spill file inside its worker
thread, so at most ``parallel`` blocks are in memory per upload, and the
HTTP limiter bounds them all); PUT again. The sender is an optimisation
only: when anything fails it stops quietly and this path does the work and
reports the error. When it stopped because its retries ran out (the service
unavailable for a whole deadline, while the writer waited for its buffers),
this path makes one attempt per request for a deadline after that, rather
than keep the user waiting a second deadline: a service that is back by then
still takes the file, one that is not is EIO at once.

Why this is all-or-nothing: the object changes only with the hashmap PUT,
which the service applies atomically. A failure anywhere before it leaves
the previous version (or no object); blocks already sent are just unused
blocks, which the service's garbage collection drops. So nothing half
written ever appears, and running the command again finishes the job.

The caller (``Filesystem``) owns when to upload and what happens after;
this module owns how.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from imagefs import errors
from imagefs.client.http import retries_until
from imagefs.client.models import PutResult
from imagefs.fs.blocking import Workers, one_error

if TYPE_CHECKING:
    from imagefs.fs.files import Buffer, OpenFile

log = logging.getLogger(__name__)

#: Hashmap PUTs per upload before giving up (a block the service loses between
#: our POST and the PUT, e.g. to garbage collection, costs one more round).
ROUNDS = 4
#: Blocks a file sends at once while it is being written.
PARALLEL = 4
#: Most blocks one question waits for while the service has every block asked about, and
#: most blocks sent without asking while it lacks every block asked about.
MAX_BATCH = 64
#: A block hash no content has (finding data whose SHA-256 is all zeros is beyond
#: reach), so a hashmap naming it is always refused with 409 and never stored.
PROBE_HASH = "0" * 64


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
    progress.state = "sending"
    await of.sender.flush(progress)
    size = of.size
    with retries_until(of.sender.commit_retries_until()):
        for _round in range(ROUNDS):
            progress.state = "committing"
            result = await workers.http(_put, pithos, container, key, size, hashes,
                                        of.content_type, meta)
            if result.created:
                of.sender.gave_up = None
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


# -- sending while writing ----------------------------------------------------------------


class _Sealed:
    """A hashed block on its way: its buffer (None: read it from the spill file)."""

    __slots__ = ("index", "digest", "length", "buf")

    def __init__(self, index: int, digest: str, length: int, buf: Buffer | None) -> None:
        self.index = index
        self.digest = digest
        self.length = length
        self.buf = buf


class Sender:
    """Sends the blocks of one open file as they are hashed. See the module docstring.

    ``OpenFile.seal`` hands over each hashed block (``offer``) with its buffer,
    which the sender gives back to the pool once the service has the block;
    meanwhile the buffer counts as lent, so the writer waits for it rather
    than spilling (flow control: the writer runs at the speed of the upload).
    Blocks go to ``of.target()`` as it is when they are sent (a rename moves
    the target); nothing goes once the file is unlinked. Everything runs on
    the trio thread; background work runs as the file's tasks, so
    ``OpenFile.close`` waits for it.
    """

    def __init__(self, of: OpenFile, *, parallel: int = PARALLEL) -> None:
        self.of = of
        self.parallel = parallel
        self.sent = 0  # bytes sent, for status
        self._pending: list[_Sealed] = []  # hashed, not asked about yet
        self._queue: collections.deque[_Sealed] = collections.deque()  # the service lacks
        self._present: set[str] = set()  # hashes the service has (answered, or sent)
        self._busy: set[str] = set()  # hashes queued or being sent
        self._source_hashes: tuple[list[str] | None, set[str]] = (None, set())
        self._asking = False
        self._batch = 1  # blocks the next question waits for (grows while all are present)
        self._trusted = 0  # blocks to send without asking (while all were missing)
        self._trust = 1  # what ``_trusted`` becomes after the next all-missing answer
        self._posting = 0
        self._flushing = 0
        self._stopped = False
        self.gave_up: float | None = None  # when a request ran out of retries (monotonic)
        self._progress: Progress | None = None  # the commit waiting in ``flush``
        self._idle = trio.Event()
        self._idle.set()

    def offer(self, index: int, digest: str, length: int, buf: Buffer | None,
              lent: bool) -> None:
        """Block ``index`` hashes to ``digest``; the sender now owns ``buf`` (if any)."""
        entry = _Sealed(index, digest, length, buf)
        if buf is not None and not lent:
            self.of.pool.lent += 1
        if self._stopped or self._target() is None or digest == self.of.empty_hash or \
                digest in self._present or digest in self._busy or self._in_source(digest):
            self._release(entry)
            return
        if self._trusted > 0:  # new data so far: send it without asking
            self._trusted -= 1
            self._busy.add(digest)
            self._queue.append(entry)
        else:
            if self._batch > 1:  # known data so far: probably not sent, keep no buffer
                self._release(entry)
            self._pending.append(entry)
        self._pump()

    async def flush(self, progress: Progress | None = None) -> None:
        """Send what was offered (asking at once, whatever is queued) and wait for it."""
        self._flushing += 1
        self._progress = progress
        try:
            self._pump()
            while not self._idle.is_set():
                await self._idle.wait()
        finally:
            self._flushing -= 1
            self._progress = None

    def stop(self) -> None:
        """Send nothing more (the file is closing); what is in flight finishes."""
        self._stopped = True
        self._pump()

    # -- internals --------------------------------------------------------------------

    def _target(self) -> tuple[str, str] | None:
        of = self.of
        if of.target is None or of.unlinked:
            return None
        return of.target()

    def _in_source(self, digest: str) -> bool:
        """True if the version the file was opened from has this block (so does the
        service, unless that version went meanwhile: the commit's PUT will tell)."""
        hashes = self.of.src_hashes
        if not hashes:
            return False
        if self._source_hashes[0] is not hashes:
            self._source_hashes = (hashes, set(hashes))
        return digest in self._source_hashes[1]

    def _release(self, entry: _Sealed) -> None:
        if entry.buf is not None:
            self.of.pool.give(entry.buf, lent=True)
            entry.buf = None

    def _pump(self) -> None:
        """Start what can start; keep ``_idle`` true exactly when nothing is left."""
        if self._stopped:
            for entry in self._pending:
                self._release(entry)
            self._pending.clear()
            while self._queue:
                entry = self._queue.popleft()
                self._busy.discard(entry.digest)
                self._release(entry)
        while self._queue and self._posting < self.parallel:
            self._posting += 1
            self.of._start_task(self._post, self._queue.popleft())
        if self._pending and not self._asking and (
                self._flushing or len(self._pending) >= self._batch):
            batch, self._pending = self._pending, []
            self._asking = True
            self.of._start_task(self._ask, batch)
        busy = self._asking or self._posting or self._queue or self._pending
        if busy and self._idle.is_set():
            self._idle = trio.Event()
        elif not busy:
            self._idle.set()

    def _learn(self, asked: int, missing: int) -> None:
        """Ask less while the answers are all alike (see the module docstring)."""
        if missing == asked:
            self._trusted, self._trust = self._trust, min(2 * self._trust, MAX_BATCH)
            self._batch = 1
        elif missing == 0:
            self._batch = min(2 * self._batch, MAX_BATCH)
            self._trusted, self._trust = 0, 1
        else:
            self._batch, self._trusted, self._trust = 1, 0, 1

    def commit_retries_until(self) -> float | None:
        """When the commit's requests stop retrying (``http.retries_until``): now, if a
        request of this sender ran out of retries less than a deadline ago (see the
        module docstring); None (as usual) otherwise."""
        if self.gave_up is None:
            return None
        now = time.monotonic()
        if now - self.gave_up >= self.of.pithos.http.deadline:
            return None
        return now

    def _fail(self, what: str, exc: BaseException) -> None:
        if not self._stopped:
            log.info("sending blocks early stopped (%s: %s); the commit sends them", what, exc)
        self._stopped = True
        if isinstance(exc, errors.ServiceUnavailable):
            self.gave_up = time.monotonic()

    async def _ask(self, batch: list[_Sealed]) -> None:
        """Which blocks of ``batch`` does the service lack? Queue those, drop the rest."""
        try:
            target = self._target()
            if target is None or self._stopped:
                return
            hashes = list(dict.fromkeys(e.digest for e in batch
                                        if e.digest not in self._present))
            missing: set[str] = set()
            if hashes:
                container, key = target
                log.debug("%s/%s: asking which of %d blocks to send", container, key,
                          len(hashes))
                try:
                    result = await self.of.workers.http(_probe, self.of.pithos, container, key,
                                                        self.of.bs, hashes)
                except Exception as exc:
                    self._fail("asking for blocks", exc)
                    return
                if result.created:  # a service that does not check its blocks
                    log.error("%s/%s: the service stored a hashmap naming a block it cannot "
                              "have; the commit will replace it", container, key)
                    self._fail("asking for blocks", errors.Corrupted("hashmap accepted"))
                    return
                missing = set(result.missing)
                self._learn(len(hashes), len(missing - {PROBE_HASH}))
            self._present.update(h for h in hashes if h not in missing)
            for entry in batch:
                if entry.digest in missing and entry.digest not in self._busy:
                    self._busy.add(entry.digest)
                    self._queue.append(entry)
                else:
                    self._release(entry)
            batch = []
        finally:
            for entry in batch:  # not asked (stopped, failed)
                self._release(entry)
            self._asking = False
            self._pump()

    async def _post(self, entry: _Sealed) -> None:
        try:
            target = self._target()
            if target is None or self._stopped:
                return
            container = target[0]
            try:
                if entry.buf is not None:
                    view = memoryview(entry.buf)[:entry.length]
                    await self.of.workers.http(_post, self.of.pithos, container, view,
                                               entry.digest)
                    sent = entry.length
                else:
                    sent = await self.of.send_sealed(entry.index, container, entry.digest)
            except Exception as exc:
                self._fail("sending a block", exc)
                return
            if sent:
                self._present.add(entry.digest)
                self.sent += sent
                if self._progress is not None:
                    self._progress.sent += sent
        finally:
            self._busy.discard(entry.digest)
            self._release(entry)
            self._posting -= 1
            self._pump()


def _probe(pithos, container: str, key: str, block_size: int, hashes: list[str]) -> PutResult:
    """The hashmap PUT that only asks (see the module docstring)."""
    probe = hashes + [PROBE_HASH]
    return pithos.put_hashmap(container, key, len(probe) * block_size, probe)


def _post(pithos, container: str, data: memoryview, digest: str) -> str:
    return pithos.post_block(container, data, hash=digest)
