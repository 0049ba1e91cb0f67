-- lease_release: give a partition lease back, only if the caller holds it.
--
-- KEYS[1]  keys.lease(n, group)   {pN}:lease:<group>   (one key: one slot)
-- ARGV[1]  the holder's consumer name
-- Returns 1 when released, 0 when the caller did not hold it.

if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
