"""The real kamaki 0.16 CLI against the embedded service: the seed tutorial, step by step.

kamaki is the client the seed document was written for, so these tests are
the proof that the embedded service speaks Astakos, Pithos+ and Plankton well
enough for it. Commands use kamaki 0.16 syntax (api.md §6.1); outputs are
checked field by field and the service's state is checked over plain HTTP.

kamaki runs under Python 2.7 from ``venv/kamaki`` (``scripts/install-kamaki``).
When it is missing the fixture installs it; when no Python 2.7 exists the
tests fail (they never skip): the kamaki compatibility is part of the product.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefs.protocol.hashmap import hashmap_of, top_hash
from svc_http import Api

REPO = Path(__file__).resolve().parents[2]
KAMAKI = REPO / "venv" / "bin" / "kamaki"
INSTALL = REPO / "scripts" / "install-kamaki"

SEED_FIELDS = {"checksum", "container-format", "created-at", "deleted-at", "disk-format", "id",
               "is-public", "location", "name", "owner", "properties", "size", "status",
               "updated-at"}
DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
METAFILE_LINE = re.compile(r"Metadata file uploaded as (\S+) \(version (\d+)\)")
FORBIDDEN = "403 FORBIDDEN forbidden ()"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit status {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Kamaki:
    """One kamaki user: a private config file (``KAMAKI_CONFIG``) and a private HOME."""

    def __init__(self, binary: Path, home: Path, url: str, token: str, uuid: str,
                 name: str) -> None:
        self.binary = binary
        self.home = home
        self.uuid = uuid
        self.name = name
        self.config = home / "kamakirc"
        home.mkdir(parents=True, exist_ok=True)
        for key, value in (("cloud.local.url", url), ("cloud.local.token", token),
                           ("default_cloud", "local"), ("history_file", home / "history"),
                           ("log_file", home / "kamaki.log")):
            self.ok("config", "set", key, str(value))

    def run(self, *args: str, cwd: Path | None = None) -> Result:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "LANG": "C.UTF-8", "KAMAKI_CONFIG": str(self.config)}
        proc = subprocess.run([str(self.binary), *args], cwd=cwd or self.home, env=env,
                              capture_output=True, timeout=120)
        return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                      proc.stderr.decode("utf-8", "replace"))

    def ok(self, *args: str, cwd: Path | None = None) -> Result:
        result = self.run(*args, cwd=cwd)
        assert result.code == 0, f"kamaki {' '.join(args)} failed: {result}"
        return result

    def fails(self, *args: str, cwd: Path | None = None) -> Result:
        result = self.run(*args, cwd=cwd)
        assert result.code != 0, f"kamaki {' '.join(args)} should have failed: {result}"
        return result

    # -- seed steps ----------------------------------------------------------------------------
    def register(self, name: str, obj: str, *options: str, container: str = "pithos"
                 ) -> tuple[dict, int | None]:
        """``image register``: the printed fields and the metafile version (None if none)."""
        result = self.ok("image", "register", f"--name={name}",
                         f"--location=/{container}/{obj}", *options)
        match = METAFILE_LINE.search(result.err)
        if match:
            assert match.group(1) == f"/{container}/{obj}.meta", result
        return fields(result.out), int(match.group(2)) if match else None

    def info(self, image_id: str) -> dict:
        return fields(self.ok("image", "info", image_id).out)

    def images(self, *options: str) -> dict[str, dict]:
        return image_listing(self.ok("image", "list", *options).out)

    def versions(self, path: str) -> list[int]:
        out = self.ok("file", "info", path, "--object-versions").out
        return [int(v) for v in re.findall(r"^\s*version_id: (\d+)$", out, re.M)]


def fields(text: str) -> dict:
    """kamaki's ``key: value`` print-out; lines indented under ``key:`` form a nested dict."""
    result: dict = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("    ") and isinstance(result.get(last), dict):
            key, _, value = line.strip().partition(":")
            result[last][key] = value.strip()
        elif line.endswith(":"):
            last = line[:-1]
            result[last] = {}
        else:
            last, _, value = line.partition(":")
            result[last] = value.strip()
    return result


