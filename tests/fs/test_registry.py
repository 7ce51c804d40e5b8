"""fs.registry against the real embedded service, without a mount (behaviour.md §5).

Drives ``Registry`` the way the filesystem will: sidecar writes and reads,
the hooks after uploads and moves, attributes, ``.images/`` and
``.versions/``. Every assertion about the registration is checked against
the image service itself (``plankton.get``), not only the registry's cache.
The last section repeats the core cases against a service started with
``--real-synnefo`` (merging re-registration, wrapped image list, upper-case
status), where override semantics must still hold.
"""

from __future__ import annotations

import errno
import functools
import json
import uuid as uuidlib
from collections import Counter

import pytest
import trio

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.client.models import Image
from imagefs.fs.blocking import Workers
from imagefs.fs.registry import Registry
from imagefs.image import metafile, xattrs
from imagefs.image.xattrs import Source
from imagefs.protocol import headers as H
from imagefs.service.launcher import running_service

SEED_EDITED = b"""{
  "status": "available",
  "name": "Debian Base Gama",
  "checksum": "3cb03556ec971f...e8dd6190443b560cb7",
  "id": "7h1rd-1m4g3-1d2",
  "updated-at": "2013-06-19 08:01:00",
  "created-at": "2013-06-19 08:00:22",
  "properties": {
    "OS": "Linux",
    "USER": "root"
  },
  "location": "pithos://s0m3-u53r-1d/pithos/debian_base3.diskdump",
  "is-public": "False",
  "owner": "s0m3-u53r-1d",
  "disk-format": "diskdump",
  "size": "903471104",
  "deleted-at": "",
  "container-format": "bare"
}
"""


class CountingWorkers(Workers):
    """Workers that remember which client calls went to a thread."""

    def __init__(self) -> None:
        super().__init__(http=4)
        self.calls: Counter[str] = Counter()

    async def http(self, fn, *args):
        inner = fn.func if isinstance(fn, functools.partial) else fn
        self.calls[getattr(inner, "__name__", repr(inner))] += 1
        return await super().http(fn, *args)


def _open(url: str, token: str) -> Connection:
    return Connection.open(url, token, deadline=20.0)


@pytest.fixture(scope="module")
def conn(service):
    with _open(service.url, service.token) as c:
        yield c


@pytest.fixture(scope="module")
def other(service):
    """A second user, owner of foreign images."""
    _uuid, token = service.new_user()
    with _open(service.url, token) as c:
        yield c


def _make_container(c: Connection) -> str:
    name = "reg-" + uuidlib.uuid4().hex[:10]
    assert c.pithos.create_container(name, versioning="auto")
    return name


@pytest.fixture
def container(conn):
    return _make_container(conn)


@pytest.fixture
async def workers():
    return CountingWorkers()


@pytest.fixture
async def registry(conn, workers):
    return Registry(conn, workers, cache_timeout=60.0)


def put(c: Connection, container: str, name: str, data: bytes = b"disk image bytes"):
    c.pithos.put_data(container, name, data)
    return c.pithos.head(container, name)


def stored(c: Connection, container: str, name: str) -> bytes:
    info = c.pithos.head(container, name)
    return c.pithos.read(container, name, 0, info.size)


def live(c: Connection, image_id: str) -> Image | None:
    try:
        return c.plankton.get(image_id)
    except errors.NotFound:
        return None


async def register(registry, conn, container, name, doc: dict, data=b"disk image bytes"):
    obj = put(conn, container, name, data)
    image = await registry.write_sidecar(container, name + ".meta", json.dumps(doc).encode())
    assert image is not None and image.id == obj.uuid
    return obj, image


# -- writing a sidecar registers --------------------------------------------------------------


async def test_write_registers_with_the_sidecar_fields(registry, conn, container):
    obj = put(conn, container, "debian_base3.diskdump")
    image = await registry.write_sidecar(container, "debian_base3.diskdump.meta", SEED_EDITED)

    truth = live(conn, obj.uuid)
    assert truth is not None and image.id == truth.id == obj.uuid
    assert truth.name == "Debian Base Gama"
    assert truth.properties == {"os": "Linux", "user": "root"}
    assert (truth.disk_format, truth.container_format, truth.is_public) == \
        ("diskdump", "bare", False)
    assert truth.location == H.location(conn.account, container, "debian_base3.diskdump")
    assert truth.owner == conn.account and truth.size == obj.size

    # The registration as the service returned it is stored as the object NAME.meta ...
    text = stored(conn, container, "debian_base3.diskdump.meta")
    doc = json.loads(text)
    assert doc["id"] == obj.uuid and doc["properties"] == {"OS": "Linux", "USER": "root"}
    assert doc["owner"] == conn.account  # no " (username)": grep '"owner": "UUID"' works
    # ... and reading the sidecar shows the live registration.
    view = await registry.sidecar_view(container, "debian_base3.diskdump.meta", obj)
    assert view.content == metafile.render(truth) and view.error is None
    assert await registry.read_sidecar(container, "debian_base3.diskdump.meta") == view.content
    assert (await registry.image_of(container, "debian_base3.diskdump", obj)).id == obj.uuid
    assert await registry.sidecar_visible(container, "debian_base3.diskdump", obj)


