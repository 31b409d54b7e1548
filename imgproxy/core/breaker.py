"""A circuit breaker for the origin: stop hammering Azure while it keeps failing.

CLOSED: calls pass; `failure_threshold` consecutive failures open the circuit.
OPEN: calls are refused (`CircuitOpen`, with the seconds left) for `cooldown_s`.
HALF_OPEN: after the cool-down one probe call is let through; its success closes the circuit, its
failure opens it again. A call that ends neither way (cancelled) just frees the probe slot.
Pure state and a clock: no I/O, no asyncio.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from imgproxy.core.errors import CircuitOpen


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of origin calls and refuses calls while open."""

    def __init__(
        self, failure_threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def is_open(self) -> bool:
        """True while calls would be refused (open and still cooling down)."""
        return self._state is BreakerState.OPEN and self._remaining() > 0

    def before_call(self) -> None:
        """Let a call through, or raise `CircuitOpen`."""
        if self._state is BreakerState.OPEN:
            if self._remaining() > 0:
                raise CircuitOpen(self._remaining())
            self._state = BreakerState.HALF_OPEN
        if self._state is BreakerState.HALF_OPEN:
            if self._probing:
                raise CircuitOpen(self._cooldown_s)
            self._probing = True

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False
        self._state = BreakerState.CLOSED

    def failed(self) -> None:
        self._probing = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self.opened_count += 1

    def abandoned(self) -> None:
        """The call ended without telling us anything (e.g. cancelled)."""
        self._probing = False

    def _remaining(self) -> float:
        return max(0.0, self._opened_at + self._cooldown_s - self._clock())
