-- hold_due: credit the held points of conversions whose hold has ended (SPEC §4 "Hold").
-- A running matcher calls it per partition with the conversions a ZRANGEBYSCORE found
-- due; no postback is needed.
--
-- KEYS, all of partition n, all with the hash tag {pn}, so they share one slot:
--   1 holds due (sorted set, conversion_id by the ms its hold ends)   keys.holds_due(n)
--   2 points hash (user_id -> cents)                                  keys.points(n)
--   3 held hash (user_id -> cents held)                               keys.held(n)
--   4.. one conversion hash per conversion id of ARGV[2..]            keys.conversion(n, id)
-- ARGV: 1 now (ms); 2.. conversion ids, in the order of KEYS[4..]
--
-- Returns the number of conversions credited. Exactly once by construction: a
-- conversion is credited only while it is still in the due set, and removed from it in
-- the same script. A conversion no longer there (credited by another matcher, or its
-- hold released by a reversal: match.lua removes it) or not yet due is skipped. Every
-- value is read and checked before the first write: Redis does not roll back.

local due, points, held = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
if not now or #KEYS ~= #ARGV + 2 then
  return redis.error_reply("hold_due: arguments do not fit the keys")
end
local function integer(value)
  return value ~= nil and string.match(value, "^%-?%d+$") ~= nil and #value <= 15
end

local ready = {}
for i = 2, #ARGV do
  local cid, key = ARGV[i], KEYS[i + 2]
  local score = tonumber(redis.call("ZSCORE", due, cid))
  if score and score <= now then
    local v = redis.call("HMGET", key, "user_id", "held_cents", "credited_cents", "history")
    local user, amount, credited = v[1], v[2] or "0", v[3] or "0"
    if not (integer(amount) and integer(credited)) then
      return redis.error_reply("hold_due: conversion " .. cid .. " has a malformed amount")
    end
    if tonumber(amount) > 0 and (user == false or user == "") then
      return redis.error_reply("hold_due: conversion " .. cid .. " has no user_id")
    end
    ready[#ready + 1] = { cid = cid, key = key, user = user, amount = tonumber(amount),
      credited = tonumber(credited), history = v[4] or "" }
  end
end
for _, c in ipairs(ready) do
  if c.amount > 0 then
    local balance = redis.call("HGET", points, c.user) or "0"
    local holding = redis.call("HGET", held, c.user) or "0"
    if not (integer(balance) and integer(holding)) then
      return redis.error_reply("hold_due: balance of " .. c.user .. " is not an integer")
    end
  end
end

local credited = 0
for _, c in ipairs(ready) do
  redis.call("ZREM", due, c.cid)
  if c.amount > 0 then
    redis.call("HINCRBY", points, c.user, c.amount)
    redis.call("HINCRBY", held, c.user, -c.amount)
    -- The history gains the step, as match.lua writes its steps (a JSON list).
    local step = '{"status":"approved","at":' .. ARGV[1] .. ',"effect":"hold ended"}'
    local history = "[" .. step .. "]"
    if c.history ~= "" and c.history ~= "[]" then
      history = string.sub(c.history, 1, -2) .. "," .. step .. "]"
    end
    redis.call("HSET", c.key, "held_cents", "0", "credited_cents",
      string.format("%d", c.credited + c.amount), "hold_released", ARGV[1],
      "history", history)
    credited = credited + 1
  end
end
return credited
