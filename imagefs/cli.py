"""The ``imagefs`` command line: argument parsing and exit codes only.

Each sub-command lives in the module that owns it and is imported only when
used, so ``imagefs user list`` never loads pyfuse3 and ``imagefs mount`` never
loads the service. A known failure (``ImagefsError``) is one line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from imagefs import __version__
from imagefs.errors import ImagefsError, UsageError


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="data directory of the embedded service (default: the user's data dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagefs", description="Synnefo VM images as files: mount a cloud, or serve one.")
    parser.add_argument("--version", action="version", version=f"imagefs {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the embedded Synnefo-compatible service in the foreground")
    _data_arg(p)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="address to bind (default 127.0.0.1:8080; port 0 picks a free one)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    p.add_argument("--gc-interval", type=float, default=3600.0, metavar="SECONDS",
                   help="collect unreferenced blocks this often (0 = never; default 3600)")
    p.add_argument("--real-synnefo", action="store_true",
                   help="behave like a current Synnefo deployment where it differs "
                        "(merge on re-registration, wrapped image list): for client tests")
    p.set_defaults(handler="imagefs.service.server:serve_command")

    p = sub.add_parser("user", help="manage users of the embedded service")
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    q = usub.add_parser("add", help="create a user; prints 'UUID TOKEN'")
    q.add_argument("name")
    _data_arg(q)
    q.set_defaults(handler="imagefs.service.admin:user_add_command")
    q = usub.add_parser("list", help="print 'UUID NAME' per user")
    _data_arg(q)
    q.set_defaults(handler="imagefs.service.admin:user_list_command")

    p = sub.add_parser("gc", help="delete blocks no object version references")
    _data_arg(p)
    p.set_defaults(handler="imagefs.service.admin:gc_command")

    p = sub.add_parser("check", help="check a data directory for consistency")
    _data_arg(p)
    p.add_argument("--repair", action="store_true", help="remove leftovers of interrupted writes")
    p.set_defaults(handler="imagefs.service.admin:check_command")

    p = sub.add_parser("mount", help="mount a cloud (the embedded service by default)")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--url", help="identity URL of a Synnefo cloud")
    p.add_argument("--token", help="token for --url")
    p.add_argument("--cloud", metavar="NAME", help='use [cloud "NAME"] of ~/.kamakirc')
    _data_arg(p)
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="where open files spill to disk (default: the user's cache dir)")
    p.add_argument("--cache-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="how long the kernel and the mount trust cached metadata (default 2)")
    p.add_argument("-f", "--foreground", action="store_true", help="stay attached")
    p.add_argument("--log", metavar="FILE", help="log file (default: stderr in the foreground, "
                   "FILE in the cache dir otherwise)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="mount options (allow_other, ...), as mount(8) passes them")
    p.set_defaults(handler="imagefs.fuse.mount:mount_command")

    p = sub.add_parser("umount", help="unmount, after pending uploads finish")
    p.add_argument("mountpoint", type=Path)
    p.set_defaults(handler="imagefs.fuse.mount:umount_command")

    p = sub.add_parser("status", help="uploads in progress on a mount")
    p.add_argument("mountpoint", type=Path)
    p.set_defaults(handler="imagefs.fuse.status:status_command")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args.handler.split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ImagefsError as exc:
        print(f"imagefs {args.command}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


__all__ = ["main", "build_parser", "UsageError"]
