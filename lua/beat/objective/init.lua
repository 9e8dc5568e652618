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
---
--- This file builds objectives from options and holds their methods; reading and
--- comparing candidates is in objective/compare.lua, Pareto fronts in objective/front.lua,
--- the numbers in reasons in objective/format.lua.

local check = require "beat.check"
local compare = require "beat.objective.compare"
local fmt = require "beat.objective.format"
local front = require "beat.objective.front"

local M = {}

local format = string.format

local WHERE = "beat.objective"

---@class beat.Objective
---@field kind "single"|"weighted"|"order"|"pareto"
---@field names string[] the metrics compared, in order
local Objective = {}
Objective.__index = Objective

-- Options ------------------------------------------------------------------------------------

local DIRECTION = { enum = { "minimize", "maximize" } }
local FRACTION = { "number", range = "[0, 1)", what = "a fraction in [0, 1) (0.01 = 1%)" }
local SENTINELS = { "table", what = "a table {[value] = name} such as {[1e6] = \"diverged\"}",
  test = function(t)
    for k, v in pairs(t) do
      if type(k) ~= "number" or type(v) ~= "string" or v == "" then return false end
    end
    return true
  end }

local OPTS = {
  direction = DIRECTION, min_delta = "nonneg", min_rel_delta = FRACTION,
  metric = { "nonempty", what = "a metric name" }, unit = "string", format = "function",
  metrics = { "table", what = "a table of name = direction or {direction=..., unit=...}" },
  weights = { "table", test = function(w) return next(w) ~= nil end, what = "a table of metric = weight" },
  order = { "table", test = function(o) return #o > 0 end,
    what = "a non-empty list of metric names or {name, tolerance=...}" },
  pareto = "boolean",
  constraints = { "table", what = "a list of {metric=..., min=..., max=...}" },
  significance = { "number|false", range = "(0, 0.5)", what = "a level in (0, 0.5) such as 0.05, or false" },
  test = { enum = { "mann-whitney", "welch" } },
  target = { "finite|table", what = "a number or a table {metric = threshold}" },
  sentinels = SENTINELS,
}
local METRIC = { direction = DIRECTION, unit = "string", format = "function", min_delta = "nonneg",
  min_rel_delta = FRACTION, sentinels = SENTINELS }
local LEVEL = { [1] = "string", metric = "string", direction = DIRECTION, tolerance = "nonneg",
  rel_tolerance = FRACTION, unit = "string" }
local CONSTRAINT = { metric = { "nonempty", required = true, what = "a metric name" },
  min = "finite", max = "finite", unit = "string" }

---@class beat.MetricSpec
---@field direction? "minimize"|"maximize"
---@field unit? string   printed after values in reasons ("KB", "ms", "%")
---@field format? fun(v: number): string  custom formatting for reasons
---@field min_delta? number      absolute change below which two values tie
---@field min_rel_delta? number  relative change (0.01 = 1%) below which two values tie
---@field sentinels? table<number, string> values that are markers, not scores, named in reasons: {[1e6] = "diverged"}

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
---@field sentinels? table<number, string> marker values named in reasons, for every metric: {[1e6] = "diverged"}

-- Each helper below is called by M.new and raises at level 3: the caller of new.

