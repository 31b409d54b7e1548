"""The report's section "Against the baseline <rev>" (BENCH_BASELINE, `bench/baseline.py`).

`imgproxy` (this checkout) against `imgproxy-base` (the baseline revision), workload by workload:
medians of req/s and p99, their ratios new / base, and the ratio of each repetition's pair of
runs, which ran one right after the other. Pure arithmetic and rendering of the report's rows
(tests/unit/test_bench_baseline.py feeds it known figures).
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .baseline import BASE_NAME, BaselineInfo

if TYPE_CHECKING:  # report.py imports this module
    from .report import BurstRow, LoadRow

NEW_NAME: Final = "imgproxy"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass(frozen=True, slots=True)
class Pair:
    """One workload's rows of both revisions (`*_single`: the pass-through's one-connection runs)."""

    workload: str
    new: LoadRow
    base: LoadRow
    new_single: LoadRow | None = None
    base_single: LoadRow | None = None

    @property
    def rps_ratio(self) -> float | None:
        """Median req/s of the new revision over the baseline's."""
        return ratio(self.new.rps, self.base.rps)

    @property
    def p99_ratio(self) -> float | None:
        return ratio(self.new.p99, self.base.p99)

    @property
    def single_p50_ratio(self) -> float | None:
        if self.new_single is None or self.base_single is None:
            return None
        return ratio(self.new_single.p50, self.base_single.p50)

    def per_repetition(self) -> list[float]:
        """req/s of the new revision's run over the baseline's run of the same repetition (the two ran
        back to back); empty when a run is missing on one side, as the pairs could not be told apart."""
        if len(self.new.runs) != len(self.base.runs):
            return []
        return [n.rps / b.rps for n, b in zip(self.new.runs, self.base.runs, strict=True) if b.rps > 0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "rps": {"new": self.new.rps, "base": self.base.rps, "ratio": self.rps_ratio},
            "p99_ms": {"new": self.new.p99, "base": self.base.p99, "ratio": self.p99_ratio},
            "rps_ratio_per_repetition": self.per_repetition(),
            "single_connection_p50_ms": (
                {"new": self.new_single.p50, "base": self.base_single.p50, "ratio": self.single_p50_ratio}
                if self.new_single is not None and self.base_single is not None
                else None
            ),
            "errors": {"new": self.new.errors, "base": self.base.errors},
        }


def pairs(loads: Sequence[LoadRow], single: Sequence[LoadRow]) -> list[Pair]:
    """The workloads that both `imgproxy` and `imgproxy-base` have rows of, in the report's order."""
    by_key = {(row.target, row.workload): row for row in loads}
    single_by_key = {(row.target, row.workload): row for row in single}
    found = []
    for row in loads:
        if row.target != NEW_NAME or not row.runs:
            continue
        base = by_key.get((BASE_NAME, row.workload))
        if base is None or not base.runs:
            continue
        found.append(
            Pair(
                row.workload,
                row,
                base,
                single_by_key.get((NEW_NAME, row.workload)),
                single_by_key.get((BASE_NAME, row.workload)),
            )
        )
    return found


def unpaired(loads: Sequence[LoadRow]) -> list[str]:
    """Workloads that only one of the two revisions has figures of ("imgproxy-base: hit-2m")."""
    have = {(row.target, row.workload) for row in loads if row.runs}
    out = []
    for workload in dict.fromkeys(row.workload for row in loads):
        sides = [name for name in (NEW_NAME, BASE_NAME) if (name, workload) in have]
        if len(sides) == 1:
            missing = BASE_NAME if sides[0] == NEW_NAME else NEW_NAME
            out.append(f"{workload} ({missing} has none)")
    return out


