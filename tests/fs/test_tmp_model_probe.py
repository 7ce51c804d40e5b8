import os
from imagefs.fs.filesystem import Filesystem

async def test_probe(vfs, fresh):
    c = await vfs.container(fresh("c"))
    await vfs.write_file(f"{c}/y", b"x" * 7821)
    r = await vfs.open(f"{c}/y")
    ino = await vfs.ino(f"{c}/y")
    node = vfs.fs.tree.get(ino)
    w = await vfs.open(f"{c}/y", os.O_WRONLY)
    await vfs.fs.write(w, 690, b"z" * 168)
    await vfs.close(w)
    print("of after write", node.openfile, getattr(node.openfile, "_closed", None), node.handles)
    print(await vfs.read_file(f"{c}/y") == b"x" * 690 + b"z" * 168 + b"x" * (7821 - 858))
    print("of after read", node.openfile, getattr(node.openfile, "_closed", None), node.handles)
    await vfs.fs.setattr(ino, size=888)
    print("of after trunc", node.openfile, getattr(node.openfile, "_closed", None), node.handles)
    await vfs.close(r)
    assert (await vfs.stat(f"{c}/y")).size == 888
    assert await vfs.stored(c, "y") == (b"x" * 690 + b"z" * 168 + b"x" * (7821 - 858))[:888]
