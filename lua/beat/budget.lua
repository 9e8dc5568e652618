--- beat.budget: a cost budget that holds (`max_cost_usd`, `--max-cost`).
---
--- A run never starts an iteration whose expected cost would take the
--- spending past the budget. The expected cost is the mean cost of this run's
--- iterations so far; before the first one it is `cost_per_iteration` when
--- given (else nothing is expected, and only money already spent stops the
--- run). What every agent run costs — the working agent's, a pipeline's steps,
--- a judge's — is added as it is reported; an agent run that reports no cost
--- counts `cost_per_iteration` when given (an estimate, and the summary says
--- so), else $0 (and the summary says that too). A budget that was crossed
--- anyway (an iteration cost more than the mean before it) is reported in
--- the summary with the amount over.
---
--- An agent that declares it reports no cost (Agent:reports_cost() == false:
--- a command agent, Codex or Gemini without `price`) cannot be held to a
--- budget: `max_cost_usd` without `cost_per_iteration` is refused before the
--- run starts (beat loop: exit 2).
local M = {}

-- Money is compared with this slack, so 0.4 + 0.4 + 0.2 "reaches" 1.0.
local EPS = 1e-9

local function callable(v)
  if type(v) == "function" then return true end
  local mt = type(v) == "table" and getmetatable(v)
  return mt and mt.__call ~= nil or false
end

--- The agents a run with these options pays for: the working agent, and the
--- agent of a judge given as check or eval (beat.judge).
---@param opts table strategy options
---@return table[] agents, string[] roles
function M.agents(opts)
  local list, roles = {}, {}
  if type(opts.agent) == "table" then list[1], roles[1] = opts.agent, "the agent" end
  for _, k in ipairs { "check", "eval" } do
    local j = opts[k]
    if type(j) == "table" and callable(j) and type(j.agent) == "table" then
      list[#list + 1], roles[#roles + 1] = j.agent, "the judge agent"
    end
  end
  return list, roles
end

-- A short name for an agent in messages: "claude", "command (sh)".
local function agent_name(a)
  local name = tostring(a.name or "?")
  if name == "command" and type(a.opts) == "table" and type(a.opts.argv) == "table" and a.opts.argv[1] then
    return ("command %s"):format(a.opts.argv[1])
  end
  return name
end

--- Why `max_cost_usd` cannot be enforced for these options, or nil: an agent
--- that reports no cost, with no `cost_per_iteration` to count instead.
---@param opts table strategy options
---@return string|nil why
function M.check(opts)
  if opts.max_cost_usd == nil or opts.cost_per_iteration ~= nil then return nil end
  local list, roles = M.agents(opts)
  for i, a in ipairs(list) do
    if type(a.reports_cost) == "function" and a:reports_cost() == false then
      return ("%s (%s) reports no cost, so the budget could not be counted: give what an iteration "
        .. "costs (--cost-per-iteration USD; Lua: cost_per_iteration)"):format(roles[i], agent_name(a))
    end
  end
  return nil
end

--- A reported cost as a number beat can add, or nil (unknown): a negative,
--- NaN or infinite one is unknown, and the journal gets a note.
local function valid_cost(run, n, v)
  local cost = tonumber(v)
  if v ~= nil and not (cost and cost >= 0 and cost < math.huge) then
    -- a negative cost would be subtracted and max_cost_usd never reached
    run.journal:write("note", { iteration = n, note = ("the agent reported a cost of %s; counted as unknown (0)")
      :format(tostring(v)) })
    return nil
  end
  return cost
end

--- Adds what an agent run cost to the run's total, and returns it: the
--- reported cost, or for the working agent (`who` nil or "agent")
--- `cost_per_iteration` when it reported none; 0 when unknown.
---@param run beat.Run
---@param n integer the iteration
---@param res table the agent's result
---@param who? string "agent" (default) or "judge"
---@return number counted
function M.charge(run, n, res, who)
  local cost = valid_cost(run, n, res.cost_usd)
  local est = run.opts.cost_per_iteration
  if cost == nil then
    if est and (who or "agent") == "agent" then
      cost = est
      run.cost_estimated = (run.cost_estimated or 0) + 1
    else
      run.cost_unknown = (run.cost_unknown or 0) + 1
      cost = 0
    end
  end
  run.cost_usd = run.cost_usd + cost
  return cost
end

--- What the next iteration is expected to cost: the mean of the iterations
--- so far (the baseline's judge, if any, included), else
--- cost_per_iteration, else nil.
---@param run beat.Run
---@return number|nil expected, string? basis
function M.expected(run)
  if (run.iteration or 0) > 0 then
    return run.cost_usd / run.iteration, "the mean so far"
  end
  local est = run.opts.cost_per_iteration
  if est then return est, "cost_per_iteration" end
  return nil
end

--- Why the run must not start another iteration for its cost budget, or nil.
---@param run beat.Run
---@return string|nil reason
function M.stop(run)
  local max = run.opts.max_cost_usd
  if not max then return nil end
  local spent = run.cost_usd
  if spent >= max - EPS then
    return ("cost budget of $%.2f reached ($%.2f spent)"):format(max, spent)
  end
  -- no iteration is to come: nothing to predict
  local limit = run.opts.max_iterations
  if limit and (run.iteration or 0) >= limit then return nil end
  local expected, basis = M.expected(run)
  if expected and spent + expected > max + EPS then
    return ("cost budget of $%.2f: $%.2f spent, and the next iteration would cost about $%.2f (%s), past the budget")
      :format(max, spent, expected, basis)
  end
  return nil
end

--- Lines for the run's summary: an overshoot, estimated or unknown costs.
---@param run beat.Run
---@return string[]
function M.notes(run)
  local notes = {}
  local max = run.opts.max_cost_usd
  if max and run.cost_usd > max + EPS then
    notes[#notes + 1] = ("the cost budget of $%.2f was crossed: $%.2f spent, $%.2f over (an iteration cost more than expected)")
      :format(max, run.cost_usd, run.cost_usd - max)
  end
  if (run.cost_estimated or 0) > 0 then
    notes[#notes + 1] = ("%d agent run%s reported no cost: each was counted as $%.2f (cost_per_iteration, an estimate)")
      :format(run.cost_estimated, run.cost_estimated == 1 and "" or "s", run.opts.cost_per_iteration)
  end
  if max and (run.cost_unknown or 0) > 0 then
    notes[#notes + 1] = ("%d agent run%s reported no cost and counted as $0 against the budget")
      :format(run.cost_unknown, run.cost_unknown == 1 and "" or "s")
  end
  return notes
end

return M
