"""The transforms part's tables, from the result JSON: cold against thumbor and the in-process limit,
warm variant hits against original hits, output sizes, memory, hits under transform load, and the
limit in detail (shared with `python -m bench.transforms.limit`). Columns: docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..markdown import Table, columns, num, pair, ratio
from .limit_cases import JPEG_REFERENCE

MIB: Final = 1024 * 1024
LIBRARIES: Final = ("pyvips", "Pillow")
NA: Final = "n/a"  # a target or library that cannot do the case (or did not run)


def _load(figure: Mapping[str, Any], rps_digits: int, ms_digits: int) -> str:
    """`req/s (p50 / p99 ms)` of a wrk figure."""
    m = figure["median"]
    return f"{num(m['rps'], rps_digits)} ({pair(num(m['p50_ms'], ms_digits), num(m['p99_ms'], ms_digits))})"


def _rate(case: Mapping[str, Any], library: str, key: str) -> float | None:
    rate = case["limit_median"].get(library)
    return None if rate is None else float(rate[key])


def _errors(figure: Mapping[str, Any]) -> str:
    """A figure's error count; n/a when it has no runs (its target cannot do the case)."""
    return str(figure["errors"]) if figure["runs"] else NA


def tables(data: Mapping[str, Any]) -> list[Table]:
    report = data.get("transforms")
    if report is None:
        return []
    facts = [[k, v] for k, v in (*report["versions"].items(), *report["settings"].items())]
    if report["loadavg"]:
        facts.append(["1-minute load average along the run", "; ".join(report["loadavg"])])
    cases = report["cases"]
    return [
        Table("Transforms: settings", ["setting", "value"], facts),
        Table("Transforms: notes", ["note"], [[n] for n in report["notes"]]),
        Table("Transforms, cold: every request a new variant", COLD_HEADER, [_cold(c) for c in cases]),
        Table(
            "Transforms, warm: variant hits and original hits of the same bytes",
            WARM_HEADER,
            [_warm(c) for c in cases],
        ),
        _outputs(cases),
        _memory(report),
        _hits(report.get("hits_under_load")),
        *limit_tables(cases, report.get("processes") or 0),
    ]


COLD_HEADER: Final = columns(
    "case | imgproxy req/s (p50 / p99 ms) | imgproxy per CPU | thumbor req/s (p50 / p99 ms) | "
    "thumbor per CPU | limit img/s pyvips / Pillow | limit per CPU pyvips / Pillow | "
    "limit engine (wall / CPU) | faster library (wall / CPU) | imgproxy / faster limit | same, per CPU | "
    "imgproxy / thumbor | same, per CPU | errors imgproxy / thumbor"
)


def _faster(c: Mapping[str, Any], key: str) -> str:
    """The library with the higher in-process limit (`key`: wall or cpu)."""
    found = [(rate, lib) for lib in LIBRARIES if (rate := _rate(c, lib, key)) is not None]
    return max(found)[1] if found else "n/a"


def _cold(c: Mapping[str, Any]) -> list[str]:
    ratios = c["ratios"]
    return [
        c["name"],
        _load(c["imgproxy_cold"], 1, 0),
        num(c["imgproxy_cold"]["median"].get("cpu_rate"), 1),
        _load(c["thumbor_cold"], 1, 0),
        num(c["thumbor_cold"]["median"].get("cpu_rate"), 1),
        *(pair(*(num(_rate(c, lib, key), 1) for lib in LIBRARIES)) for key in ("wall", "cpu")),
        pair(num(_rate(c, "engine", "wall"), 1), num(_rate(c, "engine", "cpu"), 1)),
        pair(_faster(c, "wall"), _faster(c, "cpu")),
        num(ratios.get("cold_to_faster_limit"), 2),
        num(ratios.get("cold_to_faster_limit_cpu"), 2),
        num(ratios.get("cold_to_thumbor"), 2),
        num(ratios.get("cold_to_thumbor_cpu"), 2),
        pair(_errors(c["imgproxy_cold"]), _errors(c["thumbor_cold"])),
    ]


WARM_HEADER: Final = columns(
    "case | imgproxy variant hits req/s (p50 / p99 ms) | imgproxy original hits, same bytes | "
    "thumbor result storage | variant / original | imgproxy / thumbor | errors"
)


def _warm(c: Mapping[str, Any]) -> list[str]:
    loads = (c["imgproxy_warm"], c["original_hits"], c["thumbor_warm"])
    return [
        c["name"],
        *(_load(figure, 0, 2) for figure in loads),
        num(c["ratios"]["warm_to_original"], 2),
        num(c["ratios"]["warm_to_thumbor"], 1),
        " / ".join(_errors(figure) for figure in loads),
    ]


def _outputs(cases: Sequence[Mapping[str, Any]]) -> Table:
    names = sorted({name for c in cases for name in c["output_bytes"]})

    def cell(c: Mapping[str, Any], name: str) -> str:
        if name not in c["output_bytes"]:
            return "n/a"
        pixels = c["output_pixels"].get(name)
        return f"{c['output_bytes'][name]:,}" + (f" ({pixels})" if pixels else "")

    rows = [[c["name"], *(cell(c, name) for name in names)] for c in cases]
    return Table("Transforms: output of one request, bytes (pixels)", ["case", *names], rows)


