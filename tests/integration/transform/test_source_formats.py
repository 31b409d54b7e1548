"""Sources beyond libvips' own decoders: HEIC through pillow-heif, SVG through svgload from memory,
AVIF still through libvips; JPEG XL where the wheel has it. Real libheif, libde265, librsvg and
libvips on files the tests make (`tests/support/source_formats.py`)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import time
from pathlib import Path
from typing import cast

import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from imgproxy.core.errors import NotAnImage, SourceTooLarge
from imgproxy.transform import decoders, engine
from imgproxy.transform.framing import Size
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import Fit, TransformOptions
from imgproxy.transform.result import ImageFormat, Limits, TransformResult
from imgproxy.transform.values import Rect
from tests.helpers import peak_rss_bytes, reset_peak_rss
from tests.support import images, source_formats
from tests.support.images import BLUE, GREEN, RED, WHITE, decode, near, pixel, sniff
from tests.support.source_formats import SVG_NS, svg

LIMITS = Limits()
TIMEOUT_S = 10.0  # transform.timeout_s's default


def run(
    source: bytes | Path,
    bucket: FormatBucket = FormatBucket.SOURCE,
    limits: Limits = LIMITS,
    **options: object,
) -> TransformResult:
    return engine.transform(source, TransformOptions(**options), bucket, limits)  # type: ignore[arg-type]


def corners(result: TransformResult) -> tuple[tuple[int, ...], ...]:
    """The colours near the four corners: top-left, top-right, bottom-left, bottom-right."""
    image = decode(result.body)
    return tuple(pixel(image, fx, fy) for fx, fy in ((0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)))


def at(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def upright_quadrants(result: TransformResult) -> bool:
    return all(
        near(found, colour) for found, colour in zip(corners(result), (RED, GREEN, BLUE, WHITE), strict=True)
    )


# --- HEIC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bucket", "magic"), [(FormatBucket.JPEG, "jpeg"), (FormatBucket.WEBP, "webp")])
def test_an_8_bit_heic_becomes_jpeg_and_webp_of_the_asked_size(bucket: FormatBucket, magic: str) -> None:
    """libvips alone cannot decode HEVC: pillow-heif does, and the pipeline is the usual one."""
    result = run(source_formats.heic_quadrants(400, 300), bucket, width=200)
    assert (sniff(result.body), result.width, result.height) == (magic, 200, 150)
    assert decode(result.body).size == (200, 150)
    assert upright_quadrants(result)


def test_a_heic_with_no_format_asked_becomes_jpeg() -> None:
    """HEIC is not a browser's format: the source bucket gives JPEG (no alpha)."""
    result = run(source_formats.heic_quadrants(120, 80), FormatBucket.SOURCE)
    assert (result.format, sniff(result.body), result.width, result.height) == (
        ImageFormat.JPEG,
        "jpeg",
        120,
        80,
    )


def test_a_10_bit_heic_comes_out_8_bit_with_its_colours() -> None:
    """10-bit samples are scaled to 8 bits (not truncated into darkness nor clipped)."""
    body = source_formats.heic_10_bit(200, 100)
    assert source_formats.heic_facts(body)[:2] == ((200, 100), 10)
    result = run(body, FormatBucket.PNG, width=100)
    assert (sniff(result.body), result.width, result.height) == ("png", 100, 50)
    assert upright_quadrants(result)
    assert near(pixel(decode(result.body), 0.9, 0.9), WHITE, tolerance=8)  # full scale stays full scale


def test_a_heic_with_exif_orientation_6_is_turned_once_by_its_container() -> None:
    """Its EXIF says 6 and its irot turns it: the decoder applies irot, the engine not EXIF again."""
    body = source_formats.heic_rotated(300, 200)
    assert source_formats.heic_facts(body) == ((300, 200), 8, 6)  # upright per the container, EXIF 6
    info = engine.probe(body, LIMITS)
    assert (info.format, info.width, info.height, info.orientation) == (ImageFormat.HEIC, 300, 200, 1)
    for bucket in (FormatBucket.JPEG, FormatBucket.WEBP):
        result = run(body, bucket, width=150)
        assert (result.width, result.height) == (150, 100)
        assert upright_quadrants(result), corners(result)  # red top-left, green top-right
    unresized = run(body, FormatBucket.JPEG)
    assert (unresized.width, unresized.height) == (300, 200) and upright_quadrants(unresized)


