"""Reading one transform parameter's value: integers, choices, colours, and the values of the
geometry and filter operations (`rect`, `rot`, `flip`, `pos=fp:X,Y`, `blur`, `sharp`).

Each reader takes the parameter's name and its percent-decoded value and returns a typed value or
raises `BadTransformParameter` naming the parameter and what it must be (never the value given).
`params` combines them into `TransformOptions`; the types here (`Fit`, `Position`, ...) are its
fields.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeVar

from imgproxy.core.errors import BadTransformParameter

_INTEGER: Final = re.compile(r"[0-9]{1,6}")
_DECIMAL: Final = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")
_HEX_COLOR: Final = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}")
_RECT: Final = re.compile(r"([0-9]{1,6}),([0-9]{1,6}),([0-9]{1,6}),([0-9]{1,6})")
_FRACTION: Final = r"(0(?:\.[0-9]{1,3})?|1(?:\.0{1,3})?)"
_FOCAL: Final = re.compile(rf"fp:{_FRACTION},{_FRACTION}", re.IGNORECASE)
_SIGMA: Final = re.compile(r"[0-9]{1,3}(\.[0-9]{1,2})?")
FOCAL_PREFIX: Final = "fp:"
ROTATIONS: Final = (90, 180, 270)
MIN_SIGMA: Final = Decimal("0.3")  # below this libvips' masks are a single pixel: no visible change
MAX_BLUR: Final = Decimal(100)
MAX_SHARPEN: Final = Decimal(10)


class Fit(enum.StrEnum):
    """sharp's meanings: fit within, fill and crop, letterbox, stretch, cover without crop."""

    INSIDE = "inside"
    COVER = "cover"
    CONTAIN = "contain"
    FILL = "fill"
    OUTSIDE = "outside"


class Position(enum.StrEnum):
    """What `cover` keeps: a side or corner, the centre, or one of libvips' smart crops."""

    CENTER = "center"
    NORTH = "north"
    NORTHEAST = "northeast"
    EAST = "east"
    SOUTHEAST = "southeast"
    SOUTH = "south"
    SOUTHWEST = "southwest"
    WEST = "west"
    NORTHWEST = "northwest"
    ATTENTION = "attention"
    ENTROPY = "entropy"


class RequestedFormat(enum.StrEnum):
    """`fm` as asked: a format, `auto` (negotiated from `Accept`), or absent (`original`)."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    AUTO = "auto"
    JSON = "json"  # facts about the source, not pixels (transform/info.py)
    ORIGINAL = "original"


@dataclass(frozen=True, slots=True)
class Color:
    """An sRGB colour with alpha, 0-255 each."""

    red: int
    green: int
    blue: int
    alpha: int = 255

    @property
    def hex(self) -> str:
        """`rrggbb`, or `rrggbbaa` when not opaque."""
        rgb = f"{self.red:02x}{self.green:02x}{self.blue:02x}"
        return rgb if self.alpha == 255 else f"{rgb}{self.alpha:02x}"


WHITE: Final = Color(255, 255, 255)


@dataclass(frozen=True, slots=True)
class Rect:
    """A box in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def text(self) -> str:
        """As written in the query: `x,y,w,h`."""
        return f"{self.x},{self.y},{self.width},{self.height}"


class Flip(enum.StrEnum):
    """A mirror after the rotation: `h` swaps left and right, `v` top and bottom."""

    H = "h"
    V = "v"
    HV = "hv"


@dataclass(frozen=True, slots=True)
class FocalPoint:
    """The point a `cover` crop keeps as central as it can, in fractions of the width and height."""

    x: Decimal
    y: Decimal

    @property
    def text(self) -> str:
        """As `pos` holds it: `fp:0.25,0.5` (no trailing zeros, so `0.50` and `0.5` are one form)."""
        return f"{FOCAL_PREFIX}{decimal_text(self.x)},{decimal_text(self.y)}"


def decimal_text(value: Decimal) -> str:
    """The shortest plain text of a decimal: `0.500` -> `0.5`, `100.00` -> `100`."""
    return format(value.normalize(), "f")


def integer(name: str, value: str, low: int, high: int, high_name: str = "") -> int:
    """A whole number in `low`..`high` (`high_name`: the setting that bounds it, for the message)."""
    if not _INTEGER.fullmatch(value) or not low <= int(value) <= high:
        bound = f"{high} (transform.{high_name})" if high_name else str(high)
        raise BadTransformParameter(name, f"must be an integer from {low} to {bound}")
    return int(value)


_Choice = TypeVar("_Choice", bound=enum.StrEnum)


def choice(name: str, value: str, kind: type[_Choice], aliases: Mapping[str, str]) -> _Choice:
    """A member of `kind`, case-insensitively, through `aliases`."""
    lowered = value.lower()
    try:
        return kind(aliases.get(lowered, lowered))
    except ValueError:
        allowed = ", ".join(member.value for member in kind if member.value != "original")
        raise BadTransformParameter(name, f"must be one of {allowed}") from None


def color(name: str, value: str) -> Color:
    """`rgb`, `rrggbb` or `rrggbbaa` hex."""
    if not _HEX_COLOR.fullmatch(value):
        raise BadTransformParameter(name, "must be a hex colour (rgb, rrggbb or rrggbbaa)")
    if len(value) == 3:
        value = "".join(digit * 2 for digit in value)
    channels = [int(value[i : i + 2], 16) for i in range(0, len(value), 2)]
    return Color(*channels)


def dpr(value: str, maximum: Decimal) -> Decimal:
    """A device pixel ratio from 1 to `maximum`, up to 3 decimals."""
    if not _DECIMAL.fullmatch(value) or not 1 <= Decimal(value) <= maximum:
        raise BadTransformParameter("dpr", f"must be a number from 1 to {maximum}")
    return Decimal(value)


def rect(value: str) -> Rect:
    """`x,y,w,h` in source pixels, `w` and `h` at least 1 (the bounds are the engine's to check)."""
    found = _RECT.fullmatch(value)
    if found is None or int(found[3]) < 1 or int(found[4]) < 1:
        raise BadTransformParameter("rect", "must be x,y,w,h in whole source pixels, w and h at least 1")
    x, y, width, height = (int(part) for part in found.groups())
    return Rect(x, y, width, height)


def rotation(value: str) -> int:
    """A clockwise quarter turn: 90, 180 or 270 (0 is no rotation: leave `rot` out)."""
    if value not in {str(degrees) for degrees in ROTATIONS}:
        raise BadTransformParameter("rot", "must be one of 90, 180, 270")
    return int(value)


def focal_point(value: str) -> FocalPoint | None:
    """`fp:X,Y` with X and Y from 0 to 1 (up to 3 decimals); None when `value` is not an `fp:` one."""
    if not value.lower().startswith(FOCAL_PREFIX):
        return None
    found = _FOCAL.fullmatch(value)
    if found is None:
        raise BadTransformParameter("pos", "fp:X,Y needs X and Y from 0 to 1, up to 3 decimals")
    return FocalPoint(Decimal(found[1]), Decimal(found[2]))


def sigma(name: str, value: str, maximum: Decimal) -> Decimal:
    """A gaussian sigma from 0.3 to `maximum`, up to 2 decimals."""
    if not _SIGMA.fullmatch(value) or not MIN_SIGMA <= Decimal(value) <= maximum:
        raise BadTransformParameter(name, f"must be a number from {MIN_SIGMA} to {maximum}, up to 2 decimals")
    return Decimal(value)
