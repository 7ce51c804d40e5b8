"""``mount.imagefs``: the helper mount(8) runs for an fstab line.

mount(8) calls a helper as ``HELPER SOURCE MOUNTPOINT [-s] [-f] [-n] [-v]
[-o OPTS] [-t TYPE]``. Two fstab spellings reach this one (see
docs/usage.md):

- type ``fuse`` with source ``/PATH/TO/mount.imagefs#SOURCE``: mount(8) runs
  ``mount.fuse3``, which runs ``/PATH/TO/mount.imagefs SOURCE MOUNTPOINT -o
  OPTS,dev,suid`` through ``/bin/sh``. mount(8) drops PATH from the helper's
  environment, so the program needs its full path (or a link in /usr/bin);
- type ``fuse.imagefs`` with source ``SOURCE``, once ``/sbin/mount.fuse.imagefs``
  links here: mount(8) prefers that helper to ``mount.fuse3`` (which would run
  a program called ``imagefs`` with mount(8)'s arguments, not ours).

SOURCE ``imagefs`` (or ``none``) mounts the embedded service, a ``http(s)://``
URL is an identity URL (token from ``token_file=``), anything else names a
kamaki cloud. The options are those of ``imagefs mount -o`` (``data=``,
``cloud=``, ``url=``, ``token_file=``, ``cache_dir=``, ``cache_timeout=``,
``log=``, plus FUSE options such as ``allow_other``); fstab-only words
(``_netdev``, ``x-systemd.*``, ``noauto``, ...) are dropped there.
"""

from __future__ import annotations

import sys

from imagefs import cli

USAGE = "usage: mount.imagefs SOURCE MOUNTPOINT [-s] [-f] [-n] [-v] [-o OPTIONS] [-t TYPE]"
EMBEDDED_SOURCES = {"", "imagefs", "none", "embedded"}


def build_argv(argv: list[str]) -> list[str] | None:
    """The ``imagefs`` command line for mount(8)'s arguments; None for a fake mount (-f)."""
    positional: list[str] = []
    options: list[str] = []
    verbose = fake = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-o", "-t"):
            if i + 1 == len(argv):
                raise cli.UsageError(f"{arg} needs a value\n{USAGE}")
            if arg == "-o":
                options.extend(o for o in argv[i + 1].split(",") if o)
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            options.extend(o for o in arg[2:].split(",") if o)
        elif arg == "-v":
            verbose = True
        elif arg == "-f":
            fake = True
        elif arg in ("-s", "-n"):
            pass  # sloppy, no-mtab: nothing to do for a FUSE mount
        elif arg.startswith("-") and arg != "-":
            raise cli.UsageError(f"unknown option {arg}\n{USAGE}")
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        raise cli.UsageError(USAGE)
    source, mountpoint = positional
    if fake:
        return None
    keys = {o.partition("=")[0] for o in options}
    foreground = "foreground" in options
    options = [o for o in options if o != "foreground"]
    if source.startswith(("http://", "https://")):
        if "url" not in keys:
            options.append(f"url={source}")
    elif source not in EMBEDDED_SOURCES and not keys & {"url", "cloud"}:
        options.append(f"cloud={source}")
    command = ["mount", mountpoint]
    if options:
        command += ["-o", ",".join(options)]
    if foreground:
        command.append("--foreground")
    if verbose:
        command.insert(0, "-v")
    return command


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        command = build_argv(argv)
    except cli.UsageError as exc:
        print(f"mount.imagefs: {exc}", file=sys.stderr)
        return 2
    if command is None:
        return 0
    return cli.main(command)


if __name__ == "__main__":
    raise SystemExit(main())
