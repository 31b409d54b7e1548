"""The transform workloads' data: the deterministic sources as blobs (for imgproxy) and files (for thumbor).

Blobs go under `tx/` in the bench container: the three sources of `bench.sources`, a 20 KiB
original for the hit-latency figure, and sixteen 24 MP JPEGs for the memory figure (one encode,
sixteen distinct blobs through a COM segment each), and for `fm=json` copies of its source under
`tx/json/` (distinct bytes, same pixels; uploaded in batches, never all held at once). The same
source bytes are written as files into a directory that thumbor's static server serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
from pathlib import Path
from typing import Final

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from ..dataset import CONTAINER
from ..sources import source_bytes
from .cases import RSS_REQUESTS, RSS_SOURCE, SOURCE_PREFIX, TransformCase, json_blob, rss_blob, with_comment

HIT_BLOB: Final = SOURCE_PREFIX + "hit-20k.bin"
HIT_SIZE: Final = 20 * 1024
CONTENT_TYPES: Final = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".heic": "image/heic",
    ".json": "application/json",
}
COPY_BATCH: Final = 50


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def source_blobs(cases: list[TransformCase], rss: bool) -> dict[str, bytes]:
    """Blob name -> bytes: the cases' sources (fm=json's: its copy 0), the 20 KiB original, and
    (with `rss`) the 24 MP set."""
    blobs = {case.blob: json_copy(case, 0) for case in cases if case.varies == "source"}
    blobs |= {SOURCE_PREFIX + case.limit.source: source_bytes(case.limit.source) for case in cases}
    blobs[HIT_BLOB] = random.Random(20).randbytes(HIT_SIZE)
    if rss:
        big = source_bytes(RSS_SOURCE)
        for index in range(RSS_REQUESTS):
            blobs[rss_blob(index)] = with_comment(big, f"imgproxy bench source {index}")
    return blobs


def json_copy(case: TransformCase, n: int) -> bytes:
    """Copy `n` of the case's source: the same pixels, other bytes (a JPEG comment)."""
    return with_comment(source_bytes(case.limit.source), f"imgproxy bench fm=json source {n}")


def write_files(cases: list[TransformCase], directory: Path) -> None:
    """The cases' sources (not the 20 KiB original, nor the 24 MP set) as files under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for case in cases:
        (directory / case.limit.source).write_bytes(source_bytes(case.limit.source))


async def upload_copies(connection_string: str, case: TransformCase, count: int) -> None:
    """Copies 1 to `count` of fm=json's source (copy 0 is the warm one, in `source_blobs`)."""
    for start in range(1, count + 1, COPY_BATCH):
        end = min(count + 1, start + COPY_BATCH)
        await upload(connection_string, {json_blob(n): json_copy(case, n) for n in range(start, end)})


async def upload(connection_string: str, blobs: dict[str, bytes]) -> None:
    """Upload `blobs` into the bench container (made, with public read, if it is not there yet)."""
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        container = service.get_container_client(CONTAINER)
        with contextlib.suppress(ResourceExistsError):  # the cache workloads made it
            await container.create_container(public_access="blob")
        limit = asyncio.Semaphore(8)

        async def one(name: str, data: bytes) -> None:
            async with limit:
                await container.upload_blob(
                    name,
                    io.BytesIO(data),
                    length=len(data),
                    overwrite=True,
                    content_settings=ContentSettings(content_type=content_type(name)),
                )

        await asyncio.gather(*(one(name, data) for name, data in blobs.items()))
