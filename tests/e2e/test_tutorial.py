"""docs/tutorial.md, run: every ``console`` block of the page, in order, in one bash.

The page is the seed tutorial (§5, image registration with kamaki) done on a
mount. This test runs exactly the commands it shows (the ``$ `` lines), the
way a user would: ``imagefs mount ~/cloud`` with no options (the embedded
service starts in ``~/.local/share/imagefs``), then each command in one
bash session whose current directory is the mount. What each command prints
must be what the page shows once the values that differ from run to run
(uuids, hashes, dates, version numbers, the port and token) are blanked out.
After each section a check asks the services themselves for the outcome the
seed shows: the same id after re-registration, properties overridden, the
other user's image refused (403), the public flag, the metafile versions,
batch registration with names from paths.

A second user owns two public images (the seed's "Debian Base Alpha" and
"Beta Debian Base"), registered with the service's API after the mount is
up, as another person would.

``IMAGEFS_TUTORIAL_OUT=FILE`` writes what the commands printed to FILE (to
refresh the page after a change of output).
"""

from __future__ import annotations

import difflib
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_util import cleanup, mount_listed, wait_until

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.protocol import headers as H
from imagefs.service.launcher import read_default_token, read_service_file

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "tutorial.md"
SHOWN_HOME = "/home/someuser"

#: The local files of the seed, with the sizes the page shows.
LOCAL_FILES = {"debian_base3.diskdump": 3_158_073, "debian_base4.diskdump": 3_000_000,
               "images/debian.diskdump": 1_500_000, "images/win8.diskdump": 2_100_000}

#: Values that differ from run to run, blanked out on both sides before comparing.
BLANKS = [
    (re.compile(r"http://127\.0\.0\.1:\d+"), "http://127.0.0.1:PORT"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UUID"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "HASH"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "DATE"),
    (re.compile(r"@\d+"), "@N"),
    (re.compile(r'(user\.pithos\.version=)"\d+"'), r'\1"N"'),
    (re.compile(r'(user\.pithos\.meta\.Mtime=)"[\d.]+"'), r'\1"TIME"'),
    (re.compile(r"(token:? )[A-Za-z0-9_-]{20,}"), r"\1TOKEN"),
]


@dataclass
class Step:
    command: str
    expected: str


@dataclass
class Section:
    title: str
    steps: list[Step] = field(default_factory=list)


def page_sections(text: str) -> list[Section]:
    """The ``console`` blocks of the page, by ``##`` section: commands and their output."""
    sections = [Section("")]
    in_block = False
    for line in text.splitlines():
        if not in_block and line.startswith("## "):
            sections.append(Section(line[3:].strip()))
        elif line.strip() == "```console":
            in_block = True
        elif in_block and line.strip() == "```":
            in_block = False
        elif in_block:
            if line.startswith("$ "):
                sections[-1].steps.append(Step(line[2:], ""))
            else:
                step = sections[-1].steps[-1]
                step.expected += line + "\n"
    return [s for s in sections if s.steps]


def blank(text: str, home: str) -> str:
    text = text.replace(home, SHOWN_HOME)
    for pattern, replacement in BLANKS:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


class Shell:
    """One bash session: commands run one at a time, stdout and stderr together."""

    MARK = "--imagefs-tutorial-step-done--"

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=home, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)

    def run(self, command: str, timeout: float = 120) -> tuple[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\necho; echo \"{self.MARK} $?\"\n")
        self.proc.stdin.flush()
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                pytest.fail(f"bash ended during: {command}\n{''.join(lines)}")
            if line.startswith(self.MARK):
                status = int(line.split()[-1])
                break
            lines.append(line)
            if time.monotonic() > deadline:
                pytest.fail(f"timed out: {command}")
        out = "".join(lines)
        return out[:-1] if out.endswith("\n") else out, status

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- what each section must leave on the services ---------------------------------------------


