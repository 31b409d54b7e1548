"""Transform URL signatures: HMAC-SHA256 over a canonical string, base64url without padding.

The canonical string is the blob path as written in the URL after `/images/`, then `?`, then the
recognised transform parameters other than `s` as `name=value` exactly as written in the URL,
sorted by name and joined by `&`. So the order of the parameters in the URL does not matter, and
parameters we do not know (`?v=123` cache busters) are never signed nor checked.

Standard library only: the main application imports `sign_url` without aiohttp or pyvips.
The key is the UTF-8 bytes of `transform.signing_key`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import quote

# Every query parameter a transform reads; any other name is ignored.
PARAMETERS: Final = frozenset(
    {"w", "h", "dpr", "fit", "pos", "enlarge", "fm", "q", "bg", "preset", "s"}
    | {"rect", "rot", "flip", "blur", "sharp"}  # the geometry and filter operations
)
SIGNATURE: Final = "s"
ROUTE_PREFIX: Final = "/images/"


def split_query(raw_query: str) -> list[tuple[str, str]]:
    """`name=value` pieces of a raw query string, as written (empty pieces dropped; no '=': value "")."""
    pairs: list[tuple[str, str]] = []
    for piece in raw_query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((name, value))
    return pairs


def canonical_string(raw_path: str, pairs: Iterable[tuple[str, str]]) -> str:
    """What is signed: `raw_path?` and the recognised pairs but `s`, sorted by name, joined by '&'."""
    signed = sorted((name, value) for name, value in pairs if name in PARAMETERS and name != SIGNATURE)
    return raw_path + "?" + "&".join(f"{name}={value}" for name, value in signed)


def _pairs(params: str | Mapping[str, str]) -> list[tuple[str, str]]:
    return split_query(params) if isinstance(params, str) else list(params.items())


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def sign(key: str | bytes, path: str, params: str | Mapping[str, str]) -> str:
    """The signature `s` for `path` (as written in the URL after `/images/`) and `params`.

    `params` is a raw query string (`"w=300&fm=webp"`) or a mapping of names to values as they are
    written in the URL; unknown names and `s` are left out, as the server does.
    """
    return _digest(key, canonical_string(path, _pairs(params))).decode("ascii")


def _digest(key: str | bytes, canonical: str) -> bytes:
    digest = hmac.new(_key_bytes(key), canonical.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=")


def verify(key: str | bytes, raw_path: str, pairs: Iterable[tuple[str, str]], signature: str) -> bool:
    """Whether `signature` is the one for these pairs (compared in constant time)."""
    expected = _digest(key, canonical_string(raw_path, pairs))
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def sign_url(base: str, path: str, params: str | Mapping[str, str], key: str | bytes) -> str:
    """A signed URL: `base` + `/images/` + the quoted blob `path` + `?` + `params` + `&s=...`.

    `base` is the service's origin (`"https://img.example.com"`) or `""` for a path-only URL.
    `path` is the blob name, not yet percent-encoded (`"photos/my cat.jpg"`); `params` is a query
    string as it should appear (`"w=300&fm=webp"`) or a mapping of names to plain values, which are
    percent-encoded here. Unknown names stay in the URL but are not signed.
    """
    raw_path = quote(path, safe="/")
    if isinstance(params, str):
        pieces = [p for p in params.lstrip("?").split("&") if p and p.partition("=")[0] != SIGNATURE]
    else:
        pieces = [f"{name}={quote(value, safe='')}" for name, value in params.items() if name != SIGNATURE]
    query = "&".join(pieces)
    signature = sign(key, raw_path, query)
    joined = f"{query}&{SIGNATURE}={signature}" if query else f"{SIGNATURE}={signature}"
    return f"{base.rstrip('/')}{ROUTE_PREFIX}{raw_path}?{joined}"
