"""RedisLink against a real redis-server: bounded calls, the breaker, recovery, errors, auth."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from devtools.redis_server import RedisServer, free_port, run_redis
from imgproxy.core.errors import RedisBadReply, RedisTimeout, RedisUnavailable
from imgproxy.replication.link import Client, RedisLink, retry_pause_s
from tests.support.redis_fixtures import RedisTarget, redis_config
from tests.support.redis_partition import partitioned
from tests.support.tcp_proxy import TcpProxy
from tests.support.tls import loopback_tls


async def ping(client: Client) -> bool:
    return bool(await client.ping())


def test_the_retry_pause_doubles_up_to_the_cool_down_and_never_overflows() -> None:
    """10 ms doubling per failure, capped at the breaker's cool-down, for any number of failures
    (2**1024 as a float overflowed: a Redis refusing one command ended the retrying task)."""
    config = redis_config("redis://127.0.0.1:1/0", breaker_cooldown_s=2.0)
    assert [retry_pause_s(config, n) for n in (0, 1, 3)] == [0.01 * 2**n for n in (0, 1, 3)]
    assert retry_pause_s(config, 8) == 2.0
    assert all(retry_pause_s(config, n) == 2.0 for n in (1024, 10**6))


async def test_entering_the_link_does_not_fail_while_redis_is_down() -> None:
    """A link to a port nobody listens on opens, reports down, and its calls fail fast."""
    config = redis_config(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    async with RedisLink(config, "images") as link:
        assert not link.up
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await link.call(ping)
        assert time.monotonic() - started < 0.2
        assert not link.up


async def test_a_call_round_trips_and_the_link_is_up(redis_target: RedisTarget) -> None:
    """SET then GET through the link returns the bytes, and `up` turns true."""
    async with RedisLink(redis_target.config(), "images") as link:
        key = link.base + "k"
        await link.call(lambda c: c.set(key, b"v\x00\xff", px=10_000))
        assert await link.call(lambda c: c.get(key)) == b"v\x00\xff"
        assert link.up
        assert link.stats().failures == 0


async def test_more_concurrent_calls_than_connections_wait_their_turn(redis_target: RedisTarget) -> None:
    """200 calls at once over 2 connections all succeed (the cluster pool would refuse the excess)."""
    async with RedisLink(redis_target.config(max_connections=2, timeout_s=5.0), "images") as link:
        results = await asyncio.gather(*(link.call(ping) for _ in range(200)))
        assert all(results)
        assert link.stats().failures == 0 and not link.stats().breaker_open


async def test_killed_redis_opens_the_breaker_and_rejected_calls_cost_nothing(own_redis: RedisServer) -> None:
    """After SIGKILL the breaker opens; calls then fail at once without touching the network."""
    config = redis_config(own_redis.url, breaker_failures=3, breaker_cooldown_s=30.0)
    async with RedisLink(config, "images") as link:
        await link.wait_up()
        own_redis.kill()
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.call(ping)
        stats = link.stats()
        assert stats.breaker_open and not stats.up and stats.breaker_opened == 1
        started = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(RedisUnavailable):
                await link.call(ping)
        per_call_s = (time.perf_counter() - started) / 1000
        assert per_call_s < 0.001
        assert link.stats().calls == stats.calls  # none of the 1000 reached the client
        assert link.stats().rejected == stats.rejected + 1000


async def test_the_probe_closes_the_breaker_when_redis_is_back(own_redis: RedisServer) -> None:
    """Redis restarted (empty, same port): the background probe finds it and the link is up again."""
    config = redis_config(own_redis.url, breaker_failures=1, breaker_cooldown_s=0.05)
    async with RedisLink(config, "images") as link:
        await link.wait_up()
        own_redis.kill()
        with pytest.raises(RedisUnavailable):
            await link.call(ping)
        assert link.stats().breaker_open
        own_redis.start()
        async with asyncio.timeout(5):
            await link.wait_up()
        assert await link.call(ping)
        assert not link.stats().breaker_open


async def test_a_client_cut_off_from_redis_is_unavailable_then_up_again_once_healed(
    redis_target: RedisTarget,
) -> None:
    """Cut off (standalone: connections reset; cluster: every node refuses the client at AUTH),
    calls fail as RedisUnavailable and count against the breaker; healed, the probe brings the
    link up again."""
    cut_off = partitioned(redis_target, redis_target.config(breaker_cooldown_s=0.05))
    async with cut_off as (config, partition), RedisLink(config, "images") as link:
        assert await link.call(ping)
        partition.cut()
        with pytest.raises(RedisUnavailable):
            await link.call(ping)
        assert not link.up and link.stats().failures >= 1
        partition.heal()
        async with asyncio.timeout(5):
            await link.wait_up()
        assert await link.call(ping)


async def test_a_hung_redis_costs_at_most_timeout_s_per_call(own_redis: RedisServer) -> None:
    """A stopped (SIGSTOP) server does not answer: the call gives up after `redis.timeout_s`."""
    config = redis_config(own_redis.url, timeout_s=0.1, breaker_failures=100)
    async with RedisLink(config, "images") as link:
        await link.wait_up()
        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeout):
                await link.call(ping)
            assert time.monotonic() - started < 0.3
            assert not link.up
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        assert await link.call(ping)


async def test_a_wrong_type_reply_is_a_bad_reply_and_leaves_the_breaker_closed(
    redis_target: RedisTarget,
) -> None:
    """GET of a list is WRONGTYPE: RedisBadReply, the link stays up, no failure is counted."""
    async with RedisLink(redis_target.config(breaker_failures=1), "images") as link:
        key = link.base + "list"
        await link.call(lambda c: c.rpush(key, b"x"))
        with pytest.raises(RedisBadReply):
            await link.call(lambda c: c.get(key))
        assert link.up and not link.stats().breaker_open
        assert link.stats().failures == 0


async def test_user_and_password_in_the_url_are_used() -> None:
    """An ACL user given as redis://user:password@host works; a wrong password is refused."""
    acl = ("--user", "default", "off", "--user", "app", "on", ">s3cret", "~*", "&*", "+@all")
    with run_redis(extra_args=acl) as server:
        good = redis_config(f"redis://app:s3cret@{server.address}/0")
        async with RedisLink(good, "images") as link:
            assert await link.call(ping)
        bad = redis_config(f"redis://app:wrong@{server.address}/0")
        async with RedisLink(bad, "images") as link:
            with pytest.raises(RedisUnavailable):
                await link.call(ping)


