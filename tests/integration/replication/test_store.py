"""The Redis tier against a real redis-server and a three-master cluster: store, look up, purge."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from devtools.redis_server import RedisServer, cli
from imgproxy.config import RedisConfig
from imgproxy.core.errors import RedisFailure
from imgproxy.replication.codec import entry_keys, max_value_bytes, members_key
from imgproxy.replication.store import ClaimState, RedisStore
from tests.helpers import payload
from tests.support.redis_fixtures import RedisTarget, redis_config
from tests.support.redis_replica import meta_of, put, shared_replica


@asynccontextmanager
async def open_tier(config: RedisConfig) -> AsyncIterator[RedisStore]:
    """A replica's tier, on a link of its own."""
    async with shared_replica(config, notify=False) as replica:
        yield replica.tier


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
    async with open_tier(redis_config(own_redis.url, timeout_s=0.1)) as tier:
        own_redis.kill()
        assert await tier.lookup("x.png") is None
        claim = await tier.claim("x.png")
        assert claim.state is ClaimState.UNAVAILABLE
        assert not await tier.store(claim, meta_of(b"x"), b"x")
        with pytest.raises(RedisFailure):
            await tier.purge("x.png")


async def test_a_hung_redis_costs_a_lookup_at_most_timeout_s(own_redis: RedisServer) -> None:
    """SIGSTOPped Redis: lookup returns None (a miss) after redis.timeout_s, it does not hang."""
    async with open_tier(redis_config(own_redis.url, timeout_s=0.1, breaker_failures=100)) as tier:
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


async def test_a_ticket_from_a_lookup_stores_without_a_lock(redis_target: RedisTarget) -> None:
    """lookup (miss), ticket(), store: the entry is there for another replica, with its source ETag."""
    config = redis_target.config()
    async with open_tier(config) as a, open_tier(config) as b:
        assert await a.lookup("t.png", "w=1") is None
        ticket = a.ticket("t.png", "w=1")
        assert await a.store(ticket, meta_of(b"variant"), b"variant", 5.0, source_etag='"src"')
        entry = await b.lookup("t.png", "w=1")
        assert entry is not None and (entry.body, entry.fetched_at, entry.source_etag) == (
            b"variant",
            5.0,
            '"src"',
        )


async def test_a_ticket_without_a_prior_lookup_stores_nothing(redis_target: RedisTarget) -> None:
    """No lookup, no knowledge of the purge tokens or generation: the store is refused."""
    async with open_tier(redis_target.config()) as tier:
        assert not await tier.store(tier.ticket("never.png"), meta_of(b"x"), b"x")
        assert await tier.lookup("never.png") is None


async def test_a_purge_on_another_replica_voids_a_ticket_taken_before_it(redis_target: RedisTarget) -> None:
    """A download that began before a purge (anywhere) cannot store its old bytes after it."""
    config = redis_target.config()
    async with open_tier(config) as a, open_tier(config) as b:
        await a.lookup("race.png")
        ticket = a.ticket("race.png")
        assert await b.purge("race.png") == 0
        assert not await a.store(ticket, meta_of(b"old"), b"old")
        assert await b.lookup("race.png") is None
        await a.lookup("race.png")  # a download after the purge: a fresh ticket stores
        assert await a.store(a.ticket("race.png"), meta_of(b"new"), b"new")


async def test_purging_only_the_variants_keeps_the_original_and_its_tickets(
    redis_target: RedisTarget,
) -> None:
    """variants_only: variants and variant tickets go; the original and a ticket for it stay good."""
    config = redis_target.config()
    async with open_tier(config) as tier:
        await put(tier, "v.png", b"orig")
        await put(tier, "v.png", b"small", variant="w=1")
        await tier.lookup("v.png", "w=2")
        original_ticket, variant_ticket = tier.ticket("v.png"), tier.ticket("v.png", "w=2")
        assert await tier.purge("v.png", variants_only=True) == 1
        assert await tier.lookup("v.png", "w=1") is None
        entry = await tier.lookup("v.png")
        assert entry is not None and entry.body == b"orig"
        assert not await tier.store(variant_ticket, meta_of(b"stale"), b"stale")
        assert await tier.store(original_ticket, meta_of(b"orig2"), b"orig2")


async def test_renew_rewrites_the_age_of_the_checked_version_only(redis_target: RedisTarget) -> None:
    """renew(etag) updates fetched-at in place; for another ETag (or no entry) it changes nothing."""
    config = redis_target.config()
    async with open_tier(config) as tier:
        body = payload(3000, seed=4)
        await put(tier, "r.png", body, fetched_at=10.0)
        assert not await tier.renew("r.png", None, '"someone-else"', 99.0)
        assert not await tier.renew("absent.png", None, meta_of(body).etag, 99.0)
        assert await tier.renew("r.png", None, meta_of(body).etag, 20.5)
        entry = await tier.lookup("r.png")
        assert entry is not None and entry.fetched_at == 20.5 and entry.body == body


async def test_remove_forgets_one_entry(redis_target: RedisTarget) -> None:
    async with open_tier(redis_target.config()) as tier:
        await put(tier, "gone.png", b"x")
        await put(tier, "gone.png", b"y", variant="w=1")
        assert await tier.remove("gone.png")
        assert not await tier.remove("gone.png")
        assert await tier.lookup("gone.png") is None
        assert await tier.lookup("gone.png", "w=1") is not None


