-- retry_due.lua: move delivery jobs whose time has come from the retry set back to the
-- forward stream, where any forwarder picks them up (SPEC §5).
--
-- KEYS (same {pN} hash tag, one slot):
--   1 retry set (member: job JSON, score: due unix ms)    2 forward stream
-- ARGV:
--   1 now (ms): jobs due at or before it move     2 the most to move in this call
-- Returns how many jobs moved (equal to ARGV[2] means more may be due).

local retry, fwd = KEYS[1], KEYS[2]
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if not (now and limit and limit > 0) then
  return redis.error_reply("retry_due: now and a positive limit are required")
end

local due = redis.call("ZRANGEBYSCORE", retry, "-inf", now, "LIMIT", 0, limit)
for _, job in ipairs(due) do
  redis.call("XADD", fwd, "*", "job", job)
  redis.call("ZREM", retry, job)
end
return #due
