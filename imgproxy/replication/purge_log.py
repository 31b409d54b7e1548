"""The purge log: every purge appended to one Redis Stream that every replica follows.

`append(path)` (or `append(None)` for everything) adds an entry with
`XADD <stream> MAXLEN ~ redis.log_max_len * ...`, from a Lua script that also writes two fields
the followers check: `prev`, the stream's last generated id before it (`XINFO STREAM`'s
`last-generated-id`, which trimming and deleting do not move back), and `e`, the stream's epoch
(a random token kept in a key of its own, in the stream's cluster slot). A follower reads with
`XREAD BLOCK` from the last id it applied and calls ONE callback per entry (`on_purge`), skipping
the entries its own replica appended (it applied those locally already).

It resumes from its last id after a disconnect. When it cannot know what it missed it calls
`on_lost` once ("empty your caches") and continues from the stream's current end (its last
generated id):
- an entry's `prev` is not the follower's last id: entries between were trimmed (MAXLEN) before
  it read them (Redis 6.2 has no `entries-added` counter, so the chain is our own);
- on every reconnect and every `redis.log_block_s` without entries, one script reads the epoch,
  the last generated id and the last entry's id, and the follower compares them with its own:
  - the epoch differs or is gone: the stream was deleted, evicted, or Redis restarted empty;
  - the last generated id is behind the follower's: the stream went back in time (a failover
    to a replica that had not received the latest entries, a restore of an older copy), so
    entries appended since would sort before the follower's id and never be read;
  - it is ahead, but no entry after the follower's id is left to read: what was appended
    meanwhile was trimmed away (e.g. while this replica was cut off), and no later entry will
    come to break the `prev` chain;
- the stream key holds something that is not a stream (then the stream is started afresh).
The order matters: the current end is read first and `on_lost` runs after, so every purge
appended meanwhile is either covered by the emptying or read afterwards.

With `redis.signing_key` each entry also carries `m`, an HMAC (`replication.signing`) over what the
appender knows: replica, kind, path, time and a nonce (`prev` and `e` are made inside the script
and cannot be covered). An entry without a valid MAC is skipped and counted (`forged`): not
applied, and not taken for a gap either (that would let whoever can write to Redis empty every
replica's caches by adding one entry); the follower's id moves past it, so the chain holds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from imgproxy.core.background import stop_task
from imgproxy.core.errors import RedisBadReply, RedisFailure
from imgproxy.core.stats import PurgeLogStats
from imgproxy.replication.link import Client, RedisLink, retry_pause_s
from imgproxy.replication.purge_log_scripts import APPEND, CHECK, SYNC
from imgproxy.replication.purge_records import (
    ALL,
    PATH,
    Purge,
    check_reply,
    entries_of,
    lost_reason,
    purge_of,
    signed_by,
    stream_id,
)
from imgproxy.replication.signing import PURGE, Signer, signer_for

log = logging.getLogger(__name__)

READ_COUNT: Final = 100  # entries per XREAD: bounds one reply, not the log


@dataclass(frozen=True, slots=True)
class LogCursor:
    """Where a follower is: the stream's epoch and the last entry id it applied."""

    epoch: str
    last_id: str


PurgeCallback = Callable[[Purge], Awaitable[None]]
LostCallback = Callable[[], Awaitable[None]]


def log_keys(base: str) -> tuple[str, str]:
    """The stream's and the epoch's key: one hash tag, so one cluster slot (scripts need both)."""
    return f"{base}{{purge-log}}:stream", f"{base}{{purge-log}}:epoch"


