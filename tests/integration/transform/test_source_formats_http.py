"""HEIC and SVG sources over HTTP: real server, real Azurite, real libheif and librsvg."""

from __future__ import annotations

from typing import Any, Final

import pytest
from azure.storage.blob.aio import ContainerClient

from tests.helpers import AppClientFactory, fetch, upload
from tests.support import source_formats
from tests.support.images import BLUE, GREEN, RED, WHITE, decode, near, pixel, sniff

CHROME: Final = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Every app here has transforms on (unsigned parameters allowed)."""
    return {"transforms": True}


@pytest.fixture
async def heic_photo(container: ContainerClient) -> bytes:
    data = source_formats.heic_rotated(400, 300)  # EXIF 6 under the container's irot, as an iPhone's
    await upload(container, "photo.heic", data, content_type="image/heic")
    return data


@pytest.fixture
async def logo(container: ContainerClient) -> bytes:
    data = source_formats.svg_quadrants(200, 100)
    await upload(container, "logo.svg", data, content_type="image/svg+xml")
    return data


async def test_a_heic_becomes_a_jpeg_200_upright(app_client: AppClientFactory, heic_photo: bytes) -> None:
    client = await app_client()
    for query in ("w=200&fm=jpeg", "w=200"):  # no fm: HEIC is not a browser's format, JPEG it is
        status, headers, body = await fetch(client, f"/images/photo.heic?{query}")
        assert (status, headers["Content-Type"], sniff(body)) == (200, "image/jpeg", "jpeg")
        image = decode(body)
        assert image.size == (200, 150)
        assert near(pixel(image, 0.1, 0.1), RED) and near(pixel(image, 0.9, 0.1), GREEN)
        assert near(pixel(image, 0.1, 0.9), BLUE) and near(pixel(image, 0.9, 0.9), WHITE)


async def test_a_corrupt_heic_and_a_billion_laughs_svg_answer_422(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    truncated = source_formats.heic_quadrants(256, 256)[:-40]
    await upload(container, "broken.heic", truncated, content_type="image/heic")
    await upload(container, "laughs.svg", source_formats.billion_laughs(), content_type="image/svg+xml")
    client = await app_client()
    for path in ("broken.heic", "laughs.svg"):
        status, _, body = await fetch(client, f"/images/{path}?w=100&fm=png")
        assert status == 422, body[:200]


async def test_an_svg_variant_is_a_png_drawn_at_the_asked_width(
    app_client: AppClientFactory, logo: bytes
) -> None:
    client = await app_client()
    status, headers, body = await fetch(client, "/images/logo.svg?w=400")
    assert (status, headers["Content-Type"], sniff(body)) == (200, "image/png", "png")
    assert decode(body).size == (400, 200)
    assert "Content-Disposition" not in headers  # a raster: inline


@pytest.mark.parametrize("auto_format", [False, True])
async def test_a_plain_svg_request_is_still_the_original_under_active_content(
    app_client: AppClientFactory, logo: bytes, auto_format: bool
) -> None:
    """Only a variant is drawn: the SVG itself is served as before, as a download by default
    (`http.active_content = attachment`), even with `transform.auto_format` and Chrome's Accept."""
    client = await app_client(transform__auto_format=auto_format)
    status, headers, body = await fetch(client, "/images/logo.svg", Accept=CHROME)
    assert (status, body) == (200, logo)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"
    assert "Vary" not in headers
