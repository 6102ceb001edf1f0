-- Read a batch of prompt records in one call.
-- KEYS[1] namespace meta hash. ARGV[1] key prefix of prompt records ('krl:{ns}:p:'),
-- ARGV[2] the prompt ids as a JSON array, ARGV[3] the size in bytes of a record's head. Every key shares the namespace's hash tag, so the
-- script stays within one cluster slot.
-- Returns {meta fields..., heads}: the heads of the prompts' records (see report.lua) back to
-- back, all bytes 0xff (NaN) for an unknown prompt.
local ids = cjson.decode(ARGV[2])
local size = tonumber(ARGV[3])
local missing = string.rep(string.char(255), size)
local out = {}
for i, pid in ipairs(ids) do
  local raw = redis.call('GET', ARGV[1] .. pid)
  if raw then out[i] = string.sub(raw, 1, size) else out[i] = missing end
end
local meta = redis.call('HMGET', KEYS[1], 'prompts', 'sum_p', 'sum_p2', 'sum_inv_t', 'tok_w', 'tok_sum')
local res = {}
for i = 1, 6 do res[i] = meta[i] or '0' end
res[7] = table.concat(out)
return res