-- "single", "weighted", "order" or "pareto".
local function kind_of(opts)
  local kinds = {}
  if opts.weights ~= nil then kinds[#kinds + 1] = "weights" end
  if opts.order ~= nil then kinds[#kinds + 1] = "order" end
  if opts.pareto then kinds[#kinds + 1] = "pareto" end
  if #kinds > 1 then
    check.error(WHERE, "choose one of opts.weights, opts.order and opts.pareto, got "
      .. table.concat(kinds, " and "), 3)
  end
  return kinds[1] == "weights" and "weighted" or kinds[1] or "single"
end

-- opts.metrics as {name = spec}.
local function declared_metrics(metrics)
  local declared = {}
  for name, spec in pairs(metrics or {}) do
    if type(name) ~= "string" then
      check.error(WHERE, "opts.metrics must map metric names to specs, got key " .. check.show(name), 3)
    end
    local where = "opts.metrics." .. name
    if type(spec) == "string" then spec = { direction = spec } end
    if type(spec) ~= "table" then check.fail(WHERE, where, '"minimize", "maximize" or a table', spec, 3) end
    check.options(WHERE, spec, METRIC, { prefix = where, level = 3 })
    declared[name] = { name = name, direction = spec.direction, unit = spec.unit, format = spec.format,
      min_delta = spec.min_delta, min_rel_delta = spec.min_rel_delta, sentinels = spec.sentinels }
  end
  return declared
end

-- The compared metrics' specs, in order: what each metric is, its direction and noise floors.
local function metric_specs(self, opts, declared)
  local function spec_for(name, where, extra)
    local d = declared[name] or { name = name }
    extra = extra or {}
    local s = {
      name = name, direction = extra.direction or d.direction or opts.direction,
      unit = extra.unit or d.unit, format = d.format, sentinels = d.sentinels or opts.sentinels,
      min_delta = extra.min_delta or d.min_delta or self.min_delta,
      min_rel_delta = extra.min_rel_delta or d.min_rel_delta or self.min_rel_delta,
    }
    if not s.direction then
      check.error(WHERE, format('%s: metric %s needs a direction (opts.metrics.%s = "minimize" or "maximize", or opts.direction)',
        where, name, name), 4)
    end
    return s
  end

  local specs = {}
  if self.kind == "single" then
    if opts.direction == nil and not (opts.metric and declared[opts.metric] and declared[opts.metric].direction) then
      check.fail(WHERE, "opts.direction", '"minimize" or "maximize" (or give opts.weights, opts.order or opts.pareto)', nil, 3)
    end
    specs[1] = spec_for(opts.metric or "value", "opts.direction", { unit = opts.unit })
    if opts.format then specs[1].format = opts.format end
  elseif self.kind == "weighted" then
    local names = {}
    for name, w in pairs(opts.weights) do
      if type(name) ~= "string" then
        check.error(WHERE, "opts.weights must map metric names to weights, got key " .. check.show(name), 3)
      end
      check.value(WHERE, "opts.weights." .. name, w, { "number", range = "(0, inf)", what = "a positive number" }, 3)
      names[#names + 1] = name
    end
    table.sort(names)
    for i, name in ipairs(names) do
      specs[i] = spec_for(name, "opts.weights")
      specs[i].weight = opts.weights[name]
    end
  elseif self.kind == "order" then
    local seen = {}
    for i, entry in ipairs(opts.order) do
      local where = format("opts.order[%d]", i)
      local name, extra = entry, nil
      if type(entry) == "table" then
        check.options(WHERE, entry, LEVEL, { prefix = where, level = 3 })
        name = entry.metric or entry[1]
        extra = { direction = entry.direction, unit = entry.unit, min_delta = entry.tolerance,
          min_rel_delta = entry.rel_tolerance }
      end
      if type(name) ~= "string" or name == "" then
        check.fail(WHERE, where, "a metric name or {name, tolerance=...}", entry, 3)
      end
      if seen[name] then check.error(WHERE, format("%s repeats metric %s", where, name), 3) end
      seen[name] = true
      specs[i] = spec_for(name, where, extra)
    end
  else -- pareto
    local names = {}
    for name in pairs(declared) do names[#names + 1] = name end
    if #names < 2 then
      check.error(WHERE, format("opts.pareto needs at least two metrics in opts.metrics, got %d", #names), 3)
    end
    table.sort(names)
    for i, name in ipairs(names) do specs[i] = spec_for(name, "opts.metrics") end
  end
  return specs
end

-- opts.constraints, checked, with each metric's unit and format for reasons.
local function constraints(list, declared, by_name, sentinels)
  local out = {}
  for i, c in ipairs(list or {}) do
    local where = format("opts.constraints[%d]", i)
    if type(c) ~= "table" then check.fail(WHERE, where, "a table {metric=..., min=..., max=...}", c, 3) end
    check.options(WHERE, c, CONSTRAINT, { prefix = where, level = 3 })
    if c.min == nil and c.max == nil then check.error(WHERE, where .. " needs min or max", 3) end
    if c.min and c.max and c.min > c.max then
      check.error(WHERE, format("%s.min (%s) is greater than its max (%s)", where, c.min, c.max), 3)
    end
    local d = declared[c.metric] or by_name[c.metric]
    out[i] = { metric = c.metric, min = c.min, max = c.max, unit = c.unit or (d and d.unit),
      format = d and d.format, sentinels = d and d.sentinels or sentinels }
  end
  return out
end

-- opts.target, checked against the metrics the objective has.
local function check_target(self, opts, declared)
  local target = opts.target
  if type(target) == "number" then
    if self.kind ~= "single" and self.kind ~= "weighted" then
      check.error(WHERE, format("opts.target must be a table {metric = threshold} for an objective with %s",
        self.kind), 3)
    end
  elseif type(target) == "table" then
    for name, v in pairs(target) do
      if type(name) ~= "string" then check.error(WHERE, "opts.target must map metric names to thresholds", 3) end
      check.value(WHERE, "opts.target." .. name, v, "finite", 3)
      local known = self.by_name[name] or declared[name]
      if not known and not (self.kind == "single" and self.metric == nil and name == "value") then
        check.error(WHERE, format("opts.target.%s names a metric the objective does not have", name), 3)
      end
      if not (known or {}).direction and not opts.direction then
        check.error(WHERE, format("opts.target.%s: metric %s needs a direction", name, name), 3)
      end
    end
  end
  return target
end

--- Builds an objective. Raises on a malformed options table, naming the option.
---@param opts beat.ObjectiveOptions
---@return beat.Objective
function M.new(opts)
  if opts == nil then check.fail(WHERE, "opts", "a table", opts) end
  check.options(WHERE, opts, OPTS)
  local self = setmetatable({}, Objective)
  self.kind = kind_of(opts)
  self.min_delta = opts.min_delta or 0
  self.min_rel_delta = opts.min_rel_delta or 0
  self.significance = opts.significance == nil and 0.05 or opts.significance
  self.test = opts.test or "mann-whitney"
  self.metric = self.kind == "single" and opts.metric or nil
  local declared = declared_metrics(opts.metrics)
  self.specs = metric_specs(self, opts, declared)
  self.names, self.by_name = {}, {}
  for i, s in ipairs(self.specs) do self.names[i], self.by_name[s.name] = s.name, s end
  self.constraints = constraints(opts.constraints, declared, self.by_name, opts.sentinels)
  self.target = check_target(self, opts, declared)
  self.declared = declared
  self.default_direction = opts.direction
  return self
end

-- Methods ------------------------------------------------------------------------------------

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
    check.error(WHERE, "compare needs a candidate, got nil (a failed eval has no score: do not compare it)")
  end
  local av, why = compare.read(self, candidate)
  if not av then return "infeasible", why, {} end
  if best == nil then
    return "better", "first result: " .. self:describe(candidate), { first = true }
  end
  if front.is_front(best) then
    if self.kind ~= "pareto" then check.error(WHERE, "only a pareto objective compares with a front") end
    local verdict, reason, info = front.compare(self, av, best)
    return verdict, reason, info
  end
  local bv, bwhy = compare.read(self, best)
  if not bv then
    return "better", format("best was infeasible (%s); now %s", bwhy, self:describe(candidate)), { first = true }
  end
  local verdict, reason, info = compare.verdict(self, av, bv)
  return verdict, reason, info
end

--- Whether a candidate satisfies the constraints and has every metric.
---@param candidate any
---@return boolean, string?
function Objective:feasible(candidate)
  local vals, why = compare.read(self, candidate)
  if not vals then return false, why end
  return true
end

--- A one-line description of a candidate: "size 120.4 KB, tests 12".
---@param candidate any
---@return string
function Objective:describe(candidate)
  local vals, why = compare.read(self, candidate)
  if not vals then return "infeasible: " .. why end
  local text = compare.describe(self, vals)
  if self.kind == "weighted" then
    text = "weighted score " .. fmt.one(nil, (compare.weighted_score(self.specs, vals))) .. ", " .. text
  end
  return text
end

--- The scalar a single or weighted objective compares (higher is not necessarily
--- better: a single minimize objective returns the value itself). nil for order and
--- pareto objectives, and nil, reason for an infeasible candidate.
---@param candidate any
---@return number|nil, string?
function Objective:scalar(candidate)
  local vals, why = compare.read(self, candidate)
  if not vals then return nil, why end
  if self.kind == "single" then return vals[self.specs[1].name].value end
  if self.kind == "weighted" then return (compare.weighted_score(self.specs, vals)) end
  return nil, "a " .. self.kind .. " objective has no single scalar"
end

--- True when a dominates b (pareto objectives; per metric noise thresholds apply):
--- no worse on every metric and better on at least one. Infeasible candidates dominate
--- nothing and are dominated by every feasible one.
---@param a any
---@param b any
---@return boolean
function Objective:dominates(a, b)
  local av = compare.read(self, a)
  if not av then return false end
  local bv = compare.read(self, b)
  if not bv then return true end
  local better, worse = compare.dominance(self, av, bv)
  return better > 0 and worse == 0
end

--- Whether a candidate reaches opts.target: a number is the threshold for the single
--- value (or weighted score); a table gives one threshold per metric, all of which must
--- be reached. Reached means ≤ for minimize, ≥ for maximize. Infeasible never reaches.
---@param candidate any
---@return boolean, string
function Objective:target_reached(candidate)
  if self.target == nil then return false, "no target set" end
  local vals, why = compare.read(self, candidate)
  if not vals then return false, "infeasible: " .. why end
  local checks = {}
  if type(self.target) == "number" then
    if self.kind == "weighted" then
      local sc = compare.weighted_score(self.specs, vals)
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
    local src, direct = compare.source(self, candidate)
    for _, name in ipairs(names) do
      local spec = self.by_name[name] or self.declared[name] or {}
      local v = vals[name]
      if not v then
        local why2
        v, why2 = compare.value(name, direct ~= nil and direct or src[name])
        if not v then return false, why2 end
      end
      checks[#checks + 1] = { name = name, v = v.value, t = self.target[name],
        dir = spec.direction or self.default_direction, spec = spec }
    end
  end
  local parts = {}
  for _, c in ipairs(checks) do
    local ok = c.dir == "minimize" and c.v <= c.t or c.dir == "maximize" and c.v >= c.t
    local a, b = fmt.values(c.spec, c.v, c.t)
    if not ok then
      return false, format("%s %s has not reached target %s", c.name, a, b)
    end
    parts[#parts + 1] = format("%s %s %s target %s", c.name, a, c.dir == "minimize" and "≤" or "≥", b)
  end
  return true, table.concat(parts, ", ")
end

--- A new, empty Pareto front for this (pareto) objective; see beat.objective.front.
---@return beat.Front
function Objective:front()
  if self.kind ~= "pareto" then
    check.error(WHERE, "front() needs a pareto objective (opts.pareto = true)")
  end
  local f = front.new(self)
  return f
end

M.Objective = Objective
M.Front = front.Front

return M
