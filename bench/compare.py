"""BENCH_BASELINE's figures: `imgproxy` (this checkout) against `imgproxy-base` (the baseline
revision, `bench.baseline`), workload by workload, and their table.

Per workload: medians of req/s and p99, their ratios new / base, and the ratio of each repetition's
pair of runs, which ran one right after the other; the pass-through's one-connection p50; the cold
bursts' last response. Pure arithmetic (tests/unit/test_bench_baseline.py feeds it known figures).
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .baseline import BASE_NAME, BaselineInfo
from .markdown import Table, columns, num, pair

if TYPE_CHECKING:  # bench.report imports this module
    from .cache.figures import BurstRow
    from .report import LoadRow

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
        new_single, base_single = (single_by_key.get((name, row.workload)) for name in (NEW_NAME, BASE_NAME))
        found.append(Pair(row.workload, row, base, new_single, base_single))
    return found


def unpaired(loads: Sequence[LoadRow]) -> list[str]:
    """Workloads that only one of the two revisions has figures of ("hit-2m (imgproxy-base has none)")."""
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


def comparison(
    info: BaselineInfo,
    loads: Sequence[LoadRow],
    single: Sequence[LoadRow],
    bursts: Mapping[str, Sequence[BurstRow]],
) -> dict[str, Any]:
    """The JSON of the comparison: both revisions, the paired workloads, the unpaired, the bursts."""
    burst = burst_medians(bursts)
    return {
        **info.as_dict(),
        "workloads": [p.as_dict() for p in pairs(loads, single)],
        "unpaired": unpaired(loads),
        "burst_last_s": None
        if burst is None
        else {"new": burst[0], "base": burst[1], "ratio": ratio(*burst)},
    }


# --- the tables, from the JSON ------------------------------------------------------------------


def _spread(values: Sequence[float]) -> str:
    """The median of the per-repetition ratios and their range: `1.10 (0.90-1.20)`."""
    if len(values) <= 1:
        return num(values[0], 2) if values else "n/a"
    return f"{num(statistics.median(values), 2)} ({num(min(values), 2)}-{num(max(values), 2)})"


def _sides(figure: Mapping[str, float] | None, digits: int) -> tuple[str, str]:
    """(`new / base`, their ratio) of a {new, base, ratio} figure; "-" where there is none."""
    if figure is None:
        return "-", "-"
    return pair(num(figure["new"], digits), num(figure["base"], digits)), num(figure["ratio"], 2)


def tables(data: Mapping[str, Any]) -> list[Table]:
    info = data.get("baseline")
    if info is None:
        return []
    title = f"Against the baseline {info['requested']}"
    imports = info.get("imports", {})
    revisions = [
        [
            name,
            f"{side['label']} ({textwrap.shorten(side['subject'], 80, placeholder=' ...')})",
            f"`{imports.get(name, 'n/a')}`",
        ]
        for name, side in ((NEW_NAME, info["new"]), (BASE_NAME, info["base"]))
    ]
    rows = []
    for w in info["workloads"]:
        p99, p99_ratio = _sides(w["p99_ms"], 2)
        single, single_ratio = _sides(w.get("single_connection_p50_ms"), 3)
        rows.append(
            [
                w["workload"],
                num(w["rps"]["new"]),
                num(w["rps"]["base"]),
                num(w["rps"]["ratio"], 2),
                _spread(w["rps_ratio_per_repetition"]),
                p99,
                p99_ratio,
                single,
                single_ratio,
                pair(str(w["errors"]["new"]), str(w["errors"]["base"])),
            ]
        )
    if not rows:
        rows.append(["(no workload has figures of both revisions)", *["-"] * 9])
    rows += [[f"{u}", *["-"] * 9] for u in info.get("unpaired", [])]
    burst = info.get("burst_last_s")
    bursts = (
        []
        if burst is None
        else [[num(burst["new"] * 1000), num(burst["base"] * 1000), num(burst["ratio"], 2)]]
    )
    header = columns(
        f"workload | {NEW_NAME} req/s | {BASE_NAME} req/s | req/s new / base | "
        f"per repetition new / base | p99 ms new / base | p99 new / base | 1 conn p50 ms new / base | "
        f"1 conn p50 new / base | errors new / base"
    )
    return [
        Table(f"{title}: revisions", ["target", "revision", "imgproxy imported from"], revisions),
        Table(f"{title} (medians of {data.get('settings', {}).get('repeat', '?')} runs)", header, rows),
        Table(f"{title}: cold burst, last response (median)", ["new ms", "base ms", "new / base"], bursts),
    ]
