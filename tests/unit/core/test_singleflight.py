"""Unit tests for `imgproxy.core.singleflight`: one task per key, shared by every concurrent caller."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from imgproxy.core.singleflight import FlightResult, SingleFlight


class Boom(Exception):
    """The failure the work raises in these tests."""


class Work:
    """A controllable piece of work: counts its runs, waits for `release`, then returns or raises."""

    def __init__(self, value: str = "value", error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.finished.set()
        if self.error is not None:
            raise self.error
        return f"{self.value}-{self.runs}"


async def wait_until(predicate: Callable[[], bool], limit: int = 100) -> None:
    """Yield to the event loop until `predicate()` holds (bounded: fails instead of hanging)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def start_callers(
    flight: SingleFlight[str], key: str, work: Callable[[], Coroutine[Any, Any, str]], count: int
) -> list[asyncio.Task[FlightResult[str]]]:
    """`count` concurrent callers of `flight.do(key, work)`."""
    return [asyncio.create_task(flight.do(key, work)) for _ in range(count)]


async def test_concurrent_callers_share_one_run_of_work() -> None:
    """N concurrent callers run the work once, all get its value, and exactly one is not shared."""
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    callers = start_callers(flight, "k", work, 5)
    await work.started.wait()
    await wait_until(lambda: flight.waiting("k") == 5)
    assert len(flight) == 1
    work.release.set()
    outcomes = await asyncio.gather(*callers)
    assert work.runs == 1
    assert {outcome.value for outcome in outcomes} == {"value-1"}
    assert [outcome.shared for outcome in outcomes].count(False) == 1
    assert outcomes[0].shared is False  # the first caller started the work
    assert len(flight) == 0
    assert flight.waiting("k") == 0


async def test_call_after_completion_runs_work_again() -> None:
    """A finished call is forgotten: the next caller starts a new run and is not shared."""
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.release.set()
    first = await flight.do("k", work)
    second = await flight.do("k", work)
    assert first == FlightResult("value-1", False)
    assert second == FlightResult("value-2", False)
    assert work.runs == 2


async def test_exception_reaches_every_caller_and_is_not_remembered() -> None:
    """A failure propagates to all waiters, and the next call runs the work again."""
    flight: SingleFlight[str] = SingleFlight()
    work = Work(error=Boom("origin down"))
    callers = start_callers(flight, "k", work, 4)
    await wait_until(lambda: flight.waiting("k") == 4)
    work.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, Boom) for result in results)
    assert work.runs == 1
    assert len(flight) == 0

    work.error = None
    outcome = await flight.do("k", work)
    assert outcome == FlightResult("value-2", False)
    assert work.runs == 2


async def test_cancelling_one_waiter_does_not_cancel_work_for_others() -> None:
    """A caller that is cancelled stops waiting, but the work finishes and the others get its value."""
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    callers = start_callers(flight, "k", work, 3)
    await wait_until(lambda: flight.waiting("k") == 3)
    callers[0].cancel()  # the caller that started the work
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    assert flight.waiting("k") == 2
    assert not work.cancelled
    work.release.set()
    outcomes = await asyncio.gather(*callers[1:])
    assert [outcome.value for outcome in outcomes] == ["value-1", "value-1"]
    assert all(outcome.shared for outcome in outcomes)
    assert work.runs == 1
    assert not work.cancelled


async def test_cancelling_all_waiters_lets_work_complete() -> None:
    """With every caller gone the work still runs to its end and the key is then forgotten."""
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    callers = start_callers(flight, "k", work, 3)
    await wait_until(lambda: flight.waiting("k") == 3)
    for caller in callers:
        caller.cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    assert flight.waiting("k") == 0
    assert len(flight) == 1  # still running, unobserved
    work.release.set()
    await work.finished.wait()
    await wait_until(lambda: len(flight) == 0)
    assert not work.cancelled
    assert work.runs == 1


def collect_loop_errors() -> list[dict[str, Any]]:
    """Record what the running loop reports to its exception handler (e.g. unretrieved exceptions)."""
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
    return reported


async def test_harness_detects_unretrieved_task_exception() -> None:
    """Control for the next test: a failed task nobody awaited is reported once collected."""
    reported = collect_loop_errors()

    async def fail() -> None:
        raise Boom("nobody looks")

    task = asyncio.create_task(fail())
    await wait_until(task.done)
    del task
    gc.collect()
    assert any("never retrieved" in str(context.get("message")) for context in reported)


async def test_failure_with_all_waiters_cancelled_is_not_reported_as_unretrieved() -> None:
    """If every caller is cancelled and the work then fails, no "exception was never retrieved" is logged."""
    reported = collect_loop_errors()
    flight: SingleFlight[str] = SingleFlight()
    work = Work(error=Boom("nobody left to tell"))
    callers = start_callers(flight, "k", work, 2)
    await wait_until(lambda: flight.waiting("k") == 2)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    work.release.set()
    await work.finished.wait()
    await wait_until(lambda: len(flight) == 0)
    del callers
    gc.collect()
    assert reported == []


async def test_failed_launch_without_waiters_is_not_reported_as_unretrieved() -> None:
    """A background `launch` that fails with nobody waiting does not log "exception was never retrieved"."""
    reported = collect_loop_errors()
    flight: SingleFlight[str] = SingleFlight()
    work = Work(error=Boom("background refresh failed"))
    flight.launch("k", work)
    await work.started.wait()
    work.release.set()
    await work.finished.wait()
    await wait_until(lambda: len(flight) == 0)
    gc.collect()
    assert reported == []


