-- delivery_done.lua: the bookkeeping of one delivery attempt, all or nothing (SPEC §5, §6).
--
-- KEYS (all carry the same {pN} hash tag, so they share one slot):
--   1 forward stream    2 retry set (job JSON scored by due ms)    3 dead letters
--   4 forwarded log     5 stats hash
-- ARGV:
--   1 group             2 the job's entry id in the forward stream
--   3 action: delivered | failed | retry | dead-lettered   (the attempt's result, logged)
--             defer     (no attempt made: the job waits in the retry set, nothing logged)
--   4 job JSON for the retry set (retry: attempt + 1; defer: unchanged), else ""
--   5 due time in ms for the retry set (retry, defer), else ""
--   6 now (ms)          7 minid (ms) trimming the forwarded log by age
--   8 partner_id        9 error (the dead letter's reason)    10 log_id
--   11 the job as read (the dead letter's data)
--   12 response time in ms, or "" when no HTTP request was made
--   13 latency buckets (le, ms) this attempt counts in, comma-separated (cumulative)
--   14.. the forwarded-log entry: field, value, ... (none for defer)
-- Returns 1 when recorded; 0 when the entry was no longer pending for the group (its
-- attempt was already recorded by this or another consumer): then nothing is written.
--
-- Everything is validated before the first write: Redis does not roll back.

local unpack = unpack or table.unpack -- Lua 5.1 in Redis; 5.4 in fakeredis (dev only)
local fwd, retry, dead, log, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, entry_id, action = ARGV[1], ARGV[2], ARGV[3]
local member, due, now, minid = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local partner, err, log_id, job = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local latency, buckets = ARGV[12], ARGV[13]
local first_field = 14

local known = {delivered = true, failed = true, retry = true, ["dead-lettered"] = true, defer = true}
if not known[action] then
  return redis.error_reply("delivery_done: unknown action " .. tostring(action))
end
if not (tonumber(now) and tonumber(minid)) then
  return redis.error_reply("delivery_done: now and minid must be numbers")
end
if (action == "retry" or action == "defer") and (member == "" or not tonumber(due)) then
  return redis.error_reply("delivery_done: " .. action .. " needs a job and a due time")
end
local n_fields = #ARGV - first_field + 1
if n_fields % 2 ~= 0 then
  return redis.error_reply("delivery_done: log fields must come in name, value pairs")
end
if action ~= "defer" and n_fields == 0 then
  return redis.error_reply("delivery_done: an attempt needs its forwarded-log entry")
end
if latency ~= "" and not tonumber(latency) then
  return redis.error_reply("delivery_done: latency must be a number of ms")
end
local bucket_list = {}
for le in string.gmatch(buckets, "[^,]+") do
  if not tonumber(le) then
    return redis.error_reply("delivery_done: bad latency bucket " .. le)
  end
  bucket_list[#bucket_list + 1] = le
end

-- A redelivered entry (claimed after a crash, or a re-sent pipeline) is recorded once.
if redis.call("XACK", fwd, group, entry_id) == 0 then
  return 0
end
redis.call("XDEL", fwd, entry_id)

if action == "retry" or action == "defer" then
  redis.call("ZADD", retry, due, member)
end
if action == "defer" then
  return 1
end
if action == "dead-lettered" then
  redis.call("XADD", dead, "*", "kind", "delivery", "error", err, "time", now,
    "partner_id", partner, "log_id", log_id, "data", job)
end

local fields = {}
for i = first_field, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call("XADD", log, "MINID", "~", minid, "*", unpack(fields))

redis.call("HINCRBY", stats, "delivery:" .. partner .. ":" .. action, 1)
if latency ~= "" then
  redis.call("HINCRBY", stats, "latency_sum_ms", latency)
  redis.call("HINCRBY", stats, "latency_count", 1)
  for _, le in ipairs(bucket_list) do
    redis.call("HINCRBY", stats, "latency_bucket:" .. le, 1)
  end
end
return 1
