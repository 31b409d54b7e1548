"""Variants over HTTP: transforms cached, coalesced, revalidated, purged and negotiated like originals.

Real server, real Azurite, real libvips, on images the tests make (`tests/support/images.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any, Final

import pytest
from azure.storage.blob.aio import ContainerClient

from imgproxy.transform.engine import CANNOT_DECODE
from imgproxy.transform.signing import sign_url
from imgproxy.web.keys import FETCHER, TRANSFORMS
from tests.helpers import (
    AUTH,
    AppClient,
    AppClientFactory,
    cache_stats,
    data_files,
    fetch,
    sha256,
    upload,
    wait_until,
)
from tests.support.images import (
    animated_gif,
    decode,
    frame_count,
    jpeg,
    jpeg_rotated_with_gps,
    jpeg_segments,
    near,
    pixel,
    png_bomb,
    png_with_alpha,
    sniff,
)
from tests.support.origin_proxy import OriginProxy

KEY: Final = "test-signing-key"
CHROME: Final = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI: Final = (
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
    "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
)
CURL: Final = "*/*"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Every app here has transforms on (unsigned parameters allowed unless a test says otherwise)."""
    return {"transforms": True}


def variant_files(root: Path) -> list[Path]:
    """The data files of variants in a disk tier (they live in `<original>.v/`)."""
    return [file for file in data_files(root) if file.parent.name.endswith(".v")]


def transforms_done(client: AppClient) -> int:
    return sum(client.app[TRANSFORMS].pool.stats().transforms.values())


@pytest.fixture
async def photo(container: ContainerClient) -> bytes:
    data = jpeg(800, 600)
    await upload(container, "photo.jpg", data, content_type="image/jpeg")
    return data


