--- beat.runs: runs as managed objects, from Lua — what `beat loop
--- list|status|pause|resume|cancel` and the MCP server use.
---
---   local runs = require "beat.runs"      -- or beat.runs
---   local id = assert(runs.start_detached { args = { "make it faster", "--eval", "node bench.js" } })
---   local st = runs.status(id)             -- state, iteration, phase, best vs baseline, ...
---   runs.pause(id); runs.resume(id); runs.cancel(id, "enough")
---   for _, r in ipairs(runs.list { all = true, status = "running" }) do print(r.id, r.root) end
---
--- Each returns its result, or nil, a one-line message and the exit status
--- it calls for (2: bad id, ambiguous prefix, a state that does not allow
--- the request — nothing changed; 1: a failure of the world). See
--- beat.runs.control for each function, beat.runs.status for the status
--- table and the states, beat.runs.index for the per-user index.
local control = require "beat.runs.control"

local M = {
  list = control.list,
  status = control.status,
  pause = control.pause,
  resume = control.resume,
  cancel = control.cancel,
  start_detached = control.start_detached,
  find = control.find,
}

--- The state names (see beat.runs.status).
M.STATES = require("beat.runs.status").STATES

return M
