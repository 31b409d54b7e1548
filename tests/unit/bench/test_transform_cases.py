"""`bench.transforms.cases`: cold URLs are new variants of one output size, for imgproxy and thumbor."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from bench.sources import SOURCES, photo_jpeg
from bench.transforms.cases import TRANSFORM_CASES, TransformCase, fill, json_blob, split, with_comment
from bench.wrk import counter_script
from imgproxy.config import TransformConfig
from imgproxy.transform.geometry import plan
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import QueryParser

CONFIG = TransformConfig(enabled=True, allow_unsigned=True, max_width=100_000, max_height=100_000)


def options_for(case: TransformCase, n: int) -> tuple[str, tuple[int, int]]:
    """imgproxy's variant key and output size for request `n` of `case`."""
    path, _, query = fill(case.imgproxy_template(), n).removeprefix("/images/").partition("?")
    options = QueryParser(CONFIG).parse(path, query)
    assert options is not None
    spec = SOURCES[case.limit.source]
    out = plan(spec.width, spec.height, options)
    return options.key(FormatBucket(case.limit.fmt)), (out.out_width, out.out_height)


@pytest.mark.parametrize("slug", [slug for slug, case in TRANSFORM_CASES.items() if case.varies != "source"])
def test_every_cold_request_is_a_new_imgproxy_variant_of_the_warm_size(slug: str) -> None:
    """Request n of a cold run has its own cache key, yet the pixel size of the warm case."""
    case = TRANSFORM_CASES[slug]
    warm_key, warm_size = options_for(case, case.first)
    seen = {warm_key}
    for n in (case.first + 1, case.first + 2, case.first + 777, case.first + 60_000):
        key, size = options_for(case, n)
        assert size == warm_size
        assert key not in seen
        seen.add(key)


def test_the_warm_sizes_are_the_cases_boxes() -> None:
    """300x200 from 4:3 is 267x200; 3:2 PNG is 300x200; 1920x1280 to 800 wide is 800x533; the
    1600x1000 SVG to 512 wide is 512x320."""
    sizes = {
        slug: options_for(case, case.first)[1]
        for slug, case in TRANSFORM_CASES.items()
        if case.varies != "source"
    }
    assert sizes == {
        "12mp-jpeg": (267, 200),
        "12mp-webp": (267, 200),
        "2.5mp-800-jpeg": (800, 533),
        "png-alpha": (300, 200),
        "12mp-avif": (267, 200),
        "heic-12mp-jpeg": (267, 200),
        "svg-512-png": (512, 320),
    }


def test_every_cold_fm_json_request_describes_another_blob() -> None:
    """fm=json's key is the same for every URL (all else normalised away): the blob is what varies."""
    case = TRANSFORM_CASES["2.5mp-json"]
    assert case.blob == "tx/json/0.jpg" and not case.thumbor
    blobs = set()
    for n in (case.first, case.first + 1, case.first + 2, case.first + 499):
        path, _, query = fill(case.imgproxy_template(), n).removeprefix("/images/").partition("?")
        options = QueryParser(CONFIG).parse(path, query)
        assert options is not None and options.key(FormatBucket.JSON) == "fm=json"
        assert path == json_blob(n)
        blobs.add(path)
    assert len(blobs) == 4


def test_thumbor_urls_are_fit_in_with_the_same_box_and_format_filters() -> None:
    """thumbor's `fit-in` is imgproxy's `inside`; the counter sits in the same side of the box."""
    webp = TRANSFORM_CASES["12mp-webp"].thumbor_template("127.0.0.1:9")
    assert (
        fill(webp, 301)
        == "/unsafe/fit-in/301x200/filters:format(webp):quality(80)/127.0.0.1:9/photo-12mp.jpg"
    )
    wide = TRANSFORM_CASES["2.5mp-800-jpeg"].thumbor_template("h:1")
    assert fill(wide, 534) == "/unsafe/fit-in/800x534/filters:quality(80)/h:1/photo-2.5mp.jpg"
    assert fill(TRANSFORM_CASES["png-alpha"].thumbor_template("h:1"), 300).endswith(
        "/fit-in/300x200/filters:format(png)/h:1/logo-alpha.png"
    )
    heic = TRANSFORM_CASES["heic-12mp-jpeg"].thumbor_template("h:1")
    assert fill(heic, 301) == "/unsafe/fit-in/301x200/filters:format(jpeg):quality(80)/h:1/photo-12mp.heic"


@pytest.mark.parametrize("slug", ["svg-512-png", "2.5mp-json"])
def test_cases_thumbor_cannot_do_have_no_thumbor_url(slug: str) -> None:
    """No cairosvg in thumbor's venv, and no placeholders in its /meta: n/a, never a wrong URL."""
    case = TRANSFORM_CASES[slug]
    assert not case.thumbor
    with pytest.raises(ValueError, match=slug):
        case.thumbor_template("h:1")


def test_a_template_holds_its_counter_exactly_once() -> None:
    """`split` refuses a template without `{n}` or with two."""
    assert split("/a{n}b") == ("/a", "b")
    for bad in ("/a", "/{n}{n}"):
        with pytest.raises(ValueError):
            split(bad)


def test_a_comment_makes_another_blob_of_the_same_pixels() -> None:
    """`with_comment`: different bytes, a valid JPEG that decodes to the same image."""
    jpeg = photo_jpeg(64, 48, seed=1)
    other = with_comment(jpeg, "source 7")
    assert other != jpeg
    a, b = pyvips.Image.new_from_buffer(jpeg, ""), pyvips.Image.new_from_buffer(other, "")
    assert (b.width, b.height) == (64, 48)
    assert a.subtract(b).abs().max() == 0


def test_the_cold_script_counts_from_its_start(tmp_path: Path) -> None:
    """The Lua counter starts at `start` and joins prefix, number and suffix."""
    script = counter_script(tmp_path / "c.lua", "/images/x?w=", 301, "&fm=webp")
    text = script.read_text()
    assert 'local prefix = "/images/x?w="' in text and "local n = 300" in text
    assert "prefix .. n .. suffix" in text
