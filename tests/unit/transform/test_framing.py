"""Unit tests for `imgproxy.transform.framing`: the rect in stored pixels for every EXIF orientation
(checked against Pillow's own transposes), the rect's bounds, shrink-on-load for a rect, and the
focal point's crop offset."""

from __future__ import annotations

import pytest
from PIL import Image

from imgproxy.core.errors import BadTransformParameter
from imgproxy.transform.framing import Size, focal_offset, rect_shrink, region, shrunk_rect, stored_rect
from imgproxy.transform.values import Rect

# What a viewer applies to a stored image with each EXIF orientation to show it upright.
UPRIGHT = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def numbered(width: int, height: int) -> Image.Image:
    """Every pixel a distinct value (its index), so any crop is identified by its pixels."""
    image = Image.new("I", (width, height))
    image.putdata(list(range(width * height)))
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("rect", [Rect(0, 0, 7, 5), Rect(3, 1, 4, 6), Rect(10, 2, 2, 3), Rect(0, 0, 12, 8)])
def test_stored_rect_is_the_same_pixels_for_every_orientation(orientation: int, rect: Rect) -> None:
    """Cutting the stored rect, then turning it upright, gives the upright image's rect exactly."""
    stored = numbered(12, 8) if orientation < 5 else numbered(8, 12)
    transpose = UPRIGHT[orientation]
    upright = stored if transpose is None else stored.transpose(transpose)
    assert upright.size == (12, 8)
    box = stored_rect(rect, orientation, 12, 8)
    cut = stored.crop((box.x, box.y, box.x + box.width, box.y + box.height))
    cut_upright = cut if transpose is None else cut.transpose(transpose)
    expected = upright.crop((rect.x, rect.y, rect.x + rect.width, rect.y + rect.height))
    assert cut_upright.tobytes() == expected.tobytes()


def test_region_is_the_rect_or_the_whole_source() -> None:
    """No rect: the whole upright source; a rect that fits, itself, up to the last pixel."""
    assert region(None, 300, 200) == Rect(0, 0, 300, 200)
    assert region(Rect(299, 199, 1, 1), 300, 200) == Rect(299, 199, 1, 1)
    assert region(Rect(0, 0, 300, 200), 300, 200) == Rect(0, 0, 300, 200)


@pytest.mark.parametrize(
    "rect", [Rect(0, 0, 301, 1), Rect(0, 0, 1, 201), Rect(300, 0, 1, 1), Rect(5, 199, 1, 2)]
)
def test_region_refuses_a_rect_beyond_the_source_naming_rect(rect: Rect) -> None:
    """Any edge past the source is a 400 naming rect (the source's size is ours to say)."""
    with pytest.raises(BadTransformParameter) as excinfo:
        region(rect, 300, 200)
    assert excinfo.value.parameter == "rect"
    assert excinfo.value.reason == "must lie within the source (300x200 upright pixels)"


@pytest.mark.parametrize(
    ("rect", "needed", "shrink"),
    [
        (Rect(0, 0, 800, 600), Size(400, 300), 2),
        (Rect(0, 0, 800, 600), Size(100, 75), 8),
        (Rect(0, 0, 800, 600), Size(101, 75), 4),
        (Rect(0, 0, 799, 600), Size(100, 75), 4),  # 799 // 8 is 99: floors, not libjpeg's ceilings
        (Rect(0, 0, 3000, 16), Size(1000, 5), 2),
        (Rect(0, 0, 10, 10), Size(10, 10), 1),
    ],
)
def test_rect_shrink_keeps_the_rect_at_least_the_needed_size(rect: Rect, needed: Size, shrink: int) -> None:
    """The largest 1/2, 1/4, 1/8 at which the rect's whole pixels still cover the resize."""
    assert rect_shrink(rect, needed) == shrink


def test_shrunk_rect_scales_and_stays_inside() -> None:
    """The rect's coordinates divided by the shrink, kept within the decoded image."""
    assert shrunk_rect(Rect(1000, 800, 800, 600), 2, Size(2000, 1500)) == Rect(500, 400, 400, 300)
    assert shrunk_rect(Rect(3992, 2992, 8, 8), 8, Size(500, 375)) == Rect(499, 374, 1, 1)
    assert shrunk_rect(Rect(3, 3, 2, 2), 4, Size(10, 10)) == Rect(1, 1, 1, 1)


@pytest.mark.parametrize(
    ("size", "box", "fraction", "offset"),
    [
        (400, 100, 0.5, 150),
        (400, 100, 0.0, 0),
        (400, 100, 0.05, 0),
        (400, 100, 1.0, 300),
        (400, 100, 0.9, 300),
        (400, 100, 0.3, 70),
        (100, 100, 0.9, 0),
    ],
)
def test_focal_offset_centres_the_point_as_far_as_the_side_allows(
    size: int, box: int, fraction: float, offset: int
) -> None:
    """The crop starts where the point is at its middle, clamped to the side."""
    assert focal_offset(size, box, fraction) == offset


def test_a_quarter_turn_swaps_the_sides() -> None:
    """90 and 270 swap width and height; 0 and 180 keep them."""
    assert Size(3, 2).turned(90) == Size(2, 3) == Size(3, 2).turned(270)
    assert Size(3, 2).turned(180) == Size(3, 2) == Size(3, 2).turned(0)