async def test_closing_the_link_ends_its_probe_and_refuses_calls(redis_server: RedisServer) -> None:
    """After the `async with`, calls are refused and no task of the link is left running."""
    async with RedisLink(redis_config(redis_server.url), "images") as link:
        await link.wait_up()
    with pytest.raises(RedisUnavailable):
        await link.call(ping)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "redis-probe"]


async def test_a_rediss_url_speaks_verified_tls(redis_server: RedisServer, tmp_path: Path) -> None:
    """rediss:// through a TLS terminator: works with its CA, refused without (the certificate is checked)."""
    tls = loopback_tls(tmp_path)
    proxy = TcpProxy(redis_server.host, redis_server.port, tls=tls.server)
    await proxy.start()
    try:
        assert proxy.url.startswith("rediss://")
        trusted = redis_config(f"{proxy.url}?ssl_ca_certs={tls.cert_file}")
        async with RedisLink(trusted, "images") as link:
            assert await link.call(ping)
        untrusted = redis_config(proxy.url)
        async with RedisLink(untrusted, "images") as link:
            with pytest.raises(RedisUnavailable):
                await link.call(ping)
    finally:
        await proxy.close()


class ResetAfterAccept:
    """A listener that accepts each connection and resets it (RST) a few microseconds later, as a
    redis-server being killed does to the connections it has just accepted. A thread of its own,
    so the reset lands independently of the event loop under test."""

    DELAYS_S = (0.0, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005)

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so the thread sees `close` (closing does not wake accept)
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="reset-after-accept")
        self._thread.start()

    def _serve(self) -> None:
        delays = itertools.cycle(self.DELAYS_S)
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            time.sleep(next(delays))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()


def test_a_connection_reset_right_after_accept_is_unavailable_on_uvloop_too() -> None:
    """On uvloop (the server's loop) redis-py writing its handshake to a connection the server has
    just reset raises RuntimeError ("the handler is closed") where asyncio raises an OSError. It is
    a Redis failure like any other: RedisUnavailable, never an exception that reaches a request
    (a 500) or ends the link's probe. Found by the process-level test that kills Redis under load."""
    import uvloop

    server = ResetAfterAccept()
    outcomes: collections.Counter[str] = collections.Counter()

    async def scenario() -> None:
        config = redis_config(f"redis://127.0.0.1:{server.port}/0", breaker_failures=10**9)
        async with RedisLink(config, "images") as link:  # exiting re-raises what ended its probe
            for _ in range(3000):  # until the reset has landed between connect and handshake
                try:
                    await link.call(ping)
                except RedisUnavailable as exc:
                    outcomes["transport closed" if isinstance(exc.__cause__, RuntimeError) else "other"] += 1
                if outcomes["transport closed"] >= 1:
                    break

    try:
        uvloop.run(scenario())
    finally:
        server.close()
    if not outcomes["transport closed"]:
        pytest.skip(f"the reset never landed between connect and handshake: {dict(outcomes)}")
