--- beat.objective — decide whether a candidate is better than the best so far.
---
--- `beat.objective{...}` (this module's `new`) builds an objective of one of four kinds:
---   single    direction = "minimize"|"maximize" (optionally metric = "size")
---   weighted  weights = {size = 1, time = 0.5}: Σ weight·value, each metric's direction
---             deciding its sign (maximize +, minimize −); higher weighted score wins
---   order     order = {"tests", {"size", tolerance = 1}}: lexicographic, each level
---             with an optional tolerance; a level decides only when it differs by more
---   pareto    pareto = true: a candidate is better only if it dominates; keep a front
--- plus constraints = {{metric =, min =, max =}} that make a candidate infeasible whatever
--- its score, noise thresholds (min_delta, min_rel_delta) and a significance test when
--- both sides carry repeated samples.
---
--- A *candidate* is one of:
---   * a number (single-metric objectives);
---   * a table of metrics {size = 120.4, tests = 12}; each value a number, a boolean
---     (true = 1, false = 0) or a measurement;
---   * a measurement from beat.measure {value = ..., values = {...}, ...}: `value` is
---     compared and `values` are the samples for the significance test; a measurement of
---     a table-valued score ({value = {...}, metrics = {name = measurement}}) is read
---     through its `metrics`.
---
--- `objective:compare(candidate, best)` → "better" | "worse" | "tie" | "infeasible",
--- reason, info. Only "better" should replace the best: a difference inside the noise is a
--- "tie", and ties never replace the best.
---
--- Significance: Mann–Whitney U by default (see docs/api/objective.md for why), one-sided
--- in the direction of the observed difference, at level opts.significance (0.05).

local stats = require "beat.stats"

local M = {}

local format, abs, huge = string.format, math.abs, math.huge

local MINUS = "\226\136\146" -- U+2212

local DIRECTIONS = { minimize = true, maximize = true }
local TESTS = { ["mann-whitney"] = true, welch = true }

local Objective = {}
Objective.__index = Objective

---@class beat.Front
---@field objective beat.Objective
local Front = {}
Front.__index = Front

-- Formatting ---------------------------------------------------------------------------

local function is_integral(v)
  return math.type(v) == "integer" or (v == math.floor(v) and abs(v) < 2 ^ 53)
end

--- Formats two numbers with the same number of decimals, about four significant digits,
--- and enough decimals that different numbers never print the same.
---@param a number
---@param b? number
---@return string, string?
local function fmt_pair(a, b)
  local m = abs(a)
  if b and abs(b) > m then m = abs(b) end
  local function fix(v, d)
    local s = format("%." .. d .. "f", v)
    if s:match("^%-0%.?0*$") then s = s:sub(2) end
    return (s:gsub("^%-", MINUS))
  end
  if m ~= 0 and (m >= 1e15 or m < 1e-4) then
    local p = 4
    local function g(v) return (format("%." .. p .. "g", v):gsub("^%-", MINUS)) end
    while b and a ~= b and g(a) == g(b) and p < 17 do p = p + 1 end
    return g(a), b and g(b)
  end
  local d
  if is_integral(a) and (b == nil or is_integral(b)) then
    d = 0
  elseif m == 0 then
    d = 1
  else
    d = 3 - math.floor(math.log(m, 10))
    if d < 0 then d = 0 end
  end
  while b and a ~= b and fix(a, d) == fix(b, d) and d < 17 do d = d + 1 end
  -- drop trailing zeros both numbers share: 0.9100/0.8500 → 0.91/0.85, 131.0/120.4 stays
  while d > 0 and fix(a, d):sub(-1) == "0" and (b == nil or fix(b, d):sub(-1) == "0") do
    d = d - 1
  end
  return fix(a, d), b and fix(b, d)
end

local function with_unit(s, spec)
  local unit = spec and spec.unit
  if not unit or unit == "" then return s end
  if unit:sub(1, 1) == "%" then return s .. unit end
  return s .. " " .. unit
end

local function fmt_values(spec, a, b)
  if spec and spec.format then
    return tostring(spec.format(a)), b ~= nil and tostring(spec.format(b)) or nil
  end
  local sa, sb = fmt_pair(a, b)
  return with_unit(sa, spec), sb and with_unit(sb, spec)
end

local function fmt_one(spec, v)
  return (fmt_values(spec, v))
end

--- "−8.1%", "+0.012%", or nil when the base is 0.
local function fmt_pct(a, b)
  if b == 0 then return nil end
  local r = (a - b) / abs(b) * 100
  if r == 0 then return "0%" end
  local s
  if abs(r) >= 0.1 then s = format("%.1f", abs(r)) else s = format("%.2g", abs(r)) end
  return (r < 0 and MINUS or "+") .. s .. "%"
end

local function fmt_p(p)
  if p < 0.001 then return format("p=%.1e", p) end
  return format("p=%.3f", p):gsub("0+$", ""):gsub("%.$", "")
end

-- Validation ------------------------------------------------------------------------------

local function fail(fmt, ...)
  error("beat.objective: " .. format(fmt, ...), 3)
end

local function show(v)
  if type(v) == "string" then return format("%q", v) end
  return tostring(v)
end

local function check_nonneg(where, v)
  if v == nil then return 0 end
  if type(v) ~= "number" or v ~= v or v < 0 or v == huge then
    fail("%s must be a non-negative number, got %s", where, show(v))
  end
  return v
end

local function check_rel(where, v)
  if v == nil then return 0 end
  if type(v) ~= "number" or v ~= v or v < 0 or v >= 1 then
    fail("%s must be a fraction in [0, 1) (0.01 = 1%%), got %s", where, show(v))
  end
  return v
end

local function check_direction(where, v)
  if not DIRECTIONS[v] then
    fail('%s must be "minimize" or "maximize", got %s', where, show(v))
  end
  return v
end

local function check_finite(where, v)
  if type(v) ~= "number" or v ~= v or v == huge or v == -huge then
    fail("%s must be a finite number, got %s", where, show(v))
  end
  return v
end

local KNOWN = {
  direction = true, metric = true, unit = true, format = true, metrics = true,
  weights = true, order = true, pareto = true, constraints = true, min_delta = true,
  min_rel_delta = true, significance = true, test = true, target = true,
}
local METRIC_KNOWN = { direction = true, unit = true, format = true, min_delta = true,
  min_rel_delta = true }

---@class beat.MetricSpec
---@field direction? "minimize"|"maximize"
---@field unit? string   printed after values in reasons ("KB", "ms", "%")
---@field format? fun(v: number): string  custom formatting for reasons
---@field min_delta? number      absolute change below which two values tie
---@field min_rel_delta? number  relative change (0.01 = 1%) below which two values tie

---@class beat.Constraint
---@field metric string
---@field min? number
---@field max? number
---@field unit? string

---@class beat.ObjectiveOptions
---@field direction? "minimize"|"maximize" the single metric's direction, or the default for metrics
---@field metric? string name of the single metric, to read it from a table of metrics
---@field unit? string the single metric's unit
---@field format? fun(v: number): string the single metric's formatting
---@field metrics? table<string, "minimize"|"maximize"|beat.MetricSpec>
---@field weights? table<string, number> weighted sum of these metrics (positive weights)
---@field order? (string|table)[] lexicographic order: names or {name, direction=, tolerance=, rel_tolerance=}
---@field pareto? boolean compare by Pareto dominance over `metrics`
---@field constraints? beat.Constraint[]
---@field min_delta? number absolute noise floor (single metric, weighted score, or default per metric)
---@field min_rel_delta? number relative noise floor, a fraction (0.01 = 1%)
---@field significance? number|false level of the test when both sides have samples (default 0.05)
---@field test? "mann-whitney"|"welch" which test (default "mann-whitney")
---@field target? number|table<string, number> stop-at-target threshold(s)

---@class beat.Objective
---@field kind "single"|"weighted"|"order"|"pareto"
---@field names string[] the metrics compared, in order

--- Builds an objective. Raises on a malformed options table, naming the option.
---@param opts beat.ObjectiveOptions
---@return beat.Objective
function M.new(opts)
  if type(opts) ~= "table" then fail("expected an options table, got %s", type(opts)) end
  for k in pairs(opts) do
    if not KNOWN[k] then fail("unknown option %s", tostring(k)) end
  end
  local self = setmetatable({}, Objective)

  local kinds = {}
  if opts.weights ~= nil then kinds[#kinds + 1] = "weights" end
  if opts.order ~= nil then kinds[#kinds + 1] = "order" end
  if opts.pareto ~= nil and opts.pareto ~= false then
    if opts.pareto ~= true then fail("opts.pareto must be true or false, got %s", show(opts.pareto)) end
    kinds[#kinds + 1] = "pareto"
  end
  if #kinds > 1 then
    fail("choose one of opts.weights, opts.order and opts.pareto, got %s", table.concat(kinds, " and "))
  end
  self.kind = kinds[1] == "weights" and "weighted" or kinds[1] or "single"

  if opts.direction ~= nil then check_direction("opts.direction", opts.direction) end
  self.min_delta = check_nonneg("opts.min_delta", opts.min_delta)
  self.min_rel_delta = check_rel("opts.min_rel_delta", opts.min_rel_delta)

  local sig = opts.significance
  if sig == nil then sig = 0.05 end
  if sig ~= false and (type(sig) ~= "number" or not (sig > 0 and sig < 0.5)) then
    fail("opts.significance must be a level in (0, 0.5) such as 0.05, or false, got %s", show(sig))
  end
  self.significance = sig
  local test = opts.test
  if test == nil then test = "mann-whitney" end
  if not TESTS[test] then
    fail('opts.test must be "mann-whitney" or "welch", got %s', show(test))
  end
  self.test = test

  -- metric specs
  if opts.metrics ~= nil and type(opts.metrics) ~= "table" then
    fail("opts.metrics must be a table of name = direction or {direction=..., unit=...}, got %s",
      type(opts.metrics))
  end
  local declared = {}
  for name, spec in pairs(opts.metrics or {}) do
    if type(name) ~= "string" then
      fail("opts.metrics must map metric names to specs, got key %s", show(name))
    end
    local where = "opts.metrics." .. name
    if type(spec) == "string" then spec = { direction = spec } end
    if type(spec) ~= "table" then
      fail('%s must be "minimize", "maximize" or a table, got %s', where, show(spec))
    end
    for k in pairs(spec) do
      if not METRIC_KNOWN[k] then fail("%s has an unknown option %s", where, tostring(k)) end
    end
    if spec.direction ~= nil then check_direction(where .. ".direction", spec.direction) end
    if spec.unit ~= nil and type(spec.unit) ~= "string" then
      fail("%s.unit must be a string, got %s", where, show(spec.unit))
    end
    if spec.format ~= nil and type(spec.format) ~= "function" then
      fail("%s.format must be a function, got %s", where, show(spec.format))
    end
    declared[name] = {
      name = name, direction = spec.direction, unit = spec.unit, format = spec.format,
      min_delta = spec.min_delta ~= nil and check_nonneg(where .. ".min_delta", spec.min_delta) or nil,
      min_rel_delta = spec.min_rel_delta ~= nil and check_rel(where .. ".min_rel_delta", spec.min_rel_delta) or nil,
    }
  end

  local function spec_for(name, where, extra)
    local d = declared[name] or { name = name }
    local s = {
      name = name,
      direction = (extra and extra.direction) or d.direction or opts.direction,
      unit = (extra and extra.unit) or d.unit,
      format = d.format,
      min_delta = (extra and extra.min_delta) or d.min_delta or self.min_delta,
      min_rel_delta = (extra and extra.min_rel_delta) or d.min_rel_delta or self.min_rel_delta,
    }
    if not s.direction then
      fail('%s: metric %s needs a direction (opts.metrics.%s = "minimize" or "maximize", or opts.direction)',
        where, name, name)
    end
    return s
  end

  self.specs = {}
  self.names = {}
  if self.kind == "single" then
    if opts.metric ~= nil and (type(opts.metric) ~= "string" or opts.metric == "") then
      fail("opts.metric must be a metric name, got %s", show(opts.metric))
    end
    if opts.direction == nil and not (opts.metric and declared[opts.metric] and declared[opts.metric].direction) then
      fail('opts.direction must be "minimize" or "maximize" (or give opts.weights, opts.order or opts.pareto)')
    end
    if opts.unit ~= nil and type(opts.unit) ~= "string" then
      fail("opts.unit must be a string, got %s", show(opts.unit))
    end
    if opts.format ~= nil and type(opts.format) ~= "function" then
      fail("opts.format must be a function, got %s", show(opts.format))
    end
    local name = opts.metric or "value"
    self.metric = opts.metric
    local s = spec_for(name, "opts.direction", { unit = opts.unit })
    if opts.format then s.format = opts.format end
    self.specs[1] = s
  elseif self.kind == "weighted" then
    if type(opts.weights) ~= "table" or next(opts.weights) == nil then
      fail("opts.weights must be a table of metric = weight, got %s", show(opts.weights))
    end
    local names = {}
    for name, w in pairs(opts.weights) do
      if type(name) ~= "string" then fail("opts.weights must map metric names to weights, got key %s", show(name)) end
      if type(w) ~= "number" or not (w > 0) or w == huge then
        fail("opts.weights.%s must be a positive number, got %s", name, show(w))
      end
      names[#names + 1] = name
    end
    table.sort(names)
    for i, name in ipairs(names) do
      local s = spec_for(name, "opts.weights")
      s.weight = opts.weights[name]
      self.specs[i] = s
    end
  elseif self.kind == "order" then
    if type(opts.order) ~= "table" or #opts.order == 0 then
      fail("opts.order must be a non-empty list of metric names or {name, tolerance=...}, got %s",
        show(opts.order))
    end
    local seen = {}
    for i, entry in ipairs(opts.order) do
      local where = format("opts.order[%d]", i)
      local name, extra
      if type(entry) == "string" then
        name, extra = entry, nil
      elseif type(entry) == "table" then
        name = entry.metric or entry[1]
        for k in pairs(entry) do
          if not (k == 1 or k == "metric" or k == "direction" or k == "tolerance"
              or k == "rel_tolerance" or k == "unit") then
            fail("%s has an unknown option %s", where, tostring(k))
          end
        end
        if entry.direction ~= nil then check_direction(where .. ".direction", entry.direction) end
        extra = {
          direction = entry.direction, unit = entry.unit,
          min_delta = entry.tolerance ~= nil and check_nonneg(where .. ".tolerance", entry.tolerance) or nil,
          min_rel_delta = entry.rel_tolerance ~= nil and check_rel(where .. ".rel_tolerance", entry.rel_tolerance) or nil,
        }
      end
      if type(name) ~= "string" or name == "" then
        fail("%s must be a metric name or {name, tolerance=...}, got %s", where, show(entry))
      end
      if seen[name] then fail("%s repeats metric %s", where, name) end
      seen[name] = true
      self.specs[i] = spec_for(name, where, extra)
    end
  else -- pareto
    local names = {}
    for name in pairs(declared) do names[#names + 1] = name end
    if #names < 2 then
      fail("opts.pareto needs at least two metrics in opts.metrics, got %d", #names)
    end
    table.sort(names)
    for i, name in ipairs(names) do self.specs[i] = spec_for(name, "opts.metrics") end
  end
  for i, s in ipairs(self.specs) do self.names[i] = s.name end
  self.by_name = {}
  for _, s in ipairs(self.specs) do self.by_name[s.name] = s end

  -- constraints
  self.constraints = {}
  if opts.constraints ~= nil then
    if type(opts.constraints) ~= "table" then
      fail("opts.constraints must be a list of {metric=..., min=..., max=...}, got %s", show(opts.constraints))
    end
    for i, c in ipairs(opts.constraints) do
      local where = format("opts.constraints[%d]", i)
      if type(c) ~= "table" then fail("%s must be a table {metric=..., min=..., max=...}, got %s", where, show(c)) end
      for k in pairs(c) do
        if not (k == "metric" or k == "min" or k == "max" or k == "unit") then
          fail("%s has an unknown option %s", where, tostring(k))
        end
      end
      if type(c.metric) ~= "string" or c.metric == "" then
        fail("%s.metric must be a metric name, got %s", where, show(c.metric))
      end
      if c.min == nil and c.max == nil then fail("%s needs min or max", where) end
      if c.min ~= nil then check_finite(where .. ".min", c.min) end
      if c.max ~= nil then check_finite(where .. ".max", c.max) end
      if c.min and c.max and c.min > c.max then
        fail("%s.min (%s) is greater than its max (%s)", where, show(c.min), show(c.max))
      end
      local d = declared[c.metric] or self.by_name[c.metric]
      self.constraints[i] = { metric = c.metric, min = c.min, max = c.max,
        unit = c.unit or (d and d.unit), format = d and d.format }
    end
  end

  -- target
  local target = opts.target
  if target ~= nil then
    if type(target) == "number" then
      check_finite("opts.target", target)
      if self.kind ~= "single" and self.kind ~= "weighted" then
        fail("opts.target must be a table {metric = threshold} for an objective with %s", self.kind)
      end
    elseif type(target) == "table" then
      for name, v in pairs(target) do
        if type(name) ~= "string" then fail("opts.target must map metric names to thresholds") end
        check_finite("opts.target." .. name, v)
        if not self.by_name[name] and not declared[name] then
          if not (self.kind == "single" and self.metric == nil and name == "value") then
            fail("opts.target.%s names a metric the objective does not have", name)
          end
        end
        if not (self.by_name[name] or declared[name] or {}).direction and not opts.direction then
          fail("opts.target.%s: metric %s needs a direction", name, name)
        end
      end
    else
      fail("opts.target must be a number or a table {metric = threshold}, got %s", show(target))
    end
  end
  self.target = target
  self.declared = declared
  self.default_direction = opts.direction
  return self
end

-- Reading candidates -----------------------------------------------------------------------

local function is_front(x)
  return getmetatable(x) == Front
end

local function finite_samples(t)
  if type(t) ~= "table" or #t < 1 then return nil end
  for i = 1, #t do
    local v = t[i]
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge then return nil end
  end
  return t
end

--- Reads one metric value: {value=, samples=} or nil, reason.
local function read_value(name, v)
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

--- Where the named metrics of a candidate live.
function Objective:_source(c)
  local t = type(c)
  if t == "number" or t == "boolean" then
    if self.kind ~= "single" then
      error(format("beat.objective: candidate is a plain %s, but the objective compares metrics %s; pass a table {%s = ...}",
        t, table.concat(self.names, ", "), self.names[1]), 3)
    end
    return nil, c
  end
  if t ~= "table" then
    error("beat.objective: candidate must be a number, a table of metrics or a measurement, got " .. t, 3)
  end
  if self.kind == "single" then
    local name = self.metric
    if name then
      if c[name] ~= nil then return c end
      if type(c.metrics) == "table" and c.metrics[name] ~= nil then return c.metrics end
      if type(c.value) == "table" and c.value[name] ~= nil then return c.value end
      if type(c.value) == "number" then return nil, c end
      return c
    end
    if type(c.value) == "number" then return nil, c end
    error("beat.objective: candidate is a table without a numeric `value`; set opts.metric to say which metric to compare", 3)
  end
  if type(c.value) == "table" and type(c.metrics) == "table" then return c.metrics end
  if type(c.value) == "table" and c.metrics == nil then return c.value end
  return c
end

--- Reads every metric the objective needs (compared ones, constraints, targets).
--- Returns {name = {value, samples}} or nil, reason.
function Objective:_read(c)
  local src, direct = self:_source(c)
  local vals = {}
  for _, s in ipairs(self.specs) do
    local v, why
    if direct ~= nil then v, why = read_value(s.name, direct) else v, why = read_value(s.name, src[s.name]) end
    if not v then return nil, why end
    vals[s.name] = v
  end
  for _, k in ipairs(self.constraints) do
    if not vals[k.metric] then
      local raw = src and src[k.metric]
      if raw == nil and direct ~= nil and self.kind == "single" and k.metric == self.specs[1].name then
        raw = direct
      end
      local v, why = read_value(k.metric, raw)
      if not v then return nil, why end
      vals[k.metric] = v
    end
    local v = vals[k.metric].value
    local spec = { unit = k.unit, format = k.format }
    if k.min and v < k.min then
      local a, b = fmt_values(spec, v, k.min)
      return nil, format("%s %s < min %s", k.metric, a, b)
    end
    if k.max and v > k.max then
      local a, b = fmt_values(spec, v, k.max)
      return nil, format("%s %s > max %s", k.metric, a, b)
    end
  end
  return vals
end

--- Whether a candidate satisfies the constraints and has every metric.
---@param candidate any
---@return boolean, string?
function Objective:feasible(candidate)
  local vals, why = self:_read(candidate)
  if not vals then return false, why end
  return true
end

--- The weighted score (weighted objectives) or the value (single), with samples.
local function weighted_score(specs, vals)
  local s = 0.0
  for _, sp in ipairs(specs) do
    local sign = sp.direction == "maximize" and 1 or -1
    s = s + sp.weight * sign * vals[sp.name].value
  end
  -- per-run scores when every sampled metric has the same number of runs
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

--- A one-line description of a candidate: "size 120.4 KB, tests 12".
---@param candidate any
---@return string
function Objective:describe(candidate)
  local vals, why = self:_read(candidate)
  if not vals then return "infeasible: " .. why end
  local parts = {}
  for _, s in ipairs(self.specs) do
    parts[#parts + 1] = s.name .. " " .. fmt_one(s, vals[s.name].value)
  end
  if self.kind == "weighted" then
    local sc = weighted_score(self.specs, vals)
    table.insert(parts, 1, "weighted score " .. fmt_one(nil, sc))
  end
  return table.concat(parts, ", ")
end

--- The scalar a single or weighted objective compares (higher is not necessarily
--- better: a single minimize objective returns the value itself). nil for order and
--- pareto objectives, and nil, reason for an infeasible candidate.
---@param candidate any
---@return number|nil, string?
function Objective:scalar(candidate)
  local vals, why = self:_read(candidate)
  if not vals then return nil, why end
  if self.kind == "single" then return vals[self.specs[1].name].value end
  if self.kind == "weighted" then return (weighted_score(self.specs, vals)) end
  return nil, "a " .. self.kind .. " objective has no single scalar"
end

-- Comparing one metric ----------------------------------------------------------------------

--- Compares a against b on one metric. Returns sign (1 a better, −1 a worse, 0 tie),
--- a reason fragment, and info {delta, rel_delta, p, test}.
function Objective:_cmp(spec, a, b, label)
  local av, bv = a.value, b.value
  local d = av - bv
  local name = label or spec.name
  local sa, sb = fmt_values(spec, av, bv)
  local pct = not spec.no_pct and fmt_pct(av, bv) or nil
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
      fmt_one(spec, spec.min_delta)), info
  end
  -- relative to the larger magnitude, so compare(a, b) and compare(b, a) always agree
  local base = abs(bv) > abs(av) and abs(bv) or abs(av)
  if spec.min_rel_delta and spec.min_rel_delta > 0 and absd <= spec.min_rel_delta * base then
    return 0, format("%s %s ≈ %s (%swithin min_rel_delta %s%%)", name, sa, sb, pct_s,
      (format("%.4g", spec.min_rel_delta * 100))), info
  end
  local extra = ""
  if self.significance and a.samples and b.samples and #a.samples >= 2 and #b.samples >= 2 then
    -- H1: a is better than b (when the aggregates say so) or worse (when they say that)
    local a_smaller = d < 0
    local r
    if self.test == "welch" then
      r = stats.welch(a.samples, b.samples, { alternative = a_smaller and "less" or "greater" })
    else
      r = stats.mann_whitney(a.samples, b.samples, { alternative = a_smaller and "less" or "greater" })
    end
    info.p, info.test = r.p, self.test
    if r.p > self.significance then
      return 0, format("%s %s ≈ %s (%s%s, not significant at %s)", name, sa, sb, pct_s,
        fmt_p(r.p), tostring(self.significance)), info
    end
    extra = ", " .. fmt_p(r.p)
  end
  local notes = {}
  if pct then notes[#notes + 1] = pct end
  if extra ~= "" then notes[#notes + 1] = extra:sub(3) end
  local paren = #notes > 0 and (" (" .. table.concat(notes, ", ") .. ")") or ""
  return improves and 1 or -1, format("%s %s %s %s%s", name, sa, op, sb, paren), info
end

-- compare ------------------------------------------------------------------------------------

local VERDICT = { [1] = "better", [-1] = "worse", [0] = "tie" }

function Objective:_dominance(av, bv)
  local texts, infos = {}, {}
  local better, worse = 0, 0
  for i, s in ipairs(self.specs) do
    local sg, txt, info = self:_cmp(s, av[s.name], bv[s.name])
    texts[i], infos[i] = txt, info
    if sg > 0 then better = better + 1 elseif sg < 0 then worse = worse + 1 end
  end
  return better, worse, texts, infos
end

function Objective:_compare_front(av, front)
  for idx, m in ipairs(front.entries) do
    local better, worse, texts = self:_dominance(av, m.vals)
    if worse > 0 and better == 0 then
      return "worse", format("dominated by front member %d: %s", idx, table.concat(texts, ", ")), { member = idx }
    end
    if worse == 0 and better == 0 then
      return "tie", format("ties front member %d: %s", idx, table.concat(texts, ", ")), { member = idx }
    end
  end
  local dominated = {}
  for idx, m in ipairs(front.entries) do
    local better, worse = self:_dominance(av, m.vals)
    if better > 0 and worse == 0 then dominated[#dominated + 1] = idx end
  end
  local reason
  if #front.entries == 0 then
    reason = "first on the front: " .. self:_describe_vals(av)
  elseif #dominated > 0 then
    reason = format("joins the front, dominating %d member%s: %s", #dominated,
      #dominated == 1 and "" or "s", self:_describe_vals(av))
  else
    reason = "joins the front (a new trade-off): " .. self:_describe_vals(av)
  end
  return "better", reason, { dominated = dominated }
end

function Objective:_describe_vals(vals)
  local parts = {}
  for _, s in ipairs(self.specs) do
    parts[#parts + 1] = s.name .. " " .. fmt_one(s, vals[s.name].value)
  end
  return table.concat(parts, ", ")
end

--- Compares a candidate with the best so far (or with a Pareto front).
--- Returns "better" | "worse" | "tie" | "infeasible", a one-line reason, and an info
--- table ({delta, rel_delta, p, test} for a decided metric). With best = nil, a feasible
--- candidate is "better" (the first result). A feasible candidate is "better" than an
--- infeasible best. Only "better" should replace the best.
---@param candidate any number, table of metrics or measurement
---@param best any|nil the same, a Pareto front (pareto objectives), or nil
---@return "better"|"worse"|"tie"|"infeasible" verdict
---@return string reason
---@return table info
function Objective:compare(candidate, best)
  if candidate == nil then
    error("beat.objective: compare needs a candidate, got nil (a failed eval has no score: do not compare it)", 2)
  end
  local av, why = self:_read(candidate)
  if not av then return "infeasible", why, {} end
  if best == nil then
    return "better", "first result: " .. self:describe(candidate), { first = true }
  end
  if is_front(best) then
    if self.kind ~= "pareto" then error("beat.objective: only a pareto objective compares with a front", 2) end
    return self:_compare_front(av, best)
  end
  local bv, bwhy = self:_read(best)
  if not bv then
    return "better", format("best was infeasible (%s); now %s", bwhy, self:describe(candidate)), { first = true }
  end
  local kind = self.kind
  if kind == "single" then
    local s = self.specs[1]
    local sg, txt, info = self:_cmp(s, av[s.name], bv[s.name])
    return VERDICT[sg], txt, info
  elseif kind == "weighted" then
    local sa, samples_a = weighted_score(self.specs, av)
    local sb, samples_b = weighted_score(self.specs, bv)
    local spec = { direction = "maximize", min_delta = self.min_delta, min_rel_delta = self.min_rel_delta,
      no_pct = true }
    local sg, txt, info = self:_cmp(spec, { value = sa, samples = samples_a }, { value = sb, samples = samples_b },
      "weighted score")
    local parts = {}
    for _, s in ipairs(self.specs) do
      local nospec = { name = s.name, direction = s.direction, unit = s.unit, format = s.format }
      local _, t = self:_cmp(nospec, { value = av[s.name].value }, { value = bv[s.name].value })
      parts[#parts + 1] = t
    end
    return VERDICT[sg], txt .. ": " .. table.concat(parts, ", "), info
  elseif kind == "order" then
    local tied = {}
    for _, s in ipairs(self.specs) do
      local sg, txt, info = self:_cmp(s, av[s.name], bv[s.name])
      if sg ~= 0 then
        local prefix = #tied > 0 and (table.concat(tied, "; ") .. "; ") or ""
        return VERDICT[sg], prefix .. txt, info
      end
      tied[#tied + 1] = txt
    end
    return "tie", table.concat(tied, "; "), {}
  else -- pareto
    local better, worse, texts = self:_dominance(av, bv)
    local joined = table.concat(texts, ", ")
    if better > 0 and worse == 0 then return "better", "dominates: " .. joined, {} end
    if worse > 0 and better == 0 then return "worse", "dominated: " .. joined, {} end
    if better == 0 and worse == 0 then return "tie", "equal: " .. joined, {} end
    return "tie", "trade-off: " .. joined, { tradeoff = true }
  end
end

--- True when a dominates b (pareto objectives; per metric noise thresholds apply):
--- no worse on every metric and better on at least one. Infeasible candidates dominate
--- nothing and are dominated by every feasible one.
---@param a any
---@param b any
---@return boolean
function Objective:dominates(a, b)
  local av = self:_read(a)
  if not av then return false end
  local bv = self:_read(b)
  if not bv then return true end
  local better, worse = self:_dominance(av, bv)
  return better > 0 and worse == 0
end

--- Whether a candidate reaches opts.target: a number is the threshold for the single
--- value (or weighted score); a table gives one threshold per metric, all of which must
--- be reached. Reached means ≤ for minimize, ≥ for maximize. Infeasible never reaches.
---@param candidate any
---@return boolean, string
function Objective:target_reached(candidate)
  if self.target == nil then return false, "no target set" end
  local vals, why = self:_read(candidate)
  if not vals then return false, "infeasible: " .. why end
  local checks = {}
  if type(self.target) == "number" then
    if self.kind == "weighted" then
      local sc = weighted_score(self.specs, vals)
      checks[1] = { name = "weighted score", v = sc, t = self.target, dir = "maximize" }
    else
      local s = self.specs[1]
      checks[1] = { name = self.metric or "value", v = vals[s.name].value, t = self.target,
        dir = s.direction, spec = s }
    end
  else
    local names = {}
    for name in pairs(self.target) do names[#names + 1] = name end
    table.sort(names)
    local src, direct = self:_source(candidate)
    for _, name in ipairs(names) do
      local spec = self.by_name[name] or self.declared[name] or {}
      local v = vals[name]
      if not v then
        local raw = direct ~= nil and direct or src[name]
        local why2
        v, why2 = read_value(name, raw)
        if not v then return false, why2 end
      end
      checks[#checks + 1] = { name = name, v = v.value, t = self.target[name],
        dir = spec.direction or self.default_direction, spec = spec }
    end
  end
  local parts = {}
  for _, c in ipairs(checks) do
    local ok = c.dir == "minimize" and c.v <= c.t or c.dir == "maximize" and c.v >= c.t
    local a, b = fmt_values(c.spec, c.v, c.t)
    if not ok then
      return false, format("%s %s has not reached target %s", c.name, a, b)
    end
    parts[#parts + 1] = format("%s %s %s target %s", c.name, a, c.dir == "minimize" and "≤" or "≥", b)
  end
  return true, table.concat(parts, ", ")
end

-- Pareto front ------------------------------------------------------------------------------

---@class beat.FrontEntry
---@field candidate any
---@field data any

--- A new, empty Pareto front for this (pareto) objective.
---@return beat.Front
function Objective:front()
  if self.kind ~= "pareto" then
    error("beat.objective: front() needs a pareto objective (opts.pareto = true)", 2)
  end
  return setmetatable({ objective = self, entries = {} }, Front)
end

--- Offers a candidate to the front. It enters when it is feasible, dominated by no
--- member and not a tie with one (ties never replace); the members it dominates leave.
--- `data` is kept alongside (an iteration number, a snapshot ref).
---@param candidate any
---@param data? any
---@return boolean entered
---@return beat.FrontEntry[] dominated the members that left, each {candidate, data}
---@return string reason
function Front:add(candidate, data)
  local obj = self.objective
  if candidate == nil then error("beat.objective: front:add needs a candidate, got nil", 2) end
  local av, why = obj:_read(candidate)
  if not av then return false, {}, "infeasible: " .. why end
  local verdict, reason, info = obj:_compare_front(av, self)
  if verdict ~= "better" then return false, {}, reason end
  local removed, keep = {}, {}
  local gone = {}
  for _, idx in ipairs(info.dominated) do gone[idx] = true end
  for idx, m in ipairs(self.entries) do
    if gone[idx] then removed[#removed + 1] = { candidate = m.candidate, data = m.data }
    else keep[#keep + 1] = m end
  end
  keep[#keep + 1] = { candidate = candidate, data = data, vals = av }
  self.entries = keep
  return true, removed, reason
end

--- The members of the front, oldest first, as {candidate, data} (a copy).
---@return beat.FrontEntry[]
function Front:members()
  local out = {}
  for i, m in ipairs(self.entries) do out[i] = { candidate = m.candidate, data = m.data } end
  return out
end

--- Number of members.
---@return integer
function Front:size()
  return #self.entries
end

--- What compare(candidate, front) would say, without changing the front.
---@param candidate any
---@return "better"|"worse"|"tie"|"infeasible", string
function Front:offer(candidate)
  return self.objective:compare(candidate, self)
end

M.Objective = Objective
M.Front = Front
M._fmt_pair = fmt_pair
M._fmt_pct = fmt_pct

return M
