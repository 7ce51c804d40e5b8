"""The pure parts of mounting: -o parsing, the fstab helper's argv, status lines."""

from __future__ import annotations

import pytest

from imagefs.errors import UsageError
from imagefs.fuse.helper import build_argv
from imagefs.fuse.mount import _unescape_mountinfo, parse_options
from imagefs.fuse.status import human, render


def test_parse_options_splits_fuse_options_from_settings():
    opts = parse_options(["rw,allow_other,data=/srv/x", "noauto,_netdev,x-systemd.automount",
                          "cache_timeout=5,nofail,defaults,comment=x"])
    assert opts.fuse == {"rw", "allow_other"}
    assert opts.settings == {"data": "/srv/x", "cache_timeout": "5"}


@pytest.mark.parametrize("value", ["data=", "fsname=x", "subtype=y"])
def test_parse_options_refuses(value):
    with pytest.raises(UsageError):
        parse_options([value])


@pytest.mark.parametrize("argv, expected", [
    (["imagefs", "/mnt", "-o", "rw,data=/d,dev,suid"],
     ["mount", "/mnt", "-o", "rw,data=/d,dev,suid"]),
    (["mycloud", "/mnt"], ["mount", "/mnt", "-o", "cloud=mycloud"]),
    (["mycloud", "/mnt", "-o", "url=http://x/identity/v2.0,token_file=/t"],
     ["mount", "/mnt", "-o", "url=http://x/identity/v2.0,token_file=/t"]),
    (["http://h:1/identity/v2.0", "/mnt", "-o", "token_file=/t"],
     ["mount", "/mnt", "-o", "token_file=/t,url=http://h:1/identity/v2.0"]),
    (["imagefs", "/mnt", "-s", "-n", "-v", "-o", "foreground", "-t", "fuse.imagefs"],
     ["-v", "mount", "/mnt", "--foreground"]),
    (["imagefs", "/mnt", "-f", "-o", "data=/x"], None),
])
def test_helper_argv(argv, expected):
    assert build_argv(argv) == expected


@pytest.mark.parametrize("argv", [["/mnt"], ["a", "b", "c"], ["a", "b", "-x"], ["a", "b", "-o"]])
def test_helper_usage_errors(argv):
    with pytest.raises(UsageError):
        build_argv(argv)


def test_mountinfo_unescape():
    assert _unescape_mountinfo(r"/tmp/a\040b\134c") == "/tmp/a b\\c"


def test_status_lines():
    assert render({"uploads": [], "errors": 0}) == ["no uploads in progress"]
    lines = render({"uploads": [{"path": "/pithos/a.img", "hashed": 3 << 30, "sent": 512 << 20,
                                 "total": 4 << 30, "rate": 100 << 20, "started": 90}],
                    "errors": 2}, now=100)
    assert lines[0].split() == ["HASHED", "SENT", "TOTAL", "RATE", "AGE", "PATH"]
    assert lines[1].split() == ["3", "GiB", "512", "MiB", "4", "GiB", "100", "MiB/s", "10s",
                                "/pithos/a.img"]
    assert lines[2].startswith("2 failed")
    assert human(0) == "0 B"
    assert human(1536) == "1.5 KiB"
