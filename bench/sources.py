"""Photo-like source images for the transform benchmarks, generated deterministically with libvips.

A "photo" is a few octaves of Perlin noise per channel (large soft colour areas, as in skies and
walls), a shared luminance detail (texture, edges), a vertical light gradient and Gaussian sensor
grain, saved as a q90 JPEG with 4:2:0 chroma: about 3.2 MB for 12 MP, like a phone's photo, so that
the decoder does the work a real photo gives it. The same seed gives the same bytes with the
pinned libvips. The end-to-end benchmark can upload exactly these.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import pyvips


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One benchmark source: its kind and pixel size."""

    name: str
    kind: str  # "jpeg" or "png-alpha"
    width: int
    height: int
    seed: int


SOURCES: Final = {
    spec.name: spec
    for spec in (
        SourceSpec("photo-12mp.jpg", "jpeg", 4000, 3000, 1),
        SourceSpec("photo-2.5mp.jpg", "jpeg", 1920, 1280, 2),
        SourceSpec("logo-alpha.png", "png-alpha", 1200, 800, 3),
        SourceSpec("photo-24mp.jpg", "jpeg", 6000, 4000, 4),
    )
}


def photo(width: int, height: int, seed: int) -> pyvips.Image:
    """A photo-like 8-bit sRGB image (lazy: computed when saved)."""

    def noise(cell: int, salt: int) -> pyvips.Image:
        return pyvips.Image.perlin(width, height, cell_size=max(4, cell), seed=seed * 16 + salt)

    detail = noise(width // 64, 1) * 45 + noise(width // 400, 2) * 18
    light = pyvips.Image.xyz(width, height)[1] * (60.0 / height)
    grain = pyvips.Image.gaussnoise(width, height, sigma=5, mean=0, seed=seed * 16 + 3)
    bands = [
        noise(width // 6, 4 + band) * 70 + detail + grain + (110 + 25 * band) - light for band in range(3)
    ]
    others: list[pyvips.Image | int | float] = [*bands[1:]]
    image = bands[0].bandjoin(others).cast("uchar")
    return image.copy(interpretation="srgb")


def photo_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """`photo` as a baseline JPEG without metadata."""
    return bytes(photo(width, height, seed).jpegsave_buffer(Q=quality, keep=0))


def png_with_alpha(width: int, height: int, seed: int) -> bytes:
    """A photo-like PNG whose alpha is a soft-edged disc (transparent corners), like a cut-out."""
    base = photo(width, height, seed)
    xy = pyvips.Image.xyz(width, height) - [width / 2, height / 2]
    distance = (xy[0] ** 2 + xy[1] ** 2) ** 0.5
    radius = min(width, height) * 0.45
    alpha = ((radius - distance) * 8).cast("uchar")  # saturates to 0 outside, 255 inside
    return bytes(base.bandjoin(alpha).copy(interpretation="srgb").pngsave_buffer(compression=6, keep=0))


@functools.cache
def source_bytes(name: str) -> bytes:
    """The encoded bytes of `SOURCES[name]` (made once per process)."""
    spec = SOURCES[name]
    if spec.kind == "png-alpha":
        return png_with_alpha(spec.width, spec.height, spec.seed)
    return photo_jpeg(spec.width, spec.height, spec.seed)