async def test_rewrite_keeps_the_id_and_replaces_everything(registry, conn, container):
    obj, first = await register(registry, conn, container, "img", {
        "name": "First", "disk-format": "extdump", "container-format": "ovf",
        "is-public": True, "status": "testing", "properties": {"OS": "Linux", "USER": "root"}})
    truth = live(conn, obj.uuid)
    assert (truth.disk_format, truth.container_format, truth.is_public, truth.status) == \
        ("extdump", "ovf", True, "testing")

    second = await registry.write_sidecar(container, "img.meta", json.dumps({
        "name": "Second", "properties": {"os": "Debian"}}).encode())
    truth = live(conn, obj.uuid)
    assert second.id == first.id == truth.id == obj.uuid
    assert truth.name == "Second"
    assert truth.properties == {"os": "Debian"}  # USER is gone: an override, not a merge
    assert (truth.disk_format, truth.container_format, truth.is_public) == \
        ("diskdump", "bare", False)
    assert truth.status.lower() == "available"
    # Each registration is a new version of the stored metafile.
    assert len(conn.pithos.list_versions(container, "img.meta")) == 2
    assert json.loads(stored(conn, container, "img.meta"))["name"] == "Second"


async def test_saving_the_live_registration_again_sends_no_registration(
        registry, conn, container, workers):
    obj, image = await register(registry, conn, container, "same", {"name": "Same"})
    view = await registry.sidecar_view(container, "same.meta", obj)
    versions = conn.pithos.list_versions(container, "same.meta")
    workers.calls.clear()
    again = await registry.write_sidecar(container, "same.meta", view.content)
    assert again.id == image.id and again.name == "Same"
    assert workers.calls["reregister"] == 0 and workers.calls["put_data"] == 0
    assert conn.pithos.list_versions(container, "same.meta") == versions


async def test_server_owned_keys_are_ignored(registry, conn, container):
    """The metafile of one image is a template for another."""
    obj_a, image_a = await register(registry, conn, container, "a.diskdump", {
        "name": "Template", "properties": {"OS": "Linux"}}, data=b"first image")
    template = stored(conn, container, "a.diskdump.meta")
    assert json.loads(template)["id"] == obj_a.uuid

    obj_b = put(conn, container, "b.diskdump", b"second, longer image")
    image_b = await registry.write_sidecar(container, "b.diskdump.meta", template)
    truth_b = live(conn, obj_b.uuid)
    assert image_b.id == truth_b.id == obj_b.uuid != obj_a.uuid
    assert truth_b.name == "Template" and truth_b.properties == {"os": "Linux"}
    assert truth_b.location.endswith("/b.diskdump") and truth_b.size == obj_b.size
    assert live(conn, obj_a.uuid).location.endswith("/a.diskdump")  # a untouched


async def test_missing_name_is_the_path_in_the_container(registry, conn, container):
    obj = put(conn, container, "images/win8.diskdump")
    image = await registry.write_sidecar(container, "images/win8.diskdump.meta",
                                         b'{"properties": {"OS": "Windows"}}')
    truth = live(conn, obj.uuid)
    assert image.name == truth.name == "images/win8.diskdump"
    assert truth.location == H.location(conn.account, container, "images/win8.diskdump")


# -- invalid input ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    pytest.param(b'{"name": "x",\n "properties": {"OS": "Linux"}\n', id="not-json"),
    pytest.param(b'{"name": 42}', id="wrong-type"),
    pytest.param(b'{"name": "x", "properties": {"OS": ["Linux"]}}', id="list-property"),
    pytest.param(b'{"name": "x", "disk-format": "qcow2"}', id="unknown-format"),
])
async def test_invalid_sidecar_is_refused_and_kept(registry, conn, container, bad):
    obj, image = await register(registry, conn, container, "img", {
        "name": "Good", "properties": {"OS": "Linux"}})
    before = live(conn, obj.uuid)
    versions = conn.pithos.list_versions(container, "img.meta")

    with pytest.raises(errors.MetafileInvalid) as info:
        await registry.write_sidecar(container, "img.meta", bad)
    assert errors.to_errno(info.value) == errno.EINVAL

    assert live(conn, obj.uuid) == before  # registration unchanged
    assert conn.pithos.list_versions(container, "img.meta") == versions  # nothing stored
    reason = registry.error_of(container, "img.meta")
    assert reason and reason == info.value.message
    assert await registry.read_sidecar(container, "img.meta") == bad
    view = await registry.sidecar_view(container, "img.meta", obj)
    assert (view.content, view.image, view.error) == (bad, None, reason)
    assert await registry.getxattr(container, "img.meta", None, "user.imagefs.error") == \
        reason.encode()
    assert b"user.imagefs.error" in await registry.listxattr(container, "img.meta", None)

    # Fixing it registers and forgets the error and the text.
    await registry.write_sidecar(container, "img.meta", b'{"name": "Fixed"}')
    assert live(conn, obj.uuid).name == "Fixed"
    assert registry.error_of(container, "img.meta") is None
    assert json.loads(await registry.read_sidecar(container, "img.meta"))["name"] == "Fixed"


