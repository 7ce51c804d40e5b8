"""``imagefs mount`` and ``imagefs umount``: from a command line to a served mount and back.

Owns the order of things around the filesystem, never the filesystem itself
(``imagefs.fs``) nor the FUSE requests (``imagefs.fuse.ops``):

1. Everything that can fail for a reason the user must fix is checked BEFORE
   anything is mounted: the mount point (exists, is a directory, is empty, is
   not a mount already), the cloud (``--url``/``--token``, ``--cloud``, or the
   embedded service), and the token (``Connection.open`` authenticates). A
   failure is one line on stderr and exit code 1, with no mount left behind.
2. In the background (the default) the process forks; the child starts a new
   session, mounts and reports "ok" or the error through a pipe, so the
   parent exits 0 only once the mount answers. Until then the child keeps the
   parent's stderr (libfuse prints its own complaints there); afterwards its
   stdio goes to the log file.
3. Shutdown, whichever way it starts (``fusermount3 -u``, ``imagefs umount``,
   SIGTERM, SIGINT, SIGHUP): uploads in flight finish first so that the
   ``close()`` a writer is waiting on succeeds, then the FUSE loop stops,
   ``Filesystem.close`` runs, and the kernel mount goes away. A second signal
   stops at once (uploads are then lost: the service keeps the previous
   version, never a half-written one).

The daemon publishes its pid in ``runtime_dir()/mounts/`` so ``imagefs
umount`` can wait for it to exit, as ``umount`` on a local disk returns only
once the data is safe.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from imagefs import config
from imagefs import log as imagefs_log
from imagefs.errors import ImagefsError, UsageError

log = logging.getLogger(__name__)

#: Root xattrs of the control channel (served by ``imagefs.fuse.ops``).
STATUS_XATTR = "user.imagefs.status"
PENDING_XATTR = "user.imagefs.pending"

#: perf-baseline §4: with 4 MiB read-ahead the kernel sends 1 MiB reads and
#: keeps several in flight; 1024 KiB gives big requests but no overlap.
READ_AHEAD_KB = 4096

#: A cloud that does not answer within this many seconds at mount time is
#: reported as unreachable; once mounted, requests retry for HTTP_DEADLINE.
AUTH_DEADLINE = 10.0
HTTP_DEADLINE = 60.0
#: Hidden knobs (docs/usage.md), for tests that inject faults: the retry deadline and the
#: per-request read timeout in seconds, so that a persistent fault is EIO in seconds.
DEADLINE_ENV = "IMAGEFS_HTTP_DEADLINE"
TIMEOUT_ENV = "IMAGEFS_HTTP_TIMEOUT"

#: ``-o`` keys that configure imagefs itself (the fstab helper passes every
#: setting this way); everything else goes to libfuse.
IMAGEFS_KEYS = {"cloud", "url", "token", "token_file", "data", "cache_dir",
                "cache_timeout", "log"}
#: ``-o`` words that mean something to mount(8), systemd or fstab, not to FUSE.
DROPPED = {"", "defaults", "auto", "noauto", "user", "users", "nouser", "nofail",
           "_netdev", "owner", "group", "foreground"}
DROPPED_PREFIXES = ("x-", "comment=")


class MountFailed(ImagefsError):
    """The mount could not be set up (reported as one line, exit code 1)."""


@dataclass
class MountOptions:
    """What ``-o a,b=c`` says: libfuse options, and imagefs settings."""

    fuse: set[str] = field(default_factory=set)
    settings: dict[str, str] = field(default_factory=dict)


def parse_options(values: list[str]) -> MountOptions:
    """Split ``-o`` values (each possibly comma-separated) into FUSE options and settings."""
    opts = MountOptions()
    for value in values:
        for word in value.split(","):
            word = word.strip()
            key, _, setting = word.partition("=")
            if word in DROPPED or word.startswith(DROPPED_PREFIXES):
                continue
            if key in IMAGEFS_KEYS:
                if not setting:
                    raise UsageError(f"mount option {key}= needs a value")
                opts.settings[key] = setting
            elif key in ("fsname", "subtype"):
                raise UsageError(f"mount option {key}= is set by imagefs itself")
            else:
                opts.fuse.add(word)
    return opts


def check_mountpoint(path: Path) -> Path:
    """The absolute mount point, or MountFailed saying what is wrong with it.

    Symbolic links are resolved: the kernel lists the mount under its real
    path, and that is where read-ahead and ``imagefs umount`` look for it.
    """
    path = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountFailed(f"mount point {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountFailed(f"mount point {path} is a dead mount "
                              f"(run: fusermount3 -u {path})") from None
        raise MountFailed(f"mount point {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountFailed(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        try:
            os.statvfs(path)  # never cached by the kernel: reaches a dead FUSE process
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise MountFailed(f"mount point {path} is a dead mount "
                                  f"(run: fusermount3 -u {path})") from None
        raise MountFailed(f"mount point {path} is already a mount point")
    try:
        with os.scandir(path) as entries:
            if next(entries, None) is not None:
                raise MountFailed(f"mount point {path} is not empty")
    except PermissionError:
        raise MountFailed(f"mount point {path}: permission denied") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MountFailed(f"mount point {path}: permission denied")
    return path


def resolve_cloud(args: argparse.Namespace, settings: dict[str, str]) -> tuple[config.Cloud, bool]:
    """The cloud to mount and whether it is the embedded service.

    Order: ``--url``/``--token`` (or ``url=``/``token=``/``token_file=``), then
    ``--cloud``/``cloud=`` from the kamaki configuration, then the embedded
    service in the data directory (started if it does not run yet).
    """
    url = args.url or settings.get("url")
    token = args.token or settings.get("token")
    if not token and settings.get("token_file"):
        try:
            token = Path(settings["token_file"]).read_text(encoding="utf-8").split()[0]
        except (OSError, IndexError) as exc:
            raise UsageError(f"cannot read token_file={settings['token_file']}: {exc}") from None
    cloud_name = args.cloud or settings.get("cloud")
    if url or token:
        if cloud_name:
            raise UsageError("give either --url/--token or --cloud, not both")
        if not (url and token):
            raise UsageError("--url and --token go together")
        return config.Cloud(url=url, token=token), False
    if cloud_name:
        return config.read_kamaki_cloud(cloud_name), False
    from imagefs.service import launcher
    return launcher.ensure_running(_data_dir(args, settings)), True


def _data_dir(args: argparse.Namespace, settings: dict[str, str]) -> Path:
    data = args.data or settings.get("data")
    return Path(os.path.abspath(data)) if data else config.data_dir()


def _fsname(cloud: config.Cloud, embedded: bool) -> str:
    if embedded:
        return "imagefs"
    if cloud.name:
        return f"imagefs:{cloud.name}"
    return f"imagefs:{urllib.parse.urlsplit(cloud.url).netloc or cloud.url}"


@dataclass
class _Plan:
    """Everything the mount process needs, resolved in the parent."""

    mountpoint: Path
    cloud: config.Cloud
    fsname: str
    fuse_options: set[str]
    cache_dir: Path
    cache_timeout: float
    logfile: str | None
    log_level: int


def mount_command(args: argparse.Namespace) -> int:
    opts = parse_options(args.options)
    mountpoint = check_mountpoint(args.mountpoint)
    level = logging.DEBUG if args.verbose else logging.INFO
    logfile_arg = args.log or opts.settings.get("log")
    # Until the mount is set up, a failure is the one line cli.main prints: the
    # client's retry warnings would only repeat it (-v shows them).
    imagefs_log.setup(level if args.verbose else logging.ERROR)

    cloud, embedded = resolve_cloud(args, opts.settings)
    imagefs_log.register_secret(cloud.token)
    if embedded:
        _announce(cloud, _data_dir(args, opts.settings))

    from imagefs.client.connection import Connection
    conn = Connection.open(cloud.url, cloud.token, deadline=AUTH_DEADLINE)
    # Only the first contact fails fast.
    conn.http.deadline = _env_seconds(DEADLINE_ENV, HTTP_DEADLINE)
    conn.http.timeout = (conn.http.timeout[0], _env_seconds(TIMEOUT_ENV, conn.http.timeout[1]))

    cache_dir = Path(os.path.abspath(args.cache_dir or opts.settings.get("cache_dir")
                                     or config.cache_dir()))
    config.make_private_dir(cache_dir)
    try:
        cache_timeout = float(opts.settings.get("cache_timeout", args.cache_timeout))
    except ValueError:
        raise UsageError(
            f"cache_timeout={opts.settings['cache_timeout']} is not a number") from None
    if cache_timeout < 0:
        raise UsageError("the cache timeout cannot be negative")
    if logfile_arg:
        logfile: str | None = os.path.abspath(logfile_arg)
    else:
        logfile = None if args.foreground else str(cache_dir / "mount.log")
    plan = _Plan(mountpoint=mountpoint, cloud=cloud, fsname=_fsname(cloud, embedded),
                 fuse_options=opts.fuse, cache_dir=cache_dir, cache_timeout=cache_timeout,
                 logfile=logfile, log_level=level)
    if args.foreground:
        imagefs_log.setup(level, logfile)
        return _serve(conn, plan, ready=None)
    return _daemonize(conn, plan)


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"{name}={value} is not a number of seconds") from None
    if not seconds > 0:
        raise UsageError(f"{name} must be positive")
    return seconds


def _announce(cloud: config.Cloud, data_dir: Path) -> None:
    """Tell the user where the embedded service is, so kamaki can share its data."""
    print(f"embedded service: {cloud.url} (data in {data_dir})")
    print(f"token: {cloud.token}")
    print(f"kamaki: kamaki config set cloud.imagefs.url {cloud.url}; "
          f"kamaki config set cloud.imagefs.token {cloud.token}")
    sys.stdout.flush()


# --- background ----------------------------------------------------------------------


def _daemonize(conn, plan: _Plan) -> int:
    """Fork; the parent returns 0 once the child reports the mount is up."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read().decode("utf-8", "replace").strip()
        if message == "ok":
            return 0
        os.waitpid(pid, 0)
        raise MountFailed(message or f"the mount process died before mounting (see {plan.logfile})")

    # The child: never return into the caller's stack.
    os.close(read_fd)
    reporter = _Reporter(write_fd)
    code = 1
    try:
        os.setsid()
        os.chdir("/")
        code = _serve(conn, plan, ready=reporter)
    except BaseException as exc:  # noqa: BLE001 - the child must always end in _exit
        reporter.fail(str(exc) or type(exc).__name__)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Reporter:
    """The child's end of the readiness pipe, and its switch to the log file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, plan: _Plan) -> None:
        """The mount is up: tell the parent, then leave the terminal."""
        if self._send("ok"):
            _detach_stdio(plan.logfile)

    def fail(self, message: str) -> None:
        self._send(message)

    def _send(self, message: str) -> bool:
        if self.fd < 0:
            return False
        fd, self.fd = self.fd, -1
        try:
            os.write(fd, message.encode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            os.close(fd)
        return True


def _detach_stdio(logfile: str | None) -> None:
    """Point fds 0-2 away from the terminal: /dev/null in, the log file out."""
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if logfile else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)


# --- the mount process ---------------------------------------------------------------


def _serve(conn, plan: _Plan, ready) -> int:
    """Mount, serve until unmounted or signalled, shut down in order. Returns the exit code."""
    import pyfuse3
    import trio

    from imagefs.fs.blocking import one_malloc_arena
    from imagefs.fs.filesystem import Filesystem
    from imagefs.fuse.ops import Operations

    if ready is not None:
        imagefs_log.setup(plan.log_level, plan.logfile)
    one_malloc_arena()  # before any thread starts: bounded memory (see there)
    fs = Filesystem(conn, cache_dir=plan.cache_dir, cache_timeout=plan.cache_timeout)
    ops = Operations(fs)
    options = set(ops.fuse_options(plan.fsname)) | plan.fuse_options
    log.info("mounting %s as %s on %s (options %s)", plan.cloud.url, conn.account,
             plan.mountpoint, ",".join(sorted(options)))
    try:
        pyfuse3.init(ops, str(plan.mountpoint), options)
    except Exception as exc:
        log.error("cannot mount %s: %s", plan.mountpoint, exc)
        raise MountFailed(f"cannot mount {plan.mountpoint}: {exc}") from None
    pidfile = _pidfile(plan.mountpoint)
    try:
        _write_pidfile(pidfile)
        trio.run(_main, fs, plan, ready)
    except BaseException:
        log.exception("mount process failed")
        raise
    finally:
        try:
            pyfuse3.close(unmount=True)
        finally:
            _remove_pidfile(pidfile)
    log.info("unmounted %s", plan.mountpoint)
    return 0


async def _main(fs, plan: _Plan, ready) -> None:
    import pyfuse3
    import trio

    await fs.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, fs)
            nursery.start_soon(_when_answering, plan, ready)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            log.info("closing the filesystem (%d uploads pending)", fs.pending_uploads())
            await fs.close()


async def _when_answering(plan: _Plan, ready) -> None:
    """Once the kernel's INIT is answered: tune read-ahead, then report readiness.

    A stat() of the mount point from another thread returns only after this
    loop has answered INIT and the root's getattr, i.e. when the mount
    really serves. Read-ahead must be raised after INIT too: the kernel
    caps it at the INIT reply's max_readahead, which libfuse derives from the
    default 128 KiB.
    """
    import pyfuse3
    import trio

    try:
        await trio.to_thread.run_sync(os.stat, plan.mountpoint, abandon_on_cancel=True)
    except OSError as exc:
        log.error("the new mount does not answer: %s", exc)
        if ready is not None:
            ready.fail(f"the new mount on {plan.mountpoint} does not answer: {exc.strerror}")
        pyfuse3.terminate()
        return
    _set_read_ahead(plan.mountpoint)
    log.info("serving %s", plan.mountpoint)
    if ready is not None:
        ready(plan)


async def _watch_signals(fs) -> None:
    """First signal: let uploads in flight finish, then stop. Second: stop now."""
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting once %d pending uploads are done",
                     signal.Signals(signum).name, fs.pending_uploads())
            break
        else:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain_uploads, fs, nursery.cancel_scope)
            async for signum in signals:
                log.warning("%s again: unmounting now, %d uploads abandoned",
                            signal.Signals(signum).name, fs.pending_uploads())
                nursery.cancel_scope.cancel()
        pyfuse3.terminate()


async def _drain_uploads(fs, scope) -> None:
    import trio

    last_report = time.monotonic()
    while fs.pending_uploads():
        if time.monotonic() - last_report > 10:
            log.info("waiting for %d uploads", fs.pending_uploads())
            last_report = time.monotonic()
        await trio.sleep(0.1)
    scope.cancel()


def _set_read_ahead(mountpoint: Path) -> None:
    """Raise the mount's bdi read_ahead_kb (root only; any failure is ignored)."""
    device = _mount_device(mountpoint)
    if not device:
        return
    path = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KB))
        log.debug("read_ahead_kb of %s set to %d", device, READ_AHEAD_KB)
    except OSError as exc:
        log.debug("cannot set %s: %s", path, exc)


