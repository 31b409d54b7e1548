"""BENCH_BASELINE (`bench.baseline`, `bench.compare`): imgproxy against an older revision of itself
in the same run; ratios of the medians, each repetition's back-to-back pair, the tables."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from bench.baseline import BASE_NAME, COMPLETE, BaselineInfo, Code, Revision, is_dirty, materialise
from bench.cache.figures import BurstRow
from bench.client import BurstResult
from bench.compare import Pair, pairs, unpaired
from bench.context import Run, Settings
from bench.report import LoadRow, Report
from bench.wrk import WrkResult
from devtools.azurite import ROOT
from tests.helpers import rendered, section, table_row, wrk


def load(target: str, workload: str, *runs: WrkResult) -> LoadRow:
    return LoadRow(target, workload, mean_body_bytes=20_000, runs=list(runs))


def info(dirty: bool = False) -> BaselineInfo:
    new = Code(Path("/src/imgproxy"), Revision("a" * 40, "the security fix", dirty))
    base = Code(Path("/src/imgproxy/.cache/bench/baseline-bbbbbbbbbbbb"), Revision("b" * 40, "before it"))
    imports = {
        "imgproxy": "/src/imgproxy/imgproxy/__init__.py",
        BASE_NAME: "/src/imgproxy/.cache/bench/baseline-bbbbbbbbbbbb/imgproxy/__init__.py",
    }
    return BaselineInfo("HEAD~1", new, base, imports)


def test_ratios_are_of_the_medians_and_of_each_repetitions_back_to_back_pair() -> None:
    """req/s and p99 new / base of the medians; per repetition, run i over run i (the two ran back to
    back), so one slow stretch of the machine shows as one outlying pair, not as a shifted median."""
    pair = Pair(
        "hit-20k",
        # Medians: new 30,000 req/s, p99 4 ms; base 25,000 req/s, p99 5 ms.
        load(
            "imgproxy", "hit-20k", wrk(30_000, p99_ms=4.0), wrk(10_000, p99_ms=40.0), wrk(33_000, p99_ms=3.0)
        ),
        load(
            BASE_NAME, "hit-20k", wrk(25_000, p99_ms=5.0), wrk(10_000, p99_ms=50.0), wrk(30_000, p99_ms=4.0)
        ),
    )
    assert pair.rps_ratio == 30_000 / 25_000
    assert pair.p99_ratio == 4.0 / 5.0
    assert pair.per_repetition() == pytest.approx([1.2, 1.0, 1.1])
    assert pair.single_p50_ratio is None


def test_per_repetition_ratios_are_left_out_when_a_run_is_missing() -> None:
    """With a failed run on one side the pairs cannot be matched: no per-repetition ratios."""
    pair = Pair(
        "zipf",
        load("imgproxy", "zipf", wrk(30_000), wrk(31_000)),
        load(BASE_NAME, "zipf", wrk(30_000)),
    )
    assert pair.per_repetition() == []
    assert pair.rps_ratio == 30_500 / 30_000


def test_pairs_match_workloads_of_both_revisions_and_name_the_unpaired() -> None:
    loads = [
        load("imgproxy", "hit-20k", wrk(30_000)),
        load(BASE_NAME, "hit-20k", wrk(29_000)),
        load("nginx", "hit-20k", wrk(60_000)),
        load("imgproxy", "hit-2m", wrk(2_000)),
        load("imgproxy", "pass-1k", wrk(20_000)),
        load(BASE_NAME, "pass-1k", wrk(21_000)),
    ]
    single = [load("imgproxy", "pass-1k", wrk(5_000, 0.2)), load(BASE_NAME, "pass-1k", wrk(5_000, 0.1))]
    found = pairs(loads, single)
    assert [(p.workload, p.new.rps, p.base.rps) for p in found] == [
        ("hit-20k", 30_000, 29_000),
        ("pass-1k", 20_000, 21_000),
    ]
    assert found[0].new_single is None
    assert found[1].single_p50_ratio == 2.0
    assert unpaired(loads) == ["hit-2m (imgproxy-base has none)"]


def test_tables_name_both_revisions_and_give_medians_and_ratios() -> None:
    """Which revision each target ran (HEAD with -dirty), per workload the two medians, their ratio,
    the per-repetition ratios (median and range), p99s and their ratio, the one-connection p50 for
    the pass-through, errors; the cold bursts' last response; all from the JSON."""
    report = Report("2026-12-02 00:00:00 UTC", {"repeat": "3", "connections": "64"})
    report.baseline = info(dirty=True)
    report.loads = [
        load(
            "imgproxy", "hit-20k", wrk(30_000, p99_ms=4.0), wrk(27_000, p99_ms=5.0), wrk(33_000, p99_ms=3.0)
        ),
        load(BASE_NAME, "hit-20k", wrk(25_000, p99_ms=5.0), wrk(30_000, p99_ms=4.0), wrk(30_000, p99_ms=4.0)),
        load("nginx", "hit-20k", wrk(60_000), wrk(60_000), wrk(60_000)),
        load("imgproxy", "pass-1k", wrk(20_000, p99_ms=6.0, errors=2)),
        load(BASE_NAME, "pass-1k", wrk(16_000, p99_ms=8.0)),
        load("imgproxy", "hit-2m", wrk(2_000)),
    ]
    report.single = [
        load("imgproxy", "pass-1k", wrk(5_000, 0.150)),
        load(BASE_NAME, "pass-1k", wrk(6_000, 0.120)),
    ]
    burst = BurstResult(100, 100, 0.01, 0.2, 0.1, Counter({200: 100}), Counter({"MISS": 100}))
    slow = BurstResult(100, 100, 0.01, 0.25, 0.1, Counter({200: 100}), Counter({"MISS": 100}))
    report.bursts = {
        "imgproxy": [BurstRow("imgproxy", burst, 1, 0)],
        BASE_NAME: [BurstRow(BASE_NAME, slow, 1, 0)],
    }
    text = rendered(report)
    revisions = section(text, "Against the baseline HEAD~1: revisions")
    assert table_row(revisions, "imgproxy") == [
        "imgproxy", "aaaaaaaaaaaa-dirty (the security fix)", "`/src/imgproxy/imgproxy/__init__.py`",
    ]  # fmt: skip
    assert table_row(revisions, BASE_NAME) == [
        BASE_NAME,
        "bbbbbbbbbbbb (before it)",
        "`/src/imgproxy/.cache/bench/baseline-bbbbbbbbbbbb/imgproxy/__init__.py`",
    ]
    figures = section(text, "Against the baseline HEAD~1 (medians of 3 runs)")
    # Per repetition: 1.20, 0.90, 1.10 -> median 1.10, range 0.90-1.20.
    assert table_row(figures, "hit-20k")[1:] == [
        "30,000", "30,000", "1.00", "1.10 (0.90-1.20)", "4.00 / 4.00", "1.00", "-", "-", "0 / 0",
    ]  # fmt: skip
    assert table_row(figures, "pass-1k")[1:] == [
        "20,000", "16,000", "1.25", "1.25", "6.00 / 8.00", "0.75", "0.150 / 0.120", "1.25", "2 / 0",
    ]  # fmt: skip
    assert table_row(figures, "hit-2m (imgproxy-base has none)")[1:] == ["-"] * 9
    assert "nginx" not in figures
    bursts = section(text, "Against the baseline HEAD~1: cold burst, last response (median)")
    assert table_row(bursts, "200") == ["200", "250", "0.80"]

    data = report.as_dict()["baseline"]
    assert data["requested"] == "HEAD~1" and data["new"]["label"] == "aaaaaaaaaaaa-dirty"
    assert [w["workload"] for w in data["workloads"]] == ["hit-20k", "pass-1k"]
    assert data["workloads"][1]["rps"]["ratio"] == 1.25
    assert data["workloads"][0]["rps_ratio_per_repetition"] == pytest.approx([1.2, 0.9, 1.1])
    assert data["unpaired"] == ["hit-2m (imgproxy-base has none)"]
    assert data["burst_last_s"] == {"new": 0.2, "base": 0.25, "ratio": 0.8}


