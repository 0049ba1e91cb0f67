-- deadletter_replay.lua: put one dead letter back to work and remove it, atomically.
--
-- KEYS (same {pN} hash tag, one slot):
--   1 dead-letter stream
--   2 where it goes: the forward stream (kind=delivery) or the input stream (kind=postback)
-- ARGV:
--   1 the dead letter's entry id
--   2.. the fields of the entry to add to KEYS[2]: name, value, ...
-- Returns the new entry's id, or false when the dead letter is already gone (replayed by
-- someone else): then nothing is written.

local unpack = unpack or table.unpack -- Lua 5.1 in Redis; 5.4 in fakeredis (dev only)
local dead, target, entry_id = KEYS[1], KEYS[2], ARGV[1]
if #ARGV < 3 or (#ARGV - 1) % 2 ~= 0 then
  return redis.error_reply("deadletter_replay: fields must come in name, value pairs")
end
if #redis.call("XRANGE", dead, entry_id, entry_id) == 0 then
  return false
end

local fields = {}
for i = 2, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local new_id = redis.call("XADD", target, "*", unpack(fields))
redis.call("XDEL", dead, entry_id)
return new_id
