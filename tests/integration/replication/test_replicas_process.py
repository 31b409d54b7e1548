"""Two and three replicas as separate processes (`python -m imgproxy`) sharing one real Redis.

Every replica is the real CLI on its own loopback port with the same `redis.url` and key prefix,
in front of the same Azurite container through the counting origin proxy (the independent
witness for origin GETs). Redis is a real `redis-server`: the shared standalone server, the
three-master cluster (`redis_target`), or a private one a test kills (`own_redis`). The in-process
tests of the same behaviour are in `test_replication.py`; these check it across process
boundaries, signals and restarts included.

Waiting on another process has no event: tests poll its `/admin/cache` (or its answers) a few
milliseconds apart, always within a bound (`poll`).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import redis.asyncio as aioredis
from azure.storage.blob.aio import ContainerClient

from devtools.redis_server import RedisServer
from imgproxy import client as admin
from imgproxy.replication.codec import entry_keys
from imgproxy.replication.purge_log import log_keys
from tests.helpers import cache_stats, fetch_image, payload, poll, sha256, upload
from tests.support.images import jpeg
from tests.support.origin_proxy import OriginProxy
from tests.support.processes import disk_env
from tests.support.redis_fixtures import RedisTarget
from tests.support.replica_processes import (
    TOKEN,
    ReplicaProcess,
    Replicas,
    purge,
    wait_following,
)

PROPAGATION_BOUND_S: Final = 1.0  # the bound on a purge reaching every replica
SETTLE_S: Final = 10.0  # bound on background work (write-through to disk and Redis) settling
TRANSFORMS: Final = {"IMGPROXY_TRANSFORM_ENABLED": "true", "IMGPROXY_TRANSFORM_ALLOW_UNSIGNED": "true"}
REDIS_SMALL_ITEMS: Final = {"IMGPROXY_REDIS_MAX_ITEM_BYTES": str(64 * 1024)}

Check = Callable[[], Awaitable[bool]]
Deployment = Callable[..., Replicas]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def deployment(origin: OriginProxy, container: ContainerClient) -> AsyncIterator[Deployment]:
    """Replicas of one deployment on demand; every process started is stopped at teardown."""
    made: list[Replicas] = []

    def make(target: RedisTarget | RedisServer | None, **env: str) -> Replicas:
        redis: dict[str, str] = {}
        if isinstance(target, RedisTarget):
            redis = {"IMGPROXY_REDIS_URL": target.url, "IMGPROXY_REDIS_CLUSTER": str(target.cluster).lower()}
        elif isinstance(target, RedisServer):
            redis = {"IMGPROXY_REDIS_URL": target.url}
        if redis:
            # One prefix per test (tests share the servers); a generous bound on a loaded machine.
            redis["IMGPROXY_REDIS_PREFIX"] = f"p{uuid.uuid4().hex[:12]}:"
            redis["IMGPROXY_REDIS_TIMEOUT_S"] = "1.0"
        group = Replicas(origin.endpoint, container.container_name, **redis, **env)
        made.append(group)
        return group

    yield make
    await asyncio.gather(*(group.close() for group in made))
    for group in made:  # shown by pytest only when the test failed
        for replica in group.started:
            print(f"--- {replica.name} ({replica.base}) ---\n{replica.tail(200)}")


def raw_redis(target: RedisTarget | RedisServer) -> Any:
    """A plain redis-py client, to tamper with keys as another program would."""
    if isinstance(target, RedisTarget) and target.cluster:
        return aioredis.RedisCluster.from_url(target.url)
    return aioredis.Redis.from_url(target.url)


def base_of(replica: ReplicaProcess, container: ContainerClient) -> str:
    """The Redis key prefix of the deployment's container (what `RedisLink.base` is)."""
    return f"{replica.env['IMGPROXY_REDIS_PREFIX']}{container.container_name}:"


Read = Callable[[], Awaitable[Any]]


def counter(session: aiohttp.ClientSession, replica: ReplicaProcess, key: str) -> Read:
    """A reader of one figure of `replica`'s `/admin/cache`."""

    async def read() -> Any:
        return (await cache_stats(session, replica.base, TOKEN))[key]

    return read


def reaches(read: Read, wanted: Callable[[Any], bool]) -> Check:
    async def check() -> bool:
        return bool(wanted(await read()))

    return check


async def settle(session: aiohttp.ClientSession, replica: ReplicaProcess, key: str, value: int) -> None:
    """Until `replica`'s `/admin/cache` says `key` == `value` (work done off the request path)."""
    figure = counter(session, replica, key)
    await poll(reaches(figure, lambda v: v == value), SETTLE_S, f"{replica.name} {key}")


