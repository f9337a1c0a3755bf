"""Lua scripts that make a batch's writes atomic and idempotent.

:class:`~features.redis.store.WriteBatch` sends them with EVAL (the script's text, never NOSCRIPT).
"""

from __future__ import annotations

__all__ = ["APPLY_USERS", "APPLY_GLOBALS"]

#: KEYS = user hashes (one or more; a Redis Cluster client sends one per call, their slots differ).
#: ARGV[1] = ttl ms; then per user four: expected version ("0" when the user did not exist), the new
#: version (a random token from the writer), state blob, memories blob (field ``m``; empty: the memories
#: did not change and are left as they are; else field ``mv`` takes the new version, the token readers
#: validate a decoded copy of the memories with). Each user is a compare-and-set of its own, atomic (the
#: script is): written only if its version is still the one the writer folded on. Returns a flat array,
#: per user: {1, new version} applied; {-1, version} the user changed since it was read (nothing
#: written; re-read and fold again). A stored version that is not a number (no writer makes one) is
#: refused with an error naming the key, rather than conflicting forever.
#:
#: The user's applied Kafka offsets are not checked here: they are inside the state blob
#: (``UserState.offsets``), which the writer read at the expected version and folded only the events
#: above, so the version check covers them. Hashes written by earlier versions also carry
#: ``o:<partition>`` fields, a second copy of the same offsets: nothing reads or writes them any more.
APPLY_USERS = """
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local key, at = KEYS[i], 4 * i - 2
  local current = redis.call('HGET', key, 'v') or '0'
  if current ~= ARGV[at] then
    if not tonumber(current) then
      return redis.error_reply('user ' .. key .. ' has a version that is not a number: ' .. current)
    end
    out[#out + 1] = -1
    out[#out + 1] = current
  else
    local version = ARGV[at + 1]
    redis.call('HSET', key, 'v', version, 's', ARGV[at + 2])
    if ARGV[at + 3] ~= '' then
      redis.call('HSET', key, 'm', ARGV[at + 3], 'mv', version)
    end
    redis.call('PEXPIRE', key, ttl)
    out[#out + 1] = 1
    out[#out + 1] = version
  end
end
return out
"""

