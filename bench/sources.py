"""Photo-like source images for the transform benchmarks, generated deterministically with libvips.

A "photo" is a few octaves of Perlin noise per channel (large soft colour areas, as in skies and
walls), a shared luminance detail (texture, edges), a vertical light gradient and Gaussian sensor
grain, saved as a q90 JPEG with 4:2:0 chroma: about 3.2 MB for 12 MP, like a phone's photo, so that
the decoder does the work a real photo gives it. The same seed gives the same bytes with the
pinned libvips. The end-to-end benchmark can upload exactly these.

Two inputs that libvips alone does not decode as they come: a 12 MP HEIC of the 12 MP photo's
pixels (pillow-heif's x265 encoder, q60, preset ultrafast: about 2.8 MB, a phone's size; the same
bytes with the pinned pillow-heif), and an SVG drawing of a few hundred shapes with gradients and
no text (so that no font is involved), the same text for the same seed.
"""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass
from typing import Final

import pyvips


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One benchmark source: its kind and pixel size."""

    name: str
    kind: str  # "jpeg", "png-alpha", "heic" (of the "jpeg" photo of the same size and seed), "svg"
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
        SourceSpec("photo-12mp.heic", "heic", 4000, 3000, 1),
        SourceSpec("drawing.svg", "svg", 1600, 1000, 5),
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


HEIC_QUALITY: Final = 60
SVG_SHAPES: Final = 300
SVG_GRADIENTS: Final = 12


def heic_of(jpeg: bytes, quality: int = HEIC_QUALITY) -> bytes:
    """The pixels of `jpeg` as a HEIC (8-bit 4:2:0 HEVC, no metadata), by pillow-heif's encoder.

    The preset: x265's default takes over 30 s for 12 MP on a shared core, ultrafast about 10 s;
    libde265 decodes either (the bench measures the decode, not the encoder's choices).
    """
    import pillow_heif  # a test and bench dependency: the server decodes with pi-heif

    image = pyvips.Image.new_from_buffer(jpeg, "")
    heif = pillow_heif.from_bytes("RGB", (image.width, image.height), image.write_to_memory())
    out = io.BytesIO()
    heif.save(out, quality=quality, enc_params={"preset": "ultrafast"})
    return out.getvalue()


def drawing_svg(width: int, height: int, seed: int, shapes: int = SVG_SHAPES) -> bytes:
    """An SVG of `shapes` overlapping rectangles, ellipses and polygons, filled with linear and
    radial gradients at partial opacity, over a gradient background; no text, no references."""
    rng = random.Random(seed)

    def colour() -> str:
        return "#" + "".join(f"{rng.randrange(256):02x}" for _ in range(3))

    defs = []
    for index in range(SVG_GRADIENTS):
        kind = "linearGradient" if index % 2 == 0 else "radialGradient"
        stops = "".join(
            f'<stop offset="{offset:.2f}" stop-color="{colour()}" stop-opacity="{rng.uniform(0.5, 1):.2f}"/>'
            for offset in sorted(rng.random() for _ in range(3))
        )
        defs.append(f'<{kind} id="g{index}">{stops}</{kind}>')
    body = [f'<rect width="{width}" height="{height}" fill="url(#g0)"/>']
    for index in range(shapes):
        fill = f'fill="url(#g{rng.randrange(SVG_GRADIENTS)})" opacity="{rng.uniform(0.3, 0.9):.2f}"'
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(0.02, 0.15) * width
        if index % 3 == 0:
            box = f'width="{size:.1f}" height="{size * 0.6:.1f}"'
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" {box} {fill}/>')
        elif index % 3 == 1:
            body.append(f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="{size:.1f}" ry="{size / 2:.1f}" {fill}/>')
        else:
            points = " ".join(
                f"{x + rng.uniform(-size, size):.1f},{y + rng.uniform(-size, size):.1f}" for _ in range(5)
            )
            body.append(f'<polygon points="{points}" {fill} stroke="{colour()}" stroke-width="2"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><defs>{"".join(defs)}</defs>{"".join(body)}</svg>\n'
    ).encode()


@functools.cache
def source_bytes(name: str) -> bytes:
    """The encoded bytes of `SOURCES[name]` (made once per process)."""
    spec = SOURCES[name]
    if spec.kind == "png-alpha":
        return png_with_alpha(spec.width, spec.height, spec.seed)
    if spec.kind == "heic":
        return heic_of(photo_jpeg(spec.width, spec.height, spec.seed))
    if spec.kind == "svg":
        return drawing_svg(spec.width, spec.height, spec.seed)
    return photo_jpeg(spec.width, spec.height, spec.seed)