async def test_a_registration_the_service_refuses_leaves_the_old_one(conn, workers, container):
    """With no format list, the parser lets "qcow2" through; the service refuses it
    after the unregister of the override, and the old registration comes back."""
    registry = Registry(conn, workers, cache_timeout=60.0, disk_formats=None)
    obj, image = await register(registry, conn, container, "img", {
        "name": "Kept", "is-public": True, "properties": {"OS": "Linux"}})
    before = live(conn, obj.uuid)
    with pytest.raises(errors.MetafileInvalid) as info:
        await registry.write_sidecar(container, "img.meta",
                                     b'{"name": "New", "disk-format": "qcow2"}')
    assert "refused" in info.value.message
    after = live(conn, obj.uuid)
    assert after is not None and after.id == before.id
    assert (after.name, after.is_public, after.properties) == ("Kept", True, {"os": "Linux"})
    assert registry.error_of(container, "img.meta") == info.value.message


async def test_an_oversized_sidecar_is_refused_without_keeping_it(registry, conn, container):
    """The filesystem hands over only the start of a huge file, with its size."""
    obj, image = await register(registry, conn, container, "img", {"name": "Small"})
    start = b"{" + b" " * metafile.MAX_METAFILE_BYTES
    with pytest.raises(errors.MetafileInvalid) as info:
        await registry.write_sidecar(container, "img.meta", start, size=50 << 20)
    assert str(50 << 20) in info.value.message
    assert registry.error_of(container, "img.meta") == info.value.message
    view = await registry.sidecar_view(container, "img.meta", obj)
    assert view.image is not None and view.image.name == "Small"  # no 1 MiB text kept
    assert live(conn, obj.uuid).name == "Small"


async def test_deleting_a_refused_sidecar_forgets_the_text(registry, conn, container):
    put(conn, container, "img")
    with pytest.raises(errors.MetafileInvalid):
        await registry.write_sidecar(container, "img.meta", b"{not json")
    assert await registry.sidecar_visible(container, "img")
    await registry.delete_sidecar(container, "img.meta")
    assert registry.error_of(container, "img.meta") is None
    assert await registry.sidecar_view(container, "img.meta") is None
    assert not await registry.sidecar_visible(container, "img")


# -- a sidecar before its image ---------------------------------------------------------------


async def test_sidecar_before_its_image_waits_for_the_upload(registry, conn, container):
    text = b'{"name": "Early", "properties": {"OS": "Linux"}}'
    assert await registry.write_sidecar(container, "late.diskdump.meta", text) is None
    assert registry.is_pending(container, "late.diskdump")
    assert stored(conn, container, "late.diskdump.meta") == text  # the text is stored

    obj = put(conn, container, "late.diskdump")
    assert live(conn, obj.uuid) is None
    await registry.object_committed(container, "late.diskdump", obj)
    truth = live(conn, obj.uuid)
    assert truth.name == "Early" and truth.properties == {"os": "Linux"}
    assert not registry.is_pending(container, "late.diskdump")
    assert json.loads(stored(conn, container, "late.diskdump.meta"))["id"] == obj.uuid


async def test_copying_a_folder_in_any_order_registers_every_image(registry, conn, container):
    """What ``cp -r images/ mnt/c/`` does: files and sidecars arrive in any order,
    several at once."""
    names = [f"images/disk{i}.diskdump" for i in range(6)]

    async def copy_one(i: int, name: str) -> None:
        text = json.dumps({"name": f"Disk {i}", "properties": {"N": str(i)}}).encode()

        async def data() -> None:
            obj = await trio.to_thread.run_sync(put, conn, container, name, f"d{i}".encode())
            await registry.object_committed(container, name, obj)

        async def meta() -> None:
            await registry.write_sidecar(container, name + ".meta", text)

        first, second = (data, meta) if i % 2 else (meta, data)
        await first()
        await second()

    async with trio.open_nursery() as nursery:
        for i, name in enumerate(names):
            nursery.start_soon(copy_one, i, name)
    for i, name in enumerate(names):
        truth = live(conn, conn.pithos.head(container, name).uuid)
        assert truth is not None and truth.name == f"Disk {i}"
        assert truth.properties == {"n": str(i)}


