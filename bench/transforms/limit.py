"""The in-process limit of image transforms: what the hardware allows, before any HTTP or caching.

`python -m bench.transforms.limit` prints Markdown tables. For every case (source and operation) a
tight loop of the same operation on source bytes already in memory, one process per core, for:
- `pyvips`: libvips' own `thumbnail_buffer` (shrink-on-load as libvips chooses it) and a save with
  the library's defaults but quality and metadata;
- `Pillow`: `draft()` (JPEG DCT scaling), `exif_transpose`, `thumbnail` (Lanczos with its reducing
  gap), save with the library's defaults but quality;
- `engine`: `imgproxy.transform.engine.transform` (our pipeline: header probe and limits, JPEG
  shrink-on-load to the largest DCT scale that keeps the size, progressive JPEG above 70,000 px,
  AVIF effort 3, metadata stripped), or `info.describe` for `fm=json`.
A case runs only the libraries that can do it (`bench.transforms.ops`: no HEVC in libvips, no SVG in
Pillow); the report says n/a for the others.
Then, in one process, `pool`: the engine through `TransformPool` with one slot per core (threads:
if libvips holds the GIL this row falls to one core's worth), and the single-request overhead of
the engine and of the pool over the same pipeline written as raw pyvips calls.

Knobs (docs/benchmarks.md): BENCH_TRANSFORM_SECONDS, BENCH_TRANSFORM_ROUNDS,
BENCH_TRANSFORM_PROCESSES, BENCH_TRANSFORM_CASES. The transforms part of `make bench` calls
`measure()` (one round per repetition).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import TYPE_CHECKING, Any

from ..sources import source_bytes
from .limit_cases import CASES, JPEG_REFERENCE, LIBRARIES, Case
from .ops import operation, raw_like_engine

if TYPE_CHECKING:
    from imgproxy.transform.negotiate import FormatBucket
    from imgproxy.transform.params import TransformOptions

__all__ = ["CASES", "JPEG_REFERENCE", "LIBRARIES", "Case", "LimitRow", "OverheadRow", "Rate", "measure"]


@dataclass(frozen=True, slots=True)
class Rate:
    """Images per second (all processes together) by the wall clock, and per CPU second x cores.

    The CPU-time figure is what the cores would give if this benchmark had them to itself: on a
    machine shared with other work it moves much less than the wall-clock one.
    """

    wall: float
    cpu: float
    parallelism: float = 0.0  # CPU seconds / wall seconds of one process (the pool's threads)


@dataclass(frozen=True, slots=True)
class LimitRow:
    """The rates of one case, per library, plus the pool's."""

    case: str
    rates: dict[str, Rate]  # library (or "pool") -> rate
    output_bytes: dict[str, int]  # library -> size of one output


@dataclass(frozen=True, slots=True)
class OverheadRow:
    """Single-request latency (median ms) of the raw pipeline, the engine and the pool."""

    case: str
    raw_ms: float | None  # None: bare pyvips cannot do the case (HEIC, fm=json)
    engine_ms: float
    pool_ms: float


def _loop(
    library: str,
    case: Case,
    source: bytes,
    seconds: float,
    barrier: Barrier,
    results: Queue[tuple[float, float, int]],
) -> None:
    """One process: warm up, wait for the others, then repeat the operation for `seconds`."""
    import pyvips

    pyvips.voperation.concurrency_set(1)  # one process per core: libvips adds no threads
    pyvips.cache_set_max(0)
    run = operation(library, case, source)
    size = len(run())
    barrier.wait()
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        run()
        count += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    results.put((count / wall, count / cpu, size))


def _rate(library: str, case: Case, source: bytes, seconds: float, processes: int) -> tuple[Rate, int]:
    context = multiprocessing.get_context("spawn")  # libvips' threads do not survive a fork
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_loop, args=(library, case, source, seconds, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    wall = sum(rate for rate, _, _ in outcomes)
    cpu = sum(rate for _, rate, _ in outcomes)
    return Rate(wall, cpu), outcomes[0][2]


def _request(case: Case) -> tuple[TransformOptions, FormatBucket]:
    """The engine's options and output bucket for `case` (the JSON bucket: `info.describe`)."""
    from imgproxy.transform.negotiate import FormatBucket
    from imgproxy.transform.params import TransformOptions

    width, height, quality = case.width or None, case.height or None, case.quality or None
    return TransformOptions(width=width, height=height, quality=quality), FormatBucket(case.fmt)


async def _pool_rate(case: Case, source: bytes, seconds: float, slots: int) -> Rate:
    from imgproxy.config import TransformConfig
    from imgproxy.transform.pool import TransformPool

    pool = TransformPool(TransformConfig(max_concurrency=slots, max_queue=slots * 4))
    options, bucket = _request(case)
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await pool.run(source, options, bucket)
            done += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(slots * 2)))  # every slot busy, some waiting
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    await pool.close()
    # Threads waiting for the GIL use no CPU: parallelism above 1 shows libvips released it.
    return Rate(done / wall, done / cpu * slots, cpu / wall)


