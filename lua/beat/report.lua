--- beat.report: a run read back from its journal, as charts and a table.
---
---   local report = require "beat.report"
---   local run = assert(report.load(".beat/runs/mx4ssuyb"))
---   io.write(report.terminal(run, { width = 80, color = false }))
---   fs.write("run.svg", report.svg(run))
---   fs.write("run.html", report.html(run))
---   print(report.json(run))
---
--- The run model (`load`, also `beat report --json`) is plain data:
---   {version = 1, id, dir, journal, strategy, cwd, status, reason, started,
---    elapsed, cost_usd, baseline_text, best_text,
---    objective = {kind = "single"|"weighted"|"order"|"pareto"|"none",
---                 metrics = {{name, direction}, ...}},
---    metrics = {name, ...}             -- the charted series, in order
---    iterations = {{iteration, status, kept, baseline, values = {name = number},
---                   score, score_text, best_text, summary, cost_usd,
---                   duration_s, snapshot, front, round, candidate}, ...},
---    front = {iteration, ...} | nil,   -- Pareto runs: the final front
---    warnings = {...}}
---
--- Where the values come from, per decision record: a `metrics` table
--- (name → number) when the strategy records one; else a `score` table; else
--- the numbers in `score_text` ("val_loss 0.01196, params 37"); a numeric
--- `score` is the objective's scalar and replaces the rounded text value of a
--- single metric. A Pareto run's front is the last `front` list a record
--- carries, or else the members that no other kept iteration dominates.
---
--- Charts: one per metric, score against iteration. Kept points, discarded
--- points and the baseline have their own glyphs (they read without colour),
--- the best so far is a step line, iterations without a score are marked on
--- the x axis. A value far outside the rest (a "diverged" sentinel such as
--- 1e6, inf) would squash the others: the axis is clipped to the rest and
--- the point is drawn at the edge, named in the legend.
---
--- A parallel run's candidates are iterations "R.K" (candidate K of round
--- R): `iteration` is that string, `round` R and `candidate` K; charts draw
--- a round's candidates one above the other at x = R.
local numfmt = require "beat.numfmt"

local M = {}

M.VERSION = 1

local abs, floor, ceil, log = math.abs, math.floor, math.ceil, math.log
local fmt = numfmt.format

-- Reading a run -------------------------------------------------------------------------------

local KEPT = { keep = true, pass = true }
local NO_SCORE_MARK = { crash = "crash", fail = "crash", pass = "pass" }

