"""Odd input through a real mount: names, sidecar texts and attribute values (issue 6 §4).

The pure layer has these corpora as unit cases (``tests/unit``) and the
service has its bad requests (``tests/service/test_bad_requests.py``). Here
the same kinds of input go through the kernel, the daemon and HTTP, with real
system calls (``open``, ``mkdir``, ``rename``, ``setxattr``...) and a few real
tools, on one mount for the whole module.

Every case asserts its errno (or its success and what the service then
holds), that the daemon still serves (``stat`` of the mount's top and a read
of a control file), and that nothing was lost or left behind: the module's
container holds exactly its fixed files after each case, a refused name never
reaches the service in any form, a refused sidecar text or attribute leaves
the registration, the stored metafile and the object exactly as they were.
The last test checks the control file and its image against what they were at
the start. The number of cases tried is printed in the terminal summary.
The refusals and their reasons are the table in docs/semantics.md
("Odd input").
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import subprocess
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_util import Mount, expect_errno, names_on_service, run

from imagefs import errors
from imagefs.client.connection import Connection
from imagefs.client.models import Image, ObjectInfo
from imagefs.image.metafile import MAX_METAFILE_BYTES, Registration
from imagefs.protocol import headers as H

KiB = 1 << 10
#: Linux's limit on an attribute value (XATTR_SIZE_MAX).
XATTR_SIZE_MAX = 64 * KiB

TALLY: Counter = Counter()

CONTROL = "control.img"
TARGET = "target.img"
PLAIN = "plain.bin"
#: What the module's container holds between cases (the two sidecars are stored metafiles).
BASE = {CONTROL, CONTROL + ".meta", TARGET, TARGET + ".meta", PLAIN}

CONTROL_META = {"name": "Control \u03a9mega",
                "properties": {"OS": "Linux", "GREEK": "\u0394\u03ad\u03bb\u03c4\u03b1"}}
TARGET_META = {"name": "Target", "properties": {"OS": "Linux", "USER": "root"},
               "status": "available"}


# -- the module's world -----------------------------------------------------------------------


@dataclass
class World:
    mount: Mount
    client: Connection
    container: str
    path: Path
    control: bytes
    control_hash: str
    control_image: Image
    containers_before: set[str]

    @property
    def top(self) -> Path:
        return self.mount.path

    @property
    def target(self) -> Path:
        return self.path / TARGET

    @property
    def target_meta(self) -> Path:
        return self.path / (TARGET + ".meta")

    def head(self, name: str) -> ObjectInfo | None:
        try:
            return self.client.pithos.head(self.container, name)
        except errors.NotFound:
            return None

    def image(self, name: str) -> Image | None:
        """The registration of ``name`` as the image service has it (None: not an image)."""
        info = self.client.pithos.head(self.container, name)
        try:
            return self.client.plankton.get(info.uuid)
        except errors.NotFound:
            return None

    def names(self) -> set[str]:
        return names_on_service(self.client, self.container)

    def containers(self) -> set[str]:
        return {c.name for c in self.client.pithos.list_containers()}

    def serving(self) -> None:
        """The daemon still answers: its top stats and the control file reads back."""
        assert self.mount.proc.poll() is None, "the daemon died"
        assert os.stat(self.top).st_ino
        assert (self.path / CONTROL).read_bytes() == self.control

    def settled(self) -> None:
        """After a case: the daemon serves and the container holds exactly its fixed files."""
        self.serving()
        assert self.names() == BASE
        assert sorted(os.listdir(self.path)) == sorted(BASE)


def write(path, data: bytes) -> None:
    """open/write/close: close() reports what the mount says (a refused sidecar)."""
    with open(path, "wb") as f:
        f.write(data)


def text_of(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def world(mounted, client, request) -> World:
    before = {c.name for c in client.pithos.list_containers()}
    name = f"odd-{uuid.uuid4().hex[:8]}"
    path = mounted.path / name
    os.mkdir(path)
    control = os.urandom(100 * KiB) + b"the control file\n"
    write(path / CONTROL, control)
    write(path / (CONTROL + ".meta"), text_of(CONTROL_META))
    write(path / TARGET, b"the target image\n" * 1000)
    write(path / (TARGET + ".meta"), text_of(TARGET_META))
    write(path / PLAIN, b"a plain file, not an image\n")
    w = World(mounted, client, name, path, control, client.pithos.head(name, CONTROL).hash,
              None, before)  # type: ignore[arg-type]
    w.control_image = w.image(CONTROL)
    assert w.control_image is not None and w.control_image.name == CONTROL_META["name"]
    assert w.image(TARGET).name == "Target"
    w.settled()
    yield w
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TALLY:
        total = sum(v for k, v in TALLY.items() if k != "failed")
        parts = ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{__name__}: {total} odd inputs tried through the mount, "
                                f"{total} answered as documented ({parts}); daemon alive, "
                                "nothing lost")


def tried(kind: str) -> None:
    TALLY[kind] += 1


# -- 1. names ---------------------------------------------------------------------------------

#: Names the store keeps exactly as given: created, read back, listed, moved away and back,
#: removed. No normalisation, no quoting shows on the service.
NAMES = [
    ("greek", "\u0394\u03ad\u03bb\u03c4\u03b1.img"),
    ("cjk", "\u65e5\u672c\u8a9e\u306e\u30d5\u30a1\u30a4\u30eb"),
    ("emoji", "\U0001f600\U0001f680.img"),
    ("emoji-zwj-sequence", "\U0001f469\u200d\U0001f4bb"),
    ("combining-marks", "a\u0301\u0302\u0303\u0304"),
    ("nfc-form", unicodedata.normalize("NFC", "caf\u00e9")),
    ("nfd-form", unicodedata.normalize("NFD", "caf\u00e9")),
    ("right-to-left-override", "evil\u202egnp.exe"),
    ("byte-order-mark-char", "\ufeffbom"),
    ("replacement-char", "\ufffd"),
    ("private-use-char", "\ue000"),
    ("noncharacter", "\uffff"),
    ("255-bytes-ascii", "a" * 255),
    ("255-bytes-2-byte-chars", "\u00e9" * 127 + "a"),
    ("255-bytes-4-byte-chars", "\U0001f600" * 63 + "abc"),
    ("newline", "line\nbreak"),
    ("tab", "tab\there"),
    ("carriage-return", "cr\r"),
    ("escape-sequence", "esc\x1b[31mred"),
    ("control-char-01", "ctl\x01"),
    ("del-char", "del\x7f"),
    ("backslash", "back\\slash"),
    ("quotes", "it's \"quoted\""),
    ("space-at-end", "trailing "),
    ("space-at-start", " leading"),
    ("only-spaces", "   "),
    ("three-dots", "..."),
    ("dash-first", "-rf"),
    ("percent", "100%"),
    ("percent-20", "a%20b"),
    ("percent-2f", "a%2Fb"),
    ("percent-00", "%00"),
    ("percent-malformed", "%zz%"),
    ("question-mark", "what?"),
    ("query-string", "a?b=c&d=e"),
    ("hash-sign", "#anchor"),
    ("fragment-in-middle", "a#b?c"),
    ("plus", "a+b"),
    ("semicolon", "a;b"),
    ("colon", "a:b"),
    ("at-sign", "a@b"),
    ("looks-like-a-version", "disk@12"),
    ("brackets", "[x]{y}<z>"),
    ("shell-metachars", "$(rm) `x` | &"),
    ("star", "*"),
    ("tilde", "~"),
    ("dot-meta-alone", ".meta"),
    ("upper-case-meta", "x.META"),
    ("emacs-lock-of-sidecar", ".#x.meta"),
    ("meta-in-middle", "x.meta.bak"),
    ("versions-lookalike", ".versions~"),
    ("images-lookalike", ".images.bak"),
]
NAME_IDS = [n[0] for n in NAMES]


@pytest.mark.parametrize("name", [n[1] for n in NAMES], ids=NAME_IDS)
def test_odd_file_name_is_kept_exactly(world, name):
    path = world.path / name
    data = f"content of {name!r}\n".encode()
    write(path, data)
    assert world.names() == BASE | {name}
    assert world.head(name).size == len(data)
    assert os.stat(path).st_size == len(data)
    assert path.read_bytes() == data
    assert name in os.listdir(world.path)
    # Moved away and back: the name travels as a move's source and as its destination.
    moved = world.path / "moved"
    os.rename(path, moved)
    assert world.names() == BASE | {"moved"}
    os.rename(moved, path)
    assert world.names() == BASE | {name}
    assert path.read_bytes() == data
    os.unlink(path)
    expect_errno(errno.ENOENT, os.stat, path)
    world.settled()
    tried("names")


@pytest.mark.parametrize("name", [n[1] for n in NAMES], ids=NAME_IDS)
def test_odd_directory_name_is_kept_exactly(world, name):
    path = world.path / name
    os.mkdir(path)
    write(path / "inside", b"inside\n")
    assert world.names() == BASE | {name, f"{name}/inside"}
    assert os.listdir(path) == ["inside"]
    # A directory move sends the odd name as a prefix.
    moved = world.path / "moved-dir"
    os.rename(path, moved)
    assert world.names() == BASE | {"moved-dir", "moved-dir/inside"}
    assert (moved / "inside").read_bytes() == b"inside\n"
    os.rename(moved, path)
    assert world.names() == BASE | {name, f"{name}/inside"}
    expect_errno(errno.ENOTEMPTY, os.rmdir, path)
    os.unlink(path / "inside")
    os.rmdir(path)
    world.settled()
    tried("names")


def test_nfc_and_nfd_forms_are_two_files(world):
    """No normalisation: the two spellings of one word are two names, as on ext4."""
    nfc, nfd = unicodedata.normalize("NFC", "\u00c5ngstr\u00f6m"), \
        unicodedata.normalize("NFD", "\u00c5ngstr\u00f6m")
    assert nfc != nfd
    write(world.path / nfc, b"composed\n")
    write(world.path / nfd, b"decomposed\n")
    assert world.names() == BASE | {nfc, nfd}
    assert (world.path / nfc).read_bytes() == b"composed\n"
    assert (world.path / nfd).read_bytes() == b"decomposed\n"
    os.unlink(world.path / nfc)
    assert (world.path / nfd).read_bytes() == b"decomposed\n"
    os.unlink(world.path / nfd)
    world.settled()
    tried("names")


def test_names_differing_in_case_are_two_files(world):
    write(world.path / "Readme", b"1")
    write(world.path / "README", b"2")
    assert world.names() == BASE | {"Readme", "README"}
    assert (world.path / "Readme").read_bytes() == b"1"
    os.unlink(world.path / "Readme")
    os.unlink(world.path / "README")
    world.settled()
    tried("names")


def test_odd_names_with_real_tools(world, tmp_path):
    """cp, mv, ls and find with names a shell script would get wrong."""
    src = tmp_path / "src"
    src.write_bytes(b"tools\n")
    odd = "a b\n%20?#\u0394"
    run("cp", str(src), str(world.path / odd))
    listed = run("ls", "-1", "--quoting-style=literal", "--show-control-chars",
                 str(world.path)).stdout
    assert odd in listed
    found = run("find", str(world.path), "-name", "a b*", "-print0").stdout
    assert found.split("\0")[:-1] == [str(world.path / odd)]
    run("mv", str(world.path / odd), str(world.path / (odd + " moved")))
    assert world.names() == BASE | {odd + " moved"}
    run("rm", str(world.path / (odd + " moved")))
    world.settled()
    tried("names")


#: Component lengths: the kernel's NAME_MAX (255 bytes) for a new name, whatever the store's
#: limit; a name of more than 1024 bytes the kernel refuses itself.
LONG_COMPONENTS = [
    ("256-bytes-ascii", "b" * 256),
    ("256-bytes-2-byte-chars", "\u00e9" * 128),
    ("257-bytes-4-byte-chars", "\U0001f600" * 64 + "x"),
    ("1000-bytes", "c" * 1000),
    ("1025-bytes", "d" * 1025),
]


@pytest.mark.parametrize("name", [n[1] for n in LONG_COMPONENTS],
                         ids=[n[0] for n in LONG_COMPONENTS])
@pytest.mark.parametrize("how", ["create", "mkdir", "rename-to", "mkdir-container"])
def test_component_over_255_bytes_is_enametoolong(world, how, name):
    if how == "create":
        expect_errno(errno.ENAMETOOLONG, write, world.path / name, b"x")
    elif how == "mkdir":
        expect_errno(errno.ENAMETOOLONG, os.mkdir, world.path / name)
    elif how == "rename-to":
        expect_errno(errno.ENAMETOOLONG, os.rename, world.path / PLAIN, world.path / name)
        assert world.head(PLAIN) is not None
    else:
        expect_errno(errno.ENAMETOOLONG, os.mkdir, world.top / name)
        assert name not in world.containers()
    world.settled()
    tried("names")


def _deep_dirs(world: World, char: str, depth: int) -> Path:
    """``depth`` nested directories, each name ``i`` + ``char`` as many times as fit in
    255 bytes (up to 199); returns the deepest."""
    count = min(199, 254 // len(char.encode()))
    deep = world.path
    for i in range(depth):
        deep = deep / f"{i}{char * count}"
        os.mkdir(deep)
    return deep


def _fill(chars: int, char: str) -> str:
    """A name of ``chars`` characters, as many of them ``char`` as fit in 255 bytes."""
    extra = len(char.encode()) - 1
    n = min(chars, (255 - chars) // extra) if extra else chars
    return char * n + "p" * (chars - n)


def _remove_tree(top: Path) -> None:
    for root, dirs, files in os.walk(top, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            os.rmdir(os.path.join(root, d))
    os.rmdir(top)


def _key_length(world: World, path: Path) -> int:
    return len(str(path.relative_to(world.path)))


@pytest.mark.parametrize("char", ["p", "\u00e9"], ids=["ascii", "2-byte-chars"])
def test_object_name_of_1024_characters_is_stored(world, char):
    """The store counts characters: 1024 of them, most two bytes long, are fine."""
    deep = _deep_dirs(world, char, 4 if char == "p" else 7)
    last = _fill(1024 - _key_length(world, deep) - 1, char)
    assert len(last.encode()) <= 255 and _key_length(world, deep / last) == 1024
    write(deep / last, b"long\n")
    key = str((deep / last).relative_to(world.path))
    assert key in world.names()
    assert (deep / last).read_bytes() == b"long\n"
    _remove_tree(world.path / (deep.relative_to(world.path).parts[0]))
    world.settled()
    tried("names")


@pytest.mark.parametrize("how", ["create", "mkdir", "stat", "rename-file-into",
                                 "rename-dir-over-limit"])
def test_object_name_over_1024_characters_is_enametoolong(world, how):
    deep = _deep_dirs(world, "q", 4)
    top = world.path / deep.relative_to(world.path).parts[0]
    last = "r" * (1024 - _key_length(world, deep))  # one character too many
    assert _key_length(world, deep / last) == 1025
    if how == "create":
        expect_errno(errno.ENAMETOOLONG, write, deep / last, b"x")
    elif how == "mkdir":
        expect_errno(errno.ENAMETOOLONG, os.mkdir, deep / last)
    elif how == "stat":
        expect_errno(errno.ENAMETOOLONG, os.stat, deep / last)
        os.listdir(deep)  # with the directory's listing cached, the same answer
        expect_errno(errno.ENAMETOOLONG, os.stat, deep / last)
    elif how == "rename-file-into":
        expect_errno(errno.ENAMETOOLONG, os.rename, world.path / PLAIN, deep / last)
        assert world.head(PLAIN) is not None
    else:
        # The files below fit; moved to a longer directory name, one would not: the whole
        # move is refused, nothing moves.
        ok = "s" * (1024 - _key_length(world, deep) - 10)
        write(deep / ok, b"fits\n")
        before = world.names()
        longer = top.with_name(top.name + "t" * 20)
        expect_errno(errno.ENAMETOOLONG, os.rename, top, longer)
        assert world.names() == before
        assert (deep / ok).read_bytes() == b"fits\n"
        expect_errno(errno.ENOENT, os.stat, longer)
    _remove_tree(top)
    world.settled()
    tried("names")


#: Bytes that are not UTF-8 in a name: EINVAL before anything is sent.
BAD_UTF8 = [
    ("ff", b"\xff"),
    ("fe-ff", b"\xfe\xffname"),
    ("truncated-sequence", b"caf\xc3"),
    ("lone-continuation", b"a\x80b"),
    ("overlong-slash", b"\xc0\xaf"),
    ("overlong-nul", b"x\xc0\x80y"),
    ("utf8-encoded-surrogate", b"\xed\xa0\x80"),
    ("five-byte-form", b"\xf8\x88\x80\x80\x80"),
    ("beyond-u10ffff", b"\xf4\x90\x80\x80"),
    ("latin-1-name", "caf\u00e9.img".encode("latin-1")),
]


@pytest.mark.parametrize("raw", [b[1] for b in BAD_UTF8], ids=[b[0] for b in BAD_UTF8])
@pytest.mark.parametrize("how", ["create", "mkdir", "stat", "rename-to", "mkdir-container"])
def test_name_not_utf8_is_einval(world, how, raw):
    here = os.fsencode(world.path)
    path = here + b"/" + raw
    if how == "create":
        expect_errno(errno.EINVAL, os.open, path, os.O_CREAT | os.O_WRONLY, 0o644)
    elif how == "mkdir":
        expect_errno(errno.EINVAL, os.mkdir, path)
    elif how == "stat":
        expect_errno(errno.EINVAL, os.stat, path)
    elif how == "rename-to":
        expect_errno(errno.EINVAL, os.rename, here + b"/" + PLAIN.encode(), path)
        assert world.head(PLAIN) is not None
    else:
        before = world.containers()
        expect_errno(errno.EINVAL, os.mkdir, os.fsencode(world.top) + b"/" + raw)
        assert world.containers() == before
    world.settled()
    tried("names")


#: The mount's own names and the kernel's: (what, errno).
RESERVED = [
    ("file-.images-in-container", lambda w: write(w.path / ".images", b"x"), errno.EACCES),
    ("dir-.images-in-container", lambda w: os.mkdir(w.path / ".images"), errno.EACCES),
    # .versions exists in every directory: the kernel answers before asking the mount.
    ("file-.versions-in-container", lambda w: write(w.path / ".versions", b"x"), errno.EISDIR),
    ("dir-.versions-in-container", lambda w: os.mkdir(w.path / ".versions"), errno.EEXIST),
    ("rename-onto-.images", lambda w: os.rename(w.path / PLAIN, w.path / ".images"),
     errno.EACCES),
    ("rename-onto-.versions", lambda w: os.rename(w.path / PLAIN, w.path / ".versions"),
     errno.EISDIR),
    ("rename-.versions-away", lambda w: os.rename(w.path / ".versions", w.path / "v"),
     errno.EROFS),
    ("rmdir-.versions", lambda w: os.rmdir(w.path / ".versions"), errno.EROFS),
    ("rmdir-.images", lambda w: os.rmdir(w.top / ".images"), errno.EACCES),
    ("file-in-.versions", lambda w: write(w.path / ".versions" / "new", b"x"), errno.EROFS),
    ("dir-in-.versions", lambda w: os.mkdir(w.path / ".versions" / "new"), errno.EROFS),
    ("file-in-.images", lambda w: write(w.top / ".images" / "new.meta", b"{}"), errno.EACCES),
    ("dir-in-.images", lambda w: os.mkdir(w.top / ".images" / "new"), errno.EACCES),
    ("container-.images", lambda w: os.mkdir(w.top / ".images"), errno.EEXIST),
    ("container-.versions", lambda w: os.mkdir(w.top / ".versions"), errno.EACCES),
    ("container-.Trash", lambda w: os.mkdir(w.top / ".Trash"), errno.EACCES),
    ("container-.Trash-0", lambda w: os.mkdir(w.top / ".Trash-0"), errno.EACCES),
    ("file-at-the-top", lambda w: write(w.top / "file-at-top", b"x"), errno.EPERM),
    ("version-of-a-missing-file", lambda w: os.stat(w.path / ".versions" / "nosuch@1"),
     errno.ENOENT),
    ("version-with-leading-zeros",
     lambda w: os.stat(w.path / ".versions" / f"{CONTROL}@0{w.head(CONTROL).version}"),
     errno.ENOENT),
    ("version-without-number", lambda w: os.stat(w.path / ".versions" / f"{CONTROL}@"),
     errno.ENOENT),
    ("catalog-entry-not-an-id", lambda w: os.stat(w.top / ".images" / "%2e%2e.meta"),
     errno.ENOENT),
    ("catalog-entry-without-meta", lambda w: os.stat(w.top / ".images" / "abc"), errno.ENOENT),
    # "." and ".." (os.path.join: pathlib would drop the ".").
    ("dot-mkdir", lambda w: os.mkdir(os.path.join(w.path, ".")), errno.EEXIST),
    ("dot-rmdir", lambda w: os.rmdir(os.path.join(w.path, ".")), errno.EINVAL),
    ("dotdot-rmdir", lambda w: os.rmdir(os.path.join(w.path, "..")), errno.ENOTEMPTY),
    ("dot-open-for-writing", lambda w: open(os.path.join(w.path, "."), "wb"), errno.EISDIR),
    ("dot-rename", lambda w: os.rename(os.path.join(w.path, "."), w.path / "x"), errno.EBUSY),
    ("dotdot-unlink", lambda w: os.unlink(os.path.join(w.path, "..")), errno.EISDIR),
    ("dotdot-below-a-file", lambda w: os.stat(os.path.join(w.path, PLAIN, "..")),
     errno.ENOTDIR),
]


@pytest.mark.parametrize("action, code", [r[1:] for r in RESERVED], ids=[r[0] for r in RESERVED])
def test_reserved_and_special_names(world, action, code):
    before = world.containers()
    expect_errno(code, action, world)
    assert world.containers() == before
    assert world.head(PLAIN) is not None
    world.settled()
    tried("names")


#: Container names (mkdir at the top): the store keeps them exactly as given.
CONTAINER_NAMES = [
    ("greek", "\u0394\u03ad\u03bb\u03c4\u03b1"),
    ("cjk", "\u65e5\u672c"),
    ("emoji", "\U0001f4e6"),
    ("space-inside", "with space"),
    ("space-at-end", "trailing "),
    ("newline", "new\nline"),
    ("percent", "100%"),
    ("percent-20", "a%20b"),
    ("question-mark", "q?x=1"),
    ("hash-sign", "#h"),
    ("plus-and-ampersand", "a+b&c"),
    ("quotes-and-backslash", "q'\"\\"),
    ("at-sign-digits", "c@12"),
    ("dot-meta", ".meta"),
    ("255-bytes", "k" * 255),
]


@pytest.mark.parametrize("name", [c[1] for c in CONTAINER_NAMES],
                         ids=[c[0] for c in CONTAINER_NAMES])
def test_odd_container_name_is_kept_exactly(world, name):
    path = world.top / name
    assert name not in world.containers()
    os.mkdir(path)
    assert name in world.containers()
    assert name in os.listdir(world.top)
    write(path / "f", b"in an odd container\n")
    assert names_on_service(world.client, name) == {"f"}
    assert (path / "f").read_bytes() == b"in an odd container\n"
    expect_errno(errno.ENOTEMPTY, os.rmdir, path)
    os.unlink(path / "f")
    os.rmdir(path)
    assert name not in world.containers()
    expect_errno(errno.ENOENT, os.stat, path)
    world.settled()
    tried("names")


# Names that look like sidecars: what each is, written with valid JSON and with plain text.


def test_sidecar_without_its_image_waits_and_is_stored(world):
    meta = world.path / "lonely.img.meta"
    write(meta, b'{"name": "Lonely"}')
    assert world.names() == BASE | {"lonely.img.meta"}
    assert json.loads(meta.read_bytes()) == {"name": "Lonely"}
    os.unlink(meta)
    world.settled()
    tried("names")


def test_sidecar_of_a_sidecar_name_waits_and_is_stored(world):
    meta = world.path / "x.meta.meta"
    write(meta, b'{"name": "X meta"}')
    assert world.names() == BASE | {"x.meta.meta"}
    os.unlink(meta)
    world.settled()
    tried("names")


@pytest.mark.parametrize("name", ["lonely.img.meta", "x.meta.meta"])
def test_sidecar_name_with_plain_text_is_einval_and_never_stored(world, name):
    meta = world.path / name
    expect_errno(errno.EINVAL, write, meta, b"just some notes, not JSON\n")
    assert "not valid JSON" in os.getxattr(meta, "user.imagefs.error").decode()
    assert meta.read_bytes() == b"just some notes, not JSON\n"  # kept for the editor
    assert world.names() == BASE  # nothing stored
    os.unlink(meta)
    expect_errno(errno.ENOENT, os.stat, meta)
    world.settled()
    tried("names")


def test_sidecar_of_a_directory_is_einval(world):
    os.mkdir(world.path / "adir")
    expect_errno(errno.EINVAL, write, world.path / "adir.meta", b'{"name": "dir"}')
    assert "directory" in os.getxattr(world.path / "adir.meta", "user.imagefs.error").decode()
    os.unlink(world.path / "adir.meta")
    os.rmdir(world.path / "adir")
    world.settled()
    tried("names")


@pytest.mark.parametrize("name", ["\u0394 %20?#&+.img", "line\nbreak.img", "100%.img",
                                  "\U0001f600 \u202e.img"])
def test_image_with_an_odd_name_registers_through_its_sidecar(world, name):
    """The image's location quotes the name; the sidecar and attributes read it back."""
    write(world.path / name, b"odd image\n")
    write(world.path / (name + ".meta"), text_of({"name": f"odd {name}"}))
    image = world.image(name)
    assert image is not None and image.name == f"odd {name}"
    assert image.location == H.location(world.mount.account, world.container, name)
    assert os.getxattr(world.path / name, "user.image.name").decode() == f"odd {name}"
    assert json.loads((world.path / (name + ".meta")).read_bytes())["name"] == f"odd {name}"
    os.unlink(world.path / (name + ".meta"))
    assert world.image(name) is None
    os.unlink(world.path / name)
    world.settled()
    tried("names")


