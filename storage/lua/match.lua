-- match.lua: the matcher's atomic step for a chunk of input entries of one partition
-- (SPEC §4). One call applies k entries, each all-or-nothing, so the script's setup,
-- the fixed keys, the counters, the XDEL and the reply are paid once per chunk.
--
-- KEYS, all of partition n, all with the hash tag {pn}, so they share one slot:
--   1 input stream, 2..k+1 each entry's conversion hash (a plain entry's is never
--   touched), then the last seven: points hash (user_id -> cents), forward stream,
--   received log, stats hash, conversion index (sorted set, conversion_id by created ms),
--   held hash (user_id -> cents held), holds due (sorted set, conversion_id by the ms
--   its hold ends; hold_due.lua credits them)
-- ARGV: 1 group; one segment per entry; then minid (received-log entries older than
--   this, ms, may be trimmed) and now (ms, the forward jobs' "created"). A segment has
--   29 + r arguments, by offset: +0 log_id (the input entry id)  +1 the postback's
--   time, ms  +2 its status  +3 user_id  +4 conversion_id, "" for a plain entry
--   (unmatched, test: no conversion read or written)  +5 currency  +6 partner payout
--   cents from the postback (what a creation credits)  +7 upstream payout cents, or ""
--   when the postback gave none (a move then credits the stored partner payout and
--   keeps the stored payouts)  +8 history entry JSON without its closing brace
--   +9..+12 effect for current status "", pending, approved, rejected (plain: +9 only),
--   each "<flags>outcome|history step|reason", <flags> one character: 64 + the sum of
--   1 create, 2 set status, 4 append to history only, 8 credit, 16 debit what was
--   credited, 32 forward  +13 payload JSON (its "payout" the one of +6)  +14 r
--   +15 source +16 click_id +17 offer_id +18 partner_id +19 matched_by +20 warning
--   +21 method +22 ip +23 params +24 transaction_id +25 goal +26 survey_id +27 custom
--   ("" = absent, but for +15..+19 of a conversion)  +28 hold ms of the offer ("0" =
--   none: a credit goes to the points; else to the held hash until +1 + hold, when
--   hold_due.lua credits it; a debit during the hold releases it)  +29.. the r
--   recipients' partner_id as JSON strings: one forward job each, wrapping the payload. When the
--   conversion reports another payout (an update without payout, a reversal) the
--   payload's first "payout":"<+6 as 0.00>" is rewritten.
-- Returns the entries' outcomes separated by spaces, "already-processed" (nothing
-- written) for an entry no longer pending for the group: a redelivery, or a pipeline
-- re-sent after a lost reply. An error reply means nothing at all was written: an
-- entry failed validation, and the caller sends the entries again one per call.
--
-- Every entry is read and checked before the chunk's first write: Redis does not roll
-- back. An entry's first write is its XACK, which is also the redelivery guard.

local unpack = unpack or table.unpack -- Lua 5.1 in Redis; 5.4 in fakeredis (dev only)
-- Globals are table lookups: the hot ones are taken once.
local KEYS, ARGV, call, tonumber = KEYS, ARGV, redis.call, tonumber
local floor, sub, find, byte, format = math.floor, string.sub, string.find, string.byte,
  string.format
local SEG = 29
local nkeys, nargs = #KEYS, #ARGV
local k = nkeys - 8
local function fail(message)
  return redis.error_reply("match: " .. message)
end
if k < 1 or nargs < 3 then
  return fail("argument count does not match the plan")
end
local stream = KEYS[1]
local points, fwd, log, stats, index, held, due =
  KEYS[nkeys - 6], KEYS[nkeys - 5], KEYS[nkeys - 4], KEYS[nkeys - 3], KEYS[nkeys - 2],
  KEYS[nkeys - 1], KEYS[nkeys]
local group, minid, now = ARGV[1], ARGV[nargs - 1], ARGV[nargs]
if not (tonumber(minid) and tonumber(now)) then
  return fail("malformed number in the plan")
end

-- Where each segment starts; how many entries of the chunk share each conversion.
local start, recipients, uses = {}, {}, {}
local pos = 2
for i = 1, k do
  local r = tonumber(ARGV[pos + 14])
  if not r or r < 0 or r % 1 ~= 0 then
    return fail("argument count does not match the plan")
  end
  start[i], recipients[i] = pos, r
  if ARGV[pos + 4] ~= "" then
    uses[KEYS[i + 1]] = (uses[KEYS[i + 1]] or 0) + 1
  end
  pos = pos + SEG + r
end
if pos ~= nargs - 1 then
  return fail("argument count does not match the plan")
