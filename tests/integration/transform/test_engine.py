"""The transform engine on real libvips and real images the tests make: sizes for every `fit`,
formats by magic bytes, orientation, metadata, damaged input, limits, animation, cancellation.

Outputs are decoded by Pillow (an independent decoder) and checked by pixel size and content.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from imgproxy.core.errors import BadTransformParameter, NotAnImage, SourceTooLarge
from imgproxy.transform import engine
from imgproxy.transform.engine import CANNOT_DECODE
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import Color, Fit, Position, RequestedFormat, TransformOptions
from imgproxy.transform.result import ImageFormat, Limits, TransformResult
from tests.helpers import peak_rss_bytes, reset_peak_rss
from tests.support import images
from tests.support.images import BLUE, GREEN, RED, WHITE, decode, near, pixel

LIMITS = Limits()


def run(
    source: bytes | Path,
    bucket: FormatBucket = FormatBucket.ORIGINAL,
    limits: Limits = LIMITS,
    **options: object,
) -> TransformResult:
    """Transform `source` with TransformOptions(**options) into `bucket`."""
    return engine.transform(source, TransformOptions(**options), bucket, limits)  # type: ignore[arg-type]


def size(result: TransformResult) -> tuple[int, int]:
    """The output's pixel size as Pillow decodes it (and as the result says: they must agree)."""
    decoded = decode(result.body)
    assert (decoded.width, decoded.height) == (result.width, result.height)
    return decoded.width, decoded.height


# --- sizes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fit", "expected"),
    [
        (Fit.INSIDE, (200, 150)),
        (Fit.COVER, (200, 200)),
        (Fit.CONTAIN, (200, 200)),
        (Fit.FILL, (200, 200)),
        (Fit.OUTSIDE, (267, 200)),
    ],
)
def test_every_fit_gives_sharps_size(fit: Fit, expected: tuple[int, int]) -> None:
    """A 400x300 source into a 200x200 box, for each of sharp's five fits."""
    assert size(run(images.jpeg(400, 300), width=200, height=200, fit=fit)) == expected


@pytest.mark.parametrize(
    ("fit", "enlarge", "expected"),
    [
        (Fit.INSIDE, False, (100, 75)),
        (Fit.INSIDE, True, (400, 300)),
        (Fit.COVER, False, (100, 75)),
        (Fit.COVER, True, (400, 400)),
        (Fit.CONTAIN, False, (400, 400)),
        (Fit.FILL, True, (400, 400)),
        (Fit.OUTSIDE, True, (533, 400)),
    ],
)
def test_enlarge_decides_whether_a_small_source_grows(
    fit: Fit, enlarge: bool, expected: tuple[int, int]
) -> None:
    """A 100x75 source in a 400x400 box: kept at its size unless `enlarge` (contain letterboxes anyway)."""
    result = run(images.jpeg(100, 75), width=400, height=400, fit=fit, enlarge=enlarge)
    assert size(result) == expected


def test_one_side_keeps_the_aspect() -> None:
    """Only `w` or only `h`: the other side follows the source's aspect."""
    source = images.jpeg(400, 300)
    assert size(run(source, width=100)) == (100, 75)
    assert size(run(source, height=60)) == (80, 60)


def test_dpr_multiplies_the_output_size() -> None:
    """`w=100&dpr=2.5`, parsed, gives 250 pixels wide."""
    from imgproxy.transform.params import build_options

    options = build_options({"w": "100", "dpr": "2.5"}, 8192, 8192)
    result = engine.transform(images.jpeg(400, 300), options, FormatBucket.JPEG, LIMITS)
    assert size(result) == (250, 188)


def test_no_size_keeps_the_size() -> None:
    """A format change alone keeps the pixel size."""
    assert size(run(images.jpeg(123, 45), FormatBucket.PNG)) == (123, 45)


# --- content -------------------------------------------------------------------------------------