def test_a_heic_from_a_disk_file_is_decoded(tmp_path: Path) -> None:
    """The disk tier hands a path: pillow-heif reads the file."""
    path = tmp_path / "photo.heic"
    path.write_bytes(source_formats.heic_quadrants(400, 300))
    result = run(path, FormatBucket.JPEG, width=100)
    assert (result.width, result.height) == (100, 75) and upright_quadrants(result)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda body: body[: len(body) - 40], id="pixel-data-truncated"),
        pytest.param(lambda body: body[: len(body) // 2], id="half-gone"),
        pytest.param(lambda body: body[:40], id="header-only"),
    ],
)
def test_a_corrupt_heic_is_not_an_image(damage: object) -> None:
    body = source_formats.heic_quadrants(256, 256)
    damaged = damage(body)  # type: ignore[operator]
    with pytest.raises(NotAnImage, match="cannot decode"):
        run(damaged, FormatBucket.JPEG, width=100)


def test_a_60000_square_heic_header_is_refused_without_allocating() -> None:
    """A 64x64 HEIC whose header claims 60,000 x 60,000 (3.6 GP; 10.8 GB decoded) is refused
    by max_src_pixels from its header, before pillow-heif is asked for a pixel."""
    body = source_formats.heic_header_claiming(source_formats.heic_quadrants(64, 64), 60_000, 60_000)
    assert source_formats.heic_facts(body)[0] == (60_000, 60_000)
    reset_peak_rss()
    before = peak_rss_bytes(os.getpid())
    started = time.perf_counter()
    with pytest.raises(SourceTooLarge, match="max_src_pixels") as excinfo:
        run(body, FormatBucket.JPEG, width=100)
    elapsed = time.perf_counter() - started
    grown = peak_rss_bytes(os.getpid()) - before
    assert excinfo.value.detail == "60000x60000 pixels"
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert grown < 16 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.1f} MiB"


def test_a_heic_is_not_decoded_at_another_size_than_the_one_probed() -> None:
    """libvips' libheif probed the size the limits allow; pi-heif's must agree before decoding."""
    body = source_formats.heic_quadrants(64, 64)
    probed = dataclasses.replace(engine.probe(body, LIMITS), width=32, height=32)
    with pytest.raises(NotAnImage, match="cannot decode") as excinfo:
        decoders.load(body, probed, Rect(0, 0, 32, 32), Size(16, 16))
    assert excinfo.value.detail == "HEIC header 64x64, probed 32x32"


def test_avif_is_still_decoded_by_libvips() -> None:
    """AVIF (heif-compression av1) keeps libvips' heifload and its AV1 decoder."""
    body = images.encode(images.quadrants(300, 200), "AVIF", quality=90)
    assert sniff(body) == "avif"
    info = engine.probe(body, LIMITS)
    assert (info.format, info.width, info.height) == (ImageFormat.AVIF, 300, 200)
    result = run(body, FormatBucket.JPEG, width=150)
    assert (result.width, result.height) == (150, 100) and upright_quadrants(result)


# --- SVG ------------------------------------------------------------------------------------------


def test_an_svg_is_drawn_at_the_asked_width_crisply() -> None:
    """w=400 of a 200x100 SVG is 400x200 (enlarge does not apply to a vector), drawn at that size:
    the red/blue edge is one pixel wide, not the blur of a small raster scaled up."""
    result = run(source_formats.svg_halves(200, 100), width=400)
    assert (result.format, sniff(result.body), result.width, result.height) == (
        ImageFormat.PNG,
        "png",
        400,
        200,
    )
    drawn = decode(result.body)
    assert [at(drawn, x, 100)[:3] for x in (198, 199, 200, 201)] == [RED, RED, BLUE, BLUE]


@pytest.mark.parametrize(
    ("options", "size"),
    [
        ({"width": 100}, (100, 50)),
        ({"height": 300}, (600, 300)),
        ({"width": 90, "height": 90, "fit": Fit.COVER}, (90, 90)),
        ({"width": 300, "height": 300, "fit": Fit.CONTAIN}, (300, 300)),
    ],
)
def test_an_svg_is_drawn_at_every_planned_size(options: dict[str, object], size: tuple[int, int]) -> None:
    """Smaller or larger than declared, every fit: the planned size."""
    result = run(source_formats.svg_quadrants(200, 100), FormatBucket.WEBP, LIMITS, **options)
    assert (sniff(result.body), result.width, result.height) == ("webp", *size)