@pytest.mark.parametrize(
    ("query", "size"),
    [
        ("w=200&h=200&fit=inside", (200, 150)),
        ("w=200&h=200&fit=cover", (200, 200)),
        ("w=200&h=200&fit=contain", (200, 200)),
        ("w=200&h=200&fit=fill", (200, 200)),
        ("w=200&h=200&fit=outside", (267, 200)),
        ("w=200", (200, 150)),
        ("h=150&dpr=2", (400, 300)),
        ("w=100&dpr=1.5", (150, 112)),
    ],
)
async def test_every_fit_and_dpr_give_the_expected_pixel_size(
    app_client: AppClientFactory, photo: bytes, query: str, size: tuple[int, int]
) -> None:
    """The five fits and dpr give sharp's output sizes, as JPEG (the source's family)."""
    client = await app_client()
    status, headers, body = await fetch(client, f"/images/photo.jpg?{query}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and sniff(body) == "jpeg"
    assert decode(body).size == size
    assert int(headers["Content-Length"]) == len(body)


@pytest.mark.parametrize(
    ("fm", "magic"), [("jpeg", "jpeg"), ("png", "png"), ("webp", "webp"), ("avif", "avif")]
)
async def test_output_formats_by_magic_bytes(
    app_client: AppClientFactory, photo: bytes, fm: str, magic: str
) -> None:
    """`fm` picks the encoder; Content-Type and the bytes agree."""
    client = await app_client()
    status, headers, body = await fetch(client, f"/images/photo.jpg?w=120&fm={fm}")
    assert (status, sniff(body), headers["Content-Type"]) == (200, magic, f"image/{fm}")
    assert "Vary" not in headers  # the format was named: the bytes do not depend on Accept


@pytest.mark.parametrize(
    ("accept", "magic"), [(CHROME, "webp"), (SAFARI, "webp"), (CURL, "jpeg"), ("image/png", "jpeg")]
)
async def test_fm_auto_negotiates_from_accept_and_says_vary(
    app_client: AppClientFactory, photo: bytes, accept: str, magic: str
) -> None:
    """`fm=auto`: WebP for Chrome and Safari, the source's family for curl; `Vary: Accept` always;
    AVIF only with transform.auto_avif."""
    client = await app_client()
    status, headers, body = await fetch(client, "/images/photo.jpg?w=120&fm=auto", Accept=accept)
    assert (status, sniff(body), headers["Vary"]) == (200, magic, "Accept")


async def test_auto_avif_prefers_avif_for_chrome(app_client: AppClientFactory, photo: bytes) -> None:
    """With transform.auto_avif on, Chrome (which lists image/avif) gets AVIF."""
    client = await app_client(transform__auto_avif=True)
    _, headers, body = await fetch(client, "/images/photo.jpg?w=120&fm=auto", Accept=CHROME)
    assert (sniff(body), headers["Vary"]) == ("avif", "Accept")


async def test_the_cache_key_holds_the_chosen_format_not_the_accept_header(
    app_client: AppClientFactory, photo: bytes, origin: OriginProxy
) -> None:
    """Chrome and Safari send different Accept headers but both choose WebP: one transform; `fm=webp`
    named explicitly is the same variant again."""
    client = await app_client()
    first = await fetch(client, "/images/photo.jpg?w=90&fm=auto", Accept=CHROME)
    second = await fetch(client, "/images/photo.jpg?w=90&fm=auto", Accept=SAFARI)
    third = await fetch(client, "/images/photo.jpg?w=90&fm=webp")
    assert first[1]["X-Cache"] == "MISS" and second[1]["X-Cache"] == third[1]["X-Cache"] == "HIT"
    assert first[2] == second[2] == third[2]
    assert first[1]["ETag"] == third[1]["ETag"]
    assert transforms_done(client) == 1


async def test_variants_are_cached_with_their_own_strong_etag_and_the_sources_dates(
    app_client: AppClientFactory, photo: bytes, origin: OriginProxy
) -> None:
    """The second request is a HIT with no origin request; the ETag is strong and differs from the
    source's; Last-Modified and Cache-Control are the original's; 304, Range and HEAD work."""
    client = await app_client()
    _, original, _ = await fetch(client, "/images/photo.jpg")
    status, headers, body = await fetch(client, "/images/photo.jpg?w=300&fm=webp")
    assert (status, headers["X-Cache"]) == (200, "MISS")
    asked = len(origin.requests)
    again = await fetch(client, "/images/photo.jpg?w=300&fm=webp")
    assert (again[0], again[1]["X-Cache"], again[2]) == (200, "HIT", body)
    assert len(origin.requests) == asked
    etag = headers["ETag"]
    assert etag.startswith('"') and etag != original["ETag"]
    assert headers["Last-Modified"] == original["Last-Modified"]
    assert headers["Cache-Control"] == original["Cache-Control"]

    status, not_modified, rest = await fetch(
        client, "/images/photo.jpg?w=300&fm=webp", **{"If-None-Match": etag}
    )
    assert (status, rest, not_modified["ETag"]) == (304, b"", etag)
    status, partial, part = await fetch(client, "/images/photo.jpg?w=300&fm=webp", Range="bytes=10-19")
    assert (status, part, partial["Content-Range"]) == (206, body[10:20], f"bytes 10-19/{len(body)}")
    async with client.head("/images/photo.jpg?w=300&fm=webp") as response:
        assert (response.status, int(response.headers["Content-Length"])) == (200, len(body))
        assert await response.read() == b""


async def test_a_304_of_a_negotiated_variant_keeps_vary(app_client: AppClientFactory, photo: bytes) -> None:
    """RFC 9110 section 15.4.5: the 304 carries the Vary the 200 would."""
    client = await app_client()
    _, headers, _ = await fetch(client, "/images/photo.jpg?w=80&fm=auto", Accept=CHROME)
    status, answer, _ = await fetch(
        client, "/images/photo.jpg?w=80&fm=auto", Accept=CHROME, **{"If-None-Match": headers["ETag"]}
    )
    assert (status, answer["Vary"]) == (304, "Accept")


async def test_fifty_concurrent_identical_requests_make_one_origin_get_and_one_transform(
    app_client: AppClientFactory, photo: bytes, origin: OriginProxy
) -> None:
    """50 requests for one uncached variant of an uncached source: 1 GET, 1 transform, 50 equal bodies."""
    client = await app_client()
    held = origin.hold(lambda r: r.path.endswith("/photo.jpg"))
    answers = [asyncio.create_task(fetch(client, "/images/photo.jpg?w=250&fm=webp")) for _ in range(50)]
    await held.arrived.wait()
    held.release.set()
    results = await asyncio.gather(*answers)
    assert {(status, sha256(body)) for status, _, body in results} == {(200, sha256(results[0][2]))}
    assert origin.count("photo.jpg") == 1
    assert transforms_done(client) == 1


async def test_unknown_parameters_are_ignored_and_not_part_of_the_key(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """`?v=1` cache busters change nothing: the same variant, made once; alone, the original."""
    client = await app_client()
    first = await fetch(client, "/images/photo.jpg?w=64&v=1")
    second = await fetch(client, "/images/photo.jpg?v=2&w=64")
    assert first[2] == second[2] and second[1]["X-Cache"] == "HIT"
    assert transforms_done(client) == 1
    status, _, body = await fetch(client, "/images/photo.jpg?v=3")
    assert (status, body) == (200, photo)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("w=0", "w"), ("w=abc", "w"), ("h=9000", "h"), ("fit=squash", "fit"), ("q=101", "q"), ("bg=xyz", "bg"),
     ("dpr=5", "dpr"), ("fm=bmp", "fm"), ("pos=middle", "pos"), ("w=10&w=20", "w"), ("w=5000&dpr=2", "w")],
)  # fmt: skip
async def test_bad_values_answer_400_naming_the_parameter(
    app_client: AppClientFactory, photo: bytes, query: str, parameter: str
) -> None:
    """A recognised parameter with a bad value (or an output over the maximum) is a 400 that names it."""
    client = await app_client()
    status, _, body = await fetch(client, f"/images/photo.jpg?{query}")
    assert status == 400
    assert parameter in body.decode()


