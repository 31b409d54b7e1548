"""GET and HEAD /images/{path}: bytes, headers, errors, and what reaches the origin."""

from __future__ import annotations

import pytest
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from yarl import URL

from imgproxy.config import Config
from tests.helpers import AUTH, MIB, AppClient, fetch_raw, payload, sha256, upload
from tests.support.origin_proxy import OriginProxy


def size_cases(config: Config) -> list[int]:
    limit = config.cache.max_item_bytes
    return [0, 1, limit - 1, limit, limit + 1, 50 * MIB]


@pytest.mark.parametrize("case", ["zero", "one", "limit-1", "limit", "limit+1", "50MiB"])
async def test_get_round_trips_bytes_by_sha256(
    case: str, client: AppClient, container: ContainerClient, config: Config, origin: OriginProxy
) -> None:
    """Every size, cached or streamed, comes back byte-exact with matching headers."""
    index = ["zero", "one", "limit-1", "limit", "limit+1", "50MiB"].index(case)
    size = size_cases(config)[index]
    data = payload(size, seed=index)
    await upload(container, f"blob-{case}.bin", data, content_type="image/jpeg")

    response = await client.get(f"/images/blob-{case}.bin")
    body = await response.read()

    assert response.status == 200
    assert sha256(body) == sha256(data)
    assert response.headers["Content-Length"] == str(size)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.headers["ETag"].startswith('"')
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Cache-Control"] == "public, max-age=86400"
    assert response.headers["X-Cache"] == "MISS"
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("size", [10, 6 * MIB])
async def test_head_has_get_headers_and_no_body(
    size: int, client: AppClient, container: ContainerClient
) -> None:
    """HEAD answers the same headers as GET (but X-Cache) and no body, cached or streamed."""
    await upload(container, "h.png", payload(size))
    head = await client.head("/images/h.png")
    get = await client.get("/images/h.png")
    await get.read()
    assert head.status == get.status == 200
    assert await head.read() == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Cache-Control"):
        assert head.headers[name] == get.headers[name], name


async def test_second_get_of_small_blob_makes_no_origin_request(
    client: AppClient, container: ContainerClient, origin: OriginProxy
) -> None:
    """A cached blob is answered without asking Azure, marked X-Cache: HIT."""
    data = payload(1000)
    await upload(container, "small.png", data)
    first = await client.get("/images/small.png")
    assert sha256(await first.read()) == sha256(data)
    assert origin.count("small.png") == 1

    second = await client.get("/images/small.png")
    assert sha256(await second.read()) == sha256(data)
    assert second.headers["X-Cache"] == "HIT"
    assert origin.count("small.png") == 1


async def test_large_blob_is_streamed_from_origin_every_time(
    client: AppClient, container: ContainerClient, config: Config, origin: OriginProxy
) -> None:
    """A blob above max_item_bytes is never cached: each GET streams it from Azure in ranges."""
    data = payload(config.cache.max_item_bytes + 1)
    await upload(container, "big.bin", data)
    for _ in range(2):
        response = await client.get("/images/big.bin")
        assert sha256(await response.read()) == sha256(data)
        assert response.headers["X-Cache"] == "MISS"
    stats = await (await client.get("/admin/cache", headers=AUTH)).json()
    assert stats["cache_size"] == 0
    # Exactly twice: the first GET's bytes are sent, not read again by the stream that follows.
    assert origin.body_bytes("big.bin") == 2 * len(data)


async def test_nested_and_escaped_names_are_served(client: AppClient, container: ContainerClient) -> None:
    """Blob names with slashes, spaces and non-ASCII characters round-trip."""
    data = payload(300)
    await upload(container, "dir/sub dir/café.png", data)
    response = await client.get(URL("/images/dir/sub%20dir/caf%C3%A9.png", encoded=True))
    assert response.status == 200
    assert sha256(await response.read()) == sha256(data)


async def test_missing_blob_is_404(client: AppClient) -> None:
    """A path with no blob answers 404 with a short reason."""
    response = await client.get("/images/nope.png")
    assert response.status == 404
    assert "not found" in await response.text()


BAD_PATHS = [
    "/images/",
    "/images/a/../b.png",
    "/images/a/../../other/x.png",
    "/images/%2e%2e/x.png",
    "/images/a/%2E%2E/%2e%2e/x.png",
    "/images/a%2F..%2F..%2Fx.png",
    "/images/./x.png",
    "/images/a//b.png",
    "/images/a\\b.png",
    "/images/a%5Cb.png",
    "/images/a%00b.png",
    "/images/a%0Ab.png",
    "/images/a%1Fb.png",
    "/images/%ff.png",
    "/images/" + "a" * 1025,
]


@pytest.mark.parametrize("raw", BAD_PATHS)
async def test_bad_path_is_400_and_never_reaches_origin(
    raw: str, client: AppClient, origin: OriginProxy
) -> None:
    """Bad paths get 400 with a reason, the origin sees nothing and /healthz still answers."""
    status, _, body = await fetch_raw(client, raw)
    assert status == 400
    assert body.decode().startswith("bad path")
    assert origin.requests == []
    assert (await client.get("/healthz")).status == 200


async def test_traversal_cannot_read_another_container(
    client: AppClient, container: ContainerClient, blob_service: BlobServiceClient, origin: OriginProxy
) -> None:
    """A '..' path naming a blob in a sibling container is refused, not served."""
    other = blob_service.get_container_client(container.container_name + "x")
    await other.create_container()
    try:
        await other.upload_blob("secret.png", b"secret")
        raw = f"/images/a/../../{other.container_name}/secret.png"
        status, _, body = await fetch_raw(client, raw)
        assert status == 400
        assert b"secret" not in body
        assert origin.requests == []
    finally:
        await other.delete_container()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_allow(method: str, client: AppClient) -> None:
    """Only GET and HEAD are allowed on images, and the answer says so."""
    response = await client.request(method, "/images/x.png")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
