"""`imgproxy.transform.info`: the `fm=json` description on real libvips and images the tests make.

Every field is checked against what the image was made as; the placeholders are decoded by their
libraries' own decoders and their colours compared with the image's.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import fast_blurhash
import fast_thumbhash
import pytest
from PIL import Image

from imgproxy.core.errors import NotAnImage, SourceTooLarge
from imgproxy.transform import engine, info
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import RequestedFormat, TransformOptions
from imgproxy.transform.result import ImageFormat, Limits
from tests.support import images, source_formats
from tests.support.images import BLUE, GREEN, RED, near, sniff

LIMITS = Limits()


def described(source: bytes | Path, limits: Limits = LIMITS) -> dict[str, Any]:
    result = info.describe(source, limits)
    assert (result.content_type, result.format) == ("application/json", ImageFormat.JSON)
    facts = json.loads(result.body)
    assert isinstance(facts, dict)
    return facts


def halves(
    width: int, height: int, left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB"
) -> Image.Image:
    """`left` colour on the left half, `right` on the right."""
    image = Image.new(mode, (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def animated_webp(width: int, height: int, frames: int) -> bytes:
    """`frames` flat frames (red, green, blue, ...), 100 ms each, looping."""
    colours = [RED, GREEN, BLUE]
    frames_made = [Image.new("RGB", (width, height), colours[i % 3]) for i in range(frames)]
    return images.encode(frames_made[0], "WEBP", save_all=True, append_images=frames_made[1:], duration=100)


def test_every_field_of_a_jpeg() -> None:
    """A plain JPEG: its size, format, one frame, no alpha, orientation 1, its byte count, and the
    three placeholders as strings of their kinds."""
    data = images.jpeg(640, 480)
    facts = described(data)
    assert set(facts) == {
        "width", "height", "format", "frames", "has_alpha", "orientation", "bytes",
        "blurhash", "thumbhash", "dominant",
    }  # fmt: skip
    assert {
        key: facts[key] for key in ("width", "height", "format", "frames", "has_alpha", "orientation")
    } == {
        "width": 640,
        "height": 480,
        "format": "jpeg",
        "frames": 1,
        "has_alpha": False,
        "orientation": 1,
    }
    assert facts["bytes"] == len(data)
    assert len(facts["blurhash"]) == 28  # 4x3 components: 4 + 2 x 12 characters
    assert len(base64.b64decode(facts["thumbhash"], validate=True)) >= 5
    assert facts["dominant"].startswith("#") and len(facts["dominant"]) == 7


def test_a_jpeg_with_exif_orientation_6_reports_its_upright_size() -> None:
    """Stored 300x400 with orientation 6 (shown turned right): 400x300, orientation 6; the
    thumbnail the placeholders come from is upright too (red at the top left)."""
    facts = described(images.jpeg_rotated_with_gps(400, 300))
    assert (facts["width"], facts["height"], facts["orientation"]) == (400, 300, 6)
    pixels = fast_blurhash.decode(facts["blurhash"], 40, 30)
    top_left = tuple(pixels[(3 * 40 + 3) * 3 : (3 * 40 + 3) * 3 + 3])
    assert near(top_left, RED, 90), top_left


@pytest.mark.parametrize("transparent", [False, True])
def test_a_png_with_an_alpha_channel_has_alpha_even_when_fully_opaque(transparent: bool) -> None:
    """`has_alpha` says the channel is there: true for an RGBA PNG whose alpha is all 255 too."""
    image = images.quadrants(120, 80).convert("RGBA")
    if transparent:
        image.paste((0, 0, 0, 0), (60, 0, 120, 80))
    facts = described(images.encode(image, "PNG"))
    assert (facts["format"], facts["has_alpha"], facts["width"], facts["height"]) == ("png", True, 120, 80)


def test_an_rgb_png_has_no_alpha() -> None:
    """The same PNG without the channel: `has_alpha` false."""
    facts = described(images.encode(images.quadrants(120, 80), "PNG"))
    assert (facts["format"], facts["has_alpha"]) == ("png", False)


def test_an_animated_webp_reports_its_frames() -> None:
    """Three frames: `frames` 3, the size of one frame; the placeholders are of the first (red)."""
    facts = described(animated_webp(60, 40, 3))
    assert (facts["format"], facts["frames"], facts["width"], facts["height"]) == ("webp", 3, 60, 40)
    assert near(_hex(facts["dominant"]), RED, 20), facts["dominant"]


def test_an_animated_gif_reports_its_frames() -> None:
    """GIF too: four frames."""
    facts = described(images.animated_gif(30, 20, 4))
    assert (facts["format"], facts["frames"]) == ("gif", 4)


def test_the_blurhash_decodes_to_the_images_colours() -> None:
    """Half red, half blue: the BlurHash decoded (by the library's decoder) is reddish on the left
    and bluish on the right."""
    facts = described(images.encode(halves(400, 300, RED, BLUE), "PNG"))
    width, height = 32, 24
    pixels = fast_blurhash.decode(facts["blurhash"], width, height)

    def at(x: int, y: int) -> tuple[int, ...]:
        offset = (y * width + x) * 3
        return tuple(pixels[offset : offset + 3])

    left, right = at(2, height // 2), at(width - 3, height // 2)
    assert left[0] > 150 and left[0] > left[2] + 60, left
    assert right[2] > 150 and right[2] > right[0] + 60, right


def test_the_thumbhash_decodes_to_the_images_colours() -> None:
    """Half red, half blue: the ThumbHash decoded (by the reference decoder) is reddish on the left,
    bluish on the right, of the image's aspect ratio, and its average is between the two."""
    facts = described(images.encode(halves(400, 200, RED, BLUE), "PNG"))
    hashed = base64.b64decode(facts["thumbhash"], validate=True)
    width, height, rgba = fast_thumbhash.thumb_hash_to_rgba(hashed)
    assert abs(width / height - 2) < 0.3  # the hash keeps the ratio roughly (32x18 here)
    pixels = bytes(rgba)

    def at(x: int, y: int) -> tuple[int, ...]:
        offset = (y * width + x) * 4
        return tuple(pixels[offset : offset + 4])

    left, right = at(2, height // 2), at(width - 3, height // 2)
    assert left[0] > 150 and left[0] > left[2] + 60 and left[3] == 255, left
    assert right[2] > 150 and right[2] > right[0] + 60 and right[3] == 255, right
    red, _, blue, _ = fast_thumbhash.thumb_hash_to_average_rgba(hashed)
    assert 0.3 < red < 0.7 and 0.3 < blue < 0.7


def test_the_thumbhash_keeps_transparency() -> None:
    """Left half opaque red, right half transparent: the decoded ThumbHash is transparent on the right."""
    image = halves(200, 100, (*RED, 255), (0, 0, 0, 0), mode="RGBA")
    facts = described(images.encode(image, "PNG"))
    width, height, rgba = fast_thumbhash.thumb_hash_to_rgba(base64.b64decode(facts["thumbhash"]))
    pixels = bytes(rgba)
    assert pixels[(height // 2 * width + 1) * 4 + 3] > 200
    assert pixels[(height // 2 * width + width - 2) * 4 + 3] < 60


def test_placeholders_are_deterministic_and_the_same_from_a_file(tmp_path: Path) -> None:
    """The same image described twice, or from a disk-tier file, gives the same bytes."""
    data = images.jpeg(500, 400)
    file = tmp_path / "photo.jpg"
    file.write_bytes(data)
    first, second = info.describe(data, LIMITS).body, info.describe(data, LIMITS).body
    assert first == second == info.describe(file, LIMITS).body


def test_dominant_of_a_mostly_green_image_is_green() -> None:
    """Two thirds green, a third red: `dominant` is the green."""
    image = Image.new("RGB", (300, 200), GREEN)
    image.paste(RED, (200, 0, 300, 200))
    assert near(_hex(described(images.encode(image, "PNG"))["dominant"]), GREEN, 12)


def test_dominant_ignores_transparent_pixels() -> None:
    """Three quarters transparent red, a quarter opaque blue: `dominant` is the blue."""
    image = Image.new("RGBA", (200, 200), (*RED, 0))
    image.paste((*BLUE, 255), (0, 0, 100, 100))
    assert near(_hex(described(images.encode(image, "PNG"))["dominant"]), BLUE, 12)


def test_dominant_of_a_fully_transparent_image_is_null() -> None:
    """No opaque pixel: no dominant colour."""
    image = Image.new("RGBA", (50, 50), (10, 20, 30, 0))
    assert described(images.encode(image, "PNG"))["dominant"] is None


def test_a_grey_image_is_described_in_rgb() -> None:
    """A greyscale JPEG: mid grey dominant, the placeholders made (grey is widened to sRGB)."""
    facts = described(images.encode(Image.new("L", (80, 60), 128), "JPEG"))
    assert near(_hex(facts["dominant"]), (128, 128, 128), 6) and facts["has_alpha"] is False


def test_a_large_source_is_described_from_a_small_thumbnail() -> None:
    """A 12 MP JPEG: the full size reported, the placeholders from its thumbnail."""
    facts = described(images.jpeg(4000, 3000, quality=70))
    assert (facts["width"], facts["height"]) == (4000, 3000)
    assert near(_hex(facts["dominant"]), (255, 255, 255), 12)  # four equal quadrants: the first bin wins ties


def test_not_an_image_and_too_many_pixels_are_refused_as_by_the_engine() -> None:
    """The header checks are the engine's: text is NotAnImage (422), a PNG bomb SourceTooLarge (422)."""
    with pytest.raises(NotAnImage):
        info.describe(b"hello, world", LIMITS)
    with pytest.raises(SourceTooLarge):
        info.describe(images.png_bomb(), LIMITS)


def test_a_truncated_image_is_not_an_image() -> None:
    """Half a JPEG fails its decode (fail_on=warning): NotAnImage, not a half-grey description."""
    data = images.jpeg(400, 300)
    with pytest.raises(NotAnImage):
        info.describe(data[: len(data) // 2], LIMITS)


def test_a_cancelled_description_raises_cancelled() -> None:
    """The pool's cancel event, once set, ends the job with `Cancelled`."""
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(engine.Cancelled):
        info.describe(images.jpeg(400, 300), LIMITS, cancel)


def test_work_sends_the_json_bucket_to_describe_and_the_rest_to_the_engine() -> None:
    """What a pool slot runs: JSON for the JSON bucket, an image for any other."""
    data = images.jpeg(200, 100)
    described_ = info.work(data, TransformOptions(format=RequestedFormat.JSON), FormatBucket.JSON, LIMITS)
    assert json.loads(described_.body)["width"] == 200
    resized = info.work(data, TransformOptions(width=50), FormatBucket.WEBP, LIMITS)
    assert (sniff(resized.body), resized.width) == ("webp", 50)


def _hex(colour: str) -> tuple[int, int, int]:
    assert len(colour) == 7 and colour[0] == "#"
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_a_heic_is_described_upright_from_its_own_decoder() -> None:
    """An iPhone-like HEIC (its container turned, an EXIF orientation of 6 inside that must not turn
    it again): upright size, format heic, orientation 1 (the container's turn is the picture), and
    placeholders from the pixels pi-heif decodes (libvips alone has no HEVC decoder)."""
    body = source_formats.heic_rotated(400, 300)
    facts = described(body)
    assert {
        key: facts[key] for key in ("width", "height", "format", "frames", "has_alpha", "orientation")
    } == {
        "width": 400,
        "height": 300,
        "format": "heic",
        "frames": 1,
        "has_alpha": False,
        "orientation": 1,
    }
    assert facts["bytes"] == len(body)
    pixels = fast_blurhash.decode(facts["blurhash"], 40, 30)
    top_left = tuple(pixels[(3 * 40 + 3) * 3 : (3 * 40 + 3) * 3 + 3])
    assert near(top_left, RED, 90), top_left


def test_an_svg_is_described_from_its_drawing() -> None:
    """A 200x100 SVG, left half red, right half blue: its declared size, and placeholders from the
    engine's own drawing (from memory, no references)."""
    facts = described(source_formats.svg_halves(200, 100))
    assert (facts["width"], facts["height"], facts["format"], facts["frames"]) == (200, 100, "svg", 1)
    pixels = fast_blurhash.decode(facts["blurhash"], 40, 20)
    left, right = (tuple(pixels[(10 * 40 + x) * 3 : (10 * 40 + x) * 3 + 3]) for x in (3, 36))
    assert near(left, RED, 90) and near(right, BLUE, 90), (left, right)
