"""The one renderer (`bench.markdown`, `bench.render`): tables from the result JSON, numbers and no
verdicts; every result file kept in bench/results renders from its JSON alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.markdown import Table, num, pct, ratio, to_markdown
from bench.render import render
from devtools.azurite import ROOT

RESULTS = ROOT / "bench" / "results"


def test_a_table_is_a_heading_a_header_and_rows_and_an_empty_one_is_left_out() -> None:
    text = to_markdown(
        [
            Table("First", ["a", "b"], [["1", "2"], ["3", "4"]]),
            Table("Empty", ["a"], []),
            Table("Third", ["c"], [["5"]], level=3),
        ]
    )
    assert text.splitlines() == [
        "## First", "", "| a | b |", "| --- | --- |", "| 1 | 2 |", "| 3 | 4 |", "",
        "### Third", "", "| c |", "| --- |", "| 5 |",
    ]  # fmt: skip


def test_cells_say_n_a_for_a_missing_figure() -> None:
    assert num(12_345.678) == "12,346" and num(12_345.678, 2) == "12,345.68"
    assert num(None) == num(math.nan) == pct(None) == pct(math.nan) == "n/a"
    assert pct(0.9126) == "91.3%"
    assert ratio(3.0, 4.0) == 0.75
    assert ratio(3.0, 0.0) is None and ratio(None, 1.0) is None and ratio(1.0, math.nan) is None


def kept() -> list[Path]:
    """`make bench`'s results; the soak's and the churn's (`soak-*`, `churn-*`) have their own form."""
    return sorted(path for path in RESULTS.glob("*.json") if not path.name.startswith(("soak-", "churn-")))


@pytest.mark.parametrize("path", kept(), ids=lambda p: p.stem)
def test_every_kept_result_renders_from_its_json_without_verdicts(path: Path) -> None:
    """Each row has its header's number of cells; the report says figures, never met or MISSED."""
    data: dict[str, Any] = json.loads(path.read_text())
    text = render(data)
    assert text.startswith(f"# imgproxy benchmark, {data['started']}")
    assert "MISSED" not in text and " met" not in text and "target <" not in text
    width = 0
    for line in text.splitlines():
        if line.startswith("| "):
            cells = line.count(" | ") + 1
            if not width:
                width = cells  # the header
            assert cells == width, line
        else:
            width = 0


def test_the_baseline_run_cited_in_the_docs_renders_its_figures() -> None:
    """bench/results/2026-12-04T15-29-32Z: hit-20k 1.22x the baseline's req/s (per repetition 1.03-1.22),
    0.71x nginx; pass-1k 0.39x nginx."""
    text = render(json.loads((RESULTS / "2026-12-04T15-29-32Z.json").read_text()))
    assert "| hit-20k | 32,848 | 26,885 | 1.22 | 1.19 (1.03-1.22) | 4.27 / 4.66 | 0.92 |" in text
    assert "| hit-20k | 0.71 | 1.70 | 0.85 |" in text
    assert "| pass-1k | imgproxy | 13,133 | 13.4 | 4.49 | 11.13 | 0 | 0.344 | 0.396 | 0.243 | 0.39 |" in text
