--- beat.agent.tune: the offline proposer. No network, no model: it edits numeric or
--- enumerated parameters in files, guided by the scored history.
---
---   local tuner = beat.agent.tune{
---     params = {
---       {file = "train.py", name = "lr", kind = "log", min = 1e-5, max = 1e-1},
---       {file = "train.py", name = "layers", kind = "int", min = 1, max = 12},
---       {file = "cfg.toml", pattern = 'optimizer = "(%w+)"', id = "opt",
---        kind = "choice", choices = {"sgd", "adam", "adamw"}},
---     },
---     seed = 1, direction = "minimize",
---   }
---   tuner:run{cwd = dir, iteration = n, history = {{iteration = 0, score = 3.2}, ...}}
---
--- This file is the adapter: it turns agent:run's `history` (beat.HistoryEntry, see
--- beat.agent) into observations, asks beat.tune.search for the next point and writes it
--- with beat.tune.params. Parameters and how they are found: tune/params.lua; how the
--- next point is chosen: tune/search.lua.
---
--- From each history entry tune reads `iteration`, the score (`score` when it is a
--- number, else `value`, the objective's scalar; none, or `ok = false`, is a failure),
--- `kept`, and the values tried (`params` or `proposal`; when left out, what tune itself
--- proposed for that iteration, and for iteration 0 the files' starting values). The
--- direction, when neither the constructor nor the run gives it, is inferred from what the
--- strategy kept.
local agent = require "beat.agent"
local P = require "beat.tune.params"
local search = require "beat.tune.search"

local M = {}

local function finite(s)
  return type(s) == "number" and s == s and s ~= math.huge and s ~= -math.huge
end

-- A history entry's score as a number, or nil for a failure.
local function entry_score(e)
  if e.ok == false then return nil end
  if finite(e.score) then return e.score end
  if finite(e.value) then return e.value end
  return nil
end

-- The values a history entry tried (a list aligned with params), or nil when unknown.
local function entry_point(self, e)
  local given = type(e.params) == "table" and e.params or type(e.proposal) == "table" and e.proposal or nil
  if given then
    local vals = {}
    for i, p in ipairs(self.params) do
      local v = given[p.key]
      if v == nil then return nil end
      if p.kind ~= "choice" then v = tonumber(v) end
      vals[i] = v
    end
    return vals
  end
  local it = e.iteration
  if it ~= nil and self._memory[it] then return self._memory[it].values end
  if it == 0 and self._baseline then return self._baseline end
  return nil
end

-- agent:run's history as the search's observations, in the same order.
local function observations(self, history)
  local out = {}
  for _, e in ipairs(history or {}) do
    if type(e) == "table" then
      local mem = e.iteration ~= nil and self._memory[e.iteration] or {}
      out[#out + 1] = { iteration = tonumber(e.iteration), score = entry_score(e), point = entry_point(self, e),
        kept = e.kept, restart = mem.restart, from = mem.from, from_score = mem.from_score }
    end
  end
  return out
end

local spec = {
  name = "tune",
  reports_cost = true,      -- it costs nothing, and says so
  no_common = true,
  schema = {
    params = { "table", required = true, test = function(p) return #p > 0 end,
      what = "a non-empty list of parameters {file=, name= or pattern=, ...}" },
    seed = "int", direction = { enum = { "minimize", "maximize" } },
    method = { enum = { "local", "random" } }, step = "nonneg", min_step = "nonneg",
    restart_after = "posint",
  },
}

function spec.run(self, opts)
  local beat = require "beat"
  local started = beat.clock()
  local res = { ok = false, code = 1, cost_usd = 0, tokens = { input = 0, output = 0 }, turns = 0,
                rate_limited = false, timed_out = false, transcript = opts.transcript }
  local current, err = P.read(self.params, opts.cwd)
  if not current then
    res.error, res.duration = err, beat.clock() - started
    return res
  end
  if not self._baseline then self._baseline = current end
  local obs = observations(self, opts.history)
  local o = self.opts
  local vals, restart, from, from_score = search.propose(self.params, obs, {
    seed = o.seed, stream = opts.iteration or (#(opts.history or {}) + 1),
    direction = opts.direction or o.direction or search.infer_direction(obs),
    method = o.method, step = o.step, min_step = o.min_step, restart_after = o.restart_after,
    baseline = self._baseline,
  })
  local ok, werr = P.write(self.params, opts.cwd, vals)
  if not ok then
    res.error, res.duration = werr, beat.clock() - started
    return res
  end
  local key = opts.iteration or (#(opts.history or {}) + 1)
  self._memory[key] = { values = vals, restart = restart, from = from, from_score = from_score }
  local params, changes = {}, {}
  for i, p in ipairs(self.params) do
    params[p.key] = vals[i]
    local before, after = P.format_value(p, current[i]), P.format_value(p, vals[i])
    if before ~= after then changes[#changes + 1] = ("%s=%s (was %s)"):format(p.key, after, before) end
  end
  res.ok, res.code, res.error = true, 0, nil
  res.params = params
  res.proposal = params
  res.text = "tune: " .. (#changes > 0 and table.concat(changes, ", ") or "no change")
    .. (restart and (" [restart: " .. restart .. "]") or "")
  res.duration = beat.clock() - started
  if opts.transcript then
    local dir = opts.transcript:match("^(.*)/[^/]*$")
    if dir and dir ~= "" then pcall(beat.fs.mkdir_p, dir) end
    P.write_file(opts.transcript, res.text .. "\n")
  end
  return res
end

local new = agent.define(spec)

--- The offline proposer; see beat.agent.tune for the options.
---@param opts {params: table[], seed?: integer, direction?: "minimize"|"maximize", method?: "local"|"random", step?: number, min_step?: number, restart_after?: integer}
---@return beat.Agent
function M.new(opts)
  local a = new(opts)
  a.params = P.check(a.opts.params, "beat.agent.tune")
  a._memory = {}
  return a
end
M.spec = spec

--- Reads the current values of the parameters (a table key → value), or nil, why.
---@param a beat.Agent a tune agent
---@param cwd? string
function M.values(a, cwd)
  local vals, err = P.read(a.params, cwd)
  if not vals then return nil, err end
  local out = {}
  for i, p in ipairs(a.params) do out[p.key] = vals[i] end
  return out
end

return M
