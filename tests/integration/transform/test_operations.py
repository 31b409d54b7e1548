"""The engine's geometry and filter operations on real libvips and images the tests make: `rect`,
`rot`, `flip`, `pos=fp:X,Y`, `blur`, `sharp`, alone, combined and with EXIF orientations.

References are made by Pillow (an independent implementation) from the upright source: crop, turn,
mirror, resize; outputs are compared by mean absolute difference, or by pixels at known places.
"""

from __future__ import annotations

import dataclasses
import io
import itertools

import pytest
from PIL import Image

from imgproxy.core.errors import BadTransformParameter
from imgproxy.transform import engine
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import RequestedFormat, build_options
from imgproxy.transform.result import Limits, TransformResult
from tests.support import images
from tests.support.images import BLUE, GREEN, RED, WHITE, decode, mean_difference, near, pixel

LIMITS = Limits()
# Pillow's Lanczos and libvips' differ a little, and a JPEG source is lossy: an offset of a few
# pixels, a wrong turn or a crop of the wrong box gives a mean difference many times this.
CLOSE = 4.0


def run(source: bytes, query: str, bucket: FormatBucket = FormatBucket.PNG) -> TransformResult:
    """`source` transformed by the options `query` parses to (as a request's would)."""
    values = dict(piece.split("=", 1) for piece in query.split("&"))
    return engine.transform(source, build_options(values, 8192, 8192), bucket, LIMITS)


