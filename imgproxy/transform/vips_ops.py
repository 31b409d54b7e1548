"""The pixel operations of a transform, on libvips images (the engine's; with `engine`, the only
modules that import pyvips): colour to sRGB, resize, crop, turn and mirror, blur, sharpen, flatten."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import pyvips

from imgproxy.transform.framing import focal_offset
from imgproxy.transform.params import Color, Flip, FocalPoint, Position
from imgproxy.transform.result import ALPHA_OUTPUTS, ImageFormat

_GRAVITY: Final = {
    Position.NORTH: (0.5, 0.0),
    Position.NORTHEAST: (1.0, 0.0),
    Position.EAST: (1.0, 0.5),
    Position.SOUTHEAST: (1.0, 1.0),
    Position.SOUTH: (0.5, 1.0),
    Position.SOUTHWEST: (0.0, 1.0),
    Position.WEST: (0.0, 0.5),
    Position.NORTHWEST: (0.0, 0.0),
}


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    if image.get_typeof("icc-profile-data") != 0:
        try:
            return image.icc_transform("srgb", embedded=True, intent="perceptual")
        except pyvips.Error:
            pass  # a broken profile: convert by interpretation instead
    if image.interpretation in ("b-w", "grey16"):
        return image if image.format == "uchar" else image.colourspace("b-w")
    if image.interpretation != "srgb" or image.format != "uchar":
        return image.colourspace("srgb")
    return image


def with_colour(image: pyvips.Image) -> pyvips.Image:
    """Grey images as sRGB, for operations that take an RGB colour."""
    return image.colourspace("srgb") if image.bands < 3 else image


def resize(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    if (image.width, image.height) == (width, height):
        return image
    alpha, band_format = image.hasalpha(), image.format
    if alpha:
        # Back to the band format after premultiplying, as libvips' thumbnail does: the resize
        # stays in integer arithmetic (a float resize took 28 ms of CPU where this takes 17).
        image = image.premultiply().cast(band_format)
    image = image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
    if alpha:
        image = image.unpremultiply().cast(band_format)
    if (image.width, image.height) != (width, height):  # a rounding difference of one pixel
        image = image.gravity("centre", width, height, extend="copy")
    return image


def crop(
    image: pyvips.Image, width: int, height: int, position: Position, focal: FocalPoint | None = None
) -> pyvips.Image:
    if focal is not None:
        left = focal_offset(image.width, width, float(focal.x))
        top = focal_offset(image.height, height, float(focal.y))
        return image.crop(left, top, width, height)
    if position in (Position.ATTENTION, Position.ENTROPY):
        return image.copy_memory().smartcrop(width, height, interesting=position.value)
    fx, fy = _GRAVITY.get(position, (0.5, 0.5))
    left = round((image.width - width) * fx)
    top = round((image.height - height) * fy)
    return image.crop(left, top, width, height)


def turn(image: pyvips.Image, degrees: int, flip: Flip | None) -> pyvips.Image:
    """Turned clockwise by `degrees`, then mirrored (params leaves only `flip=h`; v and hv still work)."""
    if degrees:
        image = image.rot(f"d{degrees}")
    if flip in (Flip.H, Flip.HV):
        image = image.fliphor()
    if flip in (Flip.V, Flip.HV):
        image = image.flipver()
    return image


def blur(image: pyvips.Image, sigma: Decimal) -> pyvips.Image:
    if not image.hasalpha():
        return image.gaussblur(float(sigma))
    # Premultiplied, so that the colour of transparent pixels does not bleed into visible ones.
    band_format = image.format
    blurred = image.premultiply().gaussblur(float(sigma)).unpremultiply()
    return blurred.cast(band_format)


def sharpen(image: pyvips.Image, sigma: Decimal) -> pyvips.Image:
    # libvips sharpens the lightness only (in LabS), so colours do not fringe; alpha is kept. sharp's
    # slopes: libvips' m1=0 leaves gentle slopes (most of a photo) untouched, so a small sigma
    # did nothing visible on a soft edge.
    return image.sharpen(sigma=float(sigma), m1=1.0, m2=2.0)


def ink(color: Color, alpha: bool) -> list[float]:
    rgb = [float(color.red), float(color.green), float(color.blue)]
    return [*rgb, float(color.alpha)] if alpha else rgb


def flatten(image: pyvips.Image, output: ImageFormat, background: Color) -> pyvips.Image:
    if output in ALPHA_OUTPUTS or not image.hasalpha():
        return image
    return with_colour(image).flatten(background=ink(background, False))
