"""One process's link to Redis: bounded calls, a circuit breaker and reconnection in the background.

`RedisLink` wraps a `redis.asyncio` client (`Redis.from_url`, or `RedisCluster` when
`redis.cluster` is true; `rediss://` and user/password in the URL work as redis-py parses them).
Every call goes through `call()`: bounded by `redis.timeout_s` (connecting and redis-py's one
retry included), counted by a `CircuitBreaker`, and every
redis-py or socket exception becomes a project error (`RedisUnavailable`, `RedisTimeout`,
`RedisBadReply`). While the breaker is open a call fails at once without touching the network,
so a dead Redis costs nothing per request; a probe task owned by the link pings it every
`redis.breaker_cooldown_s` and closes the breaker when it answers. `up` says whether the last
thing we heard from Redis was an answer.

Nothing here connects eagerly: entering the link never fails because Redis is down (Redis is
optional). Long blocking reads (the purge log's `XREAD BLOCK`) take their own client from
`blocking_client()`, so they never hold a connection of the request path's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

from redis import exceptions as redis_exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from imgproxy.config import RedisConfig
from imgproxy.core.background import stop_task
from imgproxy.core.breaker import BreakerState, CircuitBreaker
from imgproxy.core.errors import CircuitOpen, RedisBadReply, RedisFailure, RedisTimeout, RedisUnavailable
from imgproxy.core.tracing import SpanKind, Tracer

log = logging.getLogger(__name__)

T = TypeVar("T")
Client = Redis | RedisCluster
_CLUSTER_DOWN: Final = (redis_exceptions.ClusterDownError, redis_exceptions.TryAgainError)
_REFUSED: Final = (
    redis_exceptions.OutOfMemoryError,
    redis_exceptions.ReadOnlyError,
    redis_exceptions.NoPermissionError,
)
# What a lost connection can raise from redis-py: its own errors, socket errors, and on uvloop
# (the server's loop) a RuntimeError ("unable to perform operation on <TCPTransport closed=True>;
# the handler is closed") when it writes to a connection the server has just reset (a Redis being
# killed), where asyncio's transports raise an OSError that redis-py turns into ConnectionError.
CONNECTION_LOST: Final = (redis_exceptions.RedisError, OSError, RuntimeError)
# Bytes in, bytes out: values are binary (cache bodies); callers decode the few text replies.
_DECODE: Final = False
_MAX_DOUBLINGS: Final = 30  # 0.01 * 2**30 s is already far beyond any cool-down


def retry_pause_s(config: RedisConfig, failures: int) -> float:
    """How long a task retrying Redis waits after `failures` failures in a row: doubling from
    10 ms, at most `redis.breaker_cooldown_s` (and never an overflow, however many failures)."""
    return min(config.breaker_cooldown_s, 0.01 * 2.0 ** min(failures, _MAX_DOUBLINGS))


@dataclass(frozen=True, slots=True)
class LinkStats:
    """A snapshot of the link's health for `/metrics` and `/admin/cache`."""

    up: bool
    calls: int
    failures: int
    rejected: int  # refused at once while the breaker was open
    breaker_open: bool
    breaker_opened: int


