-- delivery_done.lua: the bookkeeping of delivery attempts, all or nothing (SPEC §5, §6).
--
-- One call records a batch of attempts (and deferrals) of one partition: each its ack,
-- retry or dead letter, forwarded-log entry and stats. A batch, not one call per
-- attempt, because the forwarder is bound by its CPU: one call carries the log's field
-- names and the histogram's bounds once, and the stats go in once per counter.
--
-- KEYS (all carry the same {pN} hash tag, so they share one slot):
--   1 forward stream    2 retry set (job JSON scored by due ms)    3 dead letters
--   4 forwarded log     5 stats hash
-- ARGV:
--   1 group             2 minid (ms) trimming the forwarded log by age
--   3 the latency histogram's bounds (le, ms), comma-separated (cumulative buckets)
--   4 F, how many fields a forwarded-log entry has; 5 .. 4+F their names
--   then one record per attempt, 10 + F values each:
--     entry id in the forward stream
--     action: delivered | failed | retry | dead-lettered   (the attempt's result, logged)
--             defer     (no attempt made: the job waits in the retry set, nothing logged)
--     job JSON for the retry set (retry: attempt + 1; defer: unchanged), else ""
--     due time in ms for the retry set (retry, defer), else ""
--     time of the attempt (ms)    partner_id    error (the dead letter's reason)    log_id
--     the job as read (the dead letter's data; only for dead-lettered)
--     response time in ms, or "" when no HTTP request was made
--     the forwarded-log entry's F values, in the order of the names ("" each for defer)
-- Returns one number per record: 1 when recorded; 0 when the entry was no longer pending
-- for the group (its attempt was already recorded by this or another consumer): then
-- nothing of that record is written.
--
-- Everything is validated before the first write, the keys' types too: Redis does not
-- roll back, and a batch must not stop half way.

local unpack = unpack or table.unpack -- Lua 5.1 in Redis; 5.4 in fakeredis (dev only)
local fwd, retry, dead, log, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, minid, bounds = ARGV[1], ARGV[2], ARGV[3]
local n_fields = tonumber(ARGV[4])

local function fail(message)
  return redis.error_reply("delivery_done: " .. message)
end

if not tonumber(minid) then
  return fail("minid must be a number")
end
if not (n_fields and n_fields >= 1) then
  return fail("the number of log fields must be positive")
end
local names = {}
for i = 1, n_fields do
  names[i] = ARGV[4 + i]
end
local buckets = {}
for le in string.gmatch(bounds, "[^,]+") do
  if not tonumber(le) then
    return fail("bad latency bucket " .. le)
  end
  buckets[#buckets + 1] = {le, tonumber(le)}
end
local first, width = 5 + n_fields, 10 + n_fields
if (#ARGV - first + 1) % width ~= 0 then
  return fail("each record needs " .. width .. " values")
end

local wanted = {[fwd] = "stream", [retry] = "zset", [dead] = "stream", [log] = "stream", [stats] = "hash"}
for key, kind in pairs(wanted) do
  local found = redis.call("TYPE", key)["ok"]
  if found ~= kind and found ~= "none" then
    return fail(key .. " holds a " .. found .. ", not a " .. kind)
  end
end

local known = {delivered = true, failed = true, retry = true, ["dead-lettered"] = true, defer = true}
for at = first, #ARGV, width do
  local action, member, due, now = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  if not string.match(ARGV[at], "^%d+%-%d+$") then
    return fail("bad entry id " .. tostring(ARGV[at]))
  end
  if not known[action] then
    return fail("unknown action " .. tostring(action))
  end
  if not tonumber(now) then
    return fail("the attempt's time must be a number")
  end
  if (action == "retry" or action == "defer") and (member == "" or not tonumber(due)) then
    return fail(action .. " needs a job and a due time")
  end
  local latency = ARGV[at + 9]
  if latency ~= "" and not tonumber(latency) then
    return fail("latency must be a number of ms")
  end
end

local counts = {} -- stats field -> increment, written once at the end
local function count(field, by)
  counts[field] = (counts[field] or 0) + by
end

local recorded = {}
for at = first, #ARGV, width do
  local entry_id, action, member, due = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local now, partner, err, log_id = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6], ARGV[at + 7]
  local job, latency = ARGV[at + 8], ARGV[at + 9]
  -- A redelivered entry (claimed after a crash, or a re-sent call) is recorded once.
  if redis.call("XACK", fwd, group, entry_id) == 0 then
    recorded[#recorded + 1] = 0
  else
    recorded[#recorded + 1] = 1
    redis.call("XDEL", fwd, entry_id)
    if action == "retry" or action == "defer" then
      redis.call("ZADD", retry, due, member)
    end
    if action ~= "defer" then
      if action == "dead-lettered" then
        redis.call("XADD", dead, "*", "kind", "delivery", "error", err, "time", now,
          "partner_id", partner, "log_id", log_id, "data", job)
      end
      local fields = {}
      for i = 1, n_fields do
        fields[2 * i - 1] = names[i]
        fields[2 * i] = ARGV[at + 9 + i]
      end
      redis.call("XADD", log, "MINID", "~", minid, "*", unpack(fields))
      count("delivery:" .. partner .. ":" .. action, 1)
      if latency ~= "" then
        local ms = tonumber(latency)
        count("latency_sum_ms", ms)
        count("latency_count", 1)
        for _, bucket in ipairs(buckets) do
          if ms <= bucket[2] then
            count("latency_bucket:" .. bucket[1], 1)
          end
        end
      end
    end
  end
end

for field, by in pairs(counts) do
  redis.call("HINCRBY", stats, field, by)
end
return recorded
