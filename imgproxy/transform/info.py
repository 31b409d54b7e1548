"""`fm=json`: facts about a source and its placeholders, as JSON, instead of pixels.

`work` is what a pool slot runs: `describe` for the JSON bucket, else the engine's `transform`; so
a description is bounded by the same slots, queue and timeout as a variant, and is one (cached,
coalesced, revalidated and purged with its source by `variants`).

`describe` reads the header (`engine.probe`: the same loaders and limits as a transform), then
makes one thumbnail of at most `THUMBHASH_SIDE` pixels a side with libvips' `thumbnail`
(shrink-on-load, EXIF auto-rotation, ICC to sRGB, first frame), so a 12 MP source costs what a small
thumbnail costs. From it:
- `thumbhash`: evanw/thumbhash's reference encoder (its Rust crate, via `fast-thumbhash`), RGBA,
  base64 (standard alphabet, padded);
- `blurhash`: 4x3 components (the reference's own example) by `fast-blurhash`, from the thumbnail
  made at most `BLURHASH_SIDE` a side and flattened onto white (BlurHash has no alpha; white is the
  background a page most often has);
- `dominant`: the mode of a 16x16x16 histogram of the opaque pixels (alpha >= 128), as the mean
  colour of that bin's pixels, `#rrggbb`; `null` when no pixel is opaque. Computed by libvips.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Final

import fast_blurhash
import fast_thumbhash
import pyvips

from imgproxy.core.errors import NotAnImage
from imgproxy.transform import engine
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import TransformOptions
from imgproxy.transform.result import ImageFormat, Limits, Source, TransformResult

CONTENT_TYPE: Final = "application/json"
THUMBHASH_SIDE: Final = 100  # the reference encoder's bound: at most 100x100
BLURHASH_SIDE: Final = 32  # 4x3 components need no more; the encoder's cost is per pixel
BLURHASH_COMPONENTS: Final = (4, 3)
_OPAQUE: Final = 128  # pixels at least this opaque count towards the dominant colour
_LEVELS: Final = 16  # histogram levels per channel (4 bits): near shades share a bin
_TRANSPARENT_BIN: Final = _LEVELS**3  # where pixels that do not count go


def work(
    source: Source,
    options: TransformOptions,
    bucket: FormatBucket,
    limits: Limits,
    cancel: threading.Event | None = None,
) -> TransformResult:
    """What a pool slot runs: the description for `fm=json`, else the variant."""
    if bucket is FormatBucket.JSON:
        return describe(source, limits, cancel)
    return engine.transform(source, options, bucket, limits, cancel)


def describe(source: Source, limits: Limits, cancel: threading.Event | None = None) -> TransformResult:
    """The JSON description of `source`. Raises what `engine.probe` raises (NotAnImage,
    SourceTooLarge), or `engine.Cancelled` once `cancel` is set."""
    info = engine.probe(source, limits)
    try:
        thumb = _thumbnail(source, info.format, limits, cancel)
        facts = {
            "width": info.width,
            "height": info.height,
            "format": info.format.value,
            "frames": info.frames,
            "has_alpha": bool(info.has_alpha),  # libvips answers an int
            "orientation": info.orientation,
            "bytes": source.stat().st_size if isinstance(source, Path) else len(source),
            "blurhash": _blurhash(thumb),
            "thumbhash": _thumbhash(thumb),
            "dominant": _dominant(thumb),
        }
    except pyvips.Error as exc:
        if cancel is not None and cancel.is_set():
            raise engine.Cancelled from None
        lines = [line for line in str(exc).splitlines() if line.strip()]  # libvips' words: for the log
        raise NotAnImage(engine.CANNOT_DECODE, lines[-1].strip() if lines else "") from None
    if cancel is not None and cancel.is_set():
        raise engine.Cancelled
    body = json.dumps(facts, separators=(",", ":")).encode()
    return TransformResult(body, CONTENT_TYPE, ImageFormat.JSON, info.width, info.height, info.frames)


def _thumbnail(
    source: Source, image_format: ImageFormat, limits: Limits, cancel: threading.Event | None
) -> pyvips.Image:
    """At most THUMBHASH_SIDE a side (never enlarged), upright, sRGB, 8-bit RGBA, in memory."""
    if image_format in (ImageFormat.HEIC, ImageFormat.SVG):
        # libvips alone cannot decode HEVC, and an SVG is drawn only by the engine's rules (from
        # memory, no references): the engine's own small PNG of it, read back (about a millisecond).
        box = TransformOptions(width=THUMBHASH_SIDE, height=THUMBHASH_SIDE)
        small = engine.transform(source, box, FormatBucket.PNG, limits, cancel)
        image = pyvips.Image.pngload_buffer(small.body)
    # fail_on=warning as in the engine: a damaged image is refused, not described half-grey.
    elif isinstance(source, Path):
        image = pyvips.Image.thumbnail(
            f"{source}[fail_on=warning]", THUMBHASH_SIDE, height=THUMBHASH_SIDE, size="down"
        )
    else:
        image = pyvips.Image.thumbnail_buffer(
            source, THUMBHASH_SIDE, height=THUMBHASH_SIDE, size="down", option_string="fail_on=warning"
        )
    if image.format != "uchar" or image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("srgb").cast("uchar")
    if image.bands < 3:  # grey, with or without alpha
        image = image.colourspace("srgb")
    if not image.hasalpha():
        image = image.bandjoin_const([255])
    image.set_progress(True)  # libvips calls on_eval while it decodes: a timed-out job is killed

    def on_eval(evaluated: pyvips.Image, _progress: object) -> None:
        if cancel is not None and cancel.is_set():
            evaluated.set_kill(True)

    image.signal_connect("eval", on_eval)
    return image.copy_memory()


def _thumbhash(thumb: pyvips.Image) -> str:
    pixels = bytes(thumb.write_to_memory())
    hashed: list[int] = fast_thumbhash.rgba_to_thumb_hash(thumb.width, thumb.height, pixels)
    return base64.b64encode(bytes(hashed)).decode()


def _blurhash(thumb: pyvips.Image) -> str:
    small = thumb.thumbnail_image(BLURHASH_SIDE, height=BLURHASH_SIDE, size="down")
    rgb = small.flatten(background=[255, 255, 255]).cast("uchar")
    x_components, y_components = BLURHASH_COMPONENTS
    return fast_blurhash.encode(
        bytes(rgb.write_to_memory()), x_components, y_components, rgb.width, rgb.height
    )


def _dominant(thumb: pyvips.Image) -> str | None:
    red, green, blue, alpha = (thumb[band] for band in range(4))
    shift = 8 - (_LEVELS - 1).bit_length()
    index = ((red >> shift) * _LEVELS + (green >> shift)) * _LEVELS + (blue >> shift)
    index = (alpha >= _OPAQUE).ifthenelse(index, _TRANSPARENT_BIN).cast("ushort")
    counts = index.hist_find()  # as wide as the largest index present
    counts = counts.crop(0, 0, min(counts.width, _TRANSPARENT_BIN), 1)  # the transparent bin left out
    most, x, _ = counts.maxpos()
    if most == 0:
        return None
    members = index.relational_const("equal", [x]) / 255  # 1 where a pixel is in the winning bin, else 0
    share = members.avg()
    mean = [round((band * members).avg() / share) for band in (red, green, blue)]
    return "#" + "".join(f"{min(255, max(0, value)):02x}" for value in mean)
