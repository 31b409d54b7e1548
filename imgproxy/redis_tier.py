"""The shared tier in Redis: entries of up to `redis.max_item_bytes`, and one download per entry.

`lookup(path, variant)` reads the tier's generation and the entry in one pipeline and returns a
verified `SharedEntry` or None (a miss; garbage, truncation, a wrong hash or an old generation
are deleted and counted). It never raises: Redis failing costs a miss, nothing else.

One download across replicas: `claim()` takes the entry's lock (`SET NX PX redis.lock_ttl_s`).
The holder downloads and calls `store(claim, ...)`, a script that writes only while the lock is
still its own, then deletes the lock and publishes a wake-up; the others `wait_for_value()`,
woken by `Notifier` (a slow poll is the safety net), bounded by `redis.lock_wait_s`, and then go
to Azure on their own. `download_lock()` wraps the three for the fetcher's single-flight, renewing
the lock while the download runs and releasing it (comparing the token) if nothing was stored.

Purges: `purge(path)` deletes the path's key set and every key in it (original, variants, their
locks: a download under way then cannot store) in one script on one slot. `purge_all()` replaces
the generation key: every entry records the generation it was written under, so older entries
read as misses (and are deleted when met; TTL and maxmemory reclaim the rest). This works in a
cluster without scanning every master, and a download that began before it stores an entry of
the old generation, which is never served. The generation is read when a lock is claimed, before
the download starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from .errors import RedisBadReply, RedisFailure
from .origin import BlobMeta
from .redis_codec import SharedEntry, decode_entry, encode_entry, entry_keys, generation_key, members_key
from .redis_link import Client, RedisLink
from .redis_notify import Notifier

ScriptArg = bytes | str | int | float
POLL_FRACTION: Final = 10  # the safety-net poll runs lock_wait_s / 10 apart (at least POLL_MIN_S)
POLL_MIN_S: Final = 0.05

# KEYS: lock, members. ARGV: token, lock ms.
_CLAIM: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SADD', KEYS[2], KEYS[1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
  return 1
end
return 0
"""
# KEYS: entry, members, lock. ARGV: token, value, ttl ms, channel, message.
_STORE: Final = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('SREM', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
# KEYS: lock, members. ARGV: token, channel, message.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""
# KEYS: lock. ARGV: token, lock ms.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# KEYS: members. ARGV: channel, message. Every key in the set shares its slot (one hash tag).
_PURGE: Final = """
local keys = redis.call('SMEMBERS', KEYS[1])
local deleted = 0
for i = 1, #keys, 500 do
  deleted = deleted + redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return deleted
"""
# KEYS: generation. ARGV: a new one, used only if there is none.
_GENERATION: Final = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class ClaimState(enum.Enum):
    HELD = "held"  # ours: download, then store
    BUSY = "busy"  # another replica downloads: wait for its value
    UNAVAILABLE = "unavailable"  # Redis failed: download alone, store nothing


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of asking for an entry's download lock."""

    path: str
    variant: str | None
    state: ClaimState
    token: str = ""
    generation: str = ""

    @property
    def held(self) -> bool:
        return self.state is ClaimState.HELD


@dataclass(slots=True)
class LockOutcome:
    """What `download_lock` found: ours to download (`claim.held`), another's value, or neither."""

    claim: Claim
    entry: SharedEntry | None = None  # the value another replica published while we waited


@dataclass(frozen=True, slots=True)
class RedisTierStats:
    hits: int
    misses: int
    stores: int
    stores_refused: int  # the lock was gone (purged, expired) or Redis failed
    garbage: int  # values deleted because they did not verify
    errors: int  # lookups that failed (counted as misses too)
    waits: int
    waits_served: int  # waits that ended with another replica's value


class RedisTier:
    """Shared entries, purges and download locks of one deployment (`link.base`).

    Build it inside the link's `async with`; `notifier` (entered too) wakes `wait_for_value`,
    without one the waits poll.
    """

    def __init__(self, link: RedisLink, notifier: Notifier | None = None) -> None:
        self._link = link
        self._notifier = notifier
        self._base = link.base
        self._config = link.config
        client = link.client
        self._claim = client.register_script(_CLAIM)
        self._store = client.register_script(_STORE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._purge = client.register_script(_PURGE)
        self._generation = client.register_script(_GENERATION)
        self._stored: set[str] = set()  # tokens whose store consumed the lock (nothing to release)
        self._hits = self._misses = self._stores = self._refused = self._garbage = self._errors = 0
        self._waits = self._waits_served = 0

    def stats(self) -> RedisTierStats:
        return RedisTierStats(
            self._hits, self._misses, self._stores, self._refused, self._garbage, self._errors,
            self._waits, self._waits_served,
        )  # fmt: skip

    def fits(self, size: int) -> bool:
        return size <= self._config.max_item_bytes

    async def lookup(self, path: str, variant: str | None = None) -> SharedEntry | None:
        """The verified entry, or None (absent, unverifiable, or Redis failed)."""
        entry, _ = await self._look(path, variant, with_lock=False)
        return entry

    async def store(self, claim: Claim, meta: BlobMeta, body: bytes, fetched_at: float | None = None) -> bool:
        """Publish the holder's download; False if the lock is no longer ours, too large, or Redis failed."""
        if not claim.held or not self.fits(len(body)):
            return False
        keys = entry_keys(self._base, claim.path, claim.variant)
        fetched = time.time() if fetched_at is None else fetched_at
        value = encode_entry(claim.path, claim.variant, claim.generation, meta, body, fetched)
        args: list[ScriptArg] = [
            claim.token,
            value,
            _ms(self._config.ttl_s),
            self._channel(),
            b"s " + keys.members.encode(),
        ]
        try:
            stored = await self._link.call(
                lambda c: self._store(keys=[keys.entry, keys.members, keys.lock], args=args, client=c)
            )
        except RedisFailure:
            stored = 0
        if stored == 1:
            self._stores += 1
            self._stored.add(claim.token)
            return True
        self._refused += 1
        return False

    async def purge(self, path: str) -> int:
        """Delete every key of `path` (original, variants, locks); raises RedisFailure."""
        members = members_key(self._base, path)
        args: list[ScriptArg] = [self._channel(), b"p " + members.encode()]
        deleted = await self._link.call(lambda c: self._purge(keys=[members], args=args, client=c))
        if not isinstance(deleted, int):
            raise RedisBadReply(f"purge answered {deleted!r}")
        return deleted

    async def purge_all(self) -> None:
        """Make every entry written so far unservable (a new generation); raises RedisFailure."""
        fresh = secrets.token_hex(8)
        await self._link.call(lambda c: c.set(generation_key(self._base), fresh))

    async def claim(self, path: str, variant: str | None = None) -> Claim:
        """Try to take the entry's download lock (and learn the generation a store will carry)."""
        keys = entry_keys(self._base, path, variant)
        token = secrets.token_hex(16)
        results: list[object] = await asyncio.gather(
            self._link.call(lambda c: self._current_generation(c)),
            self._link.call(
                lambda c: self._claim(
                    keys=[keys.lock, keys.members], args=[token, _ms(self._config.lock_ttl_s)], client=c
                )
            ),
            return_exceptions=True,
        )
        generation, taken = results
        for outcome in results:
            if isinstance(outcome, BaseException) and not isinstance(outcome, RedisFailure):
                raise outcome  # cancelled, or a bug: not ours to swallow
        if taken == 1 and isinstance(generation, str):
            return Claim(path, variant, ClaimState.HELD, token, generation)
        if taken == 1:  # the lock is ours but the generation is unknown: give it back, go alone
            await self.release(Claim(path, variant, ClaimState.HELD, token))
        elif taken == 0 and isinstance(generation, str):
            return Claim(path, variant, ClaimState.BUSY)
        return Claim(path, variant, ClaimState.UNAVAILABLE)

    async def release(self, claim: Claim) -> None:
        """Give the lock back if it is still ours and nothing was stored (waiters then stop waiting)."""
        if not claim.held or claim.token in self._stored:
            self._stored.discard(claim.token)
            return
        keys = entry_keys(self._base, claim.path, claim.variant)
        args: list[ScriptArg] = [claim.token, self._channel(), b"r " + keys.members.encode()]
        with contextlib.suppress(RedisFailure):  # it expires by itself within lock_ttl_s
            await self._link.call(
                lambda c: self._release(keys=[keys.lock, keys.members], args=args, client=c)
            )

    async def wait_for_value(
        self, path: str, variant: str | None = None, timeout_s: float | None = None
    ) -> SharedEntry | None:
        """Another replica's value once it is stored; None when its lock is gone without one or at
        `timeout_s` (default `redis.lock_wait_s`): then go to Azure on your own."""
        self._waits += 1
        wait_s = self._config.lock_wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait_s
        poll_s = max(POLL_MIN_S, wait_s / POLL_FRACTION)
        members = entry_keys(self._base, path, variant).members
        with (
            self._notifier.watch(members)
            if self._notifier is not None
            else contextlib.nullcontext() as wakeup
        ):
            while True:
                entry, locked = await self._look(path, variant, with_lock=True)
                if entry is not None:
                    self._waits_served += 1
                    return entry
                remaining = deadline - time.monotonic()
                if not locked or remaining <= 0:
                    return None
                if wakeup is None:
                    await asyncio.sleep(min(remaining, poll_s))
                else:
                    await wakeup.wait(min(remaining, poll_s))

    @contextlib.asynccontextmanager
    async def download_lock(self, path: str, variant: str | None = None) -> AsyncIterator[LockOutcome]:
        """Claim; if held, keep it renewed while the block downloads (and `store`s), release after.
        If another replica holds it, wait for its value first (`outcome.entry`; None: go alone)."""
        claim = await self.claim(path, variant)
        if claim.state is ClaimState.BUSY:
            yield LockOutcome(claim, await self.wait_for_value(path, variant))
            return
        if not claim.held:
            yield LockOutcome(claim)
            return
        renewer = asyncio.create_task(self._keep(claim), name="redis-lock-renew")
        try:
            yield LockOutcome(claim)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self.release(claim)

    async def _keep(self, claim: Claim) -> None:
        """Renew a held lock every third of its TTL until cancelled or no longer ours."""
        keys = entry_keys(self._base, claim.path, claim.variant)
        ttl_ms = _ms(self._config.lock_ttl_s)
        while True:
            await asyncio.sleep(self._config.lock_ttl_s / 3)
            try:
                renewed = await self._link.call(
                    lambda c: self._renew(keys=[keys.lock], args=[claim.token, ttl_ms], client=c)
                )
            except RedisFailure:
                continue
            if renewed != 1:
                return  # purged or expired: the store will be refused

    async def _look(self, path: str, variant: str | None, with_lock: bool) -> tuple[SharedEntry | None, bool]:
        keys = entry_keys(self._base, path, variant)
        gen_key = generation_key(self._base)

        async def read(client: Client) -> list[object]:
            pipe = client.pipeline(transaction=False)
            pipe.get(gen_key)
            pipe.get(keys.entry)
            if with_lock:
                pipe.exists(keys.lock)
            replies: list[object] = await pipe.execute()
            return replies

        try:
            replies = await self._link.call(read)
        except RedisFailure:
            self._errors += 1
            self._misses += 1
            return None, False
        generation, raw = replies[0], replies[1]
        locked = with_lock and replies[2] == 1
        if raw is None:
            self._misses += 1
            return None, locked
        entry = decode_entry(
            raw, path, variant, generation.decode() if isinstance(generation, bytes) else None
        )
        if entry is None:
            self._garbage += 1
            self._misses += 1
            with contextlib.suppress(RedisFailure):
                await self._link.call(lambda c: c.delete(keys.entry))
            return None, locked
        self._hits += 1
        return entry, locked

    async def _current_generation(self, client: Client) -> str:
        reply = await self._generation(
            keys=[generation_key(self._base)], args=[secrets.token_hex(8)], client=client
        )
        if not isinstance(reply, bytes):
            raise RedisBadReply(f"generation answered {reply!r}")
        return reply.decode()

    def _channel(self) -> str:
        return self._notifier.channel if self._notifier is not None else f"{self._base}notify"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