# -- 2. sidecar texts -------------------------------------------------------------------------

SERVER_KEYS_ANY_TYPE = {"id": 5, "owner": None, "location": {"a": [1]}, "checksum": [1],
                        "size": "big", "created-at": True, "updated-at": 1.5, "deleted-at": {}}


def _padded(doc: dict, size: int) -> bytes:
    text = text_of(doc)
    return text[:-1] + b" " * (size - len(text)) + b"}"


def _deep(depth: int) -> bytes:
    return ("{\"name\": \"Target\", \"x-nested\": " + "[" * depth + "]" * depth + "}").encode()


#: Refused texts: (id, bytes, a fragment of the reason, whether the text is kept to be shown).
REFUSED_TEXTS = [
    ("truncated", b'{"name": "Target"', "not valid JSON", True),
    ("trailing-garbage", b'{"name": "Target"} garbage', "Extra data", True),
    ("second-object", b'{"name": "Target"}\n{"name": "Other"}', "Extra data", True),
    ("trailing-nul", b'{"name": "Target"}\0', "Extra data", True),
    ("nul-inside-a-string", b'{"name": "Tar\0get"}', "not valid JSON", True),
    ("nul-between-tokens", b'{\0"name": "Target"}', "not valid JSON", True),
    ("only-nuls", b"\0" * 64, "not valid JSON", True),
    ("only-spaces", b"   ", "empty", True),
    ("only-whitespace-mix", b" \n\t\r\n ", "empty", True),
    ("bom-only", codecs.BOM_UTF8, "empty", True),
    ("bom-then-garbage", codecs.BOM_UTF8 + b"garbage", "not valid JSON", True),
    ("two-boms", codecs.BOM_UTF8 * 2 + b'{"name": "Target"}', "not valid JSON", True),
    ("utf-16-le", codecs.BOM_UTF16_LE + '{"name": "Target"}'.encode("utf-16-le"),
     "UTF-16", True),
    ("utf-16-be", codecs.BOM_UTF16_BE + '{"name": "Target"}'.encode("utf-16-be"),
     "UTF-16", True),
    ("utf-32-le", codecs.BOM_UTF32_LE + '{"name": "Target"}'.encode("utf-32-le"),
     "UTF-16 or UTF-32", True),
    ("utf-16-without-bom", '{"name": "Target"}'.encode("utf-16-le"), "not valid JSON", True),
    ("latin-1", '{"name": "Caf\u00e9"}'.encode("latin-1"), "not UTF-8 text: byte 0xE9", True),
    ("cp1252-smart-quotes", b'{\x93name\x94: "x"}', "not UTF-8 text: byte 0x93", True),
    ("overlong-utf8", b'{"name": "\xc0\xaf"}', "not UTF-8", True),
    ("utf8-encoded-surrogate", b'{"name": "\xed\xa0\x80"}', "not UTF-8", True),
    ("lone-surrogate-escape", b'{"name": "\\ud800"}', "unpaired surrogate", True),
    ("name-nul-escape", b'{"name": "Tar\\u0000get"}', "NUL", True),
    ("status-nul-escape", b'{"status": "ok\\u0000"}', "NUL", True),
    ("property-value-nul-escape", b'{"properties": {"OS": "Li\\u0000nux"}}', "NUL", True),
    ("property-key-nul-escape", b'{"properties": {"O\\u0000S": "x"}}', "NUL", True),
    ("bad-escape", b'{"name": "\\uZZZZ"}', "not valid JSON", True),
    ("single-quotes", b"{'name': 'Target'}", "not valid JSON", True),
    ("trailing-comma", b'{"name": "Target",}', "not valid JSON", True),
    ("comment", b'{"name": "Target" // the name\n}', "not valid JSON", True),
    ("nan", b'{"name": "Target", "properties": {"A": NaN}}', "NaN", True),
    ("infinity", b'{"name": "Target", "properties": {"A": -Infinity}}', "Infinity", True),
    ("top-level-list", b'[{"name": "Target"}]', "not a list", True),
    ("top-level-string", b'"Target"', "not text", True),
    ("top-level-number", b"42", "not a number", True),
    ("top-level-null", b"null", "not null", True),
    ("top-level-true", b"true", "not true/false", True),
    ("name-number", b'{"name": 42}', '"name" must be text, not a number', True),
    ("name-true", b'{"name": true}', '"name" must be text, not true/false', True),
    ("name-list", b'{"name": ["Target"]}', '"name" must be text, not a list', True),
    ("name-object", b'{"name": {"en": "Target"}}', '"name" must be text, not an object', True),
    ("name-empty", b'{"name": ""}', "empty", True),
    ("name-blank", b'{"name": " \\t "}', "empty", True),
    ("name-257", text_of({"name": "n" * 257}), "257 characters long", True),
    ("name-64k", text_of({"name": "n" * XATTR_SIZE_MAX}), "65536 characters long", True),
    ("disk-format-number", b'{"disk-format": 1}', '"disk-format" must be text', True),
    ("disk-format-list", b'{"disk-format": ["diskdump"]}', "not a list", True),
    ("disk-format-unknown", b'{"disk-format": "qcow2"}', "is not one of", True),
    ("container-format-bool", b'{"container-format": false}', "not true/false", True),
    ("container-format-object", b'{"container_format": {}}', "not an object", True),
    ("container-format-unknown", b'{"container-format": "docker"}', "is not one of", True),
    ("status-number", b'{"status": 1}', '"status" must be text', True),
    ("status-list", b'{"status": []}', "not a list", True),
    ("status-257", text_of({"status": "s" * 257}), "257 characters long", True),
    ("is-public-number", b'{"is-public": 1}', "must be true or false", True),
    ("is-public-word", b'{"is-public": "yes"}', "must be true or false", True),
    ("is-public-list", b'{"is-public": [true]}', "must be true or false", True),
    ("is-public-object", b'{"is_public": {}}', "must be true or false", True),
    ("properties-list", b'{"properties": [["OS", "Linux"]]}', "must be a JSON object", True),
    ("properties-string", b'{"properties": "OS=Linux"}', "must be a JSON object", True),
    ("properties-number", b'{"properties": 3}', "must be a JSON object", True),
    ("properties-true", b'{"properties": true}', "must be a JSON object", True),
    ("property-list", b'{"properties": {"OS": ["Linux"]}}', "is a list", True),
    ("property-object", b'{"properties": {"OS": {"n": "Linux"}}}', "is an object", True),
    ("property-key-empty", b'{"properties": {"": "x"}}', "empty", True),
    ("property-key-space", b'{"properties": {"my key": "x"}}', "space", True),
    ("property-key-newline", b'{"properties": {"a\\nb": "x"}}', "control", True),
    ("property-key-94", text_of({"properties": {"k" * 94: "x"}}), "94 characters", True),
    ("property-value-257", text_of({"properties": {"K": "v" * 257}}), "257 characters", True),
    ("property-value-64k", text_of({"properties": {"K": "v" * XATTR_SIZE_MAX}}),
     "65536 characters", True),
    ("29-properties", text_of({"properties": {f"k{i}": "v" for i in range(29)}}),
     "29 properties", True),
    ("1000-properties", text_of({"properties": {f"k{i}": "v" for i in range(1000)}}),
     "1000 properties", True),
    ("28-properties-and-status",
     text_of({"status": "ok", "properties": {f"k{i}": "v" for i in range(28)}}),
     "besides a status", True),
    ("duplicate-name", b'{"name": "Target", "NAME": "Other"}', "same key", True),
    ("duplicate-is-public", b'{"is-public": true, "is_public": false}', "same key", True),
    ("duplicate-property", b'{"properties": {"OS": "Linux", "os": "BSD"}}',
     "same property", True),
    ("deep-nesting-unclosed", b'{"name": "Target", "x": ' + b"[" * 100_000,
     "nested too deeply", True),
    ("deep-nesting-balanced", _deep(50_000), "nested too deeply", True),
    ("deep-nesting-objects", b'{"a": ' * 20_000 + b"1" + b"}" * 20_000, "nested too deeply",
     True),
    ("one-byte-over-the-limit", _padded(TARGET_META, MAX_METAFILE_BYTES + 1), "too large",
     False),
    ("8-mib", _padded(TARGET_META, 8 << 20), "too large", False),
]