#: KEYS[1] = popularity zset, KEYS[2] = meta hash, KEYS[3] = offsets hash, KEYS[4] = occurrences hash
#: (item -> n), KEYS[5..] = co-visit zsets.
#: ARGV[1] partition, ARGV[2] offset, ARGV[3] popularity tau (s), ARGV[4] rescale exponent,
#: ARGV[5] top-M (members per co-visit row), ARGV[6] a msgpack array of three flat arrays:
#: popularity triples (item, time s, weight); the N co-visited item names (item k's zset is
#: KEYS[4 + k]); runs (item index b, delta, count, n, n item indexes a): b occurred ``count`` times
#: (its n grows by it) and each pair (a, b) gains delta, summed here per unordered pair, after which
#: a and b each gain the sum in the other's row, pairs in the order they first appear (pairs of an
#: item with itself are ignored, pairs that cancel are not written).
#: Each row is a Space-Saving summary of at most top-M members: a new member of a full row replaces
#: the weakest (ZPOPMIN: lowest count, then smallest member) and starts from its count plus the
#: delta; a negative delta only lowers a member still in the row (features.core.signals.space_saving_add
#: is the same in Python). A pair costs one command when its member is in the row (ZADD XX INCR, which
#: leaves an absent member alone); only an absent one has the row sized (ZCARD, once per row and call,
#: then counted here) and is added, or replaces the weakest without first entering the full row (the
#: ZINCRBY-then-ZREM of a full row's new member was two listpack rewrites; 6 % fewer Redis instructions
#: on `p13n bench ingest`'s stream, callgrind).
#: One packed argument instead of thousands keeps both the client's packing and the server's
#: argument parsing cheap (``cmsgpack`` is built into Redis and Valkey); summing here moves that
#: work off the consumer's core.
#: ARGV[7] "1" forces the call (a repair of a call known not to have run): no offset check, and the
#: partition's offset only ever rises.
#: Every number is checked before anything is written: a non-finite time, weight, increment (at most
#: ``w·e^limit``), count or pair sum fails the whole call with an error naming it and nothing written (a
#: Lua script's writes before an error are not rolled back, and ZINCRBY rejects NaN mid-way).
#: The tenant's popularity zset and occurrences hash hold one entry per item: the script converts them to
#: Redis's hashed encodings (skiplist, hashtable; adding and removing a member longer than any
#: ``*-max-listpack-value``), where an update is O(log n) / O(1). As compact listpacks (a catalog of at most
#: ``zset/hash-max-listpack-entries`` items, 512 on the dev stack) every ZINCRBY scanned the whole zset and
#: parsed each score, and every HINCRBYFLOAT scanned the hash: converting them cut this script's Redis
#: instructions by 56 % on `p13n bench ingest`'s 320-item stream (callgrind). Co-visitation rows stay
#: compact: one per item, a full row of 100 members takes 1.6 KB as a listpack against 8.4 KB as a skiplist
#: (MEMORY USAGE), and as skiplists the same replay took no measurably less Redis CPU.
#: Returns 1 when applied, 0 when this partition offset was already applied.
APPLY_GLOBALS = """
local applied = redis.call('HGET', KEYS[3], ARGV[1])
local forced = ARGV[7] == '1'
if applied and tonumber(applied) >= tonumber(ARGV[2]) and not forced then
  return 0
end
local tau = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local top_m = tonumber(ARGV[5])
local packed = cmsgpack.unpack(ARGV[6])
local pops, names, links = packed[1], packed[2], packed[3]
local function finite(x)
  return type(x) == 'number' and x == x and x > -math.huge and x < math.huge
end
local headroom = math.exp(limit)
for i = 1, #pops, 3 do
  if not (finite(pops[i + 1]) and finite(pops[i + 2]) and finite(pops[i + 2] * headroom)) then
    return redis.error_reply('non-finite popularity delta for item ' .. tostring(pops[i]) .. ': time '
      .. tostring(pops[i + 1]) .. ', weight ' .. tostring(pops[i + 2]))
  end
end
local base = #names + 1
local sums, order, occurred = {}, {}, {}
local i = 1
while i <= #links do
  local b, delta, count, n = links[i], links[i + 1], links[i + 2], links[i + 3]
  if not (finite(delta) and finite(count)) then
    return redis.error_reply('non-finite co-visitation delta for item ' .. tostring(names[b]) .. ': ' .. tostring(delta)
      .. ', count ' .. tostring(count))
  end
  if count ~= 0 then
    occurred[b] = (occurred[b] or 0) + count
  end
  for j = i + 4, i + 3 + n do
    local a = links[j]
    if a ~= b then
      local pair = (a < b) and (a * base + b) or (b * base + a)
      local sum = sums[pair]
      if sum == nil then
        order[#order + 1] = pair
        sum = 0
      end
      sums[pair] = sum + delta
    end
  end
  i = i + 4 + n
end
for _, pair in ipairs(order) do
  if not finite(sums[pair]) then
    return redis.error_reply('non-finite co-visitation sum for items ' .. tostring(names[math.floor(pair / base)])
      .. ' and ' .. tostring(names[pair % base]))
  end
end
local landmark = tonumber(redis.call('HGET', KEYS[2], 'landmark') or '')
for i = 1, #pops, 3 do
  local item, t, w = pops[i], pops[i + 1], pops[i + 2]
  if not landmark then
    landmark = t
    redis.call('HSET', KEYS[2], 'landmark', string.format('%.17g', t))
  end
  local exponent = (t - landmark) / tau
  if exponent > limit then
    local factor = math.exp(-(t - landmark) / tau)
    local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for j = 1, #all, 2 do
      redis.call('ZADD', KEYS[1], tonumber(all[j + 1]) * factor, all[j])
    end
    landmark = t
    redis.call('HSET', KEYS[2], 'landmark', string.format('%.17g', t))
    exponent = 0
  end
  redis.call('ZINCRBY', KEYS[1], w * math.exp(exponent), item)
end
local sizes = {}
local function bump(key, member, delta)
  if redis.call('ZADD', key, 'XX', 'INCR', delta, member) or delta < 0 then
    return  -- a member of the row gained delta, or a negative delta met no member
  end
  local size = sizes[key] or redis.call('ZCARD', key)
  if size >= top_m then
    local weakest = redis.call('ZPOPMIN', key)
    redis.call('ZADD', key, tonumber(weakest[2]) + delta, member)
  else
    redis.call('ZADD', key, delta, member)
    size = size + 1
  end
  sizes[key] = size
end
for k, count in pairs(occurred) do
  redis.call('HINCRBYFLOAT', KEYS[4], names[k], count)
end
for _, pair in ipairs(order) do
  local delta = sums[pair]
  if delta ~= 0 then
    local a, b = math.floor(pair / base), pair % base
    bump(KEYS[4 + a], names[b], delta)
    bump(KEYS[4 + b], names[a], delta)
  end
end
local pad = string.rep('~', 1024)  -- longer than any {zset,hash}-max-listpack-value: converts the key
-- pcall: a server that refuses OBJECT (renamed or disabled) keeps the compact encodings, and the call runs
local encoding = redis.pcall('OBJECT', 'ENCODING', KEYS[1])
if type(encoding) == 'string' and encoding ~= 'skiplist' then
  redis.call('ZADD', KEYS[1], 0, pad)
  redis.call('ZREM', KEYS[1], pad)
end
encoding = redis.pcall('OBJECT', 'ENCODING', KEYS[4])
if type(encoding) == 'string' and encoding ~= 'hashtable' then
  redis.call('HSET', KEYS[4], pad, 0)
  redis.call('HDEL', KEYS[4], pad)
end
if not applied or tonumber(applied) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
return 1
"""
