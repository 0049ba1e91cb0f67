-- match.lua: the matcher's atomic step for one input entry (SPEC §4).
--
-- KEYS, all of partition n, all with the hash tag {pn}, so they share one slot:
--   1 input stream    2 conversion hash    3 points hash (user_id -> cents)
--   4 forward stream  5 received log       6 stats hash
--   7 conversion index (sorted set, conversion_id by created ms)
-- ARGV:
--   1 group    2 log_id (the input entry id)
--   3 minid: received-log entries older than this (ms) may be trimmed
--   4 the postback's time, ms (from the entry id)
--   5 mode: "c" a conversion event, the effect chosen by the conversion's current
--     status; "p" plain (unmatched, test): no conversion is read or written
--   6 the postback's status    7 user_id    8 conversion_id    9 currency
--   10 partner payout cents computed from the postback (what a creation credits)
--   11 upstream payout cents, or "" when the postback gave none: a move then credits
--      the conversion's stored partner payout and keeps its stored payouts
--   12 history entry JSON without its closing brace
--   13 number of conversion-only fields   14 number of fields shared by the new
--      conversion and the log   15 number of log-only fields   16 number of forward jobs
--   17..20 effect for current status "", pending, approved, rejected (mode "p": 17
--      only), each "<flags>outcome|history step|reason"; <flags> is one character,
--      64 + the sum of: 1 create, 2 set status, 4 append to history only, 8 credit,
--      16 debit what was credited, 32 forward
--   21.. fields (name, value, ...): conversion-only, shared, log-only; then one job
--      JSON per forward job. A new conversion gets the conversion-only and shared
--      fields, the log gets the shared and log-only ones (sent once, used twice).
-- Mode "c" writes log_id, time, status, user_id and (when a conversion exists after
-- the step) conversion_id to the log itself; mode "p" gets every log field in ARGV.
-- A new conversion gets the ids and amounts of ARGV 2..11. A job carries the payout
-- computed from the postback; when the conversion reports another (an update without
-- payout, a reversal) the job's first "payout":"<ARGV 10 as 0.00>" is rewritten.
-- Returns the outcome; "already-processed" (nothing written) when the entry is no
-- longer pending for the group: a redelivery, or a pipeline re-sent after a lost reply.
--
-- Everything is read and checked before the first write: Redis does not roll back.

local unpack = unpack or table.unpack -- Lua 5.1 in Redis; 5.4 in fakeredis (dev only)
local stream, conv, points, fwd, log, stats, index =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local group, log_id, minid, at, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local status, user, conversion_id, currency = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local credit, upstream, history_head = tonumber(ARGV[10]), ARGV[11], ARGV[12]
local n_conv, n_shared = tonumber(ARGV[13]), tonumber(ARGV[14])
local n_log, n_jobs = tonumber(ARGV[15]), tonumber(ARGV[16])
local FIRST = 21

if not (credit and n_conv and n_shared and n_log and n_jobs and tonumber(at) and tonumber(minid)) then
  return redis.error_reply("match: malformed number in the plan")
end
if upstream ~= "" and not tonumber(upstream) then
  return redis.error_reply("match: malformed upstream payout")
end
if #ARGV ~= FIRST - 1 + n_conv + n_shared + n_log + n_jobs
    or n_conv % 2 == 1 or n_shared % 2 == 1 or n_log % 2 == 1 then
  return redis.error_reply("match: argument count does not match the plan")
end
if mode ~= "c" and mode ~= "p" then
  return redis.error_reply("match: unknown mode")
end

if #redis.call("XPENDING", stream, group, log_id, log_id, 1) == 0 then
  return "already-processed"
end

local current, credited, history, stored_partner = "", 0, "", 0
local spec = ARGV[17]
if mode == "c" then
  local state = redis.call("HMGET", conv, "status", "credited_cents", "history",
    "partner_payout_cents")
  current, history = state[1] or "", state[3] or ""
  credited, stored_partner = tonumber(state[2] or "0"), tonumber(state[4] or "0")
  if current == "pending" then
    spec = ARGV[18]
  elseif current == "approved" then
    spec = ARGV[19]
  elseif current == "rejected" then
    spec = ARGV[20]
  elseif current ~= "" then
    return redis.error_reply("match: conversion has unknown status")
  end
  if not (credited and stored_partner) then
    return redis.error_reply("match: conversion has a malformed amount")
  end
end