@pytest.mark.parametrize("text, reason, kept", [r[1:] for r in REFUSED_TEXTS],
                         ids=[r[0] for r in REFUSED_TEXTS])
def test_refused_sidecar_text_is_einval_and_changes_nothing(world, text, reason, kept):
    meta = world.target_meta
    shown = meta.read_bytes()
    image = world.image(TARGET)
    stored = world.head(TARGET + ".meta")
    expect_errno(errno.EINVAL, write, meta, text)
    # The registration and the stored metafile are untouched.
    assert world.image(TARGET) == image
    after = world.head(TARGET + ".meta")
    assert (after.hash, after.version) == (stored.hash, stored.version)
    # Why, and the text for the editor (not a text too large to be a metafile).
    error = os.getxattr(meta, "user.imagefs.error").decode()
    assert reason in error, error
    assert "user.imagefs.error" in os.listxattr(meta)
    assert meta.read_bytes() == (text if kept else shown)
    # Saving the registration as it was clears the error and sends no registration.
    write(meta, shown)
    expect_errno(errno.ENODATA, os.getxattr, meta, "user.imagefs.error")
    assert meta.read_bytes() == shown
    assert world.image(TARGET) == image
    world.settled()
    tried("sidecar texts")


#: A few refused texts by the other ways in: a file renamed onto the sidecar (``sed -i``,
#: rsync) and the catalog entry ``.images/ID.meta``.
OTHER_WAYS = [r for r in REFUSED_TEXTS if r[0] in (
    "truncated", "utf-16-le", "latin-1", "name-number", "property-object", "deep-nesting-unclosed",
    "name-nul-escape", "one-byte-over-the-limit")]


