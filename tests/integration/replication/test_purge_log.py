"""The purge log against a real redis-server (and a three-master cluster): append, follow, recover."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from devtools.redis_server import RedisServer, cli
from imgproxy.config import RedisConfig
from imgproxy.replication.link import Client, RedisLink
from imgproxy.replication.purge_log import LogCursor, PurgeLog, log_keys
from imgproxy.replication.purge_records import Purge
from tests.helpers import wait_until
from tests.support.redis_fixtures import RedisTarget, redis_config
from tests.support.redis_partition import partitioned
from tests.support.tcp_proxy import TcpProxy

WAIT_S = 10.0  # bound on every wait for a purge or an emptying


class Replica:
    """A follower as a replica runs it: its own link, its own log, callbacks recorded as events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.purges: asyncio.Queue[Purge] = asyncio.Queue()
        self.emptied: asyncio.Queue[None] = asyncio.Queue()
        self.log: PurgeLog | None = None
        self.link: RedisLink | None = None

    async def on_purge(self, purge: Purge) -> None:
        self.purges.put_nowait(purge)

    async def on_lost(self) -> None:
        self.emptied.put_nowait(None)

    async def next_purge(self) -> Purge:
        async with asyncio.timeout(WAIT_S):
            return await self.purges.get()

    async def next_emptying(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.emptied.get()

    async def append_once_up(self, path: str) -> None:
        """Wait until this replica's link is up again, then append (which must succeed)."""
        assert self.link is not None
        async with asyncio.timeout(WAIT_S):
            await self.link.wait_up()
        assert await self.purge_log.append(path)

    async def more_checks(self, count: int) -> None:
        """Wait (bounded) until the follower has compared the stream's end with its id `count`
        more times (a counter: there is no event for it)."""
        target = self.purge_log.stats().checks + count
        await wait_until(lambda: self.purge_log.stats().checks >= target, timeout_s=WAIT_S)

    async def link_call(self, op: Callable[[Client], Awaitable[Any]]) -> Any:
        """One command through this replica's link (e.g. to trim or dump the stream)."""
        assert self.link is not None
        return await self.link.call(op)

    @property
    def purge_log(self) -> PurgeLog:
        assert self.log is not None
        return self.log


@asynccontextmanager
async def replica(config: RedisConfig, name: str, resume: LogCursor | None = None) -> AsyncIterator[Replica]:
    """A replica following the log, synced before the block starts."""
    rep = Replica(name)
    async with (
        RedisLink(config, "images") as link,
        PurgeLog(link, name, rep.on_purge, rep.on_lost, resume) as log,
    ):
        rep.log, rep.link = log, link
        async with asyncio.timeout(WAIT_S):
            await log.wait_following()
        yield rep


@asynccontextmanager
async def replicas(config: RedisConfig, count: int) -> AsyncIterator[list[Replica]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(replica(config, f"r{i}")) for i in range(count)]


async def test_a_purge_appended_on_one_replica_is_applied_once_by_the_two_others(
    redis_target: RedisTarget,
) -> None:
    """Three followers: a path purge and a purge of everything reach the others, not the appender."""
    async with replicas(redis_target.config(), 3) as (a, b, c):
        assert await a.purge_log.append("x/y.png")
        assert await b.purge_log.append(None)
        for other in (b, c):
            first = await other.next_purge()
            assert (first.path, first.replica) == ("x/y.png", "r0")
        second = await c.next_purge()
        assert (second.path, second.replica) == (None, "r1")
        assert (await a.next_purge()).path is None
        assert a.purge_log.stats().skipped_own == 1 and b.purge_log.stats().skipped_own == 1
        assert a.purges.empty() and b.purges.empty() and c.purges.empty()
        assert all(r.emptied.empty() for r in (a, b, c))


async def test_stream_and_epoch_share_one_cluster_slot(redis_target: RedisTarget) -> None:
    """The log's keys carry one hash tag (its scripts touch both in one call)."""
    stream, epoch = log_keys("imgproxy:images:")
    assert stream.startswith("imgproxy:images:") and "{purge-log}" in stream and "{purge-log}" in epoch
    if redis_target.cluster:
        assert redis_target.keyslot(stream) == redis_target.keyslot(epoch)


async def test_a_follower_stopped_while_purges_are_appended_resumes_and_applies_them(
    redis_target: RedisTarget,
) -> None:
    """A follower restarted from its saved cursor applies, in order, what was appended while it was down."""
    config = redis_target.config()
    async with replica(config, "appender") as appender:
        async with replica(config, "b") as b:
            cursor = b.purge_log.cursor
        assert cursor is not None
        for i in range(5):
            assert await appender.purge_log.append(f"p{i}.png")
        async with replica(config, "b", resume=cursor) as b_again:
            assert [(await b_again.next_purge()).path for _ in range(5)] == [f"p{i}.png" for i in range(5)]
            assert b_again.emptied.empty()


async def test_a_follower_cut_off_from_redis_applies_what_was_appended_meanwhile(
    redis_server: RedisServer,
) -> None:
    """A partition (connections reset, then refused) is survived: after it heals the follower catches up."""
    proxy = TcpProxy(redis_server.host, redis_server.port)
    await proxy.start()
    try:
        direct = redis_config(redis_server.url, breaker_cooldown_s=0.05, log_block_s=0.2)
        through_proxy = redis_config(
            proxy.url, prefix=direct.prefix, breaker_cooldown_s=0.05, log_block_s=0.2
        )
        async with replica(direct, "a") as a, replica(through_proxy, "b") as b:
            proxy.cut()
            for i in range(3):
                assert await a.purge_log.append(f"cut{i}.png")
            proxy.heal()
            assert [(await b.next_purge()).path for _ in range(3)] == ["cut0.png", "cut1.png", "cut2.png"]
            assert b.emptied.empty()
    finally:
        await proxy.close()


async def test_a_stream_trimmed_past_a_followers_id_makes_it_empty_itself_once(
    redis_target: RedisTarget,
) -> None:
    """MAXLEN trimmed away entries a stopped follower never read: it empties its caches once, then follows."""
    config = redis_target.config(log_max_len=10)
    async with replica(config, "appender") as appender:
        async with replica(config, "b") as b:
            cursor = b.purge_log.cursor
        for i in range(300):  # MAXLEN ~ trims whole nodes of 100 entries: well past b's id
            assert await appender.purge_log.append(f"t{i}.png")
        async with replica(config, "b", resume=cursor) as b_again:
            await b_again.next_emptying()
            assert await appender.purge_log.append("after.png")
            assert (await b_again.next_purge()).path == "after.png"
            assert b_again.emptied.empty()
            assert b_again.purge_log.stats().lost == 1


async def test_redis_restarted_empty_makes_every_follower_empty_itself_then_resume(
    own_redis: RedisServer,
) -> None:
    """Killed and restarted empty: each follower empties itself once, then applies new purges."""
    config = redis_config(own_redis.url, breaker_cooldown_s=0.05, log_block_s=0.2)
    async with replicas(config, 3) as (a, b, c):
        own_redis.restart()
        for r in (a, b, c):
            await r.next_emptying()
        await a.append_once_up("new.png")
        for r in (b, c):
            assert (await r.next_purge()).path == "new.png"
        assert all(r.emptied.empty() for r in (a, b, c))


async def test_append_returns_false_fast_while_redis_is_dead_and_true_when_it_is_back(
    own_redis: RedisServer,
) -> None:
    """Killed Redis: append answers False within timeout_s, then at once (breaker); True after restart."""
    config = redis_config(own_redis.url, timeout_s=0.1, breaker_failures=2, breaker_cooldown_s=0.05)
    async with replica(config, "a") as a:
        link_stats_before = a.purge_log.stats().appended
        own_redis.kill()
        for _ in range(5):
            started = time.monotonic()
            assert not await a.purge_log.append("x.png")
            assert time.monotonic() - started < 0.15
        assert a.purge_log.stats().append_failures == 5
        own_redis.start()
        await a.append_once_up("x.png")
        assert a.purge_log.stats().appended == link_stats_before + 1


@pytest.mark.parametrize("which", ["stream", "epoch"])
async def test_a_log_key_holding_garbage_is_started_afresh(redis_server: RedisServer, which: str) -> None:
    """A string for the stream, or a list for the epoch: followers empty themselves, the log is rebuilt."""
    config = redis_config(redis_server.url, breaker_cooldown_s=0.05, log_block_s=0.2)
    stream, epoch = log_keys(f"{config.prefix}images:")
    async with replicas(config, 2) as (a, b):
        if which == "stream":
            cli(redis_server, "SET", stream, "garbage")
        else:
            cli(redis_server, "DEL", epoch)
            cli(redis_server, "RPUSH", epoch, "garbage")
        await a.next_emptying()
        await b.next_emptying()
        await a.append_once_up("fresh.png")
        purge = await b.next_purge()
        assert (purge.path, purge.replica) == ("fresh.png", "r0")


async def test_an_entry_that_is_not_ours_empties_the_followers_once(redis_server: RedisServer) -> None:
    """An XADD by someone else (fields we do not know) cannot be trusted: emptied once, then following."""
    config = redis_config(redis_server.url, log_block_s=0.2)
    stream, _ = log_keys(f"{config.prefix}images:")
    async with replicas(config, 2) as (a, b):
        cli(redis_server, "XADD", stream, "*", "what", "ever")
        await b.next_emptying()
        assert await a.purge_log.append("later.png")
        assert (await b.next_purge()).path == "later.png"
        assert b.emptied.empty()


@pytest.mark.parametrize("name", ["a b.png", "ünï/cödé.png", "x" * 1024])
async def test_any_valid_path_travels_unchanged(redis_server: RedisServer, name: str) -> None:
    """Spaces, non-ASCII and 1024-character paths arrive byte for byte."""
    async with replicas(redis_config(redis_server.url), 2) as (a, b):
        assert await a.purge_log.append(name)
        assert (await b.next_purge()).path == name


async def test_a_follower_survives_a_hung_redis_and_applies_what_follows(own_redis: RedisServer) -> None:
    """SIGSTOP longer than a block period, then SIGCONT: the follower reads on, nothing is lost."""
    config = redis_config(own_redis.url, timeout_s=0.1, log_block_s=0.2, breaker_cooldown_s=0.05)
    async with replicas(config, 2) as (a, b):
        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            await wait_until(lambda: not b.purge_log.following)
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        await a.append_once_up("after-hang.png")
        assert (await b.next_purge()).path == "after-hang.png"
        assert b.emptied.empty()


# --- lost entries: the stream's end compared with the follower's ------------------------------


async def test_a_stream_trimmed_empty_while_a_follower_is_cut_off_makes_it_empty_itself_once(
    redis_target: RedisTarget,
) -> None:
    """Cut off while another replica logs a purge and the stream is trimmed to nothing: back, the
    follower finds nothing to read past its id yet the stream moved on, so it empties its caches
    once (not again at later checks), then applies new purges."""
    config = redis_target.config(breaker_cooldown_s=0.05, log_block_s=0.2)
    async with (
        partitioned(redis_target, config) as (cut_config, partition),
        replica(config, "a") as a,
        replica(cut_config, "b") as b,
    ):
        assert await a.purge_log.append("before.png")
        assert (await b.next_purge()).path == "before.png"
        partition.cut()
        assert await a.purge_log.append("missed.png")
        stream = a.purge_log.stream_key
        await a.link_call(lambda c: c.xtrim(stream, maxlen=0, approximate=False))
        partition.heal()
        await b.next_emptying()
        await b.more_checks(3)
        assert await a.purge_log.append("after.png")
        assert (await b.next_purge()).path == "after.png"
        assert b.emptied.empty() and b.purge_log.stats().lost == 1
        assert b.purge_log.stats().applied == 2  # before.png and after.png; missed.png was lost


async def test_a_follower_resumed_after_the_stream_was_trimmed_empty_empties_itself_once(
    redis_target: RedisTarget,
) -> None:
    """Stopped, then a purge is logged and the stream trimmed to nothing: resumed from its saved
    id the follower reads nothing, sees the stream's last id ahead of its own, and empties once."""
    config = redis_target.config(log_block_s=0.2)
    async with replica(config, "appender") as appender:
        async with replica(config, "b") as b:
            cursor = b.purge_log.cursor
        assert await appender.purge_log.append("missed.png")
        stream = appender.purge_log.stream_key
        await appender.link_call(lambda c: c.xtrim(stream, maxlen=0, approximate=False))
        async with replica(config, "b", resume=cursor) as b_again:
            await b_again.next_emptying()
            assert await appender.purge_log.append("after.png")
            assert (await b_again.next_purge()).path == "after.png"
            assert b_again.emptied.empty() and b_again.purge_log.stats().lost == 1


async def test_a_stream_restored_to_an_older_copy_makes_its_followers_empty_themselves_once(
    redis_server: RedisServer,
) -> None:
    """A failover to a replica that lacked the last entry, played as RESTORE of a DUMP taken before
    it: the followers' ids are now ahead of the stream's end, so each empties once; purges
    appended afterwards chain to the restored end and are applied."""
    config = redis_config(redis_server.url, log_block_s=0.2)
    async with replicas(config, 2) as (a, b):
        stream = a.purge_log.stream_key
        assert await a.purge_log.append("one.png")
        assert (await b.next_purge()).path == "one.png"
        older = await a.link_call(lambda c: c.dump(stream))
        assert isinstance(older, bytes)
        assert await a.purge_log.append("two.png")
        assert (await b.next_purge()).path == "two.png"
        await a.link_call(lambda c: c.restore(stream, 0, older, replace=True))
        await a.next_emptying()
        await b.next_emptying()
        assert await a.purge_log.append("three.png")
        assert (await b.next_purge()).path == "three.png"
        assert all(r.emptied.empty() and r.purge_log.stats().lost == 1 for r in (a, b))


async def test_idle_followers_with_nothing_lost_never_empty_themselves(redis_target: RedisTarget) -> None:
    """Many idle checks, purges appended and read, and the stream trimmed to nothing after both
    read everything: no follower empties its caches."""
    config = redis_target.config(log_block_s=0.05)
    async with replicas(config, 2) as (a, b):
        assert await a.purge_log.append("x.png")
        assert (await b.next_purge()).path == "x.png"
        assert await b.purge_log.append("y.png")
        assert (await a.next_purge()).path == "y.png"
        # Each has also read past its own entry (else trimming it unread is a loss to that follower).
        await wait_until(lambda: all(r.purge_log.stats().skipped_own == 1 for r in (a, b)), timeout_s=WAIT_S)
        stream = a.purge_log.stream_key
        await a.link_call(lambda c: c.xtrim(stream, maxlen=0, approximate=False))
        for r in (a, b):
            await r.more_checks(10)
        assert await a.purge_log.append("z.png")
        assert (await b.next_purge()).path == "z.png"
        assert all(r.emptied.empty() and r.purge_log.stats().lost == 0 for r in (a, b))


# --- signed records (redis.signing_key) -------------------------------------------------------

KEY = "a-signing-key-of-32-characters!!"


async def test_with_a_signing_key_forged_entries_are_skipped_without_emptying_anything(
    redis_target: RedisTarget,
) -> None:
    """Entries without a valid MAC (none, not hex, zeros, another key's, a signed entry with its
    path changed) are counted as forged, never applied and never taken for a gap: the signed
    purges around them are applied and nobody empties."""
    config = redis_target.config(signing_key=KEY, log_block_s=0.2)
    other = dataclasses.replace(config, signing_key="another-key-of-32-characters!!!!")
    async with replicas(config, 2) as (a, b), replica(other, "intruder") as intruder:
        assert await a.purge_log.append("first.png")
        assert (await b.next_purge()).path == "first.png"
        stream = a.purge_log.stream_key
        entries = await a.link_call(lambda c: c.xrevrange(stream, count=1))
        genuine: dict[bytes, bytes] = dict(entries[0][1])
        assert await intruder.purge_log.append("other-key.png")

        async def add(fields: dict[bytes, bytes]) -> None:
            await a.link_call(lambda c: c.xadd(stream, fields))  # type: ignore[arg-type]

        await add({k: v for k, v in genuine.items() if k != b"m"})
        await add({**genuine, b"m": b"not hex"})
        await add({**genuine, b"m": b"0" * 64})
        await add({**genuine, b"p": b"changed.png"})
        assert await a.purge_log.append("second.png")
        assert (await b.next_purge()).path == "second.png"
        assert b.purges.empty() and b.emptied.empty()
        assert (b.purge_log.stats().forged, b.purge_log.stats().applied, b.purge_log.stats().lost) == (
            5,
            2,
            0,
        )
        # A follows on its own: once it has read its own "second.png" it has read every forged one.
        await wait_until(lambda: a.purge_log.stats().skipped_own == 2, timeout_s=WAIT_S)
        assert a.emptied.empty() and a.purge_log.stats().forged == 5
