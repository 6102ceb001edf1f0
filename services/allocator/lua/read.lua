-- Read a batch of prompt records in one call.
-- KEYS[1] namespace meta hash, KEYS[2] the namespace's last-visit counts (hash 'k:n' -> prompts
-- whose last visit had k successes of n trials; see report.lua), KEYS[3..] the prompt records
-- ('krl:{ns}:r:<id>'), in the batch's order. Every key is declared and shares the namespace's
-- hash tag, so the script runs on Redis Cluster (one slot).
-- ARGV[1] the size in bytes of a whole record (head and RECENT_KEPT visits).
-- Returns {meta fields..., records, last-visit counts as a flat field/value list}: the records
-- back to back, each padded to ARGV[1] bytes with 0xff (an unknown prompt is all 0xff: its
-- head reads as NaN, its visits as n = -1).
local size = tonumber(ARGV[1])
local pad = string.char(255)
local missing = string.rep(pad, size)
local out = {}
-- MGET in chunks, not a GET per record: a call costs more than the padding of a record.
-- CHUNK keeps unpack() within Lua's stack.
local CHUNK = 1000
for a = 3, #KEYS, CHUNK do
  local b = math.min(a + CHUNK - 1, #KEYS)
  local got = redis.call('MGET', unpack(KEYS, a, b))
  for j = 1, #got do
    local raw = got[j]
    local i = a + j - 3
    if raw then
      if #raw >= size then out[i] = string.sub(raw, 1, size)
      else out[i] = raw .. string.rep(pad, size - #raw) end
    else out[i] = missing end
  end
end
local meta = redis.call('HMGET', KEYS[1], 'prompts', 'sum_p', 'sum_p2', 'sum_inv_t', 'tok_w',
                       'tok_sum', 'rate_s', 'rate_w')
local res = {}
for i = 1, 8 do res[i] = meta[i] or '0' end
res[9] = table.concat(out)
res[10] = redis.call('HGETALL', KEYS[2])
return res
