"""Filesystem semantics over the client: trio, no pyfuse3 (``fuse/`` is the glue).

``filesystem.Filesystem`` is the entry point; see its module docstring for
where reads, writes and the inode table live.
"""
