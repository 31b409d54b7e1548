"""Client Hints over HTTP (`transform.client_hints`): a transform without `w` or `h` takes the
rung of `transform.width_ladder` its `Sec-CH-Width` / `Width` hint rounds up to, says so in `Vary`
and `Accept-CH`, and is cached per rung (on the hot path too); plain requests are never resized.
And `imgproxy.client.srcset`, whose signed URLs the server accepts.

Real server, real Azurite, real libvips, on images the tests make (`tests/support/images.py`).
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import pytest
from azure.storage.blob.aio import ContainerClient

from imgproxy import client as imgproxy_client
from tests.helpers import AppClient, AppClientFactory, base_url, fetch, sha256, upload
from tests.support.images import decode, jpeg, sniff

CHROME: Final = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
HINTS: Final = "Sec-CH-Width, Width"
KEY: Final = "test-signing-key"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Every app here has transforms on (unsigned parameters allowed) and client hints on."""
    return {"transforms": True, "transform__client_hints": True}


@pytest.fixture
async def photo(container: ContainerClient) -> bytes:
    """A 1000x500 JPEG: wider than the rungs the tests choose, so each rung is its own width."""
    data = jpeg(1000, 500)
    await upload(container, "photo.jpg", data, content_type="image/jpeg")
    return data


async def width_of(client: AppClient, url: str, **headers: str) -> tuple[int, int, Any]:
    """GET `url`: status, the decoded image's width and the answer's headers."""
    status, answer, body = await fetch(client, url, **headers)
    assert status == 200, body[:200]
    return status, decode(body).size[0], answer


@pytest.mark.parametrize("hint", ["Sec-CH-Width", "Width"])
async def test_a_width_hint_chooses_the_next_rung_up(
    app_client: AppClientFactory, photo: bytes, hint: str
) -> None:
    """`?fm=webp` (a transform, no size) with a width hint of 333 is a 480 px WebP (the rung above),
    with `Vary` naming both width hints and `Accept-CH` asking for `Sec-CH-Width`."""
    client = await app_client()
    status, answer, body = await fetch(client, "/images/photo.jpg?fm=webp", **{hint: "333"})
    assert (status, sniff(body), answer["Content-Type"]) == (200, "webp", "image/webp")
    assert decode(body).size == (480, 240)
    assert (answer["Vary"], answer["Accept-CH"]) == (HINTS, "Sec-CH-Width")


async def test_a_dpr_hint_changes_nothing(app_client: AppClientFactory, photo: bytes) -> None:
    """A width hint already counts the device pixels: beside `Sec-CH-DPR: 2` 333 is still 480;
    `Sec-CH-DPR` (or `DPR`) alone chooses no width (the source's own, 1000) and does not make an
    explicit `w` larger; `Vary` never names the DPR hints."""
    client = await app_client()
    _, both, both_headers = await width_of(
        client, "/images/photo.jpg?fm=webp", **{"Sec-CH-Width": "333", "Sec-CH-DPR": "2"}
    )
    _, alone, alone_headers = await width_of(client, "/images/photo.jpg?fm=webp", **{"Sec-CH-DPR": "2"})
    _, legacy, _ = await width_of(client, "/images/photo.jpg?fm=webp", DPR="3")
    _, explicit, explicit_headers = await width_of(
        client, "/images/photo.jpg?w=300&fm=webp", **{"Sec-CH-DPR": "2", "Sec-CH-Width": "900"}
    )
    assert (both, alone, legacy, explicit) == (480, 1000, 1000, 300)
    assert both_headers["Vary"] == alone_headers["Vary"] == HINTS
    # An explicit w chose its size: no hint can change the answer, so nothing to vary on.
    assert "Vary" not in explicit_headers and "Accept-CH" not in explicit_headers