async def test_forget_lets_next_caller_start_new_task_while_old_runs() -> None:
    """After `forget(key)` a new caller starts a fresh run; the old run finishes for its own waiters."""
    flight: SingleFlight[str] = SingleFlight()
    old_work = Work("old")
    new_work = Work("new")
    old_caller = asyncio.create_task(flight.do("k", old_work))
    await old_work.started.wait()
    flight.forget("k")
    assert len(flight) == 0
    new_caller = asyncio.create_task(flight.do("k", new_work))
    await new_work.started.wait()
    assert len(flight) == 1
    assert flight.waiting("k") == 2

    old_work.release.set()
    assert await old_caller == FlightResult("old-1", False)
    assert len(flight) == 1  # the old run finishing must not drop the new run's registration

    joiner = asyncio.create_task(flight.do("k", old_work))
    await wait_until(lambda: flight.waiting("k") == 2)
    new_work.release.set()
    assert await new_caller == FlightResult("new-1", False)
    assert await joiner == FlightResult("new-1", True)
    assert old_work.runs == 1
    assert new_work.runs == 1
    assert len(flight) == 0


async def test_forget_all_releases_every_key() -> None:
    """`forget_all()` lets new callers of every key start fresh runs."""
    flight: SingleFlight[str] = SingleFlight()
    works = {key: Work(key) for key in ("a", "b")}
    old = [asyncio.create_task(flight.do(key, work)) for key, work in works.items()]
    await wait_until(lambda: all(work.started.is_set() for work in works.values()))
    flight.forget_all()
    assert len(flight) == 0
    for work in works.values():
        work.release.set()
    assert [outcome.value for outcome in await asyncio.gather(*old)] == ["a-1", "b-1"]
    assert (await flight.do("a", works["a"])) == FlightResult("a-2", False)


async def test_close_cancels_running_work() -> None:
    """`close()` cancels every running task, waits for it, and its waiters see the cancellation."""
    flight: SingleFlight[str] = SingleFlight()
    work_a = Work("a")
    work_b = Work("b")
    caller_a = asyncio.create_task(flight.do("a", work_a))
    await work_a.started.wait()
    flight.launch("b", work_b)  # a background run with no waiter at all
    await work_b.started.wait()
    closer = asyncio.create_task(flight.close())
    # A safety bound only (not synchronisation): a close() that does not cancel fails instead of hanging.
    done, _ = await asyncio.wait({closer}, timeout=5)
    if not done:
        work_a.release.set()
        work_b.release.set()
        await closer
        pytest.fail("close() did not cancel the running work")
    assert work_a.cancelled
    assert work_b.cancelled
    assert work_a.finished.is_set()
    assert work_b.finished.is_set()
    with pytest.raises(asyncio.CancelledError):
        await caller_a
    await wait_until(lambda: len(flight) == 0)


async def test_cancelling_close_propagates_cancellation() -> None:
    """A close() that is itself cancelled while a task is slow to wind down raises CancelledError."""
    flight: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()
    cancel_seen = asyncio.Event()
    allow_exit = asyncio.Event()
    finished = asyncio.Event()

    async def slow_to_cancel() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancel_seen.set()
            await allow_exit.wait()  # cleanup that takes a while
            raise
        finally:
            finished.set()
        return "unreachable"

    flight.launch("k", slow_to_cancel)
    await started.wait()
    closer = asyncio.create_task(flight.close())
    await cancel_seen.wait()
    closer.cancel()
    try:
        results = await asyncio.gather(closer, return_exceptions=True)
    finally:
        allow_exit.set()
        await finished.wait()
    assert isinstance(results[0], asyncio.CancelledError)


async def test_close_with_nothing_running_returns() -> None:
    """`close()` on an idle SingleFlight is a no-op."""
    flight: SingleFlight[str] = SingleFlight()
    await flight.close()
    assert len(flight) == 0


async def test_different_keys_run_independently() -> None:
    """Calls for different keys each run their own work and finish in their own time."""
    flight: SingleFlight[str] = SingleFlight()
    work_a = Work("a")
    work_b = Work("b")
    caller_a = asyncio.create_task(flight.do("a", work_a))
    caller_b = asyncio.create_task(flight.do("b", work_b))
    await work_a.started.wait()
    await work_b.started.wait()
    assert len(flight) == 2
    work_b.release.set()
    assert await caller_b == FlightResult("b-1", False)
    assert not caller_a.done()
    assert len(flight) == 1
    work_a.release.set()
    assert await caller_a == FlightResult("a-1", False)
    assert work_a.runs == 1
    assert work_b.runs == 1


async def test_len_counts_running_keys() -> None:
    """`len()` is the number of keys with a run in progress, not the number of callers."""
    flight: SingleFlight[str] = SingleFlight()
    assert len(flight) == 0
    works = {key: Work(key) for key in ("a", "b", "c")}
    callers = [asyncio.create_task(flight.do(key, work)) for key, work in works.items() for _ in range(2)]
    await wait_until(lambda: all(flight.waiting(key) == 2 for key in works))
    assert len(flight) == 3
    works["a"].release.set()
    await works["a"].finished.wait()
    await wait_until(lambda: len(flight) == 2)
    for work in works.values():
        work.release.set()
    await asyncio.gather(*callers)
    assert len(flight) == 0


async def test_launch_is_joined_by_later_callers_and_skipped_when_running() -> None:
    """`launch` starts a background run that `do` joins, and does nothing if a run is already going."""
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    other = Work("other")
    flight.launch("k", work)
    await work.started.wait()
    flight.launch("k", other)
    caller = asyncio.create_task(flight.do("k", other))
    await wait_until(lambda: flight.waiting("k") == 1)
    work.release.set()
    assert await caller == FlightResult("value-1", True)
    assert other.runs == 0
