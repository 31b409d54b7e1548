"""What the purge log's stream holds, read: entries as `Purge`s, stream ids as numbers, replies
checked (`RedisBadReply` for anything else), MACs verified, and why a follower may have missed
entries (`lost_reason`). Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from imgproxy.core.errors import RedisBadReply
from imgproxy.replication.signing import PURGE, Signer

ALL: Final = b"all"


PATH: Final = b"path"


SIGNED_FIELDS: Final = (b"r", b"k", b"p", b"t", b"n")  # what an entry's MAC (`m`) covers, in order


_STREAM_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


_ID_LIMIT: Final = 2**64  # both halves of a stream id are unsigned 64-bit integers


StreamId = tuple[int, int]  # (milliseconds, sequence): ids compare as numbers, not as text


@dataclass(frozen=True, slots=True)
class Purge:
    """One entry of the log: a path, or everything (`path` None)."""

    path: str | None
    entry_id: str
    replica: str
    appended_at: float  # the appender's wall clock, seconds


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


def check_reply(reply: object) -> tuple[str | None, StreamId, StreamId]:
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


def signed_by(signer: Signer, fields: dict[bytes, bytes]) -> bool:
    """Whether the entry's `m` is the MAC of its signed fields."""
    parts = [fields.get(name) for name in SIGNED_FIELDS]
    present = [part for part in parts if part is not None]
    try:
        mac = bytes.fromhex(fields.get(b"m", b"").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return len(present) == len(parts) and signer.verify(mac, PURGE, *present)


def entries_of(reply: object) -> list[tuple[str, dict[bytes, bytes]]]:
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


def purge_of(entry_id: str, fields: dict[bytes, bytes]) -> Purge | None:
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
