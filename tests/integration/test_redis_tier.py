"""The Redis tier against a real redis-server and a three-master cluster: store, look up, purge, locks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import pytest

from devtools.redis_server import RedisServer
from imgproxy.config import RedisConfig
from imgproxy.errors import RedisFailure
from imgproxy.origin import BlobMeta
from imgproxy.redis_codec import entry_keys, members_key
from imgproxy.redis_link import RedisLink
from imgproxy.redis_notify import Notifier
from imgproxy.redis_tier import ClaimState, RedisTier
from tests.conftest import payload, wait_until
from tests.redis_fixtures import RedisTarget, redis_config

WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def meta_of(body: bytes) -> BlobMeta:
    return BlobMeta(len(body), f'"{hashlib.sha256(body).hexdigest()[:12]}"', WHEN, "image/png", None)


@asynccontextmanager
async def open_tier(config: RedisConfig, notify: bool = True) -> AsyncIterator[RedisTier]:
    """A replica's tier: its own link (own connections) and, unless told otherwise, a notifier."""
    async with AsyncExitStack() as stack:
        link = await stack.enter_async_context(RedisLink(config, "images"))
        notifier = None
        if notify:
            notifier = await stack.enter_async_context(Notifier(link))
            async with asyncio.timeout(10):
                await notifier.wait_ready()
        yield RedisTier(link, notifier)


async def put(
    tier: RedisTier, path: str, body: bytes, variant: str | None = None, fetched_at: float = 1.0
) -> None:
    claim = await tier.claim(path, variant)
    assert claim.held
    assert await tier.store(claim, meta_of(body), body, fetched_at)


async def test_store_then_lookup_round_trips_body_metadata_and_age(redis_target: RedisTarget) -> None:
    """A stored entry comes back verified: same bytes, metadata and fetched-at time, on another replica."""
    config = redis_target.config()
    body = payload(200 * 1024, seed=1)
    async with open_tier(config) as writer, open_tier(config) as reader:
        assert await reader.lookup("a/b.png") is None
        await put(writer, "a/b.png", body, fetched_at=1234.5)
        entry = await reader.lookup("a/b.png")
        assert entry is not None
        assert hashlib.sha256(entry.body).digest() == hashlib.sha256(body).digest()
        assert (entry.meta, entry.fetched_at) == (meta_of(body), 1234.5)
        assert reader.stats().hits == 1 and reader.stats().misses == 1


async def test_an_entry_expires_after_ttl_s(own_redis: RedisServer) -> None:
    """The entry's key carries redis.ttl_s as its expiry (asserted with PTTL, then by expiry itself)."""
    config = redis_config(own_redis.url, ttl_s=1)
    async with open_tier(config) as tier:
        await put(tier, "t.png", b"x")
        link_keys = entry_keys(config.prefix + "images:", "t.png", None)
        ttl_ms = await tier._link.call(lambda c: c.pttl(link_keys.entry))
        assert 0 < ttl_ms <= 1000
        # DEBUG SLEEP would block the server; expiry is Redis's own clock: wait for it, bounded.
        async with asyncio.timeout(5):
            while await tier.lookup("t.png") is not None:  # noqa: ASYNC110 - Redis has no expiry event here
                await asyncio.sleep(0.1)


async def test_a_body_larger_than_max_item_bytes_is_not_stored(redis_target: RedisTarget) -> None:
    async with open_tier(redis_target.config(max_item_bytes=1000)) as tier:
        claim = await tier.claim("big.png")
        assert not await tier.store(claim, meta_of(b"x" * 1001), b"x" * 1001)
        assert await tier.lookup("big.png") is None


async def test_purge_of_a_path_deletes_its_original_and_every_variant_in_one_call(
    redis_target: RedisTarget,
) -> None:
    """Original + 3 variants of one path go; another path stays; all keys of a path share a slot."""
    config = redis_target.config()
    async with open_tier(config) as tier:
        await put(tier, "p.png", b"orig")
        for name in ("w=1", "w=2", "w=3"):
            await put(tier, "p.png", name.encode(), variant=name)
        await put(tier, "other.png", b"keep")
        base = config.prefix + "images:"
        if redis_target.cluster:
            names = [entry_keys(base, "p.png", v).entry for v in (None, "w=1", "w=2", "w=3")]
            slots = {redis_target.keyslot(n) for n in [*names, members_key(base, "p.png")]}
            assert len(slots) == 1
        assert await tier.purge("p.png") == 4
        for v in (None, "w=1", "w=2", "w=3"):
            assert await tier.lookup("p.png", v) is None
        assert (await tier.lookup("other.png")) is not None
        assert await tier.purge("p.png") == 0


