"""The main application's side of the admin API: `get_cache_stats()` and `clear_cache(path=None)`.

The same two calls, names and return shapes as the earlier in-process cache offered (its stats
dict has `cache_size`, `cache_bytes`, `cache_limit`, `cache_bytes_limit`; the proxy's adds its
counters), now over HTTP: `GET /admin/cache`, `DELETE /admin/cache/{path}`, `DELETE /admin/cache`,
with `Authorization: Bearer <token>`. The async twins are `aget_cache_stats()` and
`aclear_cache()`. The base URL and token are arguments, or the environment variables
`IMGPROXY_URL` and `IMGPROXY_ADMIN_TOKEN`.

The sync calls use only the standard library (`urllib.request`), so an app needs nothing else;
the async ones import aiohttp when first called. Every call is bounded by `timeout_s`. Failures are
exceptions, never a silent success:
- `AdminUnauthorized` (401: wrong or missing token), `AdminUnreachable` (refused, timed out);
- `PurgeIncomplete` (502): the purge was applied where it landed but not everywhere: Redis did
  not log it (`logged` false) or a worker did not confirm. Purges are idempotent: send it again.
- `AdminError` for anything else (404: admin API disabled; 400: a bad path; not JSON).

And for pages: `srcset(path, widths, key=..., **params)`, an `<img srcset>` of signed variant URLs
(`transform.signing.sign_url`, standard library only too).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from imgproxy.transform.signing import sign_url

URL_ENV: Final = "IMGPROXY_URL"
TOKEN_ENV: Final = "IMGPROXY_ADMIN_TOKEN"
SIGNING_KEY_ENV: Final = "IMGPROXY_TRANSFORM_SIGNING_KEY"  # the server's own setting's variable
DEFAULT_TIMEOUT_S: Final = 5.0
MAX_ANSWER_BYTES: Final = 1024 * 1024  # a stats answer is a few KiB; refuse to buffer more


class AdminError(Exception):
    """The admin call did not succeed; `status` and `answer` say what the proxy said, if anything."""

    def __init__(self, message: str, status: int | None = None, answer: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer


class AdminUnauthorized(AdminError):
    """401: the token is wrong or missing."""


class AdminUnreachable(AdminError):
    """The proxy could not be reached, or did not answer within `timeout_s`."""


class PurgeIncomplete(AdminError):
    """502: applied, but not logged for every replica or not confirmed by every worker: retry."""

    @property
    def logged(self) -> bool | None:
        """False when Redis did not log the purge; None when the answer does not say."""
        value = (self.answer or {}).get("logged")
        return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    timeout_s: float


def get_cache_stats(
    base_url: str | None = None, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """The proxy's cache statistics (`GET /admin/cache`)."""
    return _send(_call("GET", None, base_url, token, timeout_s))


def clear_cache(
    path: str | None = None,
    base_url: str | None = None,
    token: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Purge one blob path, or everything when `path` is None; returns the proxy's answer."""
    return _send(_call("DELETE", path, base_url, token, timeout_s))


async def aget_cache_stats(
    base_url: str | None = None, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """`get_cache_stats`, with aiohttp."""
    return await _asend(_call("GET", None, base_url, token, timeout_s))


async def aclear_cache(
    path: str | None = None,
    base_url: str | None = None,
    token: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """`clear_cache`, with aiohttp."""
    return await _asend(_call("DELETE", path, base_url, token, timeout_s))


def _call(method: str, path: str | None, base_url: str | None, token: str | None, timeout_s: float) -> _Call:
    base = base_url if base_url is not None else os.environ.get(URL_ENV, "")
    secret = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not base:
        raise AdminError(f"no proxy URL: pass base_url or set {URL_ENV}")
    if not secret:
        raise AdminError(f"no admin token: pass token or set {TOKEN_ENV}")
    if path is not None and not path:
        raise AdminError("path must not be empty (None purges everything)")
    target = base.rstrip("/") + "/admin/cache"
    if path is not None:
        target += "/" + quote(path, safe="/")  # the proxy decodes it once, as it does image paths
    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    return _Call(method, target, headers, timeout_s)


def _send(call: _Call) -> dict[str, Any]:
    request = urllib.request.Request(call.url, method=call.method, headers=call.headers)
    try:
        with urllib.request.urlopen(request, timeout=call.timeout_s) as response:
            return _answer(response.status, response.read(MAX_ANSWER_BYTES + 1))
    except urllib.error.HTTPError as error:
        with error:
            return _answer(error.code, error.read(MAX_ANSWER_BYTES + 1))
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise AdminUnreachable(f"{call.method} {call.url}: {exc}") from exc


async def _asend(call: _Call) -> dict[str, Any]:
    import aiohttp  # here, so the sync calls need nothing but the standard library
    from yarl import URL

    # encoded=True: sent as built; yarl would otherwise resolve "a/../b" to another path.
    url = URL(call.url, encoded=True)
    timeout = aiohttp.ClientTimeout(total=call.timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(call.method, url, headers=call.headers, allow_redirects=False) as response,
        ):
            return _answer(response.status, await response.content.read(MAX_ANSWER_BYTES + 1))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise AdminUnreachable(f"{call.method} {call.url}: {exc or type(exc).__name__}") from exc


def _answer(status: int, body: bytes) -> dict[str, Any]:
    """The JSON answer of a 2xx, or the exception its status means."""
    answer: dict[str, Any] | None = None
    if len(body) <= MAX_ANSWER_BYTES:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        answer = parsed if isinstance(parsed, dict) else None
    if status == 401:
        raise AdminUnauthorized("admin token refused (401)", status)
    if status == 502 and answer is not None and "purged" in answer:
        raise PurgeIncomplete(f"purge not applied everywhere (502): {answer}", status, answer)
    if not 200 <= status < 300:
        text = body[:200].decode("utf-8", "replace").strip()
        raise AdminError(f"admin API answered {status}: {text}", status, answer)
    if answer is None:
        raise AdminError(f"admin API answered {status} without a JSON object", status)
    return answer


def srcset(
    path: str,
    widths: Iterable[int],
    *,
    key: str | bytes | None = None,
    base_url: str = "",
    **params: str | int,
) -> str:
    """An `<img srcset>` value, `url 320w, url 640w`: a signed URL of `path` per width (ascending,
    each once) with `params` (`fm="webp"`, `q=70`: as for `sign_url`, percent-encoded here).

    `key` is `transform.signing_key` (else the `IMGPROXY_TRANSFORM_SIGNING_KEY` variable);
    `base_url` goes in front (default: path-only URLs, for pages the proxy itself serves).
    Raises `ValueError` for no key, no width, a width below 1, or a `w` or `s` in `params`.
    """
    secret = key if key is not None else os.environ.get(SIGNING_KEY_ENV, "")
    if not secret:
        raise ValueError(f"no signing key: pass key or set {SIGNING_KEY_ENV}")
    if "w" in params or "s" in params:
        raise ValueError("params must not hold w (the widths set it) or s (the signature)")
    chosen = sorted(set(widths))
    if not chosen or chosen[0] < 1:
        raise ValueError(f"widths must be at least one integer from 1 up, got {chosen}")
    values = {name: str(value) for name, value in params.items()}
    return ", ".join(f"{sign_url(base_url, path, {'w': str(w), **values}, secret)} {w}w" for w in chosen)