class World:
    """The two users' view of the services, for the checks after each section."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data = home / ".local" / "share" / "imagefs"
        self.mnt = home / "cloud"
        self.me: Connection | None = None
        self.other: Connection | None = None
        self.ids: dict[str, str] = {}

    def image(self, path: str):
        info = self.me.pithos.head("pithos", path)
        try:
            return self.me.plankton.get(info.uuid)
        except errors.NotFound:
            return None

    def close(self) -> None:
        for conn in (self.me, self.other):
            if conn is not None:
                conn.close()


def after_start(w: World) -> None:
    url = read_service_file(w.data)["url"]
    w.me = Connection.open(url, read_default_token(w.data)[1])
    from imagefs.service.store import Store  # the service's own tool, as `imagefs user add`
    store = Store.open(w.data)
    try:
        other = store.add_user("another-user")
    finally:
        if hasattr(store, "close"):
            store.close()
    w.other = Connection.open(url, other.token)
    for key, name in (("alpha", "Debian Base Alpha"), ("beta", "Beta Debian Base")):
        w.other.pithos.put_data("pithos", f"{key}.diskdump", f"{name}\n".encode())
        image = w.other.plankton.register(H.location(w.other.account, "pithos",
                                                     f"{key}.diskdump"), name, is_public=True)
        w.ids[key] = image.id
    for image_id in w.ids.values():  # the mount shows them within its cache time
        wait_until((w.mnt / ".images" / f"{image_id}.meta").exists, 10,
                   what="the other user's public images on the mount")


def after_5_1(w: World) -> None:
    image = w.image("debian_base3.diskdump")
    assert image is not None and image.name == "Debian Base Alpha"
    assert (image.disk_format, image.container_format, image.is_public) == (
        "diskdump", "bare", False)
    assert image.owner == w.me.account
    w.ids["mine"] = image.id
    stored = w.me.pithos.read("pithos", "debian_base3.diskdump.meta", 0, 1 << 20)
    assert b'"name": "Debian Base Alpha"' in stored and image.id.encode() in stored


def after_5_3(w: World) -> None:
    assert w.image("debian_base3.diskdump") is None
    assert w.me.pithos.head("pithos", "debian_base3.diskdump").size == 3_158_073
    with pytest.raises(errors.NotFound):
        w.me.pithos.head("pithos", "debian_base3.diskdump.meta")
    alpha = w.other.plankton.get(w.ids["alpha"])  # the 403: still registered
    assert alpha.name == "Debian Base Alpha" and alpha.is_public
    with pytest.raises(errors.Forbidden):  # the seed's "(403) FORBIDDEN"
        w.me.plankton.unregister(w.ids["alpha"])


def after_5_4(w: World) -> None:
    image = w.image("debian_base3.diskdump")
    assert image.id == w.ids["mine"]  # the id belongs to the object
    assert image.name == "Debian Base Gama"
    assert image.properties == {"os": "Linux", "user": "someuser"}


def after_5_5(w: World) -> None:
    image = w.image("debian_base3.diskdump")
    assert image.id == w.ids["mine"] and image.name == "Debian Base Delta"
    assert image.properties == {"os": "Linux", "user": "root"}
    assert (w.home / "debian_base3.diskdump.meta").exists()


def after_5_6(w: World) -> None:
    image = w.image("debian_base3.diskdump")
    assert image.name == "Debian Base Gama" and not image.is_public
    assert image.status == ""
    assert image.properties == {"os": "Linux", "user": "root"}


def after_5_7(w: World) -> None:
    image = w.image("debian_base3.diskdump")
    assert image.id == w.ids["mine"] and image.name == "Debian Base Delta"
    assert image.properties == {"os": "Linux"}  # an override, not a merge
    assert image.status == "available"
    four = w.image("debian_base4.diskdump")
    assert four.id != image.id and four.name == "Debian Base Delta"
    assert four.properties == {"os": "Linux", "user": "admin"}
    assert four.size == 3_000_000


def after_5_8(w: World) -> None:
    # 5.1, 5.4, 5.5 and 5.7 stored a metafile each; restoring 5.4's stored one more.
    versions = [v for v, _ in w.me.pithos.list_versions("pithos",
                                                        "debian_base3.diskdump.meta")]
    listed = sorted(int(n.split("@")[1]) for n in os.listdir(w.mnt / "pithos" / ".versions")
                    if n.startswith("debian_base3.diskdump.meta@"))
    assert len(versions) == 5 and listed == versions[:-1]
    first = w.me.pithos.read("pithos", "debian_base3.diskdump.meta", 0, 1 << 20,
                             version=versions[0])
    assert b'"name": "Debian Base Alpha"' in first
    assert (w.home / f"debian_base3.diskdump.meta@{versions[1]}").exists()
    image = w.image("debian_base3.diskdump")
    assert image.id == w.ids["mine"] and image.name == "Debian Base Gama"
    assert image.properties == {"os": "Linux", "user": "someuser"}


def after_5_9(w: World) -> None:
    for path in ("images/debian.diskdump", "old/win8.diskdump"):
        image = w.image(path)
        assert image is not None and image.is_public
        assert image.size == LOCAL_FILES[path.replace("old/", "images/")]
    assert w.image("images/debian.diskdump").name == "images/debian.diskdump"
    assert w.image("old/win8.diskdump").name == "images/win8.diskdump"  # named at registration
    assert w.image("old/win8.diskdump").location == H.location(w.me.account, "pithos",
                                                                "old/win8.diskdump")


CHECKS = {"Before you start": after_start, "5.1": after_5_1, "5.3": after_5_3,
          "5.4": after_5_4, "5.5": after_5_5, "5.6": after_5_6, "5.7": after_5_7,
          "5.8": after_5_8, "5.9": after_5_9}


def _check_for(title: str):
    for prefix, check in CHECKS.items():
        if title.startswith(prefix):
            return check
    return None


# -- the test -----------------------------------------------------------------------------------


def _local_files(home: Path) -> None:
    for name, size in LOCAL_FILES.items():
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random.Random(name).randbytes(size))


def test_tutorial(tmp_path):
    home = tmp_path / "someuser"
    home.mkdir()
    _local_files(home)
    env = {"HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb",
           "PATH": f"{REPO / 'venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "IMAGEFS_RUNTIME": str(tmp_path / "run"), "PYTHONPATH": str(REPO)}
    sections = page_sections(PAGE.read_text())
    assert [s.title[:3] for s in sections if s.title.startswith("5.")] == [
        "5.1", "5.2", "5.3", "5.4", "5.5", "5.6", "5.7", "5.8", "5.9"]
    world = World(home)
    shell = Shell(home, env)
    printed: list[str] = []
    checked = []
    differ = []  # every step whose output is not the page's (all are run)
    try:
        for section in sections:
            for step in section.steps:
                out, _status = shell.run(step.command)
                printed.append(f"$ {step.command}\n{out}")
                want, got = blank(step.expected, str(home)), blank(out, str(home))
                if want != got and sorted(want.splitlines()) != sorted(got.splitlines()):
                    diff = "\n".join(difflib.unified_diff(
                        want.splitlines(), got.splitlines(), "page", "mount", lineterm=""))
                    differ.append(f"[{section.title}] $ {step.command}\n{diff}")
            check = _check_for(section.title)
            if check is not None:
                check(world)
                checked.append(check.__name__)
        assert not differ, "the page and the mount differ:\n\n" + "\n\n".join(differ)
        assert checked == [c.__name__ for c in CHECKS.values()]
        assert not mount_listed(world.mnt)  # the page ends with imagefs umount
    finally:
        if os.environ.get("IMAGEFS_TUTORIAL_OUT"):
            Path(os.environ["IMAGEFS_TUTORIAL_OUT"]).write_text("\n".join(printed))
        shell.close()
        world.close()
        cleanup(None, world.mnt)
        _stop_service(world.data)


def _stop_service(data: Path) -> None:
    """The embedded service ``imagefs mount`` started for this test (its pid file)."""
    info = read_service_file(data)
    if info is None:
        return
    try:
        os.kill(info["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(info["pid"], signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover - run the page by hand
    sys.exit(pytest.main([__file__, "-q"]))
