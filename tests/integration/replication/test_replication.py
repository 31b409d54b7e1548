"""Several replicas sharing one Redis: the shared tier, one download for all, the purge log.

Each replica is a whole app (as production builds it) with its own memory (and disk) but the
same Redis key prefix, the same Azurite container and the same counting origin proxy, which is
the independent witness for origin GETs. Real `redis-server`s: the shared standalone server and
the three-master cluster (`redis_target`), or a private one a test may kill (`own_redis`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis
from azure.storage.blob.aio import ContainerClient

from devtools.redis_server import RedisServer
from imgproxy.core.blob import BlobMeta
from imgproxy.replication.codec import encode_entry, entry_keys, generation_key
from imgproxy.replication.purge_log import log_keys
from imgproxy.web.keys import FETCHER, REPLICATION
from tests.helpers import (
    AUTH,
    AppClient,
    AppClientFactory,
    cache_stats,
    data_files,
    fetch_image,
    payload,
    sha256,
    upload,
    wait_until,
)
from tests.support.origin_proxy import OriginProxy
from tests.support.redis_fixtures import RedisTarget

PROPAGATION_BOUND_S: Final = 1.0  # the bound on a purge reaching every replica (p99)


def stat(client: AppClient, name: str) -> Any:
    return client.app[FETCHER].stats()[name]


async def replicas(
    app_client: AppClientFactory, target: RedisTarget, count: int, **overrides: Any
) -> list[AppClient]:
    return [await app_client(redis=target, **overrides) for _ in range(count)]


# --- the shared tier ---------------------------------------------------------------------------


async def test_a_blob_one_replica_downloaded_is_a_hit_on_another(
    app_client: AppClientFactory, redis_target: RedisTarget, container: ContainerClient, origin: OriginProxy
) -> None:
    """Replica A downloads a blob and publishes it; replica B answers it as a HIT from Redis
    (verified, promoted to its memory) without asking Azure."""
    data = payload(200 * 1024, seed=1)
    await upload(container, "shared.png", data)
    a, b = await replicas(app_client, redis_target, 2)
    assert (await fetch_image(a, "shared.png"))[:2] == (200, "MISS")
    await wait_until(lambda: stat(a, "redis_stores") == 1)  # written in the background
    status, cache, body = await fetch_image(b, "shared.png")
    assert (status, cache, sha256(body)) == (200, "HIT", sha256(data))
    assert origin.count("shared.png") == 1
    assert stat(b, "redis_hits") == 1
    # Promoted: B's next answer comes from its memory, not Redis.
    assert (await fetch_image(b, "shared.png"))[1] == "HIT" and stat(b, "redis_hits") == 1


async def test_a_cold_burst_over_three_replicas_makes_one_origin_get(
    app_client: AppClientFactory, redis_target: RedisTarget, container: ContainerClient, origin: OriginProxy
) -> None:
    """100 concurrent cold requests for one 200 KiB blob spread over three replicas: one origin
    GET; the two replicas that did not download were woken with the published value."""
    data = payload(200 * 1024, seed=2)
    await upload(container, "burst.png", data)
    group = await replicas(app_client, redis_target, 3)
    held = origin.hold(lambda r: r.path.endswith("/burst.png"))
    burst = [asyncio.create_task(fetch_image(group[i % 3], "burst.png")) for i in range(100)]
    await held.arrived.wait()
    # Every replica's requests wait: one on its own download, two on the other's lock.
    await wait_until(lambda: sum(c.app[FETCHER].waiting("burst.png") for c in group) == 100)
    await wait_until(lambda: sum(stat(c, "redis_waits") for c in group) == 2)
    held.release.set()
    answers = await asyncio.gather(*burst)
    assert {(status, sha256(body)) for status, _, body in answers} == {(200, sha256(data))}
    assert origin.count("burst.png") == 1
    assert sum(stat(c, "redis_waits_served") for c in group) == 2


async def test_garbage_or_a_truncated_value_in_redis_is_never_served(
    app_client: AppClientFactory, redis_target: RedisTarget, container: ContainerClient, origin: OriginProxy
) -> None:
    """A value overwritten with garbage, or cut short, is a miss (deleted, counted), not wrong bytes."""
    data = payload(50_000, seed=3)
    await upload(container, "cut.png", data)
    a, b, c = await replicas(app_client, redis_target, 3)
    await fetch_image(a, "cut.png")
    await wait_until(lambda: stat(a, "redis_stores") == 1)
    key = entry_keys(a.app[REPLICATION].base, "cut.png", None).entry
    raw = redis_client(redis_target)
    try:
        value = await raw.get(key)
        assert value is not None
        await raw.set(key, value[: len(value) // 2])  # truncated
        status, cache, body = await fetch_image(b, "cut.png")
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
        await wait_until(lambda: stat(b, "redis_stores") == 1)  # B published a good copy again
        await raw.set(key, b"IPX2" + payload(len(value), seed=4))  # garbage behind the right magic
        status, cache, body = await fetch_image(c, "cut.png")
        assert (status, sha256(body)) == (200, sha256(data))
        assert stat(b, "redis_garbage") + stat(c, "redis_garbage") == 2
    finally:
        await raw.aclose()
    assert origin.count("cut.png") == 3  # A, then B and C, each after a bad value


def redis_client(target: RedisTarget) -> Any:
    if target.cluster:
        return aioredis.RedisCluster.from_url(target.url)
    return aioredis.Redis.from_url(target.url)


# --- the purge log -----------------------------------------------------------------------------


async def test_a_purge_on_one_replica_reaches_every_replica_within_the_bound(
    app_client: AppClientFactory,
    redis_target: RedisTarget,
    container: ContainerClient,
    origin: OriginProxy,
    tmp_path: Path,
) -> None:
    """Three replicas with the disk tier hold a blob and a variant; after an overwrite and one
    purge on the first, the others drop it from memory, disk and variants within 1 s, and all
    three serve the new bytes."""
    old, new = payload(30_000, seed=5), payload(30_000, seed=6)
    await upload(container, "purged.png", old)
    group = [
        await app_client(
            redis=redis_target,
            disk=tmp_path / f"disk{i}",
            cache__max_item_bytes=16 * 1024,  # so the blob lives on disk, not in memory
        )
        for i in range(3)
    ]
    for client in group:
        assert (await fetch_image(client, "purged.png"))[2] == old
    await wait_until(lambda: all(stat(c, "disk_size") == 1 for c in group))
    await upload(container, "purged.png", new)

    started = time.perf_counter()
    async with group[0].delete("/admin/cache/purged.png", headers=AUTH) as response:
        assert response.status == 200
        assert (await response.json())["logged"] is True
    await wait_until(lambda: all(stat(c, "disk_size") == 0 for c in group[1:]), timeout_s=PROPAGATION_BOUND_S)
    elapsed = time.perf_counter() - started
    assert elapsed < PROPAGATION_BOUND_S
    for i, client in enumerate(group):
        assert data_files(tmp_path / f"disk{i}") == []
        assert (await fetch_image(client, "purged.png"))[2] == new


async def test_a_purge_reaches_the_variants_of_every_replica(
    app_client: AppClientFactory, redis_target: RedisTarget, container: ContainerClient
) -> None:
    """A variant cached on two replicas (and in Redis) is made again after a purge on one."""
    from tests.support.images import jpeg

    await upload(container, "photo.jpg", jpeg(400, 300), content_type="image/jpeg")
    a, b = await replicas(app_client, redis_target, 2, transforms=True)
    for client in (a, b):
        assert (await fetch_image(client, "photo.jpg?w=100"))[0] == 200
    assert stat(b, "cache_variants") == 1
    async with a.delete("/admin/cache/photo.jpg", headers=AUTH) as response:
        assert response.status == 200
    await wait_until(lambda: stat(b, "cache_variants") == 0, timeout_s=PROPAGATION_BOUND_S)
    assert (await fetch_image(b, "photo.jpg?w=100"))[1] == "MISS"


async def test_a_replica_stopped_during_a_purge_applies_it_when_started_again(
    app_client: AppClientFactory,
    redis_target: RedisTarget,
    container: ContainerClient,
    tmp_path: Path,
) -> None:
    """B keeps a blob on disk and stops; A purges it; B, started again on the same directory,
    resumes the log from its saved position and drops the entry before serving it."""
    old, new = payload(30_000, seed=7), payload(30_000, seed=8)
    await upload(container, "away.png", old)
    disk = {"disk": tmp_path / "b", "cache__max_item_bytes": 1024}
    a = await app_client(redis=redis_target)
    b = await app_client(redis=redis_target, **disk)
    assert (await fetch_image(b, "away.png"))[2] == old
    await wait_until(lambda: stat(b, "disk_size") == 1)
    await b.close()

    await upload(container, "away.png", new)
    async with a.delete("/admin/cache/away.png", headers=AUTH) as response:
        assert (response.status, (await response.json())["logged"]) == (200, True)

    again = await app_client(redis=redis_target, **disk)
    # Applied before the app serves: the entry is gone the moment it starts.
    assert again.app[REPLICATION].log.stats().applied == 1
    assert stat(again, "disk_size") == 0
    assert (await fetch_image(again, "away.png"))[2] == new


async def test_a_log_trimmed_past_a_replica_empties_it(
    app_client: AppClientFactory, redis_target: RedisTarget, container: ContainerClient, tmp_path: Path
) -> None:
    """B was stopped while more purges were logged than the stream keeps: on its return it cannot
    know what it missed, so it empties its disk tier (once) instead of trusting it."""
    data = payload(30_000, seed=9)
    await upload(container, "kept.png", data)
    disk = {"disk": tmp_path / "b", "cache__max_item_bytes": 1024}
    a = await app_client(redis=redis_target)
    b = await app_client(redis=redis_target, **disk)
    await fetch_image(b, "kept.png")
    await wait_until(lambda: stat(b, "disk_size") == 1)
    await b.close()
    replication = a.app[REPLICATION]
    for i in range(5):
        assert await replication.purge(f"other-{i}.png")
    raw = redis_client(redis_target)
    try:
        await raw.xtrim(replication.log.stream_key, maxlen=1, approximate=False)  # as MAXLEN ~ does
    finally:
        await raw.aclose()

    again = await app_client(redis=redis_target, **disk)
    assert again.app[REPLICATION].log.stats().lost == 1
    assert stat(again, "disk_size") == 0


# --- Redis failing -----------------------------------------------------------------------------


async def test_redis_killed_under_load_costs_nothing_but_hits_and_recovers_when_back_empty(
    app_client: AppClientFactory, own_redis: RedisServer, container: ContainerClient, origin: OriginProxy
) -> None:
    """Redis SIGKILLed while two replicas serve: 0 errors, 0 wrong bytes, memory hits go on, a
    purge answers 502 `logged: false` (applied locally all the same). Restarted empty, the
    replicas notice without a restart of their own: each empties itself once, purges log again
    and the shared tier works again."""
    blobs = {f"b{i}.png": payload(20_000, seed=10 + i) for i in range(5)}
    for name, data in blobs.items():
        await upload(container, name, data)
    a, b = [await app_client(redis=own_redis, redis__timeout_s=0.2) for _ in range(2)]
    for name in blobs:
        for client in (a, b):
            await fetch_image(client, name)

    own_redis.kill()
    answers = await asyncio.gather(*(fetch_image((a, b)[i % 2], name) for i in range(4) for name in blobs))
    assert all(status == 200 for status, _, _ in answers)
    assert {sha256(body) for _, _, body in answers} == {sha256(d) for d in blobs.values()}
    assert all(cache == "HIT" for _, cache, _ in answers)
    async with a.delete("/admin/cache/b0.png", headers=AUTH) as response:
        assert response.status == 502
        assert (await response.json())["logged"] is False
    assert (await fetch_image(a, "b0.png"))[1] == "MISS"  # applied locally: the next answer is from Azure
    assert all(not stat(c, "redis_up") for c in (a, b))

    own_redis.start()  # empty: the log's epoch is gone, the shared tier is empty
    # Emptied once each: neither could know what it missed.
    await wait_until(lambda: all(stat(c, "cache_size") == 0 for c in (a, b)), timeout_s=15)
    assert all(c.app[REPLICATION].log.stats().lost == 1 for c in (a, b))
    async with a.delete("/admin/cache/b1.png", headers=AUTH) as response:
        assert (response.status, (await response.json())["logged"]) == (200, True)
    before, stores = origin.count("b2.png"), stat(a, "redis_stores")
    await fetch_image(a, "b2.png")
    await wait_until(lambda: stat(a, "redis_stores") == stores + 1)
    assert (await fetch_image(b, "b2.png"))[1] == "HIT"
    assert origin.count("b2.png") == before + 1


async def test_admin_stats_list_the_replicas_and_say_redis_up(
    app_client: AppClientFactory, redis_target: RedisTarget
) -> None:
    """`/admin/cache` says `redis_up` and lists every replica announced."""
    a, b = await replicas(app_client, redis_target, 2)
    ids = {c.app[REPLICATION].me.id for c in (a, b)}
    await wait_until(lambda: all(c.app[REPLICATION].registry.announced.is_set() for c in (a, b)))
    body = await cache_stats(a)
    assert body["redis_up"] is True
    assert ids <= {replica["id"] for replica in body["replicas"]}
    metrics = await (await a.get("/metrics")).text()
    assert "imgproxy_redis_up 1.0" in metrics.splitlines()


# --- redis.signing_key ---------------------------------------------------------------------------

SIGNING_KEY: Final = "a-signing-key-of-32-characters!!"


async def test_with_a_signing_key_injected_values_and_purges_are_never_served_or_applied(
    app_client: AppClientFactory, redis_target: RedisTarget, container: ContainerClient, origin: OriginProxy
) -> None:
    """Replicas sharing a signing key share a blob through Redis as before. A well-formed unsigned
    entry with other bytes, written over it by someone without the key, is a MISS from Azure with
    the right bytes (counted as garbage); an unsigned purge record is skipped (counted as forged in
    /admin/cache and /metrics), and the blob stays a memory HIT."""
    data, evil = payload(40_000, seed=20), payload(40_000, seed=21)
    await upload(container, "signed.png", data)
    a, b, c = await replicas(app_client, redis_target, 3, redis__signing_key=SIGNING_KEY)
    assert (await fetch_image(a, "signed.png"))[:2] == (200, "MISS")
    await wait_until(lambda: stat(a, "redis_stores") == 1)
    status, cache, body = await fetch_image(b, "signed.png")
    assert (status, cache, sha256(body)) == (200, "HIT", sha256(data))

    base = a.app[REPLICATION].base
    stream = a.app[REPLICATION].log.stream_key
    raw = redis_client(redis_target)
    try:
        generation = (await raw.get(generation_key(base))).decode()
        meta = BlobMeta(len(evil), '"evil"', datetime.now(UTC), "image/png", None)
        injected = encode_entry("signed.png", None, generation, meta, evil, time.time())
        await raw.set(entry_keys(base, "signed.png", None).entry, injected)
        status, cache, body = await fetch_image(c, "signed.png")
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
        assert stat(c, "redis_garbage") == 1

        epoch = await raw.get(log_keys(base)[1])
        forged = {"r": "intruder", "k": "path", "p": "signed.png", "prev": "0-0", "e": epoch, "t": "1.0"}
        await raw.xadd(stream, {**forged, "n": "00", "m": "00" * 32})
    finally:
        await raw.aclose()
    await wait_until(lambda: b.app[REPLICATION].log.stats().forged == 1)
    assert (await fetch_image(b, "signed.png"))[1] == "HIT"
    assert stat(b, "redis_hits") == 1  # still from B's memory: the forged purge was not applied
    assert origin.count("signed.png") == 2  # A's download and C's, after the injected value
    stats = await cache_stats(b)
    assert (stats["purge_log"]["forged"], stats["purge_log"]["lost"]) == (1, 0)
    metrics = (await (await b.get("/metrics")).text()).splitlines()
    assert "imgproxy_purge_log_forged_total 1.0" in metrics
    assert any(line.startswith("imgproxy_purge_log_checks_total ") for line in metrics)