# -- deleting a sidecar -----------------------------------------------------------------------


async def test_deleting_the_sidecar_unregisters_and_keeps_the_object(registry, conn, container):
    obj, image = await register(registry, conn, container, "img", {"name": "Doomed"})
    await registry.delete_sidecar(container, "img.meta")
    assert live(conn, obj.uuid) is None
    assert conn.pithos.head(container, "img").uuid == obj.uuid  # the object stays
    with pytest.raises(errors.NotFound):
        conn.pithos.head(container, "img.meta")
    assert await registry.image_of(container, "img", obj) is None
    assert await registry.sidecar_view(container, "img.meta", obj) is None
    with pytest.raises(errors.NotFound):
        await registry.delete_sidecar(container, "img.meta")
    # Registering the same object again gives the same id.
    again = await registry.write_sidecar(container, "img.meta", b'{"name": "Back"}')
    assert again.id == obj.uuid


async def test_unregistered_image_shows_its_stored_metafile(registry, conn, container):
    obj, image = await register(registry, conn, container, "img", {"name": "Gone"})
    conn.plankton.unregister(obj.uuid)  # another client (kamaki image unregister)
    registry.invalidate()
    assert await registry.sidecar_view(container, "img.meta", obj) is None
    assert json.loads(await registry.read_sidecar(container, "img.meta"))["name"] == "Gone"


# -- hooks ------------------------------------------------------------------------------------


async def test_move_keeps_id_registration_sidecar_and_public(registry, conn, container):
    obj, image = await register(registry, conn, container, "old.diskdump", {
        "name": "Mover", "is-public": True, "properties": {"OS": "Linux"}})
    other_container = _make_container(conn)
    conn.pithos.move(container, "old.diskdump", other_container, "new/place.diskdump")
    assert live(conn, obj.uuid).is_public is False  # the store's move dropped sharing (D14)

    info = conn.pithos.head(other_container, "new/place.diskdump")
    await registry.object_moved(container, "old.diskdump", other_container,
                                "new/place.diskdump", info)
    truth = live(conn, obj.uuid)
    assert truth.id == obj.uuid and truth.name == "Mover" and truth.is_public is True
    assert truth.properties == {"os": "Linux"}
    assert truth.location == H.location(conn.account, other_container, "new/place.diskdump")
    assert json.loads(stored(conn, other_container, "new/place.diskdump.meta"))["id"] == obj.uuid
    with pytest.raises(errors.NotFound):
        conn.pithos.head(container, "old.diskdump.meta")
    assert (await registry.image_of(other_container, "new/place.diskdump", info)).location \
        == truth.location
    assert await registry.image_of(container, "old.diskdump") is None


async def test_directory_move_keeps_public_images_public(registry, conn, container):
    obj, image = await register(registry, conn, container, "dir/a.img", {
        "name": "In a dir", "is-public": True})
    conn.pithos.make_directory(container, "dir")
    conn.pithos.move(container, "dir", container, "moved", delimiter=True)
    await registry.directory_moved(container, "dir", container, "moved")
    truth = live(conn, obj.uuid)
    assert truth.is_public and truth.location.endswith(f"/{container}/moved/a.img")
    assert conn.pithos.head(container, "moved/a.img.meta").size > 0


async def test_overwrite_updates_the_cached_registration(registry, conn, container, workers):
    obj, image = await register(registry, conn, container, "img", {"name": "Grows"})
    bigger = put(conn, container, "img", b"a much longer disk image than before")
    assert bigger.uuid == obj.uuid
    workers.calls.clear()
    await registry.object_committed(container, "img", bigger)
    cached = await registry.image_of(container, "img", bigger)
    assert (cached.size, cached.checksum) == (bigger.size, bigger.hash)
    assert sum(workers.calls.values()) == 0
    assert live(conn, obj.uuid).size == bigger.size


async def test_hooks_for_the_filesystems_own_attribute_code(registry, conn, container):
    """The filesystem computes the Change itself and hands it over; after its own
    upload it knows no uuid, so the registration is found by location."""
    obj, image = await register(registry, conn, container, "img", {"name": "Hooked"})
    cached = registry.cached_image_of(container, "img", None)
    change = xattrs.set(cached, "user.image.properties.OS", b"Linux")
    await registry.apply_image_change(container, "img", None, change)
    assert live(conn, obj.uuid).properties == {"os": "Linux"}
    assert registry.cached_image_of(container, "img", obj).properties == {"os": "Linux"}

    newer = put(conn, container, "img", b"rewritten by the filesystem")
    own_view = newer.__class__(**{**newer.__dict__, "uuid": ""})
    await registry.object_committed(container, "img", own_view)
    assert registry.cached_image_of(container, "img", own_view).size == newer.size

    plain = put(conn, container, "plain")
    with pytest.raises(errors.InvalidInput):
        await registry.apply_image_change(container, "plain", plain, xattrs.Change(
            Source.IMAGE, disk_format="extdump"))