def test_no_tables_without_the_knob_and_a_row_saying_so_when_nothing_pairs() -> None:
    report = Report("2026-12-02 00:00:00 UTC", {"repeat": "1"})
    report.loads = [load("imgproxy", "hit-20k", wrk(30_000))]
    assert "Against the baseline" not in rendered(report)
    assert report.as_dict()["baseline"] is None
    report.baseline = info()
    figures = section(rendered(report), "Against the baseline HEAD~1 (medians of 1 runs)")
    assert table_row(figures, "(no workload has figures of both revisions)")
    assert table_row(figures, "hit-20k (imgproxy-base has none)")


def test_dirty_means_tracked_changes_or_new_files_in_the_package() -> None:
    assert not is_dirty("")
    assert not is_dirty("?? bench/results/2026-12-02T00-00-00Z.md\n?? notes.txt\n")
    assert is_dirty(" M imgproxy/app.py\n")
    assert is_dirty("M  bench/run.py\n")
    assert is_dirty("?? imgproxy/new_module.py\n")


def test_the_baseline_runs_right_after_imgproxy_and_only_with_the_knob() -> None:
    settings = Settings(1, 1, 3, ["imgproxy"], ["hit-20k"], False, ["imgproxy"], "0", baseline="HEAD~1")
    run = Run(settings, Report("", {}))
    assert run.with_base(["nginx", "imgproxy", "session", "direct"]) == [
        "nginx", "imgproxy", "session", "direct",
    ]  # fmt: skip
    run.base_code = info().base
    assert run.with_base(["imgproxy", "nginx", "session", "direct"]) == [
        "imgproxy", BASE_NAME, "nginx", "session", "direct",
    ]  # fmt: skip
    assert run.with_base(["nginx", "varnish"]) == ["nginx", "varnish"]


def test_materialise_writes_the_tree_once_and_reuses_it(tmp_path: Path) -> None:
    """`git archive` of the revision into cache/baseline-<short sha>, with a marker written last;
    a second call finds it; an incomplete directory (no marker) is written again."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    code = materialise("HEAD", tmp_path)
    assert code.root == tmp_path / f"baseline-{head[:12]}"
    assert code.revision.sha == head and not code.revision.dirty
    assert (code.root / "imgproxy" / "__init__.py").is_file() and code.config.is_file()
    assert (code.root / COMPLETE).read_text().strip() == head
    (code.root / "extra").write_text("kept while the marker holds")
    assert materialise("HEAD", tmp_path).root == code.root
    assert (code.root / "extra").exists()
    (code.root / COMPLETE).unlink()
    materialise("HEAD", tmp_path)
    assert not (code.root / "extra").exists() and (code.root / COMPLETE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [code.root.name]
    with pytest.raises(SystemExit):
        materialise("no-such-revision-for-the-bench", tmp_path)


def test_long_commit_subjects_are_shortened_at_a_word() -> None:
    report = Report("2026-12-02 00:00:00 UTC", {"repeat": "1"})
    baseline = info()
    long_subject = "bench: " + "a long subject word " * 10
    baseline.base = Code(baseline.base.root, Revision("b" * 40, long_subject))
    report.baseline = baseline
    shown = table_row(rendered(report), BASE_NAME)[1].split(" (", 1)[1].removesuffix(")")
    assert shown.endswith(" ...") and len(shown) <= 80 and long_subject.startswith(shown[:-4])