def test_cover_keeps_the_side_named_by_pos() -> None:
    """A wide source covered into a square: west keeps the red/blue left, east the green/white right."""
    source = images.jpeg(400, 200)
    west = decode(
        run(source, FormatBucket.PNG, width=100, height=100, fit=Fit.COVER, position=Position.WEST).body
    )
    east = decode(
        run(source, FormatBucket.PNG, width=100, height=100, fit=Fit.COVER, position=Position.EAST).body
    )
    assert near(pixel(west, 0.5, 0.25), RED) and near(pixel(west, 0.5, 0.75), BLUE)
    assert near(pixel(east, 0.5, 0.25), GREEN) and near(pixel(east, 0.5, 0.75), WHITE)


@pytest.mark.parametrize("position", [Position.ATTENTION, Position.ENTROPY])
def test_smart_crops_give_the_box(position: Position) -> None:
    """libvips' attention and entropy crops give exactly the box."""
    result = run(images.jpeg(400, 200), width=120, height=100, fit=Fit.COVER, position=position)
    assert size(result) == (120, 100)


def test_contain_letterboxes_with_bg() -> None:
    """A wide source contained in a square: bars of `bg` above and below, the image between."""
    black = Color(0, 0, 0)
    result = run(
        images.jpeg(400, 200), FormatBucket.PNG, width=100, height=100, fit=Fit.CONTAIN, background=black
    )
    decoded = decode(result.body)
    assert near(pixel(decoded, 0.5, 0.1), (0, 0, 0), 8)
    assert near(pixel(decoded, 0.5, 0.9), (0, 0, 0), 8)
    assert near(pixel(decoded, 0.25, 0.4), RED)


def test_contain_with_a_transparent_bg_letterboxes_transparently() -> None:
    """An 8-digit `bg` with alpha gives transparent bars in an output that holds alpha."""
    clear = Color(0, 0, 0, 0)
    result = run(
        images.jpeg(400, 200), FormatBucket.PNG, width=100, height=100, fit=Fit.CONTAIN, background=clear
    )
    assert pixel(decode(result.body), 0.5, 0.05)[3] == 0


def test_fill_stretches() -> None:
    """`fill` ignores the aspect: the four quadrants fill the new box."""
    decoded = decode(run(images.jpeg(400, 100), FormatBucket.PNG, width=100, height=100, fit=Fit.FILL).body)
    assert near(pixel(decoded, 0.25, 0.25), RED) and near(pixel(decoded, 0.75, 0.75), WHITE)


def test_exif_orientation_6_comes_out_upright() -> None:
    """A photo stored turned, with orientation 6, comes out as it is meant to be seen."""
    source = images.jpeg_rotated_with_gps(300, 200)
    for bucket in (FormatBucket.JPEG, FormatBucket.WEBP):
        result = run(source, bucket, width=150)
        decoded = decode(result.body)
        assert (decoded.width, decoded.height) == (150, 100)
        assert near(pixel(decoded, 0.25, 0.25), RED)
        assert near(pixel(decoded, 0.75, 0.25), GREEN)
        assert near(pixel(decoded, 0.25, 0.75), BLUE)
        assert near(pixel(decoded, 0.75, 0.75), WHITE)


def test_orientation_is_applied_when_nothing_is_resized() -> None:
    """A format change alone still turns the image upright."""
    decoded = decode(run(images.jpeg_rotated_with_gps(300, 200), FormatBucket.PNG).body)
    assert (decoded.width, decoded.height) == (300, 200)
    assert near(pixel(decoded, 0.25, 0.25), RED)


def test_gps_and_every_other_metadata_are_stripped() -> None:
    """The JPEG out has no APP1 (EXIF/XMP) nor APP2 (ICC) segment: GPS cannot leak."""
    source = images.jpeg_rotated_with_gps(300, 200)
    assert 0xE1 in images.jpeg_segments(source)  # the witness: the source does carry EXIF
    body = run(source, FormatBucket.JPEG, width=150).body
    segments = images.jpeg_segments(body)
    assert 0xE1 not in segments and 0xE2 not in segments and 0xED not in segments
    assert len(decode(body).getexif()) == 0
    webp = run(source, FormatBucket.WEBP, width=150).body
    assert b"EXIF" not in webp and b"XMP " not in webp and b"ICCP" not in webp