-- "val_loss 0.01196, params 37" → {val_loss = 0.01196, params = 37}, {"val_loss", "params"};
-- "size 120.4 KB" reads as 120.4. nil when any part is not `name number [unit]`.
local function parse_score_text(text)
  if type(text) ~= "string" or text == "" or text:match("^infeasible") then return nil end
  local values, names = {}, {}
  for part in (text .. ","):gmatch("%s*(.-)%s*,") do
    local tokens = {}
    for tok in part:gmatch("%S+") do tokens[#tokens + 1] = tok end
    local at
    for i = 2, #tokens do
      local t = tokens[i]:gsub("%%$", "")
      if numfmt.number(t) then at = i break end
    end
    if not at or #tokens > at + 1 then return nil end
    local unit = tokens[at + 1]
    if unit and (unit:match("^[%d%+%-<>=≈]") or unit:find(":", 1, true)) then return nil end
    local name = table.concat(tokens, " ", 1, at - 1)
    if name:find(":", 1, true) then return nil end
    local v = numfmt.number((tokens[at]:gsub("%%$", "")))
    if v ~= v then return nil end
    if values[name] == nil then names[#names + 1] = name end
    values[name] = v
  end
  if #names == 0 then return nil end
  return values, names
end

local function values_from_table(t)
  local values, names = {}, {}
  for k, v in pairs(t) do
    local n = numfmt.number(type(v) == "table" and v.value or v)
    if type(k) == "string" and n and n == n then
      values[k] = n
      names[#names + 1] = k
    end
  end
  table.sort(names)
  return values, names
end

local function objective_of(config)
  config = type(config) == "table" and config or {}
  local obj = config.objective
  if type(obj) == "table" and type(obj.specs) == "table" then
    local metrics = {}
    for _, s in ipairs(obj.specs) do
      if type(s) == "table" and type(s.name) == "string" then
        metrics[#metrics + 1] = { name = s.name, direction = s.direction }
      end
    end
    return { kind = type(obj.kind) == "string" and obj.kind or "single", metrics = metrics }
  end
  if config.metric or config.direction or config.eval then
    return { kind = "single", metrics = { { name = config.metric or "score",
      direction = config.direction or "minimize" } } }
  end
  return { kind = "none", metrics = {} }
end

-- An iteration id of a decision record: n (an integer), or "R.K" for
-- candidate K of round R of a parallel run; returns the id, R and K (nil
-- for a plain iteration), or nil for anything else.
local function iteration_id(v)
  local n = math.tointeger(v)
  if n and type(v) == "number" then return n, n, nil end
  if type(v) ~= "string" then return nil end
  local r, k = v:match("^(%d+)%.(%d+)$")
  if r then return v, math.tointeger(tonumber(r)), math.tointeger(tonumber(k)) end
  n = math.tointeger(tonumber(v:match("^%d+$")))
  if n then return n, n, nil end
  return nil
end

local function front_list(v)
  if type(v) ~= "table" then return nil end
  local out = {}
  for _, x in ipairs(v) do
    local n = type(x) == "table" and (x.iteration or (type(x.data) == "table" and x.data.iteration)) or x
    n = math.tointeger(tonumber(n))
    if n then out[#out + 1] = n end
  end
  return out
end

-- Whether a is at least as good as b on every metric and better on one.
local function dominates(a, b, specs)
  local better = false
  for _, s in ipairs(specs) do
    local x, y = a[s.name], b[s.name]
    if x == nil or y == nil then return false end
    if s.direction == "maximize" then x, y = -x, -y end
    if x > y then return false end
    if x < y then better = true end
  end
  return better
end

--- The run model from a run's journal records (see the top of this file).
---@param records table[] the journal's records, in order
---@param info? {id?: string, dir?: string, journal?: string, warning?: string}
---@return table model
function M.model(records, info)
  info = info or {}
  local start, finish, front
  local by_iter, iters = {}, {}
  local prev_time
  local warnings = {}
  if info.warning then warnings[#warnings + 1] = info.warning end
  for _, r in ipairs(records) do
    if r.event == "run_start" then
      start = start or r
      prev_time = r.time
    elseif r.event == "decision" and iteration_id(r.iteration) then
      local n, round, cand = iteration_id(r.iteration)
      local it = { iteration = n, round = round, candidate = cand, status = tostring(r.status or "?"),
        score_text = r.score_text, best_text = r.best_text, summary = r.summary, snapshot = r.snapshot,
        cost_usd = tonumber(r.cost_usd), time = tonumber(r.time), _rec = r }
      it.duration_s = tonumber(r.duration_s)
      if it.duration_s == nil and it.time and prev_time then it.duration_s = it.time - prev_time end
      prev_time = it.time or prev_time
      if not by_iter[n] then iters[#iters + 1] = it else
        for i, x in ipairs(iters) do if x.iteration == n then iters[i] = it end end
      end
      by_iter[n] = it
    elseif r.event == "run_end" or r.event == "interrupted" then
      finish = r
    end
    if r.front ~= nil then front = front_list(r.front) or front end
  end
  table.sort(iters, function(a, b)
    if a.round ~= b.round then return a.round < b.round end
    return (a.candidate or 0) < (b.candidate or 0)
  end)

  local config = start and start.config
  local objective = objective_of(config)
  local names, seen = {}, {}
  local function add_name(n) if not seen[n] then seen[n] = true names[#names + 1] = n end end
  for _, m in ipairs(objective.metrics) do add_name(m.name) end
  local single = objective.kind == "single" or objective.kind == "weighted"

  for _, it in ipairs(iters) do
    local r = it._rec
    it._rec = nil
    local values, vnames
    if type(r.metrics) == "table" then values, vnames = values_from_table(r.metrics)
    elseif type(r.score) == "table" then values, vnames = values_from_table(r.score)
    else values, vnames = parse_score_text(r.score_text) end
    values, vnames = values or {}, vnames or {}
    local scalar = numfmt.number(r.score)
    if type(r.score) ~= "table" and scalar ~= nil and scalar == scalar then
      it.score = scalar
      -- the scalar is exact where the text is rounded
      local name = objective.kind == "weighted" and (vnames[1] or "weighted score")
        or (single and objective.metrics[1] and objective.metrics[1].name) or vnames[1] or "score"
      if values[name] == nil then table.insert(vnames, 1, name) end
      values[name] = scalar
    end
    for _, n in ipairs(vnames) do add_name(n) end
    it.values = values
    it.kept = KEPT[it.status] or false
    it.baseline = it.status == "baseline"
    it.infeasible = type(r.score_text) == "string" and r.score_text:match("^infeasible") ~= nil or nil
  end

  -- a metric seen only in text of another shape is not charted alone
  local metrics = {}
  for _, n in ipairs(names) do
    for _, it in ipairs(iters) do
      if it.values[n] ~= nil then metrics[#metrics + 1] = n break end
    end
  end

  if objective.kind == "pareto" then
    if not front then
      local specs = objective.metrics
      local cand = {}
      for _, it in ipairs(iters) do
        if it.kept or it.baseline then cand[#cand + 1] = it end
      end
      front = {}
      for i, a in ipairs(cand) do
        local out = false
        for j, b in ipairs(cand) do
          if i ~= j and dominates(b.values, a.values, specs) then out = true break end
        end
        if not out and next(a.values) then front[#front + 1] = a.iteration end
      end
    end
    for _, n in ipairs(front) do if by_iter[n] then by_iter[n].front = true end end
  else
    front = nil
  end

  local model = {
    version = M.VERSION, id = (start and start.id) or info.id, dir = info.dir, journal = info.journal,
    strategy = start and start.strategy, cwd = start and start.cwd,
    status = finish and finish.status or "unfinished", reason = finish and finish.reason,
    started = start and start.time, ended = finish and finish.time,
    elapsed = finish and tonumber(finish.elapsed) or (start and prev_time and prev_time - start.time) or nil,
    cost_usd = finish and tonumber(finish.cost_usd) or nil,
    baseline_text = finish and finish.baseline_score, best_text = finish and finish.best_score,
    objective = objective, metrics = metrics, iterations = iters, front = front, warnings = warnings,
  }
  if not model.cost_usd then
    local c = 0
    for _, it in ipairs(iters) do c = c + (it.cost_usd or 0) end
    model.cost_usd = c
  end
  if not model.baseline_text and iters[1] and iters[1].baseline then model.baseline_text = iters[1].score_text end
  if not model.best_text then
    for i = #iters, 1, -1 do
      if iters[i].best_text then model.best_text = iters[i].best_text break end
    end
  end
  if not start then warnings[#warnings + 1] = "the journal has no run_start record" end
  return model
end

--- Reads the run directory dir (its journal.jsonl) into the run model.
---@param dir string
---@return table|nil model, string? err
function M.load(dir)
  if type(dir) ~= "string" then error("beat.report.load: dir must be a path, got " .. type(dir), 2) end
  local journal = require "beat.journal"
  local j, err = journal.open(dir)
  if not j then return nil, err end
  local recs, warning = j:records()
  local model = M.model(recs, { id = j.id, dir = dir, journal = j.path, warning = warning })
  -- a run without an end record is running, paused or crashed: its process says which
  local st = require("beat.runs.status").inspect(dir)
  if model.status == "unfinished" or st.alive then model.status, model.reason = st.state, st.reason end
  return model
end

-- JSON ---------------------------------------------------------------------------------------

local json_value

local function json_string(s)
  return require("cjson").encode(require("beat.journal").utf8_clean(s))
end

local function is_array(t)
  if getmetatable(t) == "array" then return true end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and #t == n
end

function json_value(v, out)
  local t = type(v)
  if t == "nil" then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = json_string(tostring(v):gsub("^%-?nan$", "nan"))
    elseif math.type(v) == "integer" then out[#out + 1] = ("%d"):format(v)
    else
      local s = ("%.15g"):format(v)
      if tonumber(s) ~= v then s = ("%.17g"):format(v) end
      out[#out + 1] = s
    end
  elseif t == "string" then out[#out + 1] = json_string(v)
  elseif t == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        json_value(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = json_string(k)
        out[#out + 1] = ":"
        local x = v[k]
        if x == nil then x = v[tonumber(k)] end
        json_value(x, out)
      end
      out[#out + 1] = "}"
    end
  else
    out[#out + 1] = json_string("<" .. t .. ">")
  end
end

local function arr(t) return setmetatable(t or {}, { __metatable = "array" }) end

--- The run model as one JSON document (lists stay lists when empty).
---@param model table
---@return string
function M.json(model)
  local m = {}
  for k, v in pairs(model) do m[k] = v end
  m.metrics = arr({ table.unpack(model.metrics) })
  m.iterations = arr({ table.unpack(model.iterations) })
  m.warnings = arr({ table.unpack(model.warnings) })
  if model.front then m.front = arr({ table.unpack(model.front) }) end
  m.objective = { kind = model.objective.kind, metrics = arr({ table.unpack(model.objective.metrics) }) }
  local out = {}
  json_value(m, out)
  return table.concat(out)
end

-- Scales --------------------------------------------------------------------------------------

local function quantile(sorted, q)
  local pos = 1 + (#sorted - 1) * q
  local lo = floor(pos)
  local frac = pos - lo
  if lo >= #sorted then return sorted[#sorted] end
  return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac
end

local function log10(x) return log(x, 10) end

-- 1-2-5 steps: the nice step near span/n.
local function nice_step(span, n)
  local raw = span / n
  local p = 10 ^ floor(log10(raw))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if raw <= m * p * 1.0000001 then return m * p end
  end
  return 10 * p
end

-- Tick values on a log axis from lo to hi (both > 0): powers of ten and
-- their 2 and 5 multiples, thinned to at most `max`; bounds widened to ticks.
local function log_ticks(lo, hi, max)
  local cands = {}
  for e = floor(log10(lo)) - 1, ceil(log10(hi)) + 1 do
    for _, m in ipairs { 1, 2, 5 } do cands[#cands + 1] = m * 10 ^ e end
  end
  local function fix(x) return tonumber(("%.12g"):format(x)) end
  local tlo, thi = lo, hi
  for _, c in ipairs(cands) do
    if c <= lo * (1 + 1e-9) then tlo = fix(c) end
  end
  for i = #cands, 1, -1 do
    if cands[i] >= hi * (1 - 1e-9) then thi = fix(cands[i]) end
  end
  for _, sub in ipairs { { 1, 2, 5 }, { 1 }, "thin" } do
    local ticks = {}
    for e = floor(log10(tlo)) - 1, ceil(log10(thi)) + 1 do
      for _, m in ipairs(type(sub) == "table" and sub or { 1 }) do
        local v = fix(m * 10 ^ e)
        if v >= tlo * (1 - 1e-9) and v <= thi * (1 + 1e-9) then ticks[#ticks + 1] = v end
      end
    end
    if sub == "thin" then
      local every = ceil(#ticks / max)
      local out = {}
      for i = 1, #ticks, every do out[#out + 1] = ticks[i] end
      ticks = out
    end
    if #ticks <= max then
      if #ticks < 2 then ticks = { tlo, thi } end
      return tlo, thi, ticks
    end
  end
end

--- An axis for values: {lo, hi, log, ticks, labels, clipped_above, clipped_below}.
--- Values far outside the rest (beyond 3 interquartile ranges of the
--- quartiles, on a log scale for positive data) and non-finite ones are left
--- outside [lo, hi]. opts: max_ticks, log (true/false/nil = automatic),
--- no_clip.
local function make_scale(vals, opts)
  opts = opts or {}
  local finite = {}
  for _, v in ipairs(vals) do
    if v == v and v ~= math.huge and v ~= -math.huge then finite[#finite + 1] = v end
  end
  table.sort(finite)
  local positive = #finite > 0 and finite[1] > 0
  local keep = finite
  if #finite >= 4 and not opts.no_clip then
    local tf = positive and log10 or function(x) return x end
    local t = {}
    for i, v in ipairs(finite) do t[i] = tf(v) end
    local q1, q3 = quantile(t, 0.25), quantile(t, 0.75)
    local spread = q3 - q1
    if positive and spread < 0.5 then spread = 0.5 end
    if spread > 0 then
      keep = {}
      for i, v in ipairs(finite) do
        if t[i] >= q1 - 3 * spread and t[i] <= q3 + 3 * spread then keep[#keep + 1] = v end
      end
    end
  end
  local lo, hi
  if #keep == 0 then lo, hi = 0, 1 else lo, hi = keep[1], keep[#keep] end
  local max_ticks = opts.max_ticks or 6
  local use_log = opts.log
  if use_log == nil then use_log = lo > 0 and hi / lo >= 10 end
  if use_log and not (lo > 0) then use_log = false end
  local ticks
  if use_log then
    lo, hi, ticks = log_ticks(lo, hi, max_ticks)
  else
    if lo == hi then
      local pad = lo ~= 0 and abs(lo) * 0.1 or 1
      lo, hi = lo - pad, hi + pad
    end
    local step = nice_step(hi - lo, max_ticks - 1)
    lo, hi = floor(lo / step + 1e-9) * step, ceil(hi / step - 1e-9) * step
    ticks = {}
    local n = floor((hi - lo) / step + 0.5)
    for i = 0, n do
      local v = tonumber(("%.12g"):format(lo + i * step))
      ticks[#ticks + 1] = v
    end
  end
  return { lo = lo, hi = hi, log = use_log, ticks = ticks, labels = numfmt.distinct(ticks) }
end

-- Position of v on scale s in [0, 1] (outside when clipped; nil for NaN).
local function frac(s, v)
  if v ~= v then return nil end
  if v == math.huge then return 2 end
  if v == -math.huge then return -1 end
  if s.log then
    if v <= 0 then return -1 end
    return (log10(v) - log10(s.lo)) / (log10(s.hi) - log10(s.lo))
  end
  return (v - s.lo) / (s.hi - s.lo)
end

local EPS = 1e-9

-- Charts (shared by the terminal and SVG renderers) ---------------------------------------------

local function metric_direction(model, name)
  for _, m in ipairs(model.objective.metrics) do
    if m.name == name then return m.direction end
  end
  if model.objective.kind ~= "pareto" and model.objective.metrics[1] and #model.metrics == 1 then
    return model.objective.metrics[1].direction
  end
end

local function iter_label(it)
  return it.baseline and "baseline" or ("iteration " .. it.iteration)
end

-- The tooltip/description of one iteration.
local function describe_iter(it, name)
  local v = name and it.values[name]
  local parts = { ("%s: %s"):format(iter_label(it), it.status) }
  if it.score_text then parts[#parts + 1] = it.score_text
  elseif v then parts[#parts + 1] = ("%s %s"):format(name, fmt(v)) end
  if it.front then parts[#parts + 1] = "on the Pareto front" end
  local s = table.concat(parts, ", ")
  if it.summary and it.summary ~= "" and it.summary ~= it.score_text then s = s .. " — " .. it.summary end
  return s
end

-- One chart per metric: points, best-so-far steps, marks for iterations without a score.
local function metric_chart(model, name, max_ticks)
  local iters = model.iterations
  local pareto = model.objective.kind == "pareto"
  local vals = {}
  for _, it in ipairs(iters) do
    if it.values[name] ~= nil then vals[#vals + 1] = it.values[name] end
  end
  local ys = make_scale(vals, { max_ticks = max_ticks })
  local xmin, xmax = iters[1] and iters[1].round or 0, iters[#iters] and iters[#iters].round or 1
  if xmax <= xmin then xmax = xmin + 1 end
  local xs = { lo = xmin, hi = xmax, integer = true }
  local points, marks, best, clipped = {}, {}, {}, {}
  local cur
  for _, it in ipairs(iters) do
    local v = it.values[name]
    if v ~= nil then
      local f = frac(ys, v)
      local clip = f > 1 + EPS and "above" or (f < -EPS and "below") or nil
      local kind = it.baseline and "baseline" or (it.kept and "kept" or "discarded")
      local p = { x = it.round, y = v, fy = f, kind = kind, clip = clip, front = it.front,
        it = it, tip = describe_iter(it, name) }
      points[#points + 1] = p
      if clip then clipped[#clipped + 1] = p end
      if (it.kept or it.baseline) and not pareto then cur = v end
    else
      marks[#marks + 1] = { x = it.round, it = it,
        kind = NO_SCORE_MARK[it.status] or (it.infeasible and "infeasible") or "noscore",
        tip = describe_iter(it, name) }
    end
    if cur ~= nil then best[#best + 1] = { x = it.round, y = cur, fy = frac(ys, cur) } end
  end
  local dir = metric_direction(model, name)
  return {
    kind = "iterations", name = name, direction = dir, pareto = pareto,
    title = ("%s per iteration%s"):format(name, dir == "minimize" and ", lower is better"
      or dir == "maximize" and ", higher is better" or ""),
    xs = xs, ys = ys, points = points, marks = marks, best = best, clipped = clipped,
  }
end

-- A Pareto run's trade-off: the second metric against the first.
local function pareto_chart(model, max_ticks)
  local a, b = model.metrics[1], model.metrics[2]
  local pts, xv, yv = {}, {}, {}
  for _, it in ipairs(model.iterations) do
    local x, y = it.values[a], it.values[b]
    if x and y then
      pts[#pts + 1] = { x = x, y = y, it = it }
      xv[#xv + 1], yv[#yv + 1] = x, y
    end
  end
  local xs = make_scale(xv, { max_ticks = max_ticks })
  local ys = make_scale(yv, { max_ticks = max_ticks })
  local points, hidden = {}, {}
  for _, p in ipairs(pts) do
    local fx, fy = frac(xs, p.x), frac(ys, p.y)
    if fx < -EPS or fx > 1 + EPS or fy < -EPS or fy > 1 + EPS then
      hidden[#hidden + 1] = p
    else
      local it = p.it
      points[#points + 1] = { x = p.x, y = p.y, fx = fx, fy = fy, front = it.front,
        kind = it.baseline and "baseline" or (it.kept and "kept" or "discarded"), it = it,
        tip = describe_iter(it) }
    end
  end
  local function word(name)
    local d = metric_direction(model, name)
    return d == "minimize" and (name .. ", lower is better") or d == "maximize" and (name .. ", higher is better") or name
  end
  local function paren(name)
    local d = metric_direction(model, name)
    return d and ("%s (%s is better)"):format(name, d == "minimize" and "lower" or "higher") or name
  end
  return { kind = "pareto", title = ("Pareto front: %s against %s"):format(paren(b), paren(a)), xname = a, yname = b,
    xlabel = word(a), ylabel = word(b), xs = xs, ys = ys, points = points, hidden = hidden }
end

local function charts_of(model, max_ticks)
  local charts = {}
  for _, name in ipairs(model.metrics) do charts[#charts + 1] = metric_chart(model, name, max_ticks) end
  if model.objective.kind == "pareto" and #model.metrics >= 2 then
    charts[#charts + 1] = pareto_chart(model, max_ticks)
  end
  return charts
end

local function front_text(model)
  if not model.front then return nil end
  local by = {}
  for _, it in ipairs(model.iterations) do by[it.iteration] = it end
  local parts = {}
  for _, n in ipairs(model.front) do
    local it = by[n]
    parts[#parts + 1] = ("%s (%s)"):format(it and iter_label(it) or ("iteration " .. n), it and it.score_text or "?")
  end
  return ("Pareto front (%d): %s"):format(#model.front, table.concat(parts, "; "))
end

local function clip_text(c, ys)
  local above, below = {}, {}
  for _, p in ipairs(c.clipped) do
    local t = p.clip == "above" and above or below
    t[#t + 1] = ("%s = %s"):format(p.it and p.it.iteration or p.x, fmt(p.y))
  end
  local out = {}
  local function list(t)
    if #t > 6 then
      local n = #t
      t = { table.unpack(t, 1, 6) }
      t[#t + 1] = ("and %d more"):format(n - 6)
    end
    return table.concat(t, ", ")
  end
  if #above > 0 then
    out[#out + 1] = ("▲ off the scale above %s (drawn at the top edge): iteration %s"):format(fmt(ys.hi), list(above))
  end
  if #below > 0 then
    out[#out + 1] = ("▼ off the scale below %s (drawn at the bottom edge): iteration %s"):format(fmt(ys.lo), list(below))
  end
  return out
end

local function summary_lines(model)
  local lines = {}
  local head = ("run %s"):format(model.id or "?")
  if model.strategy then head = head .. (" (%s)"):format(model.strategy) end
  head = head .. ": " .. model.status .. (model.reason and (" — " .. model.reason) or "")
  lines[1] = head
  local parts = {}
  if model.best_text then
    parts[#parts + 1] = ("best %s"):format(model.best_text)
      .. (model.baseline_text and (" (baseline %s)"):format(model.baseline_text) or "")
  end
  local n, rounds, cands = 0, {}, 0
  for _, it in ipairs(model.iterations) do
    if not (it.baseline or it.iteration == 0) then
      if not rounds[it.round] then rounds[it.round], n = true, n + 1 end
      if it.candidate then cands = cands + 1 end
    end
  end
  parts[#parts + 1] = ("%d iteration%s"):format(n, n == 1 and "" or "s")
    .. (cands > 0 and (" (%d candidate%s)"):format(cands, cands == 1 and "" or "s") or "")
  if model.elapsed then parts[#parts + 1] = require("beat.duration").format(model.elapsed) end
  if model.cost_usd and model.cost_usd > 0 then parts[#parts + 1] = ("$%.2f"):format(model.cost_usd) end
  lines[2] = table.concat(parts, "; ")
  return lines
end

-- Terminal ----------------------------------------------------------------------------------

local GLYPH = {
  kept = "●", discarded = "○", baseline = "◆", front = "★", above = "▲", below = "▼",
  best = "─", crash = "×", pass = "✓", noscore = "∅", infeasible = "∅",
}
local COLOR = {
  kept = "32;1", discarded = "2", baseline = "34;1", front = "35;1", above = "33;1", below = "33;1",
  best = "36", crash = "31;1", pass = "32;1", noscore = "33", infeasible = "33", axis = "2", title = "1",
}
local LEGEND = {
  kept = "kept", discarded = "discarded", baseline = "baseline", front = "on the Pareto front",
  best = "best so far", crash = "crash/fail (no score)", pass = "pass", noscore = "no score",
  infeasible = "infeasible (no score)",
  above = "off the scale (top)", below = "off the scale (bottom)",
}

local function ulen(s) return utf8.len(s) or #s end

local function paint(s, cls, color)
  if not color or not cls or not COLOR[cls] then return s end
  return ("\27[%sm%s\27[0m"):format(COLOR[cls], s)
end

-- Words joined with sep, wrapped at width.
local function wrap(words, width, sep, indent)
  local lines, cur, curlen = {}, "", 0
  indent = indent or ""
  for _, w in ipairs(words) do
    local wl = ulen(w.plain or w)
    if curlen > 0 and curlen + ulen(sep) + wl > width then
      lines[#lines + 1] = cur
      cur, curlen = indent, ulen(indent)
    elseif curlen > 0 then
      cur, curlen = cur .. sep, curlen + ulen(sep)
    end
    cur, curlen = cur .. (w.text or w), curlen + wl
  end
  if curlen > 0 then lines[#lines + 1] = cur end
  return lines
end

-- Cuts a plain string to width characters.
local function cut(s, width)
  if ulen(s) <= width then return s end
  local out, n = {}, 0
  for _, c in utf8.codes(s) do
    n = n + 1
    if n > width - 1 then break end
    out[#out + 1] = utf8.char(c)
  end
  return table.concat(out) .. "…"
end

-- Text wrapped at width (continuation lines indented); a word longer than a line is cut.
local function wrap_text(s, width)
  local words = {}
  for w in s:gmatch("%S+") do words[#words + 1] = w end
  local out = wrap(words, width, " ", "  ")
  for i, l in ipairs(out) do out[i] = cut(l, width) end
  return out
end

local function render_terminal_chart(c, width, height, color)
  local lines = {}
  local ys = c.ys
  local labw = 0
  for _, l in ipairs(ys.labels) do if ulen(l) > labw then labw = ulen(l) end end
  -- x ticks
  local xlabels, xticks
  if c.kind == "iterations" then
    xticks = {}
  else
    xticks, xlabels = c.xs.ticks, c.xs.labels
  end
  local rmargin = 3
  if xlabels then for _, l in ipairs(xlabels) do rmargin = math.max(rmargin, ulen(l)) end end
  local plotw = width - labw - 2 - rmargin
  if plotw < 10 then plotw = 10 end
  local H = height
  local function col(x)
    local f
    if c.kind == "iterations" then f = (x - c.xs.lo) / (c.xs.hi - c.xs.lo) else f = frac(c.xs, x) end
    return 1 + floor(f * (plotw - 2) + 0.5)
  end
  local function row(f) return floor((1 - f) * (H - 1) + 0.5) end
  if c.kind == "iterations" then
    local span = c.xs.hi - c.xs.lo
    local maxl = #tostring(c.xs.hi) + 2
    local fit = math.max(1, floor(plotw / maxl))
    local step = nice_step(span, math.min(fit, 10))
    if step < 1 then step = 1 end
    step = floor(step + 0.5)
    xticks, xlabels = {}, {}
    local first = ceil(c.xs.lo / step) * step
    for x = first, c.xs.hi, step do
      xticks[#xticks + 1] = x
      xlabels[#xlabels + 1] = tostring(x)
    end
  end
  -- the grid
  local grid = {}
  for r = 0, H - 1 do
    grid[r] = {}
    for k = 0, plotw - 1 do grid[r][k] = { " " } end
  end
  local used = {}
  if c.best then
    for i, b in ipairs(c.best) do
      local to = c.best[i + 1] and col(c.best[i + 1].x) - 1 or col(c.xs.hi)
      if b.fy and b.fy >= -EPS and b.fy <= 1 + EPS then
        local r = row(b.fy)
        for k = col(b.x), math.min(to, plotw - 1) do grid[r][k] = { GLYPH.best, "best" } end
      end
    end
  end
  local rank = { discarded = 1, baseline = 2, kept = 3, front = 4 }
  for _, p in ipairs(c.points) do
    local k = col(p.x)
    local fy = p.fy or frac(c.ys, p.y)
    local r, g, cls
    local kind = p.front and "front" or p.kind
    if fy > 1 + EPS then r, g, cls = 0, GLYPH.above, "above"
    elseif fy < -EPS then r, g, cls = H - 1, GLYPH.below, "below"
    else r, g, cls = row(fy), GLYPH[kind], kind end
    local key = r * 100000 + k
    if not used[key] or (rank[kind] or 0) > used[key] then
      used[key] = rank[kind] or 0
      grid[r][k] = { g, cls }
    end
  end
  -- rows with y labels
  local tickrow = {}
  for i, t in ipairs(ys.ticks) do
    local r = row(frac(ys, t))
    if r >= 0 and r < H and not tickrow[r] then tickrow[r] = ys.labels[i] end
  end
  lines[#lines + 1] = paint(cut(c.title .. (ys.log and " (log scale)" or ""), width), "title", color)
  for r = 0, H - 1 do
    local lab = tickrow[r]
    local prefix = lab and (string.rep(" ", labw - ulen(lab)) .. lab .. " ┤")
      or (string.rep(" ", labw) .. " │")
    local cells = {}
    for k = 0, plotw - 1 do cells[#cells + 1] = paint(grid[r][k][1], grid[r][k][2], color) end
    lines[#lines + 1] = paint(prefix, lab and "label" or "axis", color) .. table.concat(cells):gsub("%s+$", "")
    if not color then lines[#lines] = lines[#lines]:gsub("%s+$", "") end
  end
  -- x axis: ticks, and iterations without a score marked on it
  local axis = {}
  for k = 0, plotw - 1 do axis[k] = { "─" } end
  for _, x in ipairs(xticks) do
    local k = col(x)
    if k >= 0 and k < plotw then axis[k] = { "┬" } end
  end
  for _, m in ipairs(c.marks or {}) do
    local k = col(m.x)
    if k >= 0 and k < plotw then axis[k] = { GLYPH[m.kind], m.kind } end
  end
  local acells = {}
  for k = 0, plotw - 1 do acells[#acells + 1] = paint(axis[k][1], axis[k][2], color) end
  lines[#lines + 1] = string.rep(" ", labw) .. " └" .. table.concat(acells)
  local lab = {}
  local total = labw + 2 + plotw + rmargin
  for k = 1, total do lab[k] = " " end
  local last_end = 0
  for i, x in ipairs(xticks) do
    local s = xlabels[i]
    local start = labw + 2 + col(x) - floor((ulen(s) - 1) / 2) + 1
    if start > last_end + 1 and start + ulen(s) - 1 <= total then
      for j = 1, #s do lab[start + j - 1] = s:sub(j, j) end
      last_end = start + #s - 1
    end
  end
  lines[#lines + 1] = (table.concat(lab):gsub("%s+$", ""))
  if c.kind == "iterations" then
    lines[#lines + 1] = string.rep(" ", labw + 2) .. "iteration"
  else
    lines[#lines + 1] = cut(string.rep(" ", labw + 2) .. "x: " .. c.xlabel, width)
  end
  -- legend: only what the chart shows
  local present = {}
  for _, p in ipairs(c.points) do
    present[p.front and "front" or p.kind] = true
    if p.clip then present[p.clip] = true end
  end
  for _, m in ipairs(c.marks or {}) do present[m.kind] = true end
  if c.best and #c.best > 0 then present.best = true end
  local words = {}
  for _, k in ipairs { "kept", "discarded", "baseline", "front", "best", "crash", "pass", "noscore", "infeasible",
                       "above", "below" } do
    if present[k] then
      local g = GLYPH[k]
      words[#words + 1] = { text = paint(g, k, color) .. " " .. LEGEND[k], plain = g .. " " .. LEGEND[k] }
    end
  end
  for _, l in ipairs(wrap(words, width, "  ")) do lines[#lines + 1] = l end
  if c.clipped then
    for _, t in ipairs(clip_text(c, ys)) do
      for _, l in ipairs(wrap_text(t, width)) do lines[#lines + 1] = l end
    end
  end
  if c.hidden and #c.hidden > 0 then
    lines[#lines + 1] = cut(("%d point%s off the scale not shown"):format(#c.hidden, #c.hidden == 1 and "" or "s"), width)
  end
  return lines
end

--- The run as text for a terminal: a summary, then one chart per metric
--- (and a Pareto run's front). Every line fits `width` columns.
---@param model table from load/model
---@param opts? {width?: integer, height?: integer, color?: boolean}
---@return string
function M.terminal(model, opts)
  opts = opts or {}
  local width = opts.width or 80
  if math.type(width) ~= "integer" or width < 40 then
    error("beat.report.terminal: opts.width must be an integer >= 40, got " .. tostring(opts.width), 2)
  end
  local height = opts.height or 14
  if math.type(height) ~= "integer" or height < 5 then
    error("beat.report.terminal: opts.height must be an integer >= 5, got " .. tostring(opts.height), 2)
  end
  local lines = {}
  for _, l in ipairs(summary_lines(model)) do
    for _, w in ipairs(wrap_text(l, width)) do lines[#lines + 1] = w end
  end
  local charts = charts_of(model, height >= 10 and 6 or 4)
  if #charts == 0 then
    lines[#lines + 1] = ""
    local marks = {}
    for _, it in ipairs(model.iterations) do
      local k = NO_SCORE_MARK[it.status] or "noscore"
      marks[#marks + 1] = { text = paint(GLYPH[k], k, opts.color) .. tostring(it.iteration), plain = GLYPH[k] .. it.iteration }
    end
    if #marks == 0 then
      lines[#lines + 1] = "no iterations recorded yet"
    else
      lines[#lines + 1] = "no scores to chart; iterations: (× crash/fail, ✓ pass, ∅ other)"
      for _, l in ipairs(wrap(marks, width, " ")) do lines[#lines + 1] = l end
    end
  end
  for _, c in ipairs(charts) do
    lines[#lines + 1] = ""
    for _, l in ipairs(render_terminal_chart(c, width, height, opts.color)) do lines[#lines + 1] = l end
  end
  local ft = front_text(model)
  if ft then
    lines[#lines + 1] = ""
    for _, w in ipairs(wrap_text(ft, width)) do lines[#lines + 1] = w end
  end
  for _, w in ipairs(model.warnings) do
    for _, l in ipairs(wrap_text("warning: " .. w, width)) do lines[#lines + 1] = l end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- SVG -------------------------------------------------------------------------------------------

local function esc(s)
  s = require("beat.journal").utf8_clean(tostring(s))
  -- characters XML 1.0 does not allow
  s = s:gsub("[%z\1-\8\11\12\14-\31]", "")
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function num(x) return ("%.1f"):format(x) end

local SVG_STYLE = [[
.chart text{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:12px;fill:#333}
.chart .title{font-size:14px;font-weight:600}
.chart .grid{stroke:#e4e4e4;stroke-width:1}
.chart .axis{stroke:#888;stroke-width:1}
.chart .best{fill:none;stroke:#1f77b4;stroke-width:2;stroke-linejoin:round}
.chart .point{stroke-width:1.5}
.chart .kept{fill:#2a9d4b;stroke:#1d6e35}
.chart .discarded{fill:#fff;stroke:#999}
.chart .baseline{fill:#1f4fb4;stroke:#12306e}
.chart .front{fill:#d6a21e;stroke:#8a6510}
.chart .clipped{stroke-dasharray:2 1}
.chart .crash{stroke:#c0392b;stroke-width:2}
.chart .noscore,.chart .infeasible{stroke:#b7950b;stroke-width:2}
.chart .pass{stroke:#2a9d4b;stroke-width:2}
.chart .note{fill:#8a6510}
]]

local SVG_W, SVG_H = 760, 340
local M_L, M_R, M_T, M_B = 72, 24, 34, 66

-- A marker shape for a point at (x, y).
local function marker(kind, x, y, r)
  if kind == "baseline" then
    return ('<path d="M%s %sl%s %sl%s %sl%s %sz"'):format(num(x), num(y - r - 1), num(r + 1), num(r + 1),
      num(-(r + 1)), num(r + 1), num(-(r + 1)), num(-(r + 1)))
  elseif kind == "front" then
    local pts = {}
    for i = 0, 9 do
      local a = -math.pi / 2 + i * math.pi / 5
      local rr = i % 2 == 0 and r + 2 or (r + 2) * 0.45
      pts[#pts + 1] = num(x + rr * math.cos(a)) .. "," .. num(y + rr * math.sin(a))
    end
    return ('<polygon points="%s"'):format(table.concat(pts, " "))
  elseif kind == "above" then
    return ('<path d="M%s %sl%s %sl%s 0z"'):format(num(x), num(y - 1), num(r + 1), num(2 * r + 1), num(-2 * (r + 1)))
  elseif kind == "below" then
    return ('<path d="M%s %sl%s %sl%s 0z"'):format(num(x), num(y + 1), num(r + 1), num(-(2 * r + 1)), num(-2 * (r + 1)))
  end
  return ('<circle cx="%s" cy="%s" r="%s"'):format(num(x), num(y), num(r))
end

local function svg_chart(c, y0)
  local out = {}
  local W, H = SVG_W, SVG_H
  local pw, ph = W - M_L - M_R, H - M_T - M_B
  local function X(x)
    local f
    if c.kind == "iterations" then f = (x - c.xs.lo) / (c.xs.hi - c.xs.lo) else f = frac(c.xs, x) end
    return M_L + 8 + f * (pw - 16)
  end
  local function Y(f) return M_T + 6 + (1 - f) * (ph - 12) end
  local function add(s) out[#out + 1] = s end
  local clipnotes = c.clipped and clip_text(c, c.ys) or {}
  local notes = #clipnotes + (c.hidden and #c.hidden > 0 and 1 or 0)
  add(('<g class="chart %s" transform="translate(0 %d)" data-metric="%s">'):format(
    c.kind, y0, esc(c.name or c.yname or "")))
  add(('<text class="title" x="%d" y="20">%s</text>'):format(M_L, esc(c.title .. (c.ys.log and " (log scale)" or ""))))
  -- y grid and labels
  for i, t in ipairs(c.ys.ticks) do
    local y = Y(frac(c.ys, t))
    add(('<line class="grid" x1="%d" y1="%s" x2="%d" y2="%s"/>'):format(M_L, num(y), W - M_R, num(y)))
    add(('<text class="ylabel" x="%d" y="%s" text-anchor="end" dominant-baseline="middle">%s</text>')
      :format(M_L - 6, num(y), esc(c.ys.labels[i])))
  end
  -- x ticks
  local xticks, xlabels = {}, {}
  if c.kind == "iterations" then
    local span = c.xs.hi - c.xs.lo
    local step = nice_step(span, math.min(span, 12))
    if step < 1 then step = 1 end
    step = floor(step + 0.5)
    for x = ceil(c.xs.lo / step) * step, c.xs.hi, step do
      xticks[#xticks + 1], xlabels[#xlabels + 1] = x, tostring(x)
    end
  else
    xticks, xlabels = c.xs.ticks, c.xs.labels
  end
  local base = M_T + ph
  for i, x in ipairs(xticks) do
    local px = X(x)
    add(('<line class="axis" x1="%s" y1="%d" x2="%s" y2="%d"/>'):format(num(px), base, num(px), base + 5))
    add(('<text class="xlabel" x="%s" y="%d" text-anchor="middle">%s</text>'):format(num(px), base + 18, esc(xlabels[i])))
  end
  add(('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>'):format(M_L, M_T, M_L, base))
  add(('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>'):format(M_L, base, W - M_R, base))
  add(('<text class="xname" x="%s" y="%d" text-anchor="middle">%s</text>'):format(num(M_L + pw / 2), base + 34,
    esc(c.kind == "iterations" and "iteration" or c.xlabel)))
  if c.kind == "pareto" then
    add(('<text class="yname" transform="translate(14 %s) rotate(-90)" text-anchor="middle">%s</text>')
      :format(num(M_T + ph / 2), esc(c.ylabel)))
  end
  -- best so far: a step line
  if c.best and #c.best > 0 then
    local pts = {}
    for i, b in ipairs(c.best) do
      local f = math.max(0, math.min(1, b.fy or 0))
      local y = Y(f)
      if i > 1 then pts[#pts + 1] = num(X(b.x)) .. "," .. num(Y(math.max(0, math.min(1, c.best[i - 1].fy or 0)))) end
      pts[#pts + 1] = num(X(b.x)) .. "," .. num(y)
    end
    local lastb = c.best[#c.best]
    pts[#pts + 1] = num(X(c.xs.hi)) .. "," .. num(Y(math.max(0, math.min(1, lastb.fy or 0))))
    add(('<polyline class="best" points="%s"><title>best so far</title></polyline>'):format(table.concat(pts, " ")))
  end
  -- iterations without a score, on the x axis
  for _, m in ipairs(c.marks or {}) do
    local x = X(m.x)
    local d
    if m.kind == "pass" then
      d = ("M%s %dl3 4l6 -8"):format(num(x - 5), base)
    else
      d = ("M%s %dl8 8m0 -8l-8 8"):format(num(x - 4), base - 4)
    end
    add(('<path class="mark %s" d="%s"><title>%s</title></path>'):format(m.kind, d, esc(m.tip)))
  end
  -- points
  for _, p in ipairs(c.points) do
    local fy = p.fy or frac(c.ys, p.y)
    local shape = p.front and "front" or p.kind
    -- "point": an iteration's score; "pair": a Pareto chart's (metric, metric) point
    local cls = (c.kind == "iterations" and "point " or "pair ") .. p.kind .. (p.front and " front" or "")
    local y, tip = Y(math.max(0, math.min(1, fy))), p.tip
    if p.clip then
      shape = p.clip
      cls = cls .. " clipped"
      tip = tip .. (" (off the scale: %s)"):format(fmt(p.y))
    end
    local tag = (shape == "kept" or shape == "discarded") and "circle" or shape == "front" and "polygon" or "path"
    add(('%s class="%s" data-iteration="%s"><title>%s</title></%s>'):format(marker(shape, X(p.x), y, 4), cls,
      p.it.iteration, esc(tip), tag))
  end
  -- legend and notes
  local present = {}
  for _, p in ipairs(c.points) do present[p.front and "front" or p.kind] = true end
  for _, m in ipairs(c.marks or {}) do present[m.kind] = true end
  if c.best and #c.best > 0 then present.best = true end
  for _, p in ipairs(c.clipped or {}) do present[p.clip] = true end
  local lx, ly = M_L, H - 8
  for _, k in ipairs { "kept", "discarded", "baseline", "front", "best", "crash", "pass", "noscore", "infeasible",
                       "above", "below" } do
    if present[k] then
      if k == "best" then
        add(('<line class="best" x1="%d" y1="%d" x2="%d" y2="%d"/>'):format(lx, ly - 4, lx + 14, ly - 4))
      elseif k == "crash" or k == "noscore" or k == "infeasible" then
        add(('<path class="%s" d="M%d %dl8 8m0 -8l-8 8"/>'):format(k, lx + 3, ly - 8))
      elseif k == "pass" then
        add(('<path class="pass" d="M%d %dl3 4l6 -8"/>'):format(lx + 2, ly - 4))
      else
        add(marker(k, lx + 7, ly - 4, 4) .. (' class="legend %s"/>'):format((k == "above" or k == "below") and "discarded clipped" or k))
      end
      local label = LEGEND[k]
      add(('<text x="%d" y="%d">%s</text>'):format(lx + 20, ly, esc(label)))
      lx = lx + 28 + 7 * ulen(label)
    end
  end
  for i, t in ipairs(clipnotes) do
    add(('<text class="note" x="%d" y="%d">%s</text>'):format(M_L, H + 14 * i, esc(t)))
  end
  if c.hidden and #c.hidden > 0 then
    add(('<text class="note" x="%d" y="%d">%s</text>'):format(M_L, H + 14 * (#clipnotes + 1),
      esc(("%d point%s off the scale not shown"):format(#c.hidden, #c.hidden == 1 and "" or "s"))))
  end
  add("</g>")
  return table.concat(out, "\n"), H + 14 * notes + 10
end

local function svg_body(model)
  local charts = charts_of(model, 7)
  local parts, y = {}, 0
  for _, c in ipairs(charts) do
    local s, h = svg_chart(c, y)
    parts[#parts + 1] = s
    y = y + h
  end
  if #charts == 0 then
    parts[#parts + 1] = ('<g class="chart empty"><text x="%d" y="30">%s</text></g>'):format(M_L,
      esc(#model.iterations == 0 and "no iterations recorded yet" or "no scores to chart"))
    y = 50
  end
  return table.concat(parts, "\n"), math.max(y, 50)
end

--- The charts as a standalone SVG document (one chart per metric, stacked):
--- one element of class "point" per scored iteration with a <title>
--- tooltip, a "best" polyline, "mark" elements on the x axis for
--- iterations without a score.
---@param model table
---@return string
function M.svg(model)
  local body, h = svg_body(model)
  return table.concat({
    '<?xml version="1.0" encoding="UTF-8"?>',
    ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'):format(SVG_W, h, SVG_W, h),
    ("<title>%s</title>"):format(esc("beat run " .. tostring(model.id))),
    "<style>", SVG_STYLE, "</style>",
    ('<rect width="100%" height="100%" fill="#fff"/>'),
    body,
    "</svg>", "" }, "\n")
end

-- HTML --------------------------------------------------------------------------------------

local HTML_STYLE = [[
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px}
.summary{color:#444;margin:2px 0}
.meta{color:#666;font-size:13px}
.meta code{font-size:12px}
.charts svg{display:block;max-width:100%;height:auto;margin:12px 0}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.keep td.decision,tr.pass td.decision{color:#1d7a3b;font-weight:600}
tr.crash td.decision,tr.fail td.decision{color:#b03a2e;font-weight:600}
tr.discard td.decision{color:#777}
tr.baseline td.decision{color:#1f4fb4;font-weight:600}
.front{color:#8a6510}
.warning{color:#b03a2e}
]]

local function dur(s)
  if not s then return "" end
  return require("beat.duration").format(s)
end

--- A self-contained HTML page: the summary, the charts as inline SVG, the
--- iteration table. Nothing is fetched (inline CSS, no scripts, a
--- Content-Security-Policy that forbids loading anything).
---@param model table
---@return string
function M.html(model)
  local out = {}
  local function add(s) out[#out + 1] = s end
  local title = "beat run " .. tostring(model.id)
  add("<!DOCTYPE html>")
  add('<html lang="en"><head><meta charset="utf-8">')
  add([[<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">]])
  add('<meta name="viewport" content="width=device-width, initial-scale=1">')
  add(("<title>%s</title>"):format(esc(title)))
  add("<style>\n" .. HTML_STYLE .. SVG_STYLE .. "</style></head><body>")
  add(("<h1>%s</h1>"):format(esc(title)))
  for _, l in ipairs(summary_lines(model)) do add(('<p class="summary">%s</p>'):format(esc(l))) end
  local meta = {}
  if model.cwd then meta[#meta + 1] = ("work tree <code>%s</code>"):format(esc(model.cwd)) end
  if model.journal then meta[#meta + 1] = ("journal <code>%s</code>"):format(esc(model.journal)) end
  if model.started then meta[#meta + 1] = ("started %s"):format(esc(os.date("%Y-%m-%d %H:%M:%S", floor(model.started)))) end
  if #meta > 0 then add(('<p class="meta">%s</p>'):format(table.concat(meta, " · "))) end
  add('<section class="charts">')
  local body, h = svg_body(model)
  add(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">')
    :format(SVG_W, h, SVG_W, h, esc("scores of " .. title)))
  add(body)
  add("</svg></section>")
  local ft = front_text(model)
  if ft then add(('<p class="front">%s</p>'):format(esc(ft))) end
  add("<h2>Iterations</h2>")
  add('<table class="iterations"><thead><tr><th>iteration</th><th>decision</th><th>score</th><th>best</th>'
    .. '<th>duration</th><th>cost</th><th>reason</th></tr></thead><tbody>')
  for _, it in ipairs(model.iterations) do
    local score = it.score_text or (it.score and fmt(it.score)) or ""
    add(('<tr class="%s"><td class="num">%s</td><td class="decision">%s%s</td><td>%s</td><td>%s</td><td class="num">%s</td><td class="num">%s</td><td>%s</td></tr>')
      :format(esc(it.status), it.iteration, esc(it.baseline and "baseline" or it.status),
        it.front and " ★" or "", esc(score), esc(it.best_text or ""), esc(dur(it.duration_s)),
        it.cost_usd and it.cost_usd > 0 and ("$%.2f"):format(it.cost_usd) or "", esc(it.summary or "")))
  end
  add("</tbody></table>")
  for _, w in ipairs(model.warnings) do add(('<p class="warning">warning: %s</p>'):format(esc(w))) end
  add("</body></html>")
  return table.concat(out, "\n") .. "\n"
end

return M
