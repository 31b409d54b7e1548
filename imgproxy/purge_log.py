"""The purge log: every purge appended to one Redis Stream that every replica follows.

`append(path)` (or `append(None)` for everything) adds an entry with
`XADD <stream> MAXLEN ~ redis.log_max_len * ...`, from a Lua script that also writes two fields
the followers check: `prev`, the id of the entry before it, and `e`, the stream's epoch (a random
token kept in a key of its own, in the stream's cluster slot). A follower reads with
`XREAD BLOCK` from the last id it applied and calls ONE callback per entry (`on_purge`), skipping
the entries its own replica appended (it applied those locally already).

It resumes from its last id after a disconnect. When it cannot know what it missed it calls
`on_lost` once ("empty your caches") and continues from the stream's current end:
- an entry's `prev` is not the follower's last id: entries between were trimmed (MAXLEN) before
  it read them (Redis 6.2 has no `entries-added` counter, so the chain is our own);
- the epoch differs from the one it knows, or is gone: the stream was deleted, evicted, or Redis
  restarted empty (checked on every reconnect and every `redis.log_block_s` without entries);
- the stream key holds something that is not a stream (then the stream is started afresh).
The order matters: the current end is read first and `on_lost` runs after, so every purge
appended meanwhile is either covered by the emptying or read afterwards.

With `redis.signing_key` each entry also carries `m`, an HMAC (`redis_signing`) over what the
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

from .background import stop_task
from .errors import RedisBadReply, RedisFailure
from .redis_link import Client, RedisLink, retry_pause_s
from .redis_signing import PURGE, Signer, signer_for

log = logging.getLogger(__name__)

READ_COUNT: Final = 100  # entries per XREAD: bounds one reply, not the log
ALL: Final = b"all"
PATH: Final = b"path"
SIGNED_FIELDS: Final = (b"r", b"k", b"p", b"t", b"n")  # what an entry's MAC (`m`) covers, in order


def _epoch_and_last(candidate: str) -> str:
    """Lua shared by both scripts: the stream's epoch (a new one, and the stream emptied, if it
    has none) and the id of its last entry (`0-0` when empty)."""
    return f"""
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], {candidate})
  epoch = {candidate}
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
"""


# KEYS: stream, epoch. ARGV: max length, candidate epoch, replica, kind, path, appended-at, nonce,
# MAC ('' unsigned).
_APPEND: Final = (
    _epoch_and_last("ARGV[2]")
    + """return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'r', ARGV[3], 'k', ARGV[4], 'p', ARGV[5], 'prev', last_id, 'e', epoch, 't', ARGV[6],
  'n', ARGV[7], 'm', ARGV[8])
"""
)

# KEYS: stream, epoch. ARGV: candidate epoch, '1' to start afresh. Returns {epoch, last id}.
# Afresh deletes only keys of the wrong type, so a second follower doing it does not delete the
# good stream the first one started (and the purges appended to it since).
_SYNC: Final = (
    """
if ARGV[2] == '1' then
  local stream = redis.call('TYPE', KEYS[1])['ok']
  local epoch = redis.call('TYPE', KEYS[2])['ok']
  if (stream ~= 'stream' and stream ~= 'none') or (epoch ~= 'string' and epoch ~= 'none') then
    redis.call('DEL', KEYS[1], KEYS[2])
  end
end
"""
    + _epoch_and_last("ARGV[1]")
    + "return {epoch, last_id}\n"
)


@dataclass(frozen=True, slots=True)
class Purge:
    """One entry of the log: a path, or everything (`path` None)."""

    path: str | None
    entry_id: str
    replica: str
    appended_at: float  # the appender's wall clock, seconds


@dataclass(frozen=True, slots=True)
class LogCursor:
    """Where a follower is: the stream's epoch and the last entry id it applied."""

    epoch: str
    last_id: str


