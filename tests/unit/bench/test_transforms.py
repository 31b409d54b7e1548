"""The transforms part's arithmetic (`bench.transforms.figures`: medians, ratios to the faster
library and to thumbor) and its tables (`bench.transforms.rows`), rendered from the result JSON."""

from __future__ import annotations

import json

from bench.client import Answer
from bench.markdown import to_markdown
from bench.report import Report
from bench.transforms.figures import MIB, CaseFigures, HitsUnderLoad, Load, RssFigure, TransformReport
from bench.transforms.limit import LimitRow, OverheadRow, Rate, as_cases
from bench.transforms.rows import limit_tables
from bench.wrk import WrkResult
from tests.helpers import rendered, section, table_row, wrk

NAME = "12 MP JPEG -> 300x200 JPEG q80"


def limit_row(pyvips_wall: float, pillow_wall: float) -> LimitRow:
    rates = {"pyvips": Rate(pyvips_wall, pyvips_wall * 2), "Pillow": Rate(pillow_wall, pillow_wall * 2)}
    return LimitRow("case", rates, {"pyvips": 100, "Pillow": 90})


def loads(*runs: WrkResult) -> Load:
    return Load(list(runs))


def transform_case() -> CaseFigures:
    figures = CaseFigures("12mp-jpeg", NAME)
    # Limit medians: pyvips 25, Pillow 40 (the faster); the 90 and 5 outliers must not count.
    figures.limits = [limit_row(25, 40), limit_row(90, 5), limit_row(24, 41)]
    figures.imgproxy_cold = loads(wrk(36, 200, 400), wrk(30, 250, 500), wrk(1, 900, 990))
    figures.imgproxy_cold.cpu_rates = [70, 72, 10]
    figures.thumbor_cold = loads(wrk(24, 300, 600), wrk(24, 300, 600), wrk(24, 300, 600))
    figures.thumbor_cold.cpu_rates = [36, 36, 36]
    figures.imgproxy_warm = loads(wrk(9_000, 5, 9), wrk(9_500, 5, 9), wrk(9_000, 5, 9))
    figures.original_hits = loads(wrk(20_000, 2, 4), wrk(20_000, 2, 4), wrk(20_000, 2, 4))
    figures.thumbor_warm = loads(wrk(1_000, 50, 90), wrk(1_000, 50, 90), wrk(1_000, 50, 90))
    return figures


def with_transforms(transforms: TransformReport) -> Report:
    report = Report("2026-12-01 00:00:00 UTC", {"repeat": "3"})
    report.transforms = transforms
    return report


def test_transform_ratios_are_of_medians_to_the_faster_library_and_to_thumbor() -> None:
    """Cold: imgproxy's median over the faster library's median limit and over thumbor's, by wall clock
    and per CPU second (the faster library may differ between the two)."""
    figures = transform_case()
    assert figures.faster_library() == ("Pillow", 40)
    assert figures.faster_library(cpu=True) == ("Pillow", 80)
    assert figures.cold_to_limit() == 30 / 40
    assert figures.cold_to_limit(cpu=True) == 70 / 80
    assert figures.cold_to_thumbor() == 30 / 24
    assert figures.cold_to_thumbor(cpu=True) == 70 / 36
    assert figures.warm_to_original() == 9_000 / 20_000
    assert figures.warm_to_thumbor() == 9.0
    limit = figures.limit("pyvips")
    assert limit is not None and limit.wall == 25 and limit.cpu == 50
    assert figures.as_dict()["ratios"] == {
        "cold_to_faster_limit": 0.75,
        "cold_to_faster_limit_cpu": 0.875,
        "cold_to_thumbor": 1.25,
        "cold_to_thumbor_cpu": 70 / 36,
        "warm_to_original": 0.45,
        "warm_to_thumbor": 9.0,
    }


