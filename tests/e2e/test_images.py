"""Images through the mount, with real tools (behaviour.md §5, issue 4).

Every test writes through the mount and checks the image service itself
(``client.plankton``), not only what the mount shows. Registrations made by
another client show up within the mount's cache time, hence ``wait_until``.
Registrations are counted at the proxy: one ``POST /images/`` each.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from e2e_util import (CACHE_TIMEOUT, expect_errno, names_on_service, run, tail, wait_until,
                      write_random)

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.protocol import headers as H

REPO = Path(__file__).resolve().parents[2]
KAMAKI = REPO / "venv" / "bin" / "kamaki"
WAIT = CACHE_TIMEOUT + 5

#: Tutorial §5.5: the metafile after the user added OS and USER (kamaki ~0.10's shape).
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

SIDECAR_KEYS = {"checksum", "container-format", "created-at", "deleted-at", "disk-format", "id",
                "is-public", "location", "name", "owner", "properties", "size", "status",
                "updated-at"}


# -- helpers ------------------------------------------------------------------------------


def image_of(client: Connection, container: str, name: str):
    """The registration of ``container/name`` as the image service has it (None if none)."""
    info = client.pithos.head(container, name)
    try:
        return client.plankton.get(info.uuid)
    except errors.NotFound:
        return None


def registrations(mounted, mark: int) -> list:
    """The mount's image registrations (POST /images/) since ``mark``."""
    return [r for r in mounted.requests(mark)
            if r.method == "POST" and r.path.rstrip("/").endswith("/images")]


def put_file(path: Path, data: bytes = b"disk image bytes\n") -> Path:
    path.write_bytes(data)
    return path


def write_through(path: Path, data: bytes) -> None:
    """open/write/close in Python: close() reports what the mount says."""
    with open(path, "wb") as f:
        f.write(data)


def sidecar_json(path: Path) -> dict:
    return json.loads(path.read_bytes())


def logged_since(mounted, start: int, text: str) -> bool:
    return text in tail(mounted.log, start, lines=100000)


@pytest.fixture
def registered(container, client):
    """A file registered through its sidecar: (image path, sidecar path)."""
    img = put_file(container.path / "debian_base3.diskdump")
    meta = container.path / "debian_base3.diskdump.meta"
    write_through(meta, SEED_EDITED)
    return img, meta


# -- 1. the sidecar ------------------------------------------------------------------------


def test_sidecar_write_registers_then_stores_the_metafile(mounted, container, client):
    img = put_file(container.path / "debian_base3.diskdump")
    assert not (container.path / "debian_base3.diskdump.meta").exists()
    mark = mounted.proxy.mark()
    run("cp", "/dev/stdin", str(container.path / "debian_base3.diskdump.meta"),
        input=SEED_EDITED.decode())
    # close() returned: the service has it, with the file's fields and none of the
    # server-owned ones (id, owner, location, size... of another image).
    image = image_of(client, container.name, img.name)
    assert image is not None and len(registrations(mounted, mark)) == 1
    assert image.id == client.pithos.head(container.name, img.name).uuid != "7h1rd-1m4g3-1d2"
    assert image.name == "Debian Base Gama" and image.owner == mounted.account
    assert image.properties == {"os": "Linux", "user": "root"}
    assert image.location == H.location(mounted.account, container.name, img.name)
    assert image.size == img.stat().st_size
    # The registration as the service returned it is now the object NAME.meta.
    stored = client.pithos.read(container.name, "debian_base3.diskdump.meta", 0, 1 << 20)
    shown = (container.path / "debian_base3.diskdump.meta").read_bytes()
    assert stored == shown
    doc = json.loads(shown)
    assert set(doc) == SIDECAR_KEYS and doc["id"] == image.id
    assert doc["properties"] == {"OS": "Linux", "USER": "root"} and doc["is-public"] is False
    assert sorted(os.listdir(container.path)) == ["debian_base3.diskdump",
                                                  "debian_base3.diskdump.meta"]


