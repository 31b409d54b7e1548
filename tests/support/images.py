"""Images the transform tests make (deterministic, with Pillow: independent of the engine), and
readers of what comes out: format by magic bytes, pixels, frames, metadata segments.

Reusable by HTTP-level tests: every maker returns encoded bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Final

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
RED: Final[RGB] = (220, 30, 30)
GREEN: Final[RGB] = (30, 200, 40)
BLUE: Final[RGB] = (30, 40, 220)
WHITE: Final[RGB] = (255, 255, 255)
EXIF_ORIENTATION: Final = 0x0112
GPS_IFD: Final = 0x8825


def quadrants(width: int, height: int) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right: any turn or flip shows."""
    image = Image.new("RGB", (width, height), WHITE)
    half_w, half_h = width // 2, height // 2
    image.paste(RED, (0, 0, half_w, half_h))
    image.paste(GREEN, (half_w, 0, width, half_h))
    image.paste(BLUE, (0, half_h, half_w, height))
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """`image` written by Pillow in `fmt` ("JPEG", "PNG", "WEBP", "GIF")."""
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """A quadrant JPEG of `width` x `height`."""
    return encode(quadrants(width, height), "JPEG", quality=quality)


def png_with_alpha(width: int, height: int) -> bytes:
    """Quadrants whose right half is fully transparent."""
    image = quadrants(width, height).convert("RGBA")
    image.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    return encode(image, "PNG")


def jpeg_rotated_with_gps(upright_width: int, upright_height: int) -> bytes:
    """A JPEG stored turned a quarter left, with EXIF orientation 6 (show it turned right) and GPS.

    Shown upright it is `quadrants(upright_width, upright_height)`.
    """
    stored = quadrants(upright_width, upright_height).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"  # GPSLatitudeRef
    gps[2] = (48.0, 51.0, 29.0)  # GPSLatitude
    gps[3] = "E"
    gps[4] = (2.0, 17.0, 40.0)
    return encode(stored, "JPEG", quality=92, exif=exif.tobytes())


# What Pillow applies to a stored image with each EXIF orientation to show it upright (as in
# `ImageOps.exif_transpose`); each is undone by `_UNDO`.
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_UNDO: Final = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


def jpeg_oriented(upright: Image.Image, orientation: int, quality: int = 92) -> bytes:
    """A JPEG stored so that EXIF `orientation` (1-8) shows it as `upright`."""
    stored = upright
    if orientation != 1:
        transpose = _UPRIGHT[orientation]
        stored = upright.transpose(_UNDO.get(transpose, transpose))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes())


def square_on_grey(width: int, height: int, left: int, top: int, side: int) -> Image.Image:
    """A mid-grey image with one red `side` x `side` square at (`left`, `top`)."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    image.paste(RED, (left, top, left + side, top + side))
    return image


def photo_like(width: int, height: int) -> Image.Image:
    """Smooth gradients under a grid of coloured discs: content where crops and resizes can be
    compared by mean difference (an offset or a turn shows; not flat, not noise)."""
    gradient = Image.linear_gradient("L")
    turned = gradient.transpose(Image.Transpose.ROTATE_90)
    image = Image.merge("RGB", (gradient, turned, Image.blend(gradient, turned, 0.5))).resize((width, height))
    draw = ImageDraw.Draw(image)
    step = max(8, min(width, height) // 6)
    colours = [RED, GREEN, BLUE, WHITE, (0, 0, 0)]
    for row, top in enumerate(range(step // 4, height, step)):
        for column, left in enumerate(range(step // 4, width, step)):
            radius = step // 4 + (row + column) % 3 * step // 12
            box = (left, top, left + radius * 2, top + radius)
            draw.ellipse(box, fill=colours[(row * 7 + column) % len(colours)])
    return image


def mean_difference(first: Image.Image, second: Image.Image) -> float:
    """The mean absolute difference of two same-size RGB images, per channel, 0-255."""
    assert first.size == second.size
    a, b = first.convert("RGB").tobytes(), second.convert("RGB").tobytes()
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def animated_gif(width: int, height: int, frames: int) -> bytes:
    """`frames` frames of one flat colour each (red, green, blue, ...), 100 ms apiece, looping."""
    colours = [RED, GREEN, BLUE, WHITE]
    images = [Image.new("RGB", (width, height), colours[i % len(colours)]) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit greyscale PNG of `side` x `side` zeros: about 100 KiB for 900 MP at 30,000."""
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def sniff(body: bytes) -> str:
    """The format by magic bytes: jpeg, png, webp, gif, avif, or "unknown"."""
    if body.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "webp"
    if body[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if body[4:8] == b"ftyp" and body[8:12] in (b"avif", b"avis"):
        return "avif"
    return "unknown"


def decode(body: bytes) -> Image.Image:
    """The first frame, decoded by Pillow, as RGB(A)."""
    image = Image.open(io.BytesIO(body))
    image.load()
    return image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")


def frame_count(body: bytes) -> int:
    """How many frames Pillow finds."""
    return int(getattr(Image.open(io.BytesIO(body)), "n_frames", 1))


def pixel(image: Image.Image, fx: float, fy: float) -> tuple[int, ...]:
    """The pixel at a fraction (`fx`, `fy`) of the image's width and height."""
    x = min(image.width - 1, int(image.width * fx))
    y = min(image.height - 1, int(image.height * fy))
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    """Whether two colours agree within `tolerance` per channel (lossy codecs move them a little)."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def jpeg_segments(body: bytes) -> list[int]:
    """The marker bytes of a JPEG's segments before its image data (0xE1 is EXIF/XMP, 0xE2 ICC)."""
    markers, offset = [], 2
    while offset + 4 <= len(body) and body[offset] == 0xFF:
        marker = body[offset + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", body[offset + 2 : offset + 4])
        offset += 2 + length
    return markers
