-- Record the outcomes of one allocation atomically and idempotently.
-- KEYS[1] allocation hash, KEYS[2] set of prompt ids already reported for it,
-- KEYS[3] namespace meta hash, KEYS[4] last-visit counts (hash 'k:n' -> prompts whose latest
-- visit had k successes of n trials: the data the grid prior is fitted to, grid.py),
-- KEYS[4 + i] the record of the i-th outcome's prompt ('krl:{ns}:r:<id>').
-- ARGV[1] half-life in steps (<= 0: no decay), ARGV[2] TTL of the reported set (s),
-- ARGV[3] recent visits kept per prompt (history.RECENT_KEPT), ARGV[4] TTL (s) of the
-- allocation once every prompt with n > 0 is reported, ARGV[5] outcomes as a JSON array of
-- [id, successes, trials, tokens].
-- A prompt's key holds its record: history.RECORD_FIELDS as 11 little-endian doubles, then
-- up to `keep` recent visits (step, n, successes, the namespace's success-rate logit in
-- thousandths) as little-endian int32s, oldest first.
-- Every key is declared and shares the namespace's hash tag (one cluster slot). Phase 1 validates everything
-- and writes nothing; phase 2 applies. Redis runs a script without interleaving, so a rejected
-- report changes nothing and a retried one counts once. The decay rule is
-- history.decay_factor's.
redis.replicate_commands()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
local alloc = redis.call('HMGET', KEYS[1], '_step', '_n')
local step = tonumber(alloc[1])
local allotted = cjson.decode(alloc[2])
local half_life, keep = tonumber(ARGV[1]), tonumber(ARGV[3])
local outcomes = cjson.decode(ARGV[5])
if #KEYS ~= 4 + #outcomes then return redis.error_reply('report.lua: one record key per outcome') end
local FMT, HEAD, VISIT = '<ddddddddddd', 88, 16

for _, o in ipairs(outcomes) do
  local n = allotted[o[1]]
  if not n then return {'NOT_IN_ALLOCATION', o[1]} end
  if o[3] > n then return {'TRIALS_OVER_N', o[1], tostring(n)} end
end

local function weight(age)
  if half_life <= 0 or age <= 0 then return 1.0 end
  return math.pow(2, -age / half_life)
end

-- namespace aggregates, applied once at the end
local d = {prompts = 0, sum_p = 0, sum_p2 = 0, sum_inv_t = 0, tok_w = 0, tok_sum = 0,
           solved = 0, unsolved = 0}
local bins = {}
for b = 0, 9 do bins[b] = 0 end
local function bin(p) return math.min(math.floor(p * 10), 9) end

local lv = {}
local function lv_add(k, n, by)
  local f = string.format('%d:%d', k, n)
  lv[f] = (lv[f] or 0) + by
end

-- Redis calls go in batches (SMISMEMBER, SADD, MGET, MSET) rather than one per prompt:
-- a call costs more than the arithmetic of a prompt. CHUNK keeps unpack() within Lua's stack.
local CHUNK = 1000
local function chunked(list, fn)
  for a = 1, #list, CHUNK do fn(a, math.min(a + CHUNK - 1, #list)) end
end

