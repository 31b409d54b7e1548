"""Key names and the serialized form of a shared (Redis) cache entry. Pure: no I/O.

Keys of one blob path share the cluster hash tag `{<16 hex of SHA-256(path)>}`, so the original,
any number of variants, the path's key set and its download locks live in one slot, and one
script can purge them all:

    {base}{tag}:o                 the original's entry
    {base}{tag}:v:<32 hex>        a variant's entry (SHA-256 of the variant key string)
    {base}{tag}:lock:o | :lock:v:<32 hex>   the download lock of that entry
    {base}{tag}:keys              a set of every key above that exists for the path
    {base}generation              the tier's generation (purge_all replaces it; its own slot)

    {base}{tag}:purged, :vpurged  the path's purge tokens (all of it; its variants only)

`{base}` is `redis.prefix` + container + ":". An entry is one Redis value (one SET: written and
read atomically, no half-updated hash):

    b"IPX2" | header length (4 bytes) | fetched-at (8, double) | ETag digest (8) | header | body

(integers and the double big-endian). The header is JSON: the path and variant (a 64-bit tag
collision reads as a miss, not as another blob), the generation it was written under, the
blob's metadata, a hash of the body and, for a variant, its source's ETag. Fetched-at sits at a
fixed offset so a revalidation can renew it in place (SETRANGE) after checking the ETag digest
beside it. `decode_entry` returns None for anything that does not check out: wrong magic, bad
JSON, missing or mistyped fields, another path, variant, generation or ETag, a body whose length
or hash differs. Nothing unverified is ever handed on, and a fetched-at in the future is read as
now: a value cannot make itself fresher than the moment it is read.

With `redis.signing_key` an entry is signed, under its own magic (a signed and an unsigned value
are never taken for one another):

    b"IPS2" | header length | fetched-at | ETag digest | MAC (32) | header | body

The MAC (`replication.signing`) covers the magic, the header length, the ETag digest and the header;
the header holds the body's SHA-256, so the body is bound without hashing it twice. Fetched-at
is left out because `renew` rewrites it in place; decoding clamps it to now instead.
`max_value_bytes` bounds a whole value (body cap plus the largest prefix, MAC and header), so a
reader can refuse a larger one without transferring it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from imgproxy.core.blob import BlobMeta
from imgproxy.replication.signing import ENTRY, MAC_BYTES, Signer

MAGIC: Final = b"IPX2"
SIGNED_MAGIC: Final = b"IPS2"
_PREFIX: Final = struct.Struct(">4sId8s")  # magic, header length, fetched-at, ETag digest
FETCHED_AT_OFFSET: Final = 8  # bytes before the fetched-at double (the renew script writes there)
_DIGEST_OFFSET: Final = 16  # bytes before the ETag digest
MAX_HEADER_BYTES: Final = 64 * 1024  # a path is at most 1024 characters; anything larger is garbage
# SHA-256 over BLAKE2b-128: 0.48 vs 0.70 ms per MiB here (the CPU has SHA-NI), and as strong.
HASH_NAME: Final = "sha256"
ORIGINAL: Final = "o"


@dataclass(frozen=True, slots=True)
class SharedEntry:
    """A verified entry read from Redis: metadata, the whole body, when it was fetched from Azure."""

    meta: BlobMeta
    body: bytes
    fetched_at: float  # wall clock (time.time()), so an entry's age travels between replicas
    source_etag: str | None = None  # a variant's: the ETag of the source it was made from


@dataclass(frozen=True, slots=True)
class EntryKeys:
    """The Redis keys of one entry (original or variant) of one path; all in one cluster slot."""

    entry: str
    lock: str
    members: str
    purged: str  # the path's purge tokens (as `purge_token_keys`)
    vpurged: str


def path_tag(path: str) -> str:
    """The cluster hash tag of a blob path: 16 hex characters of its SHA-256."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def members_key(base: str, path: str) -> str:
    """The set of every key that exists for `path` (entries and locks)."""
    return _stem(base, path) + "keys"


def entry_keys(base: str, path: str, variant: str | None) -> EntryKeys:
    """The keys of `path`'s original (variant None) or of one variant."""
    stem = _stem(base, path)
    which = ORIGINAL if variant is None else "v:" + hashlib.sha256(variant.encode("utf-8")).hexdigest()[:32]
    return EntryKeys(
        entry=stem + which,
        lock=stem + "lock:" + which,
        members=stem + "keys",
        purged=stem + "purged",
        vpurged=stem + "vpurged",
    )


def magic_of(signer: Signer | None) -> bytes:
    """The magic of the values written (and the only one accepted) with `signer` or without."""
    return MAGIC if signer is None else SIGNED_MAGIC


def max_value_bytes(max_item_bytes: int) -> int:
    """The largest value an entry of at most `max_item_bytes` of body can be (signed or not)."""
    return max_item_bytes + _PREFIX.size + MAC_BYTES + MAX_HEADER_BYTES


def generation_key(base: str) -> str:
    return f"{base}generation"


