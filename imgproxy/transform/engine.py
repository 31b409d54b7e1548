"""The image engine: with `vips_ops`, `decoders` and `info`, the only modules that import pyvips (libvips,
shipped in pyvips-binary).

`probe` reads a source's header and checks the limits before anything is decoded; `transform`
makes one variant, synchronously (the pool in `pool.py` runs it off the event loop; libvips
releases the GIL). The steps, in a fixed order:

1. header: loader allow-list (JPEG, PNG, WebP, GIF, HEIF/AVIF, TIFF, SVG), `max_src_bytes`,
   `max_src_pixels` (one frame, and all frames kept; an SVG's drawn size), so a decompression
   bomb is refused from its header without its pixels being allocated (HEIC and SVG: `decoders`);
2. load with shrink-on-load (JPEG: the largest 1/2, 1/4, 1/8 DCT scale still at least the
   resized size, of `rect` when given, like Pillow's `draft()`; WebP: libwebp's scaled decode, not
   with `rect`), sequential access, `fail_on=warning` as in sharp (truncated or damaged -> `NotAnImage`);
3. `rect` cut (mapped into stored pixels: `framing`), to sRGB (an embedded ICC profile is applied;
   CMYK, 16-bit and Lab converted), then resize with premultiplied alpha (Lanczos 3), then EXIF
   auto-rotation, `rot` and `flip` (on the small image), then `cover`'s crop (side, corner, focal
   point, or libvips' attention/entropy smart crop) or `contain`'s letterbox, then `blur`, `sharp`;
4. alpha flattened onto `bg` for JPEG; encode with every piece of metadata dropped (`keep=none`:
   no EXIF, GPS, XMP, IPTC, nor ICC: the pixels are sRGB, the web's default).

Animated GIF/WebP keep their frames (at most `max_frames`) when the output is WebP or GIF, else
the first frame is used. libvips' operation cache is off and its threads per pipeline are set
by `configure` (the pool calls it), so that N concurrent transforms use about N cores.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Final

import pyvips

from imgproxy.core.errors import BadTransformParameter, NotAnImage, SourceTooLarge
from imgproxy.transform import decoders
from imgproxy.transform.decoders import CANNOT_DECODE as CANNOT_DECODE
from imgproxy.transform.framing import Size, rect_shrink, region, shrunk_rect, stored_rect
from imgproxy.transform.geometry import Finish, Plan, jpeg_shrink
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import DEFAULT_QUALITY, TransformOptions
from imgproxy.transform.result import (
    ANIMATED_OUTPUTS,
    CONTENT_TYPES,
    SOURCE_FAMILY,
    WRITABLE,
    ImageFormat,
    Limits,
    Source,
    SourceInfo,
    TransformResult,
)
from imgproxy.transform.values import Rect
from imgproxy.transform.vips_ops import blur, crop, flatten, ink, resize, sharpen, to_srgb, turn, with_colour

ANIMATED_SOURCES: Final = frozenset({ImageFormat.GIF, ImageFormat.WEBP})
# libvips loader class names (less their Buffer/File/Source suffix) we accept; anything else
# (CSV, matrix, PPM, FITS, ...) is "not an image" here even though libvips could read it.
_LOADERS: Final = {
    "VipsForeignLoadJpeg": ImageFormat.JPEG,
    "VipsForeignLoadPng": ImageFormat.PNG,
    "VipsForeignLoadWebp": ImageFormat.WEBP,
    "VipsForeignLoadNsgif": ImageFormat.GIF,
    "VipsForeignLoadHeif": ImageFormat.HEIC,  # AVIF when its compression is av1
    "VipsForeignLoadTiff": ImageFormat.TIFF,
    decoders.SVG_LOADER: ImageFormat.SVG,  # rasterised from memory only (decoders)
}
# Below this many pixels an optimised baseline JPEG is smaller than a progressive one; above it
# progressive wins (measured on photo-like sources at q80: 267x200 baseline 2 % smaller,
# 300x225 even, 800x533 progressive 5 % smaller).
PROGRESSIVE_MIN_PIXELS: Final = 70_000
PNG_COMPRESSION: Final = 6
# libvips writes PNG rows unfiltered by default; "avg" is 31 % smaller on the bench's 300x200 PNG
# with alpha (56,030 against 81,531 bytes) for 0.04 ms more; adaptive ("all") costs 75 % more time.
PNG_FILTER: Final = pyvips.enums.ForeignPngFilter.AVG
# libheif/aom effort: at 300x200, 3 took 28 ms and 4 (libvips' default) 121 ms for 1.3 % fewer bytes.
AVIF_EFFORT: Final = 3
_NO_METADATA: Final = 0  # ForeignKeep.NONE


class Cancelled(Exception):
    """The job's cancel event was set (its caller timed out); never reaches a client."""


