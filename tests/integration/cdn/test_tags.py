"""CDN tags (`cdn.tag_headers`) on the answers of `/images/`: the blob's tag and the container's,
on originals and variants, misses and hits (the hot path's pre-serialized ones too), HEAD, 206 and
304; and none by default."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import aiohttp
from azure.storage.blob.aio import ContainerClient

from tests.helpers import AppClientFactory, base_url, fetch, payload, upload
from tests.support.images import jpeg

TAG_HEADERS: Final = ("Surrogate-Key", "Cache-Tag")
TAG: Final = re.compile(r"imgproxy-[0-9a-f]{32}")


def expected_tags(container: str, path: str) -> tuple[str, str]:
    """The blob's and the container's tag, computed here as docs/operations.md states them."""
    blob = "imgproxy-" + hashlib.sha256(f"{container}\0{path}".encode()).hexdigest()[:32]
    return blob, "imgproxy-" + hashlib.sha256(container.encode()).hexdigest()[:32]


def tags_of(headers: Any) -> tuple[str | None, str | None]:
    return headers.get("Surrogate-Key"), headers.get("Cache-Tag")


async def test_answers_carry_no_tags_by_default(
    app_client: AppClientFactory, container: ContainerClient
) -> None:
    """Without `cdn.tag_headers` neither header is sent, on an original (miss, hot hit) or a variant."""
    await upload(container, "plain.jpg", jpeg(64, 48), "image/jpeg")
    client = await app_client(transforms=True)
    answers = [
        await fetch(client, "/images/plain.jpg"),
        await fetch(client, "/images/plain.jpg"),
        await fetch(client, "/images/plain.jpg?w=32"),
        await fetch(client, "/images/plain.jpg?w=32"),
    ]
    assert [status for status, _, _ in answers] == [200] * 4
    assert [headers["X-Cache"] for _, headers, _ in answers] == ["MISS", "HIT", "MISS", "HIT"]
    assert [tags_of(headers) for _, headers, _ in answers] == [(None, None)] * 4


async def test_an_original_carries_its_tags_on_every_answer(
    app_client: AppClientFactory, container: ContainerClient, prebuilt_calls: list[bool]
) -> None:
    """Miss, pre-serialized hot hit, HEAD, 206 and 304 of one blob all carry its blob and container
    tags: `Surrogate-Key` space-separated, `Cache-Tag` comma-separated."""
    data = payload(3000, seed=5)
    await upload(container, "dir/a b.png", data)
    routed: list[str] = []
    client = await app_client(cdn__tag_headers=TAG_HEADERS, routed=routed)
    blob, whole = expected_tags(container.container_name, "dir/a b.png")
    url = f"{base_url(client)}/images/dir/a%20b.png"
    async with aiohttp.ClientSession() as session:
        miss = await fetch(session, url)
        hit = await fetch(session, url)
        head = await fetch(session, url, "HEAD")
        partial = await fetch(session, url, Range="bytes=0-9")
        not_modified = await fetch(session, url, **{"If-None-Match": miss[1]["ETag"]})
    answers = {"miss": miss, "hit": hit, "head": head, "partial": partial, "not_modified": not_modified}
    assert {name: a[0] for name, a in answers.items()} == {
        "miss": 200,
        "hit": 200,
        "head": 200,
        "partial": 206,
        "not_modified": 304,
    }
    assert (miss[1]["X-Cache"], hit[1]["X-Cache"]) == ("MISS", "HIT")
    assert prebuilt_calls == [True]  # the hit was written by the hot path, pre-serialized
    assert "GET /images/dir/a%20b.png" in routed and routed.count("GET /images/dir/a%20b.png") == 3
    for name, (_, headers, _) in answers.items():
        assert tags_of(headers) == (f"{blob} {whole}", f"{blob},{whole}"), name
    assert TAG.fullmatch(blob) and TAG.fullmatch(whole) and blob != whole


async def test_variants_carry_their_source_blobs_tag(
    app_client: AppClientFactory, container: ContainerClient, prebuilt_calls: list[bool]
) -> None:
    """A variant (miss, then hot hit) is tagged as its source blob (as the source's own hit is), so
    that a purge of the blob reaches it; another blob has another tag, the same container tag."""
    await upload(container, "v.jpg", jpeg(64, 48), "image/jpeg")
    await upload(container, "w.jpg", jpeg(64, 48), "image/jpeg")
    client = await app_client(transforms=True, cdn__tag_headers=("Cache-Tag",))
    blob, whole = expected_tags(container.container_name, "v.jpg")
    other, _ = expected_tags(container.container_name, "w.jpg")
    answers = [
        await fetch(client, "/images/v.jpg?w=32&fm=webp"),
        await fetch(client, "/images/v.jpg?w=32&fm=webp"),
        await fetch(client, "/images/v.jpg"),
    ]
    assert [(status, headers["X-Cache"]) for status, headers, _ in answers] == [
        (200, "MISS"),
        (200, "HIT"),
        (200, "HIT"),  # the source, read for the variant, stays in memory
    ]
    assert answers[0][1]["Content-Type"] == "image/webp"
    assert prebuilt_calls == [True, True]
    assert [headers.get("Cache-Tag") for _, headers, _ in answers] == [f"{blob},{whole}"] * 3
    assert all("Surrogate-Key" not in headers for _, headers, _ in answers)
    status, headers, _ = await fetch(client, "/images/w.jpg?w=16")
    assert (status, headers["Cache-Tag"]) == (200, f"{other},{whole}")
    assert other != blob
