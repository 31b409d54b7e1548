"""Background tasks a component starts and owns: cancelled and awaited when it closes.

A task nobody awaits would hide its failure; each one's failure is logged when it ends.
`stop_task` ends one task a component keeps for its lifetime (a probe, a follower, a renewer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final

log = logging.getLogger(__name__)

RECANCEL_S: Final = 0.5  # how often `stop_task` cancels again a task that has not ended


class Background:
    """The tasks of one owner (write-throughs, disk fills, shared-tier stores)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background task failed: %s: %s", type(exc).__name__, exc)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `RECANCEL_S` while it
    has not (a cancel that lands inside redis-py's connect after a failed AUTH was seen swallowed).
    The task's own failure, if it failed, is raised; a cancel of the caller is not swallowed."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_S)
    if not task.cancelled():
        task.result()