def test_an_icc_profile_is_applied_then_dropped() -> None:
    """A Display P3 JPEG: pixels converted to sRGB (more saturated red), no profile in the output."""
    import pyvips

    black = pyvips.Image.black(64, 64, bands=3)
    red = black.linear([1.0, 1.0, 1.0], [200.0, 30.0, 30.0]).cast("uchar").copy(interpretation="srgb")
    p3 = red.icc_transform("p3", input_profile="srgb", embedded=False)  # same colour, P3 numbers
    source = bytes(p3.jpegsave_buffer(Q=95, profile="p3"))
    assert 0xE2 in images.jpeg_segments(source)
    body = run(source, FormatBucket.JPEG, width=32).body
    assert 0xE2 not in images.jpeg_segments(body)
    assert near(pixel(decode(body), 0.5, 0.5), (200, 30, 30), 12)


def test_alpha_is_flattened_onto_bg_for_jpeg() -> None:
    """A PNG whose right half is transparent, into JPEG with a black bg: that half is black."""
    result = run(images.png_with_alpha(200, 100), FormatBucket.JPEG, width=100, background=Color(0, 0, 0))
    decoded = decode(result.body)
    assert decoded.mode == "RGB"
    assert near(pixel(decoded, 0.75, 0.25), (0, 0, 0), 10)
    assert near(pixel(decoded, 0.25, 0.25), RED)


# --- formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "magic"),
    [
        (FormatBucket.JPEG, "jpeg"),
        (FormatBucket.PNG, "png"),
        (FormatBucket.WEBP, "webp"),
        (FormatBucket.AVIF, "avif"),
    ],
)
def test_output_format_by_magic_bytes(bucket: FormatBucket, magic: str) -> None:
    """Each explicit format is what the bytes are and what the result says."""
    result = run(images.jpeg(120, 80), bucket, width=60)
    assert images.sniff(result.body) == magic == result.format.value
    assert result.content_type == f"image/{magic}"


@pytest.mark.parametrize(
    ("make", "bucket", "expected"),
    [
        pytest.param(lambda: images.jpeg(40, 30), FormatBucket.SOURCE, "jpeg", id="jpeg-source"),
        pytest.param(lambda: images.png_with_alpha(40, 30), FormatBucket.SOURCE, "png", id="alpha-source"),
        pytest.param(
            lambda: images.encode(images.quadrants(40, 30), "WEBP"),
            FormatBucket.SOURCE,
            "jpeg",
            id="webp-source",
        ),
        pytest.param(
            lambda: images.encode(images.quadrants(40, 30), "WEBP"),
            FormatBucket.ORIGINAL,
            "webp",
            id="webp-original",
        ),
        pytest.param(lambda: images.animated_gif(40, 30, 2), FormatBucket.SOURCE, "gif", id="gif-source"),
    ],
)
def test_source_and_original_buckets(make: object, bucket: FormatBucket, expected: str) -> None:
    """SOURCE is the safe family (never WebP/AVIF), ORIGINAL the source's own format."""
    assert callable(make)
    result = run(make(), bucket, width=20)
    assert images.sniff(result.body) == expected


def test_large_jpegs_are_progressive_small_ones_baseline() -> None:
    """Above PROGRESSIVE_MIN_PIXELS the JPEG is progressive (SOF2), below baseline (SOF0)."""
    source = images.jpeg(1200, 800)
    small = images.jpeg_segments(run(source, FormatBucket.JPEG, width=200).body)
    large = images.jpeg_segments(run(source, FormatBucket.JPEG, width=800).body)
    assert 0xC0 in small and 0xC2 not in small
    assert 0xC2 in large


