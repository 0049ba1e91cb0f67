-- replace_hash: make a hash exactly the given fields, atomically (a partition's copy of
-- a source record, storage.repositories). Readers never see it missing or half-written.
--
-- KEYS[1]  the hash (one key: one slot)
-- ARGV     field, value, field, value, ... (none: the hash is deleted)
-- Returns the number of fields written.

redis.call('DEL', KEYS[1])
if #ARGV == 0 then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return #ARGV / 2
