"""Redis fixtures: real `redis-server` processes, started only by the tests that ask for them.

`redis_server` (one standalone server) and `redis_cluster` (three masters) live for the whole run;
tests share them and stay apart by a unique key prefix (`redis_config`). `own_redis` is a private
server a test may kill, stop or restart. `redis_target` runs a test against both kinds.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.redis_server import RedisCluster, RedisServer, cli, run_redis, run_redis_cluster
from imgproxy.config import RedisConfig


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a test's Redis is: a URL, and whether it is a cluster."""

    url: str
    cluster: bool
    node: RedisServer  # the server, or one node of the cluster
    nodes: tuple[RedisServer, ...] = ()  # every node (the server alone, or the cluster's masters)

    def keyslot(self, key: str) -> int:
        """The cluster slot of `key`, as Redis itself computes it (CLUSTER KEYSLOT)."""
        return int(cli(self.node, "CLUSTER", "KEYSLOT", key))

    def config(self, **overrides: Any) -> RedisConfig:
        return redis_config(self.url, self.cluster, **overrides)


def redis_config(url: str, cluster: bool = False, **overrides: Any) -> RedisConfig:
    """A RedisConfig for `url` with a prefix no other test uses (so tests can share a server)."""
    # 2 s per call: the suite runs on loaded machines; the tests of timeouts set their own.
    config = RedisConfig(url=url, cluster=cluster, prefix=f"t{uuid.uuid4().hex[:12]}:", timeout_s=2.0)
    return dataclasses.replace(config, **overrides)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One standalone redis-server for the run (shared: never kill it, use `own_redis`)."""
    with run_redis() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for one test, which it may kill, stop and restart."""
    with run_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-master Redis Cluster on loopback for the run (about 4 s to form)."""
    with run_redis_cluster(masters=3) as cluster:
        yield cluster


@pytest.fixture(params=["standalone", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """The shared standalone server, then the shared cluster (each started on first use)."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return RedisTarget(cluster.url, cluster=True, node=cluster.nodes[0], nodes=tuple(cluster.nodes))
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisTarget(server.url, cluster=False, node=server, nodes=(server,))
