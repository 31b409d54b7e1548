"""Unit tests for `imgproxy.transform.geometry`: the plan of every fit, and the JPEG shrink-on-load."""

from __future__ import annotations

import pytest

from imgproxy.transform.geometry import Finish, Plan, jpeg_shrink, plan
from imgproxy.transform.params import Fit, TransformOptions


@pytest.mark.parametrize(
    ("fit", "expected"),
    [
        (Fit.INSIDE, Plan(267, 200, 267, 200, Finish.NONE)),
        (Fit.COVER, Plan(300, 225, 300, 200, Finish.CROP)),
        (Fit.CONTAIN, Plan(267, 200, 300, 200, Finish.EMBED)),
        (Fit.FILL, Plan(300, 200, 300, 200, Finish.NONE)),
        (Fit.OUTSIDE, Plan(300, 225, 300, 225, Finish.NONE)),
    ],
)
def test_a_4_by_3_source_into_a_3_by_2_box(fit: Fit, expected: Plan) -> None:
    """4000x3000 into 300x200: each fit's resized and final sizes."""
    assert plan(4000, 3000, TransformOptions(300, 200, fit)) == expected


@pytest.mark.parametrize(
    ("fit", "enlarge", "expected"),
    [
        (Fit.INSIDE, False, Plan(200, 100, 200, 100, Finish.NONE)),
        (Fit.INSIDE, True, Plan(300, 150, 300, 150, Finish.NONE)),
        (Fit.COVER, False, Plan(200, 100, 200, 100, Finish.NONE)),
        (Fit.COVER, True, Plan(400, 200, 300, 200, Finish.CROP)),
        (Fit.CONTAIN, False, Plan(200, 100, 300, 200, Finish.EMBED)),
        (Fit.FILL, False, Plan(200, 100, 200, 100, Finish.NONE)),
        (Fit.FILL, True, Plan(300, 200, 300, 200, Finish.NONE)),
        (Fit.OUTSIDE, True, Plan(400, 200, 400, 200, Finish.NONE)),
    ],
)
def test_a_small_source_grows_only_with_enlarge(fit: Fit, enlarge: bool, expected: Plan) -> None:
    """200x100 into 300x200: no factor above 1 without `enlarge`."""
    assert plan(200, 100, TransformOptions(300, 200, fit, enlarge=enlarge)) == expected


def test_fill_clamps_each_side_on_its_own() -> None:
    """Without enlarge, fill shrinks the side that is too large and keeps the other."""
    assert plan(200, 100, TransformOptions(100, 200, Fit.FILL)) == Plan(100, 100, 100, 100, Finish.NONE)


def test_one_side_and_no_side() -> None:
    """One side scales to it; none keeps the size."""
    assert plan(4000, 3000, TransformOptions(width=300)) == Plan(300, 225, 300, 225, Finish.NONE)
    assert plan(4000, 3000, TransformOptions(height=200)) == Plan(267, 200, 267, 200, Finish.NONE)
    assert plan(4000, 3000, TransformOptions()) == Plan(4000, 3000, 4000, 3000, Finish.NONE)


def test_the_deciding_side_is_exact_and_no_side_is_zero() -> None:
    """The side that set the scale hits its target exactly; a sliver never rounds to 0 pixels."""
    assert plan(3, 1000, TransformOptions(width=1000, height=1000, enlarge=True)).resized_height == 1000
    assert plan(10_000, 3, TransformOptions(width=100)) == Plan(100, 1, 100, 1, Finish.NONE)


@pytest.mark.parametrize(
    ("source", "resized", "shrink"),
    [
        ((4000, 3000), (267, 200), 8),
        ((4000, 3000), (500, 375), 8),
        ((4000, 3000), (501, 376), 4),
        ((1920, 1280), (800, 533), 2),
        ((1920, 1280), (961, 641), 1),
        ((4001, 3001), (501, 376), 8),  # libjpeg's scaled size is the ceiling: 501x376
        ((100, 100), (100, 100), 1),
    ],
)
def test_jpeg_shrink_is_the_largest_scale_that_keeps_the_resized_size(
    source: tuple[int, int], resized: tuple[int, int], shrink: int
) -> None:
    """Like Pillow's draft(): decode at 1/8, 1/4 or 1/2 while that still covers the resized size."""
    assert jpeg_shrink(*source, *resized) == shrink
