"""What the benchmark serves: fixed-size objects, 1,000 small PNGs, a Zipf request mix, burst blobs."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

KIB: Final = 1024
MIB: Final = 1024 * KIB
CONTAINER: Final = "bench"
CONTENT_TYPE: Final = "image/png"
OBJECTS: Final = {
    "obj-20k.bin": 20 * KIB,
    "obj-200k.bin": 200 * KIB,
    "obj-2m.bin": 2 * MIB,
    "obj-20m.bin": 20 * MIB,
}
IMAGE_COUNT: Final = 1000
BIG_BLOB: Final = "big-200m.bin"
BIG_SIZE: Final = 200 * MIB
BURST_SIZE: Final = 2 * MIB
ZIPF_EXPONENT: Final = 1.1
ZIPF_DRAWS: Final = 10_000


def noise_png(target_bytes: int, rng: random.Random) -> bytes:
    """A valid 64-pixel-wide RGB PNG of random pixels, about `target_bytes` long (stored deflate)."""
    width = 64
    row = 1 + 3 * width
    height = max(1, (target_bytes - 100) // row)
    raw = b"".join(b"\x00" + rng.randbytes(3 * width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )


def image_name(index: int) -> str:
    return f"img/{index:04d}.png"


def burst_name(target: str, repetition: int) -> str:
    return f"burst/{target}-{repetition}.bin"


@dataclass(slots=True)
class Dataset:
    """Blob name -> size for everything seeded, plus the Zipf path list."""

    sizes: dict[str, int] = field(default_factory=dict)
    zipf_paths: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def mean_size(self, names: list[str]) -> float:
        return sum(self.sizes[name] for name in names) / len(names)


def zipf_mix(images: list[str], draws: int, exponent: float, seed: int = 11) -> list[str]:
    """`draws` names where the image of popularity rank r has weight 1/r^exponent.

    Ranks are assigned by a seeded shuffle, so popularity does not follow name or size.
    """
    rng = random.Random(seed)
    ranked = images[:]
    rng.shuffle(ranked)
    weights = [1.0 / (rank**exponent) for rank in range(1, len(ranked) + 1)]
    return rng.choices(ranked, weights=weights, k=draws)


async def seed(connection_string: str, targets: list[str], repetitions: int, big: bool = True) -> Dataset:
    """Create the container (public blob read access) and upload everything; deterministic bytes
    (`big`: also the 200 MiB blob of the memory figure)."""
    rng = random.Random(20240601)
    blobs: dict[str, bytes] = {name: rng.randbytes(size) for name, size in OBJECTS.items()}
    images = [image_name(i) for i in range(IMAGE_COUNT)]
    for name in images:
        blobs[name] = noise_png(rng.randint(2 * KIB, 30 * KIB), rng)
    for target in targets:
        for repetition in range(repetitions):
            blobs[burst_name(target, repetition)] = rng.randbytes(BURST_SIZE)
    dataset = Dataset({name: len(data) for name, data in blobs.items()}, images=images)
    dataset.zipf_paths = zipf_mix(images, ZIPF_DRAWS, ZIPF_EXPONENT)
    settings = ContentSettings(content_type=CONTENT_TYPE)
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        container = service.get_container_client(CONTAINER)
        await container.create_container(public_access="blob")
        limit = asyncio.Semaphore(16)

        async def upload(name: str, data: bytes) -> None:
            async with limit:
                await container.upload_blob(
                    name, io.BytesIO(data), length=len(data), overwrite=True, content_settings=settings
                )

        await asyncio.gather(*(upload(name, data) for name, data in blobs.items()))
        del blobs
        if not big:
            return dataset
        big_data = random.Random(200).randbytes(BIG_SIZE)
        await container.upload_blob(
            BIG_BLOB,
            io.BytesIO(big_data),
            length=BIG_SIZE,
            overwrite=True,
            content_settings=settings,
            max_concurrency=4,
        )
        dataset.sizes[BIG_BLOB] = BIG_SIZE
    return dataset
