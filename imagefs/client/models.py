"""Plain values the client returns: what the filesystem and the tests see.

They carry no HTTP: headers and JSON are decoded into them in the client
modules, so the same values come from the embedded service and from a real
Synnefo deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoints:
    """What authentication tells: who the token is, and where the services are."""

    user_uuid: str
    user_name: str
    object_store: str  # ".../object-store/v1"
    image: str  # ".../image/v1.0"
    account: str = ""  # ".../account/v1.0" (user_catalogs)


@dataclass(frozen=True)
class AccountInfo:
    containers: int
    bytes_used: int
    quota: int  # 0 = unlimited
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    count: int = 0
    bytes_used: int = 0
    block_size: int = 4 * 1024 * 1024
    block_hash: str = "sha256"
    versioning: str = "auto"  # "auto" | "none"
    quota: int = 0
    mtime: float = 0.0
    meta: dict[str, str] = field(default_factory=dict)


DIRECTORY_TYPES = ("application/directory", "application/folder")


@dataclass(frozen=True)
class ObjectInfo:
    """One version of an object, as HEAD or a JSON listing describes it.

    ``meta`` holds user metadata with the service's capitalised keys
    (``Mtime``, ``Image-Os``); ``None`` means the listing did not say (a real
    deployment's listings omit it, the embedded service includes it).
    """

    name: str
    size: int
    content_type: str
    hash: str  # Merkle top hash (X-Object-Hash / ETag)
    uuid: str
    version: int
    mtime: float  # Unix seconds of the latest version (Last-Modified)
    version_mtime: float = 0.0  # Unix seconds of this version
    modified_by: str = ""
    meta: dict[str, str] | None = None
    sharing: str = ""  # "read=a,b; write=c"
    public_url: str = ""  # X-Object-Public (owner only)

    @property
    def is_directory(self) -> bool:
        return self.content_type.split(";")[0].strip() in DIRECTORY_TYPES


@dataclass(frozen=True)
class Subdir:
    """A pseudo-directory of a delimited listing (``{"subdir": "a/b/"}``); name has no trailing /."""

    name: str


@dataclass(frozen=True)
class Hashmap:
    block_size: int
    block_hash: str
    size: int
    hashes: list[str]
    hash: str = ""  # top hash
    version: int = 0


@dataclass(frozen=True)
class PutResult:
    """Outcome of a hashmap PUT: created, or the blocks the service lacks."""

    missing: list[str]
    hash: str = ""
    version: int = 0

    @property
    def created(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Image:
    """A registration as Plankton reports it (keys as in the JSON detail list).

    ``properties`` keys are lower-case as the service stores them; ``status``
    is verbatim (a real deployment may answer ``AVAILABLE``).
    """

    id: str
    name: str
    location: str  # pithos://UUID/container/path (percent-encoded parts)
    owner: str
    size: int
    checksum: str
    disk_format: str
    container_format: str
    status: str
    is_public: bool
    created_at: str
    updated_at: str
    deleted_at: str = ""
    properties: dict[str, str] = field(default_factory=dict)
