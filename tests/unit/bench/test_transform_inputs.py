"""The transform bench's new inputs (issue 21): the HEIC and SVG sources, fm=json's copies, the
limit's libraries per case (n/a where one cannot do it), and how the tables show n/a."""

from __future__ import annotations

import io
import json

import pi_heif
import pytest
import pyvips

from bench.markdown import to_markdown
from bench.report import Report
from bench.sources import SOURCES, drawing_svg, heic_of, photo_jpeg
from bench.transforms.cases import DEFAULT_CASES, TRANSFORM_CASES
from bench.transforms.figures import CaseFigures, Load, TransformReport
from bench.transforms.limit import CASES, JPEG_REFERENCE, LimitRow, OverheadRow, Rate, as_cases
from bench.transforms.limit_cases import Case
from bench.transforms.measure import pixel_size
from bench.transforms.ops import operation, raw_like_engine
from bench.transforms.rows import limit_tables
from bench.transforms.seed import json_copy, source_blobs
from bench.transforms.settings import TransformSettings
from tests.helpers import rendered, section, table_row, wrk

HEIC_NAME = "12 MP HEIC -> 300x200 JPEG q80"
SVG_NAME = "SVG -> 512 px PNG"
JSON_NAME = "2.5 MP JPEG -> fm=json"
DESCRIBE_TITLE = (
    "In-process limit: fm=json's description against a 300x200 JPEG of the same source "
    "(img/s, wall clock / per CPU second x cores)"
)


