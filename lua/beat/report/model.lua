--- beat.report.model: a run's journal records read back into the run model
--- (the shape is described at the top of beat/report/init.lua).
local M = {}

M.VERSION = 1

local numfmt = require "beat.numfmt"

local KEPT = { keep = true, pass = true }
local NO_SCORE_MARK = { crash = "crash", fail = "crash", pass = "pass" }
-- how a chart marks an iteration without a score, by its status
M.NO_SCORE_MARK = NO_SCORE_MARK

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
return M
