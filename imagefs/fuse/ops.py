"""The pyfuse3 glue: decode the request, call ``Filesystem``, encode the reply.

Each handler is a few lines; all semantics live in ``imagefs.fs``. One
boundary (``_boundary``) turns every failure into ``FUSEError``, because
pyfuse3 lets any other exception end ``pyfuse3.main()`` with the kernel
request unanswered, i.e. the mount dies:

- ``FUSEError`` passes through;
- an ``ImagefsError`` becomes its errno (``errors.to_errno``, the one table),
  logged at the level its class says (ENOENT at DEBUG: shells probe names
  constantly);
- an ``OSError`` keeps its errno (a full cache disk is ENOSPC);
- anything else is a bug: logged with its traceback, answered EIO.

Names are UTF-8 (else EINVAL); a name to create has at most 255 bytes
(NAME_MAX, else ENAMETOOLONG), as on a local disk.

``forget``, ``release`` and ``releasedir`` never raise. Attributes carry the
mount's cache timeout as entry and attribute timeouts (pyfuse3 defaults to
300 s), ``st_blksize`` of 4 MiB (``cp`` sizes its buffer from it: 1 MiB
writes instead of 128 KiB), files 0644 and directories 0755, owned by the
mounting user. Files open with ``keep_cache=False``: the page cache must not
outlive a change made by another client; sidecars and ``.images/`` entries
open with ``direct_io``, since their text follows the registration.

Control channel: on the root, ``getxattr user.imagefs.status`` is the JSON
of ``Filesystem.status()`` and ``user.imagefs.pending`` the number of
uploads in flight (``imagefs status`` and ``imagefs umount`` read them).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat

import pyfuse3

from imagefs import errors
from imagefs.fs.filesystem import RENAME_EXCHANGE, RENAME_NOREPLACE, Filesystem, StatFs
from imagefs.fs.tree import Attr

log = logging.getLogger(__name__)

BLKSIZE = 4 * 1024 * 1024
FILE_MODE = stat.S_IFREG | 0o644
DIR_MODE = stat.S_IFDIR | 0o755


def _name(raw: bytes) -> str:
    """A file name as the store keeps it: UTF-8 text (no normalisation)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidInput(f"name {raw!r} is not UTF-8; the store keeps UTF-8 names"
                                  ) from None


#: The longest name a new file, directory or container may have, in bytes: NAME_MAX, as
#: statfs says. The store would take longer ones, but no local disk could hold a copy.
NAME_MAX = 255


def _new_name(raw: bytes) -> str:
    """A name to create: at most NAME_MAX bytes of UTF-8. Longer names made by other
    clients stay reachable (lookups use ``_name``)."""
    if len(raw) > NAME_MAX:
        raise errors.NameTooLong(f"a name of {len(raw)} bytes; at most {NAME_MAX} (NAME_MAX)")
    return _name(raw)


def _invalidate_inode(ino: int) -> None:
    try:
        pyfuse3.invalidate_inode(ino, attr_only=False)
    except Exception as exc:  # forgotten by the kernel meanwhile, or not mounted (tests)
        log.debug("invalidate_inode(%d): %s", ino, exc)