def test_rewriting_overrides_everything_and_keeps_the_id(registered, container, client):
    img, meta = registered
    first = image_of(client, container.name, img.name)
    versions = len(client.pithos.list_versions(container.name, meta.name))
    write_through(meta, b'{"name": "Debian Base Delta", "properties": {"OS": "Linux"}, '
                        b'"disk-format": "extdump", "container-format": "ovf"}')
    again = image_of(client, container.name, img.name)
    assert again.id == first.id
    assert again.name == "Debian Base Delta"
    assert again.properties == {"os": "Linux"}  # USER is gone: an override, not a merge
    assert (again.disk_format, again.container_format) == ("extdump", "ovf")
    assert len(client.pithos.list_versions(container.name, meta.name)) == versions + 1
    assert sidecar_json(meta)["properties"] == {"OS": "Linux"}


def test_sidecar_shows_a_registration_made_by_another_client(mounted, container, client):
    img = put_file(container.path / "other.img")
    uuid = client.pithos.head(container.name, "other.img").uuid
    meta = container.path / "other.img.meta"
    assert not meta.exists()
    client.plankton.register(H.location(mounted.account, container.name, "other.img"),
                             "Made elsewhere", properties={"os": "Linux"})
    wait_until(meta.exists, WAIT, what="the sidecar of a registered file")
    assert "other.img.meta" in os.listdir(container.path)  # listed though no object holds it
    doc = sidecar_json(meta)
    assert doc["id"] == uuid and doc["name"] == "Made elsewhere"
    assert doc["properties"] == {"OS": "Linux"}
    assert os.stat(meta).st_size == len(meta.read_bytes())
    assert names_on_service(client, container.name) == {img.name}


def test_missing_name_is_the_path_in_the_container(container, client):
    (container.path / "images").mkdir()
    img = put_file(container.path / "images" / "debian.diskdump")
    write_through(container.path / "images" / "debian.diskdump.meta", b'{"is-public": true}')
    image = image_of(client, container.name, "images/debian.diskdump")
    assert image.name == "images/debian.diskdump" and image.is_public
    assert img.exists()


def test_a_metafile_written_by_kamaki_is_accepted_unchanged(mounted, service, container,
                                                             client, tmp_path):
    if not KAMAKI.exists():
        done = subprocess.run([str(REPO / "scripts" / "install-kamaki")], capture_output=True,
                              text=True)
        assert done.returncode == 0, f"kamaki is not installed:\n{done.stderr}"
    put_file(container.path / "a.diskdump", b"first image")
    put_file(container.path / "b.diskdump", b"second image")
    home = tmp_path / "kamaki"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "KAMAKI_CONFIG": str(home / "kamakirc")}
    for key, value in (("cloud.local.url", service.url), ("cloud.local.token", service.token),
                       ("default_cloud", "local")):
        run(str(KAMAKI), "config", "set", key, value, env=env, cwd=home)
    run(str(KAMAKI), "image", "register", "--name=Made by kamaki",
        f"--location=/{container.name}/a.diskdump", "-p", "OS=Linux", "-p", "user=root",
        env=env, cwd=home)
    # kamaki stored its own metafile text; the mount shows the live registration.
    kamaki_text = client.pithos.read(container.name, "a.diskdump.meta", 0, 1 << 20)
    assert b'", \n' in kamaki_text  # Python 2 json.dumps: trailing spaces, all strings
    # Within the cache time the stored text may show; then the live registration does
    # (rendered by the mount: is-public a JSON boolean, not kamaki's "False").
    def rendered():
        doc = sidecar_json(container.path / "a.diskdump.meta")
        return doc if isinstance(doc.get("is-public"), bool) else None

    shown = wait_until(rendered, WAIT, what="kamaki's registration on the mount")
    assert shown["name"] == "Made by kamaki" and shown["properties"] == {"OS": "Linux",
                                                                          "USER": "root"}
    # kamaki's text, as it is, registers another file: its id/location/owner are ignored.
    (tmp_path / "kamaki.meta").write_bytes(kamaki_text)
    run("cp", str(tmp_path / "kamaki.meta"), str(container.path / "b.diskdump.meta"))
    b = image_of(client, container.name, "b.diskdump")
    a = image_of(client, container.name, "a.diskdump")
    assert b.id != a.id and b.location.endswith(f"/{container.name}/b.diskdump")
    assert (b.name, b.properties, b.is_public) == ("Made by kamaki", a.properties, False)