class PurgeLog:
    """Appends purges and follows everyone's; an async context manager owning the follower task.

    `resume`: a cursor saved by an earlier run of this replica (e.g. beside its disk tier), to
    catch up on what was appended while it was down; without one the follower starts at the end.
    Build it inside the link's `async with` (it registers its scripts with the link's client);
    a log that is never entered can still `append` (no follower runs).
    """

    def __init__(
        self,
        link: RedisLink,
        replica_id: str,
        on_purge: PurgeCallback,
        on_lost: LostCallback,
        resume: LogCursor | None = None,
    ) -> None:
        self._link = link
        self.replica_id = replica_id
        self._on_purge = on_purge
        self._on_lost = on_lost
        self._stream, self._epoch_key = log_keys(link.base)
        self._max_len = link.config.log_max_len
        self._block_s = link.config.log_block_s
        self._cursor = resume
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._following = asyncio.Event()
        self._caught_up = asyncio.Event()  # the first read from the cursor has been applied
        self._signer: Signer | None = signer_for(link.config, link.base)
        self._append_script = link.client.register_script(APPEND)
        self._sync_script = link.client.register_script(SYNC)
        self._check_script = link.client.register_script(CHECK)
        self._appended = self._append_failures = self._applied = self._skipped = self._lost = 0
        self._forged = self._checks = 0

    async def __aenter__(self) -> PurgeLog:
        self._task = asyncio.create_task(self._follow(), name="purge-log-follower")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True  # also ends the loop should the cancel be swallowed (see replication.link)
        await stop_task(self._task)

    @property
    def stream_key(self) -> str:
        return self._stream

    @property
    def cursor(self) -> LogCursor | None:
        """The last entry applied (save it to resume after a restart), or None before the first sync."""
        return self._cursor

    @property
    def following(self) -> bool:
        """Whether the follower is synced with the stream and reading it."""
        return self._following.is_set()

    async def wait_caught_up(self) -> None:
        """Return once what was appended before the follower started (or resumed) is applied."""
        await self._caught_up.wait()

    async def wait_following(self) -> None:
        """Return once the follower has synced with the stream (entries appended after are seen)."""
        await self._following.wait()

    def stats(self) -> PurgeLogStats:
        return PurgeLogStats(
            self._appended,
            self._append_failures,
            self._applied,
            self._skipped,
            self._lost,
            self._forged,
            self._checks,
            self.following,
        )

    async def append(self, path: str | None) -> bool:
        """Log a purge of `path` (None: everything). False if Redis did not take it."""
        kind, target = (ALL, b"") if path is None else (PATH, path.encode())
        nonce = secrets.token_hex(8).encode()
        # The fields r, k, p, t, n, in the order of SIGNED_FIELDS.
        signed = (self.replica_id.encode(), kind, target, repr(time.time()).encode(), nonce)
        mac = b"" if self._signer is None else self._signer.mac(PURGE, *signed).hex().encode()
        candidate_epoch = secrets.token_hex(8)
        args: list[bytes | str | int] = [self._max_len, candidate_epoch, *signed, mac]
        try:
            await self._link.call(
                lambda client: self._append_script(
                    keys=[self._stream, self._epoch_key], args=args, client=client
                )
            )
        except RedisFailure as exc:
            self._append_failures += 1
            log.warning("purge of %s not logged: %s", path if path is not None else "everything", exc)
            return False
        self._appended += 1
        return True

    async def _follow(self) -> None:
        """Read the stream for ever: sync, then XREAD BLOCK; on failure wait for Redis and resume."""
        async with self._link.blocking_client(self._block_s) as reader:
            check = True  # on (re)connect: was anything lost while we were away?
            afresh = False
            failures = 0
            while not self._stopping:
                try:
                    if self._cursor is None or afresh:
                        await self._resync(afresh=afresh, notify=self._cursor is not None or afresh)
                        afresh = check = False
                    elif check:
                        # A saved or interrupted cursor of an intact stream reads on (catching
                        # up); one the stream no longer answers for cannot.
                        reason = await self._missed(self._cursor)
                        if reason is not None:
                            await self._resync(afresh=False, notify=True, reason=reason)
                        check = False
                    self._following.set()
                    # The first read after a (re)sync does not block, so catching up is quick.
                    got_any = await self._read_once(reader, block=self._caught_up.is_set())
                    self._caught_up.set()
                    check = not got_any
                    failures = 0
                except RedisBadReply as exc:
                    # A key of the wrong type is not a stream we can ever read: start a new one
                    # (every follower then sees a new epoch). Other odd answers are retried.
                    # WRONGTYPE comes first in a command's error, inside a script's.
                    afresh = "WRONGTYPE" in str(exc)
                    log.warning("purge log unreadable (%s)%s", exc, ": starting it afresh" if afresh else "")
                    failures += 1
                    await self._pause(failures)
                except Exception as exc:  # Redis lost, or a bug: neither may end the following for good
                    if not isinstance(exc, RedisFailure):
                        log.exception("purge log follower failed; starting over")
                    self._following.clear()
                    check = True
                    failures += 1
                    if isinstance(exc, RedisFailure) and failures == 1:
                        log.warning("purge log: lost Redis (%s); resuming when it is back", exc)
                    await self._pause(failures)

    async def _pause(self, failures: int) -> None:
        """Back off a little (doubling, at most the breaker's cool-down), then wait for Redis to be up."""
        await asyncio.sleep(retry_pause_s(self._link.config, failures))
        await self._link.wait_up()

    async def _missed(self, cursor: LogCursor) -> str | None:
        """Why reading on from `cursor` could miss entries (see the module docstring), or None."""
        position = stream_id(cursor.last_id)
        if position is None:
            return f"its last id {cursor.last_id!r} is not a stream id"
        reply = await self._link.call(
            lambda client: self._check_script(keys=[self._stream, self._epoch_key], client=client)
        )
        epoch, generated, last_entry = check_reply(reply)
        self._checks += 1
        return lost_reason(cursor.epoch, position, epoch, generated, last_entry)

    async def _resync(self, afresh: bool, notify: bool, reason: str = "") -> None:
        """Take the stream's current epoch and end as the cursor, then (if asked) empty the caches."""
        args: list[bytes | str | int] = [secrets.token_hex(8), "1" if afresh else "0"]
        reply = await self._link.call(
            lambda client: self._sync_script(keys=[self._stream, self._epoch_key], args=args, client=client)
        )
        if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(x, bytes) for x in reply)):
            raise RedisBadReply(f"purge log sync answered {reply!r}")
        self._cursor = LogCursor(reply[0].decode(), reply[1].decode())
        if notify:
            self._lost += 1
            log.warning(
                "purge log: cannot know what was missed%s; emptying the caches",
                f" ({reason})" if reason else "",
            )
            await self._run(self._on_lost())

    async def _read_once(self, reader: Client, block: bool = True) -> bool:
        """One XREAD (BLOCK unless told) from the cursor; apply what it returns. True if it returned
        entries."""
        assert self._cursor is not None
        last = self._cursor.last_id
        block_ms = max(1, int(self._block_s * 1000)) if block else None
        reply = await self._link.call(
            lambda client: client.xread({self._stream: last}, count=READ_COUNT, block=block_ms),
            timeout_s=self._block_s + self._link.config.timeout_s,
            client=reader,
        )
        entries = entries_of(reply)
        for entry_id, fields in entries:
            cursor = self._cursor
            assert cursor is not None
            if self._signer is not None and not signed_by(self._signer, fields):
                # Not ours: neither applied nor a gap (whoever wrote it could otherwise empty
                # every replica's caches at will). Passed, so the next entry's `prev` chains.
                self._forged += 1
                if self._forged == 1:
                    log.warning("purge log: entry %s has no valid MAC; skipped (counted in forged)", entry_id)
                self._cursor = LogCursor(cursor.epoch, entry_id)
                continue
            purge = purge_of(entry_id, fields)
            chained = (
                fields.get(b"e") == cursor.epoch.encode() and fields.get(b"prev") == cursor.last_id.encode()
            )
            if purge is None or not chained:
                reason = (
                    "an entry that is not a purge" if purge is None else f"entry {entry_id} does not follow"
                )
                await self._resync(afresh=False, notify=True, reason=reason)  # a gap, a new stream
                return True
            self._cursor = LogCursor(cursor.epoch, entry_id)
            if purge.replica == self.replica_id:
                self._skipped += 1
                continue
            self._applied += 1
            if not await self._run(self._on_purge(purge)):
                self._lost += 1
                await self._run(self._on_lost())  # a purge we could not apply: trust nothing
        return bool(entries)

    async def _run(self, callback: Awaitable[None]) -> bool:
        try:
            await callback
        except Exception:
            log.exception("purge log callback failed")
            return False
        return True
