--- beat.mcp.control: the handlers of the tools that start and steer loops —
--- CreateLoop, PauseLoop, ResumeLoop, CancelLoop, RunRecipe.
---
--- Loops must outlive the server (closing the client or killing the server
--- loses nothing), so these tools act through detached runs and the run
--- index, which are not built yet. Until then each returns a tool error
--- saying so. Wiring them is this file only: each handler receives the
--- checked arguments (defaults filled, see catalog.lua for the schemas)
--- and ctx (ctx.cwd, ctx:progress, ctx:log, ctx:sleep), and returns
--- `structured, text` matching the tool's outputSchema, or `nil, message`.
local M = {}

local function not_built(name)
  return function()
    return nil, ("%s requires detached runs (not built yet): beat cannot start or steer a loop from the MCP server in this build. "
      .. "LoopStatus, ListLoops, LoopDiff and LoopReport work on loops started with `beat loop`."):format(name)
  end
end

--- CreateLoop{prompt, strategy, exitCondition, ...}: starts a detached run
--- (`beat loop … --detach`) and returns {success, loopId, ...} at once.
M.CreateLoop = not_built("CreateLoop")

--- PauseLoop{loopId, force}
M.PauseLoop = not_built("PauseLoop")

--- ResumeLoop{loopId}: a paused run, or a crashed/interrupted one from its journal.
M.ResumeLoop = not_built("ResumeLoop")

--- CancelLoop{loopId, reason, cancelTasks}
M.CancelLoop = not_built("CancelLoop")

--- RunRecipe{recipe, args, set, workingDirectory}: a recipe, detached.
M.RunRecipe = not_built("RunRecipe")

return M