def emptied(session: aiohttp.ClientSession, replica: ReplicaProcess) -> Check:
    """Nothing left in the replica's memory (variants included) or disk tier."""

    async def check() -> bool:
        body = await cache_stats(session, replica.base, TOKEN)
        return bool(body["cache_size"] == body["cache_variants"] == body.get("disk_size", 0) == 0)

    return check


# --- the shared tier and the purge log ----------------------------------------------------------


async def test_a_purge_on_one_replica_process_empties_every_replica_within_the_bound(
    deployment: Deployment,
    redis_target: RedisTarget,
    container: ContainerClient,
    origin: OriginProxy,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Three replica processes with disk tiers and transforms: a blob A downloaded is a HIT on B and
    C from Redis (one origin GET); a blob too large for Redis sits in each one's memory and disk; a
    variant is made once and shared. After an overwrite, purges on A empty B and C (memory, disk,
    variants) within 1 s, and every replica then serves the new bytes."""
    shared_old, local_old, photo_old = payload(30_000, 1), payload(100_000, 2), jpeg(400, 300)
    await upload(container, "s.png", shared_old)
    await upload(container, "d.png", local_old)  # above redis.max_item_bytes: never shared
    await upload(container, "photo.jpg", photo_old, content_type="image/jpeg")
    group = deployment(redis_target, **TRANSFORMS, **REDIS_SMALL_ITEMS)
    a, b, c = [group.define(f"r{i}", **disk_env(tmp_path / f"disk{i}")) for i in range(3)]
    await asyncio.gather(a.start(), b.start(), c.start())
    await wait_following(session, [a, b, c])

    assert (await fetch_image(session, "s.png", a.base))[:2] == (200, "MISS")
    assert (await fetch_image(session, "photo.jpg?w=100", a.base))[:2] == (200, "MISS")
    await settle(session, a, "redis_stores", 3)  # s.png, the variant and its source, published
    variant_old = (await fetch_image(session, "photo.jpg?w=100", a.base))[2]
    for replica in (b, c):
        status, cache, body = await fetch_image(session, "s.png", replica.base)
        assert (status, cache, sha256(body)) == (200, "HIT", sha256(shared_old))
        status, cache, body = await fetch_image(session, "photo.jpg?w=100", replica.base)
        assert (status, cache, sha256(body)) == (200, "HIT", sha256(variant_old))
        assert (await fetch_image(session, "d.png", replica.base))[2] == local_old
        await settle(session, replica, "disk_size", 1)  # d.png, written through
    # d.png: B and C each downloaded it (A never asked for it, yet A's purge must reach them).
    assert (origin.count("s.png"), origin.count("photo.jpg"), origin.count("d.png")) == (1, 1, 2)
    for replica in (b, c):
        figures = await cache_stats(session, replica.base, TOKEN)
        assert (figures["cache_size"], figures["cache_variants"], figures["redis_hits"]) == (3, 1, 2)

    shared_new, local_new, photo_new = payload(30_000, 3), payload(100_000, 4), jpeg(300, 400)
    await upload(container, "s.png", shared_new)
    await upload(container, "d.png", local_new)
    await upload(container, "photo.jpg", photo_new, content_type="image/jpeg")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for path in ("d.png", "s.png", "photo.jpg"):
        status, answer = await purge(session, a.base, path)
        assert (status, answer["logged"]) == (200, True)  # `purged`: whether A itself held it
    await asyncio.gather(
        *(poll(emptied(session, r), PROPAGATION_BOUND_S, f"{r.name} emptied") for r in (b, c))
    )
    assert loop.time() - started < PROPAGATION_BOUND_S
    for index in range(3):
        assert not [p for p in (tmp_path / f"disk{index}").rglob("*") if p.is_file() and p.suffix == ".meta"]

    variants = set()
    for replica in (a, b, c):
        assert (await fetch_image(session, "s.png", replica.base))[2] == shared_new
        assert (await fetch_image(session, "d.png", replica.base))[2] == local_new
        status, _, body = await fetch_image(session, "photo.jpg?w=100", replica.base)
        assert status == 200
        variants.add(sha256(body))
    assert len(variants) == 1 and variants != {sha256(variant_old)}


async def test_a_cold_burst_over_three_replica_processes_makes_one_origin_get(
    deployment: Deployment,
    redis_target: RedisTarget,
    container: ContainerClient,
    origin: OriginProxy,
    session: aiohttp.ClientSession,
) -> None:
    """100 concurrent requests for an uncached 200 KiB blob spread over three processes: the origin
    GET is held until every replica has its download under way (one downloads, two wait on its
    lock), then exactly one origin GET, and every body is right. Again for another blob without
    holding anything: a replica whose lookup missed just before the value was published must
    find it, not take the freed lock and download again."""
    data, other = payload(200 * 1024, 5), payload(200 * 1024, 8)
    await upload(container, "burst.png", data)
    await upload(container, "unheld.png", other)
    replicas = await deployment(redis_target).start(3)
    await wait_following(session, replicas)
    held = origin.hold(lambda request: request.path.endswith("/burst.png"))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as burst_session:
        burst = [
            asyncio.create_task(fetch_image(burst_session, "burst.png", replicas[i % 3].base))
            for i in range(100)
        ]
        try:
            await asyncio.wait_for(held.arrived.wait(), SETTLE_S)

            async def all_waiting() -> bool:
                bodies = [await cache_stats(session, r.base, TOKEN) for r in replicas]
                return all(b["in_flight"] == 1 for b in bodies) and sum(b["redis_waits"] for b in bodies) == 2

            await poll(all_waiting, SETTLE_S, "every replica downloading or waiting")
        finally:
            held.release.set()
        answers = await asyncio.gather(*burst)
    assert {(status, sha256(body)) for status, _, body in answers} == {(200, sha256(data))}
    assert origin.count("burst.png") == 1
    served = [await counter(session, r, "redis_waits_served")() for r in replicas]
    assert sum(served) == 2

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as burst_session:
        answers = await asyncio.gather(
            *(fetch_image(burst_session, "unheld.png", replicas[i % 3].base) for i in range(100))
        )
    assert {(status, sha256(body)) for status, _, body in answers} == {(200, sha256(other))}
    assert origin.count("unheld.png") == 1


async def test_garbage_or_a_truncated_value_in_redis_is_not_served_by_any_replica(
    deployment: Deployment,
    redis_server: RedisServer,
    container: ContainerClient,
    origin: OriginProxy,
    session: aiohttp.ClientSession,
) -> None:
    """A's published value is cut in half, then replaced by garbage behind the right magic: B and
    C each answer with the blob's bytes from Azure (a MISS), never the bad value."""
    data = payload(50_000, 6)
    await upload(container, "cut.png", data)
    a, b, c = await deployment(redis_server).start(3)
    await fetch_image(session, "cut.png", a.base)
    await settle(session, a, "redis_stores", 1)
    key = entry_keys(base_of(a, container), "cut.png", None).entry
    raw = raw_redis(redis_server)
    try:
        value = await raw.get(key)
        assert value is not None and len(value) > 50_000
        await raw.set(key, value[: len(value) // 2])
        status, cache, body = await fetch_image(session, "cut.png", b.base)
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
        await settle(session, b, "redis_stores", 1)  # B published a good copy again
        await raw.set(key, b"IPX2" + payload(len(value) - 4, 7))
        status, cache, body = await fetch_image(session, "cut.png", c.base)
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    finally:
        await raw.aclose()
    assert [await counter(session, r, "redis_garbage")() for r in (b, c)] == [1, 1]
    assert origin.count("cut.png") == 3


# --- stops, restarts and a trimmed log ------------------------------------------------------------


async def test_a_replica_stopped_during_a_purge_applies_it_before_serving_again(
    deployment: Deployment,
    redis_server: RedisServer,
    container: ContainerClient,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """B keeps two blobs on disk. It gets SIGTERM and a purge of the first is logged on A at the
    same moment (B may or may not apply it before it exits); once B has exited a purge of the
    second is logged. Started again on the same directory, B applies what it missed before its
    first answer: both blobs come from Azure with the new bytes."""
    old = {name: payload(30_000, seed) for seed, name in enumerate(("x.png", "y.png"), start=10)}
    new = {name: payload(30_000, seed) for seed, name in enumerate(("x.png", "y.png"), start=20)}
    for name, data in old.items():
        await upload(container, name, data)
    group = deployment(redis_server)
    a, b = group.define("a"), group.define("b", **disk_env(tmp_path / "b"))
    await asyncio.gather(a.start(), b.start())
    await wait_following(session, [a, b])
    for name, data in old.items():
        assert (await fetch_image(session, name, b.base))[2] == data
    await settle(session, b, "disk_size", 2)
    for name, data in new.items():
        await upload(container, name, data)

    b.signal(signal.SIGTERM)
    status, answer = await purge(session, a.base, "x.png")  # while B shuts down
    assert (status, answer["logged"]) == (200, True)
    assert await b.wait() == 0
    status, answer = await purge(session, a.base, "y.png")  # while B is down
    assert (status, answer["logged"]) == (200, True)

    await b.start()
    for name, data in new.items():  # the very first answers after the restart
        status, cache, body = await fetch_image(session, name, b.base)
        assert (status, cache, sha256(body)) == (200, "MISS", sha256(data))
    log = (await cache_stats(session, b.base, TOKEN))["purge_log"]
    assert 1 <= log["applied"] <= 2 and log["lost"] == 0


async def test_a_log_trimmed_past_a_stopped_replica_makes_it_empty_itself(
    deployment: Deployment,
    redis_server: RedisServer,
    container: ContainerClient,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """B is stopped with a blob on disk; A logs five purges and the stream is trimmed to one entry
    (XTRIM MAXLEN 1, exactly): B, started again, cannot know what it missed, so it has emptied its
    disk tier before it serves (the copy in Redis, which every purge deletes, still serves)."""
    data = payload(30_000, 30)
    await upload(container, "kept.png", data)
    group = deployment(redis_server)
    a, b = group.define("a"), group.define("b", **disk_env(tmp_path / "b"))
    await asyncio.gather(a.start(), b.start())
    await wait_following(session, [a, b])
    await fetch_image(session, "kept.png", b.base)
    await settle(session, b, "disk_size", 1)
    assert await b.stop() == 0
    for index in range(5):
        assert (await purge(session, a.base, f"other-{index}.png"))[0] == 200
    stream, _ = log_keys(base_of(a, container))
    raw = raw_redis(redis_server)
    try:
        assert await raw.xlen(stream) == 5
        await raw.xtrim(stream, maxlen=1, approximate=False)
    finally:
        await raw.aclose()

    await b.start()
    body = await cache_stats(session, b.base, TOKEN)
    assert (body["purge_log"]["lost"], body["disk_size"]) == (1, 0)
    # Redis's copy is another matter: no purge of kept.png deleted it, so it is still good.
    assert (await fetch_image(session, "kept.png", b.base))[1:] == ("HIT", data)
    assert (await cache_stats(session, b.base, TOKEN))["redis_hits"] == 1


# --- Redis failing ------------------------------------------------------------------------------


async def test_redis_killed_under_load_costs_only_hits_and_the_replicas_recover_when_it_is_back(
    deployment: Deployment,
    own_redis: RedisServer,
    container: ContainerClient,
    origin: OriginProxy,
    session: aiohttp.ClientSession,
) -> None:
    """300 requests over three replica processes; Redis gets SIGKILL after the first 60 answers:
    no errors, no wrong bytes (SHA-256), cached blobs stay HITs, uncached ones come from Azure, and
    a purge answers 502 `logged: false`. Restarted empty, the replicas notice without a restart of
    their own: each empties itself once, purges are logged again, the shared tier works again."""
    warm = {f"w{i}.png": payload(20_000, 40 + i) for i in range(8)}
    cold = {f"c{i}.png": payload(20_000, 60 + i) for i in range(4)}
    for name, data in (warm | cold).items():
        await upload(container, name, data)
    replicas = await deployment(own_redis).start(3)
    await wait_following(session, replicas)
    for replica in replicas:
        for name in warm:
            await fetch_image(session, name, replica.base)

    names = [*warm, *cold]
    done = 0
    sixty = asyncio.Event()
    limit = asyncio.Semaphore(24)

    async def one(index: int) -> tuple[str, int, str, bytes]:
        nonlocal done
        name = names[index % len(names)]
        async with limit:
            status, cache, body = await fetch_image(session, name, replicas[index % 3].base)
        done += 1
        if done == 60:
            sixty.set()
        return name, status, cache, body

    load = [asyncio.create_task(one(i)) for i in range(300)]
    await sixty.wait()
    await asyncio.to_thread(own_redis.kill)
    answers = await asyncio.gather(*load)
    assert [(n, s) for n, s, _, _ in answers if s != 200] == []
    assert [n for n, _, _, body in answers if body != (warm | cold)[n]] == []
    assert {cache for n, _, cache, _ in answers if n in warm} == {"HIT"}

    status, answer = await purge(session, replicas[0].base, "w0.png")
    assert (status, answer["purged"], answer["logged"]) == (502, True, False)
    assert (await fetch_image(session, "w0.png", replicas[0].base))[1] == "MISS"  # applied locally
    for replica in replicas:
        await poll(reaches(counter(session, replica, "redis_up"), lambda up: up is False), 5, replica.name)

    await asyncio.to_thread(own_redis.start)  # empty: the log's epoch and every entry are gone

    def recovered(replica: ReplicaProcess) -> Check:
        async def check() -> bool:
            body = await cache_stats(session, replica.base, TOKEN)
            log = body["purge_log"]
            # Emptied once: it cannot know what was purged while Redis was away.
            emptied_once = log["lost"] == 1 and body["cache_size"] == 0
            return bool(body["redis_up"] and log["following"] and emptied_once)

        return check

    for replica in replicas:
        await poll(recovered(replica), 15, f"{replica.name} back on Redis")
    a, b, _ = replicas
    fresh = payload(20_000, 70)
    await upload(container, "fresh.png", fresh)
    stores = await counter(session, a, "redis_stores")()
    assert (await fetch_image(session, "fresh.png", a.base))[1] == "MISS"
    await settle(session, a, "redis_stores", stores + 1)
    assert (await fetch_image(session, "fresh.png", b.base))[:2] == (200, "HIT")
    assert origin.count("fresh.png") == 1
    status, answer = await purge(session, a.base, "fresh.png")
    assert (status, answer["logged"]) == (200, True)
    await poll(
        reaches(counter(session, b, "cache_size"), lambda size: size == 0),
        PROPAGATION_BOUND_S,
        "the purge reaching b",
    )


async def test_without_redis_url_a_replica_process_has_none_of_it(
    deployment: Deployment, container: ContainerClient, session: aiohttp.ClientSession
) -> None:
    """`redis.url` empty: `/admin/cache` has no `redis_up` (nor replicas or a purge log) and a
    purge answer has no `logged`."""
    (replica,) = await deployment(None).start(1)
    body = await cache_stats(session, replica.base, TOKEN)
    assert not {"redis_up", "replicas", "purge_log", "redis_hits"} & body.keys()
    status, answer = await purge(session, replica.base, "a.png")
    assert (status, answer) == (200, {"path": "a.png", "purged": False})


# --- the application's client ---------------------------------------------------------------------


async def test_the_client_clears_a_path_on_every_replica_and_reports_a_purge_redis_did_not_log(
    deployment: Deployment,
    own_redis: RedisServer,
    container: ContainerClient,
    session: aiohttp.ClientSession,
) -> None:
    """`imgproxy.client` against replica processes: the stats (sync and async) list both replicas;
    `clear_cache(path)` on A and `aclear_cache(path)` on B each empty the other replica; with Redis
    killed both raise `PurgeIncomplete` (502, `logged` false)."""
    for seed, name in enumerate(("one.png", "two.png"), start=80):
        await upload(container, name, payload(10_000, seed))
    a, b = await deployment(own_redis).start(2)
    await wait_following(session, [a, b])
    for replica in (a, b):
        for name in ("one.png", "two.png"):
            await fetch_image(session, name, replica.base)

    def listed(body: dict[str, Any]) -> set[int]:
        return {replica["port"] for replica in body["replicas"]}

    async def both_announced() -> bool:
        return listed(await admin.aget_cache_stats(base_url=a.base, token=TOKEN)) == {a.port, b.port}

    await poll(both_announced, SETTLE_S, "both replicas announced")
    sync_stats = await asyncio.to_thread(admin.get_cache_stats, base_url=a.base, token=TOKEN)
    async_stats = await admin.aget_cache_stats(base_url=b.base, token=TOKEN)
    assert sync_stats["redis_up"] is True and async_stats["redis_up"] is True
    assert listed(sync_stats) == listed(async_stats) == {a.port, b.port}
    assert sync_stats["cache_size"] == async_stats["cache_size"] == 2

    answer = await asyncio.to_thread(admin.clear_cache, "one.png", base_url=a.base, token=TOKEN)
    assert answer == {"path": "one.png", "purged": True, "logged": True}
    await poll(reaches(counter(session, b, "cache_size"), lambda n: n == 1), PROPAGATION_BOUND_S, "b")
    answer = await admin.aclear_cache("two.png", base_url=b.base, token=TOKEN)
    assert answer == {"path": "two.png", "purged": True, "logged": True}
    await poll(reaches(counter(session, a, "cache_size"), lambda n: n == 0), PROPAGATION_BOUND_S, "a")
    assert (await fetch_image(session, "one.png", b.base))[1] == "MISS"

    await asyncio.to_thread(own_redis.kill)
    with pytest.raises(admin.PurgeIncomplete) as sync_error:
        await asyncio.to_thread(admin.clear_cache, "one.png", base_url=a.base, token=TOKEN)
    with pytest.raises(admin.PurgeIncomplete) as async_error:
        await admin.aclear_cache("one.png", base_url=b.base, token=TOKEN)
    for error in (sync_error.value, async_error.value):
        assert (error.status, error.logged) == (502, False)
