"""imagefs: Synnefo VM images as files.

A FUSE mount (``imagefs.fuse`` over ``imagefs.fs``) and an embedded
Synnefo-compatible service (``imagefs.service``) in one package.
"""

__version__ = "0.1.0"

#: Pithos block size and hash; the service reports them per container and the
#: client always uses what the container says, these are only the defaults.
BLOCK_SIZE = 4 * 1024 * 1024
BLOCK_HASH = "sha256"