local flags = (string.byte(spec, 1) or 0) - 64
local a = string.find(spec, "|", 2, true)
local b = a and string.find(spec, "|", a + 1, true)
if flags < 0 or flags > 63 or not b then
  return redis.error_reply("match: malformed effect")
end
local outcome, step, reason = string.sub(spec, 2, a - 1), string.sub(spec, a + 1, b - 1),
  string.sub(spec, b + 1)
local function on(bit)
  return math.floor(flags / bit) % 2 == 1
end
local create, set_status, keep_history = on(1), on(2), on(4)
local do_credit, do_debit, forward = on(8), on(16), on(32)
if mode == "p" and flags % 32 ~= 0 then
  return redis.error_reply("match: a plain entry cannot change a conversion")
end
if (create or set_status) and status == "" then
  return redis.error_reply("match: status required")
end
if (do_credit or do_debit) and user == "" then
  return redis.error_reply("match: user_id required to move points")
end

-- The amount this step credits (or debits), and the partner payout a forward reports.
local change, reported = 0, stored_partner
if create then
  reported = credit
  if do_credit then change = credit end
elseif do_credit then
  change = (upstream == "") and stored_partner or credit
  reported = change
elseif do_debit then
  change = -credited
end

-- Writes. HINCRBY goes first: it is the only one a corrupt value can fail.
if change ~= 0 then
  redis.call("HINCRBY", points, user, change)
end
local entry = history_head .. ',"effect":"' .. step .. '"}'
if create then
  redis.call("HSET", conv, "status", status, "credited_cents", change, "created", at,
    "updated", at, "history", "[" .. entry .. "]", "conversion_id", conversion_id,
    "user_id", user, "currency", currency, "log_id", log_id,
    "payout_cents", (upstream == "") and 0 or upstream, "partner_payout_cents", credit,
    unpack(ARGV, FIRST, FIRST + n_conv + n_shared - 1))
  redis.call("ZADD", index, at, conversion_id)
elseif set_status or keep_history then
  if history == "" or history == "[]" then
    history = "[" .. entry .. "]"
  else
    history = string.sub(history, 1, -2) .. "," .. entry .. "]"
  end
  if not set_status then
    redis.call("HSET", conv, "history", history)
  elseif do_credit and upstream ~= "" then
    redis.call("HSET", conv, "status", status, "updated", at, "history", history,
      "credited_cents", credited + change, "payout_cents", upstream,
      "partner_payout_cents", credit, "currency", currency)
  else
    redis.call("HSET", conv, "status", status, "updated", at, "history", history,
      "credited_cents", credited + change)
  end
end

local function money(cents)
  return string.format("%d.%02d", math.floor(cents / 100), cents % 100)
end

local jobs_from = FIRST + n_conv + n_shared + n_log
if forward then
  local old, new
  if mode == "c" and reported ~= credit then
    old = '"payout":"' .. money(credit) .. '"'
    new = '"payout":"' .. money(reported) .. '"'
  end
  for i = jobs_from, jobs_from + n_jobs - 1 do
    local job = ARGV[i]
    if old then
      local s, e = string.find(job, old, 1, true)
      if s then
        job = string.sub(job, 1, s - 1) .. new .. string.sub(job, e + 1)
      end
    end
    redis.call("XADD", fwd, "*", "job", job)
  end
end

local from, to = FIRST + n_conv, jobs_from - 1
if mode == "p" or (current == "" and not create) then
  -- No conversion behind this entry (unmatched, test, or refused): no conversion_id.
  local fields = {"outcome", outcome}
  if reason ~= "" then
    fields[3], fields[4] = "reason", reason
  end
  if mode == "c" then
    for _, v in ipairs({"log_id", log_id, "time", at, "status", status, "user_id", user}) do
      fields[#fields + 1] = v
    end
  end
  for i = from, to do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call("XADD", log, "MINID", "~", minid, "*", unpack(fields))
elseif reason == "" then
  redis.call("XADD", log, "MINID", "~", minid, "*", "log_id", log_id, "time", at,
    "status", status, "conversion_id", conversion_id, "user_id", user, "outcome", outcome,
    unpack(ARGV, from, to))
else
  redis.call("XADD", log, "MINID", "~", minid, "*", "log_id", log_id, "time", at,
    "status", status, "conversion_id", conversion_id, "user_id", user, "outcome", outcome,
    "reason", reason, unpack(ARGV, from, to))
end
redis.call("HINCRBY", stats, "outcome:" .. outcome, 1)
redis.call("XACK", stream, group, log_id)
redis.call("XDEL", stream, log_id)
return outcome
