"""Where imagefs keeps things, and how it finds a cloud.

Data (the embedded service's database and blocks) lives in the user's data
directory, spill files of open uploads in the user's cache directory, both
as platformdirs defines them for the platform (XDG on Linux). kamaki users
keep their clouds in ``~/.kamakirc``; ``--cloud NAME`` reads the section
``[cloud "NAME"]`` with the keys ``url`` and ``token`` so they need no new
setup.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from imagefs.errors import UsageError

APP = "imagefs"


def data_dir() -> Path:
    """Default data directory of the embedded service."""
    return Path(os.environ.get("IMAGEFS_DATA") or platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    """Default directory for the mount's spill files."""
    return Path(os.environ.get("IMAGEFS_CACHE") or platformdirs.user_cache_dir(APP))


def runtime_dir() -> Path:
    """Where a running mount publishes its status socket."""
    return Path(os.environ.get("IMAGEFS_RUNTIME") or platformdirs.user_runtime_dir(APP))


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to a file that only the owner can read (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Cloud:
    """An identity URL and the token to present there."""

    url: str
    token: str
    name: str = ""


def kamakirc_path() -> Path:
    return Path(os.environ.get("KAMAKIRC") or Path.home() / ".kamakirc")


def read_kamaki_cloud(name: str, path: Path | None = None) -> Cloud:
    """The cloud ``name`` of the kamaki configuration file."""
    path = path or kamakirc_path()
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise UsageError(f"no kamaki configuration at {path} (needed for --cloud {name})") from None
    except configparser.Error as exc:
        raise UsageError(f"cannot parse {path}: {exc.message}") from None
    section = f'cloud "{name}"'
    if not parser.has_section(section):
        known = [s[7:-1] for s in parser.sections() if s.startswith('cloud "')]
        raise UsageError(f"no [cloud \"{name}\"] in {path} (clouds there: {', '.join(known) or 'none'})")
    url = parser.get(section, "url", fallback="").strip()
    token = parser.get(section, "token", fallback="").strip()
    if not url or not token:
        raise UsageError(f"[cloud \"{name}\"] in {path} needs both url and token")
    return Cloud(url=url, token=token, name=name)