async def _overhead(case: Case, source: bytes, repeats: int) -> OverheadRow:
    from imgproxy.config import TransformConfig
    from imgproxy.transform.pool import TransformPool

    pool = TransformPool(TransformConfig(max_concurrency=1))  # also sets libvips' threads
    raw, through_engine = raw_like_engine(case, source), operation("engine", case, source)
    options, bucket = _request(case)
    names = ("engine", "pool") if raw is None else ("raw", "engine", "pool")
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):  # interleaved, so that load from elsewhere hits all three alike
        for name in samples:
            started = time.perf_counter()
            if name == "raw" and raw is not None:
                raw()
            elif name == "engine":
                through_engine()
            else:
                await pool.run(source, options, bucket)
            samples[name].append((time.perf_counter() - started) * 1000)
    await pool.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return OverheadRow(case.name, medians.get("raw"), medians["engine"], medians["pool"])


def measure(
    seconds: float = 3.0, processes: int | None = None, cases: tuple[Case, ...] = CASES, rounds: int = 3
) -> tuple[list[LimitRow], list[OverheadRow]]:
    """Every case for every library (one process per core), the pool's rate, and the overheads.

    Each figure is the median of `rounds`; the libraries take turns within a round, so that load
    from elsewhere falls on all of them alike.
    """
    processes = processes or len(os.sched_getaffinity(0))
    rows: list[LimitRow] = []
    overheads: list[OverheadRow] = []
    for case in cases:
        source = source_bytes(case.source)
        samples: dict[str, list[Rate]] = {name: [] for name in (*case.libraries, "pool")}
        sizes: dict[str, int] = {}
        for round_index in range(rounds):
            print(f"[transform-limit] {case.name}: round {round_index + 1}", file=sys.stderr, flush=True)
            for library in case.libraries:  # the others cannot do the case: n/a in the report
                rate, sizes[library] = _rate(library, case, source, seconds, processes)
                samples[library].append(rate)
            samples["pool"].append(asyncio.run(_pool_rate(case, source, seconds, processes)))
        rates = {
            name: Rate(
                statistics.median(rate.wall for rate in values),
                statistics.median(rate.cpu for rate in values),
                statistics.median(rate.parallelism for rate in values),
            )
            for name, values in samples.items()
        }
        rows.append(LimitRow(case.name, rates, sizes))
        overheads.append(asyncio.run(_overhead(case, source, repeats=max(5, int(seconds * 4)))))
    return rows, overheads


def as_cases(rows: list[LimitRow], overheads: list[OverheadRow]) -> list[dict[str, Any]]:
    """The rows in the transforms part's JSON shape (`bench.transforms.rows.limit_tables` reads it)."""
    return [
        {
            "name": row.case,
            "limit_median": {
                lib: {"wall": r.wall, "cpu": r.cpu, "parallelism": r.parallelism}
                for lib, r in row.rates.items()
            },
            "output_bytes": {f"in-process {lib}": size for lib, size in row.output_bytes.items()},
            "overhead_ms": {"raw": o.raw_ms, "engine": o.engine_ms, "pool": o.pool_ms},
        }
        for row, o in zip(rows, overheads, strict=True)
    ]


def main() -> int:
    from ..markdown import to_markdown
    from .cases import DEFAULT_CASES, TRANSFORM_CASES
    from .rows import limit_tables

    seconds = float(os.environ.get("BENCH_TRANSFORM_SECONDS", "3"))
    processes = int(os.environ.get("BENCH_TRANSFORM_PROCESSES", "0")) or len(os.sched_getaffinity(0))
    wanted = [name.strip() for name in os.environ.get("BENCH_TRANSFORM_CASES", "").split(",") if name.strip()]
    names = {TRANSFORM_CASES[w].limit.name if w in TRANSFORM_CASES else w for w in wanted}  # slugs or names
    defaults = {TRANSFORM_CASES[slug].limit.name for slug in DEFAULT_CASES}  # as `make bench`'s
    cases = tuple(case for case in CASES if case.name in (names or defaults))
    rounds = int(os.environ.get("BENCH_TRANSFORM_ROUNDS", "3"))
    rows, overheads = measure(seconds, processes, cases, rounds)
    import PIL
    import pyvips

    print(to_markdown(limit_tables(as_cases(rows, overheads), processes)))
    print(
        f"pyvips {pyvips.__version__} / libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}, "
        f"Pillow {PIL.__version__}, Python {sys.version.split()[0]}, medians of {rounds} x {seconds:g} s, "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
