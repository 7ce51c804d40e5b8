"""``imagefs user add|list``, ``imagefs gc`` and ``imagefs check``.

They open the data directory directly, whether or not ``imagefs serve`` is
running on it: SQLite's locks serialise them with the service's workers, and
a new user's token works at once because the service caches nothing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imagefs import config

log = logging.getLogger(__name__)


def _store(args: argparse.Namespace):
    from imagefs.service.store import Store

    data = getattr(args, "data", None)
    return Store.open(Path(data) if data is not None else config.data_dir())


def user_add_command(args: argparse.Namespace) -> int:
    """Create a user; prints "UUID TOKEN"."""
    user = _store(args).add_user(args.name)
    print(f"{user.uuid} {user.token}")
    return 0


def user_list_command(args: argparse.Namespace) -> int:
    """Print "UUID NAME" per user."""
    for user in _store(args).list_users():
        print(f"{user.uuid} {user.name}")
    return 0


def gc_command(args: argparse.Namespace) -> int:
    """Delete blocks no version references (and older than an hour)."""
    removed, freed = _store(args).gc()
    print(f"removed {removed} unreferenced block(s), {freed} bytes")
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Print each problem; exit 1 if any remains (after --repair)."""
    problems = _store(args).check(repair=bool(getattr(args, "repair", False)),
                                  on_repair=lambda text: print(f"repaired: {text}"))
    for text in problems:
        print(text)
    if not problems:
        print("no problems found")
    return 1 if problems else 0
