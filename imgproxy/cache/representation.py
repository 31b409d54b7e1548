"""What the cache answers with, as values: first what a request's blob or variant is and where its
bytes are (`Found`), then, for the span the handler chose, those bytes ready to send (`Opened`).

Between the two the handler decides (RFC 9110 conditions and ranges, `http.semantics.decide`), so
the cache never needs to know the request: find, decide, open, send. Opening can find the bytes
gone or changed meanwhile (a disk file evicted or damaged, a blob overwritten): `Superseded`, and
the handler finds again, at most a few times.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from imgproxy.cache.disk.files import OpenEntry
from imgproxy.core.blob import BlobMeta, Entry
from imgproxy.core.errors import ImgproxyError

# (start, end) inclusive: the bytes a request needs.
Span = tuple[int, int]


class CacheStatus(enum.Enum):
    """How a response was answered, sent as `X-Cache`."""

    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"


@dataclass(frozen=True, slots=True)
class Found:
    """A key's current version (`meta`) and where its bytes are: held in memory (`body`), a
    complete disk file (`file`, not opened yet), or, for a blob too large for memory, Azure (with
    the bytes its first GET moved, `head`, when it was just read)."""

    key: str
    meta: BlobMeta
    status: CacheStatus
    body: bytes | None
    file: Path | None = None
    head: bytes = b""
    fetched_at: float = 0.0  # wall clock: when Azure last confirmed this version (0: unknown)
    vary_accept: bool = False  # the bytes depend on the request's Accept header (a negotiated variant)

    @classmethod
    def of(cls, entry: Entry, status: CacheStatus) -> Found:
        """An entry of a tier (or one just downloaded) as answered with `status`."""
        return cls(entry.key, entry.meta, status, entry.body, entry.file, entry.head, entry.fetched_at)


@dataclass(frozen=True, slots=True)
class Opened:
    """The bytes of a span, ready to send: held (`body`), an open and checked disk file (`file`:
    send it, then close it), or a stream (a disk fill being written, or Azure); and how they were
    found (`status`: a blob whose metadata was cached but whose bytes come from Azure is a MISS)."""

    status: CacheStatus
    body: bytes | memoryview | None = None
    file: OpenEntry | None = None
    stream: AsyncGenerator[bytes, None] | None = None

    async def close(self) -> None:
        """Let go of a file or stream that will not be sent (idempotent)."""
        if self.file is not None:
            self.file.close()
        if self.stream is not None:
            await self.stream.aclose()


class Superseded(Exception):
    """The bytes `Found` pointed at went away or changed before they were opened: find again.
    `failure` is the error to answer with when finding again has been tried enough."""

    def __init__(self, failure: ImgproxyError) -> None:
        super().__init__(str(failure))
        self.failure = failure