def configure(threads_per_transform: int) -> None:
    """Process-wide libvips settings: no operation cache, bounded threads, no untrusted loaders."""
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.voperation.concurrency_set(max(1, threads_per_transform))
    pyvips.block_untrusted_set(True)
    decoders.configure(threads_per_transform)


def _loader(source: Source) -> tuple[str, ImageFormat]:
    lib, ffi = pyvips.vips_lib, pyvips.ffi
    if isinstance(source, Path):
        pointer = lib.vips_foreign_find_load(str(source).encode())
    else:
        pointer = lib.vips_foreign_find_load_buffer(source, len(source))
    name = "" if pointer == ffi.NULL else ffi.string(pointer).decode()
    for prefix, image_format in _LOADERS.items():
        if name.startswith(prefix):
            return name, image_format
    if not name:
        raise NotAnImage("not an image format we read")
    raise NotAnImage("unsupported format", f"libvips loader {name}")


def _load(source: Source, loader: str, **options: Any) -> pyvips.Image:
    argument: Any = str(source) if isinstance(source, Path) else source
    # sharp's default too: a decoder warning (corrupt data) fails, rather than a half-grey picture.
    image = pyvips.Operation.call(loader, argument, fail_on="warning", **options)
    assert isinstance(image, pyvips.Image)
    return image


def _field(image: pyvips.Image, name: str, default: int) -> int:
    value = image.get(name) if image.get_typeof(name) != 0 else default
    return value if isinstance(value, int) else default


def probe(source: Source, limits: Limits) -> SourceInfo:
    """The source's header facts, after the byte and pixel limits (nothing is decoded)."""
    try:
        return _probe(source, limits)[1]
    except pyvips.Error as exc:
        raise NotAnImage(CANNOT_DECODE, _message(exc)) from None


def _probe(source: Source, limits: Limits) -> tuple[str, SourceInfo]:
    size = source.stat().st_size if isinstance(source, Path) else len(source)
    if size > limits.max_src_bytes:
        raise SourceTooLarge(
            f"more bytes than transform.max_src_bytes ({limits.max_src_bytes})", f"{size} bytes"
        )
    loader, image_format = _loader(source)
    header = decoders.read_header(source, image_format)
    if header is None:
        header = _load(source, loader, access="sequential")
    heif_compression = header.get("heif-compression") if header.get_typeof("heif-compression") else ""
    if image_format is ImageFormat.HEIC and heif_compression == "av1":
        image_format = ImageFormat.AVIF
    width, height = header.width, header.height
    if width * height > limits.max_src_pixels and image_format not in decoders.VECTOR:  # drawn size: later
        raise SourceTooLarge(
            f"more pixels than transform.max_src_pixels ({limits.max_src_pixels})", f"{width}x{height} pixels"
        )
    orientation = _field(header, "orientation", 1)
    if not 1 <= orientation <= 8 or image_format in decoders.CONTAINER_ORIENTED:
        orientation = 1
    if orientation >= 5:
        width, height = height, width
    info = SourceInfo(
        format=image_format,
        width=width,
        height=height,
        frames=max(1, _field(header, "n-pages", 1)),
        has_alpha=header.hasalpha(),
        orientation=orientation,
    )
    return loader, info


def resolve_format(bucket: FormatBucket, info: SourceInfo) -> ImageFormat:
    """The format written for `bucket`: SOURCE is the safe family, ORIGINAL the source's own."""
    if bucket is FormatBucket.ORIGINAL and info.format in WRITABLE:
        return info.format
    if bucket in (FormatBucket.SOURCE, FormatBucket.ORIGINAL):
        if info.format in SOURCE_FAMILY:
            return info.format
        return ImageFormat.PNG if info.has_alpha else ImageFormat.JPEG
    return ImageFormat(bucket.value)


def passthrough(options: TransformOptions, bucket: FormatBucket, info: SourceInfo) -> bool:
    """Whether the source itself is the answer (format-only options that resolve to its format)."""
    return options.reencodes_only and resolve_format(bucket, info) is info.format


