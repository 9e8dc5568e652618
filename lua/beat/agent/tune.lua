--- beat.agent.tune: the offline proposer. No network, no model: it edits
--- numeric or enumerated parameters in files, guided by the scored history.
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
--- Finding a parameter: `name = "lr"` finds the first `lr = 0.1`, `lr: 0.1`,
--- `"lr": 0.1`, `LR=0.1` or `--lr 0.1` in the file (name as a whole word,
--- quotes around the value kept); `pattern` is a Lua pattern whose one capture
--- is the value (`id` names it in the result). Kinds: "float" and "int"
--- (linear in [min, max]), "log" (log-uniform, min > 0), "choice" (one of
--- `choices`). `format` (e.g. "%.3f") sets how numbers are written.
---
--- How it proposes (method = "local", the default): the history is replayed in
--- iteration order — entries {iteration = n, score = number|nil, params = {...}?},
--- or the optimize strategy's {iteration, value, kept, proposal} (params may be
--- left out: tune remembers what it proposed for each iteration; iteration 0
--- without params is the files' starting values; direction, when not given, is
--- inferred from what the strategy kept). A
--- (1+1) evolution strategy keeps a centre (the best point of the current
--- local run) and a step size in normalised [0, 1] coordinates: a better score
--- moves the centre and widens the step (×1.5), a worse one or a failure
--- narrows it (×0.9). The next proposal perturbs the centre by a Gaussian step
--- (reflected at the bounds, rounded for int and choice parameters, never a
--- point already tried). When the step shrinks below `min_step`, or
--- `restart_after` proposals in a row bring nothing, it restarts: alternately
--- at a uniformly random point (a new local run) and at the best point so far
--- with the full step. method = "random" samples uniformly (a baseline).
--- Everything is deterministic for a given seed and history.
local agent = require "beat.agent"

local M = {}

local KINDS = { int = true, float = true, log = true, choice = true }

--------------------------------------------------------------------------------
-- A small deterministic PRNG (splitmix64), so tune never touches math.random.

local Rng = {}
Rng.__index = Rng

local function mix(z)
  z = (z ~ (z >> 30)) * -4658895280553007687    -- 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * -7723592293110705685    -- 0x94D049BB133111EB
  return z ~ (z >> 31)
end

local function rng_new(seed, stream)
  local s = mix(seed * 0x100000001B3 + 0x7F4A7C15) ~ mix(stream + 0x632BE59B)
  return setmetatable({ s = s }, Rng)
end

--- A float in [0, 1).
function Rng:float()
  self.s = self.s + -7046029254386353131         -- 0x9E3779B97F4A7C15
  return (mix(self.s) >> 11) * (1.0 / 9007199254740992.0)
end

--- An integer in [1, n].
function Rng:int(n)
  return math.min(n, 1 + math.floor(self:float() * n))
end

--- A standard normal deviate (Box-Muller).
function Rng:normal()
  local u1 = self:float()
  if u1 < 1e-300 then u1 = 1e-300 end
  return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * self:float())
end

M.rng = rng_new

--------------------------------------------------------------------------------
-- Finding and editing values in files

-- Inserts position captures around the first capture of a Lua pattern, so
-- string.find returns where the value is. Raises when there is no capture.
local function position_pattern(pat, where)
  local i, n = 1, #pat
  while i <= n do
    local c = pat:sub(i, i)
    if c == "%" then
      i = i + 2
    elseif c == "[" then
      local j = i + 1
      if pat:sub(j, j) == "^" then j = j + 1 end
      if pat:sub(j, j) == "]" then j = j + 1 end
      while j <= n and pat:sub(j, j) ~= "]" do
        if pat:sub(j, j) == "%" then j = j + 1 end
        j = j + 1
      end
      i = j + 1
    elseif c == "(" and pat:sub(i + 1, i + 1) ~= ")" then
      local depth, j = 1, i + 1
      while j <= n do
        local d = pat:sub(j, j)
        if d == "%" then j = j + 1
        elseif d == "(" then depth = depth + 1
        elseif d == ")" then depth = depth - 1; if depth == 0 then break end end
        j = j + 1
      end
      if j > n then error(where .. " has an unbalanced '('", 0) end
      return pat:sub(1, i - 1) .. "()" .. pat:sub(i, j) .. "()" .. pat:sub(j + 1)
    else
      i = i + 1
    end
  end
  error(where .. " must have one capture: the value, as in 'lr = ([%d.eE+-]+)'", 0)
