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
--   this, ms, may be trimmed) and now (ms, the forward jobs' "created"). A segment is
--   SEG fixed arguments, the fields of processors/matcher/segment.py's Segment read
--   here at the offsets F_<FIELD> below (one per field, in its order; a test holds the
--   two to each other, so name a field, never an offset), then the entry's
--   F_RECIPIENTS recipients: partner_id JSON strings, one forward job each wrapping
--   F_PAYLOAD. The effect fields F_EFFECT_NEW .. F_EFFECT_REJECTED hold the effect for
--   the conversion's current status "", pending, approved, rejected (a plain entry, one
--   with F_CONVERSION_ID "", has only F_EFFECT_NEW), each
--   "<flags>outcome|history step|reason", <flags> one character: 64 + the sum of its
--   FLAG_<ACTION> bits below (core.transitions.FLAG_BITS). F_HOLD_MS "0" means no hold
--   (a credit goes to the points), else a credit goes to the held hash until F_TIME +
--   hold, when hold_due.lua credits it; a debit during the hold releases it. When the
--   conversion reports another payout (an update without payout, a reversal) the
--   payload's first "payout":"<F_PARTNER_CENTS as 0.00>" is rewritten.
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
-- A segment's fields (processors/matcher/segment.py Segment), by offset from its start.
local F_LOG_ID = 0
local F_TIME = 1
local F_STATUS = 2
local F_USER_ID = 3
local F_CONVERSION_ID = 4
local F_CURRENCY = 5
local F_PARTNER_CENTS = 6
local F_UPSTREAM_CENTS = 7
local F_HISTORY_STEP = 8
local F_EFFECT_NEW = 9
local F_EFFECT_PENDING = 10
local F_EFFECT_APPROVED = 11
local F_EFFECT_REJECTED = 12
local F_PAYLOAD = 13
local F_RECIPIENTS = 14
local F_SOURCE = 15
local F_CLICK_ID = 16
local F_OFFER_ID = 17
local F_PARTNER_ID = 18
local F_MATCHED_BY = 19
local F_WARNING = 20
local F_METHOD = 21
local F_IP = 22
local F_PARAMS = 23
local F_TRANSACTION_ID = 24
local F_GOAL = 25
local F_SURVEY_ID = 26
local F_CUSTOM = 27
local F_HOLD_MS = 28
local SEG = 29
-- An effect spec's action bits (core.transitions.FLAG_BITS).
local FLAG_CREATE = 1
local FLAG_SET_STATUS = 2
local FLAG_KEEP_HISTORY = 4
local FLAG_CREDIT = 8
local FLAG_DEBIT = 16
local FLAG_FORWARD = 32
local FLAG_ALL = FLAG_CREATE + FLAG_SET_STATUS + FLAG_KEEP_HISTORY + FLAG_CREDIT + FLAG_DEBIT
  + FLAG_FORWARD
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
  local r = tonumber(ARGV[pos + F_RECIPIENTS])
  if not r or r < 0 or r % 1 ~= 0 then
    return fail("argument count does not match the plan")
  end
  start[i], recipients[i] = pos, r
  if ARGV[pos + F_CONVERSION_ID] ~= "" then
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
    if flags >= 0 and flags <= FLAG_ALL and b then
      local function on(bit)
        return floor(flags / bit) % 2 == 1
      end
      e = { outcome = sub(spec, 2, a - 1), step = sub(spec, a + 1, b - 1),
        reason = sub(spec, b + 1), create = on(FLAG_CREATE), set_status = on(FLAG_SET_STATUS),
        keep_history = on(FLAG_KEEP_HISTORY), credit = on(FLAG_CREDIT),
        debit = on(FLAG_DEBIT), forward = on(FLAG_FORWARD) }
      -- A plain entry (no conversion) may only be forwarded.
      e.plain = not (e.create or e.set_status or e.keep_history or e.credit or e.debit)
    end
    parsed[spec] = e
  end
  return e
end
-- The effect field for each current status of the conversion.
local EFFECTS = { F_EFFECT_NEW, F_EFFECT_PENDING, F_EFFECT_APPROVED, F_EFFECT_REJECTED }
local SLOT = { [""] = F_EFFECT_NEW, pending = F_EFFECT_PENDING, approved = F_EFFECT_APPROVED,
  rejected = F_EFFECT_REJECTED }

