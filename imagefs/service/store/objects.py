"""Accounts, containers, objects and their versions, with Pithos semantics.

What it owns (api.md §3): the uuid and metadata-domain lifecycle of §3.10,
versioning ``auto``/``none``, sharing with directory inheritance and public
ids (§3.8), quotas, and the listing algorithm of §3.5. It refuses everything
about HTTP: names arrive decoded, metadata keys arrive normalised (§3.7), and
the caller turns the exceptions into statuses.

Every mutation is one write transaction; the blocks a new version references
must already be stored (``Store.put_block``); ``put_object`` makes them
durable (``BlockStore.seal``) before taking the lock and checks them again
inside the transaction, which ``gc`` also holds while it deletes, so a
committed version never lacks a block, even after a power cut. Reads run in
one read transaction each, so a returned ``Version`` is a consistent snapshot.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import time
import uuid as uuidlib
from collections import namedtuple
from collections.abc import Iterable

from imagefs.errors import (
    Conflict,
    ContainerNotEmpty,
    Forbidden,
    InvalidInput,
    NameTooLong,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
)
from imagefs.protocol.hashmap import EMPTY_HASH, block_count, top_hash
from imagefs.service.store.blocks import valid_hash
from imagefs.service.store.db import Tx, chunks, disk_space, placeholders
from imagefs.service.store.records import ContainerRecord, Version

log = logging.getLogger(__name__)

NORMAL, HISTORY, DELETED = 0, 1, 2
CLUSTER_NAMES = {NORMAL: "normal", HISTORY: "history", DELETED: "deleted"}

DIRECTORY_TYPES = frozenset({"application/directory", "application/folder"})
DEFAULT_CONTAINER = "pithos"
PITHOS = "pithos"

MAX_CONTAINER_NAME = 256
MAX_OBJECT_NAME = 1024
MAX_META_KEYS = 32
MAX_META_KEY = 128
MAX_META_VALUE = 256
MAX_LIMIT = 10000

_PUBLIC_ALPHABET = string.ascii_letters + string.digits
_MEMBER = re.compile(r"[a-z0-9_.@+-]+(:[a-z0-9_.@+ -]+)?\Z")

# The columns every version query reads, and the tuple they land in.
VCOLS = ("v.serial, v.uuid, v.created, v.size, v.content_type, v.hash, v.checksum, "
         "v.map_id, v.mtime, v.modified_by, v.cluster")
VRow = namedtuple("VRow", "serial uuid created size content_type hash checksum map_id "
                          "mtime modified_by cluster")
# A located container.
Cont = namedtuple("Cont", "account_id account id name versioning quota")


class MissingBlocks(Conflict):
    """A hashmap names blocks the store does not have (409 with their list).

    Exported by ``imagefs.service.store``; ``hashes`` is deduplicated, in
    first-seen order, and never contains ``H("")``.
    """

    def __init__(self, hashes: list[str]) -> None:
        super().__init__(f"{len(hashes)} block(s) missing")
        self.hashes = list(hashes)


# -- validation ---------------------------------------------------------------------------

def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if "\0" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode") from None


def check_container_name(name: str) -> None:
    _check_text(name, "container name")
    if not name:
        raise InvalidInput("empty container name")
    if "/" in name:
        raise InvalidInput("a container name cannot contain '/'")
    if len(name) > MAX_CONTAINER_NAME:
        raise NameTooLong(f"container name longer than {MAX_CONTAINER_NAME} characters")


def check_object_name(name: str) -> None:
    _check_text(name, "object name")
    if not name:
        raise InvalidInput("empty object name")
    if len(name) > MAX_OBJECT_NAME:
        raise NameTooLong(f"object name longer than {MAX_OBJECT_NAME} characters")


def check_meta(meta: dict[str, str], what: str = "metadata") -> None:
    """The limits of api.md §3.7 on one domain's resulting dictionary."""
    if len(meta) > MAX_META_KEYS:
        raise InvalidInput(f"too many {what} keys ({len(meta)} > {MAX_META_KEYS})")
    for key, value in meta.items():
        _check_text(key, f"{what} key")
        _check_text(value, f"{what} value")
        if not key:
            raise InvalidInput(f"empty {what} key")
        if len(key) > MAX_META_KEY:
            raise InvalidInput(f"{what} key longer than {MAX_META_KEY} characters")
        if len(value) > MAX_META_VALUE:
            raise InvalidInput(f"{what} value longer than {MAX_META_VALUE} characters")


def merge_meta(old: dict[str, str], update: dict[str, str] | None) -> dict[str, str]:
    """``old`` with ``update`` applied: an empty value deletes the key."""
    out = dict(old)
    for key, value in (update or {}).items():
        if value == "":
            out.pop(key, None)
        else:
            out[key] = value
    return out


def normalise_sharing(sharing: dict | None) -> dict[str, list[str]]:
    """Canonical grants: lower-case, ``*`` alone, a user in both lists only in write."""
    if not sharing:
        return {}
    for access in sharing:
        if access not in ("read", "write"):
            raise InvalidInput(f"unknown permission {access!r}")
    lists = {}
    for access in ("read", "write"):
        members: list[str] = []
        for item in sharing.get(access) or []:
            _check_text(item, "sharing member")
            item = item.strip().lower()
            if not item:
                continue
            if item != "*" and not _MEMBER.match(item):
                raise InvalidInput(f"bad sharing member {item!r}")
            if item not in members:
                members.append(item)
        if "*" in members:
            members = ["*"]
        lists[access] = members
    lists["read"] = [m for m in lists["read"] if m not in lists["write"]]
    return {k: v for k, v in lists.items() if v}


def check_policy(policy: dict | None) -> dict:
    """Validated container policy: versioning, quota (int), project."""
    out: dict = {}
    for key, value in (policy or {}).items():
        if key == "versioning":
            if value not in ("auto", "none"):
                raise InvalidInput(f"invalid versioning policy {value!r}")
            out[key] = value
        elif key == "quota":
            try:
                quota = int(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"invalid quota {value!r}") from None
            if quota < 0:
                raise InvalidInput("a quota cannot be negative")
            out[key] = quota
        elif key == "project":
            out[key] = str(value)
        else:
            raise InvalidInput(f"unknown container policy {key!r}")
    return out


def _etags(header: str) -> set[str]:
    tags = set()
    for part in header.split(","):
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        tags.add(part.strip('"').lower())
    return tags


def _check_preconditions(cur: VRow | None, if_match: str | None, if_none_match: str | None) -> None:
    if if_match is not None:
        tags = _etags(if_match)
        if cur is None or ("*" not in tags and cur.hash not in tags):
            raise PreconditionFailed("If-Match does not match")
    if if_none_match is not None and cur is not None:
        tags = _etags(if_none_match)
        if "*" in tags or cur.hash in tags:
            raise PreconditionFailed("If-None-Match matches")