def test_cold_and_warm_tables_give_the_medians_and_plain_ratios() -> None:
    """The ratios are numbers, no verdict: the targets they are read against are in the docs."""
    text = rendered(with_transforms(TransformReport(cases=[transform_case()])))
    assert "MISSED" not in text and " met" not in text and ">=" not in text
    cold = table_row(section(text, "Transforms, cold: every request a new variant"), NAME)
    assert cold[1:5] == ["30.0 (250 / 500)", "70.0", "24.0 (300 / 600)", "36.0"]
    assert cold[5:9] == ["25.0 / 40.0", "50.0 / 80.0", "n/a / n/a", "Pillow / Pillow"]
    assert cold[9:14] == ["0.75", "0.88", "1.25", "1.94", "0 / 0"]
    warm = table_row(
        section(text, "Transforms, warm: variant hits and original hits of the same bytes"), NAME
    )
    assert warm[1:7] == [
        "9,000 (5.00 / 9.00)",
        "20,000 (2.00 / 4.00)",
        "1,000 (50.00 / 90.00)",
        "0.45",
        "9.0",
        "0 / 0 / 0",
    ]


def test_a_missing_anchor_is_n_a() -> None:
    figures = transform_case()
    figures.thumbor_cold = Load()
    cold = table_row(
        section(
            rendered(with_transforms(TransformReport(cases=[figures]))),
            "Transforms, cold: every request a new variant",
        ),
        NAME,
    )
    assert cold[3] == "n/a (n/a / n/a)" and cold[11:13] == ["n/a", "n/a"]


def test_peak_rss_is_the_sum_over_serving_processes_and_hit_p99_is_loaded_over_idle() -> None:
    answers = [Answer("u", 200, 1000, "image/jpeg", "MISS", 1.0)] * 15 + [Answer("u", 0, 0, "", "-", 1.0)]
    report = TransformReport(
        rss=RssFigure({1: 100 * MIB, 2: 100 * MIB}, {1: 350 * MIB, 2: 260 * MIB}, answers, 4.0),
        hits=HitsUnderLoad(
            idle=loads(wrk(400, 0.5, 2.0), wrk(400, 0.5, 4.0), wrk(400, 0.5, 3.0)),
            loaded=loads(wrk(300, 1.0, 30.0), wrk(300, 1.0, 60.0), wrk(300, 1.0, 90.0)),
            transforms=loads(wrk(25, 300, 600)),
        ),
    )
    assert report.hits is not None and report.hits.p99_ratio() == 20.0
    text = rendered(with_transforms(report))
    memory = section(text, "Transforms: memory of 16 concurrent cold transforms of 24 MP JPEGs")
    assert table_row(memory, "peak RSS (VmHWM, MiB, sum over the serving processes)")[1] == "610.0"
    assert table_row(memory, "per process (MiB)")[1] == "pid 1: 350.0, pid 2: 260.0"
    assert table_row(memory, "right after start (MiB)")[1] == "200.0"
    assert table_row(memory, "200 with a body")[1] == "15/16"
    hits = section(text, "Transforms: cached 20 KiB hits while cold transforms saturate the CPU")
    assert table_row(hits, "idle") == ["idle", "400", "0.50", "3.00", "-", "0"]
    assert table_row(hits, "cold transforms running (25.0 req/s)")[1:5] == ["300", "1.00", "60.00", "20.00"]


def test_limit_tables_from_the_cli_and_from_the_json_agree() -> None:
    """`python -m bench.transforms.limit` and the report render the same limit tables."""
    rates = {
        lib: Rate(10.0 * (i + 1), 11.0 * (i + 1), 0.0) for i, lib in enumerate(("pyvips", "Pillow", "engine"))
    }
    rates["pool"] = Rate(25.0, 30.0, 1.8)
    row = LimitRow(NAME, rates, {"pyvips": 100, "Pillow": 90, "engine": 80})
    overhead = OverheadRow(NAME, 10.0, 11.0, 11.55)
    text = to_markdown(limit_tables(as_cases([row], [overhead]), 2))
    assert "2 processes; the pool: 1 process, 2 threads" in text
    # engine / the faster library per CPU: 33 / 22.
    assert table_row(text, NAME)[1:] == [
        "10.0 / 11.0", "20.0 / 22.0", "30.0 / 33.0", "25.0 / 30.0 (1.80)", "1.50", "100 / 90 / 80",
    ]  # fmt: skip
    assert text.count(f"| {NAME} |") == 2
    assert text.splitlines()[-1] == f"| {NAME} | 10.00 | 11.00 | 11.55 | +10.0% | +5.0% |"
    figures = CaseFigures("12mp-jpeg", NAME, limits=[row], overhead=overhead)
    figures.output_bytes = {f"in-process {lib}": size for lib, size in row.output_bytes.items()}
    case = json.loads(json.dumps(figures.as_dict()))
    assert to_markdown(limit_tables([case], 2)) == text
