-- dead_letter.lua: give up on an input entry that failed too often (SPEC §4), atomically.
--
-- KEYS, all of partition n, all with the hash tag {pn}, so they share one slot:
--   1 input stream   2 dead letters   3 received log   4 stats hash
-- ARGV:
--   1 group   2 log_id (the input entry id)
--   3 minid: received-log entries older than this (ms) may be trimmed
--   4 now (ms)   5 error (one line)   6 data: JSON of the input entry's fields
--   7.. received-log fields (name, value, ...)
-- Returns "dead-lettered", or "already-processed" (nothing written) when the entry is
-- no longer pending for the group.
--
-- The dead letter, the received-log entry with outcome dead-lettered, the counter and
-- the XACK + XDEL happen together, so the entry never blocks the group and is never lost.

local unpack = unpack or table.unpack -- Lua 5.1 in Redis; 5.4 in fakeredis (dev only)
local stream, dead, log, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, log_id, minid, now, err, data = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if not (tonumber(minid) and tonumber(now)) or #ARGV % 2 == 1 then
  return redis.error_reply("dead_letter: malformed arguments")
end
if #redis.call("XPENDING", stream, group, log_id, log_id, 1) == 0 then
  return "already-processed"
end

redis.call("XADD", dead, "*", "kind", "postback", "error", err, "time", now,
  "log_id", log_id, "data", data)
redis.call("XADD", log, "MINID", "~", minid, "*", "outcome", "dead-lettered", "reason", err,
  unpack(ARGV, 7, #ARGV))
redis.call("HINCRBY", stats, "outcome:dead-lettered", 1)
redis.call("XACK", stream, group, log_id)
redis.call("XDEL", stream, log_id)
return "dead-lettered"
