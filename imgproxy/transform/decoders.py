"""Sources libvips' loaders do not take as they come: HEIC (HEVC) and SVG. With `engine`,
`vips_ops` and `info`, the only modules that import pyvips; the only one that imports pi-heif.

- HEIC: the `pyvips-binary` wheel reads the HEIF container but carries no HEVC decoder, so the
  header still comes from libvips (size and bit depth, nothing decoded: `max_src_pixels` refuses a
  60,000 x 60,000 header before anything is allocated), and the pixels from pi-heif (pillow-heif's
  decoder-only build: libheif with libde265, LGPL-3.0, without the GPL x265 encoder), handed to
  libvips as one 8-bit buffer. libheif applies the container's rotation and mirror (`irot`,
  `imir`); an EXIF orientation inside a HEIC is never applied again. AVIF (heif-compression av1)
  stays with libvips, which has the AV1 decoder.
- SVG: rasterised by libvips' `svgload` (librsvg), always from memory: with no base URL librsvg
  refuses every `file:` and `http:` reference (images, `<use>`, `xi:include`), and libxml2 refuses
  entity expansion bombs. A vector has no pixel size of its own: it is drawn at the planned size
  (`enlarge` does not apply), and `max_src_pixels` bounds that drawn size, not the declared one.
  `rect` on a vector is in its own user units: the whole drawing is made at the scale that gives
  the box its planned size, then the box is cut (so the drawn size, which `max_src_pixels` bounds,
  grows as the box shrinks).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pi_heif
import pyvips

from imgproxy.core.errors import NotAnImage, SourceTooLarge
from imgproxy.transform.framing import Size
from imgproxy.transform.geometry import Plan, plan
from imgproxy.transform.params import TransformOptions
from imgproxy.transform.result import ImageFormat, Limits, Source, SourceInfo
from imgproxy.transform.values import Rect

# The decoder's own words go to the log, never to the client.
CANNOT_DECODE: Final = "cannot decode (damaged, truncated or unsupported)"
SVG_LOADER: Final = "VipsForeignLoadSvg"  # libvips' class; its Buffer, File and Source loaders below it
VECTOR: Final = frozenset({ImageFormat.SVG})
# The decoder applies the container's orientation (irot/imir); EXIF's must not turn it again.
CONTAINER_ORIENTED: Final = frozenset({ImageFormat.HEIC})
_BANDS: Final = {"L": (1, "b-w"), "LA": (2, "b-w"), "RGB": (3, "srgb"), "RGBA": (4, "srgb")}
# What pi-heif raises for a damaged, truncated or unsupported file (its documented set).
_HEIF_ERRORS: Final = (ValueError, EOFError, SyntaxError, RuntimeError, OSError)


def configure(threads_per_transform: int) -> None:
    """After `block_untrusted_set(True)`: unblock libvips' SVG loader (this module loads SVG only
    from memory) and give libheif the pool's thread budget per transform."""
    pyvips.operation_block_set(SVG_LOADER, False)
    pi_heif.options.DECODE_THREADS = max(1, threads_per_transform)


def read_header(source: Source, image_format: ImageFormat) -> pyvips.Image | None:
    """The header of a source this module loads (SVG, parsed from memory), else None: libvips'."""
    if image_format is not ImageFormat.SVG:
        return None
    return pyvips.Image.svgload_buffer(_bytes(source), fail_on="warning")


def plan_source(info: SourceInfo, box: Rect, turned: Size, options: TransformOptions, limits: Limits) -> Plan:
    """The plan for the `box` of the source (`turned`: its size after `rot`); a vector is drawn at
    the asked size, the whole drawing within `max_src_pixels`."""
    if info.format not in VECTOR:
        return plan(turned.width, turned.height, options)
    target = plan(turned.width, turned.height, dataclasses.replace(options, enlarge=True))
    unturned = Size(target.resized_width, target.resized_height).turned(options.rotate)
    scale = _vector_scale(box, unturned)
    width, height = math.ceil(info.width * scale), math.ceil(info.height * scale)
    if width * height > limits.max_src_pixels:
        raise SourceTooLarge(
            f"more pixels than transform.max_src_pixels ({limits.max_src_pixels})",
            f"{width}x{height} pixels rasterised",
        )
    return target