local accepted, dups, acc = 0, {}, {}
-- a group with no scored rollout is no evidence: it is neither recorded nor marked reported,
-- so the real outcome sent later still counts
local scored, ids = {}, {}
for i, o in ipairs(outcomes) do
  o.key = KEYS[4 + i]
  if o[3] > 0 then
    scored[#scored + 1] = o
    ids[#ids + 1] = o[1]
  end
end
local seen = {}
chunked(ids, function(a, b)
  local m = redis.call('SMISMEMBER', KEYS[2], unpack(ids, a, b))
  for j = 1, #m do seen[a + j - 1] = m[j] end
end)
local fresh = {}
for i, o in ipairs(scored) do
  if seen[i] == 1 then dups[#dups + 1] = o[1]
  else
    acc[#acc + 1] = o
    fresh[#fresh + 1] = o[1]
  end
end
chunked(fresh, function(a, b) redis.call('SADD', KEYS[2], unpack(fresh, a, b)) end)
local rkeys, raws = {}, {}
for i, o in ipairs(acc) do rkeys[i] = o.key end
chunked(rkeys, function(a, b)
  local got = redis.call('MGET', unpack(rkeys, a, b))
  for j = 1, #got do raws[a + j - 1] = got[j] end
end)

-- The namespace's success rate: a mean of per-prompt rates k/n that forgets with each prompt
-- reported (weight RATE_KEEP per prompt, a memory of about 1 / (1 - RATE_KEEP) prompts).
-- Each visit stores its logit, in thousandths, so a later read can tell how far the policy
-- has moved since (history.visit_loglik).
local RATE_KEEP = 1 - 1 / 512
local rate = redis.call('HMGET', KEYS[3], 'rate_s', 'rate_w')
local rate_s, rate_w = tonumber(rate[1]) or 0, tonumber(rate[2]) or 0
for _, o in ipairs(acc) do
  rate_s = rate_s * RATE_KEEP + o[2] / o[3]
  rate_w = rate_w * RATE_KEEP + 1
end
local milli_logit = 0
if rate_w > 0 then
  local r = math.min(math.max(rate_s / rate_w, 1e-3), 1 - 1e-3)
  milli_logit = math.floor(1000 * math.log(r / (1 - r)) + 0.5)
  redis.call('HSET', KEYS[3], 'rate_s', string.format('%.17g', rate_s),
             'rate_w', string.format('%.17g', rate_w))
end

local writes = {}
for idx, o in ipairs(acc) do
  local succ, trials, tokens = o[2], o[3], o[4]
  do
    accepted = accepted + 1
    local raw = raws[idx]
    local v, recent
    if raw then
      v = {struct.unpack(FMT, raw)}
      recent = string.sub(raw, HEAD + 1)
      local t_old = v[1] + v[2]
      if t_old > 0 then
        local p_old = v[1] / t_old
        d.sum_p, d.sum_p2 = d.sum_p - p_old, d.sum_p2 - p_old * p_old
        d.sum_inv_t = d.sum_inv_t - 1 / t_old
        bins[bin(p_old)] = bins[bin(p_old)] - 1
      end
      if v[8] > 0 then lv_add(v[7], v[8], -1) end
      if v[11] == 1 then d.solved = d.solved - 1 end
      if v[11] == -1 then d.unsolved = d.unsolved - 1 end
    else
      d.prompts = d.prompts + 1
      v = {0, 0, step, 0, 0, 0, 0, 0, 0, 0, 0}
      recent = ''
    end
    local last = v[3]
    local w_old, w_new = 1.0, 1.0
    if step >= last then w_old = weight(step - last) else w_new = weight(last - step) end
    v[1] = v[1] * w_old + succ * w_new
    v[2] = v[2] * w_old + (trials - succ) * w_new
    v[3] = math.max(step, last)
    v[4], v[5], v[6] = v[4] + 1, v[5] + trials, v[6] + succ
    v[7], v[8] = succ, trials
    lv_add(succ, trials, 1)
    v[9] = v[9] * w_old + trials * w_new
    v[10] = v[10] * w_old + tokens * w_new
    local p_new = v[1] / (v[1] + v[2])
    d.sum_p, d.sum_p2 = d.sum_p + p_new, d.sum_p2 + p_new * p_new
    d.sum_inv_t = d.sum_inv_t + 1 / (v[1] + v[2])
    bins[bin(p_new)] = bins[bin(p_new)] + 1
    d.tok_w, d.tok_sum = d.tok_w + trials, d.tok_sum + tokens
    v[11] = 0
    if succ == trials then v[11] = 1; d.solved = d.solved + 1
    elseif succ == 0 then v[11] = -1; d.unsolved = d.unsolved + 1 end
    if #recent >= keep * VISIT then recent = string.sub(recent, #recent - (keep - 1) * VISIT + 1) end
    writes[#writes + 1] = o.key
    writes[#writes + 1] = struct.pack(FMT, unpack(v, 1, 11)) .. recent .. struct.pack('<iiii', step, trials, succ, milli_logit)
  end
end
for a = 1, #writes, 2 * CHUNK do
  redis.call('MSET', unpack(writes, a, math.min(a + 2 * CHUNK - 1, #writes)))
end
local function fmt(x) return string.format('%.17g', x) end
for _, name in ipairs({'sum_p', 'sum_p2', 'sum_inv_t', 'tok_w', 'tok_sum'}) do
  if d[name] ~= 0 then redis.call('HINCRBYFLOAT', KEYS[3], name, fmt(d[name])) end
end
for _, name in ipairs({'prompts', 'solved', 'unsolved'}) do
  if d[name] ~= 0 then redis.call('HINCRBY', KEYS[3], name, d[name]) end
end
for b = 0, 9 do
  if bins[b] ~= 0 then redis.call('HINCRBY', KEYS[3], 'h' .. b, bins[b]) end
end
for f, by in pairs(lv) do
  if by ~= 0 and redis.call('HINCRBY', KEYS[4], f, by) <= 0 then redis.call('HDEL', KEYS[4], f) end
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
-- Fully reported: keep it only as long as retries may come (the memory policy).
local open = 0
for _, n in pairs(allotted) do if n > 0 then open = open + 1 end end
if accepted > 0 and redis.call('SCARD', KEYS[2]) >= open then
  local short = tonumber(ARGV[4])
  if redis.call('TTL', KEYS[1]) > short then
    redis.call('EXPIRE', KEYS[1], short)
    redis.call('EXPIRE', KEYS[2], short)
  end
end
if accepted > 0 then redis.call('HINCRBY', KEYS[3], 'reports', 1) end
local out = {'OK', accepted}
for _, pid in ipairs(dups) do out[#out + 1] = pid end
return out
