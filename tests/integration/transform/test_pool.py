"""The bounded transform pool: slots, the queue bound (busy), timeouts that keep the slot until the
thread ends, cancellation inside libvips, stats; and peak RSS of 16 concurrent 24 MP transforms.

Mechanics are driven by a `work` function that blocks on events (deterministic); the rest runs
the real engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from devtools.azurite import ROOT
from imgproxy.config import TransformConfig
from imgproxy.core.errors import NotAnImage, TransformBusy, TransformTimeout
from imgproxy.transform import engine
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import TransformOptions
from imgproxy.transform.pool import TransformPool
from imgproxy.transform.result import ImageFormat, Limits, Source, TransformResult
from tests.helpers import MIB
from tests.support import images

THUMB: Final = TransformOptions(width=100)
RESULT: Final = TransformResult(b"x", "image/jpeg", ImageFormat.JPEG, 1, 1)


@dataclass
class GatedWork:
    """A work function whose jobs block until `gate` opens; it records starts and cancels seen."""

    gate: threading.Event = field(default_factory=threading.Event)
    started: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    saw_cancel: list[bool] = field(default_factory=list)

    def __call__(
        self,
        source: Source,
        options: TransformOptions,
        bucket: FormatBucket,
        limits: Limits,
        cancel: threading.Event,
    ) -> TransformResult:
        self.started.release()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        self.saw_cancel.append(cancel.is_set())
        if cancel.is_set():
            raise engine.Cancelled
        return RESULT

    async def wait_started(self, count: int = 1) -> None:
        """Until `count` more jobs have entered their thread."""
        for _ in range(count):
            assert await asyncio.to_thread(self.started.acquire, True, 30)


def pool_with(work: Any, **config: Any) -> TransformPool:
    """A pool over `work` with the given [transform] settings."""
    return TransformPool(TransformConfig(**config), work=work)


async def test_jobs_beyond_the_queue_are_refused_busy() -> None:
    """One slot and a queue of one: the third concurrent job is TransformBusy with Retry-After."""
    work = GatedWork()
    pool = pool_with(work, max_concurrency=1, max_queue=1, timeout_s=30)
    first = asyncio.create_task(pool.run(b"", THUMB, FormatBucket.JPEG))
    await work.wait_started()
    second = asyncio.create_task(pool.run(b"", THUMB, FormatBucket.JPEG))
    await asyncio.sleep(0)  # let it reach the slot's queue (a yield, not a timed wait)
    assert (pool.stats().running, pool.stats().queued) == (1, 1)
    with pytest.raises(TransformBusy) as excinfo:
        await pool.run(b"", THUMB, FormatBucket.JPEG)
    assert excinfo.value.retry_after_s >= 1
    work.gate.set()
    assert await first == RESULT and await second == RESULT
    stats = pool.stats()
    assert stats.rejected["busy"] == 1 and stats.transforms == {"jpeg": 2}
    await pool.close()


async def test_no_queue_means_busy_as_soon_as_every_slot_is_taken() -> None:
    """`max_queue = 0`: nothing waits."""
    work = GatedWork()
    pool = pool_with(work, max_concurrency=2, max_queue=0, timeout_s=30)
    jobs = [asyncio.create_task(pool.run(b"", THUMB, FormatBucket.JPEG)) for _ in range(2)]
    await work.wait_started(2)
    with pytest.raises(TransformBusy):
        await pool.run(b"", THUMB, FormatBucket.JPEG)
    work.gate.set()
    await asyncio.gather(*jobs)
    await pool.close()


async def test_a_timed_out_job_keeps_its_slot_until_its_thread_ends() -> None:
    """TransformTimeout at once; the job is told to cancel; its slot stays taken until it returns."""
    work = GatedWork()
    pool = pool_with(work, max_concurrency=1, max_queue=4, timeout_s=0.05)
    with pytest.raises(TransformTimeout):
        await pool.run(b"", THUMB, FormatBucket.JPEG)
    assert pool.stats().running == 1  # its thread is still blocked in `work`
    # A new job cannot start meanwhile: it waits for the slot, and gives up after timeout_s.
    with pytest.raises(TransformBusy):
        await pool.run(b"", THUMB, FormatBucket.JPEG)
    work.gate.set()
    await pool.wait_idle()
    stats = pool.stats()
    assert work.saw_cancel == [True]
    assert (stats.running, stats.killed, stats.rejected["timeout"], stats.rejected["busy"]) == (0, 1, 1, 1)
    await pool.close()


async def test_a_cancelled_caller_cancels_its_job() -> None:
    """A caller that goes away (client disconnect) sets its job's cancel event."""
    work = GatedWork()
    pool = pool_with(work, max_concurrency=1, timeout_s=30)
    task = asyncio.create_task(pool.run(b"", THUMB, FormatBucket.JPEG))
    await work.wait_started()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    work.gate.set()
    await pool.wait_idle()
    assert work.saw_cancel == [True]
    await pool.close()


