--- beat.tune.search — where beat.agent.tune looks next: a (1+1) evolution strategy with
--- restarts over parameters in normalised [0, 1] coordinates.
---
--- The observations (each earlier point and its score) are replayed in iteration order.
--- The search keeps a centre (the best point of the current local run) and a step size: a
--- better score moves the centre and widens the step (×1.5, at most 0.5), a worse one or a
--- failure narrows it (×0.9). The next point perturbs the centre by a Gaussian step
--- (reflected at the bounds, rounded for int and choice parameters, never a point already
--- tried). When the step shrinks below `min_step`, or `restart_after` proposals in a row
--- bring nothing, it restarts: alternately at a uniformly random point (a new local run)
--- and at the best point so far with the full step. method = "random" samples uniformly
--- (a baseline). Deterministic for a seed and the observations: its own splitmix64
--- generator, never math.random. Pure Lua: runs under plain lua5.4.
local P = require "beat.tune.params"

local M = {}

local clamp, to_unit, from_unit, format_value = P.clamp, P.to_unit, P.from_unit, P.format_value

---@class beat.tune.Observation
---@field iteration? number   replay order (observations without one keep their place)
---@field score? number       nil: a failure, or a score tune cannot compare
---@field point? any[]        the values tried, aligned with the params (nil: unknown)
---@field kept? boolean       whether the strategy kept it
---@field restart? "random"|"best"  this point began a restart
---@field from? any[]         for a "best" restart: the best point it started from
---@field from_score? number

---@class beat.tune.SearchOptions
---@field seed? integer
---@field stream? integer      a separate random stream per proposal (the iteration)
---@field direction "minimize"|"maximize"
---@field method? "local"|"random"
---@field step? number         initial and restart step size (default 0.25)
---@field min_step? number     restart below this step size (default 0.02)
---@field restart_after? integer restart after this many proposals without progress (default 10 + 5·params)
---@field baseline? any[]      the starting point, when no observation gives one

--------------------------------------------------------------------------------
-- A small deterministic PRNG (splitmix64)

local Rng = {}
Rng.__index = Rng

local function mix(z)
  z = (z ~ (z >> 30)) * -4658895280553007687    -- 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * -7723592293110705685    -- 0x94D049BB133111EB
  return z ~ (z >> 31)
end

--- A generator for a seed and a stream: the same pair always gives the same numbers.
---@param seed integer
---@param stream integer
function M.rng(seed, stream)
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

--------------------------------------------------------------------------------
-- Replaying the observations

local function better(direction, a, b)
  if direction == "maximize" then return a > b end
  return a < b
end

-- The point (formatted values) as a key for "already tried".
local function key_of(params, values)
  local parts = {}
  for i, p in ipairs(params) do parts[i] = format_value(p, values[i]) end
  return table.concat(parts, "\0")
end

--- "minimize" or "maximize", read from what the strategy kept: a kept score that beats
--- the last kept one votes for its side, a discarded one against. "minimize" when the
--- observations say nothing.
---@param observations beat.tune.Observation[]
---@return "minimize"|"maximize"
function M.infer_direction(observations)
  local last, votes = nil, 0
  for _, o in ipairs(observations) do
    local s = o.score
    if s and o.kept ~= nil then
      if last and s ~= last then
        local higher = s > last
        if o.kept == true then votes = votes + (higher and 1 or -1)
        else votes = votes + (higher and -1 or 1) end
      end
      if o.kept == true then last = s end
    end
  end
  return votes > 0 and "maximize" or "minimize"
end

-- The state after the observations: centre, step size, failures in a row, restarts,
-- the best point and every point tried.
local function replay(params, observations, o)
  local sigma0 = o.step or 0.25
  local order = {}
  for i, ob in ipairs(observations) do order[i] = { ob = ob, i = i } end
  table.sort(order, function(a, b)
    local ia, ib = a.ob.iteration, b.ob.iteration
    if ia and ib and ia ~= ib then return ia < ib end
    return a.i < b.i
  end)
  local st = { sigma = sigma0, fails = 0, restarts = 0, tried = {} }
  for _, item in ipairs(order) do
    local ob = item.ob
    local vals, score = ob.point, ob.score
    if vals then
      st.tried[key_of(params, vals)] = true
      if score and (st.best_score == nil or better(o.direction, score, st.best_score)) then
        st.best, st.best_score = vals, score
      elseif not score and ob.kept == true then
        st.best = vals -- kept by the strategy, scored in a way tune cannot compare
      end
    end
    if ob.restart then st.restarts = st.restarts + 1 end
    if ob.restart == "best" and st.best then
      st.center, st.center_score, st.sigma, st.fails = ob.from, ob.from_score, sigma0, 0
    end
    if ob.restart == "random" then
      st.sigma, st.fails = sigma0, 0
      if vals and score then st.center, st.center_score = vals, score end
    elseif vals and ((score and (st.center_score == nil or better(o.direction, score, st.center_score)))
                     or (not score and ob.kept == true)) then
      if st.center then st.sigma = math.min(st.sigma * 1.5, 0.5) end
      st.center, st.center_score, st.fails = vals, score, 0
    else
      st.sigma = st.sigma * 0.9
      st.fails = st.fails + 1
    end
  end
  return st
end

--------------------------------------------------------------------------------
-- Proposing

-- Another choice than the current one, uniformly.
local function other_choice(rng, p, current)
  local idx = 1
  for j, c in ipairs(p.choices) do if tostring(c) == tostring(current) then idx = j end end
  local other = rng:int(#p.choices - 1)
  if other >= idx then other = other + 1 end
  return p.choices[other]
end

local function perturb(params, rng, center, sigma)
  local d = #params
  -- Half the proposals move one parameter only (good on separable problems),
  -- the others move every parameter at once.
  local only = rng:float() < 0.5 and rng:int(d) or nil
  local vals, same = {}, true
  for i, p in ipairs(params) do
    vals[i] = center[i]
    if only == nil or only == i then
      if p.kind == "choice" then
        -- Choices have no order: switch to another one now and then.
        if only == i or rng:float() < 1 / d then vals[i] = other_choice(rng, p, center[i]) end
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
    local p = params[i]
    if p.kind == "choice" then
      vals[i] = other_choice(rng, p, center[i])
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

local function uniform(params, rng)
  local vals = {}
  for i, p in ipairs(params) do vals[i] = from_unit(p, rng:float()) end
  return vals
end

--- The next point to try, and how it was chosen: restart "random" or "best" (with the
--- best point and score it restarted from), or nil for an ordinary step.
---@param params beat.tune.Param[] checked by beat.tune.params.check
---@param observations beat.tune.Observation[]
---@param o beat.tune.SearchOptions
---@return any[] point, "random"|"best"|nil restart, any[]? from, number? from_score
function M.propose(params, observations, o)
  local rng = M.rng(o.seed or 0, o.stream or (#observations + 1))
  local st = replay(params, observations, o)
  if (o.method or "local") == "random" then
    for _ = 1, 50 do
      local v = uniform(params, rng)
      if not st.tried[key_of(params, v)] then return v end
    end
    return uniform(params, rng)
  end
  local center = st.center or st.best or o.baseline
  local restart, from, from_score
  local limit = o.restart_after or (10 + 5 * #params)
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
      v = uniform(params, rng)
    else
      v = perturb(params, rng, center, restart and (o.step or 0.25) or st.sigma)
    end
    if not st.tried[key_of(params, v)] then return v, restart, from, from_score end
  end
  return uniform(params, rng), "random"
end

return M
