"""The in-process limit of image transforms: what the hardware allows, before any HTTP or caching.

`python -m bench.transforms.limit` prints Markdown tables. For every case (source and operation) a
tight loop of the same operation on source bytes already in memory, one process per core, for:
- `pyvips`: libvips' own `thumbnail_buffer` (shrink-on-load as libvips chooses it) and a save with
  the library's defaults but quality and metadata;
- `Pillow`: `draft()` (JPEG DCT scaling), `exif_transpose`, `thumbnail` (Lanczos with its reducing
  gap), save with the library's defaults but quality;
- `engine`: `imgproxy.transform.engine.transform` (our pipeline: header probe and limits, JPEG
  shrink-on-load to the largest DCT scale that keeps the size, progressive JPEG above 70,000 px,
  AVIF effort 3, metadata stripped).
Then, in one process, `pool`: the engine through `TransformPool` with one slot per core (threads:
if libvips holds the GIL this row falls to one core's worth), and the single-request overhead of
the engine and of the pool over the same pipeline written as raw pyvips calls.

Knobs (docs/benchmarks.md): BENCH_TRANSFORM_SECONDS, BENCH_TRANSFORM_ROUNDS,
BENCH_TRANSFORM_PROCESSES, BENCH_TRANSFORM_CASES. The transforms part of `make bench` calls
`measure()` (one round per repetition).
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any, Final

from ..sources import source_bytes


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmark operation: a source, a box (w, h; 0 = free), an output format and quality."""

    name: str
    source: str
    width: int
    height: int
    fmt: str  # jpeg, webp, png, avif
    quality: int


CASES: Final = (
    Case("12 MP JPEG -> 300x200 JPEG q80", "photo-12mp.jpg", 300, 200, "jpeg", 80),
    Case("12 MP JPEG -> 300x200 WebP q80", "photo-12mp.jpg", 300, 200, "webp", 80),
    Case("2.5 MP JPEG -> 800 px JPEG q80", "photo-2.5mp.jpg", 800, 0, "jpeg", 80),
    Case("1 MP PNG (alpha) -> 300x200 PNG", "logo-alpha.png", 300, 200, "png", 0),
    Case("12 MP JPEG -> 300x200 AVIF q60", "photo-12mp.jpg", 300, 200, "avif", 60),
)
LIBRARIES: Final = ("pyvips", "Pillow", "engine")
BIG: Final = 10_000_000  # "no limit" for a free side


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
    raw_ms: float
    engine_ms: float
    pool_ms: float


def _pyvips_op(case: Case, source: bytes) -> Callable[[], bytes]:
    import pyvips

    pyvips.cache_set_max(0)
    height = case.height or BIG

    def run() -> bytes:
        image = pyvips.Image.thumbnail_buffer(source, case.width, height=height)
        if case.fmt == "jpeg":
            return bytes(image.jpegsave_buffer(Q=case.quality, keep=0))
        if case.fmt == "webp":
            return bytes(image.webpsave_buffer(Q=case.quality, keep=0))
        if case.fmt == "avif":
            return bytes(image.heifsave_buffer(Q=case.quality, compression="av1", keep=0))
        return bytes(image.pngsave_buffer(keep=0))

    return run