def _unescape_mountinfo(field_: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def mount_entry(mountpoint: Path) -> tuple[str, str] | None:
    """(major:minor, fstype) of the last mount on ``mountpoint``, or None."""
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 7 or _unescape_mountinfo(fields[4]) != str(mountpoint):
                    continue
                sep = fields.index("-", 6)
                found = (fields[2], fields[sep + 1])
    except (OSError, ValueError):
        return None
    return found


def _mount_device(mountpoint: Path) -> str | None:
    entry = mount_entry(mountpoint)
    return entry[0] if entry else None


# --- pid files -----------------------------------------------------------------------


def _pidfile(mountpoint: Path) -> Path:
    name = urllib.parse.quote(str(mountpoint), safe="") + ".pid"
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (root over ssh, cron) platformdirs warns on every
        # call and falls back to /tmp/runtime-UID, which serves as well.
        warnings.simplefilter("ignore")
        runtime = config.runtime_dir()
    return runtime / "mounts" / name


def _write_pidfile(path: Path) -> None:
    try:
        config.make_private_dir(path.parent)
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("cannot write pid file %s: %s (imagefs umount will not wait)", path, exc)


def _remove_pidfile(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def daemon_pid(mountpoint: Path) -> int | None:
    """Pid of the process serving ``mountpoint``, if it published one and still runs."""
    try:
        pid = int(_pidfile(mountpoint).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


# --- umount --------------------------------------------------------------------------


def check_imagefs_mount(mountpoint: Path) -> Path:
    """The real path of an imagefs mount, or MountFailed.

    Only the parent directory is resolved: looking at the mount itself would
    hang if its process is stuck.
    """
    path = Path(os.path.abspath(mountpoint))
    path = Path(os.path.realpath(path.parent)) / path.name
    entry = mount_entry(path)
    if entry is None:
        raise MountFailed(f"{path} is not mounted")
    if entry[1] != "fuse.imagefs":
        raise MountFailed(f"{path} is not an imagefs mount (it is {entry[1]})")
    return path


def pending_uploads(mountpoint: Path) -> int:
    return int(os.getxattr(mountpoint, PENDING_XATTR).decode() or 0)


def umount_command(args: argparse.Namespace) -> int:
    """Wait for pending uploads, unmount, wait for the daemon to exit."""
    mountpoint = check_imagefs_mount(args.mountpoint)
    pid = daemon_pid(mountpoint)
    started = last = time.monotonic()
    while True:
        try:
            pending = pending_uploads(mountpoint)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:  # its process is gone: nothing can be pending
                print(f"the process serving {mountpoint} is gone; unmounting", file=sys.stderr)
                pid = None
                break
            raise MountFailed(
                f"cannot ask {mountpoint} for pending uploads: {exc.strerror}") from None
        if not pending:
            break
        if time.monotonic() - last >= 5:
            print(f"waiting for {pending} upload(s) to finish "
                  f"({time.monotonic() - started:.0f} s; see imagefs status {mountpoint})",
                  file=sys.stderr)
            last = time.monotonic()
        time.sleep(0.2)
    done = subprocess.run(["fusermount3", "-u", str(mountpoint)],
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise MountFailed(f"cannot unmount {mountpoint}: {reason}")
    if pid is not None:
        _wait_exit(pid, mountpoint)
    return 0


def _wait_exit(pid: int, mountpoint: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.05)
    raise MountFailed(f"{mountpoint} is unmounted but its process {pid} is still running")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
