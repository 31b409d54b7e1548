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

With `redis.signing_key` each entry also carries `m`, an HMAC (`redis_signing`) over what the
appender knows: replica, kind, path, time and a nonce (`prev` and `e` are made inside the script
and cannot be covered). An entry without a valid MAC is skipped and counted (`forged`): not
applied, and not taken for a gap either (that would let whoever can write to Redis empty every
replica's caches by adding one entry); the follower's id moves past it, so the chain holds.
"""

from __future__ import annotations

import asyncio
import logging
import re
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
from imgproxy.replication.signing import PURGE, Signer, signer_for

log = logging.getLogger(__name__)

READ_COUNT: Final = 100  # entries per XREAD: bounds one reply, not the log
ALL: Final = b"all"
PATH: Final = b"path"
SIGNED_FIELDS: Final = (b"r", b"k", b"p", b"t", b"n")  # what an entry's MAC (`m`) covers, in order
_STREAM_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_ID_LIMIT: Final = 2**64  # both halves of a stream id are unsigned 64-bit integers

StreamId = tuple[int, int]  # (milliseconds, sequence): ids compare as numbers, not as text

# Lua shared by the scripts: the stream's last generated id ('0-0' when there is no stream). Not
# its last entry's id: that one goes back to nothing when the stream is trimmed empty.
_LAST_GENERATED: Final = """
local function last_generated(stream)
  if redis.call('EXISTS', stream) == 0 then return '0-0' end
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  error('XINFO STREAM answered no last-generated-id')
end
"""


def _epoch_and_last(candidate: str) -> str:
    """Lua shared by the append and sync scripts: the stream's epoch (a new one, and the stream
    emptied, if it has none) and its last generated id."""
    return (
        _LAST_GENERATED
        + f"""
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], {candidate})
  epoch = {candidate}
end
local last_id = last_generated(KEYS[1])
"""
    )


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

# KEYS: stream, epoch. Read only. Returns {epoch or nil, last generated id, last entry's id or
# '0-0'}: in one script, so the three describe one moment.
_CHECK: Final = (
    _LAST_GENERATED
    + """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_entry = '0-0'
if last[1] then last_entry = last[1][1] end
return {redis.call('GET', KEYS[2]), last_generated(KEYS[1]), last_entry}
"""
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
        self._check_script = link.client.register_script(_CHECK)
        self._appended = self._append_failures = self._applied = self._skipped = self._lost = 0
        self._forged = self._checks = 0

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
        epoch, generated, last_entry = _check_reply(reply)
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


def stream_id(text: str) -> StreamId | None:
    """`ms-seq` as two numbers, or None if `text` is not a complete stream id."""
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    return (ms, seq) if ms < _ID_LIMIT and seq < _ID_LIMIT else None


def lost_reason(
    known_epoch: str, position: StreamId, epoch: str | None, generated: StreamId, last_entry: StreamId
) -> str | None:
    """Why a follower at `position` of epoch `known_epoch` may have missed entries of a stream
    whose epoch, last generated id and last entry's id are these; None if it can read on."""
    if epoch != known_epoch:
        return "the stream's epoch changed or is gone"
    if generated < position:
        return "the stream's last id went back before the follower's (a failover or a restore)"
    if generated > position and last_entry <= position:
        return "the entries appended since the follower's last id were trimmed away"
    return None


def _check_reply(reply: object) -> tuple[str | None, StreamId, StreamId]:
    """The check script's answer as (epoch, last generated id, last entry's id), or RedisBadReply."""
    items = _as_list(reply)
    if len(items) != 3:
        raise RedisBadReply(f"purge log check answered {reply!r}")
    epoch, generated, last_entry = items
    if not (epoch is None or isinstance(epoch, bytes)):
        raise RedisBadReply(f"purge log check answered {reply!r}")
    return None if epoch is None else epoch.decode("ascii", "replace"), _id_of(generated), _id_of(last_entry)


def _id_of(value: object) -> StreamId:
    parsed = stream_id(value.decode("ascii", "replace")) if isinstance(value, bytes) else None
    if parsed is None:
        raise RedisBadReply(f"expected a stream id, got {value!r}")
    return parsed


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
