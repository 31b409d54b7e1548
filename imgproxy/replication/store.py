"""The shared tier in Redis: entries (originals and variants) of up to `redis.max_item_bytes`.

`lookup(path, variant)` reads the tier's generation, the entry and the path's purge tokens in one
pipeline and returns a verified `SharedEntry` or None (a miss: garbage, truncation, a wrong hash,
another generation, a missing or wrong MAC with `redis.signing_key`, a value larger than any entry
can be are deleted and counted). The entry is read through a script that answers its length
instead of a value over `codec.max_value_bytes`, so such a value never leaves Redis. It
never raises: Redis failing costs a miss.

Storing needs a `StoreTicket` taken before the download began, so that a purge in between (on
any replica) refuses the store and old bytes never come back:
- `claim()` takes the entry's download lock (`SET NX PX`, see `flight`); a held claim's
  ticket stores only while the lock is still its own (a purge deletes the path's locks);
- `ticket()` (synchronous, for a tier protocol's `begin_fill`) records the purge tokens the last
  lookup of the path saw; a purge replaces them, and a store presenting old ones is refused.
Either way the ticket carries the generation seen before the download, so an entry whose
download began before a `purge_all()` is written under the old generation and never served.

Purges: `purge(path)` deletes the path's key set and every key in it (original, variants, their
locks) and replaces its purge tokens, in one script on one slot; `variants_only` keeps the
original. `purge_all()` replaces the generation key: older entries read as misses (and are
deleted when met; TTL and maxmemory reclaim the rest) - in a cluster too, without scanning every
master. `renew()` rewrites an entry's fetched-at in place after a revalidation, for the checked
version only (its ETag digest sits beside fetched-at in the value).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from imgproxy.core.blob import BlobMeta
from imgproxy.core.errors import RedisBadReply, RedisFailure
from imgproxy.http.paths import index_key
from imgproxy.replication import scripts
from imgproxy.replication.codec import (
    FETCHED_AT_OFFSET,
    SharedEntry,
    decode_entry,
    encode_entry,
    entry_keys,
    etag_digest,
    generation_key,
    magic_of,
    max_value_bytes,
    members_key,
    pack_fetched_at,
    purge_token_keys,
)
from imgproxy.replication.link import Client, RedisLink
from imgproxy.replication.notify import notify_channel
from imgproxy.replication.signing import signer_for

ScriptArg = bytes | str | int | float
# Purge tokens remembered for tickets, by the path's `index_key` (a few hundred bytes each).
SEEN_MAX_PATHS: Final = 10_000


class ClaimState(enum.Enum):
    HELD = "held"  # ours: download, then store
    BUSY = "busy"  # another replica downloads: wait for its value
    UNAVAILABLE = "unavailable"  # Redis failed: download alone, store nothing


@dataclass(frozen=True, slots=True)
class StoreTicket:
    """Permission to store one download's result, void once the path is purged (on any replica)."""

    path: str
    variant: str | None
    generation: str  # "": unknown, the store is refused
    lock_token: str = ""  # a held download lock's
    purged: str = ""  # the path's purge tokens as seen before the download ("" for none)
    vpurged: str = ""


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of asking for an entry's download lock (a held one carries its ticket)."""

    path: str
    variant: str | None
    state: ClaimState
    ticket: StoreTicket | None = None

    @property
    def held(self) -> bool:
        return self.state is ClaimState.HELD


@dataclass(frozen=True, slots=True)
class RedisStoreStats:
    hits: int
    misses: int
    stores: int
    stores_refused: int  # the ticket was void (purged, lock lost), too large, or Redis failed
    garbage: int  # values deleted because they did not verify