def upright_reference(
    upright: Image.Image,
    box: tuple[int, int, int, int] | None = None,
    rot: int = 0,
    flip: str = "",
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """What the operations mean, done by Pillow: crop (x, y, w, h), turn clockwise, mirror, resize."""
    image = upright
    if box is not None:
        x, y, w, h = box
        image = image.crop((x, y, x + w, y + h))
    turns = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    if rot:
        image = image.transpose(turns[rot])
    if "h" in flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if "v" in flip:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


# --- rect ------------------------------------------------------------------------------------------


def test_rect_then_w_is_the_box_cropped_then_resized() -> None:
    """`rect=100,50,400,300&w=200`: 200x150, the pixels of Pillow's crop of that box resized."""
    upright = images.photo_like(800, 600)
    result = run(images.encode(upright, "JPEG", quality=95), "rect=100,50,400,300&w=200")
    assert (result.width, result.height) == (200, 150)
    expected = upright_reference(upright, (100, 50, 400, 300), size=(200, 150))
    assert mean_difference(decode(result.body), expected) < CLOSE


def test_rect_alone_gives_exactly_the_box() -> None:
    """From a PNG (lossless), `rect` alone is the box's pixels, unchanged."""
    upright = images.photo_like(300, 200)
    result = run(images.encode(upright, "PNG"), "rect=10,20,30,40")
    assert (result.width, result.height) == (30, 40)
    assert mean_difference(decode(result.body), upright.crop((10, 20, 40, 60))) == 0


def test_rect_with_cover_crops_within_the_box() -> None:
    """`fit=cover` applies to the rect: the box's own centre is kept, not the source's."""
    upright = images.quadrants(400, 400)
    # The red quadrant's right half, 100x200, covered into 100x100: all red.
    result = run(images.encode(upright, "PNG"), "rect=100,0,100,200&w=50&h=50&fit=cover")
    assert (result.width, result.height) == (50, 50)
    decoded = decode(result.body)
    assert near(pixel(decoded, 0.1, 0.1), RED) and near(pixel(decoded, 0.9, 0.9), RED)


@pytest.mark.parametrize(
    ("source", "query"),
    [
        pytest.param(images.jpeg(300, 200), "rect=0,0,301,200", id="too-wide"),
        pytest.param(images.jpeg(300, 200), "rect=250,0,60,10", id="past-the-right-edge"),
        pytest.param(images.jpeg(300, 200), "rect=0,150,10,51", id="past-the-bottom"),
        pytest.param(images.jpeg(300, 200), "rect=400,400,1,1", id="outside"),
        # Stored 200x300 with orientation 6: upright it is 300x200, and rect is upright.
        pytest.param(images.jpeg_rotated_with_gps(300, 200), "rect=0,0,200,300", id="stored-not-upright"),
        pytest.param(images.animated_gif(80, 60, 3), "rect=0,0,81,60", id="animation"),
    ],
)
def test_a_rect_beyond_the_source_is_a_bad_rect(source: bytes, query: str) -> None:
    """A box that does not lie within the upright source is BadTransformParameter naming rect (400)."""
    with pytest.raises(BadTransformParameter) as excinfo:
        run(source, query, FormatBucket.WEBP)
    assert excinfo.value.parameter == "rect"
    assert "must lie within the source" in excinfo.value.reason


@pytest.fixture(scope="module")
def large_photo() -> Image.Image:
    """12 MP with a grid of 8-pixel lines every 32 pixels: detail that a too coarse decode loses."""
    from PIL import ImageDraw

    upright = images.photo_like(4000, 3000)
    draw = ImageDraw.Draw(upright)
    for offset in range(0, 4000, 32):
        draw.rectangle((offset, 0, offset + 7, 2999), fill=(0, 0, 0))
        draw.rectangle((0, offset, 3999, offset + 7), fill=WHITE)
    return upright


@pytest.mark.parametrize(
    ("box", "size"),
    [
        # 800x600 to 400 wide: 1/2 keeps 400x300, where the whole source to 400 wide would be decoded
        # at 1/8 (MAD 24.5 against Pillow; 1/4: 16.5).
        ((1000, 800, 800, 600), (400, 300)),
        # a sliver to 1000 wide: 1/2; at 1/8 it would be 3 pixels high (MAD 11.1; 1/4: 9.9).
        ((8, 1000, 3000, 24), (1000, 8)),
    ],
)
def test_rect_of_a_large_jpeg_keeps_its_detail_under_shrink_on_load(
    large_photo: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    """A 12 MP JPEG, where shrink-on-load applies: the rect is decoded at a scale that still covers
    the output, so the pixels match Pillow's full-resolution crop and resize."""
    rect = ",".join(str(side) for side in box)
    result = run(images.encode(large_photo, "JPEG", quality=95), f"rect={rect}&w={size[0]}")
    assert (result.width, result.height) == size
    expected = upright_reference(large_photo, box, size=size)
    assert mean_difference(decode(result.body), expected) < CLOSE


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_rect_of_a_large_turned_jpeg_is_cut_in_stored_pixels_under_shrink_on_load(
    large_photo: Image.Image, orientation: int
) -> None:
    """A 12 MP JPEG stored turned (EXIF 3, 6, 8) with rect and rot: the upright box, mapped into
    stored pixels and scaled by the 1/2 decode, is Pillow's crop and turn of the upright photo."""
    source = images.jpeg_oriented(large_photo, orientation, quality=95)
    result = run(source, "rect=1000,800,800,600&rot=90&w=300")
    assert (result.width, result.height) == (300, 400)
    expected = upright_reference(large_photo, (1000, 800, 800, 600), 90, size=(300, 400))
    assert mean_difference(decode(result.body), expected) < CLOSE


@pytest.mark.parametrize("fmt", ["WEBP", "PNG", "GIF"])
def test_rect_of_other_formats(fmt: str) -> None:
    """WebP (decoded whole with rect), PNG and GIF sources give the box, resized."""
    upright = images.photo_like(600, 400)
    options = {"lossless": True} if fmt == "WEBP" else {}
    result = run(images.encode(upright, fmt, **options), "rect=60,40,300,200&w=150")
    assert (result.width, result.height) == (150, 100)
    expected = upright_reference(upright, (60, 40, 300, 200), size=(150, 100))
    # a GIF has 256 colours: its dithering differs from the reference more than a resize does
    assert mean_difference(decode(result.body), expected) < (12 if fmt == "GIF" else CLOSE)


# --- rot and flip ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "size", "corners"),
    [
        # corners: top-left, top-right, bottom-left, bottom-right of the output
        ("rot=90", (200, 300), (BLUE, RED, WHITE, GREEN)),
        ("rot=180", (300, 200), (WHITE, BLUE, GREEN, RED)),
        ("rot=270", (200, 300), (GREEN, WHITE, RED, BLUE)),
        ("flip=h", (300, 200), (GREEN, RED, WHITE, BLUE)),
        ("flip=v", (300, 200), (BLUE, WHITE, RED, GREEN)),
        ("flip=hv", (300, 200), (WHITE, BLUE, GREEN, RED)),
        ("rot=90&flip=h", (200, 300), (RED, BLUE, GREEN, WHITE)),
        ("rot=90&flip=v", (200, 300), (WHITE, GREEN, BLUE, RED)),
        ("rot=90&w=100", (100, 150), (BLUE, RED, WHITE, GREEN)),
    ],
)
def test_rot_and_flip_turn_and_mirror_a_wide_image(
    query: str, size: tuple[int, int], corners: tuple[tuple[int, int, int], ...]
) -> None:
    """A 300x200 quadrant image: a quarter turn swaps the sides, and each coloured corner lands
    where a clockwise turn, then the mirror, puts it."""
    result = run(images.jpeg(300, 200), query)
    assert (result.width, result.height) == size
    decoded = decode(result.body)
    found = [pixel(decoded, fx, fy) for fx, fy in ((0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9))]
    assert all(near(got, want) for got, want in zip(found, corners, strict=True)), found


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("query", "box", "rot", "size"),
    [
        ("w=120", None, 0, (120, 80)),
        ("rot=90&w=80", None, 90, (80, 120)),
        ("rot=270&h=60", None, 270, (40, 60)),
        ("rect=30,20,150,90&rot=90&w=45", (30, 20, 150, 90), 90, (45, 75)),
        ("rect=0,100,240,60&rot=180&flip=h&w=120", (0, 100, 240, 60), 180, (120, 30)),
    ],
)
def test_exif_orientations_combine_with_rect_and_rot(
    orientation: int, query: str, box: tuple[int, int, int, int] | None, rot: int, size: tuple[int, int]
) -> None:
    """Whatever EXIF orientation a photo is stored with, rect is in its upright pixels and rot turns
    the upright image: the output is Pillow's crop, turn and resize of the upright photo."""
    upright = images.photo_like(240, 160)
    source = images.jpeg_oriented(upright, orientation, quality=95)
    result = run(source, query)
    assert (result.width, result.height) == size
    flip = "h" if "flip=h" in query else ""
    expected = upright_reference(upright, box, rot, flip, size)
    assert mean_difference(decode(result.body), expected) < CLOSE