async def test_real_transforms_through_the_pool_are_counted_by_format() -> None:
    """The engine in the pool: results, per-format counts, seconds, and rejections by reason."""
    pool = TransformPool(TransformConfig(max_concurrency=2))
    source = images.jpeg(400, 300)
    results = await asyncio.gather(
        *(
            pool.run(source, THUMB, bucket)
            for bucket in (FormatBucket.JPEG, FormatBucket.WEBP, FormatBucket.JPEG)
        )
    )
    assert [images.sniff(result.body) for result in results] == ["jpeg", "webp", "jpeg"]
    with pytest.raises(NotAnImage):
        await pool.run(b"not an image", THUMB, FormatBucket.JPEG)
    stats = pool.stats()
    assert stats.transforms == {"jpeg": 2, "webp": 1}
    assert stats.seconds_buckets[-1] == (float("inf"), 3) and stats.seconds_sum > 0
    assert stats.rejected["not_an_image"] == 1
    await pool.close()


async def test_a_real_transform_past_its_timeout_is_killed_inside_libvips() -> None:
    """A 12 MP WebP encode with a 1 ms timeout: 503 at once, and the thread ends, its slot freed."""
    from bench.sources import source_bytes

    pool = TransformPool(TransformConfig(max_concurrency=1, timeout_s=0.001))
    with pytest.raises(TransformTimeout):
        await pool.run(source_bytes("photo-12mp.jpg"), TransformOptions(width=3000), FormatBucket.WEBP)
    await pool.wait_idle()
    stats = pool.stats()
    assert (stats.running, stats.killed, stats.transforms) == (0, 1, {})
    await pool.close()


# --- memory ---------------------------------------------------------------------------------------

RSS_SCRIPT: Final = r"""
import asyncio, json, os, sys
from pathlib import Path
from devtools.processes import peak_rss_bytes
from imgproxy.config import TransformConfig
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import Fit, Position, TransformOptions
from imgproxy.transform.pool import TransformPool

JOBS = [
    (TransformOptions(width=300, height=200), FormatBucket.JPEG),
    (TransformOptions(width=800), FormatBucket.WEBP),
    (TransformOptions(width=1600), FormatBucket.JPEG),
    (TransformOptions(width=400, height=400, fit=Fit.COVER, position=Position.ATTENTION), FormatBucket.WEBP),
]

async def main():
    paths = [Path(p) for p in sys.argv[2:]]
    sources = [p.read_bytes() for p in paths] if sys.argv[1] == "bytes" else paths
    pool = TransformPool(TransformConfig())
    await pool.run(sources[0], JOBS[0][0], JOBS[0][1])  # libvips loaded and warm
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    baseline = peak_rss_bytes(os.getpid())
    results = await asyncio.gather(
        *(pool.run(source, *JOBS[i % len(JOBS)]) for i, source in enumerate(sources))
    )
    slots = pool.stats().slots
    peak = peak_rss_bytes(os.getpid())
    print(json.dumps({"baseline": baseline, "peak": peak, "done": len(results), "slots": slots}))
    await pool.close()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def sources_24mp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """16 distinct 24 MP photo-like JPEGs (one picture, each file made unique by a JPEG comment)."""
    from bench.sources import source_bytes

    photo = source_bytes("photo-24mp.jpg")
    directory = tmp_path_factory.mktemp("sources-24mp")
    paths = []
    for index in range(16):
        comment = f"source {index}".encode()
        unique = photo[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + photo[2:]
        path = directory / f"{index:02d}.jpg"
        path.write_bytes(unique)
        paths.append(path)
    yield paths


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bytes", "files"])
def test_sixteen_concurrent_24mp_transforms_stay_under_600_mib(kind: str, sources_24mp: list[Path]) -> None:
    """Peak RSS of a process running 16 cold 24 MP transforms at once (2 slots) stays under 600 MiB."""
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, kind, *map(str, sources_24mp)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    peak, baseline = figures["peak"] / MIB, figures["baseline"] / MIB
    print(f"{kind}: peak RSS {peak:.1f} MiB (before the 16 transforms {baseline:.1f} MiB)")
    assert figures["done"] == 16
    assert peak < 600, f"peak RSS {peak:.1f} MiB"
