"""The purge log's Lua scripts (`purge_log`): append, sync and check, each on the stream and its
epoch key (one cluster slot)."""

from __future__ import annotations

from typing import Final

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
APPEND: Final = (
    _epoch_and_last("ARGV[2]")
    + """return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'r', ARGV[3], 'k', ARGV[4], 'p', ARGV[5], 'prev', last_id, 'e', epoch, 't', ARGV[6],
  'n', ARGV[7], 'm', ARGV[8])
"""
)


# KEYS: stream, epoch. ARGV: candidate epoch, '1' to start afresh. Returns {epoch, last id}.
# Afresh deletes only keys of the wrong type, so a second follower doing it does not delete the
# good stream the first one started (and the purges appended to it since).
SYNC: Final = (
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
CHECK: Final = (
    _LAST_GENERATED
    + """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_entry = '0-0'
if last[1] then last_entry = last[1][1] end
return {redis.call('GET', KEYS[2]), last_generated(KEYS[1]), last_entry}
"""
)
