"""Images on objects (api.md §4): registration, access, updates, and the table of §4.11."""

from __future__ import annotations

import pytest
from storekit import alice, bob, carol, st, upload  # noqa: F401

from imagefs.errors import Forbidden, InvalidInput, NotFound
from imagefs.protocol.hashmap import EMPTY_HASH


def register(st, account, name="disk.img", **kw):
    kw.setdefault("image_name", "Debian")
    kw.setdefault("properties", {"OS": "Linux", "user": "root"})
    kw.setdefault("is_public", False)
    return st.register_image(account, account, "pithos", name, **kw)


@pytest.fixture
def img(st, alice):
    v = upload(st, alice, "disk.img", b"disk image")
    rec = register(st, alice)
    assert rec.id == v.uuid
    return rec


def test_register(st, alice, img):
    v = st.get_version(alice, "pithos", "disk.img", alice)
    assert img.version == v.serial and img.updated_at == v.mtime and img.created_at == v.created
    assert (img.name, img.disk_format, img.container_format, img.status) == (
        "Debian", "diskdump", "bare", "available")
    assert img.properties == {"os": "Linux", "user": "root"}
    assert img.location == f"pithos://{alice}/pithos/disk.img"
    assert (img.owner, img.size, img.checksum, img.is_public) == (alice, 10, v.hash, False)
    assert v.sharing == {"read": [alice]}  # D16
    assert v.meta == {}  # invisible through the object's user metadata
    assert st.get_image(alice, img.id) == img
    assert st.image_members(alice, img.id) == [alice]  # D17


def test_register_validation(st, alice, bob):
    upload(st, alice, "x y/ü", b"data")
    rec = register(st, alice, "x y/ü", size=4, checksum=st.get_version(
        alice, "pithos", "x y/ü", alice).hash.upper())
    assert rec.location == f"pithos://{alice}/pithos/x%20y/%C3%BC"
    for kw in ({"image_name": ""}, {"disk_format": "qcow2"}, {"container_format": "zip"},
               {"size": 5}, {"checksum": EMPTY_HASH}, {"properties": {"k" * 94: "v"}},
               {"properties": {f"p{i}": "v" for i in range(30)}}):
        with pytest.raises(InvalidInput):
            register(st, alice, "x y/ü", **kw)
    with pytest.raises(NotFound):
        register(st, alice, "missing")
    st.set_sharing(alice, "pithos", "x y/ü", alice, {"read": [bob]})
    with pytest.raises(Forbidden):  # readable is not enough: only the owner registers
        st.register_image(bob, alice, "pithos", "x y/ü", image_name="Mine")
    with pytest.raises(Forbidden):
        st.register_image(bob, alice, "pithos", "disk.img", image_name="Mine")


def test_access(st, alice, bob, carol, img):
    with pytest.raises(Forbidden):  # D12: private image of another user
        st.get_image(bob, img.id)
    with pytest.raises(NotFound):
        st.get_image(bob, "5a8d2c44-2b9e-4b1f-8d3e-9c0f1a2b3c4d")
    st.update_image(alice, img.id, is_public=True)
    assert st.get_image(bob, img.id).is_public
    assert [r.id for r in st.list_images(bob)] == [img.id]
    assert st.shared_images(bob, alice) == []
    st.update_image(alice, img.id, is_public=False)
    st.add_member(alice, img.id, bob)
    assert st.get_image(bob, img.id).id == img.id
    assert st.shared_images(bob, alice) == [img.id]
    assert st.list_images(carol) == []
    with pytest.raises(Forbidden):  # read grant: no updates, no unregister, no members
        st.update_image(bob, img.id, properties={"x": "y"})
    with pytest.raises(Forbidden):
        st.unregister_image(bob, img.id)
    with pytest.raises(Forbidden):
        st.add_member(bob, img.id, carol)
    st.set_sharing(alice, "pithos", "disk.img", alice, {"write": [bob]})
    rec = st.update_image(bob, img.id, properties={"x": "y"})
    assert rec.properties["x"] == "y"
    with pytest.raises(Forbidden):
        st.update_image(bob, img.id, is_public=True)


