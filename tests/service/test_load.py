"""Many users at once: fifty clients, each its own user, upload, overwrite, download, list
and register images against one service for a bounded time.

Afterwards every object of every user is read back and compared with what its owner last
wrote, every listing matches exactly, and every registered image is there: nothing lost,
nothing mixed up between users. The service's resident memory (arbiter plus workers,
from /proc) is sampled throughout and must not grow from the first third of the run to
the last: a leak shows as a trend, a working set does not. The figures are printed
(run with ``-s``); nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imagefs import BLOCK_SIZE
from imagefs.service.launcher import running_service
from imagefs.service.store import Store
from svc_http import Api
from test_secrets import assert_no_secret_in_log

CLIENTS = 50
#: Seconds of load; the checks afterwards take a few more. IMAGEFS_LOAD_SECONDS for a soak.
DURATION = float(os.environ.get("IMAGEFS_LOAD_SECONDS", "20"))
SIZES = [0, 1, 100, 4096, 65536, 300_000, 1_000_000, BLOCK_SIZE + 1]
SIZE_WEIGHTS = [2, 4, 8, 8, 6, 4, 2, 1]
OCTET = {"Content-Type": "application/octet-stream"}


def process_tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` plus its children (gunicorn's arbiter and workers)."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class RssSampler(threading.Thread):
    """Samples the service's RSS every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), process_tree_rss(self.pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Client:
    """One user's view: what it wrote last, per name, and the images it registered."""

    api: Api
    seed: int
    objects: dict[str, tuple[int, str]] = field(default_factory=dict)   # name -> (size, sha256)
    images: dict[str, str] = field(default_factory=dict)                # image id -> object
    names: list[str] = field(default_factory=list)      # append-only: other threads peek
    counts: Counter = field(default_factory=Counter)
    sent: int = 0
    received: int = 0

    def run(self, deadline: float, others: list[Client]) -> None:
        rnd = random.Random(self.seed)
        self.upload(rnd)
        while time.monotonic() < deadline:
            op = rnd.choices(["upload", "overwrite", "download", "list", "register", "peek"],
                             [3, 2, 4, 2, 1, 1])[0]
            getattr(self, op)(rnd, others)
            self.counts[op] += 1

    # -- operations ----------------------------------------------------------------------

    def _data(self, rnd: random.Random) -> bytes:
        size = rnd.choices(SIZES, SIZE_WEIGHTS)[0]
        return rnd.randbytes(size)

    def _put(self, rnd: random.Random, name: str) -> None:
        data = self._data(rnd)
        if rnd.random() < 0.5:
            r = self.api.upload("pithos", name, data)         # hashmap, 409, blocks, hashmap
        else:
            r = self.api.put_object("pithos", name, data)     # plain PUT
        assert r.headers["ETag"]
        if name not in self.objects:
            self.names.append(name)
        self.objects[name] = (len(data), hashlib.sha256(data).hexdigest())
        self.sent += len(data)

    def upload(self, rnd: random.Random, others=None) -> None:
        self._put(rnd, f"dir{rnd.randrange(4)}/obj-{len(self.objects)}-{rnd.randrange(10**6)}")

    def overwrite(self, rnd: random.Random, others=None) -> None:
        self._put(rnd, rnd.choice(sorted(self.objects)))

    def download(self, rnd: random.Random, others=None) -> None:
        name = rnd.choice(sorted(self.objects))
        r = self.api.get(self.api.path("pithos", name))
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
        assert (len(r.content), hashlib.sha256(r.content).hexdigest()) == self.objects[name]
        self.received += len(r.content)

    def list(self, rnd: random.Random, others=None) -> None:
        names = {e["name"] for e in self.api.listing("pithos")}
        assert names == set(self.objects), set(self.objects) ^ names

    def register(self, rnd: random.Random, others=None) -> None:
        name = rnd.choice(sorted(self.objects))
        location = f"pithos://{self.api.uuid}/pithos/{name}"
        r = self.api.post(self.api.img + "/images/", headers={
            "X-Image-Meta-Name": f"image of {name}", "X-Image-Meta-Location": location,
            "X-Image-Meta-Property-Client": str(self.seed)})
        assert r.status_code == 200, r.text
        image_id = r.headers["x-image-meta-id"]
        self.images = {k: v for k, v in self.images.items() if v != name}
        self.images[image_id] = name

    def peek(self, rnd: random.Random, others: list[Client]) -> None:
        """Another user's private object stays private."""
        other = rnd.choice(others)
        if other is self or not other.names:
            return
        name = rnd.choice(other.names)
        r = self.api.get(self.api.path("pithos", name, account=other.api.uuid))
        assert r.status_code == 403, r.status_code

    # -- the final check -------------------------------------------------------------------

    def verify(self) -> None:
        self.list(None)
        for name, expected in self.objects.items():
            r = self.api.get(self.api.path("pithos", name))
            assert r.status_code == 200, (name, r.status_code)
            assert (len(r.content), hashlib.sha256(r.content).hexdigest()) == expected, name
        r = self.api.get(self.api.img + "/images/detail")
        assert r.status_code == 200
        mine = {i["id"]: i for i in r.json() if i["owner"] == self.api.uuid}
        assert set(mine) == set(self.images), set(mine) ^ set(self.images)
        for image_id, name in self.images.items():
            assert mine[image_id]["location"].endswith("/pithos/" + name)
            assert mine[image_id]["size"] == self.objects[name][0]
            assert mine[image_id]["properties"]["client"] == str(self.seed)


