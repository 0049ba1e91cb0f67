-- lease_renew: extend a partition lease if the caller still holds it (SPEC §9).
--
-- KEYS[1]  keys.lease(n, group)   {pN}:lease:<group>   (one key: one slot)
-- ARGV[1]  the holder's consumer name
-- ARGV[2]  the lease's new time to live, ms
-- Returns 1 when renewed, 0 when the lease expired or another process holds it now.

if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
