"""Ranges, conditional requests, revalidation and stale serving, on both delivery paths.

`kind` parametrizes every test that must behave alike for a blob held in memory ("cached") and a
blob too large for it, streamed from Azure ("streamed").
"""

from __future__ import annotations

import asyncio
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Final

import pytest
from aiohttp import web
from azure.storage.blob.aio import ContainerClient

from imgproxy.web.keys import FETCHER
from tests.helpers import AUTH, AppClient, AppClientFactory, fetch, payload, sha256, upload, wait_until
from tests.support.origin_proxy import OriginProxy

ITEM_LIMIT = 50_000
LIMITS: Final = {"cache__max_item_bytes": ITEM_LIMIT, "origin__download_chunk_bytes": 16 * 1024}  # small
SIZES = {"cached": 40_000, "streamed": 200_000}
KINDS = list(SIZES)


async def put(container: ContainerClient, kind: str, seed: int = 0) -> tuple[str, bytes]:
    data = payload(SIZES[kind], seed=seed)
    name = f"{kind}.bin"
    await upload(container, name, data)
    return name, data


# --- ranges ---------------------------------------------------------------------------------

RANGES = [
    # header, expected (start, end) or None for 200 full, or "416"
    ("bytes=0-99", (0, 99)),
    ("bytes=0-0", (0, 0)),
    ("bytes=100-", (100, None)),
    ("bytes=-500", (-500, None)),
    ("bytes=-999999999", (0, None)),
    ("bytes=1000-99999999", (1000, None)),
    ("BYTES=5-9", (5, 9)),
    ("bytes=999999999-", "416"),
    ("bytes=-0", "416"),
    ("bytes=0-10,20-30", None),
    ("bytes=abc", None),
    ("bytes=10-5", None),
    ("items=0-10", None),
    ("bytes=", None),
    ("bytes=-", None),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("header", "expected"), RANGES, ids=[h for h, _ in RANGES])
async def test_range_forms(
    kind: str, header: str, expected: Any, app_client: AppClientFactory, container: ContainerClient
) -> None:
    """Each Range form gives the right status, Content-Range, Content-Length and bytes."""
    client = await app_client(**LIMITS)
    name, data = await put(container, kind)
    size = len(data)
    status, headers, body = await fetch(client, f"/images/{name}", Range=header)

    assert headers.get("Accept-Ranges", "bytes") == "bytes"
    if expected == "416":
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{size}"
        return
    if expected is None:
        assert status == 200
        assert "Content-Range" not in headers
        assert sha256(body) == sha256(data)
        return
    start, end = expected
    start = start if start >= 0 else size + start
    end = size - 1 if end is None else end
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert headers["Content-Length"] == str(end - start + 1)
    assert body == data[start : end + 1]
    assert headers["Accept-Ranges"] == "bytes"


async def test_range_of_empty_blob_is_416(client: AppClient, container: ContainerClient) -> None:
    """No range of a zero-byte blob can be satisfied."""
    await upload(container, "empty.bin", b"")
    status, headers, _ = await fetch(client, "/images/empty.bin", Range="bytes=0-")
    assert (status, headers["Content-Range"]) == (416, "bytes */0")