async def test_object_deleted_forgets_the_image(registry, conn, container):
    obj, image = await register(registry, conn, container, "img", {"name": "Deleted"})
    conn.pithos.delete(container, "img")
    await registry.object_deleted(container, "img", obj)
    assert await registry.image_of(container, "img") is None
    assert await registry.sidecar_view(container, "img.meta") is None


async def test_one_image_listing_per_cache_period(registry, conn, container, workers):
    objs = [put(conn, container, f"f{i}", f"data {i}".encode()) for i in range(20)]
    await registry.write_sidecar(container, "f3.meta", b'{"name": "Three"}')
    registry.invalidate()
    workers.calls.clear()
    found = {}

    async def ask(obj):
        found[obj.name] = await registry.image_of(container, obj.name, obj)

    async with trio.open_nursery() as nursery:  # ls -l asks for every file at once
        for obj in objs:
            nursery.start_soon(ask, obj)
    for obj in objs:
        await registry.listxattr(container, obj.name, obj)
    assert dict(workers.calls) == {"list": 1}
    assert {n for n, i in found.items() if i is not None} == {"f3"}


# -- attributes -------------------------------------------------------------------------------


async def _errno_of(coro) -> int:
    try:
        await coro
    except errors.ImagefsError as exc:
        return errors.to_errno(exc)
    return 0


async def test_image_attributes_read_set_remove(registry, conn, container):
    obj, image = await register(registry, conn, container, "img", {
        "name": "Attrs", "properties": {"OS": "Linux", "USER": "root"}})
    get = functools.partial(registry.getxattr, container, "img", obj)
    set_ = functools.partial(registry.setxattr, container, "img", obj)
    remove = functools.partial(registry.removexattr, container, "img", obj)

    listed = await registry.listxattr(container, "img", obj)
    for name in (b"user.image.name", b"user.image.id", b"user.image.properties.OS",
                 b"user.image.properties.USER", b"user.pithos.hash", b"user.pithos.uuid"):
        assert name in listed
    assert listed[0] == b"user.image.name"
    assert await get("user.image.name") == b"Attrs"
    assert await get("user.image.id") == obj.uuid.encode()
    assert await get("user.image.properties.os") == b"Linux"
    assert await get("user.image.is-public") == b"false"
    assert await get("user.pithos.uuid") == obj.uuid.encode()

    # name, formats, status: update the field
    await set_("user.image.name", b"Renamed")
    await set_("user.image.disk-format", b"extdump")
    await set_("user.image.container-format", b"OVF")
    await set_("user.image.status", b"testing")
    truth = live(conn, obj.uuid)
    assert (truth.name, truth.disk_format, truth.container_format, truth.status) == \
        ("Renamed", "extdump", "ovf", "testing")
    assert await get("user.image.status") == b"testing"
    # remove: formats to their defaults, status to empty (kamaki image meta delete)
    await remove("user.image.disk-format")
    await remove("user.image.container-format")
    await remove("user.image.status")
    truth = live(conn, obj.uuid)
    assert (truth.disk_format, truth.container_format, truth.status) == ("diskdump", "bare", "")
    assert truth.id == obj.uuid

    # properties: add, change, delete
    await set_("user.image.properties.greet", b"Hi there")
    await set_("user.image.properties.USER", b"user")
    assert live(conn, obj.uuid).properties == {"os": "Linux", "user": "user", "greet": "Hi there"}
    await remove("user.image.properties.GREET")
    assert live(conn, obj.uuid).properties == {"os": "Linux", "user": "user"}
    assert await _errno_of(remove("user.image.properties.GREET")) == errno.ENODATA
    assert await _errno_of(get("user.image.properties.GREET")) == errno.ENODATA

    # is-public: publish / unpublish; removing it unpublishes
    await set_("user.image.is-public", b"true")
    assert live(conn, obj.uuid).is_public
    await remove("user.image.is-public")
    assert not live(conn, obj.uuid).is_public

    # refusals
    for fixed in ("id", "owner", "location", "checksum", "size", "created-at", "updated-at",
                  "deleted-at"):
        assert await _errno_of(set_(f"user.image.{fixed}", b"x")) == errno.EPERM, fixed
        assert await _errno_of(remove(f"user.image.{fixed}")) == errno.EPERM, fixed
    assert await _errno_of(get("user.image.nonsense")) == errno.ENODATA
    assert await _errno_of(set_("user.image.nonsense", b"x")) == errno.EOPNOTSUPP
    assert await _errno_of(set_("user.image.is-public", b"maybe")) == errno.EINVAL
    assert await _errno_of(set_("user.image.disk-format", b"qcow2")) == errno.EINVAL
    assert await _errno_of(remove("user.image.name")) == errno.EINVAL
    assert await _errno_of(set_("user.image.name", b"x" * 257)) == errno.E2BIG
    assert live(conn, obj.uuid).name == "Renamed"


