"""Seed a container with demo images: two JPEGs shipped here and PNGs drawn on the fly.

The PNGs are written with `zlib` and `struct` (no imaging library needed). One of them is larger
than the default `cache.max_item_bytes` (5 MiB) so `make run` also shows the streamed path.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

IMAGES_DIR: Final = Path(__file__).resolve().parent / "demo_images"
PixelFn = Callable[[int, int], tuple[int, int, int]]


def png(width: int, height: int, pixel: PixelFn) -> bytes:
    """Encode an RGB image as a PNG file."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows.extend(pixel(x, y))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )


def _gradient(x: int, y: int) -> tuple[int, int, int]:
    return (x % 256, y % 256, 160)


def _rings(x: int, y: int) -> tuple[int, int, int]:
    r = math.hypot(x - 128, y - 128)
    v = int(127 + 127 * math.sin(r / 6))
    return (v, 64, 255 - v)


def demo_images() -> dict[str, tuple[bytes, str]]:
    """Blob name -> (bytes, content type)."""
    noise = random.Random(42)
    images: dict[str, tuple[bytes, str]] = {
        "demo/gradient.png": (png(256, 256, _gradient), "image/png"),
        "demo/rings.png": (png(256, 256, _rings), "image/png"),
        # Random pixels do not compress: about 6.3 MiB, above the 5 MiB memory-cache item limit.
        "demo/large-noise.png": (
            png(1450, 1450, lambda x, y: (noise.randrange(256), noise.randrange(256), noise.randrange(256))),
            "image/png",
        ),
    }
    for path in sorted(IMAGES_DIR.glob("*.jpg")):
        images[f"demo/{path.name}"] = (path.read_bytes(), "image/jpeg")
    return images


async def seed(connection_string: str, container: str) -> list[str]:
    """Create `container` if needed and upload every demo image; return their names."""
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        client = service.get_container_client(container)
        with contextlib.suppress(ResourceExistsError):
            await client.create_container()
        names = []
        for name, (data, content_type) in demo_images().items():
            await client.upload_blob(
                name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )
            names.append(name)
        return names
