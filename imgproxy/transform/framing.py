"""Pixel arithmetic of `rect`, `rot` and the focal point, before and after `geometry`'s plan.

Pure (no pyvips). The engine decodes in the stored orientation and turns the image upright only
once it is resized (turning needs the whole image in memory; the resized one is small). `rect` is
given in upright pixels, so it is mapped here into stored pixels (`stored_rect`) and cut before
the resize: cutting first decodes and resizes only the box, and mapping four numbers is exact,
where turning the full-size image first would hold all of it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgproxy.core.errors import BadTransformParameter
from imgproxy.transform.values import Rect


@dataclass(frozen=True, slots=True)
class Size:
    """A width and height in pixels."""

    width: int
    height: int

    def turned(self, degrees: int) -> Size:
        """The size after a clockwise turn by `degrees` (a quarter turn swaps the sides)."""
        return Size(self.height, self.width) if degrees in (90, 270) else self


def region(rect: Rect | None, width: int, height: int) -> Rect:
    """The upright box the transform works on: `rect`, checked against the upright source of
    `width` x `height`, or the whole source. Out of bounds is a 400 naming `rect`."""
    if rect is None:
        return Rect(0, 0, width, height)
    if rect.x + rect.width > width or rect.y + rect.height > height:
        raise BadTransformParameter("rect", f"must lie within the source ({width}x{height} upright pixels)")
    return rect


def stored_rect(rect: Rect, orientation: int, width: int, height: int) -> Rect:
    """`rect`, in the upright pixels of a `width` x `height` image, in its stored pixels (EXIF
    `orientation` 1-8 says how the stored image is turned or mirrored to be shown upright)."""
    x, y, w, h = rect.x, rect.y, rect.width, rect.height
    if orientation >= 5:  # stored with the sides swapped
        width, height = height, width
    # Each case reads the upright box's edges back through the orientation's turn or mirror.
    match orientation:
        case 2:  # mirrored left-right
            return Rect(width - x - w, y, w, h)
        case 3:  # turned by half
            return Rect(width - x - w, height - y - h, w, h)
        case 4:  # mirrored top-bottom
            return Rect(x, height - y - h, w, h)
        case 5:  # transposed: upright (x, y) is stored (y, x)
            return Rect(y, x, h, w)
        case 6:  # shown turned a quarter clockwise: upright (x, y) is stored (y, height - 1 - x)
            return Rect(y, height - x - w, h, w)
        case 7:  # transverse: upright (x, y) is stored (width - 1 - y, height - 1 - x)
            return Rect(width - y - h, height - x - w, h, w)
        case 8:  # shown turned a quarter anticlockwise: upright (x, y) is stored (width - 1 - y, x)
            return Rect(width - y - h, x, h, w)
    return rect


def rect_shrink(rect: Rect, needed: Size) -> int:
    """The largest JPEG shrink-on-load factor (1, 2, 4 or 8) at which the whole pixels of `rect`
    still cover `needed` (the resize before any turn, in the same orientation as `rect`). Floors,
    not libjpeg's ceilings: a box's edge can fall inside a scaled pixel."""
    for shrink in (8, 4, 2):
        if rect.width // shrink >= needed.width and rect.height // shrink >= needed.height:
            return shrink
    return 1


def shrunk_rect(rect: Rect, shrink: int, loaded: Size) -> Rect:
    """`rect` (stored pixels) in an image decoded at 1/`shrink` to `loaded`, kept inside it."""
    width = max(1, min(rect.width // shrink, loaded.width))
    height = max(1, min(rect.height // shrink, loaded.height))
    left = min(round(rect.x / shrink), loaded.width - width)
    top = min(round(rect.y / shrink), loaded.height - height)
    return Rect(left, top, width, height)


def focal_offset(size: int, box: int, fraction: float) -> int:
    """Where a `box`-long crop of a `size`-long side starts so that the point at `fraction` of the
    side is as central as the side allows."""
    return min(max(0, round(size * fraction - box / 2)), size - box)
