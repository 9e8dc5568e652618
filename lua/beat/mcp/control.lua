--- beat.mcp.control: the handlers of the tools that start and steer loops —
--- CreateLoop, PauseLoop, ResumeLoop, CancelLoop, RunRecipe.
---
--- A loop is a detached run (beat.runs): a process of its own, in a session
--- of its own, found by any beat through the per-user index. The server
--- starts it and goes back to serving; closing the client or ending the
--- server does not touch it, and a new server sees it. Each handler
--- receives the checked arguments (defaults filled, see catalog.lua for the
--- schemas) and ctx (ctx.cwd, ctx:progress, ctx:log, ctx:sleep), and
--- returns `structured, text` matching the tool's outputSchema, or
--- `nil, message` for a tool error.
local beat = require "beat"
local fs = require "beat.fs"
local runs = require "beat.runs"
local mruns = require "beat.mcp.runs"

local M = {}

-- CreateLoop's arguments that only optimize takes, with their flags.
local OPTIMIZE_ONLY = { "evalDirection", "guards", "runs", "metric", "minRelDelta", "target" }

-- `beat loop` flags → CreateLoop arguments, for messages of `beat loop`.
local FLAG_ARG = {
  ["--until"] = "exitCondition", ["--eval"] = "exitCondition", ["--direction"] = "evalDirection",
  ["--eval-timeout"] = "evalTimeout", ["-w"] = "workingDirectory", ["--working-directory"] = "workingDirectory",
  ["--max-iterations"] = "maxIterations", ["--max-failures"] = "maxConsecutiveFailures",
  ["--cooldown"] = "cooldownMs", ["--continue-context"] = "freshContext", ["--agent"] = "agent", ["-a"] = "agent",
  ["--model"] = "model", ["--system-prompt"] = "systemPrompt", ["--git-branch"] = "gitBranch",
  ["--commit-to"] = "gitBranch", ["--guard"] = "guards", ["--runs"] = "runs", ["--metric"] = "metric",
  ["--min-rel-delta"] = "minRelDelta", ["--target"] = "target", ["--max-cost"] = "maxCostUsd",
  ["--cost-per-iteration"] = "costPerIterationUsd", ["--max-duration"] = "maxDurationMs",
  ["--eval-mode"] = "evalMode", ["--eval-prompt"] = "evalPrompt", ["--judge-agent"] = "judgeAgent",
  ["--pipeline"] = "pipelineSteps", ["--step"] = "pipelineSteps", ["--strategy"] = "strategy",
  ["--permission-mode"] = "permissionMode", ["--allowed-tools"] = "allowedTools",
}

