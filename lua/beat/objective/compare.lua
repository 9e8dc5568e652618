--- beat.objective.compare — reading candidates and comparing them, metric by metric.
---
--- A candidate (a number, a table of metrics, a measurement) is read into
--- {name = {value = number, samples = number[]|nil}}; then two read candidates are compared
--- one metric at a time (`metric`): equal, inside a noise floor (min_delta, min_rel_delta),
--- not significant (both sides carry samples and the test says so) — a tie — or better or
--- worse. `verdict` turns those per-metric answers into the objective's verdict by kind.
--- Every function takes the objective (built by beat.objective.new) first.

local check = require "beat.check"
local fmt = require "beat.objective.format"
local stats = require "beat.stats"

local M = {}

local format, abs, huge = string.format, math.abs, math.huge

-- Reading candidates -----------------------------------------------------------------------

local function finite_samples(t)
  if type(t) ~= "table" or #t < 1 then return nil end
  for i = 1, #t do
    local v = t[i]
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge then return nil end
  end
  return t
end

--- Reads one metric value: {value =, samples =}, or nil and the reason it is infeasible.
---@param name string
---@param v any a number, a boolean (1/0) or a measurement
---@return {value: number, samples?: number[]}|nil, string?
function M.value(name, v)
  local tv = type(v)
  if v == nil then return nil, name .. " missing" end
  if tv == "boolean" then return { value = v and 1 or 0 } end
  if tv == "table" and type(v.value) == "number" then
    local val = v.value
    if val ~= val then return nil, name .. " is NaN" end
    if val == huge or val == -huge then return nil, name .. " is infinite" end
    return { value = val, samples = finite_samples(v.values) }
  end
  if tv ~= "number" then return nil, format("%s is not a number (%s)", name, tv) end
  if v ~= v then return nil, name .. " is NaN" end
  if v == huge or v == -huge then return nil, name .. " is infinite" end
  return { value = v }
end