def transform(
    source: Source,
    options: TransformOptions,
    bucket: FormatBucket,
    limits: Limits,
    cancel: threading.Event | None = None,
) -> TransformResult:
    """Make one variant of `source`. Raises NotAnImage, SourceTooLarge, BadTransformParameter,
    or `Cancelled` once `cancel` is set (checked between steps and inside libvips' loops)."""
    try:
        return _Job(source, options, bucket, limits, cancel).run()
    except pyvips.Error as exc:
        if cancel is not None and cancel.is_set():
            raise Cancelled from None
        raise NotAnImage(CANNOT_DECODE, _message(exc)) from None


def _message(exc: pyvips.Error) -> str:
    """libvips' last line about the failure: for the log, never for the client."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""


class _Job:
    def __init__(
        self,
        source: Source,
        options: TransformOptions,
        bucket: FormatBucket,
        limits: Limits,
        cancel: threading.Event | None,
    ) -> None:
        self.source, self.options, self.bucket, self.limits = source, options, bucket, limits
        self.cancel = cancel
        self.owner: object = None  # memory a decoded image reads (decoders.Loaded.owner)
        self.box = Rect(0, 0, 0, 0)  # the upright box worked on (rect, or the whole source): set by run
        self.unturned = Size(0, 0)  # the resized size before `rot`: set by run

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled

    def run(self) -> TransformResult:
        loader, info = _probe(self.source, self.limits)
        output = resolve_format(self.bucket, info)
        self.box = region(self.options.rect, info.width, info.height)
        turned = Size(self.box.width, self.box.height).turned(self.options.rotate)
        target = decoders.plan_source(info, self.box, turned, self.options, self.limits)
        self.unturned = Size(target.resized_width, target.resized_height).turned(self.options.rotate)
        self._check_output(target)
        frames = 1
        # Pages of a TIFF are documents, not an animation (and may differ in size): first page.
        if info.frames > 1 and info.format in ANIMATED_SOURCES and output in ANIMATED_OUTPUTS:
            # Every frame kept is decoded: all of them count against max_src_pixels.
            per_frame = max(info.width * info.height, target.resized_width * target.resized_height)
            frames = max(1, min(info.frames, self.limits.max_frames, self.limits.max_src_pixels // per_frame))
        self.check()
        if frames > 1:
            image = _load(self.source, loader, n=frames)
            image = self._animation(image, frames, target)
        else:
            loaded = decoders.load(self.source, info, self.box, self.unturned)  # HEIC, SVG
            if loaded is not None:
                self.owner = loaded.owner  # a HEIC's pixels: kept as long as the job, past its encode
                image = self._still(loaded.image, info, target, 1, cut=not loaded.cut)
            else:
                shrink = self._shrink_on_load(info)
                image = _load(self.source, loader, access="sequential", **shrink)
                image = self._still(image, info, target, shrink.get("shrink", 1))
        image = flatten(image, output, self.options.background)
        self.check()
        return self._encode(image, output, target, frames)

    def _check_output(self, target: Plan) -> None:
        limits, options = self.limits, self.options
        if not options.resizes:
            return  # no larger than the source, which max_src_pixels bounds
        width = max(target.resized_width, target.out_width)
        height = max(target.resized_height, target.out_height)
        if width > limits.max_width or height > limits.max_height:
            name = "w" if options.width is not None else "h"
            raise BadTransformParameter(
                name,
                "the output would be larger than transform.max_width x max_height "
                f"({limits.max_width}x{limits.max_height})",
            )

    def _still(
        self, image: pyvips.Image, info: SourceInfo, target: Plan, shrink: int, cut: bool = True
    ) -> pyvips.Image:
        options = self.options
        if options.rect is not None and cut:
            # Cut in stored pixels before anything else (see framing: why not turn first).
            box = stored_rect(options.rect, info.orientation, info.width, info.height)
            if shrink > 1:
                box = shrunk_rect(box, shrink, Size(image.width, image.height))
            image = image.crop(box.x, box.y, box.width, box.height)
        image = to_srgb(image)
        # Resized in the stored orientation, rotated after: rotating needs the whole image, and
        # the resized one is small.
        image = resize(image, *_fields(self.unturned.turned(90 if info.orientation >= 5 else 0)))
        if info.orientation != 1 or options.rotate or options.flip is not None:
            image = turn(image.copy_memory().autorot(), options.rotate, options.flip)
        return self._finish(image, target)

    def _animation(self, image: pyvips.Image, frames: int, target: Plan) -> pyvips.Image:
        page_height = _field(image, "page-height", image.height)
        found = image.get("delay") if image.get_typeof("delay") != 0 else []
        delays = [int(delay) for delay in found] if isinstance(found, list) else []
        loop = _field(image, "loop", 0)
        image = to_srgb(image)
        box = self.box  # animations have no EXIF orientation: rect is in stored pixels
        pages = [image.crop(box.x, n * page_height + box.y, box.width, box.height) for n in range(frames)]
        done = []
        for page in pages:
            self.check()
            resized = turn(resize(page, *_fields(self.unturned)), self.options.rotate, self.options.flip)
            done.append(self._finish(resized, target))
        strip = pyvips.Image.arrayjoin(done, across=1).copy()
        strip.set_type(pyvips.GValue.gint_type, "page-height", done[0].height)
        strip.set_type(pyvips.GValue.gint_type, "loop", loop)
        if delays:
            strip.set_type(pyvips.GValue.array_int_type, "delay", (delays + delays[-1:] * frames)[:frames])
        return strip

    def _finish(self, image: pyvips.Image, target: Plan) -> pyvips.Image:
        options = self.options
        image = self._finish_box(image, target)
        if options.blur is not None:
            image = blur(image, options.blur)
        if options.sharpen is not None:
            image = sharpen(image, options.sharpen)
        return image

    def _finish_box(self, image: pyvips.Image, target: Plan) -> pyvips.Image:
        options = self.options
        if target.finish is Finish.CROP:
            return crop(image, target.out_width, target.out_height, options.position, options.focal)
        if target.finish is Finish.EMBED:
            background = options.background
            if background.alpha < 255 and not image.hasalpha():
                image = with_colour(image).bandjoin_const([255])
            return with_colour(image).gravity(
                "centre",
                target.out_width,
                target.out_height,
                extend="background",
                background=ink(background, image.hasalpha() or background.alpha < 255),
            )
        return image

    def _encode(self, image: pyvips.Image, output: ImageFormat, target: Plan, frames: int) -> TransformResult:
        quality = self.options.quality or DEFAULT_QUALITY.get(output.value, 80)
        image.set_progress(True)  # libvips then calls on_eval as it computes: a timed-out job is killed
        cancel = self.cancel

        def on_eval(evaluated: pyvips.Image, _progress: object) -> None:
            if cancel is not None and cancel.is_set():
                evaluated.set_kill(True)

        image.signal_connect("eval", on_eval)
        if output is ImageFormat.JPEG:
            pixels = image.width * image.height
            body = image.jpegsave_buffer(
                Q=quality, keep=_NO_METADATA, optimize_coding=True, interlace=pixels >= PROGRESSIVE_MIN_PIXELS
            )
        elif output is ImageFormat.PNG:
            body = image.pngsave_buffer(compression=PNG_COMPRESSION, filter=PNG_FILTER, keep=_NO_METADATA)
        elif output is ImageFormat.WEBP:
            body = image.webpsave_buffer(Q=quality, keep=_NO_METADATA)
        elif output is ImageFormat.AVIF:
            body = image.heifsave_buffer(Q=quality, compression="av1", effort=AVIF_EFFORT, keep=_NO_METADATA)
        else:
            body = image.gifsave_buffer(keep=_NO_METADATA)
        self.check()
        height = image.height // frames
        return TransformResult(bytes(body), CONTENT_TYPES[output], output, image.width, height, frames)

    def _shrink_on_load(self, info: SourceInfo) -> dict[str, Any]:
        needed, rect = self.unturned, self.options.rect
        if info.format is ImageFormat.JPEG:
            if rect is not None:
                shrink = rect_shrink(rect, needed)
            else:
                shrink = jpeg_shrink(info.width, info.height, needed.width, needed.height)
            return {"shrink": shrink} if shrink > 1 else {}
        # libwebp's scaled size is rounded: a box cut from it would be off by a fraction of a pixel.
        if info.format is ImageFormat.WEBP and rect is None:
            scale = max(needed.width / info.width, needed.height / info.height)
            return {"scale": scale} if scale < 1 else {}
        return {}


def _fields(size: Size) -> tuple[int, int]:
    return size.width, size.height


__all__ = [
    "Cancelled",
    "configure",
    "passthrough",
    "probe",
    "resolve_format",
    "transform",
]
