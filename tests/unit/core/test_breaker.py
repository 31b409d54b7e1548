"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from imgproxy.core.breaker import BreakerState, CircuitBreaker
from imgproxy.core.errors import CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state afresh (mypy would otherwise keep a narrowed earlier value)."""
    return breaker.state


def make(threshold: int = 3, cooldown: float = 5.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(threshold, cooldown, clock), clock


def test_opens_after_threshold_consecutive_failures() -> None:
    """Only `failure_threshold` failures in a row open the circuit."""
    breaker, _ = make(threshold=3)
    for _ in range(2):
        breaker.before_call()
        breaker.failed()
    assert state(breaker) is BreakerState.CLOSED
    breaker.before_call()
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.is_open()


def test_success_resets_the_failure_count() -> None:
    """A success between failures starts the count again."""
    breaker, _ = make(threshold=2)
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert state(breaker) is BreakerState.CLOSED


def test_open_refuses_with_remaining_cooldown() -> None:
    """While open, calls are refused with the seconds left of the cool-down."""
    breaker, clock = make(threshold=1, cooldown=5.0)
    breaker.failed()
    clock.now += 2.0
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after_s == pytest.approx(3.0)


def test_half_open_lets_exactly_one_probe_through() -> None:
    """After the cool-down one probe passes; others are refused until it ends."""
    breaker, clock = make(threshold=1, cooldown=5.0)
    breaker.failed()
    clock.now += 5.0
    assert not breaker.is_open()
    breaker.before_call()
    assert state(breaker) is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_probe_success_closes_and_failure_reopens() -> None:
    """The probe's outcome decides: success closes, failure opens for a new cool-down."""
    breaker, clock = make(threshold=1, cooldown=5.0)
    breaker.failed()
    clock.now += 5.0
    breaker.before_call()
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN
    assert breaker.opened_count == 2
    clock.now += 5.0
    breaker.before_call()
    breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED
    breaker.before_call()  # and calls flow again


def test_abandoned_probe_frees_the_slot() -> None:
    """A probe that was cancelled lets the next call probe instead."""
    breaker, clock = make(threshold=1, cooldown=1.0)
    breaker.failed()
    clock.now += 1.0
    breaker.before_call()
    breaker.abandoned()
    breaker.before_call()
    assert state(breaker) is BreakerState.HALF_OPEN