def image_listing(text: str) -> dict[str, dict]:
    """``image list``: ``<id> <name>`` lines, each followed by indented fields."""
    images: dict[str, dict] = {}
    current: dict = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith(" "):
            key, _, value = line.strip().partition(":")
            current[key] = value.strip()
        else:
            image_id, _, name = line.partition(" ")
            current = images[image_id] = {"name": name}
    return images


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kamaki_bin() -> Path:
    if not (KAMAKI.exists() and (REPO / "venv" / "kamaki" / "kamaki").is_dir()):
        proc = subprocess.run([str(INSTALL)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail("kamaki 0.16 is not installed and scripts/install-kamaki failed; "
                        "these tests need Python 2.7 (set PYTHON2 or install one):\n"
                        + proc.stderr, pytrace=False)
    return KAMAKI


def _user(service, kamaki_bin, tmp_path_factory, who: str) -> tuple[Kamaki, Api]:
    name = f"kamaki-{who}-{uuidlib.uuid4().hex[:6]}"
    uuid, token = service.new_user(name)
    return (Kamaki(kamaki_bin, tmp_path_factory.mktemp(who), service.url, token, uuid, name),
            Api(service.base, token, uuid))


@pytest.fixture(scope="module")
def alice_pair(service, kamaki_bin, tmp_path_factory):
    return _user(service, kamaki_bin, tmp_path_factory, "alice")


@pytest.fixture(scope="module")
def bob_pair(service, kamaki_bin, tmp_path_factory):
    return _user(service, kamaki_bin, tmp_path_factory, "bob")


@pytest.fixture
def alice(alice_pair) -> Kamaki:
    return alice_pair[0]


@pytest.fixture
def alice_api(alice_pair) -> Api:
    return alice_pair[1]


@pytest.fixture
def bob(bob_pair) -> Kamaki:
    return bob_pair[0]


@pytest.fixture
def uploaded(alice, tmp_path, fresh):
    """A function uploading a fresh random file of ``size`` bytes to /pithos -> (name, data)."""
    def upload(size: int = 3000, suffix: str = ".diskdump") -> tuple[str, bytes]:
        name = fresh("img") + suffix
        data = random_file(tmp_path / name, size)
        result = alice.ok("file", "upload", name, "/pithos", cwd=tmp_path)
        assert f"--> /pithos/{name}" in result.err and "Upload completed" in result.err, result
        return name, data
    return upload


def image_head(api: Api, image_id: str):
    return api.head(f"{api.img}/images/{image_id}")


def object_head(api: Api, name: str, container: str = "pithos"):
    r = api.head(api.path(container, name))
    assert r.status_code == 200, (name, r.status_code)
    return r.headers


# -- tests -------------------------------------------------------------------------------------

def test_config_points_kamaki_at_the_service(alice):
    info = fields(alice.ok("user", "info").out)
    assert info["id"] == alice.uuid
    assert info["name"] == alice.name
    assert "token" in fields(alice.ok("user", "authenticate").out)["access"]


def test_upload_and_register_print_the_seed_fields(alice, alice_api, tmp_path, uploaded):
    name, data = uploaded(5_000_000)            # two blocks: 409 + block POSTs + PUT
    obj = object_head(alice_api, name)
    assert obj["X-Object-Hash"] == top_hash(hashmap_of(data))

    info, version = alice.register("Debian Base Alpha", name)
    assert set(info) == SEED_FIELDS
    assert info["status"] == "available"
    assert info["name"] == "Debian Base Alpha"
    assert info["checksum"] == obj["X-Object-Hash"]
    assert info["id"] == obj["X-Object-UUID"]
    assert info["is-public"] == "False"
    assert info["location"] == f"pithos://{alice.uuid}/pithos/{name}"
    assert info["owner"] == f"{alice.uuid} ({alice.name})"
    assert info["disk-format"] == "diskdump"
    assert info["container-format"] == "bare"
    assert info["size"] == str(len(data))
    assert info["deleted-at"] == ""
    assert info["properties"] == {}
    assert DATE.fullmatch(info["created-at"]) and DATE.fullmatch(info["updated-at"])

    # The metafile: reported version is its Pithos version; content is the registration.
    assert version == int(object_head(alice_api, name + ".meta")["X-Object-Version"])
    meta = json.loads(alice.ok("file", "cat", f"/pithos/{name}.meta").out)
    assert meta == info
    assert image_head(alice_api, info["id"]).status_code == 200

    # The image object itself downloads intact (Range reads, block by block).
    alice.ok("file", "download", f"/pithos/{name}", "copy", cwd=tmp_path)
    assert (tmp_path / "copy").read_bytes() == data


def test_register_again_needs_force_and_keeps_the_id(alice, alice_api, uploaded):
    name, _ = uploaded()
    first, v1 = alice.register("Debian Base Alpha", name)

    result = alice.fails("image", "register", "--name=Debian Base Gama",
                         f"--location=/pithos/{name}")
    assert "already exists" in result.err and "-f/--force" in result.err, result
    assert alice.info(first["id"])["name"] == "Debian Base Alpha"      # not registered
    assert int(object_head(alice_api, name + ".meta")["X-Object-Version"]) == v1

    forced, v2 = alice.register("Debian Base Gama", name, "-f")
    assert forced["id"] == first["id"] and forced["name"] == "Debian Base Gama"
    assert v2 > v1
    assert forced["created-at"] == first["created-at"]

    result = alice.ok("image", "unregister", first["id"])
    assert result.out == ""
    assert image_head(alice_api, first["id"]).status_code == 404
    assert first["id"] not in alice.images(f"--owner={alice.uuid}")
    assert "No image with id" in alice.fails("image", "info", first["id"]).err

    again, _ = alice.register("Debian Base Gama", name, "-f")
    assert again["id"] == first["id"]


def test_image_list_owner_filter_and_foreign_unregister(alice, bob, alice_api, tmp_path, fresh):
    mine_name = fresh("mine") + ".diskdump"
    random_file(tmp_path / mine_name, 1000)
    alice.ok("file", "upload", mine_name, "/pithos", cwd=tmp_path)
    mine, _ = alice.register("Alice Private", mine_name)

    theirs_name, private_name = fresh("pub") + ".diskdump", fresh("priv") + ".diskdump"
    for n in (theirs_name, private_name):
        random_file(tmp_path / n, 2000)
        bob.ok("file", "upload", n, "/pithos", cwd=tmp_path)
    theirs, _ = bob.register("Bob Public", theirs_name, "--public")
    hidden, _ = bob.register("Bob Private", private_name)
    assert theirs["is-public"] == "True"

    listed = alice.images()
    assert listed[mine["id"]] == {"name": "Alice Private", "status": "available",
                                  "container_format": "bare", "disk_format": "diskdump",
                                  "size": "1000B"}
    assert listed[theirs["id"]]["name"] == "Bob Public"
    assert hidden["id"] not in listed

    own = alice.images(f"--owner={alice.uuid}")
    assert mine["id"] in own and theirs["id"] not in own
    others = alice.images(f"--owner={bob.uuid}")
    assert theirs["id"] in others and mine["id"] not in others

    result = alice.fails("image", "unregister", theirs["id"])
    assert "Insufficient permissions" in result.err and FORBIDDEN in result.err, result
    result = alice.fails("image", "modify", theirs["id"], "--name=stolen")
    assert "Insufficient permissions" in result.err and FORBIDDEN in result.err, result
    assert bob.info(theirs["id"])["name"] == "Bob Public"
    assert "403" in alice.fails("image", "info", hidden["id"]).err

    bob.ok("image", "unregister", theirs["id"])
    assert theirs["id"] not in alice.images()


def test_properties_and_metafile_reregistration(alice, alice_api, tmp_path, uploaded):
    name, _ = uploaded()
    first, _ = alice.register("Debian Base Gama", name, "-p", "OS=Linux", "-p", "user=someuser",
                              "-p", "extra=1")
    assert first["properties"] == {"os": "Linux", "user": "someuser", "extra": "1"}

    result = alice.ok("file", "download", f"/pithos/{name}.meta", cwd=tmp_path)
    assert "Download completed" in result.err
    metafile = tmp_path / (name + ".meta")
    meta = json.loads(metafile.read_text())
    assert meta["name"] == "Debian Base Gama"
    meta["properties"] = {"OS": "Linux", "USER": "root"}
    metafile.write_text(json.dumps(meta, indent=2))

    # Re-registration overrides: explicit name wins, metafile properties replace all.
    delta, _ = alice.register("Debian Base Delta", name, "-f", f"--metafile={metafile}")
    assert delta["id"] == first["id"]
    assert delta["name"] == "Debian Base Delta"
    assert delta["properties"] == {"os": "Linux", "user": "root"}

    # Command line wins over the metafile.
    admin, _ = alice.register("Debian Base Delta", name, "-f", f"--metafile={metafile}",
                              "-p", "user=admin")
    assert admin["properties"] == {"os": "Linux", "user": "admin"}
    head = image_head(alice_api, first["id"])
    assert head.headers["X-Image-Meta-Property-User"] == "admin"
    assert head.headers["X-Image-Meta-Property-Os"] == "Linux"


def test_image_modify(alice, bob, alice_api, uploaded):
    name, _ = uploaded()
    image, _ = alice.register("Debian Base Gama", name, "-p", "OS=Linux", "-p", "user=root")
    image_id = image["id"]

    assert alice.ok("image", "modify", image_id, "--name=Changed Name").out == ""
    info = alice.info(image_id)
    assert info["name"] == "Changed Name"
    for key in ("id", "owner", "location", "checksum", "created-at", "properties"):
        assert info[key] == image[key], key

    alice.ok("image", "modify", image_id, "--public", "--name=Debian Base Gama")
    info = alice.info(image_id)
    assert (info["is-public"], info["name"]) == ("True", "Debian Base Gama")
    assert image_id in bob.images()

    alice.ok("image", "modify", image_id, "--private")
    assert alice.info(image_id)["is-public"] == "False"
    assert image_id not in bob.images()

    alice.ok("image", "modify", image_id, "-p", "user=user")
    assert alice.info(image_id)["properties"] == {"os": "Linux", "user": "user"}

    alice.ok("image", "modify", image_id, "-p", "greet=Hi there", "-p", "user=root")
    assert alice.info(image_id)["properties"] == {"os": "Linux", "user": "root",
                                                  "greet": "Hi there"}

    # An empty value deletes (kamaki 0.16's --property-del cannot, api.md §6.12).
    alice.ok("image", "modify", image_id, "-p", "greet=")
    assert alice.info(image_id)["properties"] == {"os": "Linux", "user": "root"}

    alice.ok("image", "modify", image_id, "--name=Débian ünï", "-p", "greet=Γειά σου")
    info = alice.info(image_id)
    assert info["name"] == "Débian ünï" and info["properties"]["greet"] == "Γειά σου"
    assert image_head(alice_api, image_id).status_code == 200


def test_container_versioning(alice, fresh):
    info = fields(alice.ok("container", "info", "pithos").out)
    assert info["x-container-policy-versioning"] == "auto"
    result = alice.ok("container", "modify", "pithos", "--versioning=auto")
    assert "new versioning scheme: auto" in result.out

    container = fresh("kc")
    alice.ok("container", "create", container)
    alice.ok("container", "modify", container, "--versioning=none")
    info = fields(alice.ok("container", "info", container).out)
    assert info["x-container-policy-versioning"] == "none"
    (alice.home / "small").write_text("one\n")
    alice.ok("file", "upload", "small", f"/{container}")
    alice.ok("file", "upload", "-f", "small", f"/{container}")
    assert len(alice.versions(f"/{container}/small")) == 1

    alice.ok("container", "modify", container, "--versioning=auto")
    assert fields(alice.ok("container", "info", container).out)[
        "x-container-policy-versioning"] == "auto"
    alice.ok("file", "upload", "-f", "small", f"/{container}")
    assert len(alice.versions(f"/{container}/small")) == 2


def test_metafile_versions_cat_and_download(alice, tmp_path, uploaded):
    name, _ = uploaded()
    versions = [alice.register(f"Debian Base {n}", name, "-f")[1] for n in ("One", "Two", "Three")]
    assert versions == sorted(versions) and len(set(versions)) == 3
    meta_path = f"/pithos/{name}.meta"
    assert alice.versions(meta_path) == versions

    old = json.loads(alice.ok("file", "cat", meta_path, f"--object-version={versions[0]}").out)
    assert old["name"] == "Debian Base One"
    assert json.loads(alice.ok("file", "cat", meta_path).out)["name"] == "Debian Base Three"

    result = alice.ok("file", "download", meta_path, "meta.v2",
                      f"--object-version={versions[1]}", cwd=tmp_path)
    assert "Download completed" in result.err
    assert json.loads((tmp_path / "meta.v2").read_text())["name"] == "Debian Base Two"

    # --no-metafile-upload registers without touching the metafile.
    (tmp_path / "template.meta").write_text(json.dumps({"properties": {"OS": "Linux"}}))
    result = alice.ok("image", "register", "--name=Debian Base Four",
                      f"--location=/pithos/{name}", f"--metafile={tmp_path / 'template.meta'}",
                      "--no-metafile-upload")
    assert "Metadata file" not in result.err, result
    four = fields(result.out)
    assert four["name"] == "Debian Base Four" and four["properties"] == {"os": "Linux"}
    assert alice.info(four["id"])["name"] == "Debian Base Four"
    assert alice.versions(meta_path) == versions


def test_versioned_download_of_sparse_multiblock_object(alice, alice_api, tmp_path, fresh):
    """A disk image is mostly zeros: NUL-only blocks hash as the empty block (api.md §3.3)."""
    name = fresh("sparse") + ".img"
    first = os.urandom(1000) + bytes(9 * 1024 * 1024) + os.urandom(5000) + bytes(3000)
    (tmp_path / name).write_bytes(first)
    alice.ok("file", "upload", name, "/pithos", cwd=tmp_path)
    assert object_head(alice_api, name)["X-Object-Hash"] == top_hash(hashmap_of(first))
    second = random_file(tmp_path / name, 4_300_000)
    alice.ok("file", "upload", "-f", name, "/pithos", cwd=tmp_path)
    versions = alice.versions(f"/pithos/{name}")
    assert len(versions) == 2

    alice.ok("file", "download", f"/pithos/{name}", "old",
             f"--object-version={versions[0]}", cwd=tmp_path)
    alice.ok("file", "download", f"/pithos/{name}", "new", cwd=tmp_path)
    assert (tmp_path / "old").read_bytes() == first
    assert (tmp_path / "new").read_bytes() == second


def test_register_with_upload_image_file(alice, alice_api, tmp_path, fresh):
    name = fresh("up") + ".diskdump"
    data = random_file(tmp_path / name, 6000)
    result = alice.ok("image", "register", "--name=Uploaded At Once",
                      f"--location=/pithos/{name}", f"--upload-image-file={name}", cwd=tmp_path)
    info = fields(result.out)
    assert info["size"] == str(len(data))
    assert info["id"] == object_head(alice_api, name)["X-Object-UUID"]
    assert METAFILE_LINE.search(result.err), result


def test_batch_upload_and_public_registration(alice, bob, alice_api, tmp_path, fresh):
    folder = fresh("images")
    (tmp_path / folder).mkdir()
    sizes = {"debian.diskdump": 2000, "win8.diskdump": 4_200_000}
    for file, size in sizes.items():
        random_file(tmp_path / folder / file, size)

    result = alice.ok("file", "upload", "-r", folder, "/pithos", cwd=tmp_path)
    assert f"mkdir /pithos/{folder}" in result.err, result
    assert object_head(alice_api, folder)["Content-Type"].startswith("application/directory")
    listed = alice.ok("file", "list", f"/pithos/{folder}/").out
    for file in sizes:
        assert f"{folder}/{file}" in listed

    registered = {}
    for file in sorted(sizes):
        path = f"{folder}/{file}"
        info, version = alice.register(path, path, "--public")
        assert info["name"] == path
        assert info["is-public"] == "True"
        assert info["location"] == f"pithos://{alice.uuid}/pithos/{path}"
        assert info["size"] == str(sizes[file])
        assert version is not None
        registered[info["id"]] = path

    seen = bob.images()
    for image_id, path in registered.items():
        assert seen[image_id]["name"] == path
