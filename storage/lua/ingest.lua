-- ingest: check a source key and its IP allow-list, then append postbacks to the input
-- stream, in one round trip (the edge's hot path; SPEC §3).
--
-- KEYS[1]  source copy   keys.source_copy(n, key)      {pN}:source:<key>
-- KEYS[2]  input stream  keys.input_stream(n)          {pN}:in
--          Both carry the hash tag {pN} of the postbacks' partition: one slot. (Every
--          partition holds its own copy of each source record, storage.keys.)
--
-- ARGV[1]  source key (written as field ``source`` of each entry)
-- ARGV[2]  the allow-list string the edge's cache holds for this source ("" = any IP)
-- ARGV[3]  "1" if the caller IP is inside that cached allow-list, else "0"
-- ARGV[4]  method: GET | POST | BATCH
-- ARGV[5]  caller IP
-- ARGV[6]  the dialect (aliases and status map, JSON; "" = none) the edge's cache holds
--          for this source, with which it read the postbacks below
-- ARGV[7]  "<n> <P>": this partition's number and the partition count
-- ARGV[8..] one params JSON per postback (zero for an empty batch: a key check only)
--
-- Entry IDs are the log_ids answered to callers, so they must not repeat across
-- partitions: each is <ms>-<seq> with seq % P == n (the next such ID after the stream's
-- last generated one, ms from TIME), never one another partition could make.
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
if #ARGV < 8 then
    return reply
end
local part, parts = string.match(ARGV[7], '^(%d+) (%d+)$')
part, parts = tonumber(part), tonumber(parts)
if not part or parts < 1 or part >= parts then
    return redis.error_reply('ingest: malformed partition argument')
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = -1
if redis.call('EXISTS', KEYS[2]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[2])
    for j = 1, #info, 2 do
        if info[j] == 'last-generated-id' then
            local last_ms, last_seq = string.match(info[j + 1], '^(%d+)-(%d+)$')
            last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
            if last_ms and ms <= last_ms then
                ms, seq = last_ms, last_seq
            end
        end
    end
end
for i = 8, #ARGV do
    -- the next seq after the last one with seq % parts == part
    seq = seq + 1 + ((part - (seq + 1)) % parts)
    reply[#reply + 1] = redis.call(
        'XADD', KEYS[2], string.format('%d-%d', ms, seq),
        'source', ARGV[1], 'method', ARGV[4], 'ip', ARGV[5], 'params', ARGV[i])
end
return reply
