"""MACs of what replicas write to Redis, for a Redis that others can write to (`redis.signing_key`).

Without a key nothing is signed (`signer_for` gives None) and Redis is trusted as before. With
one, shared entries and purge-log records carry an HMAC-SHA256 over a label naming what is
signed, the deployment's key base (a value signed for one container or prefix is not valid in
another sharing the key), and the signed fields, each length-prefixed so that no two lists of
fields make the same message. Verification compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from imgproxy.config import RedisConfig

MAC_BYTES: Final = hashlib.sha256().digest_size
ENTRY: Final = b"entry"  # the label of a shared entry's MAC
PURGE: Final = b"purge"  # the label of a purge-log record's MAC
_LENGTH: Final = struct.Struct(">I")


class Signer:
    """HMAC-SHA256 under one key, scoped to one deployment's keys."""

    __slots__ = ("_keyed",)

    def __init__(self, key: str, base: str) -> None:
        # Keyed once: each MAC copies this state instead of hashing the padded key again.
        self._keyed = hmac.new(key.encode("utf-8"), digestmod=hashlib.sha256)
        _feed(self._keyed, base.encode("utf-8"))

    def mac(self, label: bytes, *parts: bytes) -> bytes:
        state = self._keyed.copy()
        for part in (label, *parts):
            _feed(state, part)
        return state.digest()

    def verify(self, mac: bytes, label: bytes, *parts: bytes) -> bool:
        return hmac.compare_digest(mac, self.mac(label, *parts))


def signer_for(config: RedisConfig, base: str) -> Signer | None:
    """The deployment's signer, or None when `redis.signing_key` is empty (nothing signed)."""
    return Signer(config.signing_key, base) if config.signing_key else None


def _feed(state: hmac.HMAC, part: bytes) -> None:
    state.update(_LENGTH.pack(len(part)))
    state.update(part)
