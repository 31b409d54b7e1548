"""Readiness: has the origin answered a cheap check recently?

A check runs on demand when the last result is older than `origin.ready_check_interval_s`;
concurrent probes share one check, so load balancers polling many times a second cost Azure at
most one request per interval. Liveness (`/healthz`) never comes here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from imgproxy.core.errors import OriginError
from imgproxy.core.singleflight import SingleFlight
from imgproxy.core.stats import FetchCounters
from imgproxy.origin import Origin


class Readiness:
    """The cached outcome of the origin's readiness check."""

    def __init__(
        self,
        origin: Origin,
        interval_s: float,
        counters: FetchCounters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._origin = origin
        self._interval_s = interval_s
        self._counters = counters
        self._clock = clock
        self._flight: SingleFlight[bool] = SingleFlight()
        self._checked_at: float | None = None
        self._ready = False
        self.draining = False

    async def is_ready(self) -> bool:
        """True if the origin passed its check within the interval (checking again if due)."""
        if self.draining or self._origin.is_refusing():
            return False
        if self._checked_at is not None and self._clock() - self._checked_at < self._interval_s:
            return self._ready
        return (await self._flight.do("check", self._check)).value

    async def close(self) -> None:
        await self._flight.close()

    async def _check(self) -> bool:
        self._counters.origin_fetches += 1
        try:
            await self._origin.check()
            ready = True
        except OriginError:
            self._counters.origin_errors += 1
            ready = False
        self._ready, self._checked_at = ready, self._clock()
        return ready
