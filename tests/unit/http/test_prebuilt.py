"""`prebuilt`: the pre-serialized plain hit, and every case where it must leave the answer to aiohttp."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.test_utils import make_mocked_request

from imgproxy.config import ActiveContent
from imgproxy.core.blob import BlobMeta
from imgproxy.core.errors import ActiveContentRefused
from imgproxy.http.content_policy import ResponsePolicy
from imgproxy.http.prebuilt import MAX_BODY, SENT, sent, serialized_head, write_plain_hit

MODIFIED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
BODY = b"\x89PNG" + bytes(range(256)) * 4
META = BlobMeta(size=len(BODY), etag='"0xABC"', last_modified=MODIFIED, content_type="image/png")
CACHE_CONTROL = "public, max-age=60"
POLICY = ResponsePolicy(CACHE_CONTROL)
# Keeps a declared type that is not an image as it is (the default would send octet-stream).
SANDBOX = ResponsePolicy(CACHE_CONTROL, ActiveContent.SANDBOX)


class RecordingTransport(asyncio.Transport):
    """A transport that keeps what is written, with a settable backlog and closing state."""

    def __init__(self, buffered: int = 0, closing: bool = False) -> None:
        super().__init__()
        self.buffered = buffered
        self.closing = closing
        self.written: list[bytes] = []

    def writelines(self, list_of_data: Any) -> None:
        self.written.extend(bytes(chunk) for chunk in list_of_data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def request(transport: asyncio.Transport, version: Any = HttpVersion11, **headers: str) -> web.Request:
    # `closing` is what the server's parser makes of `Connection: close` (the mock does not parse it).
    closing = headers.get("Connection") == "close"
    return make_mocked_request(
        "GET", "/images/a.png", headers=headers, version=version, transport=transport, closing=closing
    )


def parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = [line.split(": ", 1) for line in lines]
    headers = {name.lower(): value for name, value in fields}
    assert len(headers) == len(fields), "no header twice"
    return status, headers, body


def test_written_answer_is_a_complete_200_with_every_header_of_the_hit() -> None:
    transport = RecordingTransport()
    assert write_plain_hit(request(transport), META, BODY, POLICY)
    status, headers, body = parse(b"".join(transport.written))
    assert status == "HTTP/1.1 200 OK"
    assert body == BODY
    assert headers == {
        "content-type": "image/png",
        "etag": '"0xABC"',
        "last-modified": "Fri, 01 May 2026 12:00:00 GMT",
        "cache-control": CACHE_CONTROL,
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "content-security-policy": "default-src 'none'; sandbox",
        "x-cache": "HIT",
        "content-length": str(len(BODY)),
        "server": "imgproxy",
        "date": headers["date"],
    }
    age = datetime.now(UTC) - parsedate_to_datetime(headers["date"])
    assert abs(age.total_seconds()) < 5
    # The body goes out as the object the cache holds: no copy to build the answer.
    assert len(transport.written) == 3


@pytest.mark.parametrize(
    ("case", "transport", "version", "headers", "body"),
    [
        ("bytes still queued for the client", RecordingTransport(buffered=1), HttpVersion11, {}, BODY),
        ("closing transport", RecordingTransport(closing=True), HttpVersion11, {}, BODY),
        ("HTTP/1.0", RecordingTransport(), HttpVersion10, {}, BODY),
        ("Connection: close", RecordingTransport(), HttpVersion11, {"Connection": "close"}, BODY),
        ("body above MAX_BODY", RecordingTransport(), HttpVersion11, {}, bytes(MAX_BODY + 1)),
        ("body not of the blob's size", RecordingTransport(), HttpVersion11, {}, BODY[:-1]),
    ],
)
def test_declines_where_aiohttp_must_answer(
    case: str,
    transport: RecordingTransport,
    version: Any,
    headers: dict[str, str],
    body: bytes,
) -> None:
    meta = META if len(body) != MAX_BODY + 1 else BlobMeta(len(body), '"big"', MODIFIED, "image/png")
    assert not write_plain_hit(request(transport, version, **headers), meta, body, POLICY), case
    assert transport.written == []


@pytest.mark.parametrize("bad", ["image/png\r\nSet-Cookie: x=1", "image/png\nX: y", "image/png\r"])
def test_a_header_value_with_a_line_break_is_never_serialized(bad: str) -> None:
    meta = BlobMeta(size=len(BODY), etag='"0xBAD"', last_modified=MODIFIED, content_type=bad)
    assert serialized_head(meta, SANDBOX) is None
    transport = RecordingTransport()
    assert not write_plain_hit(request(transport), meta, BODY, SANDBOX)
    assert transport.written == []


def test_head_is_built_once_per_blob_version() -> None:
    first = serialized_head(META, POLICY)
    assert first is not None and serialized_head(META, POLICY) is first
    changed = BlobMeta(size=len(BODY), etag='"0xDEF"', last_modified=MODIFIED, content_type="image/png")
    other = serialized_head(changed, POLICY)
    assert other is not None and b'ETag: "0xDEF"' in other


async def test_sent_response_leaves_nothing_for_the_server_to_do() -> None:
    assert SENT.keep_alive is True
    assert await SENT.prepare(request(RecordingTransport())) is None
    await SENT.write_eof()
    assert SENT.status == 200


def test_sent_responses_are_shared_per_status_and_keep_alive() -> None:
    """One `Sent` per (status, keep_alive), built once: the pass-through's 200s share `SENT`."""
    assert sent(200, True) is SENT
    closing = sent(502, False)
    assert sent(502, False) is closing
    assert (closing.status, closing.keep_alive) == (502, False)
    assert sent(502, True) is not closing and sent(502, True).keep_alive is True


def test_an_active_blob_is_serialized_as_an_attachment() -> None:
    """Under the default policy an HTML hit goes out pre-serialized as octet-stream, attachment."""
    html = BlobMeta(size=len(BODY), etag='"0xHTML"', last_modified=MODIFIED, content_type="text/html")
    transport = RecordingTransport()
    assert write_plain_hit(request(transport), html, BODY, POLICY)
    status, headers, body = parse(b"".join(transport.written))
    assert (status, body) == ("HTTP/1.1 200 OK", BODY)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == "attachment"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "default-src 'none'; sandbox"


def test_a_refused_blob_is_never_written() -> None:
    """Under `refuse` an SVG hit raises ActiveContentRefused and nothing reaches the transport."""
    svg = BlobMeta(size=len(BODY), etag='"0xSVG"', last_modified=MODIFIED, content_type="image/svg+xml")
    transport = RecordingTransport()
    with pytest.raises(ActiveContentRefused):
        write_plain_hit(request(transport), svg, BODY, ResponsePolicy(CACHE_CONTROL, ActiveContent.REFUSE))
    assert transport.written == []
