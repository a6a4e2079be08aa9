//! The Redis store's Lua scripts: each runs atomically inside Redis, which is what makes a
//! multi-key change (or seq assignment + append + publish) one step for every instance.

use std::sync::LazyLock;

use redis::Script;

pub(super) static CREATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: username key, user key, usernames zset. ARGV: id, json, username
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
return 1",
    )
});

/// Compare-and-set of an account's record: 1 if it still was ARGV[1] and is now ARGV[2].
pub(super) static REPLACE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: user key. ARGV: the record as read, the new record
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0",
    )
});

/// A group room's new join code: -1 if the room's record changed since it was read (read
/// again), 0 if the new code is taken, 1 when done.
pub(super) static CHANGE_CODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room key, old code key, new code key. ARGV: the record as read, the new record, room id
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3])
return 1",
    )
});

pub(super) static CREATE_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: code key, room key, seq key, members set, owner's rooms set. ARGV: room id, json, owner id
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], 0)
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[1])
return 1",
    )
});

pub(super) static OPEN_DIRECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: direct key, room key, seq key, members set, a's rooms, b's rooms. ARGV: id, json, a, b
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], 0)
redis.call('SADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
return {1, ARGV[1]}",
    )
});

pub(super) static ADD_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room key, members set, user's rooms set. ARGV: user id, room id
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('SADD', KEYS[3], ARGV[2])
return redis.call('SADD', KEYS[2], ARGV[1])",
    )
});

/// Seq assignment, append, idempotency and publish in one atomic step.
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room key, seq key, log stream, client-id hash, client-id order zset, members set
-- ARGV: client-id field ('' for none), entry json (without seq), channel, retention (0 = all), tag,
--       sender id
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, ''} end
if redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 0 then return {-2, 0, ''} end
if ARGV[1] ~= '' then
  local known = redis.call('HGET', KEYS[4], ARGV[1])
  if known then
    local entry = redis.call('XRANGE', KEYS[3], known .. '-0', known .. '-0')
    if entry[1] then return {0, tonumber(known), entry[1][2][2]} end
    return {0, tonumber(known), ''}
  end
end
local seq = redis.call('INCR', KEYS[2])
local retention = tonumber(ARGV[4])
if retention > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', retention, seq .. '-0', 'm', ARGV[2])
else
  redis.call('XADD', KEYS[3], seq .. '-0', 'm', ARGV[2])
end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], seq)
  if retention > 0 then redis.call('ZADD', KEYS[5], seq, ARGV[1]) end
end
if retention > 0 then
  -- Idempotency keys live as long as their messages: forget those of trimmed ones.
  local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  local first_seq = tonumber(string.match(first[1], '^(%d+)'))
  local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. first_seq, 'LIMIT', 0, 1000)
  if #stale > 0 then
    redis.call('HDEL', KEYS[4], unpack(stale))
    redis.call('ZREM', KEYS[5], unpack(stale))
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[5] .. seq .. '\n' .. ARGV[2])
return {1, seq, ''}",
    )
});

pub(super) static DELETE_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room, members, seq, log, client ids, code or direct key (optional). ARGV: room id, prefix
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local members = redis.call('SMEMBERS', KEYS[2])
for _, member in ipairs(members) do
  redis.call('SREM', ARGV[2] .. 'user:' .. member .. ':rooms', ARGV[1])
end
redis.call('DEL', unpack(KEYS))
return members",
    )
});