async def test_other_namespaces_cost_no_request(registry, conn, container, workers):
    obj = put(conn, container, "plain")
    await registry.image_of(container, "plain", obj)  # the one listing
    workers.calls.clear()
    for attr in ("security.selinux", "system.posix_acl_access", "trusted.x", "user.xdg.origin"):
        assert await _errno_of(registry.getxattr(container, "plain", obj, attr)) == \
            (errno.ENODATA if attr.startswith("user.") else errno.EOPNOTSUPP)
        assert await _errno_of(registry.setxattr(container, "plain", obj, attr, b"v")) == \
            errno.EOPNOTSUPP
        assert await _errno_of(registry.removexattr(container, "plain", obj, attr)) == \
            errno.EOPNOTSUPP
    assert await _errno_of(registry.getxattr(container, "plain", obj, "user.image.name")) == \
        errno.ENODATA
    assert sum(workers.calls.values()) == 0


async def test_setting_the_name_registers_an_unregistered_file(registry, conn, container):
    obj = put(conn, container, "fresh.img")
    assert await _errno_of(registry.setxattr(container, "fresh.img", obj,
                                             "user.image.disk-format", b"extdump")) == errno.EINVAL
    change = await registry.setxattr(container, "fresh.img", obj, "user.image.name", b"By xattr")
    assert change.register and change.target is Source.IMAGE
    truth = live(conn, obj.uuid)
    assert truth.name == "By xattr" and truth.disk_format == "diskdump"
    assert (await registry.image_of(container, "fresh.img", obj)).name == "By xattr"
    await registry.setxattr(container, "fresh.img", obj, "user.image.properties.OS", b"Linux")
    assert live(conn, obj.uuid).properties == {"os": "Linux"}


async def test_the_two_publics_stay_apart(registry, conn, container):
    obj, image = await register(registry, conn, container, "img", {"name": "Two publics"})
    await registry.setxattr(container, "img", obj, "user.pithos.public", b"true")
    head = conn.pithos.head(container, "img")
    assert head.public_url and not live(conn, obj.uuid).is_public
    assert (await registry.getxattr(container, "img", head, "user.pithos.public")).decode() \
        == head.public_url
    await registry.setxattr(container, "img", head, "user.image.is-public", b"true")
    head = conn.pithos.head(container, "img")
    assert live(conn, obj.uuid).is_public and head.public_url
    await registry.removexattr(container, "img", head, "user.pithos.public")
    head = conn.pithos.head(container, "img")
    assert not head.public_url and live(conn, obj.uuid).is_public
    assert await _errno_of(registry.getxattr(container, "img", head, "user.pithos.public")) == \
        errno.ENODATA


async def test_store_attributes_of_files_and_containers(registry, conn, container):
    obj = put(conn, container, "f")
    change = await registry.setxattr(container, "f", obj, "user.pithos.meta.image_os", b"Linux")
    assert change.target is Source.OBJECT
    head = conn.pithos.head(container, "f")
    assert head.meta["Image-Os"] == "Linux"
    assert await registry.getxattr(container, "f", head, "user.pithos.meta.Image-Os") == b"Linux"
    # a listing entry of a real deployment carries no metadata: the registry HEADs
    bare = obj.__class__(**{**obj.__dict__, "meta": None})
    assert await registry.getxattr(container, "f", bare, "user.pithos.meta.image-os") == b"Linux"
    await registry.removexattr(container, "f", head, "user.pithos.meta.IMAGE_OS")
    assert "Image-Os" not in conn.pithos.head(container, "f").meta
    assert await _errno_of(registry.getxattr(container, "f", obj, "user.pithos.hash")) == 0
    assert await _errno_of(registry.setxattr(container, "f", obj, "user.pithos.hash", b"x")) \
        == errno.EPERM
    assert await _errno_of(registry.setxattr(container, "f", obj, "user.pithos.versioning",
                                             b"none")) == errno.EOPNOTSUPP

    assert await registry.getxattr(container, "", None, "user.pithos.versioning") == b"auto"
    assert b"user.pithos.quota" in await registry.listxattr(container, "", None)
    await registry.setxattr(container, "", None, "user.pithos.versioning", b"NONE")
    assert conn.pithos.container_info(container).versioning == "none"
    assert await _errno_of(registry.setxattr(container, "", None, "user.pithos.versioning",
                                             b"sometimes")) == errno.EINVAL
    assert await _errno_of(registry.getxattr(container, "", None, "user.image.name")) == \
        errno.ENODATA