async def test_a_hint_above_the_top_rung_gets_the_top_rung(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """A hint of 4000 on a 3000 px source gives 2560 (the top rung), never 4000 nor 3000; a hint
    between the top two rungs gives the top one too."""
    await upload(container, "wide.jpg", jpeg(3000, 300), content_type="image/jpeg")
    client = await app_client()
    _, above, _ = await width_of(client, "/images/wide.jpg?fm=jpeg", **{"Sec-CH-Width": "4000"})
    _, between, _ = await width_of(client, "/images/wide.jpg?fm=jpeg", **{"Sec-CH-Width": "2000"})
    assert (above, between) == (2560, 2560)


async def test_a_custom_ladder_is_used(app_client: AppClientFactory, photo: bytes) -> None:
    """`transform.width_ladder = (250, 500)`: 100 -> 250, 251 -> 500, 900 -> 500."""
    client = await app_client(transform__width_ladder=(250, 500))
    widths = [
        (await width_of(client, "/images/photo.jpg?fm=png", **{"Sec-CH-Width": hint}))[1]
        for hint in ("100", "251", "900")
    ]
    assert widths == [250, 500, 500]


@pytest.mark.parametrize("value", ["abc", "0", "-20", "1.5", "1000000", "333, 480"])
async def test_a_bad_hint_is_ignored_not_refused(
    app_client: AppClientFactory, photo: bytes, value: str
) -> None:
    """A hint that is not a positive integer of six digits at most is a header the browser sent:
    ignored (the source's width, 200), never a 400; `Vary` still names the hints."""
    client = await app_client()
    _, width, answer = await width_of(client, "/images/photo.jpg?fm=webp", **{"Sec-CH-Width": value})
    assert width == 1000 and answer["Vary"] == HINTS


async def test_without_the_setting_hints_are_ignored(app_client: AppClientFactory, photo: bytes) -> None:
    """`transform.client_hints = false` (the default): `?fm=webp` with a hint is the source's width,
    without `Vary` or `Accept-CH`."""
    client = await app_client(transform__client_hints=False)
    _, width, answer = await width_of(client, "/images/photo.jpg?fm=webp", **{"Sec-CH-Width": "333"})
    assert width == 1000
    assert "Vary" not in answer and "Accept-CH" not in answer


@pytest.mark.parametrize("query", ["", "?v=123"])
async def test_a_plain_request_with_a_hint_is_the_original_untouched(
    app_client: AppClientFactory, photo: bytes, query: str
) -> None:
    """No transform parameter (none, or only a cache buster): the blob's own bytes, MISS then HIT,
    never resized by a hint, without `Vary` or `Accept-CH`."""
    client = await app_client()
    answers = [
        await fetch(client, f"/images/photo.jpg{query}", **{"Sec-CH-Width": width, "Width": width})
        for width in ("333", "700")
    ]
    assert [(status, sha256(body)) for status, _, body in answers] == [(200, sha256(photo))] * 2
    assert [answer["X-Cache"] for _, answer, _ in answers] == ["MISS", "HIT"]
    assert all("Vary" not in answer and "Accept-CH" not in answer for _, answer, _ in answers)


async def test_a_plain_request_under_auto_format_is_not_resized(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """`transform.auto_format` makes a plain request a WebP for Chrome, at the source's width: a
    hint resizes only what the request itself asked to transform; `Vary` is `Accept` alone."""
    client = await app_client(transform__auto_format=True)
    status, answer, body = await fetch(client, "/images/photo.jpg", Accept=CHROME, **{"Sec-CH-Width": "333"})
    assert (status, sniff(body), decode(body).size[0]) == (200, "webp", 1000)
    assert answer["Vary"] == "Accept" and "Accept-CH" not in answer


async def test_fm_auto_varies_with_accept_and_the_hints(app_client: AppClientFactory, photo: bytes) -> None:
    """`fm=auto` with a hint: WebP for Chrome's Accept, JPEG for curl's, each at the hint's rung,
    and `Vary` lists `Accept` and the width hints together."""
    client = await app_client()
    chrome = await fetch(client, "/images/photo.jpg?fm=auto", Accept=CHROME, **{"Sec-CH-Width": "333"})
    curl = await fetch(client, "/images/photo.jpg?fm=auto", Accept="*/*", **{"Sec-CH-Width": "700"})
    assert [(sniff(body), decode(body).size[0]) for _, _, body in (chrome, curl)] == [
        ("webp", 480),
        ("jpeg", 800),
    ]
    assert [answer["Vary"] for _, answer, _ in (chrome, curl)] == [f"Accept, {HINTS}"] * 2
    assert all(answer["Accept-CH"] == "Sec-CH-Width" for _, answer, _ in (chrome, curl))


async def test_a_preset_without_a_size_takes_the_hint_and_one_with_a_size_does_not(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """`?preset=web` (`fm=webp&q=70`) takes the hint's rung; `?preset=thumb` (`w=200`) keeps its 200
    without Vary, as does `?h=100` (it chose its box)."""
    client = await app_client(transform__presets={"web": "fm=webp&q=70", "thumb": "w=200&fm=webp"})
    hint = {"Sec-CH-Width": "333"}
    _, web_width, web = await width_of(client, "/images/photo.jpg?preset=web", **hint)
    _, thumb_width, thumb = await width_of(client, "/images/photo.jpg?preset=thumb", **hint)
    _, tall, body = await fetch(client, "/images/photo.jpg?h=100", **hint)
    assert (web_width, thumb_width, decode(body).size) == (480, 200, (200, 100))
    assert web["Vary"] == HINTS and "Vary" not in thumb and "Vary" not in tall


async def test_hinted_variants_are_cached_per_rung_and_the_hot_path_keeps_them_apart(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """A request without a hint (the source's width), two hints of two rungs, then a repeat of
    each: the repeats are HITs of their own widths, answered by the hot path (they never reach
    the application) with the application's headers, never the entry of another rung or of no
    hint; a hint of the same rung (400 -> 480) is the same entry."""
    to_app: list[str] = []
    url = base_url(await app_client(routed=to_app))
    target = f"{url}/images/photo.jpg?fm=webp"
    seen: list[tuple[str, int, str]] = []
    answers = []
    async with aiohttp.ClientSession() as session:
        for hint in (None, "333", "700", "333", "700", "400", None):
            headers = {} if hint is None else {"Sec-CH-Width": hint}
            status, answer, body = await fetch(session, target, **headers)
            assert status == 200
            seen.append((answer["X-Cache"], decode(body).size[0], answer["Vary"]))
            answers.append(
                {
                    k.lower(): v
                    for k, v in answer.items()
                    if k.lower() not in ("date", "x-cache", "x-request-id")
                }
            )
    assert seen == [
        ("MISS", 1000, HINTS),
        ("MISS", 480, HINTS),
        ("MISS", 800, HINTS),
        ("HIT", 480, HINTS),
        ("HIT", 800, HINTS),
        ("HIT", 480, HINTS),
        ("HIT", 1000, HINTS),
    ]
    assert answers[3] == answers[1] and answers[4] == answers[2] and answers[5] == answers[1]
    assert answers[6] == answers[0]
    assert len({answers[i]["etag"] for i in range(3)}) == 3
    assert answers[1]["accept-ch"] == "Sec-CH-Width"
    assert len(to_app) == 3  # the three misses; every HIT came from the hot path


async def test_a_hinted_variant_is_the_explicit_w_variant(app_client: AppClientFactory, photo: bytes) -> None:
    """The rung's variant is the one `w=<rung>` names: made once, found by both (same ETag and
    bytes), and a 304 to a hinted revalidation carries the hints' `Vary`."""
    client = await app_client()
    _, hinted, hinted_body = await fetch(client, "/images/photo.jpg?fm=webp", **{"Sec-CH-Width": "333"})
    _, explicit, explicit_body = await fetch(client, "/images/photo.jpg?w=480&fm=webp")
    assert (hinted["X-Cache"], explicit["X-Cache"]) == ("MISS", "HIT")
    assert hinted["ETag"] == explicit["ETag"] and sha256(hinted_body) == sha256(explicit_body)
    status, revalidated, _ = await fetch(
        client, "/images/photo.jpg?fm=webp", **{"Sec-CH-Width": "333", "If-None-Match": hinted["ETag"]}
    )
    assert (status, revalidated["Vary"], revalidated["ETag"]) == (304, HINTS, hinted["ETag"])


async def test_srcset_urls_are_signed_and_served_at_their_widths(
    app_client: AppClientFactory, photo: bytes
) -> None:
    """`imgproxy.client.srcset` signs a URL per width (`url 320w, ...`, ascending, once each): the
    server (with a signing key) answers each with a 200 of that width and the asked format, and
    refuses one whose width was changed."""
    client = await app_client(transform__signing_key=KEY, transform__allow_unsigned=False)
    value = imgproxy_client.srcset("photo.jpg", [640, 320, 640], key=KEY, fm="webp", q=70)
    candidates = [candidate.rsplit(" ", 1) for candidate in value.split(", ")]
    assert [descriptor for _, descriptor in candidates] == ["320w", "640w"]
    for url, descriptor in candidates:
        assert url.startswith("/images/photo.jpg?") and "&s=" in url
        status, _, body = await fetch(client, url)
        assert (status, sniff(body), decode(body).size[0]) == (200, "webp", int(descriptor[:-1]))
    forged = candidates[0][0].replace("w=320", "w=321")
    assert (await fetch(client, forged))[0] == 403


def test_srcset_refuses_what_it_cannot_sign() -> None:
    """No key, no width, a width below 1, or `w`/`s` among the parameters: ValueError."""
    with pytest.raises(ValueError, match="no signing key"):
        imgproxy_client.srcset("a.jpg", [320], key="")
    for widths, params in (([], {}), ([0, 320], {}), ([320], {"w": "1"}), ([320], {"s": "x"})):
        with pytest.raises(ValueError):
            imgproxy_client.srcset("a.jpg", widths, key=KEY, **params)
    base = imgproxy_client.srcset("my cat.jpg", [160], key=KEY, base_url="https://img.example.com/")
    assert base.startswith("https://img.example.com/images/my%20cat.jpg?w=160&s=") and base.endswith(" 160w")