def by_name(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


# --- sources ------------------------------------------------------------------------------------


def test_the_heic_source_is_the_photos_pixels_and_the_same_bytes_every_time() -> None:
    """Two encodes of one photo are byte-identical; pi-heif (the server's decoder) reads back the
    photo's size and pixels within HEVC's loss."""
    jpeg = photo_jpeg(320, 240, seed=1)
    heic = heic_of(jpeg)
    assert heic == heic_of(jpeg)
    assert heic[4:12] == b"ftypheic"
    decoded = pi_heif.open_heif(heic, convert_hdr_to_8bit=True)
    assert decoded.size == (320, 240) and decoded.mode == "RGB"
    pixels = pyvips.Image.new_from_memory(bytes(decoded.data), 320, 240, 3, "uchar")
    original = pyvips.Image.new_from_buffer(jpeg, "")
    assert (pixels.cast("float") - original.cast("float")).abs().avg() < 8


def test_the_heic_spec_is_the_12_mp_photo() -> None:
    heic, photo = SOURCES["photo-12mp.heic"], SOURCES["photo-12mp.jpg"]
    assert heic.kind == "heic"
    assert (heic.width, heic.height, heic.seed) == (photo.width, photo.height, photo.seed)


def test_the_svg_source_is_deterministic_shapes_and_gradients_without_text() -> None:
    """Same seed, same text; another seed, another drawing. A few hundred shapes, gradients, no
    text and no reference (fonts and fetches would make it machine-dependent); libvips draws it
    at its declared size."""
    svg = drawing_svg(1600, 1000, seed=5)
    assert svg == drawing_svg(1600, 1000, seed=5)
    assert svg != drawing_svg(1600, 1000, seed=6)
    text = svg.decode()
    shapes = text.count("<rect") + text.count("<ellipse") + text.count("<polygon")
    assert shapes == 301  # 300 and the background
    assert text.count("Gradient id=") == 12
    assert "<text" not in text and "href" not in text
    image = pyvips.Image.svgload_buffer(svg)
    assert (image.width, image.height) == (1600, 1000)
    assert image.extract_band(0, n=3).deviate() > 10  # not a flat picture


def test_fm_json_copies_are_other_bytes_of_the_same_pixels() -> None:
    case = TRANSFORM_CASES["2.5mp-json"]
    first, second = json_copy(case, 1), json_copy(case, 2)
    assert first != second and first == json_copy(case, 1)
    a, b = pyvips.Image.new_from_buffer(first, ""), pyvips.Image.new_from_buffer(second, "")
    assert (a.width, a.height) == (1920, 1280)
    assert (a - b).abs().max() == 0


def test_only_the_chosen_cases_sources_are_seeded() -> None:
    """A run of the SVG case does not pay for the HEIC encode; fm=json's warm copy is seeded."""
    blobs = source_blobs([TRANSFORM_CASES["svg-512-png"], TRANSFORM_CASES["2.5mp-json"]], rss=False)
    assert set(blobs) == {"tx/drawing.svg", "tx/json/0.jpg", "tx/photo-2.5mp.jpg", "tx/hit-20k.bin"}
    assert blobs["tx/drawing.svg"].startswith(b"<svg")


def test_the_new_cases_are_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default: the five earlier cases; BENCH_TRANSFORM_CASES names the new ones; a typo is refused."""
    monkeypatch.delenv("BENCH_TRANSFORM_CASES", raising=False)
    assert TransformSettings.from_env(10, 1, 64, False).cases == list(DEFAULT_CASES)
    monkeypatch.setenv("BENCH_TRANSFORM_CASES", "heic-12mp-jpeg,svg-512-png,2.5mp-json")
    assert TransformSettings.from_env(10, 1, 64, False).cases == [
        "heic-12mp-jpeg",
        "svg-512-png",
        "2.5mp-json",
    ]
    monkeypatch.setenv("BENCH_TRANSFORM_CASES", "heic")
    with pytest.raises(SystemExit, match="heic"):
        TransformSettings.from_env(10, 1, 64, False)


# --- the limit's operations, on small real sources ----------------------------------------------


def small_heic() -> bytes:
    return heic_of(photo_jpeg(800, 600, seed=1))


def test_libvips_alone_cannot_decode_the_heic_so_pyvips_is_n_a() -> None:
    """pyvips-binary reads the HEIF header but has no HEVC decoder: the case leaves pyvips out."""
    assert by_name(HEIC_NAME).libraries == ("Pillow", "engine")
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_buffer(small_heic(), "").avg()


@pytest.mark.parametrize("library", ["Pillow", "engine"])
def test_heic_to_a_300x200_jpeg_by_each_library(library: str) -> None:
    """Pillow with pillow-heif and the engine with pi-heif: a JPEG inside the box (800x600: 267x200)."""
    body = operation(library, by_name(HEIC_NAME), small_heic())()
    image = pyvips.Image.new_from_buffer(body, "")
    assert body[:2] == b"\xff\xd8" and (image.width, image.height) == (267, 200)


def test_pillow_cannot_read_the_svg_so_it_is_n_a() -> None:
    from PIL import Image, UnidentifiedImageError

    assert by_name(SVG_NAME).libraries == ("pyvips", "engine")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(drawing_svg(400, 250, seed=5)))


@pytest.mark.parametrize("library", ["pyvips", "engine", "raw"])
def test_svg_to_a_512_px_png_by_each_library(library: str) -> None:
    """pyvips' thumbnail, the engine and the raw calls all draw a 400x250 SVG at 512x320 (upscaled:
    a vector is drawn at the asked size)."""
    case, svg = by_name(SVG_NAME), drawing_svg(400, 250, seed=5)
    run = raw_like_engine(case, svg) if library == "raw" else operation(library, case, svg)
    assert run is not None
    image = pyvips.Image.new_from_buffer(run(), "")
    assert image.get("vips-loader") == "pngload_buffer"
    assert (image.width, image.height) == (512, 320)


def test_fm_json_is_the_description_beside_the_engines_300x200_jpeg() -> None:
    case, source = by_name(JSON_NAME), photo_jpeg(960, 640, seed=2)
    assert case.libraries == ("engine", JPEG_REFERENCE) and raw_like_engine(case, source) is None
    facts = json.loads(operation("engine", case, source)())
    assert (facts["width"], facts["height"], facts["format"]) == (960, 640, "jpeg")
    assert pixel_size(TRANSFORM_CASES["2.5mp-json"], json.dumps(facts).encode()) == (960, 640)
    jpeg = pyvips.Image.new_from_buffer(operation(JPEG_REFERENCE, case, source)(), "")
    assert (jpeg.width, jpeg.height) == (300, 200)


# --- n/a in the tables --------------------------------------------------------------------------


def rates(**libraries: float) -> dict[str, Rate]:
    return {
        name.replace("_", " "): Rate(v, v * 2, 1.5 if name == "pool" else 0.0)
        for name, v in libraries.items()
    }


def with_transforms(cases: list[CaseFigures]) -> Report:
    report = Report("2026-12-04 00:00:00 UTC", {"repeat": "1"})
    report.transforms = TransformReport(cases=cases)
    return report


def heic_figures() -> CaseFigures:
    """pyvips cannot: the faster library is Pillow by default; thumbor did run."""
    figures = CaseFigures("heic-12mp-jpeg", HEIC_NAME)
    figures.limits = [
        LimitRow(HEIC_NAME, rates(Pillow=4.0, engine=5.0, pool=4.5), {"Pillow": 9, "engine": 8})
    ]
    figures.output_bytes = {"in-process Pillow": 9, "in-process engine": 8}
    figures.imgproxy_cold = Load([wrk(4.4, 900, 1500)], [4.0])
    figures.thumbor_cold = Load([wrk(2.2, 1800, 3000)], [2.0])
    figures.overhead = OverheadRow(HEIC_NAME, None, 400.0, 420.0)
    return figures


def svg_figures() -> CaseFigures:
    """Pillow cannot, thumbor cannot (nothing ran there)."""
    figures = CaseFigures("svg-512-png", SVG_NAME)
    figures.limits = [
        LimitRow(SVG_NAME, rates(pyvips=10.0, engine=8.0, pool=7.0), {"pyvips": 30, "engine": 20})
    ]
    figures.imgproxy_cold = Load([wrk(7.0, 200, 400)], [7.5])
    figures.imgproxy_warm = Load([wrk(9_000, 5, 9)])
    figures.original_hits = Load([wrk(10_000, 4, 8)])
    return figures


def test_cold_rows_leave_what_cannot_do_a_case_as_n_a_and_out_of_the_ratios() -> None:
    text = section(
        rendered(with_transforms([heic_figures(), svg_figures()])),
        "Transforms, cold: every request a new variant",
    )
    heic = table_row(text, HEIC_NAME)
    assert heic[5:9] == ["n/a / 4.0", "n/a / 8.0", "5.0 / 10.0", "Pillow / Pillow"]
    assert heic[9:13] == ["1.10", "0.50", "2.00", "2.00"]  # 4.4 / 4; 4 / 8; 4.4 / 2.2; 4 / 2
    assert heic[13] == "0 / 0"
    svg = table_row(text, SVG_NAME)
    assert svg[3:5] == ["n/a (n/a / n/a)", "n/a"]
    assert svg[5:9] == ["10.0 / n/a", "20.0 / n/a", "8.0 / 16.0", "pyvips / pyvips"]
    assert svg[9:13] == ["0.70", "0.38", "n/a", "n/a"]  # 7 / 10; 7.5 / 20; no thumbor
    assert svg[13] == "0 / n/a"
    warm = table_row(
        section(
            rendered(with_transforms([svg_figures()])),
            "Transforms, warm: variant hits and original hits of the same bytes",
        ),
        SVG_NAME,
    )
    assert warm[3:7] == ["n/a (n/a / n/a)", "0.90", "n/a", "0 / 0 / n/a"]


def json_case() -> dict[str, object]:
    row = LimitRow(
        JSON_NAME,
        {"engine": Rate(20.0, 24.0), JPEG_REFERENCE: Rate(40.0, 48.0), "pool": Rate(18.0, 22.0, 1.6)},
        {"engine": 210, JPEG_REFERENCE: 10_598},
    )
    return as_cases([row], [OverheadRow(JSON_NAME, None, 40.0, 44.0)])[0]


def test_limit_tables_show_n_a_cells_and_the_description_against_a_jpeg() -> None:
    """Every case keeps its row: n/a where a library cannot; engine / faster library only over the
    libraries that did it; fm=json's row has its own table beside the engine's 300x200 JPEG."""
    heic = json.loads(json.dumps(heic_figures().as_dict()))
    text = to_markdown(limit_tables([heic, json_case()], 2))
    assert table_row(text, HEIC_NAME)[1:] == [
        "n/a", "4.0 / 8.0", "5.0 / 10.0", "4.5 / 9.0 (1.50)", "1.25", "n/a / 9 / 8",
    ]  # fmt: skip
    assert table_row(text, JSON_NAME)[1:] == [
        "n/a",
        "n/a",
        "20.0 / 24.0",
        "18.0 / 22.0 (1.60)",
        "n/a",
        "n/a / n/a / 210",
    ]
    overheads = section(text, "In-process limit: one request, one slot (median ms)")
    assert table_row(overheads, HEIC_NAME)[1:] == ["n/a", "400.00", "420.00", "n/a", "+5.0%"]
    describe = section(text, DESCRIBE_TITLE)
    assert table_row(describe, JSON_NAME)[1:] == ["20.0 / 24.0", "40.0 / 48.0", "0.50", "210 / 10,598"]
    assert HEIC_NAME not in describe
