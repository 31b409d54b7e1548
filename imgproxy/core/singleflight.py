"""Coalesce concurrent calls for one key into a single task.

The first caller for a key starts the work as a task owned by the `SingleFlight`, not by the
caller: a caller that is cancelled (its client went away) stops waiting, but the work goes on for
the others. Every caller waits on the task itself, so all wake the moment it finishes, and all get
its result or its exception. When it finishes the key is forgotten, so a later call starts afresh
(a failure is never remembered). After `forget(key)` new callers start a new task even while the
old one is still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FlightResult(Generic[T]):
    """The result of `SingleFlight.do`, and whether this caller joined someone else's call."""

    value: T
    shared: bool


class SingleFlight(Generic[T]):
    """At most one running task per key; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Task[T]] = {}
        self._running: set[asyncio.Task[T]] = set()
        self._waiting: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> FlightResult[T]:
        """Run `work()` for `key`, or join the call already running for it."""
        task = self._calls.get(key)
        shared = task is not None
        if task is None:
            task = self._start(key, work)
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            # shield: cancelling this caller must not cancel the shared task.
            return FlightResult(await asyncio.shield(task), shared)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]

    def waiting(self, key: str) -> int:
        """Callers currently waiting on `key`."""
        return self._waiting.get(key, 0)

    def launch(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> None:
        """Start `work()` for `key` in the background unless a call for it is already running."""
        if key not in self._calls:
            self._start(key, work)

    def forget(self, key: str) -> None:
        """Let the next caller for `key` start a new task; the running one finishes unobserved."""
        self._calls.pop(key, None)

    def forget_where(self, matches: Callable[[str], bool]) -> None:
        """`forget` every key that `matches` accepts."""
        for key in [key for key in self._calls if matches(key)]:
            del self._calls[key]

    def forget_all(self) -> None:
        """`forget` every key."""
        self._calls.clear()

    async def close(self) -> None:
        """Cancel every running task and wait for them (application shutdown)."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        if tasks:
            # asyncio.wait, not `await task`: a cancellation of close() itself must propagate.
            await asyncio.wait(tasks)

    def _start(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        task = asyncio.create_task(work())
        self._calls[key] = task
        self._running.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        self._running.discard(task)
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter may have gone away
