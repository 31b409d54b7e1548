"""`Authorization: Bearer <token>`, the one scheme of our protected routes (admin API, `/metrics`)."""

from __future__ import annotations

import hmac

from aiohttp import web


def require_bearer(request: web.BaseRequest, token: str, realm: str) -> None:
    """Raise a 401 (with `WWW-Authenticate: Bearer`) unless the request carries `token`, compared
    in constant time (no timing tells a guesser how much of it was right)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise web.HTTPUnauthorized(
            text=f"{realm} token required\n",
            headers={"WWW-Authenticate": f'Bearer realm="imgproxy-{realm}"'},
        )
