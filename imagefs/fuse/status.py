"""``imagefs status MOUNTPOINT``: what a mount is uploading right now.

Reads the JSON the daemon serves as the root xattr ``user.imagefs.status``
(``Filesystem.status()``), so it needs no socket and works for any user who
can read the mount point. Owns only the rendering: one line per upload with
bytes hashed, sent and total and the rate, then the error count.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from imagefs.fuse.mount import STATUS_XATTR, MountFailed, check_imagefs_mount


def read_status(mountpoint: Path) -> dict:
    """The daemon's status document."""
    try:
        raw = os.getxattr(mountpoint, STATUS_XATTR)
    except OSError as exc:
        raise MountFailed(f"cannot read the status of {mountpoint}: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise MountFailed(f"{mountpoint} answered a status that is not JSON") from None


def human(n: float) -> str:
    """Bytes in binary units, three significant digits: 1.50 GiB, 512 B."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def render(status: dict, now: float | None = None) -> list[str]:
    """The lines ``imagefs status`` prints for ``status``."""
    now = time.time() if now is None else now
    uploads = status.get("uploads") or []
    lines = []
    if not uploads:
        lines.append("no uploads in progress")
    else:
        lines.append(f"{'HASHED':>10} {'SENT':>10} {'TOTAL':>10} {'RATE':>12} {'AGE':>6}  PATH")
        for up in sorted(uploads, key=lambda u: u.get("started") or 0):
            total = up.get("total")
            started = up.get("started")
            age = f"{max(0, now - started):.0f}s" if started else "-"
            lines.append(
                f"{human(up.get('hashed') or 0):>10} {human(up.get('sent') or 0):>10} "
                f"{human(total) if total is not None else '?':>10} "
                f"{human(up.get('rate') or 0) + '/s':>12} {age:>6}  {up.get('path', '?')}")
    errors = status.get("errors")
    if errors:
        lines.append(f"{errors} failed operation(s) since mounting; see the mount's log")
    return lines


def status_command(args: argparse.Namespace) -> int:
    mountpoint = check_imagefs_mount(args.mountpoint)
    for line in render(read_status(mountpoint)):
        print(line)
    return 0
