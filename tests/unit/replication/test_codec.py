"""Key names and the entry format of the Redis tier: pure functions, no server."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import time
from datetime import UTC, datetime

import pytest

from imgproxy.core.blob import BlobMeta
from imgproxy.replication.codec import (
    FETCHED_AT_OFFSET,
    MAGIC,
    SIGNED_MAGIC,
    body_hash,
    decode_entry,
    encode_entry,
    entry_keys,
    etag_digest,
    generation_key,
    max_value_bytes,
    members_key,
    pack_fetched_at,
    path_tag,
    purge_token_keys,
)
from imgproxy.replication.signing import MAC_BYTES, Signer

BASE = "imgproxy:images:"
META = BlobMeta(5, '"0x8D1"', datetime(2026, 11, 1, 12, 30, 5, tzinfo=UTC), "image/png", b"\x01" * 16)
BODY = b"hello"


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def encoded(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "path": "a/b.png", "variant": None, "generation": "g1", "meta": META, "body": BODY, "fetched_at": 1.5,
    }  # fmt: skip
    args.update(overrides)
    return encode_entry(**args)  # type: ignore[arg-type]


def test_every_key_of_a_path_shares_one_hash_tag() -> None:
    """Original, variants, their locks and the key set all hash on the path's tag."""
    keys = [entry_keys(BASE, "a/b.png", None), entry_keys(BASE, "a/b.png", "w=100&f=webp")]
    names = [k for ks in keys for k in (ks.entry, ks.lock, ks.members)] + [members_key(BASE, "a/b.png")]
    assert {hash_tag(name) for name in names} == {path_tag("a/b.png")}
    assert all(name.startswith(BASE) for name in names)
    assert len(path_tag("a/b.png")) == 16


def test_variants_and_originals_have_distinct_entry_and_lock_keys() -> None:
    """Each (path, variant) pair names its own entry and lock; paths differ in their tags."""
    names = {
        entry_keys(BASE, path, variant).entry
        for path in ("a.png", "b.png")
        for variant in (None, "w=1", "w=2")
    }
    assert len(names) == 6
    assert entry_keys(BASE, "a.png", None).lock != entry_keys(BASE, "a.png", "w=1").lock
    assert path_tag("a.png") != path_tag("b.png")


def test_a_variant_key_with_braces_does_not_move_the_slot() -> None:
    """Only the first {...} counts: a variant string holding braces stays in the path's slot."""
    keys = entry_keys(BASE, "a.png", "{evil}")
    assert hash_tag(keys.entry) == path_tag("a.png")
    assert "{evil}" not in keys.entry


def test_generation_key_is_outside_every_path_slot() -> None:
    assert generation_key(BASE) == "imgproxy:images:generation"
    assert {hash_tag(k) for k in purge_token_keys(BASE, "a/b.png")} == {path_tag("a/b.png")}


def test_an_entry_round_trips_with_its_metadata_and_fetched_at() -> None:
    """decode(encode(x)) gives the same metadata, body and fetched-at time."""
    entry = decode_entry(encoded(), "a/b.png", None, "g1")
    assert entry is not None
    assert (entry.meta, entry.body, entry.fetched_at) == (META, BODY, 1.5)
    assert entry.meta.last_modified == META.last_modified and entry.meta.content_md5 == META.content_md5


def test_an_entry_without_content_md5_and_with_a_variant_round_trips() -> None:
    meta = dataclasses.replace(META, content_md5=None)
    entry = decode_entry(encoded(meta=meta, variant="w=100", source_etag='"src"'), "a/b.png", "w=100", "g1")
    assert entry is not None and entry.meta.content_md5 is None and entry.source_etag == '"src"'


def test_an_empty_body_round_trips() -> None:
    meta = dataclasses.replace(META, size=0)
    entry = decode_entry(encoded(meta=meta, body=b""), "a/b.png", None, "g1")
    assert entry is not None and entry.body == b""


def test_encoding_refuses_a_body_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        encoded(body=b"four")


@pytest.mark.parametrize(
    ("path", "variant", "generation"),
    [("other.png", None, "g1"), ("a/b.png", "w=1", "g1"), ("a/b.png", None, "g2"), ("a/b.png", None, None)],
)
def test_an_entry_of_another_path_variant_or_generation_is_a_miss(
    path: str, variant: str | None, generation: str | None
) -> None:
    """A tag collision, a variant mix-up or an older generation never passes as the entry asked for."""
    assert decode_entry(encoded(), path, variant, generation) is None


