--- beat.runs.snapshot: a run's snapshot by the name `beat restore` and
--- `beat show` take (base, best, last, iter-N, iter-R.K, pre-restore-N, ...),
--- from the run's refs (`refs/beat/<id>/<name>`).
---
--- `last` and `best` are written once, when the run ends: a run whose
--- process died (or that is still running) has neither. Its last snapshot
--- is its newest iteration's; its best is what its journal's latest
--- decision says (every decision record carries the run's best).
local M = {}

-- The best snapshot the journal in run directory dir last recorded (nil:
-- no journal, or no decision yet: the best is the base).
local function journal_best(dir)
  local j = dir and require("beat.journal").open(dir)
  if not j then return nil end
  local d = require("beat.runs.replay").read((j:records())).last_decision
  return d and type(d.best) == "string" and d.best or nil
end

-- "iter-3" → 3, 0; "iter-3.2" → 3, 2; nil for other names.
local function iteration(name)
  local round, k = name:match("^iter%-(%d+)%.?(%d*)$")
  if not round then return nil end
  return tonumber(round), tonumber(k) or 0
end

--- The commit id of run id's snapshot `which`, from refs (a list of {name,
--- id} as repo:refs gives it) and, for `best`, the run's journal in dir
--- (its run directory) when the journal is there: it is the record of a
--- run still going or killed, whose best has no ref yet. nil when the run
--- has none.
---@param refs {name: string, id: string}[]
---@param id string
---@param which string
---@param dir? string
---@return string|nil
function M.find(refs, id, which, dir)
  if which == "best" then
    local b = journal_best(dir)
    if b then return b end
  end
  local prefix = ("refs/beat/%s/"):format(id)
  local newest, nr, nk
  for _, x in ipairs(refs) do
    local name = x.name:sub(#prefix + 1)
    if x.name:sub(1, #prefix) == prefix then
      if name == which then return x.id end
      local r, k = iteration(name)
      if r and (not nr or r > nr or (r == nr and k > nk)) then newest, nr, nk = x.id, r, k end
    end
  end
  if which == "last" then return newest end
  return nil
end

return M