async def test_purge_all_makes_every_entry_a_miss_and_new_stores_work(redis_target: RedisTarget) -> None:
    """After purge_all nothing stored before is served (in a cluster too); new entries are."""
    config = redis_target.config()
    async with open_tier(config) as a, open_tier(config) as b:
        for i in range(20):  # spread over the masters' slots
            await put(a, f"all{i}.png", b"old")
        await b.purge_all()
        assert [await a.lookup(f"all{i}.png") for i in range(20)] == [None] * 20
        await put(a, "all0.png", b"new")
        entry = await b.lookup("all0.png")
        assert entry is not None and entry.body == b"new"


async def test_a_download_begun_before_purge_all_stores_nothing_servable(redis_target: RedisTarget) -> None:
    """The claim carries the generation: a store after purge_all writes an entry nobody will read."""
    async with open_tier(redis_target.config()) as tier:
        claim = await tier.claim("race.png")
        await tier.purge_all()
        await tier.store(claim, meta_of(b"old"), b"old")
        assert await tier.lookup("race.png") is None


async def test_a_purge_during_a_download_refuses_its_store(redis_target: RedisTarget) -> None:
    """purge(path) deletes the lock: the holder's later store is refused, no old bytes come back."""
    async with open_tier(redis_target.config()) as tier:
        claim = await tier.claim("inflight.png")
        await tier.purge("inflight.png")
        assert not await tier.store(claim, meta_of(b"old"), b"old")
        assert await tier.lookup("inflight.png") is None
        assert tier.stats().stores_refused == 1


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"garbage", id="garbage"),
        pytest.param("truncate", id="truncated"),
        pytest.param("flip", id="wrong-hash"),
    ],
)
async def test_garbage_truncated_or_wrong_hash_values_are_not_served_and_are_deleted(
    redis_target: RedisTarget, value: bytes | str
) -> None:
    """A value that does not verify is a miss, and the key is deleted."""
    config = redis_target.config()
    body = payload(5000, seed=2)
    async with open_tier(config) as tier:
        await put(tier, "bad.png", body)
        key = entry_keys(config.prefix + "images:", "bad.png", None).entry
        raw = await tier._link.call(lambda c: c.get(key))
        assert isinstance(raw, bytes)
        bad = value if isinstance(value, bytes) else raw[:-100] if value == "truncate" else raw[:-1] + b"\x00"
        await tier._link.call(lambda c: c.set(key, bad))
        assert await tier.lookup("bad.png") is None
        assert await tier._link.call(lambda c: c.exists(key)) == 0
        assert tier.stats().garbage == 1


async def test_a_value_of_the_wrong_redis_type_is_a_miss(redis_target: RedisTarget) -> None:
    """A list where the entry should be (WRONGTYPE) is a miss, not an error."""
    config = redis_target.config()
    async with open_tier(config) as tier:
        key = entry_keys(config.prefix + "images:", "list.png", None).entry
        await tier._link.call(lambda c: c.rpush(key, b"x"))
        assert await tier.lookup("list.png") is None


async def test_a_dead_redis_is_a_miss_and_a_refused_store_not_an_error(own_redis: RedisServer) -> None:
    """Killed Redis: lookup None, claim UNAVAILABLE (go alone), store False, purge raises RedisFailure."""
    async with open_tier(redis_config(own_redis.url, timeout_s=0.1), notify=False) as tier:
        own_redis.kill()
        assert await tier.lookup("x.png") is None
        claim = await tier.claim("x.png")
        assert claim.state is ClaimState.UNAVAILABLE
        assert not await tier.store(claim, meta_of(b"x"), b"x")
        with pytest.raises(RedisFailure):
            await tier.purge("x.png")


async def test_one_holder_among_many_claimers_on_several_replicas_and_waiters_are_woken_with_the_value(
    redis_target: RedisTarget,
) -> None:
    """30 claims over 3 replicas: exactly one holds; the rest wait, woken by Pub/Sub, and get the value."""
    config = redis_target.config(lock_wait_s=10.0)  # the poll then runs 1 s apart: a wake-up must do it
    body = payload(200 * 1024, seed=3)
    async with open_tier(config) as r0, open_tier(config) as r1, open_tier(config) as r2:
        tiers = [r0, r1, r2]
        holder_ready = asyncio.Event()
        release = asyncio.Event()
        outcomes: list[str] = []

        async def request(tier: RedisTier) -> bytes | None:
            async with tier.download_lock("hot.png") as outcome:
                if outcome.claim.held:
                    outcomes.append("held")
                    holder_ready.set()
                    await release.wait()  # the "download" takes until every other claimer waits
                    assert await tier.store(outcome.claim, meta_of(body), body)
                    return body
                outcomes.append("waited")
                return outcome.entry.body if outcome.entry is not None else None

        async with asyncio.timeout(20):
            tasks = [asyncio.create_task(request(tiers[i % 3])) for i in range(30)]
            await holder_ready.wait()
            await wait_until(lambda: sum(t.stats().waits for t in tiers) == 29)
            released_at = asyncio.get_running_loop().time()
            release.set()
            results = await asyncio.gather(*tasks)
            elapsed = asyncio.get_running_loop().time() - released_at
        assert outcomes.count("held") == 1
        assert all(r == body for r in results)
        assert sum(t.stats().waits_served for t in tiers) == 29
        assert elapsed < 0.5  # woken, not polled (the poll interval is 1 s)


