"""Concurrency and crashes: threads and processes sharing one data directory, and a
writer killed with SIGKILL at random moments (nothing visible may lack its blocks)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from storekit import assert_intact, names, st, upload  # noqa: F401

from imagefs.service.store import Store

ACCOUNT = "0d3c5e0e-6f2a-4e8b-9a1d-3b2f1c4d5e6f"
ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def all_serials(store: Store) -> list[int]:
    with store.db.read() as tx:
        return [r[0] for r in tx.all("SELECT serial FROM versions")]


def test_threads_write_and_read_at_once(st):
    st.ensure_account(ACCOUNT)
    errors: list[BaseException] = []
    results: dict[int, list[int]] = {}

    def worker(n: int) -> None:
        rnd = random.Random(n)
        serials = results.setdefault(n, [])
        try:
            for i in range(25):
                data = rnd.randbytes(rnd.randrange(1, 3000))
                name = f"t{n}/o{i % 5}" if rnd.random() < 0.7 else "shared"
                v = upload(st, ACCOUNT, name, data, requester=ACCOUNT)
                serials.append(v.serial)
                got = st.get_version(ACCOUNT, "pithos", name, ACCOUNT)
                assert got.serial >= v.serial
                st.list_objects(ACCOUNT, "pithos", ACCOUNT, prefix=f"t{n}/")
                if i % 7 == 0:
                    st.update_object_meta(ACCOUNT, "pithos", name, ACCOUNT,
                                          meta={"N": str(i)}, replace=False)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            st.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    serials = [s for ss in results.values() for s in ss]
    assert len(serials) == len(set(serials)) == 200
    stored = all_serials(st)
    assert len(stored) == len(set(stored))
    assert len(st.list_objects(ACCOUNT, "pithos", ACCOUNT)) == 41
    for v in st.list_objects(ACCOUNT, "pithos", ACCOUNT):
        assert_intact(st, v)
    assert st.check() == []


WRITER = """
import io, random, sys
from imagefs.service.store import Store
store = Store.open(sys.argv[1])
account, tag = sys.argv[2], sys.argv[3]
rnd = random.Random(tag)
for i in range(40):
    data = rnd.randbytes(rnd.randrange(0, 5000))
    name = f"{tag}/{i % 10}" if i % 3 else "shared"
    size, hashes, _ = store.put_stream(io.BytesIO(data), len(data))
    v = store.put_object(account, "pithos", name, account, size=size, hashes=hashes,
                         content_type="x", meta={"Tag": tag})
    print(v.serial, flush=True)
"""


def test_two_processes_share_a_data_dir(st):
    st.ensure_account(ACCOUNT)
    procs = [run_python(WRITER, str(st.data_dir), ACCOUNT, tag) for tag in ("p1", "p2")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    serials = [int(line) for out, _ in outs for line in out.split()]
    assert len(serials) == len(set(serials)) == 80
    assert names(st.list_objects(ACCOUNT, "pithos", ACCOUNT, delimiter="/")) == [
        "p1/", "p2/", "shared"]
    assert len(st.list_versions(ACCOUNT, "pithos", "shared", ACCOUNT)) == 28
    assert st.check() == []


CRASHER = """
import io, random, sys, threading, time
from imagefs.errors import ImagefsError
from imagefs.service.store import MissingBlocks, Store

store = Store.open(sys.argv[1])
account, seed = sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
store.ensure_account(account)
store.create_container(account, "flat", account, policy={"versioning": "none"})

def collector():
    while True:  # the most aggressive gc there is: no grace at all
        store.gc(grace_seconds=0)
        time.sleep(0.01)

threading.Thread(target=collector, daemon=True).start()

def put(container, name):
    size = rnd.choice([0, 1, 100, 5000, 4 * 1024 * 1024 + rnd.randrange(1, 100)])
    data = rnd.randbytes(size)
    while True:
        size, hashes, _ = store.put_stream(io.BytesIO(data), len(data))
        try:
            return store.put_object(account, container, name, account, size=size,
                                    hashes=hashes, content_type="x", meta={"S": str(seed)})
        except MissingBlocks:
            continue  # gc took them between upload and commit: send them again

done = 0
while True:
    container = rnd.choice(["pithos", "flat"])
    name = f"d{rnd.randrange(3)}/o{rnd.randrange(8)}"
    op = rnd.random()
    try:
        if op < 0.5:
            put(container, name)
        elif op < 0.6:
            store.delete_object(account, container, name, account)
        elif op < 0.7:
            store.copy_object(account, container, name, account, container,
                              name + ".copy", account)
        elif op < 0.8:
            store.move_object(account, container, name, account, container,
                              f"d{rnd.randrange(3)}/m{rnd.randrange(8)}", account)
        elif op < 0.9:
            store.update_object_meta(account, container, name, account,
                                     meta={"K": str(done)}, replace=False)
        else:
            store.register_image(account, account, container, name, image_name="img",
                                 is_public=rnd.random() < 0.5, properties={"n": str(done)})
    except ImagefsError:
        pass  # NotFound and the like: the random op hit nothing
    done += 1
    if done == 20:
        print("running", flush=True)
"""


def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path):
    data = tmp_path / "data"
    rnd = random.Random(1234)
    for round_ in range(5):
        proc = run_python(CRASHER, str(data), ACCOUNT, str(round_))
        line = proc.stdout.readline()
        assert line.strip() == "running", proc.stderr.read()
        time.sleep(rnd.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        store = Store.open(data)
        assert store.check(repair=True, temp_grace=0) == []
        assert store.check() == []
        for container in ("pithos", "flat"):
            for v in store.list_objects(ACCOUNT, container, ACCOUNT):
                assert_intact(store, v)
                for serial, _ in store.list_versions(ACCOUNT, container, v.name, ACCOUNT):
                    assert_intact(store, store.get_version(ACCOUNT, container, v.name, ACCOUNT,
                                                           version=serial))
        for image in store.list_images(ACCOUNT):
            assert image.name == "img"
        store.close()
    # The serial counter kept counting across the kills.
    serials = all_serials(Store.open(data))
    assert len(serials) == len(set(serials)) and len(serials) > 5


def test_forked_child_opens_its_own_connection(st):
    """A worker forked from a process that used the store (gunicorn --preload)."""
    upload(st, ACCOUNT, "before-fork", b"parent")
    pid = os.fork()
    if pid == 0:  # the child: write through the inherited Store, then leave at once
        code = 1
        try:
            upload(st, ACCOUNT, "from-child", b"child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert assert_intact(st, st.get_version(ACCOUNT, "pithos", "from-child", ACCOUNT)) == b"child"
    upload(st, ACCOUNT, "after-fork", b"parent again")
    assert st.check() == []