def test_passthrough_when_only_the_format_is_asked_and_it_matches() -> None:
    """fm=auto that resolves to the source's own format needs no transform; anything more does."""
    info = engine.probe(images.jpeg(40, 30), LIMITS)
    auto = TransformOptions(format=RequestedFormat.AUTO)
    assert engine.passthrough(auto, FormatBucket.SOURCE, info)
    assert not engine.passthrough(auto, FormatBucket.WEBP, info)
    assert not engine.passthrough(
        TransformOptions(width=10, format=RequestedFormat.AUTO), FormatBucket.SOURCE, info
    )


# --- animation ---------------------------------------------------------------------------------------


def test_animated_gif_keeps_its_frames_in_webp() -> None:
    """Three frames in, three frames out, each resized."""
    result = run(images.animated_gif(80, 60, 3), FormatBucket.WEBP, width=40)
    assert images.sniff(result.body) == "webp"
    assert images.frame_count(result.body) == 3 == result.frames
    assert size(result) == (40, 30)


def test_animated_gif_keeps_its_frames_in_gif_and_its_timing() -> None:
    """GIF to GIF keeps the frames and their 100 ms delays."""
    from PIL import Image

    result = run(images.animated_gif(80, 60, 3), FormatBucket.SOURCE, width=40)
    assert images.frame_count(result.body) == 3
    decoded = Image.open(__import__("io").BytesIO(result.body))
    assert decoded.info.get("duration") == 100


def test_animated_gif_gives_its_first_frame_in_jpeg() -> None:
    """JPEG holds one frame: the first (red) one."""
    result = run(images.animated_gif(80, 60, 3), FormatBucket.JPEG, width=40)
    assert result.frames == 1 and images.frame_count(result.body) == 1
    assert near(pixel(decode(result.body), 0.5, 0.5), RED)


def test_max_frames_caps_an_animation() -> None:
    """At most `max_frames` frames are kept."""
    result = run(images.animated_gif(40, 30, 6), FormatBucket.WEBP, Limits(max_frames=4), width=20)
    assert images.frame_count(result.body) == 4


def test_a_multi_page_tiff_gives_its_first_page_even_in_webp() -> None:
    """TIFF pages are documents (of any sizes), not frames: the first page is used."""
    from PIL import Image

    pages = [Image.new("RGB", (40, 30), RED), Image.new("RGB", (64, 64), BLUE)]
    source = images.encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    result = run(source, FormatBucket.WEBP, width=20)
    assert (result.frames, images.frame_count(result.body), size(result)) == (1, 1, (20, 15))
    assert near(pixel(decode(result.body), 0.5, 0.5), RED)


def test_animated_cover_crops_every_frame() -> None:
    """`cover` on an animation gives every frame the box."""
    result = run(images.animated_gif(80, 40, 3), FormatBucket.WEBP, width=30, height=30, fit=Fit.COVER)
    assert (result.width, result.height, images.frame_count(result.body)) == (30, 30, 3)


# --- sources, damage and limits ------------------------------------------------------------------------


def test_a_file_source_is_read_by_libvips(tmp_path: Path) -> None:
    """A disk-tier file (no suffix) is transformed like bytes."""
    path = tmp_path / "ab" / "0123456789abcdef"
    path.parent.mkdir()
    path.write_bytes(images.jpeg(400, 300))
    assert size(run(path, FormatBucket.WEBP, width=100)) == (100, 75)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is plain text, not an image\n" * 20, id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"1 2 3\n4 5 6\n", id="matrix-looking-text"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, id="png-signature-only"),
        pytest.param(b"<html><body>an HTML page</body></html>", id="html"),
    ],
)
def test_what_is_not_an_image_is_refused(body: bytes) -> None:
    """Anything but an image we read is NotAnImage (422), never another exception."""
    with pytest.raises(NotAnImage):
        run(body, FormatBucket.JPEG, width=10)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_jpeg_is_refused(keep: float) -> None:
    """A JPEG cut short is NotAnImage (422), not a half-grey picture; libvips' words are its detail
    (for the log), its reason our own."""
    source = images.jpeg(400, 300)
    with pytest.raises(NotAnImage) as excinfo:
        run(source[: int(len(source) * keep)], FormatBucket.JPEG, width=100)
    assert excinfo.value.reason == CANNOT_DECODE
    assert excinfo.value.detail and excinfo.value.detail not in CANNOT_DECODE


