-- ingest: check a source key and its IP allow-list, then append postbacks to the input
-- stream, in one round trip (the edge's hot path; SPEC §3).
--
-- KEYS[1]  source hash   keys.source(key)              {pN}:source:<key>
-- KEYS[2]  input stream  keys.input_stream(partition)  {pN}:in
--          Both carry the hash tag {pN} of the source's partition: one slot.
--
-- ARGV[1]  source key (written as field ``source`` of each entry)
-- ARGV[2]  the allow-list string the edge's cache holds for this source ("" = any IP)
-- ARGV[3]  "1" if the caller IP is inside that cached allow-list, else "0"
-- ARGV[4]  method: GET | POST | BATCH
-- ARGV[5]  caller IP
-- ARGV[6]  the dialect (aliases and status map, JSON; "" = none) the edge's cache holds
--          for this source, with which it read the postbacks below
-- ARGV[7..] one params JSON per postback (zero for an empty batch: a key check only)
--
-- Returns one of
--   {"unknown"}                 no such source, or inactive        -> 404
--   {"stale", allow, dialect}   the cached allow-list or dialect is out of date: nothing
--                               written; the edge refreshes its cache with both, reads
--                               the postbacks again and retries
--   {"forbidden", name}         caller IP not allowed                -> 403
--   {"ok", name, id1, id2, ...} every postback appended, ids in ARGV order (the log_ids)
--
-- All checks happen before the first XADD. Only the first XADD can fail (a key of the
-- wrong type, or OOM: Redis checks memory at a script's first write only), so a batch is
-- written whole or not at all. The stream is never trimmed here: the matcher deletes
-- what it has processed, and nothing accepted may be lost.

local source = redis.call('HMGET', KEYS[1], 'active', 'allow', 'name', 'dialect')
if source[1] ~= '1' then
    return {'unknown'}
end
local allow, dialect = source[2] or '', source[4] or ''
if allow ~= ARGV[2] or dialect ~= ARGV[6] then
    return {'stale', allow, dialect}
end
local name = source[3] or ''
if ARGV[3] ~= '1' then
    return {'forbidden', name}
end

local reply = {'ok', name}
for i = 7, #ARGV do
    reply[#reply + 1] = redis.call(
        'XADD', KEYS[2], '*',
        'source', ARGV[1], 'method', ARGV[4], 'ip', ARGV[5], 'params', ARGV[i])
end
return reply