async def test_a_variant_key_that_looks_like_a_variant_marker_in_the_container_is_purged_right(
    redis_server: RedisServer,
) -> None:
    """A container named "v" puts ':v:' in every key; variants-only purges still spare the original."""
    config = redis_config(redis_server.url)
    async with shared_replica(config, notify=False, container="v") as replica:
        tier = replica.tier
        await put(tier, "o.png", b"orig")
        await put(tier, "o.png", b"var", variant="w=1")
        assert await tier.purge("o.png", variants_only=True) == 1
        assert await tier.lookup("o.png") is not None


KEY = "a-signing-key-of-32-characters!!"


def net_output_bytes(server: RedisServer) -> int:
    """What the server has written to all its clients so far (INFO stats)."""
    for line in cli(server, "INFO", "stats").splitlines():
        if line.startswith("total_net_output_bytes:"):
            return int(line.split(":", 1)[1])
    raise AssertionError("INFO stats has no total_net_output_bytes")


async def test_a_value_larger_than_any_entry_is_refused_and_deleted(redis_target: RedisTarget) -> None:
    """A value over max_item_bytes plus the metadata bound is a miss, counted as garbage and deleted."""
    config = redis_target.config(max_item_bytes=1000)
    async with open_tier(config) as tier:
        key = entry_keys(config.prefix + "images:", "huge.png", None).entry
        await tier._link.call(lambda c: c.set(key, b"IPX2" + b"\x00" * max_value_bytes(1000)))
        assert await tier.lookup("huge.png") is None
        assert (tier.stats().garbage, tier.stats().misses) == (1, 1)
        assert await tier._link.call(lambda c: c.exists(key)) == 0


async def test_a_value_over_the_cap_never_leaves_redis(own_redis: RedisServer) -> None:
    """Looking up a 4 MiB value with a 1000-byte cap makes the server send a few KiB, not the value."""
    config = redis_config(own_redis.url, max_item_bytes=1000)
    async with open_tier(config) as tier:
        key = entry_keys(config.prefix + "images:", "huge.png", None).entry
        await tier._link.call(lambda c: c.set(key, payload(4 * 1024 * 1024, seed=9)))
        before = net_output_bytes(own_redis)
        assert await tier.lookup("huge.png") is None
        sent = net_output_bytes(own_redis) - before  # the lookup, its DEL and one INFO reply
        assert sent < 64 * 1024
        assert tier.stats().garbage == 1


async def test_an_entry_of_max_item_bytes_signed_is_served(redis_target: RedisTarget) -> None:
    """The cap leaves room for the largest legitimate entry: a body of max_item_bytes, signed."""
    config = redis_target.config(max_item_bytes=5000, signing_key=KEY)
    body = payload(5000, seed=10)
    async with open_tier(config) as writer, open_tier(config) as reader:
        await put(writer, "max.png", body)
        entry = await reader.lookup("max.png")
        assert entry is not None and hashlib.sha256(entry.body).digest() == hashlib.sha256(body).digest()


async def test_a_fetched_at_in_the_future_reads_as_the_moment_of_the_lookup(
    redis_target: RedisTarget,
) -> None:
    """An entry written with fetched-at a year ahead is as old as the lookup, never fresher."""
    async with open_tier(redis_target.config()) as tier:
        await put(tier, "future.png", b"ahead", fetched_at=time.time() + 365 * 86400)
        started = time.time()
        entry = await tier.lookup("future.png")
        assert entry is not None and started <= entry.fetched_at <= time.time()


@pytest.mark.parametrize(
    ("writer_key", "reader_key", "served"),
    [
        pytest.param(KEY, KEY, True, id="same-key"),
        pytest.param(KEY, "another-key-of-32-characters!!!!", False, id="other-key"),
        pytest.param(KEY, "", False, id="reader-unsigned"),
        pytest.param("", KEY, False, id="writer-unsigned"),
    ],
)
async def test_with_a_signing_key_only_entries_signed_with_it_are_served(
    redis_target: RedisTarget, writer_key: str, reader_key: str, served: bool
) -> None:
    """A reader serves an entry only if it was signed with the reader's key (or neither has one);
    anything else is garbage: a miss, counted and deleted."""
    base = redis_target.config()
    body = payload(3000, seed=11)
    async with (
        open_tier(dataclasses.replace(base, signing_key=writer_key)) as writer,
        open_tier(dataclasses.replace(base, signing_key=reader_key)) as reader,
    ):
        await put(writer, "signed.png", body)
        entry = await reader.lookup("signed.png")
        key = entry_keys(base.prefix + "images:", "signed.png", None).entry
        if served:
            assert entry is not None and entry.body == body and reader.stats().garbage == 0
        else:
            assert entry is None and reader.stats().garbage == 1
            assert await reader._link.call(lambda c: c.exists(key)) == 0


async def test_renew_keeps_a_signed_entry_valid(redis_target: RedisTarget) -> None:
    """renew() rewrites fetched-at in place; the signed entry still verifies, with the new age."""
    async with open_tier(redis_target.config(signing_key=KEY)) as tier:
        body = payload(3000, seed=12)
        await put(tier, "renewed.png", body, fetched_at=10.0)
        assert await tier.renew("renewed.png", None, meta_of(body).etag, 20.5)
        entry = await tier.lookup("renewed.png")
        assert entry is not None and entry.fetched_at == 20.5 and entry.body == body
