"""What the cache holds and how it names it: a blob version's metadata (`BlobMeta`), an entry of a
tier (`Entry`), and the keys of originals and variants. Pure: no I/O, no dependency.

A tier keeps entries by key. The key of an original is its blob path; the key of a variant (a
transform of it) is the path, a NUL, and the variant's canonical name. Blob paths never hold NUL
(`http.paths` refuses control characters), so `path_of(key)` is exact, and a purge of a path
reaches the original and every variant of it in every tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final


@dataclass(frozen=True, slots=True)
class BlobMeta:
    """What we know of a blob version: enough to answer headers and validate bytes."""

    size: int
    etag: str
    last_modified: datetime
    content_type: str
    content_md5: bytes | None = None

    def __hash__(self) -> int:
        # Hashed on every hit (header memo): the ETag alone is cheap and nearly unique.
        return hash(self.etag)


VARIANT_SEPARATOR: Final = "\0"


def variant_key(path: str, variant: str) -> str:
    """The key of a variant of the blob at `path` (`variant` is its canonical name)."""
    return f"{path}{VARIANT_SEPARATOR}{variant}"


def split_key(key: str) -> tuple[str, str | None]:
    """The blob path of a key and its variant's canonical name (None for an original's key)."""
    path, separator, variant = key.partition(VARIANT_SEPARATOR)
    return path, (variant if separator else None)


def path_of(key: str) -> str:
    """The blob path of a key (an original's key is its path)."""
    return key.partition(VARIANT_SEPARATOR)[0]


def is_variant(key: str) -> bool:
    return VARIANT_SEPARATOR in key


@dataclass(frozen=True, slots=True)
class Entry:
    """One version of an original or a variant, as a tier holds it."""

    key: str
    meta: BlobMeta
    fetched_at: float  # wall clock (time.time): when Azure last confirmed this version
    body: bytes | None = None  # None: a large blob (metadata only, or a disk `file`)
    file: Path | None = None  # the disk tier's complete data file (not opened yet)
    source_etag: str | None = None  # a variant's: the ETag of the source it was made from
    # A large blob just read: the bytes its first GET moved. Handed to the requests of that
    # download only (never stored), so that their stream or disk fill starts after them.
    head: bytes = b""

    def age(self, now: float) -> float:
        return max(0.0, now - self.fetched_at)