def test_update(st, alice, img):
    rec = st.update_image(alice, img.id, fields={"name": "Changed", "status": "",
                                                 "owner": "someone"},
                          properties={"user": "", "NEW": "1"})
    assert (rec.name, rec.status, rec.properties) == ("Changed", "", {"os": "Linux", "new": "1"})
    assert rec.version > img.version and rec.id == img.id and rec.created_at == img.created_at
    rec2 = st.update_image(alice, img.id)  # nothing: still a new version
    assert rec2.version > rec.version
    for kw in ({"fields": {"name": ""}}, {"fields": {"disk_format": ""}},
               {"fields": {"checksum": "x"}}, {"fields": {"location": "x"}}):
        with pytest.raises(InvalidInput):
            st.update_image(alice, img.id, **kw)
    st.update_image(alice, img.id, is_public=True)
    assert st.get_version(alice, "pithos", "disk.img", alice).sharing == {
        "read": ["*", alice]}
    assert st.image_members(alice, img.id) == [alice]


def test_members(st, alice, bob, carol, img):
    st.update_image(alice, img.id, is_public=True)
    st.add_member(alice, img.id, bob)
    st.add_member(alice, img.id, bob)
    assert sorted(st.image_members(alice, img.id)) == sorted([alice, bob])
    st.remove_member(alice, img.id, alice)
    st.remove_member(alice, img.id, "absent")
    assert st.image_members(alice, img.id) == [bob]
    st.set_members(alice, img.id, [carol])
    assert st.image_members(alice, img.id) == [carol]
    assert st.get_image(alice, img.id).is_public  # "*" kept
    before = st.get_version(alice, "pithos", "disk.img", alice).serial
    assert before == st.get_image(alice, img.id).version  # members make no version


def test_unregister_and_register_again(st, alice, bob, img):
    st.update_image(alice, img.id, is_public=True)
    st.unregister_image(alice, img.id)
    for call in (lambda: st.get_image(alice, img.id), lambda: st.unregister_image(alice, img.id),
                 lambda: st.update_image(alice, img.id, fields={"name": "x"})):
        with pytest.raises(NotFound):
            call()
    assert st.list_images(alice) == []
    v = st.get_version(alice, "pithos", "disk.img", alice)
    assert v.sharing == {"read": ["*", alice]}  # D15: grants stay
    again = register(st, alice, image_name="Again", properties={})
    assert again.id == img.id and again.properties == {} and again.created_at == img.created_at


def test_register_twice_override_or_merge(st, alice, img):
    st.update_image(alice, img.id, fields={"status": "custom"})
    rec = register(st, alice, image_name="Second", properties={"new": "1"},
                   disk_format="extdump")
    assert (rec.id, rec.name, rec.properties, rec.status, rec.disk_format) == (
        img.id, "Second", {"new": "1"}, "available", "extdump")
    st.update_image(alice, img.id, fields={"status": "custom"})
    rec = register(st, alice, image_name="Third", properties={"other": "2"}, merge=True)
    assert (rec.name, rec.properties, rec.status, rec.disk_format) == (
        "Third", {"new": "1", "other": "2"}, "custom", "diskdump")


# -- §4.11, row by row ---------------------------------------------------------------------

def test_411_overwritten(st, alice, bob, img):
    st.add_member(alice, img.id, bob)
    st.update_image(alice, img.id, is_public=True, fields={"status": "ok"})
    v = upload(st, alice, "disk.img", b"a new and longer disk image")
    rec = st.get_image(alice, img.id)
    assert (rec.id, rec.name, rec.properties, rec.status) == (
        img.id, "Debian", img.properties, "ok")
    assert (rec.size, rec.checksum, rec.updated_at) == (v.size, v.hash, v.mtime)
    assert rec.is_public and sorted(st.image_members(alice, img.id)) == sorted([alice, bob])