def framed(header: bytes, body: bytes = BODY, fetched_at: float = 1.5, etag: str = META.etag) -> bytes:
    """A value with the given header bytes behind a well-formed prefix."""
    return struct.pack(">4sId8s", MAGIC, len(header), fetched_at, etag_digest(etag)) + header + body


def header_of(raw: bytes) -> dict[str, object]:
    (length,) = struct.unpack_from(">I", raw, 4)
    header: dict[str, object] = json.loads(raw[24 : 24 + length])
    return header


def corrupt_header(field: str, value: object) -> bytes:
    header = header_of(encoded())
    header[field] = value
    return framed(json.dumps(header).encode())


def test_fetched_at_lives_at_its_fixed_offset() -> None:
    """The renew script overwrites 8 bytes at FETCHED_AT_OFFSET: that must be fetched-at, nothing else."""
    raw = bytearray(encoded())
    raw[FETCHED_AT_OFFSET : FETCHED_AT_OFFSET + 8] = pack_fetched_at(99.25)
    entry = decode_entry(bytes(raw), "a/b.png", None, "g1")
    assert entry is not None and entry.fetched_at == 99.25 and entry.body == BODY


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="none"),
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage that is long enough to hold a prefix", id="no-magic"),
        pytest.param(MAGIC + b"\x00\x00", id="short-prefix"),
        pytest.param(b"IPX1" + encoded()[4:], id="old-format"),
        pytest.param(
            struct.pack(">4sId8s", MAGIC, 10**9, 1.5, etag_digest(META.etag)) + b"{}", id="header-past-end"
        ),
        pytest.param(framed(b"{x}"), id="bad-json"),
        pytest.param(framed(b"[]"), id="json-not-object"),
        pytest.param(framed(b"\xff\xfe"), id="header-not-utf8"),
        pytest.param(encoded()[:-1], id="truncated-body"),
        pytest.param(encoded() + b"!", id="body-too-long"),
        pytest.param(encoded()[:-1] + b"X", id="flipped-byte"),
        pytest.param(framed(json.dumps(header_of(encoded())).encode(), etag='"other"'), id="etag-digest"),
        pytest.param(
            framed(json.dumps(header_of(encoded())).encode(), fetched_at=math.nan), id="fetched-at-nan"
        ),
        pytest.param(corrupt_header("h", "sha256:" + "0" * 64), id="wrong-hash"),
        pytest.param(corrupt_header("s", "5"), id="size-as-string"),
        pytest.param(corrupt_header("s", True), id="size-as-bool"),
        pytest.param(corrupt_header("s", -1), id="negative-size"),
        pytest.param(corrupt_header("e", 5), id="etag-not-a-string"),
        pytest.param(corrupt_header("lm", "yesterday"), id="bad-date"),
        pytest.param(corrupt_header("lm", "2026-11-01T12:30:05"), id="naive-date"),
        pytest.param(corrupt_header("md5", "***"), id="md5-not-base64"),
        pytest.param(corrupt_header("md5", 7), id="md5-not-a-string"),
        pytest.param(corrupt_header("se", 7), id="source-etag-not-a-string"),
        pytest.param("a string, not bytes", id="str"),
    ],
)
def test_garbage_truncation_and_wrong_hashes_never_decode(raw: object) -> None:
    """Anything but a whole, verified entry is a miss."""
    assert decode_entry(raw, "a/b.png", None, "g1") is None


KEY = "a-signing-key-of-32-characters!!"
SIGNER = Signer(KEY, BASE)


def test_a_fetched_at_in_the_future_is_read_as_now() -> None:
    """An entry claiming to be fetched after the moment it is read is exactly as old as that moment."""
    entry = decode_entry(encoded(fetched_at=5_000.0), "a/b.png", None, "g1", now=1_000.0)
    assert entry is not None and entry.fetched_at == 1_000.0
    past = decode_entry(encoded(fetched_at=500.0), "a/b.png", None, "g1", now=1_000.0)
    assert past is not None and past.fetched_at == 500.0


def test_a_fetched_at_in_the_future_is_clamped_by_the_clock_by_default() -> None:
    """Without `now`, the clamp is the wall clock at decoding."""
    entry = decode_entry(encoded(fetched_at=time.time() + 10**6), "a/b.png", None, "g1")
    assert entry is not None and entry.fetched_at <= time.time()


