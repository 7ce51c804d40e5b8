"""One authenticated connection to a cloud: the token's identity and its services.

``Connection.open`` is what a mount does first; its failures are the ones a
user must act on, so they come as one clear line: the token was refused, or
the cloud could not be reached.
"""

from __future__ import annotations

import logging

from imagefs import errors
from imagefs.client.http import Http
from imagefs.client.identity import authenticate, user_catalogs
from imagefs.client.models import Endpoints
from imagefs.client.pithos import Pithos
from imagefs.client.plankton import Plankton

log = logging.getLogger(__name__)


class Connection:
    """The user's Pithos account and Plankton, over one shared ``Http``."""

    def __init__(self, http: Http, endpoints: Endpoints) -> None:
        self.http = http
        self.endpoints = endpoints
        self.pithos = Pithos(http, endpoints.object_store, endpoints.user_uuid)
        self.plankton = Plankton(http, endpoints.image)

    @property
    def account(self) -> str:
        return self.endpoints.user_uuid

    @classmethod
    def open(cls, auth_url: str, token: str, **http_kw) -> "Connection":
        """Authenticate ``token`` at ``auth_url`` (the identity URL, as in kamaki's
        ``cloud.<name>.url``)."""
        http = Http(token, **http_kw)
        try:
            endpoints = authenticate(http, auth_url)
        except errors.AuthRejected as exc:
            http.close()
            raise errors.AuthRejected(f"token refused by {auth_url}", detail=exc.detail) from None
        except errors.ServiceUnavailable as exc:
            http.close()
            raise errors.ServiceUnavailable(
                f"cannot reach {auth_url}: {_cause(exc)}", detail=str(exc)) from None
        except errors.ImagefsError:
            http.close()
            raise
        log.info("authenticated as %s (%s) at %s", endpoints.user_uuid,
                 endpoints.user_name, auth_url)
        return cls(http, endpoints)

    def pithos_for(self, account: str) -> Pithos:
        """The object store of another account (what it shares with this user)."""
        if account == self.account:
            return self.pithos
        return Pithos(self.http, self.endpoints.object_store, account)

    def user_catalogs(self, uuids=(), names=()) -> tuple[dict[str, str], dict[str, str]]:
        """(uuid -> username, username -> uuid)."""
        return user_catalogs(self.http, self.endpoints.account, uuids, names)

    def close(self) -> None:
        self.pithos.close()
        self.http.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _cause(exc: errors.ImagefsError) -> str:
    """The last part of a retry failure message ("connection refused")."""
    text = str(exc)
    return text.rsplit(": ", 1)[-1] if ": " in text else text
