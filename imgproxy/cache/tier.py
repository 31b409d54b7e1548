"""The cache tiers: what they hold (`Entry`), how entries are named (keys), and their one interface.

A tier keeps entries by key. The key of an original is its blob path; the key of a variant (a
transform of it) is the path, a NUL, and the variant's canonical name. Blob paths never hold NUL
(`paths` refuses control characters), so `path_of(key)` is exact, and a purge of a path reaches
the original and every variant of it in every tier.

The fetcher chains the tiers (memory, disk, then shared ones, then Azure) through `Tier` and
knows nothing else of them: a download takes a fill ticket from each tier first, and a purge of
the key's path voids it, so bytes fetched before a purge are never stored after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from imgproxy.core.lru import FillTicket
from imgproxy.origin import BlobMeta

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


class Tier(Protocol):
    """One storage of entries. Every method is bounded; none raises for a miss."""

    name: str

    def begin_fill(self, key: str) -> FillTicket:
        """A ticket for storing what a download of `key` brings (take it before the download)."""

    def release(self, ticket: FillTicket) -> None:
        """Return a ticket that will not be used."""

    def fits(self, entry: Entry) -> bool:
        """Whether this tier keeps entries like `entry` at all (its size bounds)."""

    async def lookup(self, key: str) -> Entry | None:
        """The entry of `key`, or None."""

    async def store(self, ticket: FillTicket, entry: Entry | None) -> bool:
        """Keep `entry` (None: drop the ticket's key) unless the ticket was voided by a purge; the
        ticket is spent either way. True if `entry` was kept."""

    async def renew(self, entry: Entry) -> None:
        """Azure confirmed `entry`'s version unchanged at `entry.fetched_at`."""

    async def remove(self, key: str) -> bool:
        """Forget `key` (changed or deleted in Azure); True if it was there."""

    async def purge(self, path: str, variants_only: bool = False) -> bool:
        """Forget `path` and every variant of it (only the variants, if told), voiding their fills."""

    async def purge_all(self) -> int:
        """Forget everything, voiding every fill; the number of entries removed."""

    def stats(self) -> Mapping[str, int | bool]:
        """Figures for `/admin/cache` (names prefixed by the tier)."""


class VariantIndex:
    """Which variant keys a tier holds, by path: a purge finds them without a scan."""

    def __init__(self) -> None:
        self._by_path: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._by_path.values())

    def add(self, key: str) -> None:
        if is_variant(key):
            self._by_path.setdefault(path_of(key), set()).add(key)

    def discard(self, key: str) -> None:
        keys = self._by_path.get(path_of(key))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_path[path_of(key)]

    def pop(self, path: str) -> set[str]:
        """The variant keys of `path`, forgotten here."""
        return self._by_path.pop(path, set())

    def clear(self) -> None:
        self._by_path.clear()