-- Validation, no writes. Each conversion is read once; its status is then followed
-- (st.sim) through the chunk as if every entry applies. An entry found processed
-- already changes what later entries of its conversion meet, so a conversion used
-- twice has all its effects checked.
local state, balances, users, credits, holds, held_of = {}, {}, {}, {}, {}, {}
local function check(e, p)
  local status = ARGV[p + F_STATUS]
  if not e then
    return "malformed effect"
  elseif (e.create or e.set_status) and (status == "" or not SLOT[status]) then
    return "a conversion cannot take status '" .. status .. "'"
  elseif e.credit or e.debit then
    local user = ARGV[p + F_USER_ID]
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
  credits[i], holds[i] = tonumber(ARGV[p + F_PARTNER_CENTS]), tonumber(ARGV[p + F_HOLD_MS])
  if not (credits[i] and tonumber(ARGV[p + F_TIME]) and holds[i]) then
    return fail("malformed number in the plan")
  elseif ARGV[p + F_UPSTREAM_CENTS] ~= "" and not tonumber(ARGV[p + F_UPSTREAM_CENTS]) then
    return fail("malformed upstream payout")
  end
  if ARGV[p + F_CONVERSION_ID] == "" then
    local e = effect(ARGV[p + F_EFFECT_NEW])
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
    if uses[key] > 1 then
      for _, slot in ipairs(EFFECTS) do
        problem = problem or check(effect(ARGV[p + slot]), p)
      end
    end
    if problem then
      return fail(problem)
    elseif e.create or e.set_status then
      st.sim = ARGV[p + F_STATUS]
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
-- Segment fields copied under their own names, in groups: field, name, field, name...
local SOURCE = { F_SOURCE, "source" }
local IDS = { F_CLICK_ID, "click_id", F_OFFER_ID, "offer_id", F_PARTNER_ID, "partner_id" }
local ORIGIN = { F_SOURCE, "source", F_CLICK_ID, "click_id", F_OFFER_ID, "offer_id",
  F_PARTNER_ID, "partner_id", F_MATCHED_BY, "matched_by" }
local WARNING = { F_WARNING, "warning" }
local REQUEST = { F_METHOD, "method", F_IP, "ip", F_PARAMS, "params" }
local EXTRAS = { F_TRANSACTION_ID, "transaction_id", F_GOAL, "goal", F_SURVEY_ID, "survey_id",
  F_CUSTOM, "custom" }
-- Puts (name, value) of the segment's fields in group after fields[n], only those not
-- empty when skip_empty; returns the new length.
local function put(fields, n, p, group, skip_empty)
  for j = 1, #group, 2 do
    local value = ARGV[p + group[j]]
    if not skip_empty or value ~= "" then
      fields[n + 1], fields[n + 2], n = group[j + 1], value, n + 2
    end
  end
  return n
end
-- The received-log fields of an entry, in the order they always had.
local function log_fields(p, e, cid, current)
  local reason, f, n = e.reason, nil, nil
  if cid ~= "" and (current ~= "" or e.create) then
    if reason == "" and ARGV[p + F_WARNING] == "" then -- the common case
      return { "log_id", ARGV[p + F_LOG_ID], "time", ARGV[p + F_TIME],
        "status", ARGV[p + F_STATUS], "conversion_id", cid, "user_id", ARGV[p + F_USER_ID],
        "outcome", e.outcome, "source", ARGV[p + F_SOURCE], "click_id", ARGV[p + F_CLICK_ID],
        "offer_id", ARGV[p + F_OFFER_ID], "partner_id", ARGV[p + F_PARTNER_ID],
        "matched_by", ARGV[p + F_MATCHED_BY], "method", ARGV[p + F_METHOD],
        "ip", ARGV[p + F_IP], "params", ARGV[p + F_PARAMS] }, 28
    end
    f, n = { "log_id", ARGV[p + F_LOG_ID], "time", ARGV[p + F_TIME],
      "status", ARGV[p + F_STATUS], "conversion_id", cid, "user_id", ARGV[p + F_USER_ID],
      "outcome", e.outcome }, 12
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
      "log_id", ARGV[p + F_LOG_ID], "time", ARGV[p + F_TIME], "status", ARGV[p + F_STATUS],
      n + 6
    if cid == "" then
      n = put(f, put(f, put(f, n, p, SOURCE), p, REQUEST), p, IDS, true)
      if ARGV[p + F_USER_ID] ~= "" then
        f[n + 1], f[n + 2], n = "user_id", ARGV[p + F_USER_ID], n + 2
      end
      return f, n
    end
    f[n + 1], f[n + 2], n = "user_id", ARGV[p + F_USER_ID], n + 2
  end
  return f, put(f, put(f, put(f, n, p, ORIGIN), p, WARNING, true), p, REQUEST)
