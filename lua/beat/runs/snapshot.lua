--- beat.runs.snapshot: a run's snapshot by the name `beat restore` and
--- `beat show` take (base, best, last, iter-N, iter-R.K, pre-restore-N, ...),
--- from the run's refs (`refs/beat/<id>/<name>`).
---
--- `last` is written once, when the run ends: a run whose process died
--- has none, and its last snapshot is its newest iteration's.
local M = {}

-- "iter-3" → 3, 0; "iter-3.2" → 3, 2; nil for other names.
local function iteration(name)
  local round, k = name:match("^iter%-(%d+)%.?(%d*)$")
  if not round then return nil end
  return tonumber(round), tonumber(k) or 0
end

--- The commit id of run id's snapshot `which`, from refs (a list of {name,
--- id} as repo:refs gives it); nil when the run has none.
---@param refs {name: string, id: string}[]
---@param id string
---@param which string
---@return string|nil
function M.find(refs, id, which)
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
