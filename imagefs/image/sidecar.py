"""Names with a meaning: sidecars, editors' temporaries, version entries, reserved names.

- ``X.meta`` is the sidecar of ``X`` (kamaki's metafile name), for any
  non-empty ``X``, except emacs' lock ``.#X.meta``, which names an editor
  session, not a registration.
- Editors and tools write beside the file they save (vim's ``.X.swp`` and
  ``4913`` probe, ``X~`` backups, emacs' ``#X#``, ``sed -i``'s ``sedXXXXXX``,
  rsync's ``.X.XXXXXX``, ...). ``is_temporary`` recognises them so the
  filesystem can decide, for instance, that a temporary renamed onto
  ``X.meta`` is a save of the sidecar. Only such decisions use it: a
  temporary is still stored like any file if it lives long enough, so a
  false positive costs nothing.
- ``.versions/NAME@VERSION`` names an older version of ``NAME``; ``NAME`` may
  itself contain ``@``, so the split is at the last ``@`` followed by digits
  only.
- ``.images`` (top level) and ``.versions`` (every directory of a container)
  are the mount's own directories; they are reserved everywhere, so the
  mount never creates an object or container by those names.
- A sidecar copied before its image (``cp -r`` writes files in any order)
  waits in ``PendingSidecars`` until the image's upload completes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator

from imagefs.image.metafile import Registration

log = logging.getLogger(__name__)

SUFFIX = ".meta"
IMAGES_DIR = ".images"
VERSIONS_DIR = ".versions"
RESERVED_NAMES = frozenset({IMAGES_DIR, VERSIONS_DIR})


def _base(name: str) -> str:
    return name.rpartition("/")[2]


# -- sidecars ---------------------------------------------------------------------------------


def is_sidecar(name: str) -> bool:
    """``X.meta`` with ``X`` non-empty (a basename or a path); not emacs' ``.#X.meta`` lock."""
    base = _base(name)
    return base.endswith(SUFFIX) and len(base) > len(SUFFIX) and not base.startswith(".#")


def image_of(sidecar_name: str) -> str:
    """``X`` for ``X.meta`` (same directory); ValueError if it is not a sidecar name."""
    if not is_sidecar(sidecar_name):
        raise ValueError(f"not a sidecar name: {sidecar_name!r}")
    return sidecar_name[: -len(SUFFIX)]


def sidecar_of(name: str) -> str:
    """``X.meta`` for ``X``."""
    return name + SUFFIX


def is_reserved(name: str) -> bool:
    """``.images`` or ``.versions``: the mount's own directories, never stored."""
    return _base(name) in RESERVED_NAMES


# -- catalog entries (.images/ID.meta) --------------------------------------------------------

_IMAGE_ID = re.compile(r"[A-Za-z0-9_-]+")


def catalog_entry(image_id: str) -> str:
    """The name of an image's entry in ``.images/``."""
    return image_id + SUFFIX


def image_id_of(entry: str) -> str | None:
    """The image id an entry of ``.images/`` names, or None (the service's id syntax)."""
    if not entry.endswith(SUFFIX):
        return None
    image_id = entry[: -len(SUFFIX)]
    return image_id if _IMAGE_ID.fullmatch(image_id) else None


# -- version entries (.versions/NAME@VERSION) -------------------------------------------------

_VERSION_ENTRY = re.compile(r"(.+)@(0|[1-9][0-9]*)")


def version_entry(name: str, version: int) -> str:
    """``NAME@VERSION``, as ``.versions/`` lists it."""
    return f"{name}@{int(version)}"


def parse_version_entry(entry: str) -> tuple[str, int] | None:
    """``(NAME, VERSION)`` for ``NAME@VERSION``, or None.

    Splits at the last ``@`` followed by ASCII digits only: ``a@b@12`` is
    version 12 of ``a@b``. Leading zeros are refused (``x@007`` is not an
    entry), so every version has exactly one name.
    """
    m = _VERSION_ENTRY.fullmatch(entry)
    if m is None:
        return None
    return m.group(1), int(m.group(2))


