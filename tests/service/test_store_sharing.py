"""Sharing (api.md §3.8): grants, directory inheritance, groups, and isolation of users."""

from __future__ import annotations

import pytest
from storekit import alice, bob, carol, names, read_all, st, upload  # noqa: F401

from imagefs.errors import Forbidden, InvalidInput, NotFound


def mkdir(st, account, name, container="pithos"):
    return st.put_object(account, container, name, account, size=0, hashes=[],
                         content_type="application/directory", meta={})


def test_users_are_isolated(st, alice, bob):
    upload(st, alice, "secret", b"alice's")
    upload(st, bob, "secret", b"bob's")
    assert read_all(st, st.get_version(alice, "pithos", "secret", alice)) == b"alice's"
    assert read_all(st, st.get_version(bob, "pithos", "secret", bob)) == b"bob's"
    for call in (lambda: st.get_version(alice, "pithos", "secret", bob),
                 lambda: st.get_version(alice, "pithos", "missing", bob),
                 lambda: st.get_version(alice, "nocontainer", "x", bob),
                 lambda: st.list_objects(alice, "pithos", bob),
                 lambda: st.list_containers(alice, bob),
                 lambda: st.account_info(alice, bob),
                 lambda: st.get_container(alice, "pithos", bob),
                 lambda: st.list_versions(alice, "pithos", "secret", bob),
                 lambda: upload(st, alice, "intruder", requester=bob),
                 lambda: st.delete_object(alice, "pithos", "secret", bob),
                 lambda: st.update_object_meta(alice, "pithos", "secret", bob, meta={"A": "1"},
                                               replace=False),
                 lambda: st.create_container(alice, "mine", bob),
                 lambda: st.copy_object(alice, "pithos", "secret", bob, "pithos", "stolen", bob)):
        with pytest.raises(Forbidden):
            call()
    assert st.get_version(bob, "pithos", "secret", bob).uuid != st.get_version(
        alice, "pithos", "secret", alice).uuid


def test_object_grants(st, alice, bob, carol):
    upload(st, alice, "shared", b"data")
    st.set_sharing(alice, "pithos", "shared", alice, {"read": [bob.upper()], "write": [carol]})
    v = st.get_version(alice, "pithos", "shared", alice)
    assert v.sharing == {"read": [bob], "write": [carol]} and v.allowed_to == ""
    assert st.get_version(alice, "pithos", "shared", bob).allowed_to == "read"
    assert st.get_version(alice, "pithos", "shared", carol).allowed_to == "write"
    with pytest.raises(Forbidden):
        upload(st, alice, "shared", b"by bob", requester=bob)
    v = upload(st, alice, "shared", b"by carol", requester=carol)
    assert v.modified_by == carol and read_all(st, v) == b"by carol"
    st.update_object_meta(alice, "pithos", "shared", carol, meta={"K": "v"}, replace=False)
    for call in (lambda: st.delete_object(alice, "pithos", "shared", carol),
                 lambda: st.set_sharing(alice, "pithos", "shared", carol, {}),
                 lambda: st.move_object(alice, "pithos", "shared", alice, "pithos", "m", carol),
                 lambda: upload(st, alice, "shared", requester=carol, sharing={"read": ["*"]})):
        with pytest.raises(Forbidden):
            call()
    # Bob copies what he can read into his own account.
    copy = st.copy_object(alice, "pithos", "shared", bob, "pithos", "mine", bob)
    assert read_all(st, copy) == b"by carol"
    st.set_sharing(alice, "pithos", "shared", alice, {})
    with pytest.raises(Forbidden):
        st.get_version(alice, "pithos", "shared", bob)


def test_sharing_normalisation(st, alice, bob):
    upload(st, alice, "n")
    st.set_sharing(alice, "pithos", "n", alice, {"read": [bob, "*", "x"], "write": [bob]})
    assert st.get_version(alice, "pithos", "n", alice).sharing == {"read": ["*"], "write": [bob]}
    st.set_sharing(alice, "pithos", "n", alice, {"read": [bob], "write": [bob]})
    assert st.get_version(alice, "pithos", "n", alice).sharing == {"write": [bob]}
    with pytest.raises(InvalidInput):
        st.set_sharing(alice, "pithos", "n", alice, {"delete": [bob]})
    with pytest.raises(InvalidInput):
        st.set_sharing(alice, "pithos", "n", alice, {"read": ["a b;c"]})


