"""Copy a chunk source into a `StreamResponse` with bounded memory.

Each origin chunk is written in slices of `http.stream_chunk_bytes` (memoryviews, no copies);
`StreamResponse.write` waits for the socket to drain, so a slow reader slows the origin reads
instead of growing a buffer. Once headers are sent an error can only abort the connection: the
client then sees a body shorter than `Content-Length`, never a complete-looking wrong one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import BinaryIO, Final, Protocol

from aiohttp import web

from imgproxy.core.errors import OriginError

log = logging.getLogger(__name__)


class OpenFile(Protocol):
    """A file opened and checked for sending (the disk tier's `OpenEntry`)."""

    file: BinaryIO

    async def damaged(self, reason: str) -> None:
        """The send came up short: the file is not what was recorded (drop its entry)."""

    def close(self) -> None: ...


COPY_BYTES: Final = 256 * 1024  # one read of a disk file sent without sendfile (its memory bound)
# asyncio's sendfile waits for the socket itself, past the protocol's flow control, so the front
# door's send deadline never sees it stall: each piece of this size gets the deadline instead
# (a client reading slower than this per `http.send_timeout_s` is cut off).
SENDFILE_PIECE_BYTES: Final = 1024 * 1024


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
    request: web.Request,
    response: web.StreamResponse,
    opened: OpenFile,
    offset: int,
    count: int,
    send_timeout_s: float,
) -> int:
    """Send `count` bytes of a checked disk file from `offset`, then close it; return bytes sent.

    With the kernel's sendfile where the loop has it (asyncio's selector loop; asyncio copies
    for TLS itself), else copied in bounded reads (uvloop has no `loop.sendfile`). A send that
    comes up short (the file shrank after its check, a read failed) aborts the connection, so the
    client sees an error rather than waiting for bytes that will not come, and drops the entry.
    """
    try:
        await response.prepare(request)  # StreamResponse sends its headers at once
        transport = request.transport
        if transport is None or transport.is_closing():
            return 0  # the client went away
        sent = 0
        try:
            if count:
                sent = await _send_body(response, transport, opened.file, offset, count, send_timeout_s)
        except ConnectionError:
            return sent  # the client went away: nothing wrong with the file
        except TimeoutError:  # the client stopped reading a sendfile piece: as the front door does
            log.info("aborting %s: the client read nothing for %.0f s", request.path, send_timeout_s)
            _abort(request)
            return sent
        except OSError as exc:  # reading the file failed (EIO, ...)
            await _cut_short(request, opened, sent, count, f"read failed: {exc}")
            return sent
        if sent != count:
            await _cut_short(request, opened, sent, count, f"sent {sent} of {count} bytes")
            return sent
        await response.write_eof()
        return count
    finally:
        opened.close()


async def _send_body(
    response: web.StreamResponse,
    transport: asyncio.Transport,
    file: BinaryIO,
    offset: int,
    count: int,
    send_timeout_s: float,
) -> int:
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        while sent < count:
            piece = min(count - sent, SENDFILE_PIECE_BYTES)
            async with asyncio.timeout(send_timeout_s):
                done = await loop.sendfile(transport, file, offset + sent, piece)
            sent += done
            if done < piece:
                return sent  # an early end of file: the caller aborts
        return sent
    except NotImplementedError:
        if sent:
            raise
    fd = file.fileno()
    while sent < count:  # the copy: one bounded read at a time, back-pressured by the client
        chunk = await loop.run_in_executor(None, os.pread, fd, min(count - sent, COPY_BYTES), offset + sent)
        if not chunk:
            break  # end of file before `count`: the caller aborts
        await response.write(chunk)
        sent += len(chunk)
    return sent


async def _cut_short(request: web.Request, opened: OpenFile, sent: int, count: int, reason: str) -> None:
    log.warning("aborting %s after %d of %d bytes: disk file %s", request.path, sent, count, reason)
    _abort(request)
    await opened.damaged(reason)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()  # at once: unsent bytes would otherwise still be flushed