# -- temporaries of editors and tools ---------------------------------------------------------

#: Matched against the basename; the first match names the tool (for log lines).
_TEMPORARIES = tuple((tool, re.compile(pattern)) for tool, pattern in (
    # .X.swp, then .swo, .swn ... .swa when taken; .X.swx probes whether the directory is
    # writable. A hidden X keeps its single dot: .bashrc -> .bashrc.swp.
    ("vim swap", r"\..*\.sw[a-px]"),
    ("backup", r".+~"),  # vim, emacs (also X.~1~), nano, gedit backups
    ("emacs auto-save", r"#.+#"),
    ("emacs lock", r"\.#.+"),
    ("nano emergency save", r".+\.save(\.[0-9]+)?"),
    ("sed -i", r"sed[A-Za-z0-9]{6}"),
    ("LibreOffice lock", r"\.~lock\..+#"),
    ("gedit", r"\.goutputstream-[A-Za-z0-9]{6}"),
    ("kate swap", r"\..+\.kate-swp"),
    ("Office lock", r"~\$.+"),
    ("rsync", r"\..+\.[A-Za-z0-9]{6}"),  # .X.Ab3dE9 (mkstemp's XXXXXX)
    ("Python tempfile", r"tmp[a-z0-9_]{8}(\..*)?"),
    ("temporary", r".+\.te?mp"),
))


def _vim_probe(base: str) -> bool:
    """vim's ``4913`` check of whether it may create files (4913 + 123·n when taken)."""
    if not base.isascii() or not base.isdigit() or len(base) > 6:
        return False
    n = int(base)
    return n >= 4913 and (n - 4913) % 123 == 0


def temporary_kind(name: str) -> str | None:
    """Which tool a name of this shape belongs to, or None for an ordinary name."""
    base = _base(name)
    if _vim_probe(base):
        return "vim probe"
    for tool, pattern in _TEMPORARIES:
        if pattern.fullmatch(base):
            return tool
    return None


def is_temporary(name: str) -> bool:
    """True for editors' and tools' temporary, swap, lock and backup names."""
    return temporary_kind(name) is not None


# -- sidecars waiting for their image ---------------------------------------------------------


class PendingSidecars:
    """Registrations whose image object does not exist yet, by (container, image path).

    ``cp -r images/ mnt/pithos/`` may create ``a.meta`` before ``a``: the
    sidecar's close() succeeds, the registration waits here, and the
    upload of ``a`` pops it and registers. A later sidecar for the same image
    replaces the earlier one, as a later write would. At most ``limit``
    entries are kept; beyond that the oldest is dropped with a warning (its
    text stays stored as ``a.meta``, so rewriting the sidecar registers).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._entries: dict[tuple[str, str], Registration] = {}

    def add(self, container: str, image_name: str, registration: Registration) -> None:
        key = (container, image_name)
        self._entries.pop(key, None)  # re-insert: newest last
        self._entries[key] = registration
        while len(self._entries) > self._limit:
            (c, n), _ = next(iter(self._entries.items()))
            del self._entries[(c, n)]
            log.warning("too many sidecars waiting for their image; dropped %s/%s", c, n)

    def pop(self, container: str, image_name: str) -> Registration | None:
        """The waiting registration of this image, removed; None if there is none."""
        return self._entries.pop((container, image_name), None)

    def get(self, container: str, image_name: str) -> Registration | None:
        return self._entries.get((container, image_name))

    def discard(self, container: str, image_name: str) -> None:
        """Forget a waiting registration (its sidecar was deleted)."""
        self._entries.pop((container, image_name), None)

    def rename(self, container: str, image_name: str, new_container: str,
               new_image_name: str) -> None:
        """The sidecar moved with ``mv``: it now waits for the image of its new name.

        A registration named after its path (the file had no ``name``) takes
        the new path, as parsing the moved file would give.
        """
        registration = self._entries.pop((container, image_name), None)
        if registration is not None:
            if registration.named_by_path:
                registration = dataclasses.replace(registration, name=new_image_name)
            self.add(new_container, new_image_name, registration)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._entries))