def _memory(report: Mapping[str, Any]) -> Table:
    title = "Transforms: memory of 16 concurrent cold transforms of 24 MP JPEGs"
    rss = report.get("rss")
    if rss is None:
        note = report.get("rss_note") or "not measured"
        return Table(title, ["figure", "value"], [["not measured", note]])
    per = ", ".join(f"pid {pid}: {v / MIB:.1f}" for pid, v in rss["peak_vmhwm"].items())
    rows = [
        ["peak RSS (VmHWM, MiB, sum over the serving processes)", num(rss["peak_mib"], 1)],
        ["per process (MiB)", per],
        ["right after start (MiB)", num(sum(rss["idle_vmhwm"].values()) / MIB, 1)],
        ["200 with a body", f"{rss['ok']}/{rss['requests']}"],
        ["time for all 16 (s)", num(rss["seconds"], 1)],
    ]
    return Table(title, ["figure", "value"], rows)


def _hits(hits: Mapping[str, Any] | None) -> Table:
    title = "Transforms: cached 20 KiB hits while cold transforms saturate the CPU"
    header = ["server state", "hits req/s", "p50 ms", "p99 ms", "p99 / idle p99", "errors"]
    if hits is None:
        return Table(title, header, [])
    running = f"cold transforms running ({num(hits['transforms']['median']['rps'], 1)} req/s)"
    rows = [
        [state, num(m["rps"]), num(m["p50_ms"], 2), num(m["p99_ms"], 2), p99_ratio, str(load["errors"])]
        for state, load, p99_ratio in (
            ("idle", hits["idle"], "-"),
            (running, hits["loaded"], num(hits["p99_ratio"], 2)),
        )
        for m in (load["median"],)
    ]
    return Table(title, header, rows)


def _pair_of(rate: Mapping[str, float] | None) -> str:
    """`wall / cpu` of a limit rate; n/a for a library that cannot do the case."""
    return NA if rate is None else pair(num(rate["wall"], 1), num(rate["cpu"], 1))


def _limit_row(c: Mapping[str, Any], libraries: tuple[str, ...]) -> list[str]:
    r, out = c["limit_median"], c["output_bytes"]
    pool = r.get("pool")
    pool_cell = NA if pool is None else f"{_pair_of(pool)} ({pool['parallelism']:.2f})"
    faster = [r[lib]["cpu"] for lib in LIBRARIES if lib in r]
    engine = r.get("engine")
    to_faster = ratio(engine["cpu"], max(faster)) if engine and faster else None
    sizes = (out.get(f"in-process {lib}") for lib in libraries)
    return [
        c["name"],
        *(_pair_of(r.get(lib)) for lib in libraries),
        pool_cell,
        num(to_faster, 2),
        " / ".join(NA if size is None else f"{size:,}" for size in sizes),
    ]


def _describe_rows(cases: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """fm=json's description (the engine's column) beside the engine's 300x200 JPEG of its source."""
    rows = []
    for c in cases:
        r, out = c["limit_median"], c["output_bytes"]
        if JPEG_REFERENCE not in r or "engine" not in r:
            continue
        rows.append(
            [
                c["name"],
                _pair_of(r["engine"]),
                _pair_of(r[JPEG_REFERENCE]),
                num(ratio(r["engine"]["cpu"], r[JPEG_REFERENCE]["cpu"]), 2),
                pair(*(f"{out.get(f'in-process {lib}', 0):,}" for lib in ("engine", JPEG_REFERENCE))),
            ]
        )
    return rows


def limit_tables(cases: Sequence[Mapping[str, Any]], processes: int) -> list[Table]:
    """The in-process limit per case (`limit_median`, `output_bytes` "in-process <library>",
    `overhead_ms`): img/s by the wall clock / per CPU second x cores, and one request's latency.
    A library that cannot do a case (no HEVC in libvips, no SVG in Pillow) is n/a, and left out of
    the ratio to the faster library."""
    libraries = (*LIBRARIES, "engine")
    rates = [_limit_row(c, libraries) for c in cases if c["limit_median"]]
    overheads = [
        [
            c["name"],
            num(o["raw"], 2),
            num(o["engine"], 2),
            num(o["pool"], 2),
            NA if o["raw"] is None else f"{o['engine'] / o['raw'] - 1:+.1%}",
            f"{o['pool'] / o['engine'] - 1:+.1%}",
        ]
        for c in cases
        if (o := c.get("overhead_ms")) is not None
    ]
    header = columns(
        "case | pyvips | Pillow | engine | pool (CPU/wall) | engine / faster library (CPU) | "
        "bytes pyvips / Pillow / engine"
    )
    title = "In-process limit: img/s, wall clock / per CPU second x cores" + (
        f" ({processes} processes; the pool: 1 process, {processes} threads)" if processes else ""
    )
    overhead_header = columns(
        "case | raw pyvips calls | engine.transform | pool.run | engine overhead | pool overhead"
    )
    describe_header = columns(
        f"case | description (engine) | {JPEG_REFERENCE} | description / JPEG (CPU) | "
        "bytes description / JPEG"
    )
    return [
        Table(title, header, rates),
        Table("In-process limit: one request, one slot (median ms)", overhead_header, overheads),
        Table(
            "In-process limit: fm=json's description against a 300x200 JPEG of the same source "
            "(img/s, wall clock / per CPU second x cores)",
            describe_header,
            _describe_rows(cases),
        ),
    ]