def test_411_pithos_metadata_changed(st, alice, img):
    v = st.update_object_meta(alice, "pithos", "disk.img", alice, meta={"A": "1"}, replace=True)
    rec = st.get_image(alice, img.id)
    assert rec.updated_at == v.mtime and rec.version == v.serial
    assert (rec.name, rec.properties, rec.checksum) == (img.name, img.properties, img.checksum)


def test_411_sharing_changed_through_pithos(st, alice, bob, img):
    st.set_sharing(alice, "pithos", "disk.img", alice, {"read": ["*"]})
    rec = st.get_image(alice, img.id)
    assert rec.is_public and st.image_members(alice, img.id) == []
    st.set_sharing(alice, "pithos", "disk.img", alice, {"read": [bob]})
    assert not st.get_image(alice, img.id).is_public
    assert st.image_members(alice, img.id) == [bob]


def test_411_moved(st, alice, bob, img):
    st.update_image(alice, img.id, is_public=True)
    st.add_member(alice, img.id, bob)
    st.move_object(alice, "pithos", "disk.img", alice, "pithos", "renamed.img", alice)
    rec = st.get_image(alice, img.id)
    assert rec.id == img.id and rec.location.endswith("/pithos/renamed.img")
    assert (rec.name, rec.properties) == (img.name, img.properties)
    assert not rec.is_public and st.image_members(alice, img.id) == []
    with pytest.raises(Forbidden):
        st.get_image(bob, img.id)


def test_411_copied(st, alice, img):
    st.update_image(alice, img.id, is_public=True)
    copy = st.copy_object(alice, "pithos", "disk.img", alice, "pithos", "copy.img", alice)
    rec = st.get_image(alice, copy.uuid)
    assert rec.id != img.id and (rec.name, rec.properties) == (img.name, img.properties)
    assert not rec.is_public and rec.location.endswith("/copy.img")
    assert st.get_image(alice, img.id).is_public
    assert sorted(r.id for r in st.list_images(alice)) == sorted([img.id, copy.uuid])


def test_411_deleted_and_reuploaded(st, alice, img):
    st.delete_object(alice, "pithos", "disk.img", alice)
    with pytest.raises(NotFound):
        st.get_image(alice, img.id)
    assert st.list_images(alice) == []
    v = upload(st, alice, "disk.img", b"disk image")
    assert v.uuid != img.id
    with pytest.raises(NotFound):
        st.get_image(alice, v.uuid)
    with pytest.raises(NotFound):
        st.get_image(alice, img.id)


def test_411_container_emptied(st, alice, img):
    upload(st, alice, "other.img")
    other = register(st, alice, "other.img")
    st.delete_container_objects(alice, "pithos", alice)
    for image_id in (img.id, other.id):
        with pytest.raises(NotFound):
            st.get_image(alice, image_id)
    assert st.list_images(alice) == []


def test_list_images_visibility(st, alice, bob, carol):
    upload(st, alice, "private.img")
    upload(st, alice, "public.img")
    st.put_object(alice, "pithos", "dir", alice, size=0, hashes=[],
                  content_type="application/directory", meta={})
    upload(st, alice, "dir/inherited.img")
    upload(st, bob, "bobs.img")
    private = register(st, alice, "private.img")
    public = register(st, alice, "public.img", is_public=True)
    inherited = register(st, alice, "dir/inherited.img")
    bobs = register(st, bob, "bobs.img")
    # Registration gave dir/inherited.img its own grants; drop them to inherit from dir.
    st.set_sharing(alice, "pithos", "dir/inherited.img", alice, {})
    st.set_sharing(alice, "pithos", "dir", alice, {"read": [carol]})
    assert {r.id for r in st.list_images(alice)} == {private.id, public.id, inherited.id}
    assert {r.id for r in st.list_images(bob)} == {public.id, bobs.id}
    assert {r.id for r in st.list_images(carol)} == {public.id, inherited.id}
    assert st.shared_images(carol, alice) == [inherited.id]
    assert st.get_image(carol, inherited.id).id == inherited.id