end

-- Effects, parsed once per distinct spec (a chunk shares a handful).
local parsed = {}
local function effect(spec)
  local e = parsed[spec]
  if e == nil then
    local flags = (byte(spec, 1) or 0) - 64
    local a = find(spec, "|", 2, true)
    local b = a and find(spec, "|", a + 1, true)
    e = false
    if flags >= 0 and flags <= 63 and b then
      local function on(bit)
        return floor(flags / bit) % 2 == 1
      end
      e = { outcome = sub(spec, 2, a - 1), step = sub(spec, a + 1, b - 1),
        reason = sub(spec, b + 1), create = on(1), set_status = on(2), keep = on(4),
        credit = on(8), debit = on(16), forward = on(32), plain = flags % 32 == 0 }
    end
    parsed[spec] = e
  end
  return e
end
local SLOT = { [""] = 9, pending = 10, approved = 11, rejected = 12 }

-- Validation, no writes. Each conversion is read once; its status is then followed
-- (st.sim) through the chunk as if every entry applies. An entry found processed
-- already changes what later entries of its conversion meet, so a conversion used
-- twice has all its effects checked.
local state, balances, users, credits, holds, held_of = {}, {}, {}, {}, {}, {}
local function check(e, p)
  local status = ARGV[p + 2]
  if not e then
    return "malformed effect"
  elseif (e.create or e.set_status) and (status == "" or not SLOT[status]) then
    return "a conversion cannot take status '" .. status .. "'"
  elseif e.credit or e.debit then
    local user = ARGV[p + 3]
    if user == "" then
      return "user_id required to move points"
    elseif not balances[user] then
      balances[user] = true
      users[#users + 1] = user
    end
  end
end
for i = 1, k do
  local p, key = start[i], KEYS[i + 1]
  credits[i], holds[i] = tonumber(ARGV[p + 6]), tonumber(ARGV[p + 28])
  if not (credits[i] and tonumber(ARGV[p + 1]) and holds[i]) then
    return fail("malformed number in the plan")
  elseif ARGV[p + 7] ~= "" and not tonumber(ARGV[p + 7]) then
    return fail("malformed upstream payout")
  end
  if ARGV[p + 4] == "" then
    local e = effect(ARGV[p + 9])
    if not (e and e.plain) then
      return fail(e and "a plain entry cannot change a conversion" or "malformed effect")
    end
  else
    local st = state[key]
    if not st then
      local v = call("HMGET", key, "status", "credited_cents", "history",
        "partner_payout_cents", "held_cents")
      st = { status = v[1] or "", credited = 0, history = v[3] or "", partner = 0,
        held = tonumber(v[5] or "0") }
      if v[2] or v[4] then
        st.credited, st.partner = tonumber(v[2] or "0"), tonumber(v[4] or "0")
      end
      if not SLOT[st.status] then
        return fail("conversion has unknown status")
      elseif not (st.credited and st.partner and st.held) then
        return fail("conversion has a malformed amount")
      end
      st.sim, state[key] = st.status, st
    end
    local e = effect(ARGV[p + SLOT[st.sim]])
    local problem = check(e, p)
    for slot = 9, (uses[key] > 1) and 12 or 0 do
      problem = problem or check(effect(ARGV[p + slot]), p)
    end
    if problem then
      return fail(problem)
    elseif e.create or e.set_status then
      st.sim = ARGV[p + 2]
    end
  end
end
-- Points are summed here and written once: every balance touched must be an integer.
if #users > 0 then
  local values, held_values = call("HMGET", points, unpack(users)),
    call("HMGET", held, unpack(users))
  for j, user in ipairs(users) do
    local value, held_value = values[j] or "0", held_values[j] or "0"
    if not string.match(value, "^%-?%d+$") or #value > 15 then
      return fail("points balance of " .. user .. " is not an integer")
    elseif not string.match(held_value, "^%-?%d+$") or #held_value > 15 then
      return fail("held points of " .. user .. " is not an integer")
    end
    balances[user], held_of[user] = tonumber(value), tonumber(held_value)
  end
end
-- Wrong-typed keys fail here, not halfway through the writes.
call("HLEN", points)
call("XLEN", fwd)
call("XLEN", log)
call("HLEN", stats)
call("ZCARD", index)
call("HLEN", held)
call("ZCARD", due)

-- Writes. Tables are built by constructors where possible (growing them pair by pair
-- costs more) and amounts go to Redis as the strings they came as (numbers would be
-- formatted).
local NAMES = { [15] = "source", [16] = "click_id", [17] = "offer_id", [18] = "partner_id",
  [19] = "matched_by", [20] = "warning", [21] = "method", [22] = "ip", [23] = "params",
  [24] = "transaction_id", [25] = "goal", [26] = "survey_id", [27] = "custom" }
-- Puts (name, value) of the segment's offsets from..to after fields[n], only those not
-- empty when skip_empty; returns the new length.
local function put(fields, n, p, from, to, skip_empty)
  for j = from, to do
    local value = ARGV[p + j]
    if not skip_empty or value ~= "" then
      fields[n + 1], fields[n + 2], n = NAMES[j], value, n + 2
    end
  end
  return n
end
-- The received-log fields of an entry, in the order they always had.
local function log_fields(p, e, cid, current)
  local reason, f, n = e.reason, nil, nil
  if cid ~= "" and (current ~= "" or e.create) then
    if reason == "" and ARGV[p + 20] == "" then -- the common case
      return { "log_id", ARGV[p], "time", ARGV[p + 1], "status", ARGV[p + 2],
        "conversion_id", cid, "user_id", ARGV[p + 3], "outcome", e.outcome,
        "source", ARGV[p + 15], "click_id", ARGV[p + 16], "offer_id", ARGV[p + 17],
        "partner_id", ARGV[p + 18], "matched_by", ARGV[p + 19], "method", ARGV[p + 21],
        "ip", ARGV[p + 22], "params", ARGV[p + 23] }, 28
    end
    f, n = { "log_id", ARGV[p], "time", ARGV[p + 1], "status", ARGV[p + 2],
      "conversion_id", cid, "user_id", ARGV[p + 3], "outcome", e.outcome }, 12
    if reason ~= "" then
      f[13], f[14], n = "reason", reason, 14
    end
  else
    -- No conversion behind this entry (unmatched, test, or refused): no conversion_id.
    f, n = { "outcome", e.outcome }, 2
    if reason ~= "" then
      f[3], f[4], n = "reason", reason, 4
    end
    f[n + 1], f[n + 2], f[n + 3], f[n + 4], f[n + 5], f[n + 6], n =
      "log_id", ARGV[p], "time", ARGV[p + 1], "status", ARGV[p + 2], n + 6
    if cid == "" then
      n = put(f, put(f, put(f, n, p, 15, 15), p, 21, 23), p, 16, 18, true)
      if ARGV[p + 3] ~= "" then
        f[n + 1], f[n + 2], n = "user_id", ARGV[p + 3], n + 2
      end
      return f, n
    end
    f[n + 1], f[n + 2], n = "user_id", ARGV[p + 3], n + 2
  end
  return f, put(f, put(f, put(f, n, p, 15, 19), p, 20, 20, true), p, 21, 23)
end
local function money(cents)
  return format("%d.%02d", floor(cents / 100), cents % 100)
end

local outcomes, acked, created, tally, touched, held_touched = {}, {}, {}, {}, {}, {}
local n_acked, n_created = 0, 0
for i = 1, k do
  local p, key = start[i], KEYS[i + 1]
  local log_id, at, status, user, cid = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3],
    ARGV[p + 4]
  if call("XACK", stream, group, log_id) == 0 then
    outcomes[i] = "already-processed"
  else
    n_acked, acked[n_acked + 1] = n_acked + 1, log_id
    local credit, upstream, payload = credits[i], ARGV[p + 7], ARGV[p + 13]
    local st, current, reported = state[key], "", 0
    if st then
      current = st.status
    end
    local e = effect(ARGV[p + SLOT[current]])
    if cid ~= "" then
      -- The amount this step credits (or debits), and the payout a forward reports.
      local change = 0
      reported = st.partner
      if e.create then
        reported, change = credit, e.credit and credit or 0
      elseif e.credit then
        change = (upstream == "") and st.partner or credit
        reported = change
      elseif e.debit then
        change = -st.credited
      end
      -- A credit on a held offer is held (hold_due.lua moves it to the points when the
      -- hold ends); a debit while points are held releases them instead.
      local hold_until, to_hold = "", 0
      if change > 0 and holds[i] > 0 then
        to_hold, change = change, 0
        hold_until = format("%d", tonumber(at) + holds[i])
        held_of[user], held_touched[user] = held_of[user] + to_hold, true
        call("ZADD", due, hold_until, cid)
      elseif e.debit and st.held > 0 then
        to_hold = -st.held
        held_of[user], held_touched[user] = held_of[user] - st.held, true
        call("ZREM", due, cid)
      end
      if change ~= 0 then
        balances[user], touched[user] = balances[user] + change, true
      end
      if e.create then
        st.status, st.credited, st.partner = status, change, credit
        st.history = "[" .. ARGV[p + 8] .. ',"effect":"' .. e.step .. '"}]'
        -- Room for the optional fields after the 32 always written.
        local f = { "status", status, "credited_cents", (change == 0) and "0" or ARGV[p + 6],
          "created", at, "updated", at, "history", st.history, "conversion_id", cid,
          "user_id", user, "currency", ARGV[p + 5], "log_id", log_id,
          "payout_cents", (upstream == "") and "0" or upstream,
          "partner_payout_cents", ARGV[p + 6], "source", ARGV[p + 15],
          "click_id", ARGV[p + 16], "offer_id", ARGV[p + 17], "partner_id", ARGV[p + 18],
          "matched_by", ARGV[p + 19], false, false, false, false, false, false, false,
          false, false, false }
        local n = put(f, put(f, 32, p, 24, 27, true), p, 20, 20, true)
        if to_hold > 0 then
          st.held = to_hold
          f[n + 1], f[n + 2], f[n + 3], f[n + 4], n =
            "held_cents", ARGV[p + 6], "hold_until", hold_until, n + 4
        end
        call("HSET", key, unpack(f, 1, n))
        created[n_created + 1], created[n_created + 2], n_created = at, cid, n_created + 2
      elseif e.set_status or e.keep then
        -- A held credit and a released hold say so in the history.
        local step = (to_hold > 0 and "held") or (to_hold < 0 and "released") or e.step
        local entry = ARGV[p + 8] .. ',"effect":"' .. step .. '"}'
        if st.history == "" or st.history == "[]" then
          st.history = "[" .. entry .. "]"
        else
          st.history = sub(st.history, 1, -2) .. "," .. entry .. "]"
        end
        if not e.set_status then
          call("HSET", key, "history", st.history)
        elseif e.credit and upstream ~= "" then
          call("HSET", key, "status", status, "updated", at, "history", st.history,
            "credited_cents", format("%d", st.credited + change), "payout_cents", upstream,
            "partner_payout_cents", ARGV[p + 6], "currency", ARGV[p + 5])
          st.partner = credit
        else
          call("HSET", key, "status", status, "updated", at, "history", st.history,
            "credited_cents", format("%d", st.credited + change))
        end
        if e.set_status then
          st.status, st.credited = status, st.credited + change
        end
        if to_hold > 0 then
          st.held = st.held + to_hold
          call("HSET", key, "held_cents", format("%d", st.held), "hold_until", hold_until)
        elseif to_hold < 0 then
          st.held = 0
          call("HSET", key, "held_cents", "0")
        end
      end
    end

    if e.forward then
      if cid ~= "" and reported ~= credit then
        local s, f = find(payload, '"payout":"' .. money(credit) .. '"', 1, true)
        if s then
          payload = sub(payload, 1, s - 1) .. '"payout":"' .. money(reported) .. '"'
            .. sub(payload, f + 1)
        end
      end
      local tail = ',"log_id":"' .. log_id .. '","conversion_id":"' .. cid
        .. '","attempt":1,"created":' .. now .. "}"
      for j = p + SEG, p + SEG + recipients[i] - 1 do
        call("XADD", fwd, "*", "job", '{"partner_id":' .. ARGV[j] .. ',"payload":'
          .. payload .. tail)
      end
    end
    local fields, n = log_fields(p, e, cid, current)
    call("XADD", log, "MINID", "~", minid, "*", unpack(fields, 1, n))
    outcomes[i], tally[e.outcome] = e.outcome, (tally[e.outcome] or 0) + 1
  end
end

-- Once per chunk: balances, the index, counters, and the entries' removal.
-- Writes the touched users' values of a ledger (points or held) in one HSET.
local function write_ledger(ledger, values, changed)
  local sums, n = {}, 0
  for _, user in ipairs(users) do
    if changed[user] then
      sums[n + 1], sums[n + 2], n = user, format("%d", values[user]), n + 2
    end
  end
  if n > 0 then
    call("HSET", ledger, unpack(sums, 1, n))
  end
end
if n_acked > 0 then
  write_ledger(points, balances, touched)
  write_ledger(held, held_of, held_touched)
  if n_created > 0 then
    call("ZADD", index, unpack(created, 1, n_created))
  end
  for outcome, count in pairs(tally) do
    call("HINCRBY", stats, "outcome:" .. outcome, format("%d", count))
  end
  call("XDEL", stream, unpack(acked, 1, n_acked))
end
return table.concat(outcomes, " ")