def test_an_svg_keeps_its_size_and_orientation_without_w_or_h() -> None:
    result = run(source_formats.svg_quadrants(120, 80), FormatBucket.PNG)
    assert (result.width, result.height) == (120, 80) and upright_quadrants(result)


def test_probe_reads_an_svgs_declared_size() -> None:
    info = engine.probe(source_formats.svg_quadrants(200, 100), LIMITS)
    assert (info.format, info.width, info.height, info.frames, info.orientation) == (
        ImageFormat.SVG,
        200,
        100,
        1,
        1,
    )


def test_max_src_pixels_bounds_the_drawn_size_not_the_declared_one() -> None:
    """A 100,000-square SVG asked at w=100 draws 10,000 pixels; 200x100 asked at w=1000 draws
    500,000, beyond a 100,000 max_src_pixels."""
    limits = Limits(max_src_pixels=100_000)
    huge = svg(100_000, 100_000, '<rect width="100000" height="100000" fill="red"/>')
    result = run(huge, FormatBucket.PNG, limits, width=100)
    assert (result.width, result.height) == (100, 100)
    assert pixel(decode(result.body), 0.5, 0.5) == (255, 0, 0, 255)
    with pytest.raises(SourceTooLarge, match="max_src_pixels") as excinfo:
        run(source_formats.svg_halves(200, 100), FormatBucket.PNG, limits, width=1000)
    assert excinfo.value.detail == "1000x500 pixels rasterised"
    assert run(source_formats.svg_halves(200, 100), FormatBucket.PNG, limits, width=400).width == 400


def test_rect_of_an_svg_is_in_user_units_and_drawn_crisply() -> None:
    """`rect` on a 200x100 SVG (left half red, right half blue) is in its user units: the box
    90,0,20,100 asked at w=40 is the whole drawing made at scale 2 and the box cut from it, so the
    red/blue edge lands between output pixels 19 and 20, one pixel wide."""
    result = run(source_formats.svg_halves(200, 100), FormatBucket.PNG, width=40, rect=Rect(90, 0, 20, 100))
    assert (result.width, result.height) == (40, 200)
    drawn = decode(result.body)
    assert [at(drawn, x, 100)[:3] for x in (0, 19, 20, 39)] == [RED, RED, BLUE, BLUE]


def test_max_src_pixels_bounds_the_whole_drawing_of_a_small_rect() -> None:
    """A 10x10 box of a 200x100 SVG asked at w=100 draws the whole SVG at scale 10: 2000x1000,
    beyond a 1,000,000 max_src_pixels, though the output is 100x100."""
    limits = Limits(max_src_pixels=1_000_000)
    with pytest.raises(SourceTooLarge, match="max_src_pixels") as excinfo:
        run(source_formats.svg_halves(200, 100), FormatBucket.PNG, limits, width=100, rect=Rect(0, 0, 10, 10))
    assert excinfo.value.detail == "2000x1000 pixels rasterised"
    assert (
        run(
            source_formats.svg_halves(200, 100), FormatBucket.PNG, limits, width=50, rect=Rect(0, 0, 10, 10)
        ).width
        == 50
    )


def test_a_billion_laughs_svg_is_refused_in_time() -> None:
    started = time.perf_counter()
    with pytest.raises(NotAnImage):
        run(source_formats.billion_laughs(), FormatBucket.PNG, width=20)
    elapsed = time.perf_counter() - started
    assert elapsed < TIMEOUT_S / 10, f"{elapsed:.2f} s"


def _alpha_range(result: TransformResult) -> tuple[int, int]:
    low, high = cast(tuple[int, int], decode(result.body).getchannel("A").getextrema())
    return low, high


@pytest.fixture
def local_files(tmp_path: Path) -> Path:
    """A red PNG, an SVG with a red rect, and a secret text file, all readable by this process."""
    (tmp_path / "red.png").write_bytes(images.encode(images.quadrants(20, 20).convert("RGB"), "PNG"))
    (tmp_path / "ext.svg").write_bytes(svg(20, 20, '<rect id="r" width="20" height="20" fill="red"/>'))
    (tmp_path / "secret.txt").write_text("SECRET SECRET SECRET SECRET\n")
    return tmp_path