def test_directory_inheritance(st, alice, bob, carol):
    mkdir(st, alice, "dir")
    for n in ("dir/a", "dir/sub/b", "dir/own", "plain", "plain/child", "dirx"):
        upload(st, alice, n, n.encode())
    st.set_sharing(alice, "pithos", "dir", alice, {"read": [bob]})
    st.set_sharing(alice, "pithos", "dir/own", alice, {"read": [carol]})
    st.set_sharing(alice, "pithos", "plain", alice, {"read": [bob]})  # not a directory object
    v = st.get_version(alice, "pithos", "dir/sub/b", bob)
    assert (v.sharing, v.shared_by, v.allowed_to) == ({"read": [bob]}, "dir", "read")
    assert st.get_version(alice, "pithos", "dir/sub/b", alice).shared_by == "dir"
    with pytest.raises(Forbidden):  # its own grants win over the directory's
        st.get_version(alice, "pithos", "dir/own", bob)
    with pytest.raises(Forbidden):
        st.get_version(alice, "pithos", "plain/child", bob)
    with pytest.raises(Forbidden):
        st.get_version(alice, "pithos", "dirx", bob)
    with pytest.raises(NotFound):  # readable path, no object
        st.get_version(alice, "pithos", "dir/nothing", bob)
    assert names(st.list_objects(alice, "pithos", bob)) == ["dir", "dir/a", "dir/sub/b", "plain"]
    assert names(st.list_objects(alice, "pithos", bob, delimiter="/")) == [
        "dir", "dir/", "plain"]
    assert names(st.list_objects(alice, "pithos", bob, prefix="dir/", delimiter="/")) == [
        "dir/a", "dir/sub/"]
    assert names(st.list_objects(alice, "pithos", carol)) == ["dir/own"]
    assert names(st.list_objects(alice, "pithos", alice, shared=True)) == [
        "dir", "dir/a", "dir/own", "dir/sub/b", "plain"]
    assert [c.name for c in st.list_containers(alice, bob)] == ["pithos"]
    assert st.account_info(alice, bob)["meta"] == {}


def test_write_grant_on_directory_allows_new_objects(st, alice, bob):
    mkdir(st, alice, "drop")
    st.set_sharing(alice, "pithos", "drop", alice, {"write": [bob]})
    v = upload(st, alice, "drop/from-bob", b"hi", requester=bob)
    assert v.modified_by == bob and v.allowed_to == "write"
    with pytest.raises(Forbidden):
        upload(st, alice, "elsewhere", requester=bob)


def test_group_grants(st, alice, bob, carol):
    upload(st, alice, "team-doc")
    st.update_account(alice, alice, None, {"team": [bob]}, replace=False)
    st.set_sharing(alice, "pithos", "team-doc", alice, {"read": [f"{alice}:team"]})
    assert st.get_version(alice, "pithos", "team-doc", bob).allowed_to == "read"
    with pytest.raises(Forbidden):
        st.get_version(alice, "pithos", "team-doc", carol)


def test_containers_of_others_show_only_shared(st, alice, bob):
    st.create_container(alice, "private", alice)
    st.create_container(alice, "public", alice)
    upload(st, alice, "x", container="private")
    upload(st, alice, "y", container="public")
    upload(st, alice, "z", container="public")
    st.set_sharing(alice, "public", "y", alice, {"read": ["*"]})
    assert [c.name for c in st.list_containers(alice, bob)] == ["public"]
    assert names(st.list_objects(alice, "public", bob)) == ["y"]
    with pytest.raises(Forbidden):
        st.list_objects(alice, "private", bob)
    assert [c.name for c in st.list_containers(alice, alice, shared=True)] == ["public"]
    st.set_public(alice, "private", "x", alice, True)
    assert [c.name for c in st.list_containers(alice, alice, public=True)] == ["private"]