def burst_medians(bursts: Mapping[str, Sequence[BurstRow]]) -> tuple[float, float] | None:
    """The median over the bursts of the last response (s), new and base, if both had bursts."""
    new, base = bursts.get(NEW_NAME), bursts.get(BASE_NAME)
    if not new or not base:
        return None
    return (
        statistics.median(b.result.last_s for b in new),
        statistics.median(b.result.last_s for b in base),
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return _fmt(values[0])
    return f"{_fmt(statistics.median(values))} ({_fmt(min(values))}-{_fmt(max(values))})"


def _subject(subject: str) -> str:
    return textwrap.shorten(subject, 80, placeholder=" ...")


def _single_cell(pair: Pair) -> str:
    if pair.new_single is None or pair.base_single is None:
        return "-"
    return f"{_fmt(pair.new_single.p50, 3)} / {_fmt(pair.base_single.p50, 3)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def render_baseline(
    info: BaselineInfo,
    loads: Sequence[LoadRow],
    single: Sequence[LoadRow],
    bursts: Mapping[str, Sequence[BurstRow]],
    repeat: str,
) -> list[str]:
    new, base = info.new, info.base
    lines = [f"## Against the baseline {info.requested}", ""]
    lines += [
        f"- `{NEW_NAME}`: this checkout, {new.revision.short} ({_subject(new.revision.subject)}), "
        f"imgproxy imported from `{info.imports.get(NEW_NAME, 'n/a')}`",
        f"- `{BASE_NAME}`: {info.requested} = {base.revision.short} ({_subject(base.revision.subject)}), "
        f"materialised in `{base.root}`, imgproxy imported from `{info.imports.get(BASE_NAME, 'n/a')}`",
        "",
    ]
    found = pairs(loads, single)
    rows = []
    for pair in found:
        rows.append(
            [
                pair.workload,
                _fmt(pair.new.rps, 0),
                _fmt(pair.base.rps, 0),
                _fmt(pair.rps_ratio),
                _spread(pair.per_repetition()),
                f"{_fmt(pair.new.p99)} / {_fmt(pair.base.p99)}",
                _fmt(pair.p99_ratio),
                _single_cell(pair),
                f"{pair.new.errors} / {pair.base.errors}",
            ]
        )
    if rows:
        header = [
            "workload",
            f"{NEW_NAME} req/s",
            f"{BASE_NAME} req/s",
            "req/s new / base",
            "per repetition new / base",
            "p99 ms new / base",
            "p99 new / base",
            "1 conn p50 ms new / base",
            "errors new / base",
        ]
        lines += _table(header, rows)
        lines += [
            "",
            f"req/s and p99: medians of {repeat} run(s) each. `{NEW_NAME}` and `{BASE_NAME}` ran back "
            "to back in every repetition, taking turns to go first (cache workloads: both started and "
            "warmed together, then run after run; pass-through: in turn with the other pass targets, "
            "both with `server.workers` = cores), so a machine that gets busier weighs on both alike. "
            "`per repetition`: each repetition's req/s ratio of the two back-to-back runs, their "
            "median (range). Identical code differs too, by this machine's noise: "
            "`BENCH_BASELINE=HEAD` on a clean tree measures how far (the same code twice). Above 1 is "
            "better for req/s, worse for p99 and the one-connection p50 (pass-through only).",
            "",
        ]
    else:
        lines += ["No workload has figures of both revisions (see Notes).", ""]
    if missing := unpaired(loads):
        lines += ["Only one revision measured: " + ", ".join(missing) + ".", ""]
    if (burst := burst_medians(bursts)) is not None:
        lines += [
            f"Cold burst, last response (median over the bursts): {NEW_NAME} {burst[0] * 1000:,.0f} ms, "
            f"{BASE_NAME} {burst[1] * 1000:,.0f} ms; new / base {_fmt(ratio(*burst))}.",
            "",
        ]
    return lines


def baseline_dict(info: BaselineInfo, loads: Sequence[LoadRow], single: Sequence[LoadRow]) -> dict[str, Any]:
    return {**info.as_dict(), "workloads": [pair.as_dict() for pair in pairs(loads, single)]}