def _referencing(files: Path) -> dict[str, bytes]:
    def including(href: str) -> bytes:
        return (
            f'<svg {SVG_NS} xmlns:xi="http://www.w3.org/2001/XInclude" width="300" height="20">'
            f'<text x="0" y="15" font-size="14"><xi:include href="{href}" parse="text"/></text></svg>'
        ).encode()

    return {
        "image-file-url": svg(20, 20, f'<image href="file://{files}/red.png" width="20" height="20"/>'),
        "image-relative": svg(20, 20, '<image href="red.png" width="20" height="20"/>'),
        "use-file-url": svg(20, 20, f'<use href="file://{files}/ext.svg#r"/>'),
        "xinclude-passwd": including("file:///etc/passwd"),
        "xinclude-secret": including(f"file://{files}/secret.txt"),
        "xinclude-relative": including("secret.txt"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "image-file-url",
        "image-relative",
        "use-file-url",
        "xinclude-passwd",
        "xinclude-secret",
        "xinclude-relative",
    ],
)
@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "disk-file"])
def test_an_svg_reads_no_file_it_names(local_files: Path, name: str, as_file: bool) -> None:
    """Images, <use> and xi:include of files (absolute, or relative to a disk-tier file) draw
    nothing: the output is fully transparent, where the same shapes and text inline draw pixels."""
    body = _referencing(local_files)[name]
    source: bytes | Path = body
    if as_file:
        source = local_files / "doc.svg"
        source.write_bytes(body)
    result = run(source, FormatBucket.PNG)
    assert _alpha_range(result) == (0, 0)


def test_the_same_content_inline_is_drawn(local_files: Path) -> None:
    """The controls for the test above: what those references would have drawn, drawn inline."""
    png = base64.b64encode((local_files / "red.png").read_bytes()).decode()
    inline = [
        svg(20, 20, f'<image href="data:image/png;base64,{png}" width="20" height="20"/>'),
        svg(20, 20, '<defs><rect id="r" width="20" height="20" fill="red"/></defs><use href="#r"/>'),
        svg(300, 20, '<text x="0" y="15" font-size="14">SECRET SECRET SECRET SECRET</text>'),
    ]
    for body in inline:
        assert _alpha_range(run(body, FormatBucket.PNG))[1] == 255


async def test_an_svg_makes_no_network_request() -> None:
    """An http: image, xi:include, stylesheet and CSS @import pointing at a local server: the
    server sees no request, and nothing is drawn from it."""
    requests: list[str] = []

    async def record(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(body=images.encode(images.quadrants(20, 20), "PNG"), content_type="image/png")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    async with TestServer(app, host="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.port}"
        xinclude = 'xmlns:xi="http://www.w3.org/2001/XInclude"'
        documents = [
            svg(20, 20, f'<image href="{base}/a.png" width="20" height="20"/>'),
            svg(20, 20, f'<use href="{base}/b.svg#r"/>'),
            f'<svg {SVG_NS} {xinclude} width="300" height="20"><text x="0" y="15">'
            f'<xi:include href="{base}/c.txt" parse="text"/></text></svg>'.encode(),
            svg(20, 20, f'<style>@import url("{base}/d.css");</style>'),
            svg(20, 20, "", prolog=f'<?xml-stylesheet href="{base}/e.css"?>'),
        ]
        for body in documents:
            # In a thread, as the pool runs it, so that the server could answer if asked.
            result = await asyncio.to_thread(run, body, FormatBucket.PNG)
            assert _alpha_range(result) == (0, 0)
        await asyncio.sleep(0.2)  # a late connection would have been handled by now
    assert requests == []


# --- JPEG XL --------------------------------------------------------------------------------------


def test_jpeg_xl_is_read_only_if_the_wheel_has_jxlload() -> None:
    """The pyvips-binary wheel (8.18) has no jxlload: a JPEG XL is not an image here (docs say so)."""
    has_jxl = pyvips.type_find("VipsOperation", "jxlload_buffer") != 0
    codestream = b"\xff\x0a" + b"\x00" * 64  # a JPEG XL codestream signature
    if has_jxl:
        pytest.skip("this libvips reads JPEG XL: a real JPEG XL test belongs here")
    with pytest.raises(NotAnImage):
        run(codestream, FormatBucket.JPEG, width=10)
