"""HEIC and SVG sources the transform tests make (HEIC with pillow-heif's encoder, SVG as text),
and what the tests read back from them. Every maker returns encoded bytes."""

from __future__ import annotations

import io
import struct
from typing import Final

import pillow_heif
from PIL import Image

from tests.support.images import BLUE, EXIF_ORIENTATION, GREEN, RED, WHITE, quadrants

SVG_NS: Final = 'xmlns="http://www.w3.org/2000/svg"'


def heic(image: Image.Image, exif: Image.Exif | None = None, quality: int = 90) -> bytes:
    """`image` as an 8-bit HEIC; an EXIF orientation becomes the container's irot/imir (pillow-heif's
    encoder writes it so) and stays in the EXIF too, as in an iPhone's photo."""
    out = io.BytesIO()
    options: dict[str, object] = {"quality": quality}
    if exif is not None:
        options["exif"] = exif.tobytes()
    pillow_heif.from_pillow(image).save(out, **options)
    return out.getvalue()


def heic_quadrants(width: int, height: int) -> bytes:
    return heic(quadrants(width, height))


def heic_rotated(upright_width: int, upright_height: int) -> bytes:
    """Stored turned a quarter left with EXIF orientation 6: the container's irot turns it upright
    (`quadrants(upright_width, upright_height)`); its EXIF still says 6."""
    stored = quadrants(upright_width, upright_height).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return heic(stored, exif)


def heic_10_bit(width: int, height: int) -> bytes:
    """Quadrants as a 10-bit HEIC (16-bit samples in, libheif stores 10 bits)."""
    image = quadrants(width, height)
    samples = [value * 257 for value in image.tobytes()]
    out = io.BytesIO()
    pillow_heif.encode("RGB;16", (width, height), struct.pack(f"<{len(samples)}H", *samples), out, quality=90)
    return out.getvalue()


def heic_facts(body: bytes) -> tuple[tuple[int, int], int, int | None]:
    """(size, bit depth, EXIF orientation) as libheif reads the header: nothing decoded."""
    heif = pillow_heif.open_heif(body, convert_hdr_to_8bit=False)
    raw = heif.info.get("exif")
    orientation = None
    if raw:
        exif = Image.Exif()
        exif.load(raw)
        orientation = exif.get(EXIF_ORIENTATION)
    return heif.size, int(heif.info["bit_depth"]), orientation


def heic_header_claiming(body: bytes, width: int, height: int) -> bytes:
    """`body` with its one `ispe` box (the image's declared size) saying `width` x `height`."""
    assert body.count(b"ispe") == 1
    at = body.index(b"ispe") + 8  # past the type and the full box's version and flags
    return body[:at] + struct.pack(">II", width, height) + body[at + 8 :]


def svg(width: int, height: int, content: str, prolog: str = "") -> bytes:
    return f'{prolog}<svg {SVG_NS} width="{width}" height="{height}">{content}</svg>'.encode()


def svg_halves(width: int, height: int) -> bytes:
    """Left half red, right half blue: a sharp edge in the middle."""
    half = width // 2
    return svg(
        width,
        height,
        f'<rect width="{half}" height="{height}" fill="rgb{RED}"/>'
        f'<rect x="{half}" width="{width - half}" height="{height}" fill="rgb{BLUE}"/>',
    )


def svg_quadrants(width: int, height: int) -> bytes:
    """As `images.quadrants`, drawn."""
    half_w, half_h = width // 2, height // 2
    cells = [(0, 0, RED), (half_w, 0, GREEN), (0, half_h, BLUE), (half_w, half_h, WHITE)]
    return svg(
        width,
        height,
        "".join(
            f'<rect x="{x}" y="{y}" width="{half_w}" height="{half_h}" fill="rgb{colour}"/>'
            for x, y, colour in cells
        ),
    )


def billion_laughs() -> bytes:
    """Ten nested entities, each ten of the one below: 10^10 'lol's if expanded."""
    entities = '<!ENTITY a "lol">' + "".join(
        f'<!ENTITY {chr(98 + level)} "{("&" + chr(97 + level) + ";") * 10}">' for level in range(9)
    )
    return svg(20, 20, "<text>&j;</text>", prolog=f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]>')
