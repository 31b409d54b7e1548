"""One download across replicas, against a real redis-server and a three-master cluster."""

from __future__ import annotations

import asyncio
import contextlib

from devtools.redis_server import RedisServer
from imgproxy.replication.store import ClaimState
from tests.helpers import payload, wait_until
from tests.support.redis_fixtures import RedisTarget, redis_config
from tests.support.redis_replica import SharedReplica, meta_of, shared_replica


async def test_one_holder_among_many_claimers_on_several_replicas_and_waiters_are_woken_with_the_value(
    redis_target: RedisTarget,
) -> None:
    """30 claims over 3 replicas: exactly one holds; the rest wait, woken by Pub/Sub, and get the value."""
    config = redis_target.config(lock_wait_s=10.0)  # the poll then runs 1 s apart: a wake-up must do it
    body = payload(200 * 1024, seed=3)
    async with shared_replica(config) as r0, shared_replica(config) as r1, shared_replica(config) as r2:
        replicas = [r0, r1, r2]
        holder_ready = asyncio.Event()
        release = asyncio.Event()
        outcomes: list[str] = []

        async def request(replica: SharedReplica) -> bytes | None:
            async with replica.downloads.download_lock("hot.png") as outcome:
                if outcome.claim.held:
                    outcomes.append("held")
                    holder_ready.set()
                    await release.wait()  # the "download" takes until every other claimer waits
                    assert await replica.tier.store(outcome.claim, meta_of(body), body)
                    return body
                outcomes.append("waited")
                return outcome.entry.body if outcome.entry is not None else None

        async with asyncio.timeout(20):
            tasks = [asyncio.create_task(request(replicas[i % 3])) for i in range(30)]
            await holder_ready.wait()
            await wait_until(lambda: sum(r.downloads.stats().waits for r in replicas) == 29)
            released_at = asyncio.get_running_loop().time()
            release.set()
            results = await asyncio.gather(*tasks)
            elapsed = asyncio.get_running_loop().time() - released_at
        assert outcomes.count("held") == 1
        assert all(r == body for r in results)
        assert sum(r.downloads.stats().waits_served for r in replicas) == 29
        assert elapsed < 0.5  # woken, not polled (the poll interval is 1 s)


async def test_a_waiter_gives_up_at_lock_wait_s_and_goes_alone(redis_target: RedisTarget) -> None:
    """A holder that never stores: the waiter returns None after lock_wait_s (then asks Azure itself)."""
    config = redis_target.config(lock_wait_s=0.3, lock_ttl_s=30.0)
    async with shared_replica(config) as holder, shared_replica(config) as waiter:
        claim = await holder.tier.claim("slow.png")
        assert claim.held
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with waiter.downloads.download_lock("slow.png") as outcome:
            assert outcome.claim.state is ClaimState.BUSY and outcome.entry is None
        assert 0.3 <= loop.time() - started < 1.0


async def test_a_holder_that_fails_releases_the_lock_and_its_waiters_stop_waiting(
    redis_target: RedisTarget,
) -> None:
    """Leaving download_lock without storing releases (token compared) and wakes the waiters at once."""
    config = redis_target.config(lock_wait_s=10.0)
    async with shared_replica(config) as holder, shared_replica(config) as waiter:
        started, fail = asyncio.Event(), asyncio.Event()

        async def failing_download() -> None:
            with contextlib.suppress(RuntimeError):
                async with holder.downloads.download_lock("fail.png") as outcome:
                    assert outcome.claim.held
                    started.set()
                    await fail.wait()
                    raise RuntimeError("Azure said no")

        task = asyncio.create_task(failing_download())
        await started.wait()
        waiting = asyncio.create_task(waiter.downloads.wait_for_value("fail.png"))
        await wait_until(lambda: waiter.downloads.stats().waits == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fail.set()
        assert await waiting is None
        assert loop.time() - t0 < 0.5  # woken by the release, not at lock_wait_s or by the 1 s poll
        await task
        assert (await waiter.tier.claim("fail.png")).held  # the lock is free again


async def test_a_claim_after_another_replica_published_the_value_finds_it_instead_of_downloading(
    redis_target: RedisTarget,
) -> None:
    """B's lookup missed; before B claims, A downloads and publishes (its store frees the lock). B's
    claim must not take the free lock and download again: it is pointed to A's value. (Without
    this a cold burst over 3 replicas made 2 origin GETs in two bursts of three, `make bench`.)"""
    body = payload(200 * 1024, seed=4)
    config = redis_target.config()  # one prefix: one deployment
    async with shared_replica(config) as a, shared_replica(config) as b:
        assert await b.tier.lookup("late.png") is None
        claim = await a.tier.claim("late.png")
        assert claim.held and await a.tier.store(claim, meta_of(body), body)
        async with b.downloads.download_lock("late.png") as outcome:
            assert not outcome.claim.held
            assert outcome.entry is not None and outcome.entry.body == body


async def test_release_never_deletes_another_replicas_lock(redis_target: RedisTarget) -> None:
    """A holder whose lock expired and was taken by another cannot release the new one."""
    # Long enough that the new holder's lock outlives the release and the claim below on a loaded
    # machine (at 0.05 s it sometimes expired first, and the last claim was rightly granted).
    config = redis_target.config(lock_ttl_s=0.5)
    async with shared_replica(config) as a, shared_replica(config) as b:
        first, second = a.tier, b.tier
        old = await first.claim("x.png")
        assert old.held
        async with asyncio.timeout(5):
            while not (new := await second.claim("x.png")).held:  # noqa: ASYNC110 - waits for PX expiry
                await asyncio.sleep(0.02)
        await first.release(old)
        assert not (await first.claim("x.png")).held
        assert await second.store(new, meta_of(b"v"), b"v")


async def test_notifications_resume_after_redis_restarts(own_redis: RedisServer) -> None:
    """The notifier resubscribes by itself: after a restart a waiter is woken again, not polled."""
    config = redis_config(own_redis.url, lock_wait_s=10.0, breaker_cooldown_s=0.05)
    async with shared_replica(config) as holder, shared_replica(config) as waiter:
        notifier = waiter.notifier
        assert notifier is not None
        own_redis.restart()
        async with asyncio.timeout(10):
            await waiter.link.wait_up()
            await holder.link.wait_up()
        await wait_until(lambda: notifier.ready)
        claim = await holder.tier.claim("back.png")
        assert claim.held
        waiting = asyncio.create_task(waiter.downloads.wait_for_value("back.png"))
        await wait_until(lambda: waiter.downloads.stats().waits == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await holder.tier.store(claim, meta_of(b"v"), b"v")
        entry = await waiting
        assert entry is not None and entry.body == b"v"
        assert loop.time() - t0 < 0.5  # the poll runs 1 s apart