def make_client(config: RedisConfig, socket_timeout_s: float, max_connections: int) -> Client:
    """A redis-py asyncio client for `config.url` whose socket operations give up after the timeout."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": config.timeout_s,
        # One immediate retry on a broken connection only: after a Redis restart every pooled
        # connection is dead, and without it each one would fail a call (and feed the breaker).
        # A refused connect fails twice in microseconds; everything stays within timeout_s.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis_exceptions.ConnectionError,)),
        "decode_responses": _DECODE,
        "health_check_interval": 0,
    }
    if config.cluster:
        return RedisCluster.from_url(config.url, max_connections=max_connections, **common)
    # A blocking pool: beyond max_connections a caller waits (within its timeout) for a connection
    # rather than opening one more, so a burst cannot open thousands of sockets.
    pool = BlockingConnectionPool.from_url(
        config.url, max_connections=max_connections, timeout=config.timeout_s, **common
    )
    return Redis.from_pool(pool)


class RedisLink:
    """The process's Redis client behind a timeout and a breaker; an async context manager."""

    def __init__(
        self,
        config: RedisConfig,
        container: str,
        clock: Callable[[], float] = time.monotonic,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self._tracer = tracer  # None: tracing off
        # Every key this deployment writes starts with this (the container keeps deployments apart).
        self.base = f"{config.prefix}{container}:"
        self._breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s, clock)
        self._client: Client | None = None
        self._probe: asyncio.Task[None] | None = None
        self._up_event = asyncio.Event()  # set while the last thing heard from Redis was an answer
        self._down_event = asyncio.Event()
        self._down_event.set()  # not known to be up until the first answer
        self._stop = asyncio.Event()  # set once the link closes
        # At most max_connections calls at once: redis-py's cluster pool raises at once when it is
        # exhausted (MaxConnectionsError); waiting here, within the call's timeout, is the bound.
        self._slots = asyncio.Semaphore(config.max_connections)
        self._calls = 0
        self._failures = 0
        self._rejected = 0

    async def __aenter__(self) -> RedisLink:
        self._client = make_client(self.config, self.config.timeout_s, self.config.max_connections)
        self._probe = asyncio.create_task(self._probe_loop(), name="redis-probe")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The stop event as well as the cancel: a cancel that lands inside redis-py's connect after
        # a failed AUTH was seen swallowed, leaving the probe asleep for ever.
        self._stop.set()
        await stop_task(self._probe)
        if self._client is not None:
            await _close(self._client)

    @property
    def up(self) -> bool:
        """Whether the last call (or probe) got an answer from Redis."""
        return self._up_event.is_set()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("RedisLink used outside its `async with`")
        return self._client

    def stats(self) -> LinkStats:
        breaker = self._breaker
        return LinkStats(
            up=self.up,
            calls=self._calls,
            failures=self._failures,
            rejected=self._rejected,
            breaker_open=breaker.state is not BreakerState.CLOSED,
            breaker_opened=breaker.opened_count,
        )

    async def wait_up(self) -> None:
        """Return once Redis has answered (at once if it is up)."""
        await self._up_event.wait()

    async def call(
        self,
        op: Callable[[Client], Awaitable[T]],
        *,
        timeout_s: float | None = None,
        client: Client | None = None,
    ) -> T:
        """`op(client)` bounded by `timeout_s` (default `redis.timeout_s`), through the breaker.

        Raises `RedisUnavailable` at once while the breaker is open or after the link closed.
        An error reply (e.g. WRONGTYPE) means Redis is up but the data is not what we expect:
        `RedisBadReply`, without counting against the breaker.
        Traced: one span per call, named after `op` (a lambda: after the function that made it).
        """
        if self._tracer is None:
            return await self._call(op, timeout_s, client)
        name = getattr(op, "__qualname__", "call").split(".<locals>", 1)[0]
        with self._tracer.span(f"redis {name}", SpanKind.CLIENT, {"db.system.name": "redis"}, True):
            return await self._call(op, timeout_s, client)

    async def _call(
        self, op: Callable[[Client], Awaitable[T]], timeout_s: float | None, client: Client | None
    ) -> T:
        if self._stop.is_set():
            raise RedisUnavailable("the Redis link is closed")
        pooled = self.client  # outside the try: used outside its `async with` is a bug, not Redis
        try:
            self._breaker.before_call()
        except CircuitOpen:
            self._rejected += 1
            raise RedisUnavailable("Redis breaker open") from None
        self._calls += 1
        try:
            async with asyncio.timeout(self.config.timeout_s if timeout_s is None else timeout_s):
                if client is not None:  # a client of its own (blocking reads): not the shared pool
                    result = await op(client)
                else:
                    async with self._slots:
                        result = await op(pooled)
        except asyncio.CancelledError:
            self._breaker.abandoned()
            raise
        except (TimeoutError, redis_exceptions.TimeoutError) as exc:
            self._failed()
            raise RedisTimeout(f"no answer from Redis: {type(exc).__name__}") from exc
        except redis_exceptions.MaxConnectionsError as exc:
            self._breaker.abandoned()  # our pool, not Redis: says nothing about Redis's health
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except _CLUSTER_DOWN as exc:
            self._failed()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except _REFUSED as exc:
            # Up, but refusing this (maxmemory reached under noeviction, a read-only replica, ACL):
            # the write is lost, reads still work, so the breaker is not involved.
            self._answered()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except redis_exceptions.ResponseError as exc:
            self._answered()
            raise RedisBadReply(str(exc)) from exc
        except RedisFailure:  # raised by `op` itself on an answer of the wrong shape
            self._answered()
            raise
        except redis_exceptions.RedisClusterException as exc:
            # Not a RedisError: the cluster client's own. No node reachable (it carries the
            # connection's error as its cause, e.g. every node refused or failed AUTH) or a slot
            # no node serves is Redis being away; anything else is a bug of ours.
            if not isinstance(exc, redis_exceptions.SlotNotCoveredError) and not isinstance(
                exc.__cause__, CONNECTION_LOST
            ):
                raise
            self._failed()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except CONNECTION_LOST as exc:
            # Refused, reset, a cluster that lost its slots, or bytes that are not RESP.
            self._failed()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._answered()
        return result

    @contextlib.asynccontextmanager
    async def blocking_client(self, block_s: float) -> AsyncIterator[Client]:
        """A client of its own for calls that block up to `block_s` (one connection per node)."""
        client = make_client(self.config, block_s + self.config.timeout_s, max_connections=2)
        try:
            yield client
        finally:
            await _close(client)

    def _answered(self) -> None:
        self._breaker.succeeded()
        if not self.up:
            log.info("Redis is up")
        self._down_event.clear()
        self._up_event.set()

    def _failed(self) -> None:
        self._failures += 1
        self._breaker.failed()
        if self.up:
            log.warning("Redis is down")
        self._up_event.clear()
        self._down_event.set()

    async def _probe_loop(self) -> None:
        """While Redis is not known to be up, ping it once per cool-down (first ping at once)."""
        first = True
        while not self._stop.is_set():
            await self._down_event.wait()
            if not first:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.breaker_cooldown_s):
                        await self._stop.wait()
                if self._stop.is_set():
                    return
            first = False
            with contextlib.suppress(RedisFailure):
                await self.call(_ping)


async def _ping(client: Client) -> bool:
    answer = await client.ping()
    if answer is not True:
        raise RedisBadReply(f"PING answered {answer!r}")
    return True


async def _close(client: Client) -> None:
    with contextlib.suppress(Exception):  # closing a client whose server is gone must not fail
        await client.aclose()
