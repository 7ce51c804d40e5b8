"""Users and tokens of the embedded identity service.

A token is a random secret shown once; the database keeps only its SHA-256,
looked up through a unique index and compared with ``hmac.compare_digest``.
The default user ("user", the one ``imagefs mount`` uses without a cloud)
has its token in ``DATA/default.token`` (0600, "UUID TOKEN\\n") so that the
mount and kamaki can find it; if that file is lost the token is re-issued.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
import uuid as uuidlib
from collections.abc import Iterable
from pathlib import Path

from imagefs import log as imagefs_log
from imagefs.config import write_private_file
from imagefs.errors import AlreadyExists, InvalidInput
from imagefs.service.store.db import Tx, chunks, placeholders
from imagefs.service.store.records import User

log = logging.getLogger(__name__)

DEFAULT_USER = "user"
DEFAULT_TOKEN_FILE = "default.token"
MAX_NAME = 256


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """Never with a leading "-": ``imagefs mount --token T`` and ``kamaki config set ...
    T`` would take it for an option (1 token in 64 would)."""
    while True:
        token = secrets.token_urlsafe(30)
        if not token.startswith("-"):
            return token


class UsersMixin:
    """Users (mixed into ``Store``)."""

    data_dir: Path

    def _insert_user(self, tx: Tx, name: str, token: str, *, is_default: bool = False) -> User:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or "\0" in name:
            raise InvalidInput("a user name must be 1 to 256 characters")
        if tx.one("SELECT 1 FROM users WHERE name = ?", (name,)) is not None:
            raise AlreadyExists(f"a user named {name!r} exists")
        user = User(uuid=str(uuidlib.uuid4()), name=name, token=token, created=time.time())
        tx.execute("INSERT INTO users (uuid, name, token_hash, created, is_default) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (user.uuid, name, _token_hash(token), user.created, int(is_default)))
        self._account_id(tx, user.uuid, create=True)
        return user

    def add_user(self, name: str) -> User:
        """A new user with a fresh token (and its account)."""
        token = new_token()
        imagefs_log.register_secret(token)
        with self.db.write() as tx:
            user = self._insert_user(tx, name, token)
        log.info("added user %s (%s)", user.uuid, name)
        return user

    def list_users(self) -> list[User]:
        with self.db.read() as tx:
            rows = tx.all("SELECT uuid, name, created FROM users ORDER BY created, name")
        return [User(uuid=u, name=n, token="", created=float(c)) for u, n, c in rows]

    def user_for_token(self, token: str) -> User | None:
        """The user holding ``token``, or None."""
        if not token or not isinstance(token, str):
            return None
        wanted = _token_hash(token)
        with self.db.read() as tx:
            row = tx.one("SELECT uuid, name, token_hash, created FROM users WHERE token_hash = ?",
                         (wanted,))
        if row is None or not hmac.compare_digest(row[2], wanted):
            return None
        return User(uuid=row[0], name=row[1], token=token, created=float(row[3]))

    def users_by_uuid(self, uuids: Iterable[str]) -> dict[str, str]:
        return self._user_map("uuid", "name", uuids)

    def users_by_name(self, names: Iterable[str]) -> dict[str, str]:
        return self._user_map("name", "uuid", names)

    def _user_map(self, by: str, to: str, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, str] = {}
        with self.db.read() as tx:
            for part in chunks(keys):
                for k, v in tx.all(f"SELECT {by}, {to} FROM users "
                                   f"WHERE {by} IN ({placeholders(len(part))})", part):
                    out[k] = v
        return out

    def default_user(self) -> tuple[User, bool]:
        """The default user and whether it was just created; keeps DATA/default.token.

        The token file is written inside the transaction, so a second process
        starting at the same moment reads the file of the first, never
        re-issues the token under it.
        """
        path = self.data_dir / DEFAULT_TOKEN_FILE
        with self.db.write() as tx:
            row = tx.one("SELECT uuid, name, token_hash, created FROM users WHERE is_default = 1")
            if row is None:
                existing = tx.one("SELECT uuid FROM users WHERE name = ?", (DEFAULT_USER,))
                if existing is None:
                    user = self._insert_user(tx, DEFAULT_USER, new_token(), is_default=True)
                    write_private_file(path, f"{user.uuid} {user.token}\n")
                    imagefs_log.register_secret(user.token)
                    log.info("created the default user %s", user.uuid)
                    return user, True
                tx.execute("UPDATE users SET is_default = 1 WHERE uuid = ?", (existing[0],))
                row = tx.one("SELECT uuid, name, token_hash, created FROM users WHERE uuid = ?",
                             (existing[0],))
            uuid, name, token_hash, created = row
            token = self._read_token_file(path, uuid)
            if token is None or not hmac.compare_digest(_token_hash(token), token_hash):
                token = new_token()
                tx.execute("UPDATE users SET token_hash = ? WHERE uuid = ?",
                           (_token_hash(token), uuid))
                write_private_file(path, f"{uuid} {token}\n")
                log.warning("%s was missing or stale: issued a new token for the default user",
                            path)
            elif path.stat().st_mode & 0o077:     # restored from a backup, or chmod-ed
                os.chmod(path, 0o600)
                log.warning("%s could be read by others: made it 0600", path)
            imagefs_log.register_secret(token)
            return User(uuid=uuid, name=name, token=token, created=float(created)), False

    @staticmethod
    def _read_token_file(path: Path, uuid: str) -> str | None:
        try:
            parts = path.read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError):
            return None
        if len(parts) == 2 and parts[0] == uuid:
            return parts[1]
        return None
