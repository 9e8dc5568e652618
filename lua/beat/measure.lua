--- beat.measure — run an eval several times and summarise the noise.
---
--- `beat.measure(cmd, opts)` (this module's `measure`) runs `cmd` `opts.warmup` times
--- (results thrown away, failures not) and then `opts.runs` times, scores every run with
--- `opts.score` (beat.score.last_number by default) and returns a measurement:
---   {value, values, median, mean, stddev, min, max, mad, outliers, runs, aggregate, durations}
--- `value` is the aggregate (median by default), `values` the per-run scores in order,
--- `outliers` the indices (into values) whose modified z-score exceeds 3.5: flagged, never
--- dropped. When the score returns tables of metrics, the measurement is
---   {value = {name = aggregate}, values = {{...}, ...}, metrics = {name = measurement}, ...}
--- One failing run fails the measurement: nil, "run 3 of 5: eval exited 1", result.
---
--- beat.objective compares measurements directly: `value` is compared and `values` are the
--- samples for its significance test.

local check = require "beat.check"
local stats = require "beat.stats"

local M = {}

local format = string.format

local WHERE = "beat.measure"
local OPTS = {
  runs = "posint", warmup = "nonnegint", timeout = "duration", label = "string", on_run = "function",
  aggregate = { enum = { "median", "mean", "min", "max" } },
  score = { "function", what = "an extractor function such as beat.score.last_number" },
  cwd = { "string", what = "a directory path" },
  -- passed on to beat.exec, which checks them
  env = "any", clear_env = "any", stdin = "any", grace = "any", max_output = "any", stderr = "any",
}
local EXEC_OPTS = { "cwd", "env", "clear_env", "stdin", "grace", "max_output", "stderr" }

---@class beat.MeasureOptions
---@field runs? integer       measured runs (default 5)
---@field warmup? integer     runs before those, not scored (default 0)
---@field aggregate? "median"|"mean"|"min"|"max"  what `value` is (default "median")
---@field timeout? number|string  per run, seconds or a duration ("90s")
---@field score? fun(result: beat.ExecResult, ctx: beat.ScoreContext): any, string?  extractor (default beat.score.last_number)
---@field label? string       names the command in reasons (default "eval")
---@field on_run? fun(run: integer, value: any, result: beat.ExecResult)  called after each measured run
---@field cwd? string         passed to beat.exec (and to the score as ctx.cwd)
---@field env? table          passed to beat.exec
---@field clear_env? boolean  passed to beat.exec
---@field stdin? string       passed to beat.exec
---@field grace? number|string passed to beat.exec
---@field max_output? integer passed to beat.exec
---@field stderr? boolean|string passed to beat.exec

---@class beat.Measurement
---@field value number|table  the aggregate
---@field values any[]        per-run scores, in run order
---@field median number
---@field mean number
---@field stddev number       sample standard deviation (0 for one run)
---@field min number
---@field max number
---@field mad number          median absolute deviation (unscaled)
---@field outliers integer[]  indices into values with |modified z| > 3.5
---@field runs integer
---@field aggregate string
---@field durations number[]  wall-clock seconds of each measured run
---@field metrics? table<string, beat.Measurement>  per-metric measurements (table scores)

local function summarise(values, aggregate)
  local s = stats.summary(values)
  return {
    value = s[aggregate],
    values = values,
    median = s.median, mean = s.mean, stddev = s.stddev, min = s.min, max = s.max,
    mad = s.mad, outliers = s.outliers,
    runs = #values, aggregate = aggregate,
  }
end

local function finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

--- Runs cmd repeatedly and summarises its scores. cmd is what beat.exec takes (an argv
--- table or a shell string), or a function(run, is_warmup) returning an exec-style result
--- table (or nil, reason) for measuring anything else. Raises on malformed options; returns
--- nil, "run N of M: reason", result when a run fails.
---@param cmd string|string[]|fun(run: integer, is_warmup: boolean): (beat.ExecResult|nil), string?
---@param opts? beat.MeasureOptions
---@return beat.Measurement|nil measurement
---@return string? reason
---@return beat.ExecResult? result of the failing run
function M.measure(cmd, opts)
  check.value(WHERE, "cmd", cmd, { "string|table|function", required = true,
    what = "an argv table, a shell string or a function" })
  local tc = type(cmd)
  if tc == "string" and cmd:match("^%s*$") then check.error(WHERE, "cmd must not be empty") end
  if tc == "table" and #cmd == 0 then check.error(WHERE, "cmd must not be an empty argv table") end
  opts = check.options(WHERE, opts, OPTS)
  local runs = opts.runs or 5
  local warmup = opts.warmup or 0
  local aggregate = opts.aggregate or "median"
  local score = opts.score or require("beat.score").last_number
  local label = opts.label or "eval"
  local timeout = opts.timeout and require("beat.duration").parse(opts.timeout)

  local exec_opts = { timeout = opts.timeout }
  for _, k in ipairs(EXEC_OPTS) do exec_opts[k] = opts[k] end
  local ctx = { label = label, cwd = opts.cwd, timeout = timeout }

  local function run_once(i, is_warmup)
    if tc == "function" then
      local r, why = cmd(i, is_warmup)
      if r == nil then return nil, tostring(why or "the function returned no result") end
      if type(r) ~= "table" then
        check.fail(WHERE, "the cmd function's result", "an exec result table, or nil and a reason", r, 3)
      end
      return r
    end
    return require("beat").exec(cmd, exec_opts)
  end

  local total = warmup + runs
  local values, durations = {}, {}
  local kind -- "number" or "table"
  for i = 1, total do
    local measured = i > warmup
    local where = measured and format("run %d of %d", i - warmup, runs)
      or format("warmup run %d of %d", i, warmup)
    local result, why = run_once(measured and i - warmup or i, not measured)
    if not result then return nil, where .. ": " .. why end
    local v, reason = score(result, ctx)
    if v == nil then
      return nil, where .. ": " .. tostring(reason or "the score returned nothing"), result
    end
    if measured then
      local tv = type(v)
      if tv == "number" then
        if not finite(v) then return nil, where .. ": value is " .. (v ~= v and "NaN" or "infinite"), result end
      elseif tv ~= "table" then
        check.error(WHERE, format("opts.score returned %s %s for %s; beat.measure needs numbers or tables of numbers "
          .. "(to time a command, use score = beat.score.duration)", tv, tostring(v), where))
      end
      if kind == nil then kind = tv
      elseif kind ~= tv then
        check.error(WHERE, format("opts.score returned a %s for %s but a %s before", tv, where, kind))
      end
      local n = i - warmup
      values[n] = v
      durations[n] = type(result.duration) == "number" and result.duration or nil
      if opts.on_run then opts.on_run(n, v, result) end
    end
  end

  if kind == "number" then
    local m = summarise(values, aggregate)
    m.durations = durations
    return m
  end

  -- tables of metrics: every numeric metric of the first run must be numeric in all runs
  local names = {}
  for name, v in pairs(values[1]) do
    if type(name) == "string" and type(v) == "number" then names[#names + 1] = name end
  end
  table.sort(names)
  local metrics, value = {}, {}
  for _, name in ipairs(names) do
    local series = {}
    for n = 1, runs do
      local v = values[n][name]
      if type(v) ~= "number" then
        return nil, format("run %d of %d: metric %s %s", n, runs, name,
          v == nil and "missing (it was in run 1)" or "is not a number")
      end
      if not finite(v) then
        return nil, format("run %d of %d: metric %s is %s", n, runs, name, v ~= v and "NaN" or "infinite")
      end
      series[n] = v
    end
    metrics[name] = summarise(series, aggregate)
    value[name] = metrics[name].value
  end
  return {
    value = value, values = values, metrics = metrics,
    runs = runs, aggregate = aggregate, durations = durations,
  }
end

return M