async def test_streamed_range_moves_about_the_range(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A 1 KiB range of a large blob reads about 1 KiB from Azure (once its metadata is known)."""
    client = await app_client(**LIMITS)
    name, data = await put(container, "streamed")
    await fetch(client, f"/images/{name}", Range="bytes=0-0")  # learns the metadata (one probe GET)
    before = origin.body_bytes(name)
    status, _, body = await fetch(client, f"/images/{name}", Range="bytes=100000-101023")
    assert status == 206
    assert body == data[100000:101024]
    assert origin.body_bytes(name) - before == 1024


async def test_head_ignores_range(client: AppClient, container: ContainerClient) -> None:
    """Range is defined for GET only: HEAD answers the full representation's headers."""
    await upload(container, "h.bin", payload(1000))
    response = await client.head("/images/h.bin", headers={"Range": "bytes=0-9"})
    assert response.status == 200
    assert response.headers["Content-Length"] == "1000"


@pytest.mark.parametrize("kind", KINDS)
async def test_if_range(kind: str, app_client: AppClientFactory, container: ContainerClient) -> None:
    """If-Range with the current ETag or date honours the range; a stale or weak one sends 200."""
    client = await app_client(**LIMITS)
    name, data = await put(container, kind)
    _, headers, _ = await fetch(client, f"/images/{name}")
    etag, modified = headers["ETag"], headers["Last-Modified"]

    status, _, body = await fetch(client, f"/images/{name}", Range="bytes=0-9", **{"If-Range": etag})
    assert (status, body) == (206, data[:10])
    status, _, body = await fetch(client, f"/images/{name}", Range="bytes=0-9", **{"If-Range": modified})
    assert (status, body) == (206, data[:10])
    for stale in ('"0xSTALE"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT", "garbage"):
        status, _, body = await fetch(client, f"/images/{name}", Range="bytes=0-9", **{"If-Range": stale})
        assert status == 200, stale
        assert sha256(body) == sha256(data)


# --- conditional requests -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_304_by_etag_and_by_date(
    kind: str, app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """If-None-Match (lists, weak, *) and If-Modified-Since give 304s from the cache, no origin."""
    client = await app_client(**LIMITS)
    name, _ = await put(container, kind)
    _, headers, _ = await fetch(client, f"/images/{name}", Range="bytes=0-0")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    requests_before = len(origin.requests)

    later = format_datetime(parsedate_to_datetime(modified).replace(year=2100), usegmt=True)
    for conditional in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", {etag}'},
        {"If-None-Match": f"W/{etag}"},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
        {"If-Modified-Since": later},
    ):
        status, h304, body = await fetch(client, f"/images/{name}", **conditional)
        assert status == 304, conditional
        assert body == b""
        assert h304["ETag"] == etag
        assert h304["Last-Modified"] == modified
        assert h304["Cache-Control"] == "public, max-age=86400"
    assert len(origin.requests) == requests_before

    for conditional in (
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
        {"If-None-Match": '"other"', "If-Modified-Since": modified},  # INM wins (13.2.2)
    ):
        status, _, body = await fetch(client, f"/images/{name}", **conditional)
        assert status == 200, conditional


@pytest.mark.parametrize("kind", KINDS)
async def test_if_match_and_if_unmodified_since(
    kind: str, app_client: AppClientFactory, container: ContainerClient
) -> None:
    """If-Match with another ETag, or an older If-Unmodified-Since, is 412; matching ones pass."""
    client = await app_client(**LIMITS)
    name, _ = await put(container, kind)
    _, headers, _ = await fetch(client, f"/images/{name}", Range="bytes=0-0")
    assert (await fetch(client, f"/images/{name}", **{"If-Match": '"nope"'}))[0] == 412
    assert (
        await fetch(client, f"/images/{name}", **{"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    )[0] == 412
    assert (await fetch(client, f"/images/{name}", **{"If-Match": headers["ETag"]}))[0] == 200
    assert (await fetch(client, f"/images/{name}", **{"If-Match": "*"}))[0] == 200


async def test_206_from_cache_makes_no_origin_request(
    client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """A range of a fresh cached blob is cut from memory."""
    data = payload(5000)
    await upload(container, "r.bin", data)
    await fetch(client, "/images/r.bin")
    count = origin.count("r.bin")
    status, headers, body = await fetch(client, "/images/r.bin", Range="bytes=10-19")
    assert (status, body, headers["X-Cache"]) == (206, data[10:20], "HIT")
    assert origin.count("r.bin") == count


# --- revalidation ---------------------------------------------------------------------------


def revalidations(origin: OriginProxy, name: str) -> list[Any]:
    """Conditional requests (If-None-Match) that reached Azure for `name`."""
    return [r for r in origin.requests if r.blob == name and r.conditional]


@pytest.mark.parametrize("kind", KINDS)
async def test_expired_unchanged_blob_revalidates_without_body(
    kind: str, app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """After ttl_s an unchanged blob costs one conditional request answered 304, no body."""
    client = await app_client(**LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    name, data = await put(container, kind)
    await fetch(client, f"/images/{name}", Range="bytes=0-0")
    status, headers, body = await fetch(client, f"/images/{name}", **{"If-None-Match": '"x"'})
    assert status == 200
    assert sha256(body) == sha256(data)
    checks = revalidations(origin, name)
    assert len(checks) == 1
    assert (checks[0].status, checks[0].body_bytes) == (304, 0)
    if kind == "cached":
        assert headers["X-Cache"] == "HIT"


@pytest.mark.parametrize("kind", KINDS)
async def test_expired_changed_blob_is_replaced(
    kind: str, app_client: AppClientFactory, container: ContainerClient
) -> None:
    """After ttl_s a changed blob is fetched anew and served with its new ETag."""
    client = await app_client(**LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    name, old = await put(container, kind, seed=1)
    _, first, _ = await fetch(client, f"/images/{name}")
    _, new = await put(container, kind, seed=2)
    status, headers, body = await fetch(client, f"/images/{name}")
    assert status == 200
    assert sha256(body) == sha256(new) != sha256(old)
    assert headers["ETag"] != first["ETag"]


@pytest.mark.parametrize("kind", KINDS)
async def test_expired_deleted_blob_is_dropped_and_404(
    kind: str, app_client: AppClientFactory, container: ContainerClient
) -> None:
    """After ttl_s a deleted blob answers 404 and leaves the cache."""
    client = await app_client(
        **LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0, cache__stale_if_error_s=0
    )
    name, _ = await put(container, kind)
    assert (await fetch(client, f"/images/{name}"))[0] == 200
    await container.delete_blob(name)
    assert (await fetch(client, f"/images/{name}"))[0] == 404
    stats = await (await client.get("/admin/cache", headers=AUTH)).json()
    assert stats["cache_size"] == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_revalidations_coalesce(
    kind: str, app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """Ten requests for one expired blob send one conditional request to Azure."""
    client = await app_client(**LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    name, data = await put(container, kind)
    await fetch(client, f"/images/{name}", Range="bytes=0-0")
    held = origin.hold(lambda r: r.path.endswith("/" + name) and "If-None-Match" in r.headers)
    tasks = [asyncio.create_task(fetch(client, f"/images/{name}", Range="bytes=0-9")) for _ in range(10)]
    await held.arrived.wait()
    await wait_until(lambda: client.app[FETCHER].waiting(name) == 10)
    held.release.set()
    results = await asyncio.gather(*tasks)
    assert {(status, body) for status, _, body in results} == {(206, data[:10])}
    assert len(revalidations(origin, name)) == 1


# --- stale serving --------------------------------------------------------------------------


async def test_stale_while_revalidate_answers_before_origin(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """Within stale_while_revalidate_s the stale entry is served at once; one refresh runs behind."""
    client = await app_client(**LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=3600)
    name, data = await put(container, "cached")
    await fetch(client, f"/images/{name}")
    held = origin.hold(lambda r: r.path.endswith("/" + name))

    # The origin is held: these can only be answered from the stale entry.
    for _ in range(3):
        status, headers, body = await fetch(client, f"/images/{name}")
        assert (status, headers["X-Cache"]) == (200, "STALE")
        assert sha256(body) == sha256(data)
    await held.arrived.wait()
    assert held.count == 1  # one background refresh for three stale answers
    held.release.set()
    await wait_until(lambda: client.app[FETCHER].in_flight() == 0)
    assert len(revalidations(origin, name)) == 1


async def test_stale_if_error_serves_stale_while_origin_fails(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """When Azure fails, an expired entry within stale_if_error_s is served as X-Cache: STALE."""
    client = await app_client(
        **LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0, cache__stale_if_error_s=3600
    )
    name, data = await put(container, "cached")
    await fetch(client, f"/images/{name}")
    origin.fail_with(503)
    status, headers, body = await fetch(client, f"/images/{name}")
    assert (status, headers["X-Cache"]) == (200, "STALE")
    assert sha256(body) == sha256(data)
    origin.heal()
    status, headers, _ = await fetch(client, f"/images/{name}")
    assert (status, headers["X-Cache"]) == (200, "HIT")


async def test_stale_if_error_window_is_bounded(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """Past stale_if_error_s an origin failure is a 502 again."""
    client = await app_client(
        **LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0, cache__stale_if_error_s=0
    )
    name, _ = await put(container, "cached")
    await fetch(client, f"/images/{name}")
    origin.fail_with(503)
    assert (await fetch(client, f"/images/{name}"))[0] == 502


async def test_stale_if_error_on_timeout(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """An origin that times out also falls back to the stale entry."""
    client = await app_client(
        **LIMITS,
        cache__ttl_s=0,
        cache__stale_while_revalidate_s=0,
        cache__stale_if_error_s=3600,
        origin__timeout_s=0.3,
    )
    name, data = await put(container, "cached")
    await fetch(client, f"/images/{name}")
    held = origin.hold(lambda r: r.path.endswith("/" + name))
    try:
        status, headers, body = await fetch(client, f"/images/{name}")
        assert (status, headers["X-Cache"], sha256(body)) == (200, "STALE", sha256(data))
    finally:
        held.release.set()


# --- negative caching -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ghost.png", "g" * 1020 + ".png"], ids=["short", "longest"])
async def test_missing_blob_is_remembered_for_negative_ttl(
    name: str, app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A hot missing path reaches Azure once per negative_ttl_s; a purge forgets it (the longest
    path too, which the index holds as a digest)."""
    client = await app_client(**LIMITS, cache__negative_ttl_s=3600)
    for _ in range(5):
        assert (await fetch(client, f"/images/{name}"))[0] == 404
    assert origin.count(name) == 1
    await upload(container, name, b"boo")
    assert (await fetch(client, f"/images/{name}"))[0] == 404  # still remembered
    await client.delete(f"/admin/cache/{name}", headers=AUTH)
    assert (await fetch(client, f"/images/{name}"))[:3:2] == (200, b"boo")


async def test_negative_ttl_zero_asks_every_time(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """With negative_ttl_s = 0 each request for a missing blob asks Azure."""
    client = await app_client(**LIMITS, cache__negative_ttl_s=0)
    for _ in range(3):
        assert (await fetch(client, "/images/ghost.png"))[0] == 404
    assert origin.count("ghost.png") == 3


async def test_injected_404_mid_life_drops_entry(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A revalidation answered 404 drops the entry even inside the stale-if-error window."""
    client = await app_client(
        **LIMITS, cache__ttl_s=0, cache__stale_while_revalidate_s=0, cache__stale_if_error_s=3600
    )
    name, _ = await put(container, "cached")
    await fetch(client, f"/images/{name}")

    async def gone(request: web.Request) -> web.StreamResponse | None:
        return web.Response(status=404, headers={"x-ms-error-code": "BlobNotFound"})

    origin.hook = gone
    assert (await fetch(client, f"/images/{name}"))[0] == 404
