"""Times, modes, statfs and extended attributes (behaviour.md §3 and §5)."""

from __future__ import annotations

import errno
import os
import shutil

from e2e_util import expect_errno, names_on_service, run, write_random

MiB = 1 << 20
STAMP = "2001-02-03 04:05:06 UTC"
STAMP_EPOCH = 981173106


def test_touch_d_stores_the_mtime(container, client):
    target = container.path / "t"
    target.write_bytes(b"x")
    run("touch", "-d", STAMP, str(target))
    assert int(os.stat(target).st_mtime) == STAMP_EPOCH
    meta = client.pithos.head(container.name, "t").meta or {}
    assert float(meta["Mtime"]) == STAMP_EPOCH


def test_rsync_a_twice_transfers_nothing_the_second_time(container, client, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_random(src / "a.img", 5 * MiB)
    (src / "b.txt").write_text("bee\n")
    (src / "sub" / "c.txt").write_text("sea\n")
    os.utime(src / "b.txt", (STAMP_EPOCH, STAMP_EPOCH))
    dst = f"{container.path}/"

    first = run("rsync", "-a", "--stats", f"{src}/", dst).stdout
    assert "Number of regular files transferred: 3" in first
    second = run("rsync", "-a", "--stats", f"{src}/", dst).stdout
    assert "Number of regular files transferred: 0" in second, second

    # No temporary .name.XXXXXX left behind; the mtimes are on the service.
    assert names_on_service(client, container.name) - {"sub"} == {"a.img", "b.txt", "sub/c.txt"}
    assert int(os.stat(container.path / "b.txt").st_mtime) == STAMP_EPOCH
    run("diff", "-r", str(src), str(container.path))


def test_chmod_chown_cp_a_and_copy2_succeed(container, tmp_path):
    target = container.path / "f"
    target.write_bytes(b"data")
    run("chmod", "600", str(target))
    run("chmod", "u+x", str(target))
    run("chown", f"{os.getuid()}:{os.getgid()}", str(target))

    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "g").write_bytes(b"gee")
    os.utime(tree / "d" / "g", (STAMP_EPOCH, STAMP_EPOCH))
    done = run("cp", "-a", str(tree), str(container.path))
    assert done.stderr == ""
    assert (container.path / "tree" / "d" / "g").read_bytes() == b"gee"
    assert int(os.stat(container.path / "tree" / "d" / "g").st_mtime) == STAMP_EPOCH

    shutil.copy2(tree / "d" / "g", container.path / "copy2")
    assert int(os.stat(container.path / "copy2").st_mtime) == STAMP_EPOCH
    run("cp", "-p", str(tree / "d" / "g"), str(container.path / "cp-p"))
    assert int(os.stat(container.path / "cp-p").st_mtime) == STAMP_EPOCH


def test_df_shows_sane_numbers(mounted):
    st = os.statvfs(mounted.path)
    assert st.f_bsize > 0 and st.f_frsize > 0
    assert st.f_blocks > 0
    assert 0 < st.f_bavail <= st.f_blocks
    assert st.f_bfree >= st.f_bavail
    lines = run("df", "-k", str(mounted.path)).stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[-1] == str(mounted.path)


def test_pithos_xattrs_of_a_file(container, client):
    target = container.path / "f.img"
    target.write_bytes(b"pithos attributes")
    info = client.pithos.head(container.name, "f.img")
    assert os.getxattr(target, "user.pithos.hash").decode() == info.hash
    assert os.getxattr(target, "user.pithos.uuid").decode() == info.uuid
    assert os.getxattr(target, "user.pithos.version").decode() == str(info.version)
    listed = run("getfattr", "-d", "-m", "user.pithos", str(target)).stdout
    assert f'user.pithos.uuid="{info.uuid}"' in listed

    run("setfattr", "-n", "user.pithos.meta.color", "-v", "blue", str(target))
    assert (client.pithos.head(container.name, "f.img").meta or {})["Color"] == "blue"
    assert os.getxattr(target, "user.pithos.meta.color") == b"blue"
    run("setfattr", "-x", "user.pithos.meta.color", str(target))
    assert "Color" not in (client.pithos.head(container.name, "f.img").meta or {})
    expect_errno(errno.ENODATA, os.getxattr, target, "user.pithos.meta.color")

    run("setfattr", "-n", "user.pithos.public", "-v", "true", str(target))
    url = client.pithos.head(container.name, "f.img").public_url
    assert url
    assert url.endswith(os.getxattr(target, "user.pithos.public").decode().rsplit("/", 1)[-1])
    run("setfattr", "-n", "user.pithos.public", "-v", "false", str(target))
    assert client.pithos.head(container.name, "f.img").public_url == ""

    # Fixed fields cannot be set.
    expect_errno(errno.EPERM, os.setxattr, target, "user.pithos.uuid", b"x")
    # The content did not change through all this.
    assert client.pithos.head(container.name, "f.img").hash == info.hash


def test_versioning_xattr_of_a_container(container, client):
    assert os.getxattr(container.path, "user.pithos.versioning") == b"auto"
    run("setfattr", "-n", "user.pithos.versioning", "-v", "none", str(container.path))
    assert client.pithos.container_info(container.name).versioning == "none"
    assert os.getxattr(container.path, "user.pithos.versioning") == b"none"
    expect_errno(errno.EINVAL, os.setxattr, container.path, "user.pithos.versioning", b"sometimes")
    assert client.pithos.container_info(container.name).versioning == "none"


def test_security_and_acl_probes_cost_no_request(mounted, container):
    target = container.path / "probe"
    target.write_bytes(b"x")
    os.stat(target)
    mark = mounted.proxy.mark()
    for _ in range(20):
        expect_errno(errno.EOPNOTSUPP, os.getxattr, target, "security.selinux")
        expect_errno(errno.EOPNOTSUPP, os.getxattr, target, "system.posix_acl_access")
        expect_errno(errno.ENODATA, os.getxattr, target, "user.xdg.origin.url")
    expect_errno(errno.EOPNOTSUPP, os.setxattr, target, "security.selinux", b"x")
    done = run("getfattr", "-m", "security.", "-d", str(target))
    assert done.stdout == ""
    sent = mounted.requests(mark)
    # A request per probe would be 40 and more; allow the one or two attribute
    # refreshes of an expired cache.
    assert len(sent) <= 2, [(r.method, r.path) for r in sent]
