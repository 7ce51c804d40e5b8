"""Plain values the storage engine returns to the HTTP layer.

They are frozen snapshots read in one transaction: nothing in them changes
when the store changes afterwards, and they hold no connection or cursor, so
a view may keep them while it streams a body.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True, slots=True)
class User:
    """A user of the embedded identity service; ``token`` is "" unless known.

    Tokens are stored only as hashes, so a ``User`` carries its token only when
    it was just issued (``add_user``, ``default_user``) or presented
    (``user_for_token``).
    """

    uuid: str
    name: str
    token: str
    created: float


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    account: str
    name: str
    count: int  # live objects
    bytes_used: int  # sum of the sizes of their current versions
    mtime: float  # last change of the container or of any object in it
    versioning: str  # "auto" | "none"
    quota: int  # bytes, 0 = unlimited
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Version:
    """One version of an object, with the path-level state seen by a requester.

    (No ``slots``: listings build it with ``from_values``, which needs ``__dict__``.)
    """

    account: str
    container: str
    name: str
    serial: int
    uuid: str
    size: int
    content_type: str
    hash: str  # Merkle top hash (X-Object-Hash, ETag); "" for a tombstone
    checksum: str  # MD5 supplied with a plain PUT, else ""
    hashes: list[str] | None  # None until loaded with Store.hashes_of
    mtime: float  # time this version was written
    modified_by: str  # uuid of the user who wrote it
    meta: dict[str, str]  # domain "pithos" (user metadata), keys as stored
    cluster: str  # "normal" | "history" | "deleted"
    sharing: dict[str, list[str]]  # {"read": [...], "write": [...]}; {} if none
    shared_by: str  # "" or the directory object the sharing is inherited from
    public_id: str  # "" when not published
    latest_mtime: float  # mtime of the newest version of the path (Last-Modified)
    allowed_to: str  # "" for the owner, else "read" or "write"
    created: float  # when the uuid was first assigned (image created_at, D3)

    @classmethod
    def from_values(cls, values: tuple) -> Version:
        """Build from all fields in declaration order, twice as fast as ``__init__``.

        A frozen dataclass sets each field through ``object.__setattr__``; a
        listing builds 10,000 versions per page, so this fills ``__dict__`` in
        one call instead. The result is an ordinary frozen ``Version``.
        """
        self = object.__new__(cls)
        self.__dict__.update(zip(_VERSION_FIELDS, values))
        return self


_VERSION_FIELDS = tuple(f.name for f in fields(Version))


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image: the registration data of an object's current version."""

    id: str  # the object's uuid
    name: str
    location: str  # pithos://account/container/name, each part percent-encoded
    owner: str  # the account holding the object
    size: int
    checksum: str  # the object's Merkle hash
    disk_format: str
    container_format: str
    status: str  # stored status ("" allowed, D9), "available" when never set
    is_public: bool  # "*" in the object's read list
    created_at: float  # uuid creation time (D3)
    updated_at: float  # mtime of the object's current version
    properties: dict[str, str]
    version: int  # serial of the object's current version