def test_deleting_the_sidecar_unregisters_renaming_it_away_does_not(registered, container,
                                                                    client):
    img, meta = registered
    image = image_of(client, container.name, img.name)
    os.rename(meta, container.path / "debian_base3.diskdump.meta.bak")
    assert image_of(client, container.name, img.name) == image  # still registered
    assert meta.exists() and sidecar_json(meta)["id"] == image.id
    backup = container.path / "debian_base3.diskdump.meta.bak"
    assert sidecar_json(backup)["name"] == "Debian Base Gama"
    assert client.pithos.head(container.name, backup.name).size == backup.stat().st_size

    os.unlink(meta)
    assert image_of(client, container.name, img.name) is None
    assert img.read_bytes() == b"disk image bytes\n"  # the object stays
    assert not meta.exists()
    assert sorted(os.listdir(container.path)) == ["debian_base3.diskdump",
                                                  "debian_base3.diskdump.meta.bak"]
    expect_errno(errno.ENOENT, os.unlink, meta)


def test_touch_of_a_new_sidecar_registers_nothing(mounted, container, client):
    put_file(container.path / "x.img")
    mark = mounted.proxy.mark()
    run("touch", str(container.path / "x.img.meta"))
    assert registrations(mounted, mark) == []
    assert image_of(client, container.name, "x.img") is None
    assert names_on_service(client, container.name) == {"x.img"}


# -- 2. order does not matter ---------------------------------------------------------------


