"""The bounded transform pool: at most `max_concurrency` transforms at once, off the event loop.

Transforms run in threads (libvips releases the GIL while it computes). Admission, on the loop:
- a free slot: the job starts at once;
- otherwise it waits, unless `max_queue` jobs already wait: `TransformBusy` (429, Retry-After);
  a job that waits longer than `timeout_s` for a slot gives up the same way;
- a job that runs longer than `timeout_s`: its caller gets `TransformTimeout` (503) at once, and
  the job is cancelled inside libvips (its eval callback sets libvips' kill flag), but its slot
  stays taken until its thread has really ended, so the CPU bound holds whatever happens.
A caller that is cancelled (client gone) cancels its job the same way.

Capacity is the machine's, not the worker's: by default each worker has two slots per core of the
machine (`SLOTS_PER_CORE`; `server.workers` workers may run that many each), so a worker that the
kernel gave every busy connection (SO_REUSEPORT places connections by hash) still uses every idle
core. Two, not one: a transform's thread waits part of the time for libvips' own worker and writer
threads, so one transform per core left a tenth of the CPU idle (measured: 1.79 of 2 cores busy
with 2 transforms at once in one process, 1.98 with 4; the same images per CPU second).
The transform threads run at a lower scheduling priority than the event loops (`TRANSFORM_NICE`),
so when transforms saturate the CPU, the loops that answer hits and pass requests through still
get it first. `configure` gives libvips one thread per transform: the slots are the parallelism.

Stats (`TransformStats`) feed `/metrics`. No pyvips here: the engine is imported when a pool is
built without a `work` function of its own (tests pass one).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from imgproxy.config import TransformConfig
from imgproxy.core.errors import (
    BadTransformParameter,
    NotAnImage,
    SourceTooLarge,
    TransformBusy,
    TransformTimeout,
)
from imgproxy.core.stats import ORIGIN_BUCKETS_S, TransformStats
from imgproxy.core.tracing import Tracer
from imgproxy.transform.negotiate import FormatBucket
from imgproxy.transform.params import TransformOptions
from imgproxy.transform.result import Limits, Source, TransformResult

# The function a slot runs: the engine's `transform` in production.
Work = Callable[[Source, TransformOptions, FormatBucket, Limits, threading.Event], TransformResult]
SECONDS_BUCKETS: Final = ORIGIN_BUCKETS_S  # transforms take as long as downloads: the same scale
REJECTIONS: Final = ("busy", "timeout", "not_an_image", "too_large", "bad_parameter")


@dataclass(slots=True)
class _Counters:
    transforms: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(SECONDS_BUCKETS) + 1))
    seconds_sum: float = 0.0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTIONS, 0))
    killed: int = 0

    def observe(self, seconds: float, output: str) -> None:
        self.transforms[output] = self.transforms.get(output, 0) + 1
        self.seconds_sum += seconds
        self.buckets[bisect.bisect_left(SECONDS_BUCKETS, seconds)] += 1


def cores() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# Transforms at once per core by default: see the module's docstring for the measurement.
SLOTS_PER_CORE: Final = 2


def default_slots(config: TransformConfig) -> int:
    """`max_concurrency`, or, when it is 0, `SLOTS_PER_CORE` per core of the machine."""
    if config.max_concurrency > 0:
        return config.max_concurrency
    return SLOTS_PER_CORE * cores()


# Niceness of the transform threads (Linux: per thread). 10 gives a thread about a tenth of the
# weight of the event loop's (CFS weights 110 against 1024), so hits keep their latency while
# transforms take whatever CPU is left.
TRANSFORM_NICE: Final = 10


def lower_priority() -> None:
    """Run the calling thread (and the threads it starts, libvips' included) at `TRANSFORM_NICE`."""
    # Not Linux, or not allowed: run as is.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRANSFORM_NICE)


def lower_libvips_threads() -> None:
    """libvips starts a few worker threads when it loads, from the thread that imported it (the
    event loop's): those run transforms' pipelines too, so they get `TRANSFORM_NICE` as well (the
    ones it starts later are started by transform threads and inherit it)."""
    with contextlib.suppress(OSError):
        for task in os.scandir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                if Path(task.path, "comm").read_text().strip() == "libvips worker":
                    os.setpriority(os.PRIO_PROCESS, int(task.name), TRANSFORM_NICE)


class TransformPool:
    """Runs transforms in at most `slots` threads; see the module docstring for the bounds."""

    def __init__(
        self, config: TransformConfig, work: Work | None = None, tracer: Tracer | None = None
    ) -> None:
        self._slots = default_slots(config)
        self._tracer = tracer  # None: tracing off
        if work is None:
            from imgproxy.transform import engine, info  # the first pyvips import of the process

            engine.configure(threads_per_transform=1)
            lower_libvips_threads()
            work = info.work  # the engine's transform, or fm=json's description
        self._work: Work = work
        self._limits = Limits.from_config(config)
        self._timeout_s = config.timeout_s
        self._max_queue = config.max_queue
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._slots, thread_name_prefix="transform", initializer=lower_priority
        )
        self._free = asyncio.Semaphore(self._slots)
        self._running = 0
        self._queued = 0
        self._counters = _Counters()
        self._idle = asyncio.Event()
        self._idle.set()
        self._cancels: set[threading.Event] = set()  # one per job whose thread has not ended

    async def run(self, source: Source, options: TransformOptions, bucket: FormatBucket) -> TransformResult:
        """The variant, made in a slot; TransformBusy, TransformTimeout or the engine's errors."""
        if self._tracer is not None:
            return await self._traced(None, source, options, bucket)
        await self._take_slot()
        return await self._run_in_slot(source, options, bucket)

    async def run_loaded(
        self, load: Callable[[], Awaitable[Source]], options: TransformOptions, bucket: FormatBucket
    ) -> TransformResult:
        """`run` for a source read only once a slot is ours (`load`), so that jobs waiting for a
        slot hold no source bytes: for sources the caches do not hold already."""
        if self._tracer is not None:
            return await self._traced(load, None, options, bucket)
        await self._take_slot()
        try:
            source = await load()
        except BaseException:
            self._give_back()
            raise
        return await self._run_in_slot(source, options, bucket)

    async def _traced(
        self,
        load: Callable[[], Awaitable[Source]] | None,
        source: Source | None,
        options: TransformOptions,
        bucket: FormatBucket,
    ) -> TransformResult:
        """`run` (a `source`) or `run_loaded` (a `load`) in a "transform" span, whose children are
        the wait for a slot ("transform.queue") and the work in it ("transform.run")."""
        assert self._tracer is not None
        with self._tracer.span("transform") as span:
            with self._tracer.span("transform.queue", attributes={"transform.queued": self._queued}):
                await self._take_slot()
            if load is not None:
                try:
                    source = await load()  # the source's own spans (origin, Redis) go here
                except BaseException:
                    self._give_back()
                    raise
            assert source is not None
            with self._tracer.span("transform.run", attributes={"transform.slots": self._slots}) as run:
                result = await self._run_in_slot(source, options, bucket)
                run.set_attribute("transform.output_bytes", len(result.body))
            span.set_attribute("transform.format", result.format.value)
            return result

    async def _run_in_slot(
        self, source: Source, options: TransformOptions, bucket: FormatBucket
    ) -> TransformResult:
        cancel = threading.Event()
        self._cancels.add(cancel)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, self._work, source, options, bucket, self._limits, cancel)
        job.add_done_callback(lambda finished: self._job_ended(finished, cancel))
        try:
            result = await asyncio.wait_for(asyncio.shield(job), self._timeout_s)
        except TimeoutError:
            cancel.set()
            self._counters.rejected["timeout"] += 1
            raise TransformTimeout(self._timeout_s) from None
        except asyncio.CancelledError:
            cancel.set()
            raise
        except (NotAnImage, SourceTooLarge, BadTransformParameter) as exc:
            self._count_rejection(exc)
            raise
        self._counters.observe(time.perf_counter() - started, result.format.value)
        return result

    async def _take_slot(self) -> None:
        if self._free.locked() and self._queued >= self._max_queue:
            self._counters.rejected["busy"] += 1
            raise TransformBusy(self._retry_after_s())
        self._queued += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._free.acquire()
        except TimeoutError:
            self._counters.rejected["busy"] += 1
            raise TransformBusy(self._retry_after_s()) from None
        finally:
            self._queued -= 1
        self._running += 1
        self._idle.clear()

    def _give_back(self) -> None:
        self._running -= 1
        self._free.release()
        if self._running == 0:
            self._idle.set()

    def _job_ended(self, job: asyncio.Future[TransformResult], cancel: threading.Event) -> None:
        # The thread has returned: only now is its slot free again.
        self._cancels.discard(cancel)
        self._give_back()
        if not job.cancelled() and job.exception() is not None and cancel.is_set():
            self._counters.killed += 1

    def _retry_after_s(self) -> float:
        # About the time the queue ahead needs, from the mean transform time so far (1 s at least,
        # `timeout_s` at most: after that a waiting job gives up anyway).
        done = sum(self._counters.transforms.values())
        mean_s = self._counters.seconds_sum / done if done else 1.0
        return min(max(1.0, math.ceil(mean_s * (self._queued + 1) / self._slots)), max(1.0, self._timeout_s))

    def _count_rejection(self, exc: Exception) -> None:
        reason = (
            "not_an_image"
            if isinstance(exc, NotAnImage)
            else "too_large"
            if isinstance(exc, SourceTooLarge)
            else "bad_parameter"
        )
        self._counters.rejected[reason] += 1

    async def wait_idle(self) -> None:
        """Return once no slot is taken (every thread, timed-out ones included, has ended)."""
        await self._idle.wait()

    def stats(self) -> TransformStats:
        counters = self._counters
        cumulative, total = [], 0
        for bound, count in zip((*SECONDS_BUCKETS, math.inf), counters.buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        return TransformStats(
            slots=self._slots,
            running=self._running,
            queued=self._queued,
            max_queue=self._max_queue,
            transforms=dict(counters.transforms),
            seconds_buckets=tuple(cumulative),
            seconds_sum=counters.seconds_sum,
            rejected=dict(counters.rejected),
            killed=counters.killed,
        )

    async def close(self) -> None:
        """Cancel what runs, wait for the threads, and shut the executor down."""
        for cancel in list(self._cancels):
            cancel.set()
        await self._idle.wait()
        self._executor.shutdown(wait=True)
