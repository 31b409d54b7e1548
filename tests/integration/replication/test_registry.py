"""Replica announcements against a real redis-server and cluster: listed while alive, gone after."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

from imgproxy.replication.link import RedisLink
from imgproxy.replication.registry import Replica, ReplicaRegistry, make_replica_id
from tests.support.redis_fixtures import RedisTarget


def me(port: int) -> Replica:
    return Replica(make_replica_id(port), "127.0.0.1", port, 4242, started_at=1000.0)


async def test_three_replicas_list_each_other_and_one_that_stops_is_gone(redis_target: RedisTarget) -> None:
    """Each registry lists all three (id, host, port, last seen); after one exits, two remain."""
    config = redis_target.config()
    async with AsyncExitStack() as stack:
        link = await stack.enter_async_context(RedisLink(config, "images"))
        registries = [ReplicaRegistry(link, me(8080 + i)) for i in range(3)]
        for registry in registries[:2]:
            await stack.enter_async_context(registry)
        async with registries[2]:
            async with asyncio.timeout(10):
                for registry in registries:
                    await registry.announced.wait()
            listed = await registries[0].replicas()
            assert [r.id for r in listed] == sorted(r.me.id for r in registries)
            assert {r.port for r in listed} == {8080, 8081, 8082}
            assert all(r.host == "127.0.0.1" and time.time() - r.last_seen < 10 for r in listed)
        assert [r.port for r in await registries[0].replicas()] == [8080, 8081]


async def test_a_replica_not_seen_for_announce_ttl_s_is_not_listed(redis_target: RedisTarget) -> None:
    """Seen from a clock one TTL later, an announcement has aged out (and is pruned)."""
    config = redis_target.config(announce_ttl_s=30.0)
    async with RedisLink(config, "images") as link:
        now = time.time()
        registry = ReplicaRegistry(link, me(9000), clock=lambda: now)
        assert await registry.announce()
        later = ReplicaRegistry(link, me(9001), clock=lambda: now + 31.0)
        assert await later.replicas() == []
        assert [r.port for r in await registry.replicas()] == [9000]