def test_an_animation_is_cut_turned_and_mirrored_frame_by_frame() -> None:
    """A 3-frame GIF with rect and rot: every frame is the turned box, the frames are kept."""
    result = run(images.animated_gif(80, 60, 3), "rect=0,0,40,20&rot=90", FormatBucket.WEBP)
    assert (result.width, result.height, result.frames) == (20, 40, 3)
    assert images.frame_count(result.body) == 3


def test_operations_are_never_passed_through() -> None:
    """`rot=90&fm=auto` choosing the source's own format is still a transform, not the original."""
    info = engine.probe(images.jpeg(40, 30), LIMITS)
    for query in ("rot=90", "flip=h", "rect=0,0,1,1", "blur=1", "sharp=1"):
        options = build_options(dict([query.split("=")]), 8192, 8192)
        auto = dataclasses.replace(options, format=RequestedFormat.AUTO)
        assert not engine.passthrough(auto, FormatBucket.SOURCE, info), query


# --- focal point -------------------------------------------------------------------------------------


def red_pixels(image: Image.Image) -> int:
    """How many pixels are clearly red."""
    data = image.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3) if data[i] > 160 and data[i + 1] < 90 and data[i + 2] < 90)


@pytest.mark.parametrize(
    ("left", "top", "box"),
    [
        pytest.param(8, 188, "w=50&h=100", id="near-the-left-edge"),
        pytest.param(368, 188, "w=50&h=100", id="near-the-right-edge"),
        pytest.param(188, 8, "w=100&h=50", id="near-the-top-edge"),
        pytest.param(188, 368, "w=100&h=50", id="near-the-bottom-edge"),
        pytest.param(300, 60, "w=50&h=100", id="off-centre-not-at-an-edge"),
    ],
)
def test_a_focal_point_keeps_its_square_in_a_cover_crop(left: int, top: int, box: str) -> None:
    """A 400x400 grey image with one 24-pixel red square: cover into half the width (or height)
    with `pos=fp:` at the square keeps all of the square; the centre crop (the witness) loses it."""
    source = images.encode(images.square_on_grey(400, 400, left, top, 24), "PNG")
    fx, fy = (left + 12) / 400, (top + 12) / 400
    focal = run(source, f"{box}&fit=cover&pos=fp:{fx:.3f},{fy:.3f}")
    centre = run(source, f"{box}&fit=cover")
    # The square is 6x6 at the 1/4 scale: about 36 pixels, all of them kept.
    assert red_pixels(decode(focal.body)) >= 25
    assert red_pixels(decode(centre.body)) == 0