end

local NUMBER_PATTERNS = {
  "^[-+]?%d+%.?%d*[eE][-+]?%d+", "^[-+]?%.%d+[eE][-+]?%d+",
  "^[-+]?%d+%.?%d*", "^[-+]?%.%d+",
}

local function value_at(text, pos, choice)
  local q = text:sub(pos, pos)
  if choice then
    if q == '"' or q == "'" then
      local close = text:find(q, pos + 1, true)
      if close then return pos + 1, close - 1 end
      return nil
    end
    local s, e = text:find("^[%w_%.%-+/]+", pos)
    return s, e
  end
  if q == '"' or q == "'" then pos = pos + 1 end
  for _, p in ipairs(NUMBER_PATTERNS) do
    local s, e = text:find(p, pos)
    if s then return s, e end
  end
  return nil
end

-- Where the value of param p is in text: start, end (inclusive), or nil.
local function locate(p, text)
  if p.pattern then
    local r = { text:find(p._pos_pattern) }
    if not r[1] then return nil end
    local s, e = r[3], r[#r] - 1
    if type(s) ~= "number" or e < s then return nil end
    return s, e
  end
  local name, pos = p.name, 1
  while true do
    local s, e = text:find(name, pos, true)
    if not s then return nil end
    pos = s + 1
    local before = s > 1 and text:sub(s - 1, s - 1) or ""
    local after = text:sub(e + 1, e + 1)
    local word_start = name:match("^[%w_]") ~= nil
    local word_end = name:match("[%w_]$") ~= nil
    if not (word_start and before:match("[%w_]")) and not (word_end and after:match("[%w_]")) then
      local k = e + 1
      local qc = text:sub(k, k)
      if qc == '"' or qc == "'" then k = k + 1 end
      local _, sep_end = text:find("^[ \t]*[=:][ \t]*", k)
      if not sep_end then _, sep_end = text:find("^[ \t]+", k) end
      if sep_end then
        local vs, ve = value_at(text, sep_end + 1, p.kind == "choice")
        if vs then return vs, ve end
      end
    end
  end
end

local read_file = require("beat.fs").read

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then return nil, werr end
  return true
end

local function resolve(cwd, file)
  if file:sub(1, 1) == "/" or not cwd then return file end
  return cwd .. "/" .. file
end

--------------------------------------------------------------------------------
-- Normalised coordinates

local function clamp(x, lo, hi) return math.max(lo, math.min(hi, x)) end

local function to_unit(p, v)
  if p.kind == "choice" then
    for i, c in ipairs(p.choices) do
      if tostring(c) == tostring(v) then return (i - 0.5) / #p.choices end
    end
    return 0.5
  end
  v = tonumber(v)
  if not v then return 0.5 end
  if p.kind == "log" then
    if v <= 0 then return 0 end
    return clamp((math.log(v) - math.log(p.min)) / (math.log(p.max) - math.log(p.min)), 0, 1)
  elseif p.kind == "int" then
    return clamp((v - p.min + 0.5) / (p.max - p.min + 1), 0, 1)
  end
  return clamp((v - p.min) / (p.max - p.min), 0, 1)
end

local function from_unit(p, u)
  u = clamp(u, 0, 1)
  if p.kind == "choice" then
    return p.choices[clamp(math.floor(u * #p.choices) + 1, 1, #p.choices)]
  elseif p.kind == "int" then
    return math.tointeger(clamp(p.min + math.floor(u * (p.max - p.min + 1)), p.min, p.max))
  elseif p.kind == "log" then
    return math.exp(math.log(p.min) + u * (math.log(p.max) - math.log(p.min)))
  end
  return p.min + u * (p.max - p.min)
end

local function format_value(p, v)
  if p.kind == "choice" then return tostring(v) end
  if p.kind == "int" then return ("%d"):format(v) end
  local s = (p.format or "%.6g"):format(v)
  return s
end

-- The point (list of formatted values) as a key for "already tried".
local function key_of(params, values)
  local parts = {}
  for i, p in ipairs(params) do parts[i] = format_value(p, values[i]) end
  return table.concat(parts, "\0")
end

--------------------------------------------------------------------------------
-- The proposer

local function better(direction, a, b)
  if direction == "maximize" then return a > b end
  return a < b
end

local function finite(s)
  return type(s) == "number" and s == s and s ~= math.huge and s ~= -math.huge
end

-- The entry's score as a number: `score` when it is one, else `value` (the
-- optimize strategy stores the objective's scalar there); nil for a failure.
local function entry_score(e)
  if type(e) ~= "table" or e.ok == false then return nil end
  if finite(e.score) then return e.score end
  if finite(e.value) then return e.value end
  return nil
end

-- "minimize" or "maximize" when not given: read from what the strategy kept
-- (kept = true) — a kept score beats the last kept one, a discarded score
-- does not. Votes over the whole history; "minimize" when it says nothing.
local function infer_direction(history)
  local last, votes = nil, 0
  for _, e in ipairs(history or {}) do
    local s = type(e) == "table" and entry_score(e) or nil
    if s and e.kept ~= nil then
      if last and s ~= last then
        local higher = s > last
        if e.kept == true then votes = votes + (higher and 1 or -1)
        else votes = votes + (higher and -1 or 1) end
      end
      if e.kept == true then last = s end
    end
  end
  return votes > 0 and "maximize" or "minimize"
end

-- Values (list aligned with params) of a history entry's params table.
local function entry_values(self, e)
  local params = type(e.params) == "table" and e.params or nil
  if not params and type(e.proposal) == "table" then params = e.proposal end
  if not params and type(e.agent) == "table" then params = e.agent.params end
  if params then
    local vals = {}
    for i, p in ipairs(self.params) do
      local v = params[p.key]
      if v == nil then return nil end
      if p.kind ~= "choice" then v = tonumber(v) end
      vals[i] = v
    end
    return vals
  end
  local it = e.iteration
  if it ~= nil and self._memory[it] then return self._memory[it].values end
  if (it == 0 or e.baseline == true) and self._baseline then return self._baseline end
  return nil
end

-- Replays the history: the local run's centre, the step size, the best point.
local function replay(self, history, direction)
  local o = self.opts
  local sigma0 = o.step or 0.25
  local entries = {}
  for i, e in ipairs(history or {}) do
    if type(e) == "table" then entries[#entries + 1] = { e = e, i = i } end
  end
  table.sort(entries, function(a, b)
    local ia, ib = tonumber(a.e.iteration), tonumber(b.e.iteration)
    if ia and ib and ia ~= ib then return ia < ib end
    return a.i < b.i
  end)
  local st = { sigma = sigma0, fails = 0, restarts = 0, tried = {} }
  for _, item in ipairs(entries) do
    local e = item.e
    local vals = entry_values(self, e)
    local score = entry_score(e)
    local mem = e.iteration ~= nil and self._memory[e.iteration] or nil
    if vals then
      st.tried[key_of(self.params, vals)] = true
      if score and (st.best_score == nil or better(direction, score, st.best_score)) then
        st.best, st.best_score = vals, score
      elseif not score and e.kept == true then
        st.best = vals -- kept by the strategy, scored in a way tune cannot compare
      end
    end
    if mem and mem.restart then st.restarts = st.restarts + 1 end
    if mem and mem.restart == "best" and st.best then
      st.center, st.center_score, st.sigma, st.fails = mem.from, mem.from_score, sigma0, 0
    end
    if mem and mem.restart == "random" then
      st.sigma, st.fails = sigma0, 0
      if vals and score then st.center, st.center_score = vals, score end
    elseif vals and ((score and (st.center_score == nil or better(direction, score, st.center_score)))
                     or (not score and e.kept == true)) then
      if st.center then st.sigma = math.min(st.sigma * 1.5, 0.5) end
      st.center, st.center_score, st.fails = vals, score, 0
    else
      st.sigma = st.sigma * 0.9
      st.fails = st.fails + 1
    end
  end
  return st
end

local function perturb(self, rng, center, sigma)
  local d = #self.params
  -- Half the proposals move one parameter only (good on separable problems),
  -- the others move every parameter at once.
  local only = rng:float() < 0.5 and rng:int(d) or nil
  local vals, same = {}, true
  for i, p in ipairs(self.params) do
    vals[i] = center[i]
    if only == nil or only == i then
      if p.kind == "choice" then
        -- Choices have no order: switch to another one now and then.
        if only == i or rng:float() < 1 / d then
          local idx = 1
          for j, c in ipairs(p.choices) do if tostring(c) == tostring(center[i]) then idx = j end end
          local other = rng:int(#p.choices - 1)
          if other >= idx then other = other + 1 end
          vals[i] = p.choices[other]
        end
      else
        local u = to_unit(p, center[i]) + sigma * rng:normal()
        for _ = 1, 4 do
          if u < 0 then u = -u elseif u > 1 then u = 2 - u end
        end
        vals[i] = from_unit(p, u)
      end
    end
    if format_value(p, vals[i]) ~= format_value(p, center[i]) then same = false end
  end
  if same then
    -- Rounding left the point where it was: move one parameter by one notch.
    local i = only or rng:int(d)
    local p = self.params[i]
    if p.kind == "choice" then
      local idx = 1
      for j, c in ipairs(p.choices) do if tostring(c) == tostring(center[i]) then idx = j end end
      local other = rng:int(#p.choices - 1)
      if other >= idx then other = other + 1 end
      vals[i] = p.choices[other]
    elseif p.kind == "int" then
      local v = center[i] + (rng:float() < 0.5 and -1 or 1)
      if v < p.min or v > p.max then v = center[i] - (v - center[i]) end
      vals[i] = math.tointeger(clamp(v, p.min, p.max))
    else
      local u = clamp(to_unit(p, center[i]) + (rng:float() < 0.5 and -1 or 1) * math.max(sigma, 1e-3), 0, 1)
      vals[i] = from_unit(p, u)
    end
  end
  return vals
end

local function uniform(self, rng)
  local vals = {}
  for i, p in ipairs(self.params) do vals[i] = from_unit(p, rng:float()) end
  return vals
end

-- The next point to try, and how it was chosen ("random" or "best" restart, or nil).
local function propose(self, history, iteration, direction)
  local o = self.opts
  local stream = iteration or (#(history or {}) + 1)
  local rng = rng_new(o.seed or 0, stream)
  local st = replay(self, history, direction)
  if (o.method or "local") == "random" then
    for _ = 1, 50 do
      local v = uniform(self, rng)
      if not st.tried[key_of(self.params, v)] then return v end
    end
    return uniform(self, rng)
  end
  local center = st.center or st.best or self._baseline
  local restart, from, from_score
  local limit = o.restart_after or (10 + 5 * #self.params)
  if st.center and (st.sigma < (o.min_step or 0.02) or st.fails >= limit) then
    if st.restarts % 2 == 0 or not st.best then
      restart = "random"
    else
      restart, from, from_score = "best", st.best, st.best_score
      center = st.best
    end
  end
  for _ = 1, 50 do
    local v
    if restart == "random" then
      v = uniform(self, rng)
    else
      v = perturb(self, rng, center, restart and (o.step or 0.25) or st.sigma)
    end
    if not st.tried[key_of(self.params, v)] then return v, restart, from, from_score end
  end
  return uniform(self, rng), "random"
end

--------------------------------------------------------------------------------
-- The agent

local PARAM_KNOWN = { file = true, name = true, pattern = true, id = true, kind = true,
                      min = true, max = true, choices = true, format = true }

local function check_params(params, where)
  if type(params) ~= "table" or #params == 0 then
    error(where .. ": opts.params must be a non-empty list of {file=, name= or pattern=, ...}", 4)
  end
  local out, keys = {}, {}
  for i, p in ipairs(params) do
    local w = ("%s: opts.params[%d]"):format(where, i)
    if type(p) ~= "table" then error(w .. " must be a table, got " .. type(p), 4) end
    for k in pairs(p) do
      if not PARAM_KNOWN[k] then error(("%s: unknown field %s"):format(w, tostring(k)), 4) end
    end
    if type(p.file) ~= "string" or p.file == "" then
      error(w .. ".file must be a file path, got " .. type(p.file), 4)
    end
    if (p.name == nil) == (p.pattern == nil) then
      error(w .. " needs exactly one of name or pattern", 4)
    end
    if p.name ~= nil and (type(p.name) ~= "string" or p.name == "") then
      error(w .. ".name must be a non-empty string, got " .. type(p.name), 4)
    end
    if p.pattern ~= nil and type(p.pattern) ~= "string" then
      error(w .. ".pattern must be a Lua pattern string, got " .. type(p.pattern), 4)
    end
    local q = {}
    for k, v in pairs(p) do q[k] = v end
    q.kind = q.kind or (q.choices and "choice" or "float")
    if not KINDS[q.kind] then
      error(('%s.kind must be "int", "float", "log" or "choice", got %q'):format(w, tostring(q.kind)), 4)
    end
    if q.kind == "choice" then
      if type(q.choices) ~= "table" or #q.choices < 2 then
        error(w .. ".choices must be a list of at least two values", 4)
      end
    else
      if type(q.min) ~= "number" or type(q.max) ~= "number" or not (q.min < q.max) then
        error(("%s needs numbers min < max, got min=%s max=%s"):format(w, tostring(q.min), tostring(q.max)), 4)
      end
      if q.kind == "int" and (math.type(q.min) ~= "integer" and q.min ~= math.floor(q.min)
                              or q.max ~= math.floor(q.max)) then
        error(w .. ": an int parameter needs integer min and max", 4)
      end
      if q.kind == "int" then q.min, q.max = math.tointeger(q.min), math.tointeger(q.max) end
      if q.kind == "log" and q.min <= 0 then error(w .. ": a log parameter needs min > 0", 4) end
    end
    if q.format ~= nil and (type(q.format) ~= "string" or not pcall(string.format, q.format, 1.5)) then
      error(w .. ".format must be a format such as \"%.4f\"", 4)
    end
    if q.pattern then q._pos_pattern = position_pattern(q.pattern, w .. ".pattern") end
    q.key = q.id or q.name or q.pattern
    if keys[q.key] then error(("%s: two parameters are named %s; give one an id"):format(w, q.key), 4) end
    keys[q.key] = true
    out[i] = q
  end
  return out
end

local spec = {
  name = "tune",
  no_common = true,
  schema = {
    params = "table", seed = "int", direction = { enum = { "minimize", "maximize" } },
    method = { enum = { "local", "random" } }, step = "nonneg", min_step = "nonneg",
    restart_after = "posint",
  },
}

function spec.init(o, where)
  if o.params == nil then error(where .. ": opts.params is required", 3) end
end

-- Reads every parameter's current value; returns values or nil, why.
local function read_values(self, cwd)
  local texts, vals = {}, {}
  for i, p in ipairs(self.params) do
    local path = resolve(cwd, p.file)
    local text = texts[path]
    if not text then
      local err
      text, err = read_file(path)
      if not text then return nil, ("tune: %s: %s"):format(p.file, err) end
      texts[path] = text
    end
    local s, e = locate(p, text)
    if not s then
      return nil, ("tune: %s: no value for %s found"):format(p.file, p.key)
    end
    local raw = text:sub(s, e)
    vals[i] = p.kind == "choice" and raw or tonumber(raw)
  end
  return vals
end

local function write_values(self, cwd, vals)
  local texts, order = {}, {}
  for i, p in ipairs(self.params) do
    local path = resolve(cwd, p.file)
    if not texts[path] then
      local text, err = read_file(path)
      if not text then return nil, ("tune: %s: %s"):format(p.file, err) end
      texts[path] = text
      order[#order + 1] = path
    end
    local text = texts[path]
    local s, e = locate(p, text)
    if not s then return nil, ("tune: %s: no value for %s found"):format(p.file, p.key) end
    texts[path] = text:sub(1, s - 1) .. format_value(p, vals[i]) .. text:sub(e + 1)
  end
  for _, path in ipairs(order) do
    local ok, err = write_file(path, texts[path])
    if not ok then return nil, ("tune: %s"):format(err) end
  end
  return true
end

local runtime_clock
local function clock()
  if runtime_clock == nil then
    local ok, rt = pcall(require, "beat._runtime")
    runtime_clock = ok and type(rt) == "table" and rt.clock or os.clock
  end
  return runtime_clock()
end

function spec.run(self, opts)
  local started = clock()
  local direction = opts.direction or self.opts.direction or infer_direction(opts.history)
  local res = { ok = false, code = 1, cost_usd = 0, tokens = { input = 0, output = 0 }, turns = 0,
                rate_limited = false, timed_out = false, transcript = opts.transcript }
  local current, err = read_values(self, opts.cwd)
  if not current then
    res.error, res.duration = err, clock() - started
    return res
  end
  if not self._baseline then self._baseline = current end
  local vals, restart, from, from_score = propose(self, opts.history, opts.iteration, direction)
  local ok, werr = write_values(self, opts.cwd, vals)
  if not ok then
    res.error, res.duration = werr, clock() - started
    return res
  end
  local key = opts.iteration or (#(opts.history or {}) + 1)
  self._memory[key] = { values = vals, restart = restart, from = from, from_score = from_score }
  local params, changes = {}, {}
  for i, p in ipairs(self.params) do
    params[p.key] = vals[i]
    local before, after = format_value(p, current[i]), format_value(p, vals[i])
    if before ~= after then changes[#changes + 1] = ("%s=%s (was %s)"):format(p.key, after, before) end
  end
  res.ok, res.code, res.error = true, 0, nil
  res.params = params
  res.proposal = params
  res.text = "tune: " .. (#changes > 0 and table.concat(changes, ", ") or "no change")
    .. (restart and (" [restart: " .. restart .. "]") or "")
  res.duration = clock() - started
  if opts.transcript then
    local dir = opts.transcript:match("^(.*)/[^/]*$")
    if dir and dir ~= "" then pcall(function() require("beat").fs.mkdir_p(dir) end) end
    write_file(opts.transcript, res.text .. "\n")
  end
  return res
end

local new = agent.define(spec)

--- The offline proposer; see beat.agent.tune for the options.
---@param opts {params: table[], seed?: integer, direction?: "minimize"|"maximize", method?: "local"|"random", step?: number, min_step?: number, restart_after?: integer}
---@return beat.Agent
function M.new(opts)
  local a = new(opts)
  a.params = check_params(a.opts.params, "beat.agent.tune")
  a._memory = {}
  return a
end
M.spec = spec

--- Reads the current values of the parameters (a table key → value), or nil, why.
---@param a beat.Agent a tune agent
---@param cwd? string
function M.values(a, cwd)
  local vals, err = read_values(a, cwd)
  if not vals then return nil, err end
  local out = {}
  for i, p in ipairs(a.params) do out[p.key] = vals[i] end
  return out
end

return M
