"""Key names and the entry format of the Redis tier: pure functions, no server."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from datetime import UTC, datetime

import pytest

from imgproxy.origin import BlobMeta
from imgproxy.redis_codec import (
    FETCHED_AT_OFFSET,
    MAGIC,
    decode_entry,
    encode_entry,
    entry_keys,
    etag_digest,
    generation_key,
    members_key,
    pack_fetched_at,
    path_tag,
    purge_token_keys,
)

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