def test_a_signed_entry_round_trips_under_its_own_magic() -> None:
    """Signed with the key: same metadata, body and fetched-at back, and a magic of its own."""
    raw = encoded(signer=SIGNER)
    assert raw.startswith(SIGNED_MAGIC) and not raw.startswith(MAGIC)
    entry = decode_entry(raw, "a/b.png", None, "g1", SIGNER)
    assert entry is not None and (entry.meta, entry.body, entry.fetched_at) == (META, BODY, 1.5)


def test_renewing_fetched_at_in_place_keeps_a_signed_entry_valid() -> None:
    """The MAC leaves fetched-at out: the renew script's SETRANGE does not void it."""
    raw = bytearray(encoded(signer=SIGNER))
    raw[FETCHED_AT_OFFSET : FETCHED_AT_OFFSET + 8] = pack_fetched_at(99.25)
    entry = decode_entry(bytes(raw), "a/b.png", None, "g1", SIGNER)
    assert entry is not None and entry.fetched_at == 99.25 and entry.body == BODY


def replaced_body(raw: bytes, body: bytes, signed: bool = True) -> bytes:
    """`raw` with another body and the header's size and hash made to match it, as anyone who can
    write to Redis could do (the MAC, if any, left as it was)."""
    (length,) = struct.unpack_from(">I", raw, 4)
    start = 24 + (MAC_BYTES if signed else 0)
    header = json.loads(raw[start : start + length])
    header["s"], header["h"] = len(body), body_hash(body)
    new_header = json.dumps(header, separators=(",", ":")).encode()
    return raw[:4] + struct.pack(">I", len(new_header)) + raw[8:start] + new_header + body


def flipped(raw: bytes, index: int) -> bytes:
    return raw[:index] + bytes([raw[index] ^ 1]) + raw[index + 1 :]


@pytest.mark.parametrize(
    ("raw", "signer"),
    [
        pytest.param(encoded(), SIGNER, id="unsigned-read-with-a-key"),
        pytest.param(encoded(signer=SIGNER), None, id="signed-read-without-a-key"),
        pytest.param(
            encoded(signer=Signer("another-key-of-32-characters!!!!", BASE)), SIGNER, id="other-key"
        ),
        pytest.param(encoded(signer=Signer(KEY, "imgproxy:other:")), SIGNER, id="other-deployment"),
        pytest.param(MAGIC + encoded(signer=SIGNER)[4:], SIGNER, id="magic-swapped"),
        pytest.param(flipped(encoded(signer=SIGNER), 30), SIGNER, id="mac-flipped"),
        pytest.param(flipped(encoded(signer=SIGNER), 24 + MAC_BYTES + 3), SIGNER, id="header-flipped"),
        pytest.param(flipped(encoded(signer=SIGNER), 20), SIGNER, id="etag-digest-flipped"),
        pytest.param(replaced_body(encoded(signer=SIGNER), b"evil!"), SIGNER, id="body-and-hash-replaced"),
        pytest.param(encoded(signer=SIGNER)[: 24 + MAC_BYTES - 1], SIGNER, id="cut-in-the-mac"),
    ],
)
def test_an_entry_without_a_valid_mac_never_decodes(raw: bytes, signer: Signer | None) -> None:
    """Unsigned, signed by another key or for another deployment, or changed anywhere the MAC
    covers (the body through its hash): a miss."""
    assert decode_entry(raw, "a/b.png", None, "g1", signer) is None


def test_without_a_key_a_replaced_body_with_its_hash_is_served() -> None:
    """What signing is for: unsigned, a writer to Redis who fixes the hash can serve any bytes."""
    entry = decode_entry(replaced_body(encoded(), b"evil!", signed=False), "a/b.png", None, "g1")
    assert entry is not None and entry.body == b"evil!"


def test_the_largest_entry_fits_the_value_cap() -> None:
    """A body of max_item_bytes with the longest path and a signature is not over max_value_bytes."""
    body = b"x" * 1000
    meta = dataclasses.replace(META, size=len(body))
    path = "ü" * 1024  # two bytes each in the header
    raw = encode_entry(path, "w=100&h=100&fm=webp", "g1", meta, body, 1.5, '"src"', SIGNER)
    assert len(raw) <= max_value_bytes(len(body))
    assert decode_entry(raw, path, "w=100&h=100&fm=webp", "g1", SIGNER) is not None
