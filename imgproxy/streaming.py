"""Copy a chunk source into a `StreamResponse` with bounded memory.

Each origin chunk is written in slices of `http.stream_chunk_bytes` (memoryviews, no copies);
`StreamResponse.write` waits for the socket to drain, so a slow reader slows the origin reads
instead of growing a buffer. Once headers are sent an error can only abort the connection: the
client then sees a body shorter than `Content-Length`, never a complete-looking wrong one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

from aiohttp import web

from .errors import OriginError

log = logging.getLogger(__name__)


async def send_stream(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    write_bytes: int,
) -> int:
    """Write every chunk to the prepared `response`; return the body bytes sent."""
    sent = 0
    async with aclosing(chunks):
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                for start in range(0, len(view), write_bytes):
                    await response.write(view[start : start + write_bytes])
                sent += len(chunk)
        except OriginError as exc:
            log.warning("aborting %s after %d bytes: %s", request.path, sent, exc)
            _abort(request)
            return sent
        except ConnectionError:  # the client went away; closing the generator frees the rest
            return sent
    await response.write_eof()
    return sent


async def send_file(
    request: web.Request, response: web.StreamResponse, file: Path, offset: int, count: int
) -> int:
    """Send `count` bytes of `file` from `offset` with the kernel's sendfile (as `FileResponse`)."""
    loop = asyncio.get_running_loop()
    fobj = await loop.run_in_executor(None, open, file, "rb")  # opened before headers: may raise
    try:
        await response.prepare(request)  # StreamResponse sends its headers at once
        transport = request.transport
        if count and transport is not None:
            try:
                await loop.sendfile(transport, fobj, offset, count)
            except NotImplementedError:  # e.g. TLS transports: copy through Python, bounded
                fobj.seek(offset)
                remaining = count
                while remaining:
                    chunk = await loop.run_in_executor(None, fobj.read, min(remaining, 256 * 1024))
                    if not chunk:
                        break
                    await response.write(chunk)
                    remaining -= len(chunk)
            except ConnectionError:
                return 0
        await response.write_eof()
        return count
    finally:
        await loop.run_in_executor(None, fobj.close)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()
