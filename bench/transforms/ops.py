"""The in-process limit's operations: one case done by one library, as a callable on source bytes.

- `pyvips`: libvips' own `thumbnail_buffer` (shrink-on-load as libvips chooses it; an SVG drawn at
  the thumbnail's scale) and a save with the library's defaults but quality and metadata;
- `Pillow`: `draft()` (JPEG DCT scaling; a no-op for other formats, HEIC included), `exif_transpose`,
  `thumbnail` (Lanczos with its reducing gap), save with the library's defaults but quality; HEIC
  through pillow-heif's plugin (libheif + libde265, one decode thread per process);
- `engine`: `imgproxy.transform.engine.transform` after the pool's `engine.configure` (one libvips
  thread, pi-heif with one decode thread, the SVG loader unblocked); for `fm=json`,
  `imgproxy.transform.info.describe`, the pool's work for the JSON bucket;
- `engine 300x200 JPEG`: for `fm=json` only, the engine's 300x200 JPEG q80 of the same source (what
  a description costs next to the smallest usual variant).

A case names the libraries that can do it (`Case.libraries`); the others are n/a in the report:
libvips has no HEVC decoder, Pillow no SVG reader, and neither describes a source.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Final

from .limit_cases import BIG, JPEG_REFERENCE, Case


def _pyvips_op(case: Case, source: bytes) -> Callable[[], bytes]:
    import pyvips

    pyvips.cache_set_max(0)
    height = case.height or BIG

    def run() -> bytes:
        image = pyvips.Image.thumbnail_buffer(source, case.width, height=height)
        if case.fmt == "jpeg":
            return bytes(image.jpegsave_buffer(Q=case.quality, keep=0))
        if case.fmt == "webp":
            return bytes(image.webpsave_buffer(Q=case.quality, keep=0))
        if case.fmt == "avif":
            return bytes(image.heifsave_buffer(Q=case.quality, compression="av1", keep=0))
        return bytes(image.pngsave_buffer(keep=0))

    return run


def _pillow_op(case: Case, source: bytes) -> Callable[[], bytes]:
    from PIL import Image, ImageOps

    if source[4:12] == b"ftypheic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        pillow_heif.options.DECODE_THREADS = 1  # one process per core, like libvips' threads
    with Image.open(io.BytesIO(source)) as header:  # draft() needs the real box, not "no limit"
        scale = min(case.width / header.width, (case.height or BIG) / header.height)
        box = (round(header.width * scale), round(header.height * scale))
    save_as = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "png": "PNG"}[case.fmt]

    def run() -> bytes:
        opened = Image.open(io.BytesIO(source))
        opened.draft("RGB", box)  # JPEG only: decode at the DCT scale that still covers the box
        image = ImageOps.exif_transpose(opened)
        image.thumbnail(box, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if case.fmt == "png":
            image.save(out, save_as)
        else:
            image.save(out, save_as, quality=case.quality)
        return out.getvalue()

    return run


def _engine_op(case: Case, source: bytes) -> Callable[[], bytes]:
    from imgproxy.transform import engine, info
    from imgproxy.transform.negotiate import FormatBucket
    from imgproxy.transform.params import TransformOptions
    from imgproxy.transform.result import Limits

    engine.configure(threads_per_transform=1)  # what the pool does: SVG unblocked, one HEIC thread
    limits = Limits()
    if case.fmt == "json":
        return lambda: info.describe(source, limits).body
    options = TransformOptions(width=case.width, height=case.height or None, quality=case.quality or None)
    bucket = FormatBucket(case.fmt)

    def run() -> bytes:
        return engine.transform(source, options, bucket, limits).body

    return run


def _jpeg_reference_op(case: Case, source: bytes) -> Callable[[], bytes]:
    return _engine_op(Case(case.name, case.source, 300, 200, "jpeg", 80), source)


OPERATIONS: Final[dict[str, Callable[[Case, bytes], Callable[[], bytes]]]] = {
    "pyvips": _pyvips_op,
    "Pillow": _pillow_op,
    "engine": _engine_op,
    JPEG_REFERENCE: _jpeg_reference_op,
}


def operation(library: str, case: Case, source: bytes) -> Callable[[], bytes]:
    return OPERATIONS[library](case, source)


def raw_like_engine(case: Case, source: bytes) -> Callable[[], bytes] | None:
    """The engine's pipeline as bare pyvips calls (same shrink, kernel and encoder settings); None
    where bare pyvips cannot do the case (HEIC: no HEVC decoder; `fm=json`)."""
    import pyvips

    from imgproxy.transform.engine import AVIF_EFFORT, PROGRESSIVE_MIN_PIXELS
    from imgproxy.transform.geometry import jpeg_shrink

    if case.fmt == "json" or "pyvips" not in case.libraries:
        return None
    header = pyvips.Image.new_from_buffer(source, "")
    scale = min(case.width / header.width, (case.height or BIG) / header.height)
    width, height = round(header.width * scale), round(header.height * scale)
    jpeg = source[:2] == b"\xff\xd8"
    svg = str(header.get("vips-loader")).startswith("svgload")
    shrink = jpeg_shrink(header.width, header.height, width, height) if jpeg else 1

    def run() -> bytes:
        options: dict[str, Any] = {"shrink": shrink} if shrink > 1 else {}
        if svg:  # drawn at the output's scale, as the engine draws it
            options = {"scale": scale}
        image = pyvips.Image.new_from_buffer(source, "", access="sequential", fail_on="warning", **options)
        alpha = image.hasalpha()
        if alpha:
            image = image.premultiply().cast("uchar")
        image = image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
        if alpha:
            image = image.unpremultiply().cast("uchar")
        if case.fmt == "jpeg":
            progressive = width * height >= PROGRESSIVE_MIN_PIXELS
            return bytes(
                image.jpegsave_buffer(Q=case.quality, keep=0, optimize_coding=True, interlace=progressive)
            )
        if case.fmt == "webp":
            return bytes(image.webpsave_buffer(Q=case.quality, keep=0))
        if case.fmt == "avif":
            return bytes(image.heifsave_buffer(Q=case.quality, compression="av1", effort=AVIF_EFFORT, keep=0))
        return bytes(image.pngsave_buffer(compression=6, keep=0))

    return run