def _pillow_op(case: Case, source: bytes) -> Callable[[], bytes]:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(source)) as header:  # draft() needs the real box, not "no limit"
        scale = min(case.width / header.width, (case.height or BIG) / header.height)
        box = (round(header.width * scale), round(header.height * scale))
    save_as = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "png": "PNG"}[case.fmt]

    def run() -> bytes:
        opened = Image.open(io.BytesIO(source))
        opened.draft("RGB", box)  # JPEG only: decode at the DCT scale that still covers the box
        image = ImageOps.exif_transpose(opened)
        image.thumbnail(box, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if case.fmt == "png":
            image.save(out, save_as)
        else:
            image.save(out, save_as, quality=case.quality)
        return out.getvalue()

    return run


def _engine_op(case: Case, source: bytes) -> Callable[[], bytes]:
    from imgproxy.transform import engine
    from imgproxy.transform.negotiate import FormatBucket
    from imgproxy.transform.params import TransformOptions
    from imgproxy.transform.result import Limits

    options = TransformOptions(width=case.width, height=case.height or None, quality=case.quality or None)
    bucket, limits = FormatBucket(case.fmt), Limits()

    def run() -> bytes:
        return engine.transform(source, options, bucket, limits).body

    return run


def _operation(library: str, case: Case, source: bytes) -> Callable[[], bytes]:
    return {"pyvips": _pyvips_op, "Pillow": _pillow_op, "engine": _engine_op}[library](case, source)


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
    operation = _operation(library, case, source)
    size = len(operation())
    barrier.wait()
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        operation()
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


async def _pool_rate(case: Case, source: bytes, seconds: float, slots: int) -> Rate:
    from imgproxy.config import TransformConfig
    from imgproxy.transform.negotiate import FormatBucket
    from imgproxy.transform.params import TransformOptions
    from imgproxy.transform.pool import TransformPool

    pool = TransformPool(TransformConfig(max_concurrency=slots, max_queue=slots * 4))
    options = TransformOptions(width=case.width, height=case.height or None, quality=case.quality or None)
    bucket = FormatBucket(case.fmt)
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


def _raw_like_engine(case: Case, source: bytes) -> Callable[[], bytes]:
    """The engine's pipeline as bare pyvips calls (same shrink, kernel and encoder settings)."""
    import pyvips

    from imgproxy.transform.engine import AVIF_EFFORT, PROGRESSIVE_MIN_PIXELS
    from imgproxy.transform.geometry import jpeg_shrink

    header = pyvips.Image.new_from_buffer(source, "")
    scale = min(case.width / header.width, (case.height or BIG) / header.height)
    width, height = round(header.width * scale), round(header.height * scale)
    jpeg = source[:2] == b"\xff\xd8"
    shrink = jpeg_shrink(header.width, header.height, width, height) if jpeg else 1

    def run() -> bytes:
        options: dict[str, Any] = {"shrink": shrink} if shrink > 1 else {}
        image = pyvips.Image.new_from_buffer(source, "", access="sequential", fail_on="warning", **options)
        alpha = image.hasalpha()
        if alpha:
            image = image.premultiply().cast("uchar")
        image = image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
        if alpha:
            image = image.unpremultiply().cast("uchar")
        if case.fmt == "jpeg":
            progressive = width * height >= PROGRESSIVE_MIN_PIXELS
            return bytes(
                image.jpegsave_buffer(Q=case.quality, keep=0, optimize_coding=True, interlace=progressive)
            )
        if case.fmt == "webp":
            return bytes(image.webpsave_buffer(Q=case.quality, keep=0))
        if case.fmt == "avif":
            return bytes(image.heifsave_buffer(Q=case.quality, compression="av1", effort=AVIF_EFFORT, keep=0))
        return bytes(image.pngsave_buffer(compression=6, keep=0))

    return run


async def _overhead(case: Case, source: bytes, repeats: int) -> OverheadRow:
    from imgproxy.config import TransformConfig
    from imgproxy.transform.negotiate import FormatBucket
    from imgproxy.transform.params import TransformOptions
    from imgproxy.transform.pool import TransformPool

    pool = TransformPool(TransformConfig(max_concurrency=1))  # also sets libvips' threads
    raw, through_engine = _raw_like_engine(case, source), _engine_op(case, source)
    options = TransformOptions(width=case.width, height=case.height or None, quality=case.quality or None)
    bucket = FormatBucket(case.fmt)
    samples: dict[str, list[float]] = {"raw": [], "engine": [], "pool": []}
    for _ in range(repeats):  # interleaved, so that load from elsewhere hits all three alike
        for name in samples:
            started = time.perf_counter()
            if name == "raw":
                raw()
            elif name == "engine":
                through_engine()
            else:
                await pool.run(source, options, bucket)
            samples[name].append((time.perf_counter() - started) * 1000)
    await pool.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return OverheadRow(case.name, medians["raw"], medians["engine"], medians["pool"])


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
        samples: dict[str, list[Rate]] = {name: [] for name in (*LIBRARIES, "pool")}
        sizes: dict[str, int] = {}
        for round_index in range(rounds):
            print(f"[transform-limit] {case.name}: round {round_index + 1}", file=sys.stderr, flush=True)
            for library in LIBRARIES:
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
    from .cases import TRANSFORM_CASES
    from .rows import limit_tables

    seconds = float(os.environ.get("BENCH_TRANSFORM_SECONDS", "3"))
    processes = int(os.environ.get("BENCH_TRANSFORM_PROCESSES", "0")) or len(os.sched_getaffinity(0))
    wanted = [name.strip() for name in os.environ.get("BENCH_TRANSFORM_CASES", "").split(",") if name.strip()]
    names = {TRANSFORM_CASES[w].limit.name if w in TRANSFORM_CASES else w for w in wanted}  # slugs or names
    cases = tuple(case for case in CASES if not names or case.name in names) or CASES
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
