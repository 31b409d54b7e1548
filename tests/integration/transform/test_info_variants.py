"""`fm=json` over HTTP: a variant like any other (cached, revalidated, purged with its source), whose
body is JSON about the source. Real server, real Azurite, real libvips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
from azure.storage.blob.aio import ContainerClient

from imgproxy.transform.signing import sign_url
from imgproxy.web.keys import FETCHER, TRANSFORMS
from tests.helpers import (
    AUTH,
    AppClient,
    AppClientFactory,
    cache_stats,
    data_files,
    fetch,
    upload,
    wait_until,
)
from tests.support import images
from tests.support.origin_proxy import OriginProxy

CHROME: Final = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
KEY: Final = "test-signing-key"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Every app here has transforms on (unsigned parameters allowed unless a test says otherwise)."""
    return {"transforms": True}


def transforms_done(client: AppClient) -> int:
    return sum(client.app[TRANSFORMS].pool.stats().transforms.values())


@pytest.fixture
async def rotated(container: ContainerClient) -> bytes:
    """A JPEG stored 300x400 with EXIF orientation 6: upright 400x300."""
    data = images.jpeg_rotated_with_gps(400, 300)
    await upload(container, "photo.jpg", data, content_type="image/jpeg")
    return data


async def test_fm_json_answers_json_about_the_source(app_client: AppClientFactory, rotated: bytes) -> None:
    """200, `Content-Type: application/json` inline (no attachment), no Vary, and the source's facts."""
    client = await app_client()
    status, headers, body = await fetch(client, "/images/photo.jpg?fm=json", Accept=CHROME)
    assert (status, headers["Content-Type"], headers["X-Cache"]) == (200, "application/json", "MISS")
    assert "Content-Disposition" not in headers and "Vary" not in headers
    assert int(headers["Content-Length"]) == len(body)
    facts = json.loads(body)
    assert (facts["width"], facts["height"], facts["orientation"]) == (400, 300, 6)
    assert (facts["format"], facts["frames"], facts["has_alpha"], facts["bytes"]) == (
        "jpeg",
        1,
        False,
        len(rotated),
    )


async def test_a_second_request_is_a_hit_and_other_parameters_share_it(
    app_client: AppClientFactory, rotated: bytes, origin: OriginProxy
) -> None:
    """The second request, and one with `w`, `h` and `q` beside `fm=json`, are HITs of the one
    variant: one transform, no further origin request, the same ETag and body."""
    client = await app_client()
    first = await fetch(client, "/images/photo.jpg?fm=json")
    asked = len(origin.requests)
    second = await fetch(client, "/images/photo.jpg?fm=json")
    third = await fetch(client, "/images/photo.jpg?w=300&h=100&q=50&fm=json")
    assert (first[1]["X-Cache"], second[1]["X-Cache"], third[1]["X-Cache"]) == ("MISS", "HIT", "HIT")
    assert first[2] == second[2] == third[2]
    assert second[1]["Content-Type"] == third[1]["Content-Type"] == "application/json"  # the hot path's too
    assert first[1]["ETag"] == third[1]["ETag"] and first[1]["ETag"].startswith('"v-')
    assert len(origin.requests) == asked and transforms_done(client) == 1
    assert client.app[TRANSFORMS].pool.stats().transforms == {"json": 1}


async def test_304_on_if_none_match_and_head(app_client: AppClientFactory, rotated: bytes) -> None:
    """Conditionals and HEAD as for any variant: 304 with the ETag, HEAD with the length."""
    client = await app_client()
    _, headers, body = await fetch(client, "/images/photo.jpg?fm=json")
    status, answer, rest = await fetch(
        client, "/images/photo.jpg?fm=json", **{"If-None-Match": headers["ETag"]}
    )
    assert (status, rest, answer["ETag"]) == (304, b"", headers["ETag"])
    async with client.head("/images/photo.jpg?fm=json") as response:
        assert (response.status, response.headers["Content-Type"]) == (200, "application/json")
        assert int(response.headers["Content-Length"]) == len(body)