class RedisStore:
    """Shared entries and purges of one deployment (`link.base`); build it inside the link's `async with`."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self.base = link.base
        self.config = link.config
        self.channel = notify_channel(link.base)
        self._signer = signer_for(link.config, link.base)
        self._max_value = max_value_bytes(link.config.max_item_bytes)
        client = link.client
        self._claim = client.register_script(scripts.CLAIM)
        self._store = client.register_script(scripts.STORE)
        self._release = client.register_script(scripts.RELEASE)
        self._renew_lock = client.register_script(scripts.RENEW_LOCK)
        self._renew = client.register_script(scripts.RENEW_ENTRY)
        self._remove = client.register_script(scripts.REMOVE)
        self._purge = client.register_script(scripts.PURGE)
        self._generation = client.register_script(scripts.GENERATION)
        self._known_generation = ""
        self._seen: OrderedDict[str, tuple[str, str]] = OrderedDict()  # index_key -> purge tokens seen
        self._stored: set[str] = set()  # lock tokens whose store consumed the lock
        self._hits = self._misses = self._stores = self._refused = self._garbage = 0

    def stats(self) -> RedisStoreStats:
        return RedisStoreStats(self._hits, self._misses, self._stores, self._refused, self._garbage)

    def fits(self, size: int) -> bool:
        return size <= self.config.max_item_bytes

    async def lookup(self, path: str, variant: str | None = None) -> SharedEntry | None:
        """The verified entry, or None (absent, unverifiable, or Redis failed)."""
        entry, _ = await self.probe(path, variant, with_lock=False)
        return entry

    def ticket(self, path: str, variant: str | None = None) -> StoreTicket:
        """A ticket from what the last lookup of `path` saw (none yet: a ticket that stores nothing)."""
        seen = self._seen.get(index_key(path))
        if seen is None:
            return StoreTicket(path, variant, "")
        return StoreTicket(path, variant, self._known_generation, purged=seen[0], vpurged=seen[1])

    async def store(
        self,
        ticket: StoreTicket | Claim,
        meta: BlobMeta,
        body: bytes,
        fetched_at: float | None = None,
        source_etag: str | None = None,
    ) -> bool:
        """Write the entry unless the ticket is void or it is too large; False also if Redis failed."""
        if isinstance(ticket, Claim):
            if ticket.ticket is None:
                return False
            ticket = ticket.ticket
        if not ticket.generation or not self.fits(len(body)):
            self._refused += 1
            return False
        keys = entry_keys(self.base, ticket.path, ticket.variant)
        fetched = time.time() if fetched_at is None else fetched_at
        value = encode_entry(
            ticket.path, ticket.variant, ticket.generation, meta, body, fetched, source_etag, self._signer
        )
        args: list[ScriptArg] = [
            ticket.lock_token, value, _ms(self.config.ttl_s), self.channel,
            b"s " + keys.members.encode(), ticket.purged, ticket.vpurged,
            "1" if ticket.variant is not None else "0",
        ]  # fmt: skip
        try:
            stored = await self._link.call(
                lambda c: self._store(
                    keys=[keys.entry, keys.members, keys.lock, keys.purged, keys.vpurged], args=args, client=c
                )
            )
        except RedisFailure:
            stored = 0
        if stored != 1:
            self._refused += 1
            return False
        self._stores += 1
        if ticket.lock_token:
            self._stored.add(ticket.lock_token)
        return True

    async def renew(self, path: str, variant: str | None, etag: str, fetched_at: float) -> bool:
        """Azure confirmed version `etag` at `fetched_at`: renew that entry's age and expiry."""
        keys = entry_keys(self.base, path, variant)
        args: list[ScriptArg] = [
            magic_of(self._signer),
            etag_digest(etag),
            pack_fetched_at(fetched_at),
            _ms(self.config.ttl_s),
            FETCHED_AT_OFFSET,
        ]
        try:
            renewed = await self._link.call(
                lambda c: self._renew(keys=[keys.entry, keys.members], args=args, client=c)
            )
        except RedisFailure:
            return False
        return bool(renewed == 1)

    async def remove(self, path: str, variant: str | None = None) -> bool:
        """Forget one entry (changed or deleted in Azure); False if it was not there or Redis failed."""
        keys = entry_keys(self.base, path, variant)
        try:
            removed = await self._link.call(lambda c: self._remove(keys=[keys.entry, keys.members], client=c))
        except RedisFailure:
            return False
        return bool(removed == 1)

    async def purge(self, path: str, variants_only: bool = False) -> int:
        """Delete the keys of `path` and its variants (only the variants, if told), voiding their
        tickets and locks; the number of keys deleted. Raises RedisFailure."""
        members = members_key(self.base, path)
        purged, vpurged = purge_token_keys(self.base, path)
        args: list[ScriptArg] = [
            self.channel, b"p " + members.encode(), secrets.token_hex(8), _ms(self.config.ttl_s),
            "1" if variants_only else "0",
        ]  # fmt: skip
        deleted = await self._link.call(
            lambda c: self._purge(keys=[members, purged, vpurged], args=args, client=c)
        )
        if not isinstance(deleted, int):
            raise RedisBadReply(f"purge answered {deleted!r}")
        return deleted

    async def purge_all(self) -> None:
        """Make every entry written so far unservable (a new generation); raises RedisFailure."""
        fresh = secrets.token_hex(8)
        await self._link.call(lambda c: c.set(generation_key(self.base), fresh))
        self._known_generation = fresh

    async def claim(self, path: str, variant: str | None = None) -> Claim:
        """Try to take the entry's download lock (and read the generation a store will carry)."""
        keys = entry_keys(self.base, path, variant)
        token = secrets.token_hex(16)
        results: list[object] = await asyncio.gather(
            self._link.call(self._current_generation),
            self._link.call(
                lambda c: self._claim(
                    keys=[keys.lock, keys.members, keys.purged, keys.vpurged, keys.entry],
                    args=[token, _ms(self.config.lock_ttl_s)],
                    client=c,
                )
            ),
            return_exceptions=True,
        )
        for outcome in results:
            if isinstance(outcome, BaseException) and not isinstance(outcome, RedisFailure):
                raise outcome  # cancelled, or a bug: not ours to swallow
        generation, reply = results
        taken = reply[0] if isinstance(reply, list) and len(reply) == 3 else None
        if taken == 1 and isinstance(generation, str):
            return Claim(path, variant, ClaimState.HELD, StoreTicket(path, variant, generation, token))
        if taken == 1:  # the lock is ours but the generation is unknown: give it back, go alone
            await self.release(Claim(path, variant, ClaimState.HELD, StoreTicket(path, variant, "", token)))
        elif taken == 0 and isinstance(generation, str):
            return Claim(path, variant, ClaimState.BUSY)
        return Claim(path, variant, ClaimState.UNAVAILABLE)

    async def release(self, claim: Claim) -> None:
        """Give the lock back if it is still ours and nothing was stored (waiters then stop waiting)."""
        token = claim.ticket.lock_token if claim.ticket is not None else ""
        if not claim.held or not token or token in self._stored:
            self._stored.discard(token)
            return
        keys = entry_keys(self.base, claim.path, claim.variant)
        args: list[ScriptArg] = [token, self.channel, b"r " + keys.members.encode()]
        with contextlib.suppress(RedisFailure):  # it expires by itself within lock_ttl_s
            await self._link.call(
                lambda c: self._release(keys=[keys.lock, keys.members], args=args, client=c)
            )

    async def renew_lock(self, claim: Claim) -> bool:
        """Extend a held lock by `redis.lock_ttl_s`; False once it is no longer ours (or Redis failed)."""
        if claim.ticket is None:
            return False
        keys = entry_keys(self.base, claim.path, claim.variant)
        args: list[ScriptArg] = [claim.ticket.lock_token, _ms(self.config.lock_ttl_s)]
        try:
            renewed = await self._link.call(lambda c: self._renew_lock(keys=[keys.lock], args=args, client=c))
        except RedisFailure:
            return True  # not known to be lost: keep trying
        return bool(renewed == 1)

    async def probe(self, path: str, variant: str | None, with_lock: bool) -> tuple[SharedEntry | None, bool]:
        """The verified entry (or None) and, if asked, whether its download lock is held."""
        keys = entry_keys(self.base, path, variant)

        async def read(client: Client) -> list[object]:
            pipe = client.pipeline(transaction=False)
            pipe.get(generation_key(self.base))
            # EVAL with the script's text, not EVALSHA: redis-py's cluster pipeline refuses
            # EVALSHA, and its standalone pipeline, given a script object, sends SCRIPT EXISTS
            # first (a second round trip per lookup). Redis keeps the script compiled by its SHA-1.
            pipe.eval(scripts.READ_ENTRY, 1, keys.entry, self._max_value)
            for key in (keys.purged, keys.vpurged):
                pipe.get(key)
            if with_lock:
                pipe.exists(keys.lock)
            replies: list[object] = await pipe.execute()
            return replies

        try:
            replies = await self._link.call(read)
            generation = replies[0]
            if generation is None:  # none yet (or evicted): make one, so tickets can be issued
                generation = await self._link.call(self._current_generation)
        except RedisFailure:
            self._misses += 1
            return None, False
        raw, locked = replies[1], with_lock and replies[4] == 1
        current = generation.decode() if isinstance(generation, bytes) else generation
        self._note(path, current, replies[2], replies[3])
        if raw is None:
            self._misses += 1
            return None, locked
        # An integer is the script's answer for a value over the cap (its length): garbage.
        entry = None
        if not isinstance(raw, int):
            entry = decode_entry(
                raw, path, variant, current if isinstance(current, str) else None, self._signer
            )
        if entry is None:
            self._garbage += 1
            self._misses += 1
            with contextlib.suppress(RedisFailure):
                await self._link.call(lambda c: c.delete(keys.entry))
            return None, locked
        self._hits += 1
        return entry, locked

    def _note(self, path: str, generation: object, purged: object, vpurged: object) -> None:
        """Remember what a lookup saw, for the next `ticket()` of this path."""
        if not isinstance(generation, str):
            return
        self._known_generation = generation
        tokens = (
            purged.decode() if isinstance(purged, bytes) else "",
            vpurged.decode() if isinstance(vpurged, bytes) else "",
        )
        key = index_key(path)
        self._seen[key] = tokens
        self._seen.move_to_end(key)
        while len(self._seen) > SEEN_MAX_PATHS:
            self._seen.popitem(last=False)

    async def _current_generation(self, client: Client) -> str:
        reply = await self._generation(
            keys=[generation_key(self.base)], args=[secrets.token_hex(8)], client=client
        )
        if not isinstance(reply, bytes):
            raise RedisBadReply(f"generation answered {reply!r}")
        return reply.decode()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
