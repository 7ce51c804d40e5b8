"""Users and tokens, the default user, and the admin commands (user, gc, check)."""

from __future__ import annotations

import os
import stat

import pytest
from storekit import st, upload  # noqa: F401

from imagefs.cli import main
from imagefs.errors import AlreadyExists, InvalidInput
from imagefs.service.store import Store


def test_add_user_and_tokens(st):
    alice = st.add_user("alice")
    assert len(alice.token) >= 32 and alice.uuid.count("-") == 4
    assert st.user_for_token(alice.token) == alice
    assert st.user_for_token(alice.token + "x") is None
    assert st.user_for_token("") is None
    with pytest.raises(AlreadyExists):
        st.add_user("alice")
    with pytest.raises(InvalidInput):
        st.add_user("")
    bob = st.add_user("Bob Example")
    assert [(u.uuid, u.name, u.token) for u in st.list_users()] == [
        (alice.uuid, "alice", ""), (bob.uuid, "Bob Example", "")]
    assert st.users_by_uuid([bob.uuid, "nobody"]) == {bob.uuid: "Bob Example"}
    assert st.users_by_name(["alice", "nobody"]) == {"alice": alice.uuid}
    with st.db.read() as tx:  # only a hash of the token is stored
        assert tx.one("SELECT 1 FROM users WHERE token_hash = ?", (alice.token,)) is None
    # A new user's account exists at once, with its container "pithos".
    assert [c.name for c in st.list_containers(bob.uuid, bob.uuid)] == ["pithos"]


def test_default_user(st):
    user, created = st.default_user()
    assert created and user.name == "user"
    path = st.data_dir / "default.token"
    assert path.read_text() == f"{user.uuid} {user.token}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created = Store.open(st.data_dir).default_user()
    assert (again, created) == (user, False)
    path.unlink()  # lost: a new token is issued, the old one stops working
    third, created = st.default_user()
    assert not created and third.uuid == user.uuid and third.token != user.token
    assert st.user_for_token(user.token) is None
    assert st.user_for_token(third.token).uuid == user.uuid
    assert path.read_text() == f"{user.uuid} {third.token}\n"


def test_admin_commands(st, capsys):
    data = str(st.data_dir)
    assert main(["user", "add", "carol", "--data", data]) == 0
    uuid, token = capsys.readouterr().out.split()
    assert st.user_for_token(token).uuid == uuid  # the open store sees it at once
    assert main(["user", "list", "--data", data]) == 0
    assert capsys.readouterr().out == f"{uuid} carol\n"
    assert main(["user", "add", "carol", "--data", data]) == 1
    capsys.readouterr()
    upload(st, uuid, "obj", b"data")
    assert main(["gc", "--data", data]) == 0
    assert "removed 0" in capsys.readouterr().out
    assert main(["check", "--data", data]) == 0
    assert "no problems" in capsys.readouterr().out
    (st.blocks.root / "zz").mkdir()
    (st.blocks.root / "zz" / "not-a-block").write_bytes(b"")
    old = st.blocks.root / "00" / ".tmp-leftover"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    assert main(["check", "--data", data]) == 1
    out = capsys.readouterr().out
    assert "stray file" in out and "temporary" in out
    assert main(["check", "--repair", "--data", data]) == 1  # the stray file is not ours to delete
    out = capsys.readouterr().out
    assert "repaired: removed leftover temporary" in out and not old.exists()


def test_admin_default_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMAGEFS_DATA", str(tmp_path / "default-data"))
    assert main(["user", "add", "dave"]) == 0
    assert capsys.readouterr().out.count(" ") == 1
    assert (tmp_path / "default-data" / "imagefs.db").exists()