async def test_a_purge_of_the_source_drops_its_description(
    app_client: AppClientFactory, rotated: bytes, disk_dir: Path
) -> None:
    """`DELETE /admin/cache/<path>` drops the JSON variant in memory and on disk: the next request
    is a MISS, made again."""
    client = await app_client(disk=True)
    assert (await fetch(client, "/images/photo.jpg?fm=json"))[1]["X-Cache"] == "MISS"
    assert (await fetch(client, "/images/photo.jpg?fm=json"))[1]["X-Cache"] == "HIT"
    await wait_until(lambda: client.app[FETCHER].stats()["disk_variants"] == 1)
    async with client.delete("/admin/cache/photo.jpg", headers=AUTH) as response:
        assert (response.status, (await response.json())["purged"]) == (200, True)
    assert [file for file in data_files(disk_dir) if file.parent.name.endswith(".v")] == []
    assert (await cache_stats(client))["cache_variants"] == 0
    status, headers, body = await fetch(client, "/images/photo.jpg?fm=json")
    assert (status, headers["X-Cache"], json.loads(body)["width"]) == (200, "MISS", 400)
    assert transforms_done(client) == 2


async def test_an_overwritten_source_gets_a_new_description(
    app_client: AppClientFactory, container: ContainerClient, rotated: bytes
) -> None:
    """Revalidated with its source: once expired, a changed source gives new facts and a new ETag."""
    client = await app_client(cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    _, first, before = await fetch(client, "/images/photo.jpg?fm=json")
    await upload(container, "photo.jpg", images.jpeg(64, 48), content_type="image/jpeg")
    status, second, after = await fetch(client, "/images/photo.jpg?fm=json")
    assert (status, second["X-Cache"]) == (200, "MISS")
    assert (json.loads(before)["width"], json.loads(after)["width"]) == (400, 64)
    assert second["ETag"] != first["ETag"]


async def test_fm_json_needs_a_signature_under_a_key(app_client: AppClientFactory, rotated: bytes) -> None:
    """`fm` is a signed parameter: unsigned 403, signed 200."""
    client = await app_client(transform__signing_key=KEY, transform__allow_unsigned=False)
    status, _, _ = await fetch(client, "/images/photo.jpg?fm=json")
    assert status == 403
    status, headers, _ = await fetch(client, sign_url("", "photo.jpg", "fm=json", KEY))
    assert (status, headers["Content-Type"]) == (200, "application/json")


async def test_json_is_inline_even_when_active_content_is_refused(
    app_client: AppClientFactory, rotated: bytes
) -> None:
    """Our JSON is inert, whatever `http.active_content` says (it would refuse an HTML blob)."""
    client = await app_client(http__active_content="refuse")
    for cache in ("MISS", "HIT"):
        status, headers, _ = await fetch(client, "/images/photo.jpg?fm=json")
        assert (status, headers["Content-Type"], headers["X-Cache"]) == (200, "application/json", cache)


async def test_not_an_image_is_a_422_and_a_bad_value_a_400(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A blob that is not an image: 422; a bad value beside fm=json: 400 naming it."""
    await upload(container, "fake.png", b"not a png at all", content_type="image/png")
    client = await app_client()
    status, _, _ = await fetch(client, "/images/fake.png?fm=json")
    assert status == 422
    status, _, body = await fetch(client, "/images/fake.png?w=0&fm=json")
    assert status == 400 and b"parameter w" in body


async def test_an_animated_webp_over_http_reports_its_frames(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """Frames, format and alpha as the engine-level tests, through the tiers and the pool."""
    from PIL import Image

    frames = [Image.new("RGBA", (40, 30), colour) for colour in ((255, 0, 0, 255), (0, 255, 0, 255))]
    data = images.encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    await upload(container, "anim.webp", data, content_type="image/webp")
    client = await app_client()
    status, _, body = await fetch(client, "/images/anim.webp?fm=json")
    facts = json.loads(body)
    assert (status, facts["format"], facts["frames"], facts["width"], facts["height"]) == (
        200,
        "webp",
        2,
        40,
        30,
    )