def test_cp_r_of_images_and_sidecars_in_any_order(mounted, container, client, tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    docs = {"debian.diskdump": {"name": "Debian", "is-public": True,
                                "properties": {"OS": "Linux"}},
            "win8.diskdump": {"properties": {"OS": "Windows"}},
            "arch.diskdump": {"name": "Arch", "disk-format": "extdump"}}
    for i, (name, doc) in enumerate(docs.items()):
        write_random(src / name, 100_000 + i, seed=i + 1)
        (src / f"{name}.meta").write_text(json.dumps(doc))
    # Sidecars before images, images before sidecars, and cp -r's own order.
    first, second = container.path / "a", container.path / "b"
    first.mkdir()
    second.mkdir()
    for name in docs:
        run("cp", str(src / f"{name}.meta"), str(first))
    for name in docs:
        run("cp", str(src / name), str(first))
    for name in docs:
        run("cp", str(src / name), str(src / f"{name}.meta"), str(second))
    run("cp", "-r", str(src), str(container.path / "c"))
    for top in ("a", "b", "c"):
        for name, doc in docs.items():
            image = image_of(client, container.name, f"{top}/{name}")
            assert image is not None, f"{top}/{name} not registered"
            assert image.name == doc.get("name", f"{top}/{name}")
            assert image.is_public == doc.get("is-public", False)
            assert image.disk_format == doc.get("disk-format", "diskdump")
            assert image.properties == {k.lower(): v for k, v in
                                        doc.get("properties", {}).items()}
            shown = sidecar_json(container.path / top / f"{name}.meta")
            assert shown["id"] == image.id and shown["name"] == image.name
        assert sorted(os.listdir(container.path / top)) == sorted(
            [*docs, *(f"{n}.meta" for n in docs)])


# -- 3. bad input ---------------------------------------------------------------------------


BAD = {
    "not-json": (b'{"name": "x",\n "properties": {"OS": "Linux"\n}', "not valid JSON"),
    "name-number": (b'{"name": 42}', "name"),
    "is-public-word": (b'{"name": "x", "is-public": "maybe"}', "is-public"),
    "properties-list": (b'{"name": "x", "properties": ["OS"]}', "properties"),
    "property-list": (b'{"name": "x", "properties": {"OS": ["Linux"]}}', "OS"),
    "property-object": (b'{"name": "x", "properties": {"OS": {"a": 1}}}', "OS"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_sidecar_is_einval_and_kept_for_the_editor(mounted, registered, container,
                                                           client, case):
    img, meta = registered
    text, reason = BAD[case]
    before = image_of(client, container.name, img.name)
    stored_before = client.pithos.head(container.name, meta.name).hash
    start = mounted.log_size()
    failed = expect_errno(errno.EINVAL, write_through, meta, text)
    assert failed.errno == errno.EINVAL
    assert image_of(client, container.name, img.name) == before
    assert client.pithos.head(container.name, meta.name).hash == stored_before
    error = os.getxattr(meta, "user.imagefs.error").decode()
    assert reason in error
    assert meta.read_bytes() == text  # the editor reopens what it wrote
    assert "user.imagefs.error" in os.listxattr(meta)
    wait_until(lambda: logged_since(mounted, start, error), 5, what="the reason in the log")
    # cp says so too.
    done = subprocess.run(["cp", "/dev/stdin", str(meta)], input=text, capture_output=True)
    assert done.returncode != 0 and b"Invalid argument" in done.stderr
    # Fixed in place with an editor's tool (sed -i: a temporary renamed onto it).
    fixed = {"name": "Fixed", "properties": {"OS": "Linux"}}
    run("sed", "-i", f"1,$c {json.dumps(fixed)}", str(meta))
    expect_errno(errno.ENODATA, os.getxattr, meta, "user.imagefs.error")
    image = image_of(client, container.name, img.name)
    assert image.id == before.id and image.name == "Fixed"
    assert sidecar_json(meta)["name"] == "Fixed"


def test_a_refused_new_sidecar_shows_its_text_until_deleted(container, client):
    put_file(container.path / "x.img")
    meta = container.path / "x.img.meta"
    expect_errno(errno.EINVAL, write_through, meta, b"{oops")
    assert meta.read_bytes() == b"{oops" and "x.img.meta" in os.listdir(container.path)
    assert image_of(client, container.name, "x.img") is None
    os.unlink(meta)
    assert not meta.exists() and os.listdir(container.path) == ["x.img"]


# -- 4. attributes --------------------------------------------------------------------------


FIELDS = ["name", "disk-format", "container-format", "status", "is-public", "id", "owner",
          "location", "checksum", "size", "created-at", "updated-at", "deleted-at"]


def getfattr_dump(path: Path) -> dict[str, str]:
    out = run("getfattr", "-d", "-m", "-", "-e", "text", str(path)).stdout
    values = {}
    for line in out.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value.strip('"')
    return values


def test_getfattr_lists_every_field_and_property(registered, container, client):
    img, _meta = registered
    image = image_of(client, container.name, img.name)
    dump = getfattr_dump(img)
    for field in FIELDS:
        assert f"user.image.{field}" in dump, field
    assert dump["user.image.id"] == image.id
    assert dump["user.image.name"] == "Debian Base Gama"
    assert dump["user.image.is-public"] == "false"
    assert dump["user.image.properties.OS"] == "Linux"
    assert dump["user.image.properties.USER"] == "root"
    assert dump["user.image.location"] == image.location
    assert dump["user.pithos.uuid"] == image.id
    names = os.listxattr(img)
    assert names.index("user.image.name") == 0  # cp -a / rsync -X register first


def test_setfattr_changes_fields_and_properties_at_once(registered, container, client):
    img, meta = registered
    image_id = image_of(client, container.name, img.name).id
    run("setfattr", "-n", "user.image.name", "-v", "Changed Name", str(img))
    run("setfattr", "-n", "user.image.disk-format", "-v", "ntfsdump", str(img))
    run("setfattr", "-n", "user.image.container-format", "-v", "ami", str(img))
    run("setfattr", "-n", "user.image.status", "-v", "custom", str(img))
    run("setfattr", "-n", "user.image.properties.greet", "-v", "Hi there", str(img))
    run("setfattr", "-n", "user.image.properties.user", "-v", "user", str(img))
    image = client.plankton.get(image_id)
    assert (image.name, image.disk_format, image.container_format, image.status) == (
        "Changed Name", "ntfsdump", "ami", "custom")
    assert image.properties == {"os": "Linux", "user": "user", "greet": "Hi there"}
    doc = sidecar_json(meta)  # the sidecar shows every change at once
    assert doc["name"] == "Changed Name" and doc["properties"]["GREET"] == "Hi there"

    # Removing works as kamaki image meta delete.
    run("setfattr", "-x", "user.image.properties.GREET", str(img))
    run("setfattr", "-x", "user.image.status", str(img))
    run("setfattr", "-x", "user.image.disk-format", str(img))
    image = client.plankton.get(image_id)
    assert image.properties == {"os": "Linux", "user": "user"}
    assert image.status == "" and image.disk_format == "diskdump"
    assert os.getxattr(img, "user.image.status") == b""
    expect_errno(errno.ENODATA, os.getxattr, img, "user.image.properties.greet")
    expect_errno(errno.ENODATA, os.removexattr, img, "user.image.properties.greet")
    expect_errno(errno.EINVAL, os.removexattr, img, "user.image.name")
    expect_errno(errno.EINVAL, os.setxattr, img, "user.image.disk-format", b"qcow9")


@pytest.mark.parametrize("field", ["id", "owner", "location", "checksum", "size", "created-at",
                                   "updated-at", "deleted-at"])
def test_fixed_fields_are_eperm(registered, field):
    img, _meta = registered
    expect_errno(errno.EPERM, os.setxattr, img, f"user.image.{field}", b"other")
    expect_errno(errno.EPERM, os.removexattr, img, f"user.image.{field}")


def test_unknown_names_are_enodata_and_eopnotsupp(registered):
    img, _meta = registered
    expect_errno(errno.ENODATA, os.getxattr, img, "user.image.colour")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, img, "user.image.colour", b"red")
    plain = img.parent / "plain"
    put_file(plain)
    expect_errno(errno.ENODATA, os.getxattr, plain, "user.image.name")


def test_setting_name_registers_and_is_public_publishes(mounted, container, client):
    img = put_file(container.path / "plain.img")
    meta = container.path / "plain.img.meta"
    assert not meta.exists()
    mark = mounted.proxy.mark()
    os.setxattr(img, "user.image.name", b"Registered by name")
    image = image_of(client, container.name, img.name)
    assert image.name == "Registered by name" and len(registrations(mounted, mark)) == 1
    assert meta.exists() and sidecar_json(meta)["id"] == image.id  # shown at once
    assert names_on_service(client, container.name) == {"plain.img"}  # no metafile stored

    # The two kinds of public stay apart.
    os.setxattr(img, "user.image.is-public", b"true")
    assert client.plankton.get(image.id).is_public
    expect_errno(errno.ENODATA, os.getxattr, img, "user.pithos.public")
    assert not client.pithos.head(container.name, img.name).public_url
    os.setxattr(img, "user.pithos.public", b"true")
    assert "/public/" in os.getxattr(img, "user.pithos.public").decode()
    os.setxattr(img, "user.image.is-public", b"false")
    assert not client.plankton.get(image.id).is_public
    assert client.pithos.head(container.name, img.name).public_url
    os.removexattr(img, "user.pithos.public")
    assert client.plankton.get(image.id).is_public is False
    os.removexattr(img, "user.image.is-public")  # already false: nothing to do
    assert os.getxattr(img, "user.image.is-public") == b"false"


def test_cp_a_and_rsync_x_of_an_image_make_unregistered_copies(mounted, registered, container,
                                                         client):
    img, _meta = registered
    mark = mounted.proxy.mark()
    done = run("cp", "-a", str(img), str(container.path / "copy.diskdump"))
    assert done.stderr == ""
    assert registrations(mounted, mark) == []
    assert image_of(client, container.name, "copy.diskdump") is None
    assert not (container.path / "copy.diskdump.meta").exists()
    assert (container.path / "copy.diskdump").read_bytes() == img.read_bytes()
    # rsync -X sets attributes on its closed temporary: a copy all the same.
    done = run("rsync", "-aX", str(img), str(container.path / "synced") + "/", check=False)
    assert done.returncode == 23  # it reports the fixed fields it cannot copy (EPERM)
    assert "user.image.id" in done.stderr and "Operation not permitted" in done.stderr
    assert image_of(client, container.name, f"synced/{img.name}") is None
    assert registrations(mounted, mark) == []
    # With its sidecar, the copy is an image of its own.
    os.mkdir(container.path / "sub")
    done = run("cp", "-a", str(img), str(img) + ".meta", str(container.path / "sub"))
    assert done.stderr == ""
    copy = image_of(client, container.name, f"sub/{img.name}")
    assert copy is not None and copy.id != image_of(client, container.name, img.name).id
    assert copy.name == "Debian Base Gama"


# -- 5. another user's image ----------------------------------------------------------------


def test_another_users_image_cannot_be_changed_by_any_path(mounted, service, tmp_path):
    other = service.new_user()
    with Connection.open(service.url, other.token) as conn:
        conn.pithos.put_data("pithos", "theirs.img", b"someone else's image")
        image = conn.plankton.register(
            f"pithos://{conn.account}/pithos/theirs.img", "Their public image",
            is_public=True, properties={"os": "Linux"})
    entry = mounted.path / ".images" / f"{image.id}.meta"
    assert wait_until(lambda: entry.exists(), WAIT, what="another user's public image")
    assert b"Their public image" in entry.read_bytes()
    assert os.getxattr(entry, "user.image.owner").decode() == other.uuid
    expect_errno(errno.EACCES, os.unlink, entry)
    expect_errno(errno.EACCES, os.setxattr, entry, "user.image.name", b"Mine now")
    expect_errno(errno.EACCES, os.removexattr, entry, "user.image.properties.os")
    expect_errno(errno.EACCES, write_through, entry, b'{"name": "Mine now"}')
    expect_errno(errno.EACCES, os.rename, entry, mounted.path / ".images" / "x.meta")
    with Connection.open(service.url, other.token) as conn:
        after = conn.plankton.get(image.id)
    assert (after.name, after.properties, after.is_public) == (
        "Their public image", {"os": "Linux"}, True)


# -- 6. the catalog and old versions --------------------------------------------------------


def test_catalog_lists_own_public_and_shared_images(mounted, service, registered, container,
                                                    client):
    img, meta = registered
    mine = image_of(client, container.name, img.name)
    other = service.new_user()
    with Connection.open(service.url, other.token) as conn:
        for name in ("public.img", "shared.img", "private.img"):
            conn.pithos.put_data("pithos", name, name.encode())
        public = conn.plankton.register(f"pithos://{conn.account}/pithos/public.img",
                                        "Public", is_public=True)
        shared = conn.plankton.register(f"pithos://{conn.account}/pithos/shared.img",
                                        "Shared")
        conn.plankton.add_member(shared.id, mounted.account)
        private = conn.plankton.register(f"pithos://{conn.account}/pithos/private.img",
                                         "Private")
    catalog = mounted.path / ".images"

    def listed():
        names = set(os.listdir(catalog))
        return names if {f"{i.id}.meta" for i in (mine, public, shared)} <= names else None

    names = wait_until(listed, WAIT, what="the catalog")
    assert f"{private.id}.meta" not in names
    assert ".images" not in os.listdir(mounted.path)  # reachable, never listed
    assert sidecar_json(catalog / f"{mine.id}.meta") == sidecar_json(meta)
    assert sidecar_json(catalog / f"{shared.id}.meta")["name"] == "Shared"
    expect_errno(errno.ENOENT, os.stat, catalog / f"{private.id}.meta")
    found = run("grep", "-l", f'"owner": "{mounted.account}"', *[str(catalog / n)
                                                                 for n in names]).stdout
    assert f"{mine.id}.meta" in found and f"{public.id}.meta" not in found

    # The owner changes and unregisters through the catalog.
    os.setxattr(catalog / f"{mine.id}.meta", "user.image.properties.flavor", b"small")
    assert client.plankton.get(mine.id).properties["flavor"] == "small"
    os.unlink(catalog / f"{mine.id}.meta")
    assert image_of(client, container.name, img.name) is None
    assert f"{mine.id}.meta" not in os.listdir(catalog)
    assert client.pithos.head(container.name, meta.name)  # the stored metafile stays


def test_versions_are_reachable_read_only_and_never_listed(registered, container, client):
    img, meta = registered
    write_through(meta, b'{"name": "Second"}')
    write_through(meta, b'{"name": "Third"}')
    versions = [v for v, _ in client.pithos.list_versions(container.name, meta.name)]
    assert len(versions) == 3
    vdir = container.path / ".versions"
    assert ".versions" not in os.listdir(container.path)
    found = run("find", str(container.path)).stdout
    assert ".versions" not in found
    listed = os.listdir(vdir)
    assert f"{meta.name}@{versions[0]}" in listed and f"{meta.name}@{versions[1]}" in listed
    assert f"{meta.name}@{versions[2]}" not in listed  # the current one is the file
    first = vdir / f"{meta.name}@{versions[0]}"
    assert sidecar_json(first)["name"] == "Debian Base Gama"
    assert sidecar_json(vdir / f"{meta.name}@{versions[1]}")["name"] == "Second"
    assert sidecar_json(vdir / f"{meta.name}@{versions[2]}")["name"] == "Third"
    stamp = client.pithos.list_versions(container.name, meta.name)[0][1]
    assert abs(first.stat().st_mtime - stamp) < 1
    expect_errno(errno.EROFS, write_through, first, b"{}")
    expect_errno(errno.EROFS, os.unlink, first)
    expect_errno(errno.EROFS, os.rename, first, container.path / "restored.meta")
    expect_errno(errno.EROFS, os.mkdir, vdir / "d")
    # In every directory of the container, and copying an old version back restores it.
    (container.path / "sub").mkdir()
    put_file(container.path / "sub" / "f", b"one")
    put_file(container.path / "sub" / "f", b"two")
    assert os.listdir(container.path / "sub" / ".versions") == [
        f"f@{client.pithos.list_versions(container.name, 'sub/f')[0][0]}"]
    run("cp", str(vdir / f"{meta.name}@{versions[1]}"), str(meta))
    assert image_of(client, container.name, img.name).name == "Second"


# -- 7. moves keep images -------------------------------------------------------------------


def test_mv_keeps_id_registration_sidecar_and_public_status(registered, container, client):
    img, meta = registered
    os.setxattr(img, "user.image.is-public", b"true")
    before = image_of(client, container.name, img.name)
    (container.path / "old").mkdir()
    run("mv", str(img), str(container.path / "old"))
    moved = container.path / "old" / img.name
    after = image_of(client, container.name, f"old/{img.name}")
    assert after.id == before.id and after.is_public
    assert (after.name, after.properties) == (before.name, before.properties)
    assert after.location == H.location(client.account, container.name, f"old/{img.name}")
    assert sorted(os.listdir(container.path / "old")) == [img.name, meta.name]
    assert names_on_service(client, container.name) == {"old", f"old/{img.name}",
                                                        f"old/{meta.name}"}
    assert sidecar_json(Path(str(moved) + ".meta"))["location"] == after.location
    assert not meta.exists()
    # A whole directory moves its images too.
    run("mv", str(container.path / "old"), str(container.path / "new"))
    again = image_of(client, container.name, f"new/{img.name}")
    assert again.id == before.id and again.is_public
    assert sorted(os.listdir(container.path / "new")) == [img.name, meta.name]


# -- 8. editors -----------------------------------------------------------------------------


def _edit_vim(meta: Path, home: Path) -> None:
    run("vim", "-es", "-c", "%s/Debian Base Gama/Edited/", "-c", "wq", str(meta),
        env=dict(os.environ, HOME=str(home)), timeout=60)


def _edit_nano_style(meta: Path, home: Path) -> None:
    text = meta.read_bytes().replace(b"Debian Base Gama", b"Edited")
    fd = os.open(meta, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text[:100])
        os.write(fd, text[100:])
    finally:
        os.close(fd)


def _edit_sed(meta: Path, home: Path) -> None:
    run("sed", "-i", "s/Debian Base Gama/Edited/", str(meta))


def _edit_temp_then_rename(meta: Path, home: Path) -> None:
    text = meta.read_bytes().replace(b"Debian Base Gama", b"Edited")
    fd, tmp = tempfile.mkstemp(dir=meta.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, meta)


@pytest.mark.parametrize("edit", [_edit_vim, _edit_nano_style, _edit_sed,
                                  _edit_temp_then_rename],
                         ids=["vim", "nano-style", "sed-i", "write-temp-then-rename"])
def test_editors_reregister_exactly_once(mounted, registered, container, client, tmp_path,
                                         edit):
    img, meta = registered
    before = image_of(client, container.name, img.name)
    mark = mounted.proxy.mark()
    edit(meta, tmp_path)
    assert len(registrations(mounted, mark)) == 1
    after = image_of(client, container.name, img.name)
    assert after.id == before.id and after.name == "Edited"
    assert after.properties == before.properties
    assert sidecar_json(meta)["name"] == "Edited"
    assert names_on_service(client, container.name) == {img.name, meta.name}
    assert sorted(os.listdir(container.path)) == [img.name, meta.name]