def _summary(samples: list[tuple[float, int]]) -> dict[str, float]:
    mb = [rss / 1e6 for _t, rss in samples]
    third = max(1, len(mb) // 3)
    return {"samples": len(mb), "start": mb[0], "first_third_max": max(mb[:third]),
            "last_third_max": max(mb[-third:]), "peak": max(mb), "end": mb[-1]}


@pytest.mark.slow
def test_fifty_clients_lose_nothing_and_memory_stays_flat(tmp_path):
    data_dir = tmp_path / "data"
    with running_service(data_dir, verbose=True) as svc:
        store = Store.open(data_dir)
        try:
            users = [store.add_user(f"load-{i}") for i in range(CLIENTS)]
        finally:
            store.close()
        clients = [Client(Api(svc.base, u.token, u.uuid), seed=i) for i, u in enumerate(users)]
        failures: list[tuple[int, BaseException]] = []

        def work(client: Client, deadline: float) -> None:
            try:
                client.run(deadline, clients)
            except BaseException as exc:  # reported by the test thread
                failures.append((client.seed, exc))

        idle = process_tree_rss(svc.process.pid)
        sampler = RssSampler(svc.process.pid)
        sampler.start()
        deadline = time.monotonic() + DURATION
        threads = [threading.Thread(target=work, args=(c, deadline), name=f"client-{c.seed}")
                   for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 120)
        sampler.stop()
        assert not [t for t in threads if t.is_alive()], "clients did not finish"
        assert not failures, failures[:3]

        for client in clients:            # nothing lost, nothing mixed up
            client.verify()
        after = process_tree_rss(svc.process.pid)

    assert_no_secret_in_log(svc.log_path, [svc.token, *(u.token for u in users)])
    ops = sum((c.counts for c in clients), Counter())
    stats = _summary(sampler.samples)
    report = {
        "clients": CLIENTS, "seconds": DURATION, "operations": dict(ops),
        "total_operations": sum(ops.values()),
        "objects": sum(len(c.objects) for c in clients),
        "images": sum(len(c.images) for c in clients),
        "mb_sent": round(sum(c.sent for c in clients) / 1e6, 1),
        "mb_received": round(sum(c.received for c in clients) / 1e6, 1),
        "rss_mb": {"idle": round(idle / 1e6, 1), **{k: round(v, 1) for k, v in stats.items()},
                   "after_verify": round(after / 1e6, 1)},
    }
    print("\nload:", json.dumps(report))
    Path(os.environ.get("IMAGEFS_LOAD_REPORT", os.devnull)).write_text(json.dumps(report))
    # Flat: the last third of the run needs no more memory than the first third did
    # (plus slack for a few more 4 MiB buffers in flight at the sampling instant).
    assert stats["last_third_max"] <= stats["first_third_max"] * 1.2 + 40, stats
    assert ops["upload"] and ops["download"] and ops["list"] and ops["register"]


def test_listings_of_every_length_prepare_few_statements(tmp_path):
    """Regression (a 180 s soak of the load above reached 202 MB, 85 MB of it SQLite's):
    every IN-list length made one more prepared statement, cached per connection and
    growing with the list. Listings of 1 to 70 objects now use a handful of shapes."""
    from storekit import upload

    store = Store.open(tmp_path / "data")
    try:
        user = store.add_user("lister")
        store.create_container(user.uuid, "pithos", user.uuid)
        statements: set[str] = set()
        store.db._conn().set_trace_callback(statements.add)
        for n in range(1, 71):
            upload(store, user.uuid, f"obj-{n:03d}", b"x", meta={"Color": str(n)})
            listed = store.list_objects(user.uuid, "pithos", user.uuid)
            assert [v.name for v in listed] == [f"obj-{i:03d}" for i in range(1, n + 1)]
            assert listed[-1].meta["Color"] == str(n)
        # The callback sees each statement with its values filled in: count the commas.
        shapes = {s.split(" IN (")[1].split(")")[0].count(",") + 1
                  for s in statements if " IN (" in s}
        assert shapes and shapes <= {1, 2, 4, 8, 16, 32, 64, 128}, sorted(shapes)
    finally:
        store.close()
