"""The disk tier's checks: file identity from `fstat`, content against Content-MD5 or the digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from imgproxy.cache.disk.integrity import FileIdentity, body_digest, content_mismatch, identity_mismatch

BODY = b"the bytes that were written" * 100


def test_content_matches_its_md5_or_its_digest() -> None:
    """Right bytes pass with either record; Content-MD5 takes precedence over the digest."""
    md5 = hashlib.md5(BODY).digest()
    assert content_mismatch(BODY, len(BODY), md5, None) is None
    assert content_mismatch(BODY, len(BODY), None, body_digest(BODY)) is None
    assert content_mismatch(BODY, len(BODY), md5, "not even hex") is None


def test_same_size_damage_is_caught_by_md5_and_by_digest() -> None:
    """One flipped byte fails both kinds of record."""
    damaged = bytes([BODY[0] ^ 1]) + BODY[1:]
    assert content_mismatch(damaged, len(BODY), hashlib.md5(BODY).digest(), None) == "Content-MD5 mismatch"
    assert content_mismatch(damaged, len(BODY), None, body_digest(BODY)) == "digest mismatch"


def test_wrong_length_and_missing_record_are_mismatches() -> None:
    """A short or long body, or one with nothing to check it against, is not trusted."""
    assert content_mismatch(BODY[:-1], len(BODY), None, body_digest(BODY)) is not None
    assert content_mismatch(BODY + b"x", len(BODY), None, body_digest(BODY)) is not None
    assert content_mismatch(BODY, len(BODY), None, None) == "no digest recorded"


def test_identity_notices_size_and_modification(tmp_path: Path) -> None:
    """The recorded size and mtime match the file until it is resized or rewritten."""
    file = tmp_path / "data"
    file.write_bytes(BODY)
    recorded = FileIdentity.of(file.stat())
    assert identity_mismatch(recorded, file.stat()) is None
    os.utime(file, ns=(recorded.mtime_ns, recorded.mtime_ns + 1))
    assert identity_mismatch(recorded, file.stat()) == "modified since it was written"
    os.truncate(file, 10)
    assert identity_mismatch(recorded, file.stat()) == f"size 10 instead of {len(BODY)}"
