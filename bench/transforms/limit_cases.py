"""The in-process limit's cases (source, box, format, quality) and which libraries can do each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LIBRARIES: Final = ("pyvips", "Pillow", "engine")
# For `fm=json`: the engine's 300x200 JPEG q80 of the same source, beside the description.
JPEG_REFERENCE: Final = "engine 300x200 JPEG"
BIG: Final = 10_000_000  # "no limit" for a free side


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmark operation: a source, a box (w, h; 0 = free), an output format and quality,
    and the libraries that can do it (the others are n/a in the report)."""

    name: str
    source: str
    width: int
    height: int
    fmt: str  # jpeg, webp, png, avif; json: `fm=json`'s description
    quality: int
    libraries: tuple[str, ...] = LIBRARIES


CASES: Final = (
    Case("12 MP JPEG -> 300x200 JPEG q80", "photo-12mp.jpg", 300, 200, "jpeg", 80),
    Case("12 MP JPEG -> 300x200 WebP q80", "photo-12mp.jpg", 300, 200, "webp", 80),
    Case("2.5 MP JPEG -> 800 px JPEG q80", "photo-2.5mp.jpg", 800, 0, "jpeg", 80),
    Case("1 MP PNG (alpha) -> 300x200 PNG", "logo-alpha.png", 300, 200, "png", 0),
    Case("12 MP JPEG -> 300x200 AVIF q60", "photo-12mp.jpg", 300, 200, "avif", 60),
    # libvips alone has no HEVC decoder: pyvips n/a.
    Case("12 MP HEIC -> 300x200 JPEG q80", "photo-12mp.heic", 300, 200, "jpeg", 80, ("Pillow", "engine")),
    # Pillow cannot read SVG: n/a.
    Case("SVG -> 512 px PNG", "drawing.svg", 512, 0, "png", 0, ("pyvips", "engine")),
    # Neither library describes a source: the description against the engine's smallest usual variant.
    Case("2.5 MP JPEG -> fm=json", "photo-2.5mp.jpg", 0, 0, "json", 0, ("engine", JPEG_REFERENCE)),
)