@pytest.mark.parametrize("text, reason, kept", [r[1:] for r in OTHER_WAYS],
                         ids=[r[0] for r in OTHER_WAYS])
def test_refused_text_renamed_onto_the_sidecar_changes_nothing(world, text, reason, kept):
    meta = world.target_meta
    shown = meta.read_bytes()
    image = world.image(TARGET)
    stored = world.head(TARGET + ".meta")
    temp = world.path / "sedAbC123"
    write(temp, text)
    expect_errno(errno.EINVAL, os.rename, temp, meta)
    assert temp.exists()  # on EINVAL nothing changed: the source is still there
    assert world.image(TARGET) == image
    after = world.head(TARGET + ".meta")
    assert (after.hash, after.version) == (stored.hash, stored.version)
    assert reason in os.getxattr(meta, "user.imagefs.error").decode()
    os.unlink(temp)
    write(meta, shown)
    expect_errno(errno.ENODATA, os.getxattr, meta, "user.imagefs.error")
    assert world.image(TARGET) == image
    world.settled()
    tried("sidecar texts")


@pytest.mark.parametrize("text, reason, kept", [r[1:] for r in OTHER_WAYS],
                         ids=[r[0] for r in OTHER_WAYS])
def test_refused_text_written_to_the_catalog_entry_changes_nothing(world, text, reason, kept):
    image = world.image(TARGET)
    entry = world.top / ".images" / f"{image.id}.meta"
    shown = entry.read_bytes()
    expect_errno(errno.EINVAL, write, entry, text)
    assert world.image(TARGET) == image
    write(entry, shown)  # the registration as it was: nothing sent
    assert world.image(TARGET) == image
    world.settled()
    tried("sidecar texts")