def test_a_damaged_jpeg_is_refused() -> None:
    """Garbage in the entropy-coded data is NotAnImage (422)."""
    source = bytearray(images.jpeg(400, 300))
    for offset in range(len(source) // 2, len(source) - 10, 97):
        source[offset] = 0xFF if source[offset] != 0xFF else 0x00
    with pytest.raises(NotAnImage):
        run(bytes(source), FormatBucket.JPEG, width=100)


def test_more_bytes_than_max_src_bytes_is_refused() -> None:
    """A source over `max_src_bytes` is SourceTooLarge (422) before it is parsed."""
    source = images.jpeg(100, 100)
    with pytest.raises(SourceTooLarge, match="max_src_bytes"):
        run(source, FormatBucket.JPEG, Limits(max_src_bytes=len(source) - 1), width=10)


def test_more_pixels_than_max_src_pixels_is_refused() -> None:
    """A source whose header announces more than `max_src_pixels` is SourceTooLarge (422)."""
    with pytest.raises(SourceTooLarge, match="max_src_pixels"):
        run(images.jpeg(100, 100), FormatBucket.JPEG, Limits(max_src_pixels=9_999), width=10)


def test_a_decompression_bomb_is_refused_from_its_header_with_flat_rss() -> None:
    """A 30000x30000 PNG of about 100 KiB is refused without allocating its 900 MP."""
    bomb = images.png_bomb(30_000)
    assert len(bomb) < 200_000
    reset_peak_rss()
    before = peak_rss_bytes(os.getpid())
    started = time.perf_counter()
    with pytest.raises(SourceTooLarge, match="max_src_pixels") as excinfo:
        run(bomb, FormatBucket.JPEG, width=100)
    assert excinfo.value.detail == "30000x30000 pixels"  # for the log, not in the reason
    elapsed = time.perf_counter() - started
    grown = peak_rss_bytes(os.getpid()) - before
    assert grown < 16 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.1f} MiB"
    print(f"bomb refused in {elapsed * 1000:.1f} ms, peak RSS +{grown / 2**20:.2f} MiB")


def test_an_output_beyond_the_maximum_is_refused_naming_the_side() -> None:
    """An enlarged extreme aspect whose derived side passes `max_width` is a 400 naming the given side."""
    with pytest.raises(BadTransformParameter) as excinfo:
        run(images.jpeg(400, 10), FormatBucket.JPEG, Limits(max_width=1000), height=100, enlarge=True)
    assert excinfo.value.parameter == "h"
    reason = excinfo.value.reason
    assert reason == "the output would be larger than transform.max_width x max_height (1000x8192)"


def test_a_set_cancel_event_stops_the_job() -> None:
    """A job whose cancel event is set is abandoned with Cancelled, not finished."""
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(engine.Cancelled):
        engine.transform(
            images.jpeg(400, 300), TransformOptions(width=100), FormatBucket.JPEG, LIMITS, cancel
        )


def test_probe_reads_the_header_facts() -> None:
    """probe() gives format, upright size, frames and alpha without decoding."""
    rotated = engine.probe(images.jpeg_rotated_with_gps(300, 200), LIMITS)
    assert (rotated.format, rotated.width, rotated.height, rotated.orientation) == (
        ImageFormat.JPEG,
        300,
        200,
        6,
    )
    animated = engine.probe(images.animated_gif(20, 10, 5), LIMITS)
    assert (animated.format, animated.frames) == (ImageFormat.GIF, 5)
    assert engine.probe(images.png_with_alpha(20, 10), LIMITS).has_alpha