@dataclass(frozen=True, slots=True)
class PurgeLogStats:
    appended: int
    append_failures: int
    applied: int
    skipped_own: int
    lost: int  # times the follower could not know what it missed and emptied the caches
    forged: int  # entries skipped for a missing or wrong MAC (with `redis.signing_key`)
    following: bool


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
        self._append_script = link.client.register_script(_APPEND)
        self._sync_script = link.client.register_script(_SYNC)
        self._appended = self._append_failures = self._applied = self._skipped = self._lost = 0
        self._forged = 0

    async def __aenter__(self) -> PurgeLog:
        self._task = asyncio.create_task(self._follow(), name="purge-log-follower")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True  # also ends the loop should the cancel be swallowed (see redis_link)
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
            check_epoch = True  # on (re)connect: was the stream replaced while we were away?
            afresh = False
            failures = 0
            while not self._stopping:
                try:
                    if self._cursor is None or afresh:
                        await self._resync(afresh=afresh, notify=self._cursor is not None or afresh)
                        afresh = check_epoch = False
                    elif check_epoch:
                        # A saved or interrupted cursor of a live stream reads on (catching up);
                        # of a replaced one, it cannot.
                        if not await self._epoch_is(self._cursor.epoch):
                            await self._resync(afresh=False, notify=True)
                        check_epoch = False
                    self._following.set()
                    # The first read after a (re)sync does not block, so catching up is quick.
                    got_any = await self._read_once(reader, block=self._caught_up.is_set())
                    self._caught_up.set()
                    check_epoch = not got_any
                    failures = 0
                except RedisBadReply as exc:
                    # A key of the wrong type is not a stream we can ever read: start a new one
                    # (every follower then sees a new epoch). Other odd answers are retried.
                    afresh = str(exc).startswith("WRONGTYPE")
                    log.warning("purge log unreadable (%s)%s", exc, ": starting it afresh" if afresh else "")
                    failures += 1
                    await self._pause(failures)
                except Exception as exc:  # Redis lost, or a bug: neither may end the following for good
                    if not isinstance(exc, RedisFailure):
                        log.exception("purge log follower failed; starting over")
                    self._following.clear()
                    check_epoch = True
                    failures += 1
                    if isinstance(exc, RedisFailure) and failures == 1:
                        log.warning("purge log: lost Redis (%s); resuming when it is back", exc)
                    await self._pause(failures)

    async def _pause(self, failures: int) -> None:
        """Back off a little (doubling, at most the breaker's cool-down), then wait for Redis to be up."""
        await asyncio.sleep(retry_pause_s(self._link.config, failures))
        await self._link.wait_up()

    async def _epoch_is(self, epoch: str) -> bool:
        current = await self._link.call(lambda client: client.get(self._epoch_key))
        return isinstance(current, bytes) and current.decode("ascii", "replace") == epoch

    async def _resync(self, afresh: bool, notify: bool) -> None:
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
            log.warning("purge log: cannot know what was missed; emptying the caches")
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
        entries = _entries(reply)
        for entry_id, fields in entries:
            cursor = self._cursor
            assert cursor is not None
            if self._signer is not None and not _signed_by(self._signer, fields):
                # Not ours: neither applied nor a gap (whoever wrote it could otherwise empty
                # every replica's caches at will). Passed, so the next entry's `prev` chains.
                self._forged += 1
                if self._forged == 1:
                    log.warning("purge log: entry %s has no valid MAC; skipped (counted in forged)", entry_id)
                self._cursor = LogCursor(cursor.epoch, entry_id)
                continue
            purge = _purge(entry_id, fields)
            chained = (
                fields.get(b"e") == cursor.epoch.encode() and fields.get(b"prev") == cursor.last_id.encode()
            )
            if purge is None or not chained:
                await self._resync(afresh=False, notify=True)  # a gap, a new stream, or a bad entry
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


def _signed_by(signer: Signer, fields: dict[bytes, bytes]) -> bool:
    """Whether the entry's `m` is the MAC of its signed fields."""
    parts = [fields.get(name) for name in SIGNED_FIELDS]
    present = [part for part in parts if part is not None]
    try:
        mac = bytes.fromhex(fields.get(b"m", b"").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return len(present) == len(parts) and signer.verify(mac, PURGE, *present)


def _entries(reply: object) -> list[tuple[str, dict[bytes, bytes]]]:
    """The (id, fields) pairs of an XREAD reply, or RedisBadReply.

    RESP2 gives `[[name, [(id, fields), ...]]]`; RESP3 (`?protocol=3` in the URL) gives
    `{name: [[(id, fields), ...]]}`.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        batches = [_only(value) for value in reply.values()]
    else:
        batches = [_pair(stream)[1] for stream in _as_list(reply)]
    out: list[tuple[str, dict[bytes, bytes]]] = []
    for batch in batches:
        for item in _as_list(batch):
            entry_id, fields = _pair(item)
            if not isinstance(entry_id, bytes) or not isinstance(fields, dict):
                raise RedisBadReply(f"XREAD entry {item!r}")
            if not all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in fields.items()):
                raise RedisBadReply(f"XREAD fields {fields!r}")
            out.append((entry_id.decode("ascii", "replace"), fields))
    return out


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list | tuple):
        raise RedisBadReply(f"expected a list, got {type(value).__name__}")
    return list(value)


def _pair(value: object) -> tuple[object, object]:
    items = _as_list(value)
    if len(items) != 2:
        raise RedisBadReply(f"expected a pair, got {len(items)} items")
    return items[0], items[1]


def _only(value: object) -> object:
    items = _as_list(value)
    if len(items) != 1:
        raise RedisBadReply(f"expected one batch, got {len(items)}")
    return items[0]


def _purge(entry_id: str, fields: dict[bytes, bytes]) -> Purge | None:
    """The purge an entry records, or None if it is not one of ours (missing or odd fields)."""
    kind, replica, path, at = fields.get(b"k"), fields.get(b"r"), fields.get(b"p"), fields.get(b"t")
    if replica is None or at is None or path is None or kind not in (ALL, PATH):
        return None
    try:
        appended_at = float(at)
        target = path.decode() if kind == PATH else None
    except (ValueError, UnicodeDecodeError):
        return None
    if kind == PATH and not target:
        return None
    return Purge(target, entry_id, replica.decode("utf-8", "replace"), appended_at)