def _undated(text: bytes) -> dict:
    doc = json.loads(text)
    del doc["updated-at"]
    return doc


def _same_fields(image: Image, other: Image) -> bool:
    return Registration.from_image(image) == Registration.from_image(other)


def _shown_text(world: World) -> bytes:
    return world.target_meta.read_bytes()


#: Texts that register what they say: (id, text maker, what the image then has, or None:
#: nothing changes at all, not even the update time).
ACCEPTED_TEXTS = [
    ("empty", lambda w: b"", None),
    ("the-shown-text-again", _shown_text, None),
    ("bom-then-text", lambda w: codecs.BOM_UTF8 + _shown_text(w), None),
    ("crlf-line-ends", lambda w: _shown_text(w).replace(b"\n", b"\r\n"), None),
    ("no-line-ends", lambda w: text_of(json.loads(_shown_text(w))), None),
    ("exactly-the-limit", lambda w: _padded(json.loads(_shown_text(w)), MAX_METAFILE_BYTES),
     None),
    ("duplicate-keys-same-value",
     lambda w: text_of(TARGET_META)[:-1] + b', "NAME": "Target", "Status": "available"}',
     None),
    ("server-keys-any-type-ignored",
     lambda w: text_of({**TARGET_META, **SERVER_KEYS_ANY_TYPE}), None),
    ("unknown-keys-ignored",
     lambda w: text_of({**TARGET_META, **{f"x-unknown-{i}": i for i in range(10_000)}}), None),
    ("nested-200-deep-in-an-unknown-key",
     lambda w: text_of(TARGET_META)[:-1] + b', "x": ' + b"[" * 200 + b"]" * 200 + b"}", None),
    ("python2-unicode-escapes", lambda w: b'{"name": "\\u0394\\u03ad\\u03bb\\u03c4\\u03b1"}',
     {"name": "\u0394\u03ad\u03bb\u03c4\u03b1"}),
    ("name-greek-emoji-combining",
     lambda w: text_of({"name": "\u0394\u03ad\u03bb\u03c4\u03b1 \U0001f600 e\u0301"}),
     {"name": "\u0394\u03ad\u03bb\u03c4\u03b1 \U0001f600 e\u0301"}),
    ("name-256", lambda w: text_of({"name": "n" * 256}), {"name": "n" * 256}),
    ("name-with-url-characters", lambda w: text_of({"name": "a%20b?c#d&e=f+g"}),
     {"name": "a%20b?c#d&e=f+g"}),
    ("name-null-is-the-path", lambda w: b'{"name": null}', {"name": TARGET}),
    ("name-missing-is-the-path", lambda w: b"{}", {"name": TARGET}),
    ("property-value-256", lambda w: text_of({"name": "T", "properties": {"K": "v" * 256}}),
     {"properties": {"k": "v" * 256}}),
    ("property-value-newline-and-unicode",
     lambda w: text_of({"name": "T", "properties": {"NOTE": "line 1\nline 2 \u0394"}}),
     {"properties": {"note": "line 1\nline 2 \u0394"}}),
    ("property-key-unicode-and-punctuation",
     lambda w: text_of({"name": "T", "properties": {"Stra\u00dfe": "1", "a%b?c#": "2"}}),
     {"properties": {"stra\u00dfe": "1", "a_b_c_": "2"}}),
    ("property-numbers-as-written",
     lambda w: b'{"name": "T", "properties": {"V": 1.10, "E": 1e3, "B": true}}',
     {"properties": {"v": "1.10", "e": "1e3", "b": "true"}}),
    ("28-properties", lambda w: text_of({"name": "T", "properties": {f"k{i}": "v" for i in
                                                                      range(28)}}),
     {"properties": {f"k{i}": "v" for i in range(28)}}),
    ("status-empty", lambda w: text_of({"name": "T", "status": ""}), {"status": ""}),
]


