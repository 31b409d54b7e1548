"""Cutting one client off from Redis and letting it back, as a network partition would.

Standalone: the client goes through a `TcpProxy`, which resets its connections and refuses new
ones. A cluster client learns every node's address from the cluster itself, so no proxy can sit
in between: the client logs in as an ACL user of its own, which `cut()` disables on every node
(its connections killed, new ones refused at AUTH) and `heal()` enables again.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from devtools.redis_server import RedisServer, cli
from imgproxy.config import RedisConfig
from tests.support.redis_fixtures import RedisTarget
from tests.support.tcp_proxy import TcpProxy


class Partition(Protocol):
    def cut(self) -> None: ...

    def heal(self) -> None: ...


class UserCut:
    """An ACL user on every node of a cluster, which can be locked out and let back in."""

    def __init__(self, nodes: tuple[RedisServer, ...]) -> None:
        self._nodes = nodes
        self.user = f"cut{uuid.uuid4().hex[:12]}"
        self.password = secrets.token_hex(16)

    def create(self) -> None:
        self._each("ACL", "SETUSER", self.user, "on", f">{self.password}", "~*", "&*", "+@all")

    def cut(self) -> None:
        self._each("ACL", "SETUSER", self.user, "off")  # new connections fail AUTH
        self._each("CLIENT", "KILL", "USER", self.user)  # open ones stay logged in: close them

    def heal(self) -> None:
        self._each("ACL", "SETUSER", self.user, "on")

    def drop(self) -> None:
        self._each("ACL", "DELUSER", self.user)

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{self.user}:{self.password}@{parts.hostname}:{parts.port}"))

    def _each(self, *command: str) -> None:
        for node in self._nodes:
            cli(node, *command)


@asynccontextmanager
async def partitioned(
    target: RedisTarget, config: RedisConfig
) -> AsyncIterator[tuple[RedisConfig, Partition]]:
    """`config` for a client that the yielded partition cuts off from `target` (and heals)."""
    if target.cluster:
        user = UserCut(target.nodes)
        user.create()
        try:
            yield dataclasses.replace(config, url=user.url(config.url)), user
        finally:
            user.drop()
        return
    proxy = TcpProxy(target.node.host, target.node.port)
    await proxy.start()
    try:
        yield dataclasses.replace(config, url=proxy.url), proxy
    finally:
        await proxy.close()
