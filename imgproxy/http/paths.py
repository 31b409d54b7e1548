"""Validate and normalise the blob path of a request.

The path is taken from the raw (still percent-encoded) URL so that encoded traversal such as
`%2e%2e` or `%2F..` is judged after decoding, exactly as Azure would see it. The SDK's HTTP layer
collapses `.` and `..` segments, so any such segment could read outside the configured container:
they are refused here, before anything reaches the origin.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Final
from urllib.parse import unquote_to_bytes

from imgproxy.core.errors import BadPath

MAX_PATH_CHARS: Final = 1024
# Hot paths are short; memoizing only those bounds the memo's memory: 4,096 raw paths of at most
# 256 characters and their decoded forms, about 3 MiB with Python's overhead.
_MEMO_RAW_CHARS: Final = 256


def parse_blob_path_cached(raw: str) -> str:
    """`parse_blob_path`, remembered for the last 4,096 short paths that were valid (hits repeat)."""
    return _parse_short(raw) if len(raw) <= _MEMO_RAW_CHARS else parse_blob_path(raw)


def index_key(path: str) -> str:
    """`path` as the key of an index of paths that clients name (missing blobs, purge tokens
    seen): a 32-character digest, so that such an index is bounded in bytes, not only in count (a
    path may be 1,024 characters of up to 4 bytes each)."""
    return hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def parse_blob_path(raw: str) -> str:
    """Decode a percent-encoded blob path and return it, or raise `BadPath` with a reason."""
    if not raw:
        raise BadPath("empty blob path")
    # Cheap guard before decoding: a character is at most 4 UTF-8 bytes, each "%XX" when escaped.
    if len(raw) > 12 * MAX_PATH_CHARS:
        raise BadPath(f"blob path longer than {MAX_PATH_CHARS} characters")
    try:
        path = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("blob path is not valid UTF-8") from None
    if len(path) > MAX_PATH_CHARS:
        raise BadPath(f"blob path longer than {MAX_PATH_CHARS} characters")
    if "\\" in path:
        raise BadPath("backslash in blob path")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in path):
        raise BadPath("control character in blob path")
    for segment in path.split("/"):
        if segment in (".", ".."):
            raise BadPath("'.' or '..' segment in blob path")
        if not segment:
            raise BadPath("empty segment in blob path")
    return path


_parse_short: Final = functools.lru_cache(maxsize=4096)(parse_blob_path)  # errors are not cached