def _boundary(fn):
    """Every failure of a handler becomes a FUSEError with the right errno."""

    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except errors.ImagefsError as exc:
            log.log(errors.log_level(exc), "%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errors.to_errno(exc)) from None
        except OSError as exc:
            level = logging.DEBUG if exc.errno in (errno.EBADF, errno.ENOENT) else logging.WARNING
            log.log(level, "%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errors.to_errno(exc)) from None
        except Exception:
            log.exception("%s%r failed", fn.__name__, args[:3])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self.fs = fs
        self.uid = os.getuid()
        self.gid = os.getgid()
        fs.invalidate_entry = self._invalidate_entry
        fs.drop_pages = self._drop_pages

    @staticmethod
    def fuse_options(fsname: str) -> set[str]:
        """Options for pyfuse3.init: no default_permissions (one user's mount)."""
        options = set(pyfuse3.default_options) - {"default_permissions"}
        options |= {f"fsname={fsname}", "subtype=imagefs"}
        return options

    def _invalidate_entry(self, parent_ino: int, name: str) -> None:
        try:
            pyfuse3.invalidate_entry_async(parent_ino, name.encode("utf-8"),
                                           ignore_enoent=True)
        except Exception as exc:  # not mounted (tests), or the kernel said no
            log.debug("invalidate_entry(%d, %r): %s", parent_ino, name, exc)

    def _drop_pages(self, ino: int) -> None:
        """Invalidate an inode's cached pages, in a thread nobody waits for: the kernel
        may wait there for reads of a new opener, which this trio thread answers."""
        self.fs.workers.detach(_invalidate_inode, ino)

    # -- conversion -----------------------------------------------------------------

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.ino
        entry.generation = 0
        timeout = self.fs.cache_timeout
        entry.entry_timeout = timeout
        entry.attr_timeout = timeout if attr.attr_timeout is None else attr.attr_timeout
        if attr.is_dir:
            entry.st_mode = DIR_MODE
            entry.st_nlink = 2
        else:
            entry.st_mode = FILE_MODE
            entry.st_nlink = 1
        entry.st_uid = self.uid
        entry.st_gid = self.gid
        entry.st_rdev = 0
        entry.st_size = attr.size
        entry.st_blksize = BLKSIZE
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = attr.mtime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.mtime_ns
        return entry

    # -- names ----------------------------------------------------------------------

    @_boundary
    async def lookup(self, parent_inode, name, ctx=None):
        return self._entry(await self.fs.lookup(parent_inode, _name(name)))

    async def forget(self, inode_list):
        try:
            self.fs.forget(list(inode_list))
        except Exception:
            log.exception("forget failed")

    @_boundary
    async def getattr(self, inode, ctx=None):
        return self._entry(await self.fs.getattr(inode))

    @_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        size = attr.st_size if fields.update_size else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        return self._entry(await self.fs.setattr(inode, size=size, mtime_ns=mtime, fh=fh))

    @_boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._entry(await self.fs.mkdir(parent_inode, _new_name(name)))

    @_boundary
    async def rmdir(self, parent_inode, name, ctx):
        await self.fs.rmdir(parent_inode, _name(name))

    @_boundary
    async def unlink(self, parent_inode, name, ctx):
        await self.fs.unlink(parent_inode, _name(name))

    @_boundary
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        fs_flags = 0
        if flags & pyfuse3.RENAME_NOREPLACE:
            fs_flags |= RENAME_NOREPLACE
        if flags & pyfuse3.RENAME_EXCHANGE:
            fs_flags |= RENAME_EXCHANGE
        await self.fs.rename(parent_inode_old, _name(name_old), parent_inode_new,
                             _new_name(name_new), fs_flags)

    @_boundary
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return self._entry(await self.fs.mknod(parent_inode, _new_name(name), mode))

    @_boundary
    async def symlink(self, parent_inode, name, target, ctx):
        raise errors.NotPermitted("symbolic links cannot be stored")

    @_boundary
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise errors.NotPermitted("hard links cannot be stored")

    @_boundary
    async def readlink(self, inode, ctx):
        raise errors.InvalidInput("not a symbolic link")

    @_boundary
    async def access(self, inode, mode, ctx):
        self.fs.tree.get(inode)
        return True

    # -- files ----------------------------------------------------------------------

    @_boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, attr = await self.fs.create(parent_inode, _new_name(name), flags)
        return self._file_info(fh), self._entry(attr)

    @_boundary
    async def open(self, inode, flags, ctx):
        return self._file_info(await self.fs.open(inode, flags))

    def _file_info(self, fh: int) -> pyfuse3.FileInfo:
        """Never keep the page cache; bypass it for sidecars and catalog entries, whose
        text changes with the registration, not with writes through the mount."""
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=self.fs.direct_io(fh))

    @_boundary
    async def read(self, fh, off, size):
        return await self.fs.read(fh, off, size)

    @_boundary
    async def write(self, fh, off, buf):
        return await self.fs.write(fh, off, buf)

    @_boundary
    async def flush(self, fh):
        await self.fs.flush(fh)

    @_boundary
    async def fsync(self, fh, datasync):
        await self.fs.fsync(fh)

    async def release(self, fh):
        try:
            await self.fs.release(fh)
        except Exception:
            log.exception("release failed")

    # -- directories ----------------------------------------------------------------

    @_boundary
    async def opendir(self, inode, ctx):
        return await self.fs.opendir(inode)

    @_boundary
    async def readdir(self, fh, start_id, token):
        def reply(name: str, attr: Attr, next_id: int) -> bool:
            return pyfuse3.readdir_reply(token, name.encode("utf-8"), self._entry(attr),
                                         next_id)
        await self.fs.readdir(fh, start_id, reply)

    async def releasedir(self, fh):
        try:
            await self.fs.releasedir(fh)
        except Exception:
            log.exception("releasedir failed")

    @_boundary
    async def fsyncdir(self, fh, datasync):
        return None

    @_boundary
    async def statfs(self, ctx):
        return self._statvfs(await self.fs.statfs())

    @staticmethod
    def _statvfs(info: StatFs) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = info.block_size
        data.f_frsize = info.fragment_size
        data.f_blocks = info.blocks
        data.f_bfree = info.free
        data.f_bavail = info.free
        data.f_files = info.files
        data.f_ffree = info.free_files
        data.f_favail = info.free_files
        data.f_namemax = info.name_max
        return data

    # -- extended attributes ----------------------------------------------------------

    @_boundary
    async def getxattr(self, inode, name, ctx):
        return await self.fs.getxattr(inode, _name(name))

    @_boundary
    async def listxattr(self, inode, ctx):
        return [n.encode("utf-8") for n in await self.fs.list_xattrs(inode)]

    @_boundary
    async def setxattr(self, inode, name, value, ctx):
        await self.fs.setxattr(inode, _name(name), value)

    @_boundary
    async def removexattr(self, inode, name, ctx):
        await self.fs.removexattr(inode, _name(name))