--- Where the named metrics of a candidate live: a table of metrics, or nil and the
--- candidate itself when it is the single value (a number or a measurement). Raises
--- (blaming the caller of the objective's method) when the candidate cannot be read.
---@return table|nil source, any direct
function M.source(obj, c)
  local t = type(c)
  if t == "number" or t == "boolean" then
    if obj.kind ~= "single" then
      check.error("beat.objective", format("candidate is a plain %s, but the objective compares metrics %s; pass a table {%s = ...}",
        t, table.concat(obj.names, ", "), obj.names[1]), 4)
    end
    return nil, c
  end
  if t ~= "table" then
    check.fail("beat.objective", "candidate", "a number, a table of metrics or a measurement", c, 4)
  end
  if obj.kind == "single" then
    local name = obj.metric
    if name then
      if c[name] ~= nil then return c end
      if type(c.metrics) == "table" and c.metrics[name] ~= nil then return c.metrics end
      if type(c.value) == "table" and c.value[name] ~= nil then return c.value end
      if type(c.value) == "number" then return nil, c end
      return c
    end
    if type(c.value) == "number" then return nil, c end
    check.error("beat.objective", "candidate is a table without a numeric `value`; set opts.metric to say which metric to compare", 4)
  end
  if type(c.value) == "table" and type(c.metrics) == "table" then return c.metrics end
  if type(c.value) == "table" and c.metrics == nil then return c.value end
  return c
end

--- Reads every metric the objective needs (compared ones and constraints) and checks the
--- constraints. Returns {name = {value, samples}}, or nil and why the candidate is infeasible.
---@return table<string, {value: number, samples?: number[]}>|nil, string?
function M.read(obj, c)
  local src, direct = M.source(obj, c)
  local vals = {}
  for _, s in ipairs(obj.specs) do
    local v, why
    if direct ~= nil then v, why = M.value(s.name, direct) else v, why = M.value(s.name, src[s.name]) end
    if not v then return nil, why end
    vals[s.name] = v
  end
  for _, k in ipairs(obj.constraints) do
    if not vals[k.metric] then
      local raw = src and src[k.metric]
      if raw == nil and direct ~= nil and obj.kind == "single" and k.metric == obj.specs[1].name then
        raw = direct
      end
      local v, why = M.value(k.metric, raw)
      if not v then return nil, why end
      vals[k.metric] = v
    end
    local v = vals[k.metric].value
    local spec = { unit = k.unit, format = k.format, sentinels = k.sentinels }
    if k.min and v < k.min then
      local a, b = fmt.values(spec, v, k.min)
      return nil, format("%s %s < min %s", k.metric, a, b)
    end
    if k.max and v > k.max then
      local a, b = fmt.values(spec, v, k.max)
      return nil, format("%s %s > max %s", k.metric, a, b)
    end
  end
  return vals
end

--- The weighted score Σ weight·(±value) of read values, and per-run scores when every
--- sampled metric has the same number of runs.
---@return number score, number[]|nil samples
function M.weighted_score(specs, vals)
  local s = 0.0
  for _, sp in ipairs(specs) do
    local sign = sp.direction == "maximize" and 1 or -1
    s = s + sp.weight * sign * vals[sp.name].value
  end
  local n
  for _, sp in ipairs(specs) do
    local smp = vals[sp.name].samples
    if smp then
      if n == nil then n = #smp elseif n ~= #smp then n = false end
    end
  end
  local samples
  if n then
    samples = {}
    for i = 1, n do
      local si = 0.0
      for _, sp in ipairs(specs) do
        local sign = sp.direction == "maximize" and 1 or -1
        local v = vals[sp.name]
        si = si + sp.weight * sign * (v.samples and v.samples[i] or v.value)
      end
      samples[i] = si
    end
  end
  return s, samples
end

--- "size 120.4 KB, tests 12": the compared metrics of read values.
---@return string
function M.describe(obj, vals)
  local parts = {}
  for _, s in ipairs(obj.specs) do
    parts[#parts + 1] = s.name .. " " .. fmt.one(s, vals[s.name].value)
  end
  return table.concat(parts, ", ")
end

-- Comparing ----------------------------------------------------------------------------------

--- Compares a against b ({value, samples}) on one metric. Returns a sign (1: a is better,
--- −1: worse, 0: a tie), a reason fragment, and info {metric, delta, rel_delta, p, test}.
---@param spec table the metric's spec {name, direction, unit, format, min_delta, min_rel_delta, no_pct}
---@param label? string names the metric in the reason (default spec.name)
---@return integer sign, string reason, table info
function M.metric(obj, spec, a, b, label)
  local av, bv = a.value, b.value
  local d = av - bv
  local name = label or spec.name
  local sa, sb = fmt.values(spec, av, bv)
  local pct = not spec.no_pct and fmt.pct(av, bv, spec.sentinels) or nil
  local info = { metric = spec.name, delta = d, rel_delta = bv ~= 0 and d / abs(bv) or nil }
  if d == 0 then
    return 0, format("%s %s = %s", name, sa, sb), info
  end
  local op = d < 0 and "<" or ">"
  local improves = (spec.direction == "minimize") == (d < 0)
  local pct_s = pct and (pct .. ", ") or ""
  local absd = abs(d)
  if spec.min_delta and spec.min_delta > 0 and absd <= spec.min_delta then
    return 0, format("%s %s ≈ %s (%swithin min_delta %s)", name, sa, sb, pct_s,
      fmt.one(spec, spec.min_delta)), info
  end
  -- relative to the larger magnitude, so compare(a, b) and compare(b, a) always agree
  local base = abs(bv) > abs(av) and abs(bv) or abs(av)
  if spec.min_rel_delta and spec.min_rel_delta > 0 and absd <= spec.min_rel_delta * base then
    return 0, format("%s %s ≈ %s (%swithin min_rel_delta %s%%)", name, sa, sb, pct_s,
      (format("%.4g", spec.min_rel_delta * 100))), info
  end
  local notes = { pct }
  if obj.significance and a.samples and b.samples and #a.samples >= 2 and #b.samples >= 2 then
    -- H1: a is better than b (when the aggregates say so) or worse (when they say that)
    local test = obj.test == "welch" and stats.welch or stats.mann_whitney
    local r = test(a.samples, b.samples, { alternative = d < 0 and "less" or "greater" })
    info.p, info.test = r.p, obj.test
    if r.p > obj.significance then
      return 0, format("%s %s ≈ %s (%s%s, not significant at %s)", name, sa, sb, pct_s,
        fmt.p(r.p), tostring(obj.significance)), info
    end
    notes[#notes + 1] = fmt.p(r.p)
  end
  local paren = #notes > 0 and (" (" .. table.concat(notes, ", ") .. ")") or ""
  return improves and 1 or -1, format("%s %s %s %s%s", name, sa, op, sb, paren), info
end

--- How many metrics a is better and worse on than b, with each metric's reason.
---@return integer better, integer worse, string[] reasons
function M.dominance(obj, av, bv)
  local texts = {}
  local better, worse = 0, 0
  for i, s in ipairs(obj.specs) do
    local sg, txt = M.metric(obj, s, av[s.name], bv[s.name])
    texts[i] = txt
    if sg > 0 then better = better + 1 elseif sg < 0 then worse = worse + 1 end
  end
  return better, worse, texts
end

local VERDICT = { [1] = "better", [-1] = "worse", [0] = "tie" }

--- The verdict on two feasible, read candidates, by the objective's kind.
---@return "better"|"worse"|"tie" verdict, string reason, table info
function M.verdict(obj, av, bv)
  local kind = obj.kind
  if kind == "single" then
    local s = obj.specs[1]
    local sg, txt, info = M.metric(obj, s, av[s.name], bv[s.name])
    return VERDICT[sg], txt, info
  elseif kind == "weighted" then
    local sa, samples_a = M.weighted_score(obj.specs, av)
    local sb, samples_b = M.weighted_score(obj.specs, bv)
    local spec = { direction = "maximize", min_delta = obj.min_delta, min_rel_delta = obj.min_rel_delta,
      no_pct = true }
    local sg, txt, info = M.metric(obj, spec, { value = sa, samples = samples_a },
      { value = sb, samples = samples_b }, "weighted score")
    local parts = {}
    for _, s in ipairs(obj.specs) do
      local plain = { name = s.name, direction = s.direction, unit = s.unit, format = s.format }
      local _, t = M.metric(obj, plain, { value = av[s.name].value }, { value = bv[s.name].value })
      parts[#parts + 1] = t
    end
    return VERDICT[sg], txt .. ": " .. table.concat(parts, ", "), info
  elseif kind == "order" then
    local tied = {}
    for _, s in ipairs(obj.specs) do
      local sg, txt, info = M.metric(obj, s, av[s.name], bv[s.name])
      if sg ~= 0 then
        local prefix = #tied > 0 and (table.concat(tied, "; ") .. "; ") or ""
        return VERDICT[sg], prefix .. txt, info
      end
      tied[#tied + 1] = txt
    end
    return "tie", table.concat(tied, "; "), {}
  end
  -- pareto
  local better, worse, texts = M.dominance(obj, av, bv)
  local joined = table.concat(texts, ", ")
  if better > 0 and worse == 0 then return "better", "dominates: " .. joined, {} end
  if worse > 0 and better == 0 then return "worse", "dominated: " .. joined, {} end
  if better == 0 and worse == 0 then return "tie", "equal: " .. joined, {} end
  return "tie", "trade-off: " .. joined, { tradeoff = true }
end

return M
