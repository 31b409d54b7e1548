"""The Lua scripts of the Redis tier. Each touches the keys of one path only (one hash tag, so one
cluster slot), or the generation key alone; Redis runs each atomically.

Keys are those of `codec` (entry, lock, members = the path's key set, the path's purge
tokens); a purge token is a random value a purge writes, and a store presenting a ticket that saw
another value (or none, where there now is one) is refused.
"""

from __future__ import annotations

from typing import Final

# KEYS: entry. ARGV: the largest value to return, in bytes.
# Returns the value, nil, or (over the cap) its length as an integer instead: a value no entry can
# be (written by someone else) never leaves Redis, whatever its size.
READ_ENTRY: Final = """
local size = redis.call('STRLEN', KEYS[1])
if size > tonumber(ARGV[1]) then return size end
return redis.call('GET', KEYS[1])
"""

# KEYS: lock, members, purged, vpurged, entry. ARGV: token, lock ms.
# Returns {1 or 0, purge token or false, variant purge token or false}. Not taken (0) while the
# entry exists: it was published since the claimer's lookup missed (the publisher's store freed
# the lock), and the claimer is to read it, not download it again.
CLAIM: Final = """
local taken = 0
if redis.call('EXISTS', KEYS[5]) == 0 and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SADD', KEYS[2], KEYS[1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
  taken = 1
end
return {taken, redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4])}
"""

# KEYS: entry, members, lock, purged, vpurged.
# ARGV: lock token ('' for a ticket), value, ttl ms, channel, message, purge token seen
# ('' for none), variant purge token seen ('' for none), '1' if the entry is a variant.
# A lock holder's store stands or falls with its lock (a purge deletes it); a ticket's with the
# purge tokens it saw (a purge replaces them).
STORE: Final = """
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
else
  if (redis.call('GET', KEYS[4]) or '') ~= ARGV[6] then return 0 end
  if ARGV[8] == '1' and (redis.call('GET', KEYS[5]) or '') ~= ARGV[7] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[1] ~= '' then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[2], KEYS[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS: lock, members. ARGV: token, channel, message.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: lock. ARGV: token, lock ms.
RENEW_LOCK: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: entry, members. ARGV: magic, ETag digest, packed fetched-at, ttl ms, fetched-at offset.
# Overwrites fetched-at in place (the value keeps its body), only for the version that was checked.
RENEW_ENTRY: Final = """
local head = redis.call('GETRANGE', KEYS[1], 0, 23)
if string.len(head) < 24 or string.sub(head, 1, 4) ~= ARGV[1] or string.sub(head, 17, 24) ~= ARGV[2] then
  return 0
end
redis.call('SETRANGE', KEYS[1], tonumber(ARGV[5]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: entry, members. Returns how many keys went.
REMOVE: Final = """
redis.call('SREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
"""

# KEYS: members, purged, vpurged. ARGV: channel, message, new token, token ms, '1' for variants only.
# Every key in the set shares its slot. Variant keys (and their locks) have '}:v:' or '}:lock:v:'
# right after the hash tag (no brace can come before it: the prefix has none).
PURGE: Final = """
local keys = redis.call('SMEMBERS', KEYS[1])
local doomed = {}
for _, key in ipairs(keys) do
  if ARGV[5] ~= '1' or string.find(key, '}:v:', 1, true) or string.find(key, '}:lock:v:', 1, true) then
    table.insert(doomed, key)
  end
end
local deleted = 0
for i = 1, #doomed, 500 do
  local chunk = {unpack(doomed, i, math.min(i + 499, #doomed))}
  deleted = deleted + redis.call('DEL', unpack(chunk))
  redis.call('SREM', KEYS[1], unpack(chunk))
end
if ARGV[5] ~= '1' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return deleted
"""

# KEYS: generation. ARGV: a new one, used only if there is none.
GENERATION: Final = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
