"""Forwarding a request to Azurite: the shared part of the counting proxies of the tests and bench."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import unquote

from aiohttp import ClientResponse, ClientSession, web
from yarl import URL

from .azurite import ACCOUNT

# Hop-by-hop and framing headers belong to each connection, never forwarded.
HOP_BY_HOP: Final = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length"})


def split_blob_path(raw_path: str) -> tuple[str, str]:
    """'/devstoreaccount1/container/a/b.png' -> ('container', 'a/b.png')."""
    parts = unquote(raw_path).lstrip("/").split("/", 2)
    if parts and parts[0] == ACCOUNT:
        parts = parts[1:]
    container = parts[0] if parts else ""
    blob = parts[1] if len(parts) > 1 else ""
    return container, blob


@asynccontextmanager
async def send_upstream(
    session: ClientSession, upstream: str, request: web.Request
) -> AsyncIterator[ClientResponse]:
    """`request` sent on to `upstream` as it came (same raw path and query, so SharedKey verifies)."""
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    async with session.request(
        request.method,
        URL(upstream + request.rel_url.raw_path_qs, encoded=True),
        headers=headers,
        data=io.BytesIO(body) if body else None,
        allow_redirects=False,
    ) as response:
        yield response


async def start_reply(request: web.Request, upstream: ClientResponse) -> web.StreamResponse:
    """A prepared response with the upstream's status, end-to-end headers and length."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in upstream.headers.items():
        if name.lower() not in HOP_BY_HOP:
            response.headers.add(name, value)
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    return response