async def test_a_waiter_gives_up_at_lock_wait_s_and_goes_alone(redis_target: RedisTarget) -> None:
    """A holder that never stores: the waiter returns None after lock_wait_s (then asks Azure itself)."""
    config = redis_target.config(lock_wait_s=0.3, lock_ttl_s=30.0)
    async with open_tier(config) as holder, open_tier(config) as waiter:
        claim = await holder.claim("slow.png")
        assert claim.held
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with waiter.download_lock("slow.png") as outcome:
            assert outcome.claim.state is ClaimState.BUSY and outcome.entry is None
        assert 0.3 <= loop.time() - started < 1.0


async def test_a_holder_that_fails_releases_the_lock_and_its_waiters_stop_waiting(
    redis_target: RedisTarget,
) -> None:
    """Leaving download_lock without storing releases (token compared) and wakes the waiters at once."""
    config = redis_target.config(lock_wait_s=10.0)
    async with open_tier(config) as holder, open_tier(config) as waiter:
        started, fail = asyncio.Event(), asyncio.Event()

        async def failing_download() -> None:
            with contextlib.suppress(RuntimeError):
                async with holder.download_lock("fail.png") as outcome:
                    assert outcome.claim.held
                    started.set()
                    await fail.wait()
                    raise RuntimeError("Azure said no")

        task = asyncio.create_task(failing_download())
        await started.wait()
        waiting = asyncio.create_task(waiter.wait_for_value("fail.png"))
        await wait_until(lambda: waiter.stats().waits == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        fail.set()
        assert await waiting is None
        assert loop.time() - t0 < 0.5  # woken by the release, not at lock_wait_s or by the 1 s poll
        await task
        assert (await waiter.claim("fail.png")).held  # the lock is free again


async def test_release_never_deletes_another_replicas_lock(redis_target: RedisTarget) -> None:
    """A holder whose lock expired and was taken by another cannot release the new one."""
    config = redis_target.config(lock_ttl_s=0.05)
    async with open_tier(config) as first, open_tier(config) as second:
        old = await first.claim("x.png")
        assert old.held
        async with asyncio.timeout(5):
            while not (new := await second.claim("x.png")).held:  # noqa: ASYNC110 - waits for PX expiry
                await asyncio.sleep(0.02)
        await first.release(old)
        assert not (await first.claim("x.png")).held
        assert await second.store(new, meta_of(b"v"), b"v")


async def test_a_hung_redis_costs_a_lookup_at_most_timeout_s(own_redis: RedisServer) -> None:
    """SIGSTOPped Redis: lookup returns None (a miss) after redis.timeout_s, it does not hang."""
    async with open_tier(
        redis_config(own_redis.url, timeout_s=0.1, breaker_failures=100), notify=False
    ) as tier:
        await put(tier, "h.png", b"v")
        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await tier.lookup("h.png") is None
            assert loop.time() - started < 0.3
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        entry = await tier.lookup("h.png")
        assert entry is not None and entry.body == b"v"


async def test_notifications_resume_after_redis_restarts(own_redis: RedisServer) -> None:
    """The notifier resubscribes by itself: after a restart a waiter is woken again, not polled."""
    config = redis_config(own_redis.url, lock_wait_s=10.0, breaker_cooldown_s=0.05)
    async with open_tier(config) as holder, open_tier(config) as waiter:
        assert waiter._notifier is not None
        own_redis.restart()
        async with asyncio.timeout(10):
            await waiter._link.wait_up()
            await holder._link.wait_up()
        await wait_until(lambda: waiter._notifier is not None and waiter._notifier.ready)
        claim = await holder.claim("back.png")
        assert claim.held
        waiting = asyncio.create_task(waiter.wait_for_value("back.png"))
        await wait_until(lambda: waiter.stats().waits == 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await holder.store(claim, meta_of(b"v"), b"v")
        entry = await waiting
        assert entry is not None and entry.body == b"v"
        assert loop.time() - t0 < 0.5  # the poll runs 1 s apart