async def test_error_attribute_is_read_only(registry, conn, container):
    put(conn, container, "img")
    with pytest.raises(errors.MetafileInvalid):
        await registry.write_sidecar(container, "img.meta", b"[1, 2]")
    assert b"JSON object" in await registry.getxattr(container, "img.meta", None,
                                                       "user.imagefs.error")
    assert await _errno_of(registry.setxattr(container, "img.meta", None, "user.imagefs.error",
                                             b"")) == errno.EPERM
    assert await _errno_of(registry.getxattr(container, "img", None, "user.imagefs.error")) \
        == errno.ENODATA


# -- another user's images and the catalog ----------------------------------------------------


async def test_catalog_lists_own_and_public_images_of_others(registry, conn, other, container):
    mine, my_image = await register(registry, conn, container, "mine", {"name": "Mine"})
    theirs = _make_container(other)
    put(other, theirs, "public.img")
    put(other, theirs, "private.img")
    loc = functools.partial(H.location, other.account, theirs)
    public = other.plankton.register(loc("public.img"), "Theirs", is_public=True,
                                     properties={"os": "Linux"})
    private = other.plankton.register(loc("private.img"), "Secret")

    registry.invalidate()  # the cache period passes: other clients' changes show up
    entries = dict(await registry.catalog())
    assert f"{mine.uuid}.meta" in entries and f"{public.id}.meta" in entries
    assert f"{private.id}.meta" not in entries
    assert entries[f"{public.id}.meta"].owner == other.account

    view = await registry.catalog_view(f"{public.id}.meta")
    doc = json.loads(view.content)
    assert doc["owner"] == other.account and doc["properties"] == {"OS": "Linux"}
    assert await registry.catalog_getxattr(f"{public.id}.meta", "user.image.name") == b"Theirs"
    assert b"user.image.owner" in await registry.catalog_listxattr(f"{public.id}.meta")
    with pytest.raises(errors.NotFound):
        await registry.catalog_entry(f"{private.id}.meta")
    with pytest.raises(errors.NotFound):
        await registry.catalog_entry("not-an-entry")


async def test_another_users_image_is_forbidden_everywhere(registry, conn, other, workers):
    theirs = _make_container(other)
    put(other, theirs, "public.img")
    public = other.plankton.register(H.location(other.account, theirs, "public.img"),
                                     "Not yours", is_public=True)
    entry = f"{public.id}.meta"
    await registry.catalog()
    workers.calls.clear()
    attempts = [
        registry.catalog_unlink(entry),
        registry.catalog_write(entry, b'{"name": "Mine now"}'),
        registry.catalog_setxattr(entry, "user.image.name", b"Mine now"),
        registry.catalog_removexattr(entry, "user.image.properties.OS"),
        registry.catalog_setxattr(entry, "user.image.is-public", b"false"),
    ]
    for attempt in attempts:
        assert await _errno_of(attempt) == errno.EACCES
    assert sum(workers.calls.values()) == 0  # refused before asking the service
    truth = other.plankton.get(public.id)
    assert truth.name == "Not yours" and truth.is_public
    # The service agrees (the seed's 403): unregistering it directly is Forbidden too.
    with pytest.raises(errors.Forbidden):
        conn.plankton.unregister(public.id)


async def test_catalog_entries_of_own_images_can_be_written_and_removed(
        registry, conn, container):
    obj, image = await register(registry, conn, container, "img", {"name": "Catalogued"})
    entry = f"{obj.uuid}.meta"
    await registry.catalog_setxattr(entry, "user.image.properties.OS", b"Linux")
    assert live(conn, obj.uuid).properties == {"os": "Linux"}
    await registry.catalog_write(entry, b'{"name": "Via catalog"}')
    truth = live(conn, obj.uuid)
    assert truth.name == "Via catalog" and truth.properties == {}
    await registry.catalog_unlink(entry)
    assert live(conn, obj.uuid) is None
    assert entry not in dict(await registry.catalog())
    assert conn.pithos.head(container, "img.meta")  # like kamaki image unregister


# -- versions ---------------------------------------------------------------------------------