async def test_transforms_off_ignore_every_parameter(app_client: AppClientFactory, photo: bytes) -> None:
    """transform.enabled = false (the default): the original bytes, whatever the query says."""
    client = await app_client(transform__enabled=False)
    status, headers, body = await fetch(client, "/images/photo.jpg?w=10&fm=webp&s=nonsense")
    assert (status, body, headers["Content-Type"]) == (200, photo, "image/jpeg")


@pytest.mark.parametrize(
    ("name", "data"), [("notes.txt", b"just some words\n" * 50), ("cut.jpg", jpeg(400, 300)[:2000])]
)
async def test_a_text_blob_and_a_truncated_jpeg_answer_422(
    app_client: AppClientFactory, container: ContainerClient, name: str, data: bytes
) -> None:
    """What is not a decodable image is a 422, never a 500; the original still serves."""
    await upload(container, name, data, content_type="image/jpeg")
    client = await app_client()
    status, _, _ = await fetch(client, f"/images/{name}?w=50")
    assert status == 422
    status, _, body = await fetch(client, f"/images/{name}")
    assert (status, body) == (200, data)


async def test_libvips_words_go_to_the_log_once_with_the_path_never_to_the_client(
    app_client: AppClientFactory, container: ContainerClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated JPEG's 422 says so in our words; libvips' message is logged at WARNING once,
    with the path, not again for the later refusals of that source version."""
    await upload(container, "cut.jpg", jpeg(400, 300)[:2000], content_type="image/jpeg")
    client = await app_client()
    with caplog.at_level(logging.WARNING, logger="imgproxy"):
        answers = [await fetch(client, f"/images/cut.jpg?w={width}") for width in (50, 60, 70)]
    assert [(status, body) for status, _, body in answers] == [
        (422, f"not an image: {CANNOT_DECODE}\n".encode())
    ] * 3
    logged = [r for r in caplog.records if r.name == "imgproxy.transform.variants"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    message = logged[0].getMessage()
    assert message.startswith(f"cannot transform 'cut.jpg': {CANNOT_DECODE} (")
    libvips_words = message.removeprefix(f"cannot transform 'cut.jpg': {CANNOT_DECODE} (")[:-1]
    assert libvips_words and libvips_words != "no detail"
    assert all(libvips_words.encode() not in body for _, _, body in answers)
    assert not [r for r in caplog.records if r.name == "imgproxy.app" and "NotAnImage" in r.getMessage()]


async def test_a_source_that_is_not_an_image_is_not_decoded_twice(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """Once libvips refused a source version, other variants of it are refused without a decode
    (the pool's count of refusals moves once); a new upload is tried again."""
    await upload(container, "junk.jpg", b"not a jpeg at all" * 10, content_type="image/jpeg")
    client = await app_client()
    for width in (10, 20, 30):
        assert (await fetch(client, f"/images/junk.jpg?w={width}"))[0] == 422
    assert client.app[TRANSFORMS].pool.stats().rejected["not_an_image"] == 1
    await upload(container, "junk.jpg", jpeg(100, 80), content_type="image/jpeg")
    async with client.delete("/admin/cache/junk.jpg", headers=AUTH):
        pass
    assert (await fetch(client, "/images/junk.jpg?w=40"))[0] == 200


async def test_exif_orientation_6_comes_out_upright_and_gps_is_gone(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A photo stored sideways with EXIF orientation 6 and GPS tags comes out upright, without EXIF."""
    await upload(container, "turned.jpg", jpeg_rotated_with_gps(400, 300), content_type="image/jpeg")
    client = await app_client()
    status, _, body = await fetch(client, "/images/turned.jpg?w=200")
    image = decode(body)
    assert (status, image.size) == (200, (200, 150))
    assert near(pixel(image, 0.25, 0.25), (220, 30, 30))  # red stays top-left
    assert near(pixel(image, 0.75, 0.25), (30, 200, 40))
    assert 0xE1 not in jpeg_segments(body)  # no EXIF (nor XMP) segment at all
    assert b"GPS" not in body


async def test_an_animated_gif_keeps_its_frames_in_webp(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """An animated GIF resized to WebP stays animated; to JPEG it is its first frame."""
    await upload(container, "anim.gif", animated_gif(120, 80, 4), content_type="image/gif")
    client = await app_client()
    _, _, webp = await fetch(client, "/images/anim.gif?w=60&fm=webp")
    assert (sniff(webp), frame_count(webp)) == ("webp", 4)
    _, _, first = await fetch(client, "/images/anim.gif?w=60&fm=jpeg")
    assert sniff(first) == "jpeg" and near(pixel(decode(first), 0.5, 0.5), (220, 30, 30))


async def test_png_with_alpha_keeps_it_or_is_flattened_onto_bg(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """The source family of a PNG with alpha is PNG (alpha kept); as JPEG it is flattened onto bg."""
    await upload(container, "alpha.png", png_with_alpha(200, 100), content_type="image/png")
    client = await app_client()
    _, _, png = await fetch(client, "/images/alpha.png?w=100&fm=auto", Accept=CURL)
    assert sniff(png) == "png" and pixel(decode(png), 0.75, 0.5)[3] == 0
    _, _, flat = await fetch(client, "/images/alpha.png?w=100&fm=jpeg&bg=000000")
    assert near(pixel(decode(flat), 0.75, 0.5), (0, 0, 0))


# --- revalidation and purges ------------------------------------------------------------------


async def test_an_overwritten_source_makes_its_variants_anew_after_revalidation(
    app_client: AppClientFactory, container: ContainerClient, photo: bytes
) -> None:
    """Once expired, a variant asks whether its source changed: unchanged costs no transform,
    changed gives a new variant (new pixels, new ETag)."""
    client = await app_client(cache__ttl_s=0, cache__stale_while_revalidate_s=0)
    _, first, before = await fetch(client, "/images/photo.jpg?w=100")
    again = await fetch(client, "/images/photo.jpg?w=100")
    assert (again[1]["X-Cache"], again[2], transforms_done(client)) == ("HIT", before, 1)
    await upload(container, "photo.jpg", jpeg(400, 400), content_type="image/jpeg")
    status, second, after = await fetch(client, "/images/photo.jpg?w=100")
    assert (status, second["X-Cache"]) == (200, "MISS")
    assert decode(after).size == (100, 100) and decode(before).size == (100, 75)
    assert second["ETag"] != first["ETag"]
    assert transforms_done(client) == 2


async def test_a_purge_removes_the_original_and_every_variant(
    app_client: AppClientFactory, photo: bytes, origin: OriginProxy, disk_dir: Path
) -> None:
    """`DELETE /admin/cache/<path>` drops the variants in memory and on disk: each is made again."""
    client = await app_client(disk=True)
    for query in ("w=50", "w=60&fm=webp", "h=40&fm=png"):
        assert (await fetch(client, f"/images/photo.jpg?{query}"))[1]["X-Cache"] == "MISS"
    stats = await cache_stats(client)
    assert stats["cache_variants"] == 3
    await wait_until(lambda: client.app[FETCHER].stats()["disk_variants"] == 3)  # written in the background
    assert len(variant_files(disk_dir)) == 3
    async with client.delete("/admin/cache/photo.jpg", headers=AUTH) as response:
        assert (response.status, (await response.json())["purged"]) == (200, True)
    assert variant_files(disk_dir) == []
    stats = await cache_stats(client)
    assert (stats["cache_variants"], stats["disk_variants"]) == (0, 0)
    assert (await fetch(client, "/images/photo.jpg?w=50"))[1]["X-Cache"] == "MISS"
    assert transforms_done(client) == 4


async def test_variants_on_disk_survive_a_restart(
    app_client: AppClientFactory, photo: bytes, origin: OriginProxy
) -> None:
    """A variant written to the disk tier is served after a restart without Azure or a transform."""
    first = await app_client(disk=True)
    _, _, body = await fetch(first, "/images/photo.jpg?w=70&fm=webp")
    await wait_until(lambda: first.app[FETCHER].stats()["disk_variants"] == 1)  # data and .meta written
    await first.close()
    asked = len(origin.requests)
    second = await app_client(disk=True)
    status, headers, again = await fetch(second, "/images/photo.jpg?w=70&fm=webp")
    assert (status, headers["X-Cache"], again) == (200, "HIT", body)
    assert len(origin.requests) == asked and transforms_done(second) == 0


# --- signatures and presets -------------------------------------------------------------------


def signed(path: str, params: str) -> str:
    return sign_url("", path, params, KEY)


async def test_signed_urls_verify_whatever_the_parameter_order(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """With a signing key, a signed URL is served; the same parameters reordered still verify."""
    client = await app_client(transform__signing_key=KEY, transform__allow_unsigned=False)
    url = signed("photo.jpg", "w=120&fm=webp&q=70")
    assert (await fetch(client, url))[0] == 200
    path, _, query = url.partition("?")
    reordered = "&".join(reversed(query.split("&")))
    assert (await fetch(client, f"{path}?{reordered}"))[0] == 200


@pytest.mark.parametrize("tamper", ["missing", "changed", "other-path", "extra-parameter"])
async def test_a_missing_or_tampered_signature_is_403(
    app_client: AppClientFactory, photo: bytes, tamper: str
) -> None:
    """No signature, a changed parameter, another path or an added parameter: 403."""
    client = await app_client(transform__signing_key=KEY, transform__allow_unsigned=False)
    url = signed("photo.jpg", "w=120&fm=webp")
    url = {
        "missing": "/images/photo.jpg?w=120&fm=webp",
        "changed": url.replace("w=120", "w=121"),
        "other-path": url.replace("photo.jpg", "other.jpg"),
        "extra-parameter": url + "&h=10",
    }[tamper]
    assert (await fetch(client, url))[0] == 403


async def test_presets_need_no_signature_and_explicit_parameters_still_do(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """`?preset=thumb` is served unsigned; adding a parameter to it needs the signature."""
    client = await app_client(
        transform__signing_key=KEY,
        transform__allow_unsigned=False,
        transform__presets={"thumb": "w=64&h=64&fit=cover"},
    )
    status, _, body = await fetch(client, "/images/photo.jpg?preset=thumb")
    assert (status, decode(body).size) == (200, (64, 64))
    assert (await fetch(client, "/images/photo.jpg?preset=thumb&fm=webp"))[0] == 403
    assert (await fetch(client, signed("photo.jpg", "preset=thumb&fm=webp")))[0] == 200


async def test_without_a_key_only_presets_are_served_unless_allow_unsigned(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """No signing key and allow_unsigned false: arbitrary parameters are refused, presets served."""
    client = await app_client(transform__allow_unsigned=False, transform__presets={"small": "w=32"})
    assert (await fetch(client, "/images/photo.jpg?w=32"))[0] == 403
    assert (await fetch(client, "/images/photo.jpg?preset=small"))[0] == 200


# --- auto_format: the compression half --------------------------------------------------------


async def test_auto_format_gives_webp_to_chrome_and_the_original_to_curl(
    app_client: AppClientFactory, photo: bytes, container: ContainerClient
) -> None:
    """transform.auto_format: a plain request from Chrome gets WebP, from curl the original bytes,
    both with `Vary: Accept`; a blob that is not an image is served as it is, without Vary."""
    await upload(container, "doc.pdf", b"%PDF-1.4 not an image", content_type="application/pdf")
    client = await app_client(transform__auto_format=True)
    _, chrome, webp = await fetch(client, "/images/photo.jpg", Accept=CHROME)
    assert (sniff(webp), chrome["Content-Type"], chrome["Vary"]) == ("webp", "image/webp", "Accept")
    _, curl, body = await fetch(client, "/images/photo.jpg", Accept=CURL)
    assert (body, curl["Vary"]) == (photo, "Accept")
    status, pdf, body = await fetch(client, "/images/doc.pdf", Accept=CHROME)
    assert (status, body, "Vary" in pdf) == (200, b"%PDF-1.4 not an image", False)


async def test_auto_format_falls_back_to_the_original_when_the_variant_cannot_be_made(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A damaged JPEG under auto_format: the plain request still gets the original bytes (200)."""
    damaged = jpeg(300, 200)[:1500]
    await upload(container, "damaged.jpg", damaged, content_type="image/jpeg")
    client = await app_client(transform__auto_format=True)
    status, _, body = await fetch(client, "/images/damaged.jpg", Accept=CHROME)
    assert (status, body) == (200, damaged)


# --- bounds -----------------------------------------------------------------------------------


async def test_transforms_beyond_the_queue_are_refused_with_429(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """One slot and no queue: of several concurrent variants some run, the rest get 429 + Retry-After."""
    await upload(container, "big.jpg", jpeg(4000, 3000), content_type="image/jpeg")
    client = await app_client(transform__max_concurrency=1, transform__max_queue=0)
    results = await asyncio.gather(*(fetch(client, f"/images/big.jpg?w={100 + i}") for i in range(8)))
    statuses = [status for status, _, _ in results]
    assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}
    assert all("Retry-After" in headers for status, headers, _ in results if status == 429)
    rejected = client.app[TRANSFORMS].pool.stats().rejected
    assert rejected["busy"] == statuses.count(429)


async def test_transforms_waiting_for_a_slot_do_not_read_a_large_source_yet(
    app_client: AppClientFactory, container: ContainerClient, origin: OriginProxy
) -> None:
    """A source larger than cache.max_item_bytes is read (into memory) only once its transform has
    a slot: with one slot, five cold variants read it one at a time, the others wait unread."""
    await upload(container, "wide.jpg", jpeg(1200, 900), content_type="image/jpeg")
    client = await app_client(cache__max_item_bytes=20_000, transform__max_concurrency=1)
    assert (await fetch(client, "/images/wide.jpg"))[0] == 200  # its metadata is known now
    held = origin.hold(lambda r: r.method == "GET" and r.path.endswith("/wide.jpg"))
    answers = [asyncio.create_task(fetch(client, f"/images/wide.jpg?w={50 + i}")) for i in range(5)]
    await held.arrived.wait()
    pool = client.app[TRANSFORMS].pool
    await wait_until(lambda: pool.stats().queued == 4)
    assert held.count == 1  # only the transform in the slot is reading its source
    held.release.set()
    assert [status for status, _, _ in await asyncio.gather(*answers)] == [200] * 5


async def test_a_transform_over_its_time_answers_503(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """transform.timeout_s passed: 503, and the slot is freed once the thread ends."""
    await upload(container, "big.jpg", jpeg(4000, 3000), content_type="image/jpeg")
    client = await app_client(transform__timeout_s=0.001)
    status, _, _ = await fetch(client, "/images/big.jpg?w=3000&fm=png")
    assert status == 503
    await client.app[TRANSFORMS].pool.wait_idle()


async def test_a_decompression_bomb_is_refused_with_422_from_its_header(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A 30000x30000 PNG of about 100 KiB: 422 from its header (the engine's test shows the
    pixels are never allocated), within the client's timeout."""
    await upload(container, "bomb.png", png_bomb(), content_type="image/png")
    client = await app_client()
    status, _, body = await fetch(client, "/images/bomb.png?w=100")
    assert status == 422 and b"pixels" in body


async def test_a_source_over_max_src_bytes_is_refused_with_422(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """transform.max_src_bytes is checked from the metadata, before the source is read."""
    client = await app_client(transform__max_src_bytes=1000)
    assert (await fetch(client, "/images/photo.jpg?w=10"))[0] == 422


def test_transform_options_are_frozen() -> None:
    """The options a variant is keyed by cannot change after parsing."""
    from imgproxy.transform.params import TransformOptions

    with pytest.raises(dataclasses.FrozenInstanceError):
        TransformOptions().width = 3  # type: ignore[misc]
