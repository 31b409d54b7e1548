"""Request ids: the client's `X-Request-ID` (when short and safe) or a new one, in every answer, in
the app's request (pass-through) and in the Azure requests made for it (`x-ms-client-request-id`)."""

from __future__ import annotations

import re
from typing import Final

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient

from tests.helpers import AppClientFactory, base_url, fetch, payload, raw_answer, upload
from tests.integration.passthrough.test_passthrough import header_values
from tests.support.images import jpeg
from tests.support.origin_proxy import OriginProxy

MADE: Final = re.compile(r"[0-9a-f]{32}")  # an id of ours
GIVEN: Final = "client-Req_1.2:3"  # every allowed kind of character
INVALID: Final = ["", "a" * 65, "with space", "<script>", "semi;colon", "slash/ed", "quote'd", "ü"]
INVALID_NAMES: Final = ["empty", "65-chars", "space", "markup", "semicolon", "slash", "quote", "non-ascii"]


async def test_the_client_id_comes_back_on_every_kind_of_answer(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A valid X-Request-ID is echoed by a MISS, a hot-path HIT, a HEAD, a 206, a 304, a 404
    and a 400."""
    routed: list[str] = []
    client = await app_client(routed=routed)
    data = payload(5000)
    await upload(container, "a.png", data)
    given = {"X-Request-ID": GIVEN}
    status, miss, body = await fetch(client, "/images/a.png", **given)
    assert (status, miss["X-Cache"], body, miss["X-Request-ID"]) == (200, "MISS", data, GIVEN)
    routed.clear()
    status, hit, body = await fetch(client, "/images/a.png", **given)
    assert (status, hit["X-Cache"], body, hit["X-Request-ID"]) == (200, "HIT", data, GIVEN)
    assert routed == []  # the hot path's pre-serialized answer: it never reached the router
    etag = hit["ETag"]
    answers = [
        await fetch(client, "/images/a.png", "HEAD", **given),
        await fetch(client, "/images/a.png", Range="bytes=0-9", **given),
        await fetch(client, "/images/a.png", **{"If-None-Match": etag}, **given),
        await fetch(client, "/images/missing.png", **given),
        await fetch(client, "/images/a%00.png", **given),
    ]
    assert [(status, headers.get("X-Request-ID")) for status, headers, _ in answers] == [
        (200, GIVEN),
        (206, GIVEN),
        (304, GIVEN),
        (404, GIVEN),
        (400, GIVEN),
    ]


async def test_a_request_without_an_id_gets_a_new_one_each_time(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """No X-Request-ID: each answer (MISS, hot HIT, ops route) carries a fresh 32-hex-digit id."""
    client = await app_client()
    await upload(container, "b.png", payload(1000))
    ids = [(await fetch(client, path))[1]["X-Request-ID"] for path in ("/images/b.png",) * 3 + ("/healthz",)]
    assert all(MADE.fullmatch(value) for value in ids), ids
    assert len(set(ids)) == 4


@pytest.mark.parametrize(
    "bad", INVALID, ids=["empty", "65-chars", "space", "markup", "semicolon", "slash", "quote", "non-ascii"]
)
async def test_an_invalid_client_id_is_replaced(
    app_client: AppClientFactory, container: ContainerClient, bad: str
) -> None:
    """An id that is empty, longer than 64 characters or has other characters than [A-Za-z0-9._:-]
    is replaced by a new one (never echoed), on a miss and on a hot hit."""
    client = await app_client()
    await upload(container, "c.png", payload(1000))
    base = base_url(client)
    for _ in range(2):  # MISS, then the hot path's HIT
        answer = await raw_answer(
            base,
            b"GET /images/c.png HTTP/1.1\r\nHost: x\r\nX-Request-ID: "
            + bad.encode("utf-8")
            + b"\r\nConnection: close\r\n\r\n",
        )
        assert answer.status == 200
        assert MADE.fullmatch(answer.headers["x-request-id"]), answer.headers
        assert [value for name, value in answer.fields if name.lower() == "x-request-id"] != [bad]


async def test_azure_requests_carry_the_request_id(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """Every request made to Azure for a client's request (a whole read; a large blob's ranged
    reads) has that request's id as x-ms-client-request-id, as seen on the wire."""
    client = await app_client(cache__max_item_bytes=100_000, origin__download_chunk_bytes=64 * 1024)
    small, large = payload(5000), payload(300_000, seed=1)
    await upload(container, "small.png", small)
    await upload(container, "large.png", large)
    status, headers, body = await fetch(client, "/images/small.png", **{"X-Request-ID": "azure-small"})
    assert (status, body) == (200, small)
    status, headers, body = await fetch(client, "/images/large.png", **{"X-Request-ID": "azure-large"})
    assert (status, body, headers["X-Request-ID"]) == (200, large, "azure-large")
    status, headers, _ = await fetch(client, "/images/missing.png")
    assert status == 404
    assert [r.client_request_id for r in origin.blob_requests("small.png")] == ["azure-small"]
    reads = origin.blob_requests("large.png")
    assert len(reads) >= 1 + 300_000 // (64 * 1024)  # the first GET, then the ranged reads
    assert {r.client_request_id for r in reads} == {"azure-large"}
    assert [r.client_request_id for r in origin.blob_requests("missing.png")] == [headers["X-Request-ID"]]


async def test_the_app_gets_the_request_id_and_the_client_gets_it_back(app_client: AppClientFactory) -> None:
    """The pass-through sends the app X-Request-ID (the client's when valid, else ours: the raw
    invalid value never reaches it) and the answer carries the same id."""
    client = await app_client(upstream=True)
    base = base_url(client)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/echo/x", headers={"X-Request-ID": GIVEN}) as response:
            echoed = await response.json()
            assert response.headers.getall("X-Request-ID") == [GIVEN]
        assert header_values(echoed, "X-Request-ID") == [GIVEN]
        for headers in ({"X-Request-ID": "bad value<>"}, {}):
            async with session.post(f"{base}/echo/y", headers=headers, data=b"body") as response:
                echoed = await response.json()
                answered = response.headers.getall("X-Request-ID")
            assert len(answered) == 1 and MADE.fullmatch(answered[0])
            assert header_values(echoed, "X-Request-ID") == answered


async def test_pass_through_error_answers_carry_the_id(app_client: AppClientFactory) -> None:
    """An answer we make for the pass-through (the app refused a too large body: 413) has the id too."""
    client = await app_client(upstream=True, upstream__max_body_bytes=10)
    async with client.post("/echo/big", data=b"x" * 100, headers={"X-Request-ID": GIVEN}) as response:
        assert response.status == 413
        assert response.headers["X-Request-ID"] == GIVEN


async def test_a_variant_hit_from_the_hot_path_carries_the_id(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A transform's answer, and its hit written by the hot path, carry the client's id."""
    routed: list[str] = []
    client = await app_client(routed=routed, transforms=True)
    await upload(container, "v.jpg", jpeg(64, 48), "image/jpeg")
    given = {"X-Request-ID": GIVEN}
    status, miss, _ = await fetch(client, "/images/v.jpg?w=16&fm=png", **given)
    assert (status, miss["X-Cache"], miss["X-Request-ID"]) == (200, "MISS", GIVEN)
    routed.clear()
    status, hit, _ = await fetch(client, "/images/v.jpg?w=16&fm=png", **given)
    assert (status, hit["X-Cache"], hit["X-Request-ID"]) == (200, "HIT", GIVEN)
    assert routed == []  # answered by the hot path
