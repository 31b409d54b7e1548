"""Sources libvips' loaders do not take as they come: HEIC (HEVC) and SVG. With `engine` and
`vips_ops`, the only modules that import pyvips; the only one that imports pillow-heif.

- HEIC: the `pyvips-binary` wheel reads the HEIF container but carries no HEVC decoder, so the
  header still comes from libvips (size and bit depth, nothing decoded: `max_src_pixels` refuses a
  60,000 x 60,000 header before anything is allocated), and the pixels from pillow-heif (libheif
  with libde265), handed to libvips as one 8-bit buffer. libheif applies the container's rotation
  and mirror (`irot`, `imir`); an EXIF orientation inside a HEIC is never applied again. AVIF
  (heif-compression av1) stays with libvips, which has the AV1 decoder.
- SVG: rasterised by libvips' `svgload` (librsvg), always from memory: with no base URL librsvg
  refuses every `file:` and `http:` reference (images, `<use>`, `xi:include`), and libxml2 refuses
  entity expansion bombs. A vector has no pixel size of its own: it is drawn at the planned size
  (`enlarge` does not apply), and `max_src_pixels` bounds that drawn size, not the declared one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

import pillow_heif
import pyvips

from imgproxy.core.errors import NotAnImage, SourceTooLarge
from imgproxy.transform.geometry import Plan, plan
from imgproxy.transform.params import TransformOptions
from imgproxy.transform.result import ImageFormat, Limits, Source, SourceInfo

# The decoder's own words go to the log, never to the client.
CANNOT_DECODE: Final = "cannot decode (damaged, truncated or unsupported)"
SVG_LOADER: Final = "VipsForeignLoadSvg"  # libvips' class; its Buffer, File and Source loaders below it
VECTOR: Final = frozenset({ImageFormat.SVG})
# The decoder applies the container's orientation (irot/imir); EXIF's must not turn it again.
CONTAINER_ORIENTED: Final = frozenset({ImageFormat.HEIC})
_BANDS: Final = {"L": (1, "b-w"), "LA": (2, "b-w"), "RGB": (3, "srgb"), "RGBA": (4, "srgb")}
# What pillow-heif raises for a damaged, truncated or unsupported file (its documented set).
_HEIF_ERRORS: Final = (ValueError, EOFError, SyntaxError, RuntimeError, OSError)


def configure(threads_per_transform: int) -> None:
    """After `block_untrusted_set(True)`: unblock libvips' SVG loader (this module loads SVG only
    from memory) and give libheif the pool's thread budget per transform."""
    pyvips.operation_block_set(SVG_LOADER, False)
    pillow_heif.options.DECODE_THREADS = max(1, threads_per_transform)


def read_header(source: Source, image_format: ImageFormat) -> pyvips.Image | None:
    """The header of a source this module loads (SVG, parsed from memory), else None: libvips'."""
    if image_format is not ImageFormat.SVG:
        return None
    return pyvips.Image.svgload_buffer(_bytes(source), fail_on="warning")


def plan_source(info: SourceInfo, options: TransformOptions, limits: Limits) -> Plan:
    """The plan; a vector is drawn at the asked size, within `max_src_pixels`."""
    if info.format not in VECTOR:
        return plan(info.width, info.height, options)
    target = plan(info.width, info.height, dataclasses.replace(options, enlarge=True))
    pixels = target.resized_width * target.resized_height
    if pixels > limits.max_src_pixels:
        raise SourceTooLarge(
            f"more pixels than transform.max_src_pixels ({limits.max_src_pixels})",
            f"{target.resized_width}x{target.resized_height} pixels rasterised",
        )
    return target


def load(source: Source, info: SourceInfo, target: Plan) -> pyvips.Image | None:
    """The decoded image of a source this module loads (HEIC, SVG), else None: libvips loads it."""
    if info.format is ImageFormat.SVG:
        # Drawn at the resized size, not drawn small and scaled up: crisp edges at any size.
        scale = max(target.resized_width / info.width, target.resized_height / info.height)
        return pyvips.Image.svgload_buffer(_bytes(source), scale=scale, fail_on="warning")
    if info.format is ImageFormat.HEIC:
        return _decode_heic(source, info)
    return None


def _decode_heic(source: Source, info: SourceInfo) -> pyvips.Image:
    try:
        # 10- and 12-bit pixels are scaled to 8 bits in libheif's colour conversion: the output is
        # 8-bit sRGB anyway, and the one decoded buffer is half the size of a 16-bit one.
        heif = pillow_heif.open_heif(source, convert_hdr_to_8bit=True)
        width, height = heif.size
        if (width, height) != (info.width, info.height):
            # Two libheifs read this header (libvips' and pillow-heif's): decode only the size the
            # limits were checked against, whatever a crafted file makes one of them believe.
            raise NotAnImage(
                CANNOT_DECODE, f"HEIC header {width}x{height}, probed {info.width}x{info.height}"
            )
        bands, interpretation = _BANDS[heif.mode]
        pixels = heif.data  # the decode: one buffer, which libvips then reads without a copy
    except KeyError:
        raise NotAnImage(CANNOT_DECODE, "HEIC pixel mode not read") from None
    except _HEIF_ERRORS as exc:
        raise NotAnImage(CANNOT_DECODE, str(exc).strip()) from None
    if heif.stride != width * bands:  # pillow-heif removes row padding by default; be sure
        raise NotAnImage(CANNOT_DECODE, f"HEIC stride {heif.stride} for {width}x{bands}")
    image = pyvips.Image.new_from_memory(pixels, width, height, bands, "uchar")
    image = image.copy(interpretation=interpretation)
    profile = heif.info.get("icc_profile")
    if isinstance(profile, bytes | bytearray) and profile:
        # An iPhone's Display P3 profile: `to_srgb` applies it as for any other source.
        # pyvips' annotations omit bytes, which set_type takes for a blob.
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", bytes(profile))  # type: ignore[arg-type]
    return image


def _bytes(source: Source) -> bytes:
    # Never by file name: librsvg would resolve relative references against the file's
    # directory (the disk tier's, or /proc/self/fd/ and the process's open files).
    return source.read_bytes() if isinstance(source, Path) else source


__all__ = ["CANNOT_DECODE", "CONTAINER_ORIENTED", "VECTOR", "configure", "load", "plan_source", "read_header"]