def test_a_focal_point_at_the_centre_is_the_centre_crop() -> None:
    """`pos=fp:0.5,0.5` crops exactly as the default centre does."""
    source = images.jpeg(400, 200)
    focal = run(source, "w=100&h=100&fit=cover&pos=fp:0.5,0.5")
    assert focal.body == run(source, "w=100&h=100&fit=cover").body


# --- blur and sharpen -----------------------------------------------------------------------------


def edge(width: int = 100, height: int = 20) -> Image.Image:
    """Black left half, white right half: one sharp vertical edge."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste(WHITE, (width // 2, 0, width, height))
    return image


def row(image: Image.Image) -> list[int]:
    """The red channel along the middle row."""
    y = image.height // 2
    return [int(image.convert("RGB").getpixel((x, y))[0]) for x in range(image.width)]  # type: ignore[index]


def test_blur_makes_a_sharp_edge_soft() -> None:
    """`blur=5`: the black-to-white step becomes a ramp over a dozen pixels wide; without it, one step."""
    source = images.encode(edge(), "PNG")
    plain = row(decode(run(source, "fm=png").body))
    blurred = row(decode(run(source, "blur=5&fm=png").body))
    assert sum(1 for value in plain if 10 < value < 245) == 0
    ramp = sum(1 for value in blurred if 10 < value < 245)
    assert ramp >= 12, blurred
    assert blurred[0] < 10 and blurred[-1] > 245  # far from the edge, unchanged


def test_blur_applies_to_the_output_after_the_resize() -> None:
    """The sigma is in output pixels: the same blur on a 4x smaller output spans the same pixels."""
    source = images.encode(edge(400, 80), "PNG")
    blurred = row(decode(run(source, "w=100&blur=5").body))
    assert 12 <= sum(1 for value in blurred if 10 < value < 245) <= 20


def test_sharpen_steepens_a_soft_edge() -> None:
    """`sharp=2` on a soft grey edge (64 to 192): darker and lighter bands appear beside it (the
    overshoot of unsharp masking) and its steepest step grows; far from it nothing changes."""
    from PIL import ImageFilter

    step = Image.new("RGB", (100, 20), (64, 64, 64))
    step.paste((192, 192, 192), (50, 0, 100, 20))
    source = images.encode(step.filter(ImageFilter.GaussianBlur(2)), "PNG")
    before = row(decode(run(source, "fm=png").body))
    after = row(decode(run(source, "sharp=2").body))

    def steepest(values: list[int]) -> int:
        return max(abs(b - a) for a, b in itertools.pairwise(values))

    assert (min(before), max(before)) == (64, 192)
    assert min(after) < 62 and max(after) > 194, after
    assert steepest(after) > steepest(before)
    assert after[:20] == before[:20] and after[-20:] == before[-20:]


def test_blur_keeps_transparent_colour_from_bleeding() -> None:
    """On a PNG with alpha, blurred pixels at the edge of the opaque part keep its colour."""
    image = Image.new("RGBA", (60, 20), (0, 0, 255, 0))  # transparent blue
    image.paste((255, 0, 0, 255), (0, 0, 30, 20))  # opaque red left half
    result = decode(run(images.encode(image, "PNG"), "blur=3").body)
    r, _, b, a = result.getpixel((31, 10))  # type: ignore[misc]
    assert 0 < a < 255 and b < 20 and r > 200


def test_pillow_reads_what_the_operations_write() -> None:
    """The operations' output is a well-formed image in the format asked for (a JPEG here)."""
    result = run(images.jpeg(300, 200), "rect=0,0,100,100&rot=270&flip=h&blur=1&sharp=1", FormatBucket.JPEG)
    decoded = Image.open(io.BytesIO(result.body))
    assert (decoded.format, decoded.size) == ("JPEG", (100, 100))
