-- throttle: count one refused guess (unknown postback key, wrong admin token) for a
-- caller address, in a window that starts with the first guess (SPEC §3, the 429 row).
--
-- KEYS[1]  counter  keys.throttle(kind, ip)  <ns>:throttle:<kind>:<ip>  (one key: one slot)
--
-- ARGV[1]  window length in ms (the counter's expiry, set when it is created)
--
-- Returns {count, ms_left}: guesses in this window so far (this one included) and the
-- milliseconds until the window ends. A counter found without an expiry (it cannot be
-- made so by this script, but a hand-made key could) gets one, so no address is locked
-- out for good.
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
