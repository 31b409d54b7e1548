"""What the engine reads and returns, without pyvips: formats, source header facts, results, limits."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from imgproxy.config import TransformConfig

# A source: bytes from memory or Azure, or a file of the disk tier (libvips opens it itself).
Source = bytes | Path


class ImageFormat(enum.StrEnum):
    """Formats the engine reads (all) and writes (all but TIFF, HEIC and SVG)."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    GIF = "gif"
    AVIF = "avif"
    JSON = "json"  # not an image: `fm=json`'s description of the source (transform/info.py)
    HEIC = "heic"
    TIFF = "tiff"
    SVG = "svg"  # rasterised: a transform source only


CONTENT_TYPES: Final[dict[ImageFormat, str]] = {
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.GIF: "image/gif",
    ImageFormat.AVIF: "image/avif",
}
WRITABLE: Final = frozenset(CONTENT_TYPES)
# The formats every browser shows: a source in one of them keeps it when no format is asked for.
SOURCE_FAMILY: Final = frozenset({ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.GIF})
ANIMATED_OUTPUTS: Final = frozenset({ImageFormat.WEBP, ImageFormat.GIF})
ALPHA_OUTPUTS: Final = frozenset({ImageFormat.PNG, ImageFormat.WEBP, ImageFormat.GIF, ImageFormat.AVIF})


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the source's header says (nothing decoded): upright size of one frame, frames, alpha."""

    format: ImageFormat
    width: int
    height: int
    frames: int
    has_alpha: bool
    orientation: int  # EXIF 1-8; 5-8 swap width and height (already swapped in `width`/`height`)


@dataclass(frozen=True, slots=True)
class TransformResult:
    """An encoded variant: its bytes, type and pixel size (of one frame)."""

    body: bytes
    content_type: str
    format: ImageFormat
    width: int
    height: int
    frames: int = 1


@dataclass(frozen=True, slots=True)
class Limits:
    """The engine's bounds, from `[transform]`."""

    max_width: int = 8192
    max_height: int = 8192
    max_src_pixels: int = 50_000_000
    max_src_bytes: int = 64 * 1024 * 1024
    max_frames: int = 100

    @classmethod
    def from_config(cls, config: TransformConfig) -> Limits:
        return cls(
            max_width=config.max_width,
            max_height=config.max_height,
            max_src_pixels=config.max_src_pixels,
            max_src_bytes=config.max_src_bytes,
            max_frames=config.max_frames,
        )
