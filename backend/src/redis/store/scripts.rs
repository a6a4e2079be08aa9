//! The Redis store's Lua scripts. Each runs atomically inside Redis and touches the keys of
//! ONE hash slot (a Redis Cluster refuses anything else): a change that spans a room and its
//! users, or a room and its join code, is a sequence of these steps, ordered so that an
//! interruption between two of them leaves nothing a reader can see (see `directory.rs`).

use std::sync::LazyLock;

use redis::Script;

/// Claims a username for an existing account record: 1, or 0 if the name is taken.
pub(super) static CLAIM_USERNAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: username key, usernames zset (one slot). ARGV: id, username
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1",
    )
});

/// Compare-and-set of a record: 1 if it still was ARGV[1] and is now ARGV[2].
pub(super) static REPLACE_IF_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the key. ARGV: the value as read, the new value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0",
    )
});

/// Deletes a pointer (join code, direct pair) only while it still points at ARGV[1].
pub(super) static DELETE_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the key. ARGV: the value it must hold
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

/// Creates a room's keys in its slot, members included: 1, or 0 if it exists already.
pub(super) static CREATE_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room key, seq key, members set. ARGV: json, member ids...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], 0)
for i = 2, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
return 1",
    )
});

/// Adds a member to an existing room: 1 if added, 0 if already a member, -1 if no room.
pub(super) static ADD_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room key, members set. ARGV: user id
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('SADD', KEYS[2], ARGV[1])",
    )
});

/// Seq assignment, append, idempotency and publish in one atomic step, in the room's slot
/// (on a cluster the channel shares the slot and the publish is `SPUBLISH`).
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room key, seq key, log stream, client-id hash, client-id order zset, members set
-- ARGV: client-id field ('' for none), entry json (without seq), channel, retention (0 = all), tag,
--       sender id, publish command (PUBLISH, SPUBLISH, or '' to publish later)
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
if ARGV[7] ~= '' then redis.call(ARGV[7], ARGV[3], ARGV[5] .. seq .. '\n' .. ARGV[2]) end
return {1, seq, ''}",
    )
});

/// Deletes a room's keys (all in its slot) and returns who its members were.
pub(super) static DELETE_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: room, members, seq, log, client ids, client-id order
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local members = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', unpack(KEYS))
return members",
    )
});