@dataclass(frozen=True, slots=True)
class Loaded:
    """A source this module decoded; `cut`: `rect` already applied (a vector's, in drawn pixels).
    `owner` holds the memory `image` reads: the caller keeps this object until it has encoded."""

    image: pyvips.Image
    cut: bool
    owner: object = None


def load(source: Source, info: SourceInfo, box: Rect, unturned: Size) -> Loaded | None:
    """The decoded image of a source this module loads (HEIC, SVG), else None: libvips loads it.
    `box`: the part wanted, in upright source pixels (a vector's: user units); `unturned`: the size
    it is resized to."""
    if info.format is ImageFormat.SVG:
        # Drawn at the resized size, not drawn small and scaled up: crisp edges at any size.
        scale = _vector_scale(box, unturned)
        image = pyvips.Image.svgload_buffer(_bytes(source), scale=scale, fail_on="warning")
        if (box.width, box.height) != (info.width, info.height):
            left = min(round(box.x * scale), image.width - 1)
            top = min(round(box.y * scale), image.height - 1)
            width = max(1, min(round(box.width * scale), image.width - left))
            height = max(1, min(round(box.height * scale), image.height - top))
            image = image.crop(left, top, width, height)
        return Loaded(image, cut=True)
    if info.format is ImageFormat.HEIC:
        image, owner = _decode_heic(source, info)
        return Loaded(image, cut=False, owner=owner)  # upright: the engine cuts `rect`
    return None


def _vector_scale(box: Rect, unturned: Size) -> float:
    """The drawing scale that makes `box` (user units) `unturned` pixels."""
    return max(unturned.width / box.width, unturned.height / box.height)


def _decode_heic(source: Source, info: SourceInfo) -> tuple[pyvips.Image, object]:
    try:
        # 10- and 12-bit pixels are scaled to 8 bits in libheif's colour conversion: the output is
        # 8-bit sRGB anyway, and the one decoded buffer is half the size of a 16-bit one.
        heif = pi_heif.open_heif(source, convert_hdr_to_8bit=True)
        width, height = heif.size
        if (width, height) != (info.width, info.height):
            # Two libheifs read this header (libvips' and pi-heif's): decode only the size the
            # limits were checked against, whatever a crafted file makes one of them believe.
            raise NotAnImage(
                CANNOT_DECODE, f"HEIC header {width}x{height}, probed {info.width}x{info.height}"
            )
        bands, interpretation = _BANDS[heif.mode]
        # The decode: one buffer, which libvips then reads without a copy. pi-heif's memoryview does
        # not keep its owner alive (`.obj` is None): `heif` must outlive every read of `image`.
        pixels = heif.data
    except KeyError:
        raise NotAnImage(CANNOT_DECODE, "HEIC pixel mode not read") from None
    except _HEIF_ERRORS as exc:
        raise NotAnImage(CANNOT_DECODE, str(exc).strip()) from None
    if heif.stride != width * bands:  # pi-heif removes row padding by default; be sure
        raise NotAnImage(CANNOT_DECODE, f"HEIC stride {heif.stride} for {width}x{bands}")
    image = pyvips.Image.new_from_memory(pixels, width, height, bands, "uchar")
    image = image.copy(interpretation=interpretation)
    profile = heif.info.get("icc_profile")
    if isinstance(profile, bytes | bytearray) and profile:
        # An iPhone's Display P3 profile: `to_srgb` applies it as for any other source.
        # pyvips' annotations omit bytes, which set_type takes for a blob.
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", bytes(profile))  # type: ignore[arg-type]
    return image, heif


def _bytes(source: Source) -> bytes:
    # Never by file name: librsvg would resolve relative references against the file's
    # directory (the disk tier's, or /proc/self/fd/ and the process's open files).
    return source.read_bytes() if isinstance(source, Path) else source


__all__ = ["CANNOT_DECODE", "CONTAINER_ORIENTED", "VECTOR", "configure", "load", "plan_source", "read_header"]