def _nextling(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    Code-point order is SQLite's BINARY order of UTF-8, so ``name >= prefix AND
    name < nextling`` selects exactly the names starting with ``prefix``.
    """
    chars = list(prefix)
    while chars:
        c = ord(chars.pop()) + 1
        if 0xD800 <= c <= 0xDFFF:
            c = 0xE000
        if c <= 0x10FFFF:
            return "".join(chars) + chr(c)
    return None


def _ancestors(name: str) -> list[str]:
    """Names of the directory objects ``name`` may inherit sharing from, nearest first."""
    return [name[:i] for i in range(len(name) - 1, 0, -1) if name[i] == "/"]


def _perms_dict(rows: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    perms: dict[str, list[str]] = {}
    for access, member in rows:
        perms.setdefault(access, []).append(member)
    for members in perms.values():
        members.sort()
    return perms


class _Access:
    """Who the requester is to one account: grant matching with group lookups."""

    def __init__(self, tx: Tx, requester: str | None) -> None:
        self.tx = tx
        self.requester = requester
        self._groups: dict[str, bool] = {}

    def granted(self, members: Iterable[str]) -> bool:
        for member in members:
            if member == "*" or member == self.requester:
                return True
            if ":" in member and self.requester and self._in_group(member):
                return True
        return False

    def _in_group(self, member: str) -> bool:
        if member not in self._groups:
            owner, group = member.split(":", 1)
            self._groups[member] = self.tx.one(
                "SELECT 1 FROM account_groups g JOIN accounts a ON a.id = g.account_id "
                "WHERE a.name = ? AND g.name = ? AND g.member = ?",
                (owner, group, self.requester)) is not None
        return self._groups[member]

    def level(self, perms: dict[str, list[str]]) -> str:
        """"write", "read" or "" for these grants."""
        if self.granted(perms.get("write", ())):
            return "write"
        if self.granted(perms.get("read", ())):
            return "read"
        return ""


class _ContainerPerms:
    """All grants in one container, for listings: effective grants by name."""

    def __init__(self, tx: Tx, container_id: int) -> None:
        self.own: dict[str, dict[str, list[str]]] = {}
        self.dirs: set[str] = set()
        rows = tx.all(
            "SELECT o.name, p.access, p.member, v.content_type FROM objects o "
            "JOIN permissions p ON p.object_id = o.id "
            "LEFT JOIN versions v ON v.serial = o.current WHERE o.container_id = ?",
            (container_id,))
        grouped: dict[str, list[tuple[str, str]]] = {}
        for name, access, member, ctype in rows:
            grouped.setdefault(name, []).append((access, member))
            if ctype in DIRECTORY_TYPES:
                self.dirs.add(name)
        self.own = {name: _perms_dict(g) for name, g in grouped.items()}

    def effective(self, name: str) -> tuple[dict[str, list[str]], str]:
        if name in self.own:
            return self.own[name], ""
        if self.dirs:
            for anc in _ancestors(name):
                if anc in self.dirs:
                    return self.own[anc], anc
        return {}, ""

    def grants_anything(self, access: _Access) -> bool:
        return any(access.level(p) for p in self.own.values())


class ObjectsMixin:
    """Accounts, containers, objects (mixed into ``Store``)."""

    # -- accounts ---------------------------------------------------------------------------

    def ensure_account(self, account: str) -> None:
        """Create ``account`` with its container ``pithos`` unless it exists."""
        with self.db.read() as tx:
            if tx.one("SELECT 1 FROM accounts WHERE name = ?", (account,)) is not None:
                return
        with self.db.write() as tx:
            self._account_id(tx, account, create=True)

    def _own(self, account: str, requester: str | None) -> None:
        """Auto-create the requester's own account on first access."""
        if requester is not None and requester == account:
            self.ensure_account(account)

    def _account_id(self, tx: Tx, account: str, *, create: bool = False) -> int | None:
        row = tx.one("SELECT id FROM accounts WHERE name = ?", (account,))
        if row is not None:
            return row[0]
        if not create:
            return None
        _check_text(account, "account")
        now = time.time()
        account_id = tx.next_value("id")
        tx.execute("INSERT INTO accounts (id, name, quota, mtime, created) VALUES (?, ?, 0, ?, ?)",
                   (account_id, account, now, now))
        tx.execute("INSERT INTO containers (id, account_id, name, versioning, quota, project, "
                   "mtime, created) VALUES (?, ?, ?, 'auto', 0, '', ?, ?)",
                   (tx.next_value("id"), account_id, DEFAULT_CONTAINER, now, now))
        log.info("created account %s", account)
        return account_id

    def _require_account(self, tx: Tx, account: str, requester: str | None) -> int:
        account_id = self._account_id(tx, account)
        if account_id is None:
            raise NotFound("no such account") if requester == account else Forbidden()
        return account_id

    def account_info(self, account: str, requester: str) -> dict:
        self._own(account, requester)
        with self.db.read() as tx:
            account_id = self._require_account(tx, account, requester)
            owner = requester == account
            if not owner and not self._account_shares_with(tx, account_id, _Access(tx, requester)):
                raise Forbidden()
            count = tx.scalar("SELECT COUNT(*) FROM containers WHERE account_id = ?", (account_id,))
            used = tx.scalar(
                "SELECT SUM(v.size) FROM containers c JOIN objects o ON o.container_id = c.id "
                "JOIN versions v ON v.serial = o.current WHERE c.account_id = ?", (account_id,), 0)
            quota, mtime = tx.one("SELECT quota, mtime FROM accounts WHERE id = ?", (account_id,))
            cmtime = tx.scalar("SELECT MAX(mtime) FROM containers WHERE account_id = ?",
                               (account_id,), 0.0)
            meta = groups = {}
            if owner:
                meta = dict(tx.all("SELECT key, value FROM account_meta WHERE account_id = ?",
                                   (account_id,)))
                groups = {}
                for name, member in tx.all("SELECT name, member FROM account_groups "
                                           "WHERE account_id = ? ORDER BY name, member",
                                           (account_id,)):
                    groups.setdefault(name, []).append(member)
            return {"containers": int(count), "bytes": int(used), "quota": int(quota),
                    "mtime": max(float(mtime), float(cmtime)), "meta": meta, "groups": groups}

    def _account_shares_with(self, tx: Tx, account_id: int, access: _Access) -> bool:
        rows = tx.all("SELECT p.access, p.member FROM permissions p "
                      "JOIN objects o ON o.id = p.object_id "
                      "JOIN containers c ON c.id = o.container_id WHERE c.account_id = ?",
                      (account_id,))
        return access.granted(member for _, member in rows)

    def update_account(self, account: str, requester: str, meta: dict | None,
                       groups: dict | None, replace: bool) -> None:
        """Account metadata and groups; replace = drop what is not supplied."""
        if requester != account:
            raise Forbidden("only the owner can change an account")
        with self.db.write() as tx:
            account_id = self._account_id(tx, account, create=True)
            if meta is not None or replace:
                old = {} if replace else dict(tx.all(
                    "SELECT key, value FROM account_meta WHERE account_id = ?", (account_id,)))
                new = merge_meta(old, meta)
                check_meta(new, "account metadata")
                tx.execute("DELETE FROM account_meta WHERE account_id = ?", (account_id,))
                for key, value in new.items():
                    tx.execute("INSERT INTO account_meta (account_id, key, value) VALUES (?, ?, ?)",
                               (account_id, key, value))
            if groups is not None or replace:
                if replace:
                    tx.execute("DELETE FROM account_groups WHERE account_id = ?", (account_id,))
                for name, members in (groups or {}).items():
                    _check_text(name, "group name")
                    tx.execute("DELETE FROM account_groups WHERE account_id = ? AND name = ?",
                               (account_id, name))
                    for member in dict.fromkeys(m.strip().lower() for m in members or ()):
                        if member:
                            tx.execute("INSERT INTO account_groups (account_id, name, member) "
                                       "VALUES (?, ?, ?)", (account_id, name, member))
            tx.execute("UPDATE accounts SET mtime = ? WHERE id = ?", (time.time(), account_id))

    # -- containers -------------------------------------------------------------------------

    def _container(self, tx: Tx, account: str, name: str, requester: str | None) -> Cont:
        """Locate a container; a stranger gets Forbidden rather than NotFound."""
        account_id = self._require_account(tx, account, requester)
        row = tx.one("SELECT id, versioning, quota FROM containers "
                     "WHERE account_id = ? AND name = ?", (account_id, name))
        if row is None:
            raise NotFound("no such container") if requester == account else Forbidden()
        return Cont(account_id, account, row[0], name, row[1], row[2])

    def _container_record(self, tx: Tx, cont_id: int, account: str, name: str) -> ContainerRecord:
        count, used = tx.one(
            "SELECT COUNT(*), SUM(v.size) FROM objects o JOIN versions v ON v.serial = o.current "
            "WHERE o.container_id = ?", (cont_id,))
        versioning, quota, mtime = tx.one(
            "SELECT versioning, quota, mtime FROM containers WHERE id = ?", (cont_id,))
        meta = dict(tx.all("SELECT key, value FROM container_meta WHERE container_id = ?",
                           (cont_id,)))
        return ContainerRecord(account=account, name=name, count=int(count),
                               bytes_used=int(used or 0), mtime=float(mtime), versioning=versioning, quota=int(quota),
                               meta=meta)

    def list_containers(self, account: str, requester: str, *, marker: str | None = None,
                        limit: int = MAX_LIMIT, shared: bool = False,
                        public: bool = False) -> list[ContainerRecord]:
        self._own(account, requester)
        limit = MAX_LIMIT if not limit or limit <= 0 else min(limit, MAX_LIMIT)
        owner = requester == account
        if public and not owner:
            raise Forbidden("only the owner can list published objects")
        with self.db.read() as tx:
            account_id = self._require_account(tx, account, requester)
            rows = tx.all("SELECT id, name FROM containers WHERE account_id = ? AND name > ? "
                          "ORDER BY name", (account_id, marker or ""))
            access = _Access(tx, requester)
            out = []
            for cont_id, name in rows:
                if not owner:
                    if not _ContainerPerms(tx, cont_id).grants_anything(access):
                        continue
                elif shared or public:
                    has_shared = shared and tx.one(
                        "SELECT 1 FROM permissions p JOIN objects o ON o.id = p.object_id "
                        "WHERE o.container_id = ?", (cont_id,)) is not None
                    has_public = public and tx.one(
                        "SELECT 1 FROM objects WHERE container_id = ? AND public_id IS NOT NULL "
                        "AND current IS NOT NULL", (cont_id,)) is not None
                    if not (has_shared or has_public):
                        continue
                out.append(self._container_record(tx, cont_id, account, name))
                if len(out) >= limit:
                    break
            if not owner and not out and marker is None:
                raise Forbidden()
            return out

    def create_container(self, account: str, name: str, requester: str, *,
                         policy: dict | None = None, meta: dict | None = None) -> bool:
        """True if created; False if it existed (then policy/meta are merged in)."""
        check_container_name(name)
        if requester != account:
            raise Forbidden("only the owner can create containers")
        policy = check_policy(policy)
        with self.db.write() as tx:
            account_id = self._account_id(tx, account, create=True)
            exists = tx.one("SELECT id FROM containers WHERE account_id = ? AND name = ?",
                            (account_id, name))
            now = time.time()
            if exists is not None:
                self._update_container(tx, exists[0], policy, meta, replace=False)
                return False
            check_meta(meta or {}, "container metadata")
            cont_id = tx.next_value("id")
            tx.execute("INSERT INTO containers (id, account_id, name, versioning, quota, project, "
                       "mtime, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (cont_id, account_id, name, policy.get("versioning", "auto"),
                        policy.get("quota", 0), policy.get("project", ""), now, now))
            for key, value in (meta or {}).items():
                tx.execute("INSERT INTO container_meta (container_id, key, value) VALUES (?, ?, ?)",
                           (cont_id, key, value))
            tx.execute("UPDATE accounts SET mtime = ? WHERE id = ?", (now, account_id))
            return True

    def get_container(self, account: str, name: str, requester: str) -> ContainerRecord:
        self._own(account, requester)
        with self.db.read() as tx:
            cont = self._container(tx, account, name, requester)
            if requester != account and not _ContainerPerms(tx, cont.id).grants_anything(
                    _Access(tx, requester)):
                raise Forbidden()
            return self._container_record(tx, cont.id, account, name)

    def update_container(self, account: str, name: str, requester: str, *,
                         policy: dict | None = None, meta: dict | None = None,
                         replace: bool = False) -> None:
        if requester != account:
            raise Forbidden("only the owner can change a container")
        policy = check_policy(policy)
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, name, requester)
            self._update_container(tx, cont.id, policy, meta, replace=replace)

    def _update_container(self, tx: Tx, cont_id: int, policy: dict, meta: dict | None,
                          replace: bool) -> None:
        for key in ("versioning", "quota", "project"):
            if key in policy:
                tx.execute(f"UPDATE containers SET {key} = ? WHERE id = ?", (policy[key], cont_id))
        if meta is not None or replace:
            old = {} if replace else dict(tx.all(
                "SELECT key, value FROM container_meta WHERE container_id = ?", (cont_id,)))
            new = merge_meta(old, meta)
            check_meta(new, "container metadata")
            tx.execute("DELETE FROM container_meta WHERE container_id = ?", (cont_id,))
            for key, value in new.items():
                tx.execute("INSERT INTO container_meta (container_id, key, value) VALUES (?, ?, ?)",
                           (cont_id, key, value))
        tx.execute("UPDATE containers SET mtime = ? WHERE id = ?", (time.time(), cont_id))

    def delete_container(self, account: str, name: str, requester: str) -> None:
        """Remove an empty container with all its history."""
        if requester != account:
            raise Forbidden("only the owner can delete a container")
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, name, requester)
            if tx.one("SELECT 1 FROM objects WHERE container_id = ? AND current IS NOT NULL",
                      (cont.id,)) is not None:
                raise ContainerNotEmpty("container is not empty")
            maps = [r[0] for r in tx.all(
                "SELECT DISTINCT v.map_id FROM versions v JOIN objects o ON o.id = v.object_id "
                "WHERE o.container_id = ? AND v.map_id IS NOT NULL", (cont.id,))]
            tx.execute("DELETE FROM meta WHERE serial IN (SELECT v.serial FROM versions v "
                       "JOIN objects o ON o.id = v.object_id WHERE o.container_id = ?)", (cont.id,))
            tx.execute("DELETE FROM versions WHERE object_id IN "
                       "(SELECT id FROM objects WHERE container_id = ?)", (cont.id,))
            tx.execute("DELETE FROM permissions WHERE object_id IN "
                       "(SELECT id FROM objects WHERE container_id = ?)", (cont.id,))
            tx.execute("DELETE FROM objects WHERE container_id = ?", (cont.id,))
            tx.execute("DELETE FROM container_meta WHERE container_id = ?", (cont.id,))
            tx.execute("DELETE FROM containers WHERE id = ?", (cont.id,))
            self._drop_orphan_maps(tx, maps)
            tx.execute("UPDATE accounts SET mtime = ? WHERE id = ?", (time.time(), cont.account_id))

    def delete_container_objects(self, account: str, name: str, requester: str) -> None:
        """Tombstone every live object of a container (DELETE ?delimiter=/)."""
        if requester != account:
            raise Forbidden("only the owner can delete objects")
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, name, requester)
            rows = tx.all(f"SELECT o.id, {VCOLS} FROM objects o JOIN versions v "
                          "ON v.serial = o.current WHERE o.container_id = ?", (cont.id,))
            now = time.time()
            for row in rows:
                self._tombstone(tx, cont, row[0], VRow(*row[1:]), requester, now)

    # -- reading objects --------------------------------------------------------------------

    def _path_perms(self, tx: Tx, cont_id: int, name: str) -> tuple[dict[str, list[str]], str]:
        """Effective grants of one path: its own, else the nearest directory object's."""
        names = [name, *_ancestors(name)]
        grouped: dict[str, list[tuple[str, str]]] = {}
        dirs = set()
        for part in chunks(names):
            for oname, access, member, ctype in tx.all(
                    "SELECT o.name, p.access, p.member, v.content_type FROM objects o "
                    "JOIN permissions p ON p.object_id = o.id "
                    "LEFT JOIN versions v ON v.serial = o.current "
                    f"WHERE o.container_id = ? AND o.name IN ({placeholders(len(part))})",
                    (cont_id, *part)):
                grouped.setdefault(oname, []).append((access, member))
                if ctype in DIRECTORY_TYPES:
                    dirs.add(oname)
        if name in grouped:
            return _perms_dict(grouped[name]), ""
        for anc in names[1:]:
            if anc in grouped and anc in dirs:
                return _perms_dict(grouped[anc]), anc
        return {}, ""

    def _allowed(self, tx: Tx, cont: Cont, requester: str | None,
                 perms: dict[str, list[str]], public_id: str | None, *, write: bool = False) -> str:
        """"" for the owner, else the requester's level; Forbidden if not enough."""
        if requester is not None and requester == cont.account:
            return ""
        level = _Access(tx, requester).level(perms)
        if write:
            if level != "write":
                raise Forbidden("no write permission")
            return level
        if level:
            return level
        if public_id:
            return "read"
        raise Forbidden("no read permission")

    def _meta(self, tx: Tx, serial: int, domain: str = PITHOS) -> dict[str, str]:
        return dict(tx.all("SELECT key, value FROM meta WHERE serial = ? AND domain = ?",
                           (serial, domain)))

    def _domains(self, tx: Tx, serial: int) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for domain, key, value in tx.all("SELECT domain, key, value FROM meta WHERE serial = ?",
                                         (serial,)):
            out.setdefault(domain, {})[key] = value
        return out

    def _make_version(self, cont: Cont, name: str, row: VRow, meta: dict[str, str],
                      perms: dict[str, list[str]], shared_by: str, public_id: str | None,
                      latest_mtime: float, allowed_to: str) -> Version:
        return Version(
            account=cont.account, container=cont.name, name=name, serial=row.serial,
            uuid=row.uuid, size=row.size, content_type=row.content_type, hash=row.hash,
            checksum=row.checksum, hashes=None, mtime=row.mtime, modified_by=row.modified_by,
            meta=meta, cluster=CLUSTER_NAMES[row.cluster], sharing=perms, shared_by=shared_by,
            public_id=public_id or "", latest_mtime=latest_mtime, allowed_to=allowed_to,
            created=row.created)

    def _read_version(self, tx: Tx, cont: Cont, name: str, requester: str | None, *,
                      version: int | None = None, write: bool = False) -> Version:
        obj = tx.one("SELECT id, current, public_id FROM objects "
                     "WHERE container_id = ? AND name = ?",
                     (cont.id, name))
        perms, shared_by = self._path_perms(tx, cont.id, name)
        allowed = self._allowed(tx, cont, requester, perms, obj[2] if obj else None, write=write)
        if obj is None:
            raise NotFound("no such object")
        obj_id, current, public_id = obj
        if version is None:
            if current is None:
                raise NotFound("no such object")
            serial = current
        else:
            serial = version
        row = tx.one(f"SELECT {VCOLS} FROM versions v WHERE v.serial = ? AND v.object_id = ?",
                     (serial, obj_id))
        if row is None or row[-1] == DELETED:
            raise NotFound("no such version")
        row = VRow(*row)
        latest = tx.scalar("SELECT mtime FROM versions WHERE object_id = ? "
                           "ORDER BY serial DESC LIMIT 1", (obj_id,))
        return self._make_version(cont, name, row, self._meta(tx, row.serial), perms, shared_by,
                                  public_id, float(latest), allowed)

    def get_version(self, account: str, container: str, name: str, requester: str | None, *,
                    version: int | None = None) -> Version:
        """The current (or a given) version, as ``requester`` may see it."""
        self._own(account, requester)
        with self.db.read() as tx:
            cont = self._container(tx, account, container, requester)
            return self._read_version(tx, cont, name, requester, version=version)

    def hashes_of(self, version: Version) -> list[str]:
        """The hashmap of a version (NotFound if it was purged meanwhile)."""
        with self.db.read() as tx:
            row = tx.one("SELECT h.blocks FROM versions v JOIN hashmaps h ON h.id = v.map_id "
                         "WHERE v.serial = ?", (version.serial,))
        if row is None:
            raise NotFound("no such version")
        blob = bytes(row[0])
        return [blob[i : i + 32].hex() for i in range(0, len(blob), 32)]

    def list_versions(self, account: str, container: str, name: str,
                      requester: str) -> list[tuple[int, float]]:
        """(serial, mtime) of every non-tombstone version, oldest first."""
        self._own(account, requester)
        with self.db.read() as tx:
            cont = self._container(tx, account, container, requester)
            obj = tx.one("SELECT id, public_id FROM objects WHERE container_id = ? AND name = ?",
                         (cont.id, name))
            perms, _ = self._path_perms(tx, cont.id, name)
            self._allowed(tx, cont, requester, perms, obj[1] if obj else None)
            if obj is None:
                raise NotFound("no such object")
            return [(s, float(m)) for s, m in tx.all(
                "SELECT serial, mtime FROM versions WHERE object_id = ? AND cluster <> ? "
                "ORDER BY serial", (obj[0], DELETED))]

    def get_public(self, public_id: str) -> Version:
        """The current version of a published object (anonymous access)."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT a.id, a.name, c.id, c.name, c.versioning, c.quota, o.name FROM objects o "
                "JOIN containers c ON c.id = o.container_id JOIN accounts a ON a.id = c.account_id "
                "WHERE o.public_id = ? AND o.current IS NOT NULL", (public_id,))
            if row is None:
                raise NotFound("no such public object")
            cont = Cont(*row[:6])
            return self._read_version(tx, cont, row[6], None)

    # -- listing ----------------------------------------------------------------------------

    def list_objects(self, account: str, container: str, requester: str, *, prefix: str = "",
                     delimiter: str | None = None, marker: str | None = None,
                     limit: int = MAX_LIMIT, path: str | None = None, shared: bool = False,
                     public: bool = False) -> list[Version | str]:
        """Objects (``Version``) and subdirectories (``str`` ending with the delimiter).

        api.md §3.5: a prefix not ending with the delimiter gets it appended; a
        name whose first delimiter after the prefix is neither at index 0 nor
        at its end collapses into a subdir; an object wins over an identical
        subdir; ``path`` means prefix=path, delimiter "/" and no subdirs;
        marker is exclusive and applies to subdirs as well; ``limit`` counts
        returned entries. A stranger sees only what is shared with them.
        """
        self._own(account, requester)
        virtual = True
        if path is not None:
            prefix, delimiter, virtual = path, "/", False
        prefix = prefix or ""
        if prefix.startswith("/"):
            prefix = prefix[1:]
        delimiter = delimiter or None
        if prefix and delimiter and not prefix.endswith(delimiter):
            prefix += delimiter
        limit = MAX_LIMIT if not limit or limit <= 0 else min(limit, MAX_LIMIT)
        owner = requester == account
        if public and not owner:
            raise Forbidden("only the owner can list published objects")
        marker = marker or ""
        with self.db.read() as tx:
            cont = self._container(tx, account, container, requester)
            perms = _ContainerPerms(tx, cont.id)
            access = _Access(tx, requester)
            if not owner and not perms.grants_anything(access):
                raise Forbidden()
            upper = _nextling(prefix) if prefix else None
            # Seek position: strictly after ``bound`` (or from it when inclusive).
            if marker >= prefix:
                bound, inclusive = marker, False
            else:
                bound, inclusive = prefix, True
            # The loop below runs once per listed row (10,000 per full page), so it
            # works on the raw row tuples and skips grant lookups nobody needs.
            picked: list[tuple | str] = []
            no_grants: tuple[dict, str] = ({}, "")
            any_grants = bool(perms.own)
            filtered = not owner or shared or public
            last_object = None
            done = False
            while not done and len(picked) < limit:
                query = (f"SELECT o.name, o.public_id, {VCOLS} FROM objects o "
                         "JOIN versions v ON v.serial = o.current WHERE o.container_id = ? "
                         f"AND o.name {'>=' if inclusive else '>'} ?")
                params: list = [cont.id, bound]
                if upper is not None:
                    query += " AND o.name < ?"
                    params.append(upper)
                query += " ORDER BY o.name"
                cursor = tx.execute(query, params)
                done = True
                for row in cursor:
                    name = row[0]
                    eff = perms.effective(name) if any_grants else no_grants
                    allowed_to = ""
                    if filtered:
                        if not owner:
                            allowed_to = access.level(eff[0])
                            if not allowed_to:
                                continue
                        elif not ((shared and eff[0]) or (public and row[1])):
                            continue
                    if delimiter:
                        idx = name.find(delimiter, len(prefix))
                        if idx > 0 and idx + len(delimiter) < len(name):
                            subdir = name[: idx + len(delimiter)]
                            if virtual and subdir > marker and subdir != last_object:
                                picked.append(subdir)
                            nxt = _nextling(subdir)
                            if nxt is None or (upper is not None and nxt >= upper):
                                break  # nothing after this subtree: done stays True
                            bound, inclusive, done = nxt, True, False
                            break
                    picked.append((row, eff, allowed_to))
                    last_object = name
                    if len(picked) >= limit:
                        break
                cursor.close()
            picked = picked[:limit]
            serials = [p[0][2] for p in picked if not isinstance(p, str)]
            metas: dict[int, dict[str, str]] = {}
            for part in chunks(serials):
                for serial, key, value in tx.all(
                        f"SELECT serial, key, value FROM meta WHERE domain = ? "
                        f"AND serial IN ({placeholders(len(part))})", (PITHOS, *part)):
                    metas.setdefault(serial, {})[key] = value
        out: list[Version | str] = []
        append, new_version = out.append, Version.from_values
        account, cname = cont.account, cont.name
        for p in picked:
            if isinstance(p, str):
                append(p)
                continue
            row, (sharing, shared_by), allowed_to = p
            # Columns: name, public_id, then VCOLS (serial uuid created size content_type
            # hash checksum map_id mtime modified_by cluster).
            append(new_version((account, cname, row[0], row[2], row[3], row[5], row[6], row[7],
                                row[8], None, row[10], row[11], metas.get(row[2]) or {},
                                "normal", sharing, shared_by, row[1] or "", row[10], allowed_to,
                                row[4])))
        return out

    # -- writing objects --------------------------------------------------------------------

    def _object_row(self, tx: Tx, cont: Cont, name: str, *, create: bool = False):
        """(id, current VRow or None, public_id) of a path; None if it never existed."""
        row = tx.one("SELECT id, current, public_id FROM objects "
                     "WHERE container_id = ? AND name = ?",
                     (cont.id, name))
        if row is None:
            if not create:
                return None
            obj_id = tx.next_value("id")
            tx.execute("INSERT INTO objects (id, container_id, name) VALUES (?, ?, ?)",
                       (obj_id, cont.id, name))
            return obj_id, None, None
        cur = None
        if row[1] is not None:
            cur = VRow(*tx.one(f"SELECT {VCOLS} FROM versions v WHERE v.serial = ?", (row[1],)))
        return row[0], cur, row[2]

    def _hashmap_id(self, tx: Tx, size: int, top: str, hashes: list[str]) -> int:
        blob = b"".join(bytes.fromhex(h) for h in hashes)
        for map_id, blocks in tx.all("SELECT id, blocks FROM hashmaps WHERE hash = ? AND size = ?",
                                     (top, size)):
            if bytes(blocks) == blob:
                return map_id
        map_id = tx.next_value("id")
        tx.execute("INSERT INTO hashmaps (id, size, hash, blocks) VALUES (?, ?, ?, ?)",
                   (map_id, size, top, blob))
        return map_id

    def _drop_orphan_maps(self, tx: Tx, map_ids: Iterable[int]) -> None:
        for map_id in set(map_ids):
            if tx.one("SELECT 1 FROM versions WHERE map_id = ?", (map_id,)) is None:
                tx.execute("DELETE FROM hashmaps WHERE id = ?", (map_id,))

    def _purge_others(self, tx: Tx, obj_id: int, keep: int) -> None:
        """Versioning "none": drop every version of the path but ``keep``."""
        maps = [r[0] for r in tx.all("SELECT map_id FROM versions WHERE object_id = ? "
                                     "AND serial <> ? AND map_id IS NOT NULL", (obj_id, keep))]
        tx.execute("DELETE FROM meta WHERE serial IN "
                   "(SELECT serial FROM versions WHERE object_id = ? AND serial <> ?)",
                   (obj_id, keep))
        tx.execute("DELETE FROM versions WHERE object_id = ? AND serial <> ?", (obj_id, keep))
        self._drop_orphan_maps(tx, maps)

    def _write_version(self, tx: Tx, cont: Cont, obj_id: int, prev: VRow | None, *,
                       requester: str, uuid: str, created: float, size: int, hash: str,
                       checksum: str, map_id: int | None, content_type: str,
                       domains: dict[str, dict[str, str]], now: float,
                       cluster: int = NORMAL) -> int:
        """Append a version to a path; the previous one becomes history or is purged."""
        serial = tx.next_value("serial")
        tx.execute("INSERT INTO versions (serial, object_id, cluster, uuid, created, size, "
                   "content_type, hash, checksum, map_id, mtime, modified_by) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (serial, obj_id, cluster, uuid, created, size, content_type, hash, checksum,
                    map_id, now, requester))
        for domain, kv in domains.items():
            for key, value in kv.items():
                tx.execute("INSERT INTO meta (serial, domain, key, value) VALUES (?, ?, ?, ?)",
                           (serial, domain, key, value))
        if cont.versioning == "none":
            self._purge_others(tx, obj_id, serial)
        elif prev is not None:
            tx.execute("UPDATE versions SET cluster = ? WHERE serial = ?", (HISTORY, prev.serial))
        tx.execute("UPDATE objects SET current = ? WHERE id = ?",
                   (serial if cluster == NORMAL else None, obj_id))
        tx.execute("UPDATE containers SET mtime = ? WHERE id = ?", (now, cont.id))
        return serial

    def _tombstone(self, tx: Tx, cont: Cont, obj_id: int, cur: VRow, requester: str,
                   now: float) -> None:
        """Delete a live object: tombstone, no metadata, path grants and public id cleared."""
        self._write_version(tx, cont, obj_id, cur, requester=requester, uuid=cur.uuid,
                            created=cur.created, size=0, hash="", checksum="", map_id=None,
                            content_type="", domains={}, now=now, cluster=DELETED)
        tx.execute("DELETE FROM permissions WHERE object_id = ?", (obj_id,))
        tx.execute("UPDATE objects SET public_id = NULL WHERE id = ?", (obj_id,))

    def _set_perms(self, tx: Tx, obj_id: int, perms: dict[str, list[str]]) -> None:
        tx.execute("DELETE FROM permissions WHERE object_id = ?", (obj_id,))
        for access, members in perms.items():
            for member in dict.fromkeys(members):
                tx.execute("INSERT INTO permissions (object_id, access, member) VALUES (?, ?, ?)",
                           (obj_id, access, member))

    def _set_public(self, tx: Tx, obj_id: int, public: bool, current: str | None) -> str:
        if not public:
            tx.execute("UPDATE objects SET public_id = NULL WHERE id = ?", (obj_id,))
            return ""
        if current:
            return current
        while True:
            public_id = "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(16))
            if tx.one("SELECT 1 FROM objects WHERE public_id = ?", (public_id,)) is None:
                break
        tx.execute("UPDATE objects SET public_id = ? WHERE id = ?", (public_id, obj_id))
        return public_id

    def _check_quota(self, tx: Tx, cont: Cont, delta: int) -> None:
        if delta <= 0:
            return
        if cont.quota:
            used = tx.scalar("SELECT SUM(v.size) FROM objects o JOIN versions v "
                             "ON v.serial = o.current WHERE o.container_id = ?", (cont.id,), 0)
            if used + delta > cont.quota:
                raise QuotaExceeded(f"container quota of {cont.quota} bytes exceeded")
        quota = tx.scalar("SELECT quota FROM accounts WHERE id = ?", (cont.account_id,), 0)
        if quota:
            used = tx.scalar("SELECT SUM(v.size) FROM containers c JOIN objects o "
                             "ON o.container_id = c.id JOIN versions v ON v.serial = o.current "
                             "WHERE c.account_id = ?", (cont.account_id,), 0)
            if used + delta > quota:
                raise QuotaExceeded(f"account quota of {quota} bytes exceeded")

    def _apply_path_state(self, tx: Tx, cont: Cont, obj_id: int, requester: str,
                          sharing: dict | None, public: bool | None, public_id: str | None) -> None:
        if sharing is not None:
            self._set_perms(tx, obj_id, sharing)
        if public is not None:
            self._set_public(tx, obj_id, public, public_id)

    def _owner_only_path_state(self, cont: Cont, requester: str, sharing, public) -> None:
        if (sharing is not None or public is not None) and requester != cont.account:
            raise Forbidden("only the owner can change sharing or publishing")

    def _check_blocks(self, hashes: list[str]) -> None:
        """MissingBlocks unless every block is stored; makes the pending ones durable."""
        with disk_space():          # an fsync can be where a full disk shows
            missing = self.blocks.seal(hashes)
        if missing:
            raise MissingBlocks(missing)

    def put_object(self, account: str, container: str, name: str, requester: str, *,
                   size: int, hashes: list[str], content_type: str, meta: dict[str, str],
                   sharing: dict | None = None, public: bool | None = None,
                   if_match: str | None = None, if_none_match: str | None = None,
                   checksum: str = "") -> Version:
        """Create or replace an object from a hashmap whose blocks are stored.

        The uuid is kept when the object currently exists, and so are the
        domains other than "pithos" (an overwritten image stays registered,
        api.md §4.11); a new or re-created object gets a new uuid and no
        other domain.
        """
        check_object_name(name)
        if not isinstance(size, int) or size < 0:
            raise InvalidInput("invalid size")
        hashes = [h.lower() if isinstance(h, str) else h for h in hashes or []]
        for h in hashes:
            if not valid_hash(h):
                raise InvalidInput("invalid block hash")
        if size == 0:
            if hashes not in ([], [EMPTY_HASH]):
                raise InvalidInput("a zero-length object has no blocks")
            hashes = [EMPTY_HASH]
        elif len(hashes) != block_count(size, self.block_size):
            raise InvalidInput(f"{len(hashes)} hashes do not fit {size} bytes")
        meta = dict(meta or {})
        check_meta(meta)
        _check_text(content_type, "content type")
        sharing = normalise_sharing(sharing) if sharing is not None else None
        self._check_blocks(hashes)  # fast answer before taking the write lock
        top = top_hash(hashes)
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, container, requester)
            self._owner_only_path_state(cont, requester, sharing, public)
            obj = self._object_row(tx, cont, name)
            if requester != account:
                perms, _ = self._path_perms(tx, cont.id, name)
                self._allowed(tx, cont, requester, perms, None, write=True)
            cur = obj[1] if obj else None
            _check_preconditions(cur, if_match, if_none_match)
            # Again under the lock that gc holds while deleting.
            self._check_blocks(hashes)
            self._check_quota(tx, cont, size - (cur.size if cur else 0))
            if obj is None:
                obj = self._object_row(tx, cont, name, create=True)
            obj_id, _, public_id = obj
            now = time.time()
            domains = {PITHOS: meta}
            if cur is not None:
                for domain, kv in self._domains(tx, cur.serial).items():
                    if domain != PITHOS:
                        domains[domain] = kv
                uuid, created = cur.uuid, cur.created
            else:
                uuid, created = str(uuidlib.uuid4()), now
            map_id = self._hashmap_id(tx, size, top, hashes)
            self._write_version(tx, cont, obj_id, cur, requester=requester, uuid=uuid,
                                created=created, size=size, hash=top, checksum=checksum or "",
                                map_id=map_id, content_type=content_type, domains=domains, now=now)
            self._apply_path_state(tx, cont, obj_id, requester, sharing, public, public_id)
            return self._read_version(tx, cont, name, requester)

    def update_object_meta(self, account: str, container: str, name: str, requester: str, *,
                           meta: dict[str, str], replace: bool) -> Version | None:
        """POST metadata: replace (always a new version) or update (None if nothing given)."""
        if not replace and not meta:
            # Still answer 404/403 as the POST would.
            self.get_version(account, container, name, requester)
            return None
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, container, requester)
            obj = self._object_row(tx, cont, name)
            perms, _ = self._path_perms(tx, cont.id, name)
            self._allowed(tx, cont, requester, perms, obj[2] if obj else None, write=True)
            if obj is None or obj[1] is None:
                raise NotFound("no such object")
            obj_id, cur, _ = obj
            domains = self._domains(tx, cur.serial)
            new = dict(meta or {}) if replace else merge_meta(domains.get(PITHOS, {}), meta)
            if replace:
                new = {k: v for k, v in new.items() if v != ""}
            check_meta(new)
            domains[PITHOS] = new
            self._write_version(tx, cont, obj_id, cur, requester=requester, uuid=cur.uuid,
                                created=cur.created, size=cur.size, hash=cur.hash,
                                checksum=cur.checksum, map_id=cur.map_id,
                                content_type=cur.content_type, domains=domains, now=time.time())
            return self._read_version(tx, cont, name, requester)

    def _rewrite_domain(self, tx: Tx, cont: Cont, obj_id: int, cur: VRow, requester: str,
                        domain: str, values: dict[str, str] | None) -> int:
        """A new version equal to ``cur`` but with ``domain`` replaced (None drops it)."""
        domains = self._domains(tx, cur.serial)
        if values is None:
            domains.pop(domain, None)
        else:
            domains[domain] = values
        return self._write_version(tx, cont, obj_id, cur, requester=requester, uuid=cur.uuid,
                                   created=cur.created, size=cur.size, hash=cur.hash,
                                   checksum=cur.checksum, map_id=cur.map_id,
                                   content_type=cur.content_type, domains=domains,
                                   now=time.time())

    def set_sharing(self, account: str, container: str, name: str, requester: str,
                    sharing: dict) -> None:
        """Replace a path's grants ({} removes them); no new version."""
        sharing = normalise_sharing(sharing)
        self._own(account, requester)
        with self.db.write() as tx:
            obj_id = self._owned_live_object(tx, account, container, name, requester)
            self._set_perms(tx, obj_id, sharing)

    def set_public(self, account: str, container: str, name: str, requester: str,
                   public: bool) -> str:
        """Publish (keeping an existing public id) or unpublish; no new version."""
        self._own(account, requester)
        with self.db.write() as tx:
            obj_id = self._owned_live_object(tx, account, container, name, requester)
            current = tx.scalar("SELECT public_id FROM objects WHERE id = ?", (obj_id,))
            return self._set_public(tx, obj_id, public, current)

    def _owned_live_object(self, tx: Tx, account: str, container: str, name: str,
                           requester: str) -> int:
        cont = self._container(tx, account, container, requester)
        obj = self._object_row(tx, cont, name)
        if requester != account:
            perms, _ = self._path_perms(tx, cont.id, name)
            self._allowed(tx, cont, requester, perms, obj[2] if obj else None)
            raise Forbidden("only the owner can change sharing or publishing")
        if obj is None or obj[1] is None:
            raise NotFound("no such object")
        return obj[0]

    def delete_object(self, account: str, container: str, name: str, requester: str, *,
                      delimiter: str | None = None) -> None:
        """Tombstone an object (and with a delimiter everything below it)."""
        self._own(account, requester)
        with self.db.write() as tx:
            cont = self._container(tx, account, container, requester)
            obj = self._object_row(tx, cont, name)
            if requester != account:
                perms, _ = self._path_perms(tx, cont.id, name)
                self._allowed(tx, cont, requester, perms, obj[2] if obj else None)
                raise Forbidden("only the owner can delete")
            if obj is None or obj[1] is None:
                raise NotFound("no such object")
            now = time.time()
            self._tombstone(tx, cont, obj[0], obj[1], requester, now)
            if delimiter:
                for sub in self._live_names_under(tx, cont, name, delimiter):
                    sobj = self._object_row(tx, cont, sub)
                    self._tombstone(tx, cont, sobj[0], sobj[1], requester, now)

    def _live_names_under(self, tx: Tx, cont: Cont, name: str, delimiter: str) -> list[str]:
        prefix = name if name.endswith(delimiter) else name + delimiter
        upper = _nextling(prefix)
        query = ("SELECT name FROM objects WHERE container_id = ? AND current IS NOT NULL "
                 "AND name >= ?")
        params: list = [cont.id, prefix]
        if upper is not None:
            query += " AND name < ?"
            params.append(upper)
        return [r[0] for r in tx.all(query + " ORDER BY name", params) if r[0] != name]

    def copy_object(self, src_account: str, src_container: str, src_name: str,
                    dst_account: str, dst_container: str, dst_name: str, requester: str, *,
                    meta_update: dict | None = None, content_type: str | None = None,
                    sharing: dict | None = None, public: bool | None = None,
                    src_version: int | None = None, delimiter: str | None = None) -> Version:
        """X-Copy-From: new uuid (kept when copying onto itself), every domain copied."""
        return self._transfer(src_account, src_container, src_name, dst_account, dst_container,
                              dst_name, requester, meta_update=meta_update,
                              content_type=content_type, sharing=sharing, public=public,
                              src_version=src_version, delimiter=delimiter, move=False)

    def move_object(self, src_account: str, src_container: str, src_name: str,
                    dst_account: str, dst_container: str, dst_name: str, requester: str, *,
                    meta_update: dict | None = None, content_type: str | None = None,
                    sharing: dict | None = None, public: bool | None = None,
                    delimiter: str | None = None) -> Version:
        """X-Move-From: the destination takes the source's uuid and domains; the
        source is tombstoned and its grants and public id are lost."""
        if requester != src_account:
            raise Forbidden("only the owner can move an object")
        return self._transfer(src_account, src_container, src_name, dst_account, dst_container,
                              dst_name, requester, meta_update=meta_update,
                              content_type=content_type, sharing=sharing, public=public,
                              src_version=None, delimiter=delimiter, move=True)

    def _transfer(self, src_account, src_container, src_name, dst_account, dst_container,
                  dst_name, requester, *, meta_update, content_type, sharing, public,
                  src_version, delimiter, move) -> Version:
        check_object_name(src_name)
        check_object_name(dst_name)
        if content_type is not None:
            _check_text(content_type, "content type")
        sharing = normalise_sharing(sharing) if sharing is not None else None
        self._own(src_account, requester)
        self._own(dst_account, requester)
        with self.db.write() as tx:
            src = self._container(tx, src_account, src_container, requester)
            dst = self._container(tx, dst_account, dst_container, requester)
            self._owner_only_path_state(dst, requester, sharing, public)
            pairs = [(src_name, dst_name)]
            if delimiter:
                for sub in self._live_names_under(tx, src, src_name, delimiter):
                    new = dst_name + sub[len(src_name):]
                    check_object_name(new)
                    pairs.append((sub, new))
            if src.id == dst.id and len(pairs) > 1:
                sources_set = {s for s, _ in pairs}
                if any(d in sources_set and d != s for s, d in pairs):
                    raise InvalidInput("cannot copy or move a directory into itself")
            # Read every source before writing anything.
            sources = []
            for i, (s_name, d_name) in enumerate(pairs):
                version = src_version if i == 0 else None
                sv = self._read_version(tx, src, s_name, requester, version=version)
                srow = tx.one(f"SELECT {VCOLS} FROM versions v WHERE v.serial = ?", (sv.serial,))
                sources.append((s_name, d_name, VRow(*srow), self._domains(tx, sv.serial)))
            now = time.time()
            for s_name, d_name, srow, domains in sources:
                same = (src.id, s_name) == (dst.id, d_name)
                if requester != dst_account:
                    perms, _ = self._path_perms(tx, dst.id, d_name)
                    self._allowed(tx, dst, requester, perms, None, write=True)
                dobj = self._object_row(tx, dst, d_name)
                dcur = dobj[1] if dobj else None
                if not same:
                    self._check_quota(tx, dst, srow.size - (dcur.size if dcur else 0)
                                      if not (move and src.id == dst.id) else
                                      -(dcur.size if dcur else 0))
                new_meta = merge_meta(domains.get(PITHOS, {}), meta_update)
                check_meta(new_meta)
                domains = {**domains, PITHOS: new_meta}
                if move and not same:
                    uuid, created = srow.uuid, srow.created
                elif same and dcur is not None:  # onto itself (maybe from an old version)
                    uuid, created = dcur.uuid, dcur.created
                else:
                    uuid, created = str(uuidlib.uuid4()), now
                if dobj is None:
                    dobj = self._object_row(tx, dst, d_name, create=True)
                self._write_version(tx, dst, dobj[0], dcur, requester=requester, uuid=uuid,
                                    created=created, size=srow.size, hash=srow.hash,
                                    checksum=srow.checksum, map_id=srow.map_id,
                                    content_type=content_type if content_type is not None
                                    else srow.content_type, domains=domains, now=now)
                if move and not same:
                    sobj = self._object_row(tx, src, s_name)
                    self._tombstone(tx, src, sobj[0], sobj[1], requester, now)
                self._apply_path_state(tx, dst, dobj[0], requester, sharing, public, dobj[2])
            return self._read_version(tx, dst, dst_name, requester)