async def test_versions_list_earlier_metafiles(registry, conn, container):
    put(conn, container, "sub/debian.diskdump")
    for name in ("Alpha", "Beta", "Gama"):
        await registry.write_sidecar(container, "sub/debian.diskdump.meta",
                                     json.dumps({"name": name}).encode())
    history = conn.pithos.list_versions(container, "sub/debian.diskdump.meta")
    assert len(history) == 3
    entries = {e.entry: e for e in await registry.versions(container, "sub")}
    current = conn.pithos.head(container, "sub/debian.diskdump.meta").version
    metas = {n: e for n, e in entries.items() if n.startswith("debian.diskdump.meta@")}
    assert set(metas) == {f"debian.diskdump.meta@{v}" for v, _ in history if v != current}
    for v, ts in history[:-1]:
        e = metas[f"debian.diskdump.meta@{v}"]
        assert (e.version, e.mtime, e.path) == (v, ts, "sub/debian.diskdump.meta")
        old = conn.pithos.read(container, e.path, 0, e.size, version=v)
        assert len(old) == e.size
    first = metas[f"debian.diskdump.meta@{history[0][0]}"]
    text = conn.pithos.read(container, first.path, 0, first.size, version=first.version)
    assert json.loads(text)["name"] == "Alpha"
    # Registration changes are versions of the image object too (api.md §3.9).
    assert any(n.startswith("debian.diskdump@") for n in entries)
    # Any version can be looked up by name, the current one too.
    found = await registry.version_lookup(container, "sub", f"debian.diskdump.meta@{current}")
    assert found.size == conn.pithos.head(container, "sub/debian.diskdump.meta").size
    for bad in ("debian.diskdump.meta@1", "debian.diskdump.meta", "nothing@5"):
        with pytest.raises(errors.NotFound):
            await registry.version_lookup(container, "sub", bad)
    assert await registry.versions(container, "") == []  # nothing at the top but "sub/"


# -- against a deployment that merges on re-registration -------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A second service started with --real-synnefo: merging re-registration (D2),
    ``{"images": [...]}`` list (D5), upper-case status (D1)."""
    with running_service(tmp_path_factory.mktemp("real") / "data", "--real-synnefo") as svc:
        with _open(svc.url, svc.token) as c:
            yield c


@pytest.fixture
async def real_registry(real):
    return Registry(real, CountingWorkers(), cache_timeout=60.0)


async def test_real_synnefo_merges_but_the_mount_overrides(real, real_registry):
    container = _make_container(real)
    obj = put(real, container, "debian.diskdump")
    loc = H.location(real.account, container, "debian.diskdump")
    # The deployment merges: registering again without unregistering keeps old properties.
    real.plankton.register(loc, "Merged", properties={"os": "Linux", "user": "root"})
    merged = real.plankton.register(loc, "Merged", properties={"os": "Debian"})
    assert merged.properties == {"os": "Debian", "user": "root"}
    assert merged.status == "AVAILABLE"

    image = await real_registry.write_sidecar(container, "debian.diskdump.meta", SEED_EDITED)
    assert image.id == obj.uuid
    await real_registry.write_sidecar(container, "debian.diskdump.meta", json.dumps({
        "name": "Overridden", "status": "available", "properties": {"USER": "admin"}}).encode())
    truth = real.plankton.get(obj.uuid)
    assert truth.id == obj.uuid and truth.name == "Overridden"
    assert truth.properties == {"user": "admin"}  # OS is gone despite the merging service
    assert truth.status.lower() == "available"

    # The wrapped list works for the cache and the catalog.
    real_registry.invalidate()
    assert (await real_registry.image_of(container, "debian.diskdump", obj)).name == "Overridden"
    assert f"{obj.uuid}.meta" in dict(await real_registry.catalog())

    # Deleting the sidecar unregisters there too; a pending sidecar registers on commit.
    await real_registry.delete_sidecar(container, "debian.diskdump.meta")
    with pytest.raises(errors.NotFound):
        real.plankton.get(obj.uuid)
    await real_registry.write_sidecar(container, "later.meta", b'{"properties": {"A": "1"}}')
    later = put(real, container, "later")
    await real_registry.object_committed(container, "later", later)
    truth = real.plankton.get(later.uuid)
    assert truth.name == "later" and truth.properties == {"a": "1"}


async def test_real_synnefo_move_and_attributes(real, real_registry):
    container = _make_container(real)
    obj = put(real, container, "a.img")
    await real_registry.write_sidecar(container, "a.img.meta",
                                      b'{"name": "Public", "is-public": true}')
    real.pithos.move(container, "a.img", container, "b.img")
    await real_registry.object_moved(container, "a.img", container, "b.img",
                                     real.pithos.head(container, "b.img"))
    assert real.plankton.get(obj.uuid).is_public
    info = real.pithos.head(container, "b.img")
    await real_registry.setxattr(container, "b.img", info, "user.image.status", b"custom")
    assert await real_registry.getxattr(container, "b.img", info, "user.image.status") == \
        b"custom"
    await real_registry.setxattr(container, "b.img", info, "user.image.properties.K", b"v")
    assert real.plankton.get(obj.uuid).properties == {"k": "v"}