--- A message of `beat loop` (a usage error of the command line CreateLoop
--- built) in the tool's words: its flags named as the arguments they came
--- from, its commands as the tools to call.
---@param msg string
---@return string
function M.loop_message(msg)
  msg = tostring(msg):gsub("^loop: ", ""):gsub("^agent ", "argument agent: agent ", 1)
  -- the work tree is busy: name the loop that has it, and the tools that reach it
  local id, pid = msg:match("in use by run ([%w_%-]+) %(pid (%d+)%)")
  if id then
    local root = msg:match("one loop per work tree, ([^)]+)%)") or "the work tree"
    return ("the work tree %s is in use by loop %s (pid %s): one loop per work tree. "
      .. 'LoopStatus {"loopId": "%s"} shows it; CancelLoop {"loopId": "%s"} stops it'):format(root, id, pid, id, id)
  end
  pid = msg:match("in use by a run that is starting %(pid (%d+)%)")
  if pid then
    local root = msg:match("one loop per work tree, ([^)]+)%)") or "the work tree"
    return ("the work tree %s is in use by a loop that is starting (pid %s): one loop per work tree. "
      .. "ListLoops shows it in a moment"):format(root, pid)
  end
  local text = msg
  msg = msg:gsub("()(%-%-?[%a][%w%-]*)", function(at, flag)
    local arg = FLAG_ARG[flag]
    -- a flag stands alone: at the start, or after a space, a quote or a parenthesis
    if not arg or (at > 1 and not text:sub(at - 1, at - 1):match("[%s'\"(]")) then return nil end
    if at > 1 then return arg end
    return "argument " .. arg .. (text:sub(at + #flag, at + #flag) == ":" and "" or ":")
  end)
  return mruns.message(msg)
end

--- The `beat loop` arguments (after "loop") that run what CreateLoop's
--- checked arguments ask for, or nil and a tool error naming the argument.
--- Durations go as bare milliseconds, which `beat loop` reads as such; the
--- prompt goes last, after "--" (a prompt may start with a dash).
---@param args table
---@return string[]|nil argv
---@return string? err
function M.loop_argv(args)
  local function bad(fmt, ...) return nil, "CreateLoop: " .. fmt:format(...) end
  local judged = args.evalMode == "agent"
  local steps = args.pipelineSteps
  if not args.prompt and not steps then
    return bad("missing required argument prompt (a string; it may be left out with pipelineSteps)")
  end
  if not args.exitCondition and not judged then
    return bad("missing required argument exitCondition (a string: the check or eval command; it may be left out with evalMode \"agent\")")
  end
  if not judged then
    for _, name in ipairs { "evalPrompt", "judgeAgent" } do
      if args[name] ~= nil then return bad("argument %s needs evalMode \"agent\"", name) end
    end
  else
    for _, name in ipairs { "runs", "metric" } do
      if args[name] ~= nil then return bad("argument %s needs evalMode \"shell\" (a command's output to read)", name) end
    end
  end
  if args.strategy == "retry" then
    for _, name in ipairs(OPTIMIZE_ONLY) do
      if args[name] ~= nil and not (name == "evalDirection" and args[name] == "minimize") then
        return bad("argument %s needs strategy \"optimize\"", name)
      end
    end
  end
  if steps and args.freshContext == false then
    return bad("argument freshContext false does not go with pipelineSteps: each step is a fresh agent session")
  end
  local argv = {}
  local function add(...) for _, v in ipairs { ... } do argv[#argv + 1] = tostring(v) end end
  add("--strategy", args.strategy)
  if args.exitCondition then add(args.strategy == "retry" and "--until" or "--eval", args.exitCondition) end
  if judged then
    add("--eval-mode", "agent")
    if args.evalPrompt then add("--eval-prompt", args.evalPrompt) end
    if args.judgeAgent then add("--judge-agent", args.judgeAgent) end
  end
  if args.strategy == "optimize" then
    add("--direction", args.evalDirection or (judged and "maximize" or "minimize"))
    for _, g in ipairs(args.guards or {}) do add("--guard", g) end
    if args.runs then add("--runs", args.runs) end
    if args.metric then add("--metric", args.metric) end
    if args.minRelDelta then add("--min-rel-delta", args.minRelDelta) end
    if args.target then add("--target", args.target) end
  end
  if steps then
    add("--pipeline")
    for _, s in ipairs(steps) do add("--step", s) end
  end
  if args.evalTimeout then add("--eval-timeout", args.evalTimeout) end
  if args.workingDirectory then add("-w", args.workingDirectory) end
  if args.maxIterations then add("--max-iterations", args.maxIterations) end
  if args.maxConsecutiveFailures then add("--max-failures", args.maxConsecutiveFailures) end
  if args.cooldownMs and args.cooldownMs > 0 then add("--cooldown", args.cooldownMs) end
  if args.freshContext == false then add("--continue-context") end
  if args.agent then add("-a", args.agent) end
  if args.model then add("--model", args.model) end
  if args.systemPrompt then add("--system-prompt", args.systemPrompt) end
  if args.permissionMode then add("--permission-mode", args.permissionMode) end
  if args.allowedTools then add("--allowed-tools", args.allowedTools) end
  if args.gitBranch then add("--git-branch", args.gitBranch) end
  if args.maxCostUsd then add("--max-cost", args.maxCostUsd) end
  if args.costPerIterationUsd then add("--cost-per-iteration", args.costPerIterationUsd) end
  if args.maxDurationMs then add("--max-duration", args.maxDurationMs) end
  if args.prompt then add("--", args.prompt) end
  return argv
end

-- The directory args.workingDirectory names (relative to the server's),
-- default the server's; nil and a tool error when it is not one.
local function directory(tool, args, ctx)
  local dir = args.workingDirectory or ctx.cwd or fs.cwd()
  if dir:sub(1, 1) ~= "/" then dir = (ctx.cwd or fs.cwd()) .. "/" .. dir end
  local real = fs.realpath(dir)
  if not real or not fs.is_dir(real) then
    return nil, ("%s: argument workingDirectory: %s is not a directory"):format(tool, dir)
  end
  return real
end

-- The loop's status, or nil and a tool error.
local function find(tool, args, ctx)
  local root, err = require("beat.mcp.loops").work_tree(args, ctx)
  if not root then return nil, ("%s: %s"):format(tool, err) end
  local st, why = runs.status(args.loopId, { root = root })
  if not st then return nil, ("%s: %s"):format(tool, mruns.message(why)) end
  return st
end

-- Polls the loop's status every 0.1 s until done(st) holds, `limit`
-- seconds pass or the server closes; returns the last status.
local function await_state(ctx, st, limit, done)
  local deadline = beat.clock() + limit
  while not done(st) and beat.clock() < deadline do
    if not ctx:sleep(0.1) then break end
    st = runs.status(st.id, { root = st.root }) or st
  end
  return st
end

--- CreateLoop{prompt, strategy, exitCondition, ...}: starts a detached run
--- (`beat loop <M.loop_argv(args)> --detach`) and returns {success, loopId,
--- ...} at once. A work tree busy with another loop is a tool error naming
--- that loop.
function M.CreateLoop(args, ctx)
  local cwd, err = directory("CreateLoop", args, ctx)
  if not cwd then return nil, err end
  if args.workingDirectory then args.workingDirectory = cwd end
  local argv, aerr = M.loop_argv(args)
  if not argv then return nil, aerr end
  local id, info = runs.start_detached { args = argv, cwd = cwd }
  if not id then return nil, "CreateLoop: " .. M.loop_message(info) end
  local st = runs.status(id) or { state = "starting", root = cwd }
  ctx:log("info", ("CreateLoop: started loop %s (pid %d) in %s"):format(id, info.pid, tostring(st.root)))
  local out = {
    success = true, loopId = id, strategy = args.strategy, status = st.state,
    maxIterations = args.maxIterations, workingDirectory = st.root or cwd, runDirectory = info.dir,
    outputPath = info.output, pid = info.pid,
    message = ("loop %s started: it runs on its own (LoopStatus follows it; its output goes to %s)"):format(id, info.output),
  }
  return out, ("loop %s started (%s, pid %d) in %s\nLoopStatus {\"loopId\": \"%s\"} follows it; output: %s")
    :format(id, args.strategy, info.pid, out.workingDirectory, id, info.output)
end

--- PauseLoop{loopId, force}: after the current iteration's decision (the
--- answer comes at once, the loop shows pauseRequested until it pauses),
--- or with force at once: the iteration is ended and run again on resume.
function M.PauseLoop(args, ctx)
  local st, err = find("PauseLoop", args, ctx)
  if not st then return nil, err end
  local asked, why = runs.pause(st.id, { force = args.force, root = st.root })
  if not asked then return nil, "PauseLoop: " .. mruns.message(why) end
  local message
  if args.force then
    -- the iteration is ended at once: say how it stands once it has (a few seconds at most)
    st = await_state(ctx, asked, 10, function(s) return s.state ~= "running" and s.state ~= "starting" end)
    message = st.state == "paused" and ("loop %s is paused: its iteration %d was ended and runs again on ResumeLoop"):format(st.id, st.iteration)
      or ("loop %s is ending its iteration %d to pause (LoopStatus shows when it has)"):format(st.id, st.iteration)
  else
    -- (the status read now could miss the request the loop is taking in)
    st = asked
    message = ("loop %s pauses after iteration %d's decision; nothing of it runs then (LoopStatus shows when it has; ResumeLoop continues it)")
      :format(st.id, st.iteration)
  end
  return { success = true, loopId = st.id, status = st.state, force = args.force, pauseRequested = true,
    message = message }, message
end

--- ResumeLoop{loopId}: a paused run goes on; a crashed, interrupted or
--- force-paused one gets a new detached process that continues it from its
--- journal.
function M.ResumeLoop(args, ctx)
  local st, err = find("ResumeLoop", args, ctx)
  if not st then return nil, err end
  local res, why = runs.resume(st.id, { detach = true, root = st.root })
  if not res then return nil, "ResumeLoop: " .. mruns.message(why) end
  local message
  if res.resumed_by == "request" then
    message = ("loop %s goes on from its pause"):format(st.id)
  else
    message = ("loop %s continues from its journal in a new process (pid %s): the iteration that was under way runs again")
      :format(st.id, tostring(res.pid))
  end
  local now = runs.status(st.id, { root = st.root }) or res
  return { success = true, loopId = st.id, status = now.state, resumedBy = res.resumed_by, pid = res.pid,
    message = message }, message
end

--- CancelLoop{loopId, reason, cancelTasks}: what runs is ended at once, the
--- work tree goes to the best snapshot, the journal ends with `cancelled`
--- and the reason. Waits (up to 30 s, with progress notifications) for the
--- loop to have ended.
function M.CancelLoop(args, ctx)
  local st, err = find("CancelLoop", args, ctx)
  if not st then return nil, err end
  local reason = args.reason and args.reason ~= "" and args.reason or "by request (CancelLoop)"
  -- a live loop is asked (and watched until it has ended); one whose process is gone is closed here
  local asked, why = runs.cancel(st.id, reason, { root = st.root, quiet = true })
  if not asked then return nil, "CancelLoop: " .. mruns.message(why) end
  local t0 = beat.clock()
  st = await_state(ctx, asked, 30, function(s)
    ctx:progress(math.floor((beat.clock() - t0) * 1000), 30000, ("loop %s: %s"):format(s.id, s.state))
    return not s.alive
  end)
  local message = st.alive and ("loop %s is being cancelled (LoopStatus shows when it has ended)"):format(st.id)
    or ("loop %s is %s; the work tree holds its best result (`beat restore %s base` undoes it)"):format(st.id, st.state, st.id)
  return { success = true, loopId = st.id, status = st.state, reason = reason, message = message }, message
end

--- RunRecipe{recipe, args, set, workingDirectory}: a recipe, detached
--- (`beat run FILE ARGS...` in a session of its own).
function M.RunRecipe(args, ctx)
  local cwd, err = directory("RunRecipe", args, ctx)
  if not cwd then return nil, err end
  local file = args.recipe
  if file:sub(1, 1) ~= "/" then file = cwd .. "/" .. file end
  if not fs.exists(file) or fs.is_dir(file) then
    return nil, ("RunRecipe: argument recipe: %s is not a file"):format(file)
  end
  local set = {}
  for k, v in pairs(args.set or {}) do set[k] = tostring(v) end
  local id, info = runs.start_detached { recipe = file, recipe_args = args.args or {}, set = set, cwd = cwd }
  if not id then return nil, "RunRecipe: " .. M.loop_message(info) end
  local message = ("recipe %s started (pid %d): its first loop is %s; its output goes to %s"):format(file, info.pid, id, info.output)
  return { success = true, recipe = file, workingDirectory = cwd, loopIds = require("beat.mcp.json").array { id },
    logPath = info.output, pid = info.pid, message = message }, message
end

return M