end
local function money(cents)
  return format("%d.%02d", floor(cents / 100), cents % 100)
end

local outcomes, acked, created, tally, touched, held_touched = {}, {}, {}, {}, {}, {}
local n_acked, n_created = 0, 0
for i = 1, k do
  local p, key = start[i], KEYS[i + 1]
  local log_id, at, status, user, cid = ARGV[p + F_LOG_ID], ARGV[p + F_TIME],
    ARGV[p + F_STATUS], ARGV[p + F_USER_ID], ARGV[p + F_CONVERSION_ID]
  if call("XACK", stream, group, log_id) == 0 then
    outcomes[i] = "already-processed"
  else
    n_acked, acked[n_acked + 1] = n_acked + 1, log_id
    local credit, upstream, payload = credits[i], ARGV[p + F_UPSTREAM_CENTS],
      ARGV[p + F_PAYLOAD]
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
        st.history = "[" .. ARGV[p + F_HISTORY_STEP] .. ',"effect":"' .. e.step .. '"}]'
        -- Room for the optional fields after the 32 always written.
        local partner_cents = ARGV[p + F_PARTNER_CENTS]
        local f = { "status", status, "credited_cents", (change == 0) and "0" or partner_cents,
          "created", at, "updated", at, "history", st.history, "conversion_id", cid,
          "user_id", user, "currency", ARGV[p + F_CURRENCY], "log_id", log_id,
          "payout_cents", (upstream == "") and "0" or upstream,
          "partner_payout_cents", partner_cents, "source", ARGV[p + F_SOURCE],
          "click_id", ARGV[p + F_CLICK_ID], "offer_id", ARGV[p + F_OFFER_ID],
          "partner_id", ARGV[p + F_PARTNER_ID], "matched_by", ARGV[p + F_MATCHED_BY],
          false, false, false, false, false, false, false, false, false, false }
        local n = put(f, put(f, 32, p, EXTRAS, true), p, WARNING, true)
        if to_hold > 0 then
          st.held = to_hold
          f[n + 1], f[n + 2], f[n + 3], f[n + 4], n =
            "held_cents", partner_cents, "hold_until", hold_until, n + 4
        end
        call("HSET", key, unpack(f, 1, n))
        created[n_created + 1], created[n_created + 2], n_created = at, cid, n_created + 2
      elseif e.set_status or e.keep_history then
        -- A held credit and a released hold say so in the history.
        local step = (to_hold > 0 and "held") or (to_hold < 0 and "released") or e.step
        local entry = ARGV[p + F_HISTORY_STEP] .. ',"effect":"' .. step .. '"}'
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
            "partner_payout_cents", ARGV[p + F_PARTNER_CENTS],
            "currency", ARGV[p + F_CURRENCY])
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
-- A stream id as two numbers (ms, seq); nil when seq is past a double's exact integers.
local function id_parts(id)
  local dash = find(id, "-", 1, true)
  local ms, seq = tonumber(sub(id, 1, dash - 1)), tonumber(sub(id, dash + 1))
  if seq < 2 ^ 53 then
    return ms, seq
  end
end
-- The acked entries leave the input stream. Every entry older than the oldest one still
-- pending has been acked (the group starts at 0 and delivers in id order), and every
-- entry acked is deleted in the same step as its ack, but for this chunk's. So when the
-- last entry acked here is older than any still pending, the stream holds nothing else
-- up to it, and one exact XTRIM MINID removes the chunk's entries (a chunk comes in id
-- order; were it not, an entry of it newer than the last would stay, acked, until a
-- later trim passes it: nothing unacked is ever trimmed). Otherwise (an older entry
-- pending for another consumer, a poison entry waiting) each id goes with XDEL.
local function remove_acked()
  local last_ms, last_seq = id_parts(acked[n_acked])
  local oldest = last_ms and call("XPENDING", stream, group)[2]
  if oldest then
    local ms, seq = id_parts(oldest)
    if not (ms and (ms > last_ms or (ms == last_ms and seq > last_seq))) then
      last_ms = nil
    end
  end
  if last_ms then
    call("XTRIM", stream, "MINID", format("%d-%d", last_ms, last_seq + 1))
  else
    call("XDEL", stream, unpack(acked, 1, n_acked))
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
  remove_acked()
end
return table.concat(outcomes, " ")