@pytest.mark.parametrize("make, expect", [r[1:] for r in ACCEPTED_TEXTS],
                         ids=[r[0] for r in ACCEPTED_TEXTS])
def test_accepted_sidecar_text_registers_what_it_says(world, make, expect):
    meta = world.target_meta
    shown = meta.read_bytes()
    image = world.image(TARGET)
    write(meta, make(world))
    expect_errno(errno.ENODATA, os.getxattr, meta, "user.imagefs.error")
    after = world.image(TARGET)
    assert after.id == image.id
    if expect is None:
        assert after == image  # nothing sent: not even the update time moved
        assert meta.read_bytes() == shown
    else:
        for field, value in expect.items():
            assert getattr(after, field) == value, field
        assert json.loads(meta.read_bytes())["name"] == after.name
        write(meta, shown)  # back as it was (registered again: a new update time)
        restored = world.image(TARGET)
        assert restored.id == image.id and _same_fields(restored, image)
        assert _undated(meta.read_bytes()) == _undated(shown)
    world.settled()
    tried("sidecar texts")


# -- 3. attribute values ----------------------------------------------------------------------

def _where(world: World, where: str) -> Path:
    return {"image": world.target, "plain": world.path / PLAIN, "sidecar": world.target_meta,
            "container": world.path, "top": world.top}[where]


BIN = bytes(range(256))

