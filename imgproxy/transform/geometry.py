"""Pixel arithmetic of a transform: from the source's upright size and the options to a `Plan`.

Pure (no pyvips), so every `fit` can be checked by table. sharp's meanings, with `w` x `h` the box:
- `inside`: as large as possible within the box, aspect kept;
- `outside`: as small as possible covering the box, aspect kept, nothing cropped;
- `cover`: scaled as `outside`, then cropped to the box (by `pos`);
- `contain`: scaled as `inside`, then centred on a `w` x `h` canvas of `bg` (letterbox);
- `fill`: each side scaled to the box, aspect ignored.
With one side given every fit scales to it (params normalises that to `inside`). Without
`enlarge`, no scale factor goes above 1: a small source keeps its size (`cover` then crops to
what it has, `contain` still letterboxes onto the whole box).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from imgproxy.transform.params import Fit, TransformOptions


class Finish(enum.Enum):
    """What happens after the resize."""

    NONE = "none"
    CROP = "crop"  # cut `out_width` x `out_height` out of the resized image (by `pos`)
    EMBED = "embed"  # centre the resized image on an `out_width` x `out_height` canvas


@dataclass(frozen=True, slots=True)
class Plan:
    """The resized size (before any crop or letterbox) and the final output size, in pixels."""

    resized_width: int
    resized_height: int
    out_width: int
    out_height: int
    finish: Finish


def _side(source: int, scale: float) -> int:
    return max(1, round(source * scale))


def plan(width: int, height: int, options: TransformOptions) -> Plan:
    """The plan for an upright source of `width` x `height` pixels."""
    box_w, box_h = options.width, options.height
    if box_w is None and box_h is None:
        return Plan(width, height, width, height, Finish.NONE)

    def clamp(scale: float) -> float:
        return scale if options.enlarge else min(scale, 1.0)

    if box_h is None:
        assert box_w is not None
        rw, rh = _fit_sides(width, height, clamp(box_w / width), box_w, None)
        return Plan(rw, rh, rw, rh, Finish.NONE)
    if box_w is None:
        rw, rh = _fit_sides(width, height, clamp(box_h / height), None, box_h)
        return Plan(rw, rh, rw, rh, Finish.NONE)

    scale_x, scale_y = box_w / width, box_h / height
    fit = options.fit
    if fit is Fit.FILL:
        rw = box_w if clamp(scale_x) == scale_x else width
        rh = box_h if clamp(scale_y) == scale_y else height
        return Plan(rw, rh, rw, rh, Finish.NONE)
    if fit in (Fit.INSIDE, Fit.CONTAIN):
        scale = clamp(min(scale_x, scale_y))
        exact_w, exact_h = (box_w, None) if scale_x <= scale_y else (None, box_h)
    else:  # cover and outside: the larger factor, so that both sides reach the box
        scale = clamp(max(scale_x, scale_y))
        exact_w, exact_h = (box_w, None) if scale_x >= scale_y else (None, box_h)
    rw, rh = _fit_sides(width, height, scale, exact_w, exact_h)
    if fit is Fit.CONTAIN:
        return Plan(rw, rh, box_w, box_h, Finish.EMBED)
    if fit is Fit.COVER:
        out_w, out_h = min(box_w, rw), min(box_h, rh)
        finish = Finish.CROP if (out_w, out_h) != (rw, rh) else Finish.NONE
        return Plan(rw, rh, out_w, out_h, finish)
    return Plan(rw, rh, rw, rh, Finish.NONE)


def _fit_sides(
    width: int, height: int, scale: float, exact_w: int | None, exact_h: int | None
) -> tuple[int, int]:
    """Both sides at `scale`; the side that decided the scale is exactly its target (no rounding drift)."""
    rw = exact_w if exact_w is not None and scale == exact_w / width else _side(width, scale)
    rh = exact_h if exact_h is not None and scale == exact_h / height else _side(height, scale)
    return rw, rh


def jpeg_shrink(width: int, height: int, resized_width: int, resized_height: int) -> int:
    """The largest JPEG shrink-on-load factor (1, 2, 4 or 8) that still decodes at least the
    resized size, as Pillow's `draft()` does. libvips' own `thumbnail` keeps a factor of two in
    reserve; decoding at 1/8 instead of 1/4 is what made Pillow faster on large JPEGs here."""
    for shrink in (8, 4, 2):
        # libjpeg's scaled size is the ceiling of size / shrink.
        if -(-width // shrink) >= resized_width and -(-height // shrink) >= resized_height:
            return shrink
    return 1
