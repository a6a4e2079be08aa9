//! The Redis bus's scripts: the cluster's publish, and presence. The presence scripts read
//! Redis' clock (`TIME`), so instances' clocks need not agree, and each runs atomically, so
//! one transition is seen by one caller.

use std::sync::LazyLock;

use redis::Script;

/// SPUBLISH on a cluster, as a script. The redis crate counts a bare SPUBLISH as a read:
/// when its connection to a shard's primary is down it sends it to a replica, whose answer
/// is a success, so its map of the cluster is never corrected after a failover, and the
/// message reaches the shard's other nodes only by the cluster bus's best effort. A script
/// is a write: it goes to the primary (the node that stored the message), and a replica
/// that is asked answers MOVED, which refreshes the map. The channel is the key: its hash
/// tag is the slot of the room or user it announces.
pub(super) static SHARD_PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the shard channel. ARGV: the payload
return redis.call('SPUBLISH', KEYS[1], ARGV[1])",
    )
});

/// Adds (or removes) one stream of a user on this instance and returns the user's open
/// streams over all live instances. Uses Redis' clock so instances' clocks need not agree.
pub(super) static STREAM_DELTA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: this instance's presence hash, instances zset, its applied-updates counter.
-- ARGV: user, delta, ttl ms, prefix, instance
-- (Heartbeats come from the maintenance scripts only, so that their check of this instance's
-- last heartbeat is true.)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local own = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if own <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  own = 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3] * 4)
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3] * 4)
local total = own
for _, instance in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now - ARGV[3], '+inf')) do
  if instance ~= ARGV[5] then
    total = total + tonumber(redis.call('HGET', ARGV[4] .. 'presence:' .. instance, ARGV[1]) or '0')
  end
end
return total",
    )
});

/// 1 or 0 for each user in ARGV[3..]: online on some live instance.
pub(super) static ONLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: instances zset. ARGV: ttl ms, prefix, users...
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - ARGV[1], '+inf')
local result = {}
for i = 3, #ARGV do
  result[i - 2] = 0
  for _, instance in ipairs(live) do
    if redis.call('HEXISTS', ARGV[2] .. 'presence:' .. instance, ARGV[i]) == 1 then
      result[i - 2] = 1
      break
    end
  end
end
return result",
    )
});

/// Lua: `reap(instances, now, ttl, prefix)` removes instances (from the `instances` zset)
/// whose heartbeat is too old, deletes their presence keys, and returns their users not
/// counted by any live instance.
const REAP: &str = r"
local function reap(instances, now, ttl, prefix)
  local gone = {}
  local live = redis.call('ZRANGEBYSCORE', instances, now - ttl, '+inf')
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. (now - ttl))) do
    redis.call('ZREM', instances, dead)
    local hash = prefix .. 'presence:' .. dead
    for _, user in ipairs(redis.call('HKEYS', hash)) do
      local elsewhere = false
      for _, instance in ipairs(live) do
        if redis.call('HEXISTS', prefix .. 'presence:' .. instance, user) == 1 then elsewhere = true end
      end
      if not elsewhere then gone[user] = true end
    end
    redis.call('DEL', hash, prefix .. 'updates:' .. dead)
  end
  local gone_list = {}
  for user in pairs(gone) do table.insert(gone_list, user) end
  return gone_list
end
";

/// The steady round, O(1) in the instance's users: if this instance's previous heartbeat is
/// fresh, its presence hash holds as many users as the local mirror (ARGV[4]), and the
/// updates Redis applied since the last rewrite are between those the instance saw answered
/// (ARGV[5]) and those it sent (ARGV[6]), refreshes the heartbeat and the keys' expiry, reaps
/// dead instances and returns `{1, gone}`. Otherwise changes nothing and returns `{0, {}}`:
/// the caller rewrites the hash (MAINTAIN).
pub(super) static MAINTAIN_STEADY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{REAP}
-- KEYS: instances zset, this instance's presence hash, its applied-updates counter.
-- ARGV: instance, ttl ms, prefix, users in the local mirror, updates answered, updates sent
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
local applied = tonumber(redis.call('GET', KEYS[3]) or '0')
if not previous or now - tonumber(previous) > ttl
    or redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[4])
    or applied < tonumber(ARGV[5]) or applied > tonumber(ARGV[6]) then
  return {{0, {{}}}}
end
redis.call('PEXPIRE', KEYS[2], ttl * 4)
redis.call('PEXPIRE', KEYS[3], ttl * 4)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {{1, reap(KEYS[1], now, ttl, ARGV[3])}}"
    ))
});

/// Refreshes this instance's heartbeat, rewrites its presence hash from the local mirror (the
/// truth), sets its applied-updates counter to the updates sent so far, and claims instances
/// whose heartbeat is too old. Returns `{gone, back, removed}`: users of dead instances not
/// online anywhere else, users of this instance that Redis had lost (reaped while this
/// instance was cut off, say), and users Redis counted here wrongly (their presence is
/// announced again, as it is now). Atomic, so exactly one survivor announces each user. An
/// instance whose own previous heartbeat is too old was cut off itself: it reaps nobody on
/// that round, or after a Redis outage every instance would reap every other. Users are read
/// and written 500 to a call (Lua's `unpack` has a bounded stack).
pub(super) static MAINTAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{REAP}
-- KEYS: instances zset, this instance's presence hash, its applied-updates counter.
-- ARGV: instance, ttl ms, prefix, updates sent, then user, count, user, count... (the mirror)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
local chunk = 1000
local back = {{}}
local mirrored = {{}}
for first = 5, #ARGV, chunk do
  local users = {{}}
  for i = first, math.min(first + chunk - 1, #ARGV), 2 do
    table.insert(users, ARGV[i])
    mirrored[ARGV[i]] = true
  end
  for j, count in ipairs(redis.call('HMGET', KEYS[2], unpack(users))) do
    if not count then table.insert(back, users[j]) end
  end
end
local removed = {{}}
for _, user in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not mirrored[user] then table.insert(removed, user) end
end
redis.call('DEL', KEYS[2])
for first = 5, #ARGV, chunk do
  redis.call('HSET', KEYS[2], unpack(ARGV, first, math.min(first + chunk - 1, #ARGV)))
end
redis.call('PEXPIRE', KEYS[2], ttl * 4)
redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl * 4)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local gone = {{}}
if previous and now - tonumber(previous) <= ttl then gone = reap(KEYS[1], now, ttl, ARGV[3]) end
return {{gone, back, removed}}"
    ))
});
