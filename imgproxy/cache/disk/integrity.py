"""Checks of the disk tier's own files, which are treated as untrusted input.

Two checks, each as cheap as its path allows:
- identity, for every disk hit: the `fstat` of the descriptor about to be sent is compared with
  what the entry recorded when the file was written (size and modification time in ns). A file
  truncated, extended, rewritten in place or replaced since then differs in one of them. No byte
  is read, so a healthy sendfile hit stays one `fstat` plus the send.
- content, whenever a file is read into memory anyway (promotion, adoption): the bytes are hashed
  and compared with the blob's Content-MD5 when it has one, else with the BLAKE2b digest recorded
  at write time. This catches same-size damage that keeps the modification time (bit rot).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Final

DIGEST_BYTES: Final = 16  # BLAKE2b-128: collisions are not the threat, damage is


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What an entry's data file looked like when it was written."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_size, stat.st_mtime_ns)


def new_hasher() -> hashlib.blake2b:
    """The hash recorded for a body without Content-MD5 (fed chunk by chunk while writing)."""
    return hashlib.blake2b(digest_size=DIGEST_BYTES)


def body_digest(body: bytes) -> str:
    hasher = new_hasher()
    hasher.update(body)
    return hasher.hexdigest()


def content_mismatch(body: bytes, size: int, content_md5: bytes | None, digest: str | None) -> str | None:
    """Why `body` is not the recorded content, or None when it is. Hashes `body`: call it off the
    event loop for large bodies (hashlib releases the GIL)."""
    if len(body) != size:
        return f"{len(body)} bytes instead of {size}"
    if content_md5 is not None:
        if hashlib.md5(body, usedforsecurity=False).digest() != content_md5:
            return "Content-MD5 mismatch"
    elif digest is None:
        return "no digest recorded"
    elif body_digest(body) != digest:
        return "digest mismatch"
    return None


def identity_mismatch(recorded: FileIdentity, stat: os.stat_result) -> str | None:
    """Why the file behind `stat` is not the one that was recorded, or None when it is."""
    if stat.st_size != recorded.size:
        return f"size {stat.st_size} instead of {recorded.size}"
    if stat.st_mtime_ns != recorded.mtime_ns:
        return "modified since it was written"
    return None