#: Refused: (id, where, name, value (None: remove), errno).
REFUSED_ATTRS = [
    ("name-64k", "image", "user.image.name", b"n" * XATTR_SIZE_MAX, errno.E2BIG),
    ("name-over-64k", "image", "user.image.name", b"n" * (XATTR_SIZE_MAX + 1), errno.E2BIG),
    ("name-257", "image", "user.image.name", b"n" * 257, errno.E2BIG),
    ("name-binary", "image", "user.image.name", BIN[1:], errno.EINVAL),
    ("name-latin-1", "image", "user.image.name", "Caf\u00e9".encode("latin-1"), errno.EINVAL),
    ("name-empty", "image", "user.image.name", b"", errno.EINVAL),
    ("name-only-nul", "image", "user.image.name", b"\0", errno.EINVAL),
    ("name-inner-nul", "image", "user.image.name", b"Tar\0get", errno.EINVAL),
    ("name-blank", "image", "user.image.name", b" \t\n", errno.EINVAL),
    ("name-remove", "image", "user.image.name", None, errno.EINVAL),
    ("disk-format-unknown", "image", "user.image.disk-format", b"qcow2", errno.EINVAL),
    ("disk-format-64k", "image", "user.image.disk-format", b"d" * XATTR_SIZE_MAX,
     errno.EINVAL),
    ("disk-format-binary", "image", "user.image.disk-format", BIN, errno.EINVAL),
    ("container-format-empty", "image", "user.image.container-format", b"", errno.EINVAL),
    ("status-257", "image", "user.image.status", b"s" * 257, errno.E2BIG),
    ("status-64k", "image", "user.image.status", b"s" * XATTR_SIZE_MAX, errno.E2BIG),
    ("status-not-utf8", "image", "user.image.status", b"\xff\xfe", errno.EINVAL),
    ("is-public-word", "image", "user.image.is-public", b"maybe", errno.EINVAL),
    ("is-public-empty", "image", "user.image.is-public", b"", errno.EINVAL),
    ("is-public-binary", "image", "user.image.is-public", b"\x01", errno.EINVAL),
    ("is-public-64k", "image", "user.image.is-public", b"t" * XATTR_SIZE_MAX, errno.EINVAL),
    ("property-value-257", "image", "user.image.properties.OS", b"v" * 257, errno.E2BIG),
    ("property-value-64k", "image", "user.image.properties.OS", b"v" * XATTR_SIZE_MAX,
     errno.E2BIG),
    ("property-value-binary", "image", "user.image.properties.OS", BIN, errno.EINVAL),
    ("property-value-inner-nul", "image", "user.image.properties.OS", b"Li\0nux",
     errno.EINVAL),
    ("property-key-94", "image", "user.image.properties." + "k" * 94, b"x", errno.E2BIG),
    ("property-key-space", "image", "user.image.properties.my key", b"x", errno.EINVAL),
    ("property-key-tab", "image", "user.image.properties.a\tb", b"x", errno.EINVAL),
    ("property-key-newline", "image", "user.image.properties.a\nb", b"x", errno.EINVAL),
    ("property-key-not-utf8", "image", b"user.image.properties.\xff", b"x", errno.EINVAL),
    ("property-key-empty", "image", "user.image.properties.", b"x", errno.EOPNOTSUPP),
    ("property-remove-absent", "image", "user.image.properties.NOSUCH", None, errno.ENODATA),
    ("fixed-id", "image", "user.image.id", b"another-id", errno.EPERM),
    ("fixed-owner", "image", "user.image.owner", b"someone", errno.EPERM),
    ("fixed-size-remove", "image", "user.image.size", None, errno.EPERM),
    ("fixed-location-binary", "image", "user.image.location", BIN, errno.EPERM),
    ("unknown-image-field", "image", "user.image.nonsense", b"x", errno.EOPNOTSUPP),
    ("image-prefix-alone", "image", "user.image.", b"x", errno.EOPNOTSUPP),
    ("field-on-a-plain-file", "plain", "user.image.disk-format", b"diskdump", errno.EINVAL),
    ("property-on-a-plain-file", "plain", "user.image.properties.OS", b"x", errno.EINVAL),
    ("name-on-a-container", "container", "user.image.name", b"x", errno.EOPNOTSUPP),
    ("name-on-the-top", "top", "user.image.name", b"x", errno.EOPNOTSUPP),
    ("error-set", "sidecar", "user.imagefs.error", b"x", errno.EPERM),
    ("meta-value-257", "image", "user.pithos.meta.color", b"c" * 257, errno.E2BIG),
    ("meta-value-64k", "image", "user.pithos.meta.color", b"c" * XATTR_SIZE_MAX, errno.E2BIG),
    ("meta-value-binary", "image", "user.pithos.meta.color", BIN, errno.EINVAL),
    ("meta-value-inner-nul", "image", "user.pithos.meta.color", b"re\0d", errno.EINVAL),
    ("meta-key-129", "image", "user.pithos.meta." + "k" * 129, b"x", errno.E2BIG),
    ("meta-key-space", "image", "user.pithos.meta.a b", b"x", errno.EINVAL),
    ("meta-key-control", "image", "user.pithos.meta.a\x01b", b"x", errno.EINVAL),
    ("meta-remove-absent", "image", "user.pithos.meta.nosuch", None, errno.ENODATA),
    ("meta-prefix-alone", "image", "user.pithos.meta.", b"x", errno.EOPNOTSUPP),
    ("pithos-hash", "image", "user.pithos.hash", b"0" * 64, errno.EPERM),
    ("pithos-uuid-remove", "image", "user.pithos.uuid", None, errno.EPERM),
    ("pithos-public-word", "image", "user.pithos.public", b"maybe", errno.EINVAL),
    ("versioning-on-a-file", "image", "user.pithos.versioning", b"none", errno.EOPNOTSUPP),
    ("versioning-word", "container", "user.pithos.versioning", b"sometimes", errno.EINVAL),
    ("versioning-binary", "container", "user.pithos.versioning", BIN, errno.EINVAL),
    ("versioning-remove", "container", "user.pithos.versioning", None, errno.EINVAL),
    ("quota", "container", "user.pithos.quota", b"0", errno.EPERM),
    ("meta-on-a-container", "container", "user.pithos.meta.x", b"x", errno.EOPNOTSUPP),
    ("other-user-name", "image", "user.xdg.origin.url", b"http://x", errno.EOPNOTSUPP),
    ("user-prefix-alone", "image", "user.", b"x", errno.EOPNOTSUPP),
    ("user-name-255-bytes", "image", "user." + "x" * 250, b"x", errno.EOPNOTSUPP),
    ("name-256-bytes", "image", "user." + "x" * 251, b"x", errno.ERANGE),
    ("name-not-utf8", "image", b"user.\xff\xfe", b"x", errno.EINVAL),
    ("trusted", "image", "trusted.overlay.opaque", b"y", errno.EOPNOTSUPP),
    ("security", "image", "security.imagefs-test", b"x", errno.EOPNOTSUPP),
    # The kernel checks a capability set before any file system sees it.
    ("security-capability-malformed", "image", "security.capability", b"\x01\x00\x00\x02",
     errno.EINVAL),
    ("security-selinux", "image", "security.selinux", b"system_u:object_r:x:s0",
     errno.EOPNOTSUPP),
    ("no-namespace", "image", "image.name", b"x", errno.EOPNOTSUPP),
    ("upper-case-namespace", "image", "USER.image.name", b"x", errno.EOPNOTSUPP),
]


@pytest.mark.parametrize("where, name, value, code", [r[1:] for r in REFUSED_ATTRS],
                         ids=[r[0] for r in REFUSED_ATTRS])
def test_refused_attribute_changes_nothing(world, where, name, value, code):
    path = _where(world, where)  # the image, a plain file, the sidecar, the container, the top
    image = world.image(TARGET)
    obj = world.head(TARGET)
    plain = world.head(PLAIN)
    if value is None:
        expect_errno(code, os.removexattr, path, name)
    else:
        expect_errno(code, os.setxattr, path, name, value)
    assert world.image(TARGET) == image
    assert world.head(TARGET) == obj
    assert world.head(PLAIN) == plain and world.image(PLAIN) is None
    assert world.client.pithos.container_info(world.container).versioning == "auto"
    world.settled()
    tried("attributes")