def purge_token_keys(base: str, path: str) -> tuple[str, str]:
    """The random tokens a purge of `path` (all of it; its variants only) replaces: a ticketed
    store that saw other tokens began before the purge and is refused."""
    stem = _stem(base, path)
    return stem + "purged", stem + "vpurged"


def _stem(base: str, path: str) -> str:
    """What every key of `path` starts with: the base and the path's hash tag."""
    return f"{base}{{{path_tag(path)}}}:"


def etag_digest(etag: str) -> bytes:
    """8 bytes naming an ETag, at a fixed offset of the value (compared by the renew script)."""
    return hashlib.sha256(etag.encode("utf-8")).digest()[:8]


def pack_fetched_at(fetched_at: float) -> bytes:
    return struct.pack(">d", fetched_at)


def body_hash(body: bytes) -> str:
    return f"{HASH_NAME}:{hashlib.new(HASH_NAME, body).hexdigest()}"


def encode_entry(
    path: str,
    variant: str | None,
    generation: str,
    meta: BlobMeta,
    body: bytes,
    fetched_at: float,
    source_etag: str | None = None,
    signer: Signer | None = None,
) -> bytes:
    """One Redis value holding the entry: header then body (signed, with a signer)."""
    if len(body) != meta.size:
        raise ValueError(f"body of {len(body)} bytes for a blob of {meta.size}")
    header = json.dumps(
        {
            "p": path,
            "v": variant,
            "g": generation,
            "s": meta.size,
            "e": meta.etag,
            "t": meta.content_type,
            "lm": meta.last_modified.isoformat(),
            "md5": None if meta.content_md5 is None else base64.b64encode(meta.content_md5).decode("ascii"),
            "h": body_hash(body),
            "se": source_etag,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    prefix = _PREFIX.pack(magic_of(signer), len(header), fetched_at, etag_digest(meta.etag))
    if signer is None:
        return b"".join((prefix, header, body))
    return b"".join((prefix, _entry_mac(signer, prefix, header), header, body))


def decode_entry(
    raw: object,
    path: str,
    variant: str | None,
    generation: str | None,
    signer: Signer | None = None,
    now: float | None = None,
) -> SharedEntry | None:
    """The entry `raw` holds if it is whole, ours (path, variant, generation), signed by `signer`
    (if given) and its hash matches; its fetched-at at most `now` (default: the clock)."""
    if not isinstance(raw, bytes) or len(raw) < _PREFIX.size or not raw.startswith(magic_of(signer)):
        return None
    _, header_len, fetched_at, digest = _PREFIX.unpack_from(raw)
    start = _PREFIX.size if signer is None else _PREFIX.size + MAC_BYTES
    if header_len > MAX_HEADER_BYTES or start + header_len > len(raw) or not math.isfinite(fetched_at):
        return None
    if signer is not None:
        mac = raw[_PREFIX.size : start]
        if not signer.verify(
            mac, ENTRY, *_signed_parts(raw[: _PREFIX.size], raw[start : start + header_len])
        ):
            return None
    try:
        header = json.loads(raw[start : start + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict) or generation is None:
        return None
    if header.get("p") != path or header.get("v") != variant or header.get("g") != generation:
        return None
    meta = _meta(header)
    if meta is None or etag_digest(meta.etag) != digest:
        return None
    source_etag = header.get("se")
    if source_etag is not None and not isinstance(source_etag, str):
        return None
    body = raw[start + header_len :]
    if len(body) != meta.size or header.get("h") != body_hash(body):
        return None
    # A fetched-at in the future (a skewed clock, or a writer we do not trust) would keep the
    # entry fresh for ever: it is as old as the moment it is read, never younger.
    return SharedEntry(meta, body, min(fetched_at, time.time() if now is None else now), source_etag)


def _entry_mac(signer: Signer, prefix: bytes, header: bytes) -> bytes:
    return signer.mac(ENTRY, *_signed_parts(prefix, header))


def _signed_parts(prefix: bytes, header: bytes) -> tuple[bytes, bytes, bytes]:
    """What an entry's MAC covers: the prefix without fetched-at (renewed in place), the header."""
    return prefix[:FETCHED_AT_OFFSET], prefix[_DIGEST_OFFSET : _PREFIX.size], header


def _meta(header: dict[str, Any]) -> BlobMeta | None:
    size, etag, ctype = header.get("s"), header.get("e"), header.get("t")
    modified, md5 = header.get("lm"), header.get("md5")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        return None
    if not (isinstance(etag, str) and isinstance(ctype, str) and isinstance(modified, str)):
        return None
    if md5 is not None and not isinstance(md5, str):
        return None
    try:
        last_modified = datetime.fromisoformat(modified)
        content_md5 = None if md5 is None else base64.b64decode(md5, validate=True)
    except ValueError:  # binascii.Error is one
        return None
    if content_md5 == b"" or last_modified.tzinfo is None:
        return None
    return BlobMeta(size, etag, last_modified, ctype, content_md5)
