"""Images: the registration data of an object's current version (api.md §4).

An image *is* an object: its id is the object's uuid, its registration lives
in the metadata domain "plankton" of the current version (keys ``name``,
``disk_format``, ``container_format``, ``status``, ``property:<key>``), and
its publicity and members are the object's read grants. Because the domain
follows the object's versions (``objects.py``), the table of §4.11 holds by
construction: an overwrite keeps the image, a copy makes another one, a move
keeps its id, a delete ends it, and registering the same object again gives
the same id.

Registration and every update write a new object version; member changes
only touch grants. Only the owner registers, publishes or changes members;
a write grant suffices for other updates and for unregistering. Image
visibility uses grants only (owner, a user or group grant, or ``*``): the
Pithos public URL is a different notion (D19).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from imagefs.errors import Forbidden, InvalidInput, NotFound
from imagefs.service.store.db import Tx, chunks, placeholders
from imagefs.service.store.objects import (
    VCOLS,
    Cont,
    VRow,
    _Access,
    _check_text,
    _ContainerPerms,
    check_meta,
)
from imagefs.service.store.records import ImageRecord

log = logging.getLogger(__name__)

PLANKTON = "plankton"
PROPERTY = "property:"
DISK_FORMATS = ("diskdump", "extdump", "ntfsdump")
CONTAINER_FORMATS = ("aki", "ari", "ami", "bare", "ovf")
#: Real Plankton limits "plankton:property:<key>" to 111 characters.
MAX_PROPERTY_KEY = 111 - len("plankton:") - len(PROPERTY)
UPDATABLE = ("name", "disk_format", "container_format", "status", "owner")

# An image row: its container, object and current version.
_IMAGE_COLS = ("a.id, a.name, c.id, c.name, c.versioning, c.quota, o.id, o.name, " + VCOLS)
_IMAGE_FROM = ("FROM versions v JOIN objects o ON o.current = v.serial "
               "JOIN containers c ON c.id = o.container_id JOIN accounts a ON a.id = c.account_id")


def _check_formats(disk_format: str | None, container_format: str | None) -> None:
    if disk_format is not None and disk_format not in DISK_FORMATS:
        raise InvalidInput(f"invalid disk format {disk_format!r}")
    if container_format is not None and container_format not in CONTAINER_FORMATS:
        raise InvalidInput(f"invalid container format {container_format!r}")


def _property_key(key: str) -> str:
    _check_text(key, "property key")
    key = key.lower()
    if not key:
        raise InvalidInput("empty property key")
    if len(key) > MAX_PROPERTY_KEY:
        raise InvalidInput(f"property key longer than {MAX_PROPERTY_KEY} characters")
    return PROPERTY + key


class ImagesMixin:
    """Image registration on objects (mixed into ``Store``)."""

    def _locate_image(self, tx: Tx, image_id: str) -> tuple[Cont, str, int, VRow, dict]:
        row = tx.one(f"SELECT {_IMAGE_COLS} {_IMAGE_FROM} WHERE v.uuid = ?", (image_id,))
        if row is None:
            raise NotFound("no such image")
        cont, name, obj_id, cur = Cont(*row[:6]), row[7], row[6], VRow(*row[8:])
        plankton = self._meta(tx, cur.serial, PLANKTON)
        if "name" not in plankton:
            raise NotFound("no such image")
        return cont, name, obj_id, cur, plankton

    def _image_access(self, tx: Tx, cont: Cont, requester: str,
                      perms: dict[str, list[str]]) -> str:
        """"owner", "write" or "read"; Forbidden when the image is not visible."""
        if requester == cont.account:
            return "owner"
        level = _Access(tx, requester).level(perms)
        if not level:
            raise Forbidden()
        return level

    @staticmethod
    def _record(cont: Cont, name: str, cur: VRow, plankton: dict[str, str],
                perms: dict[str, list[str]]) -> ImageRecord:
        return ImageRecord(
            id=cur.uuid, name=plankton["name"],
            location="pithos://" + quote(f"{cont.account}/{cont.name}/{name}", safe="/"),
            owner=cont.account, size=cur.size, checksum=cur.hash,
            disk_format=plankton.get("disk_format", "diskdump"),
            container_format=plankton.get("container_format", "bare"),
            status=plankton.get("status", "available"),
            is_public="*" in perms.get("read", ()),
            created_at=cur.created, updated_at=cur.mtime,
            properties={k[len(PROPERTY):]: v for k, v in sorted(plankton.items())
                        if k.startswith(PROPERTY)},
            version=cur.serial)

    def _image_after(self, tx: Tx, image_id: str) -> ImageRecord:
        cont, name, _, cur, plankton = self._locate_image(tx, image_id)
        perms, _ = self._path_perms(tx, cont.id, name)
        return self._record(cont, name, cur, plankton, perms)

    def register_image(self, requester: str, account: str, container: str, name: str, *,
                       image_name: str, disk_format: str | None = None,
                       container_format: str | None = None, is_public: bool = False,
                       properties: dict[str, str] | None = None, size: int | None = None,
                       checksum: str | None = None, merge: bool = False) -> ImageRecord:
        """Register (or re-register) an object as an image; id = its uuid.

        Override semantics (D2) unless ``merge``: the previous registration
        is replaced, except that ``merge`` keeps old properties and status
        (real Synnefo). Grants are reset to read=[owner] (+ ``*``), D16.
        """
        _check_text(image_name, "image name")
        if not image_name:
            raise InvalidInput("Invalid image name")
        disk_format = disk_format or "diskdump"
        container_format = container_format or "bare"
        _check_formats(disk_format, container_format)
        props = {_property_key(k): v for k, v in (properties or {}).items()}
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, container, requester)
            version = self._read_version(tx, cont, name, requester)
            if requester != account:
                raise Forbidden("only the owner can register an object")
            if size is not None and int(size) != version.size:
                raise InvalidInput("Invalid size field")
            if checksum is not None and checksum.lower() != version.hash:
                raise InvalidInput("Invalid checksum field")
            obj_id, cur, _ = self._object_row(tx, cont, name)
            new = self._meta(tx, cur.serial, PLANKTON) if merge else {}
            new.update(name=image_name, disk_format=disk_format,
                       container_format=container_format)
            for key, value in props.items():
                if value == "":
                    new.pop(key, None)
                else:
                    new[key] = value
            check_meta(new, "image metadata")
            self._set_perms(tx, obj_id, {"read": [account, *(["*"] if is_public else [])]})
            self._rewrite_domain(tx, cont, obj_id, cur, requester, PLANKTON, new)
            record = self._image_after(tx, cur.uuid)
        log.info("registered image %s (%s)", record.id, record.location)
        return record

    def get_image(self, requester: str, image_id: str) -> ImageRecord:
        with self.db.read() as tx:
            cont, name, _, cur, plankton = self._locate_image(tx, image_id)
            perms, _ = self._path_perms(tx, cont.id, name)
            self._image_access(tx, cont, requester, perms)
            return self._record(cont, name, cur, plankton, perms)

    def update_image(self, requester: str, image_id: str, *, fields: dict[str, str] | None = None,
                     properties: dict[str, str] | None = None,
                     is_public: bool | None = None) -> ImageRecord:
        """Merge fields and properties ("" deletes a property, "" status is kept
        as ""); always a new object version."""
        fields = dict(fields or {})
        for key in fields:
            if key not in UPDATABLE:
                raise InvalidInput(f"Invalid metadata: {key} cannot be changed")
        fields.pop("owner", None)  # accepted, no effect (D18)
        if "name" in fields:
            _check_text(fields["name"], "image name")
            if not fields["name"]:
                raise InvalidInput("Invalid image name")
        if "status" in fields:
            _check_text(fields["status"], "status")
        _check_formats(fields.get("disk_format"), fields.get("container_format"))
        props = {_property_key(k): v for k, v in (properties or {}).items()}
        with self.db.write() as tx:
            cont, name, obj_id, cur, plankton = self._locate_image(tx, image_id)
            perms, _ = self._path_perms(tx, cont.id, name)
            level = self._image_access(tx, cont, requester, perms)
            if level == "read":
                raise Forbidden("no write permission")
            if is_public is not None and level != "owner":
                raise Forbidden("only the owner can change publicity")
            new = dict(plankton)
            new.update(fields)
            for key, value in props.items():
                if value == "":
                    new.pop(key, None)
                else:
                    new[key] = value
            check_meta(new, "image metadata")
            if is_public is not None:
                read = [m for m in perms.get("read", ()) if m != "*"]
                if is_public:
                    read.append("*")
                self._set_perms(tx, obj_id, {**perms, "read": read} if read else
                                {k: v for k, v in perms.items() if k != "read"})
            self._rewrite_domain(tx, cont, obj_id, cur, requester, PLANKTON, new)
            return self._image_after(tx, image_id)

    def unregister_image(self, requester: str, image_id: str) -> None:
        """Drop the registration (new version); data and grants stay (D15)."""
        with self.db.write() as tx:
            cont, name, obj_id, cur, _ = self._locate_image(tx, image_id)
            perms, _ = self._path_perms(tx, cont.id, name)
            if self._image_access(tx, cont, requester, perms) == "read":
                raise Forbidden("no write permission")
            self._rewrite_domain(tx, cont, obj_id, cur, requester, PLANKTON, None)
        log.info("unregistered image %s", image_id)

    def list_images(self, requester: str) -> list[ImageRecord]:
        """Every image ``requester`` can see: own, shared (also via groups and
        directories) and public; ordered by id."""
        with self.db.read() as tx:
            rows = tx.all(f"SELECT {_IMAGE_COLS} FROM meta m "
                          "JOIN versions v ON v.serial = m.serial JOIN objects o ON o.current = v.serial "
                          "JOIN containers c ON c.id = o.container_id "
                          "JOIN accounts a ON a.id = c.account_id "
                          "WHERE m.domain = ? AND m.key = ?", (PLANKTON, "name"))
            serials = [r[8] for r in rows]
            metas: dict[int, dict[str, str]] = {s: {} for s in serials}
            for part in chunks(serials):
                for serial, key, value in tx.all(
                        "SELECT serial, key, value FROM meta WHERE domain = ? "
                        f"AND serial IN ({placeholders(len(part))})", (PLANKTON, *part)):
                    metas[serial][key] = value
            access = _Access(tx, requester)
            container_perms: dict[int, _ContainerPerms] = {}
            out = []
            for row in rows:
                cont, name, cur = Cont(*row[:6]), row[7], VRow(*row[8:])
                if cont.id not in container_perms:
                    container_perms[cont.id] = _ContainerPerms(tx, cont.id)
                perms, _ = container_perms[cont.id].effective(name)
                if requester != cont.account and not access.level(perms):
                    continue
                out.append(self._record(cont, name, cur, metas[cur.serial], perms))
        out.sort(key=lambda r: r.id)
        return out

    def image_members(self, requester: str, image_id: str) -> list[str]:
        """The read grants minus ``*`` (the owner is one after registering, D17)."""
        with self.db.read() as tx:
            cont, name, _, _, _ = self._locate_image(tx, image_id)
            perms, _ = self._path_perms(tx, cont.id, name)
            self._image_access(tx, cont, requester, perms)
            return [m for m in perms.get("read", ()) if m != "*"]

    def _change_members(self, requester: str, image_id: str, change) -> None:
        with self.db.write() as tx:
            cont, name, obj_id, _, _ = self._locate_image(tx, image_id)
            perms, _ = self._path_perms(tx, cont.id, name)
            if self._image_access(tx, cont, requester, perms) != "owner":
                raise Forbidden("only the owner can change members")
            read = change(list(perms.get("read", ())))
            new = {k: v for k, v in perms.items() if k != "read"}
            if read:
                new["read"] = list(dict.fromkeys(read))
            self._set_perms(tx, obj_id, new)

    @staticmethod
    def _member(member: str) -> str:
        _check_text(member, "member")
        member = member.strip().lower()
        if not member or member == "*":
            raise InvalidInput(f"invalid member {member!r}")
        return member

    def add_member(self, requester: str, image_id: str, member: str) -> None:
        member = self._member(member)
        self._change_members(requester, image_id, lambda read: read + [member])

    def remove_member(self, requester: str, image_id: str, member: str) -> None:
        member = self._member(member)
        self._change_members(requester, image_id, lambda read: [m for m in read if m != member])

    def set_members(self, requester: str, image_id: str, members: list[str]) -> None:
        """Replace the members, keeping ``*`` if the image is public."""
        members = [self._member(m) for m in members]
        self._change_members(requester, image_id,
                             lambda read: members + (["*"] if "*" in read else []))

    def shared_images(self, requester: str, owner: str) -> list[str]:
        """Ids of ``owner``'s images ``requester`` can see that are not public."""
        return [r.id for r in self.list_images(requester)
                if r.owner == owner and not r.is_public]