#: Reading odd names: (id, where, name, errno).
REFUSED_READS = [
    ("unknown-image-field", "image", "user.image.nonsense", errno.ENODATA),
    ("absent-property", "image", "user.image.properties.NOSUCH", errno.ENODATA),
    ("image-field-of-a-plain-file", "plain", "user.image.name", errno.ENODATA),
    ("error-without-error", "sidecar", "user.imagefs.error", errno.ENODATA),
    # The kernel answers these namespaces itself (no request reaches the mount).
    ("security-selinux", "image", "security.selinux", errno.EOPNOTSUPP),
    ("trusted", "image", "trusted.x", errno.EOPNOTSUPP),
    ("acl", "image", "system.posix_acl_access", errno.EOPNOTSUPP),
    ("not-utf8-name", "image", b"user.\xff", errno.EINVAL),
    ("name-256-bytes", "image", "user." + "x" * 251, errno.ERANGE),
    ("versioning-of-a-file", "image", "user.pithos.versioning", errno.ENODATA),
]


@pytest.mark.parametrize("where, name, code", [r[1:] for r in REFUSED_READS],
                         ids=[r[0] for r in REFUSED_READS])
def test_reading_an_odd_attribute_name(world, where, name, code):
    expect_errno(code, os.getxattr, _where(world, where), name)
    world.settled()
    tried("attributes")


#: Accepted: (id, name, value, how the image or object reads it back, then undone).
ACCEPTED_ATTRS = [
    ("name-unicode", "user.image.name", "\u0394\u03ad\u03bb\u03c4\u03b1 \U0001f600".encode(),
     lambda img, obj: img.name == "\u0394\u03ad\u03bb\u03c4\u03b1 \U0001f600"),
    ("name-256", "user.image.name", b"n" * 256, lambda img, obj: img.name == "n" * 256),
    ("name-url-characters", "user.image.name", b"a%20b?c#d&e", lambda img, obj:
     img.name == "a%20b?c#d&e"),
    ("status-empty", "user.image.status", b"", lambda img, obj: img.status == ""),
    ("property-greek-key", "user.image.properties.\u0394\u03ad\u03bb\u03c4\u03b1", b"1",
     lambda img, obj: img.properties.get("\u03b4\u03ad\u03bb\u03c4\u03b1") == "1"),
    ("property-value-256", "user.image.properties.LONG", b"v" * 256,
     lambda img, obj: img.properties.get("long") == "v" * 256),
    ("property-value-newline", "user.image.properties.NOTE", b"a\nb",
     lambda img, obj: img.properties.get("note") == "a\nb"),
    ("meta-value-256", "user.pithos.meta.color", b"c" * 256,
     lambda img, obj: obj.meta.get("Color") == "c" * 256),
    ("meta-key-colon", "user.pithos.meta.a:b", b"1", lambda img, obj: "1" in obj.meta.values()),
    ("meta-key-percent", "user.pithos.meta.100%", b"2", lambda img, obj: "2" in obj.meta.values()),
    ("meta-key-query", "user.pithos.meta.a?b#c", b"3",
     lambda img, obj: "3" in obj.meta.values()),
    ("meta-key-greek", "user.pithos.meta.\u0394\u03ad\u03bb\u03c4\u03b1", b"4",
     lambda img, obj: "4" in obj.meta.values()),
    ("meta-key-slash", "user.pithos.meta.a/b", b"5", lambda img, obj: "5" in obj.meta.values()),
    ("meta-value-unicode", "user.pithos.meta.note", "\u65e5\u672c \U0001f600".encode(),
     lambda img, obj: "\u65e5\u672c \U0001f600" in obj.meta.values()),
]


@pytest.mark.parametrize("name, value, check", [r[1:] for r in ACCEPTED_ATTRS],
                         ids=[r[0] for r in ACCEPTED_ATTRS])
def test_accepted_attribute_reads_back_and_is_undone(world, name, value, check):
    path = world.target
    image = world.image(TARGET)
    obj = world.head(TARGET)
    try:
        old = os.getxattr(path, name)
    except OSError as exc:
        assert exc.errno == errno.ENODATA
        old = None
    os.setxattr(path, name, value)
    assert os.getxattr(path, name) == value
    assert check(world.image(TARGET), world.head(TARGET))
    if old is None:
        os.removexattr(path, name)
        expect_errno(errno.ENODATA, os.getxattr, path, name)
    else:
        os.setxattr(path, name, old)
    after = world.image(TARGET)
    assert after.id == image.id and _same_fields(after, image)
    assert world.head(TARGET).meta == obj.meta and world.head(TARGET).hash == obj.hash
    world.settled()
    tried("attributes")


#: Values that change nothing: no request, no new version, no update time moved.
NOOP_ATTRS = [
    ("name-same-with-trailing-nul", "user.image.name", b"Target\0"),
    ("property-same-value", "user.image.properties.os", b"Linux"),
    ("property-empty-on-absent", "user.image.properties.NOSUCH", b""),
    ("is-public-same-any-case", "user.image.is-public", b"FALSE"),
    ("disk-format-same-any-case", "user.image.disk-format", b"DiskDump"),
    ("meta-empty-on-absent", "user.pithos.meta.nosuch", b""),
    ("public-false-when-private", "user.pithos.public", b"false"),
]


@pytest.mark.parametrize("name, value", [r[1:] for r in NOOP_ATTRS],
                         ids=[r[0] for r in NOOP_ATTRS])
def test_attribute_already_so_changes_nothing(world, name, value):
    image = world.image(TARGET)
    obj = world.head(TARGET)
    mark = world.mount.proxy.mark()
    os.setxattr(world.target, name, value)
    changes = [r for r in world.mount.requests(mark) if r.method not in ("GET", "HEAD")]
    assert changes == []
    assert world.image(TARGET) == image
    assert world.head(TARGET) == obj
    world.settled()
    tried("attributes")


@pytest.mark.parametrize("args, message", [
    (["-n", "user.image.name", "-v", "0xfffe00"], "Invalid argument"),
    (["-n", "user.image.id", "-v", "x"], "Operation not permitted"),
    (["-n", "user.image.properties.OS", "-v", "v" * 300], "Argument list too long"),
    (["-x", "user.image.name"], "Invalid argument"),
    (["-n", "trusted.x", "-v", "y"], "Operation not supported"),
], ids=["binary-name", "fixed-field", "property-257", "remove-name", "trusted"])
def test_setfattr_reports_refusals(world, args, message):
    image = world.image(TARGET)
    done = subprocess.run(["setfattr", *args, str(world.target)], capture_output=True,
                          text=True)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert world.image(TARGET) == image
    world.settled()
    tried("attributes")


# -- nothing lost -----------------------------------------------------------------------------


def test_nothing_was_lost_and_nothing_left_behind(world, tmp_path):
    """Runs last: the control file and its image are what they were at the start."""
    assert (world.path / CONTROL).read_bytes() == world.control
    assert world.head(CONTROL).hash == world.control_hash
    copy = tmp_path / "control"
    world.client.pithos.download(world.container, CONTROL, copy)
    assert copy.read_bytes() == world.control
    assert world.image(CONTROL) == world.control_image
    assert json.loads((world.path / (CONTROL + ".meta")).read_bytes())["name"] == \
        CONTROL_META["name"]
    assert world.names() == BASE
    assert world.containers() == world.containers_before | {world.container}
    world.serving()
