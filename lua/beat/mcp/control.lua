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

-- CreateLoop's arguments that only optimize takes, with their flags.
local OPTIMIZE_ONLY = { evalDirection = "--direction", guards = "--guard", runs = "--runs", metric = "--metric",
  minRelDelta = "--min-rel-delta", target = "--target" }

--- The `beat loop` arguments (after "loop") that run what CreateLoop's
--- checked arguments ask for, or nil and a tool error naming the argument.
--- Durations go as bare milliseconds, which `beat loop` reads as such.
--- Two mappings wait for `beat loop` to accept them: maxIterations 0 and
--- maxConsecutiveFailures 0 (unlimited) become `--max-iterations 0` and
--- `--max-failures 0`; systemPrompt has no flag yet.
---@param args table
---@return string[]|nil argv
---@return string? err
function M.loop_argv(args)
  if args.systemPrompt then
    return nil, "CreateLoop: argument systemPrompt is not supported by `beat loop` yet"
  end
  local argv = { args.prompt }
  local function add(...) for _, v in ipairs { ... } do argv[#argv + 1] = tostring(v) end end
  if args.strategy == "retry" then
    for name in pairs(OPTIMIZE_ONLY) do
      if args[name] ~= nil and not (name == "evalDirection" and args[name] == "minimize") then
        return nil, ("CreateLoop: argument %s needs strategy \"optimize\""):format(name)
      end
    end
    add("--until", args.exitCondition)
  else
    add("--eval", args.exitCondition, "--direction", args.evalDirection or "minimize")
    for _, g in ipairs(args.guards or {}) do add("--guard", g) end
    if args.runs then add("--runs", args.runs) end
    if args.metric then add("--metric", args.metric) end
    if args.minRelDelta then add("--min-rel-delta", args.minRelDelta) end
    if args.target then add("--target", args.target) end
  end
  if args.evalTimeout then add("--eval-timeout", args.evalTimeout) end
  if args.workingDirectory then add("-w", args.workingDirectory) end
  if args.maxIterations then add("--max-iterations", args.maxIterations) end
  if args.maxConsecutiveFailures then add("--max-failures", args.maxConsecutiveFailures) end
  if args.cooldownMs and args.cooldownMs > 0 then add("--cooldown", args.cooldownMs) end
  if args.freshContext == false then add("--continue-context") end
  if args.agent then add("-a", args.agent) end
  if args.model then add("--model", args.model) end
  if args.gitBranch then add("--commit-to", args.gitBranch) end
  if args.maxCostUsd then add("--max-cost", args.maxCostUsd) end
  if args.maxDurationMs then add("--max-duration", args.maxDurationMs) end
  return argv
end

--- CreateLoop{prompt, strategy, exitCondition, ...}: starts a detached run
--- (`beat loop <M.loop_argv(args)> --detach`) and returns {success, loopId,
--- ...} at once.
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
