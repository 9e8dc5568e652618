--- beat.mcp.catalog: the tools `beat mcp start` offers — Backbeat's loop
--- tools under their names and argument names (CreateLoop, LoopStatus,
--- ListLoops, PauseLoop, ResumeLoop, CancelLoop), and beat's own (RunRecipe,
--- LoopReport, LoopDiff), each with its input and output JSON Schema.
---
--- The handlers of the read-only tools are in loops.lua; those that start
--- or steer loops in control.lua.
local json = require "beat.mcp.json"
local tools = require "beat.mcp.tools"
local runs = require "beat.mcp.runs"

local M = {}

local A = json.array

local function prop(kind, description, extra)
  local p = { type = kind, description = description }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

local function object(properties, required, extra)
  local o = { type = "object", properties = properties, additionalProperties = false }
  if required and #required > 0 then o.required = A(required) end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Output schemas allow fields they do not list: newer servers may add some.
local function output(properties, required)
  return { type = "object", properties = properties, required = A(required) }
end

local nullable = function(kind, description, extra)
  return prop(A { kind, "null" }, description, extra)
end

local LOOP_ID = prop("string", "The loop's id (its run id, e.g. \"mx4swm0d\"); a unique prefix works, and \"last\" names the newest loop.", { minLength = 1 })
local WORKDIR = prop("string", "Work tree the loop runs (or ran) in: an absolute path, or relative to the server's directory. Default: the directory the server was started in.", { minLength = 1 })

local STATUS = prop("string", "running, paused, starting; or how it ended: passed (retry: the check passed), completed (optimize: done), failed, stopped, cancelled, interrupted (stopped by a signal), crashed (its process died without an end record), missing (its run directory is gone).", { enum = A(runs.STATUSES) })

local LOOP_SUMMARY = {
  id = prop("string", "The loop's id."),
  strategy = prop("string", "retry or optimize (or a recipe's own strategy)."),
  status = STATUS,
  currentIteration = prop("integer", "The iteration in progress, or the last one run."),
  maxIterations = prop("integer", "The iteration limit; 0 = unlimited."),
  promptPreview = nullable("string", "The start of the prompt."),
  createdAt = nullable("string", "When the loop started (ISO 8601)."),
  updatedAt = nullable("string", "When the loop last recorded something (ISO 8601)."),
  workingDirectory = prop("string", "The work tree."),
  bestScore = nullable("number", "optimize: the best score so far."),
  reason = nullable("string", "Why it ended, once it has."),
  isPipeline = prop("boolean", "Whether each iteration runs pipeline steps (pipelineSteps)."),
  phase = prop("string", "While its process lives: starting, agent, guard, check, eval, cooldown, idle (between iterations) or paused; paused or finished once it has none."),
}

local DECISION = object({
  iteration = prop("integer", "Iteration number (0 is the baseline); a parallel run's round."),
  candidate = prop("integer", "A parallel run's candidate (1..N) in its round; absent otherwise."),
  status = prop("string", "keep, discard, pass, fail, crash, baseline, ..."),
  score = nullable("number", "The iteration's score."),
  summary = nullable("string", "Why it was decided so."),
}, { "iteration", "status" }, { additionalProperties = true })

local LOOP_DETAIL = {}
for k, v in pairs(LOOP_SUMMARY) do LOOP_DETAIL[k] = v end
for k, v in pairs {
  consecutiveFailures = nullable("integer", "Failed iterations in a row at the last decision."),
  maxConsecutiveFailures = nullable("integer", "The limit on failures in a row."),
  baselineScore = nullable("number", "optimize: the score of the unchanged work tree."),
  bestScoreText = nullable("string", "The best score as beat prints it (all metrics)."),
  baselineScoreText = nullable("string", "The baseline as beat prints it."),
  exitCondition = nullable("string", "The check (retry) or eval (optimize) command."),
  evalMode = prop("string", "shell: the command decides; agent: a judge agent does.", { enum = A { "shell", "agent" } }),
  evalDirection = nullable("string", "optimize: minimize or maximize."),
  cooldownMs = prop("integer", "Pause between iterations, in ms."),
  freshContext = prop("boolean", "Whether each iteration starts the agent afresh."),
  gitBranch = nullable("string", "The branch the best result is committed to at the end, if any."),
  completedAt = nullable("string", "When it ended (ISO 8601)."),
  costUsd = prop("number", "The agents' reported cost so far, in USD."),
  elapsedMs = prop("integer", "Time since the loop started (until it ended), in ms."),
  pid = nullable("integer", "The process running the loop (or that ran it)."),
  alive = prop("boolean", "Whether the loop's process is running."),
  pauseRequested = prop("boolean", "A pause is pending: the loop pauses after the current iteration's decision."),
  resumable = prop("boolean", "ResumeLoop continues it (paused, interrupted, crashed)."),
  detached = prop("boolean", "Whether it runs detached (CreateLoop, beat loop --detach)."),
  runDirectory = prop("string", "The run directory: journal.jsonl, results.tsv, iter-N/ logs."),
  outputPath = nullable("string", "A detached loop's output (output.log)."),
  lastDecisions = prop("array", "The last decisions, oldest first.", { items = DECISION }),
  diffStat = nullable("object", "Best vs base: filesChanged, insertions, deletions (null without git snapshots).", {
    properties = { filesChanged = prop("integer", "Files changed."), insertions = prop("integer", "Lines added."),
      deletions = prop("integer", "Lines removed.") } }),
} do LOOP_DETAIL[k] = v end

local ITERATION = object({
  iterationNumber = prop("integer", "Iteration number (0 is the baseline)."),
  status = prop("string", "The decision, or running."),
  score = nullable("number", "Its score."),
  scoreText = nullable("string", "Its score as beat prints it."),
  exitCode = nullable("integer", "Exit code of the check or eval."),
  errorMessage = nullable("string", "The agent's or the command's error."),
  summary = nullable("string", "Why it was decided so."),
  snapshot = nullable("string", "The snapshot commit of the work tree after the agent."),
  costUsd = nullable("number", "The agent's reported cost."),
  durationMs = nullable("integer", "How long the iteration took."),
  startedAt = nullable("string", "ISO 8601."),
  completedAt = nullable("string", "ISO 8601."),
}, { "iterationNumber", "status" }, { additionalProperties = true })

local function summary_required()
  return { "id", "strategy", "status", "currentIteration", "maxIterations", "workingDirectory" }
end

M.tools = {
  {
    name = "CreateLoop",
    title = "Start a loop",
    description = "Start a loop that runs a coding agent on a work tree again and again: retry until a check command passes, or optimize a score printed by an eval command (keeping only improvements). Returns the loopId at once; the loop runs on its own, and survives this server. Every iteration is snapshotted in git; the best result is left in the work tree as an uncommitted diff.",
    inputSchema = object({
      prompt = prop("string", "The task for the agent, given at every iteration. Required unless pipelineSteps are given.", { minLength = 1, maxLength = 100000 }),
      strategy = prop("string", "retry: until exitCondition exits 0. optimize: improve the score exitCondition prints.", { enum = A { "retry", "optimize" } }),
      exitCondition = prop("string", "Shell command run after each iteration: retry's check (exit 0 = done), or optimize's eval (its output's last number is the score, see metric). Required unless evalMode is \"agent\" (then the judge sees its output, if given).", { minLength = 1, maxLength = 4000 }),
      evalMode = prop("string", "shell: exitCondition decides. agent: a second agent, in a fresh session, reviews each iteration (the diff, and exitCondition's output if given) and returns a verdict: pass/fail (retry) or a score 0-100 (optimize).", { enum = A { "shell", "agent" }, default = "shell" }),
      evalPrompt = prop("string", "evalMode agent: what the judge judges (default: is the task done / how well is it done).", { minLength = 1, maxLength = 100000 }),
      judgeAgent = prop("string", "evalMode agent: the judge's agent, as agent takes it (default: the same as agent).", { minLength = 1 }),
      evalDirection = prop("string", "optimize: whether lower or higher scores are better. Default: minimize (maximize with evalMode \"agent\").", { enum = A { "minimize", "maximize" } }),
      evalTimeout = prop("integer", "Timeout of the check or eval command, in ms.", { minimum = 1000, default = 60000 }),
      workingDirectory = WORKDIR,
      maxIterations = prop("integer", "Iteration limit; 0 = unlimited (then a time, cost or failure bound ends it).", { minimum = 0, default = 10 }),
      maxConsecutiveFailures = prop("integer", "Stop after this many failed iterations in a row (beat always bounds them: Backbeat's 0 = no limit is not offered).", { minimum = 1, default = 3 }),
      cooldownMs = prop("integer", "Pause between iterations, in ms.", { minimum = 0, default = 0 }),
      freshContext = prop("boolean", "true: each iteration starts the agent afresh; false: continue its previous session.", { default = true }),
      pipelineSteps = prop("array", "Each iteration runs these prompts in order, each a fresh agent session, then the check or eval once; prompt is then optional context.", { items = prop("string", "A step's prompt.", { minLength = 1, maxLength = 100000 }), minItems = 1, maxItems = 20 }),
      agent = prop("string", "claude, codex, gemini, aider, or any command line (the prompt is appended as its last argument). Default: claude.", { minLength = 1 }),
      model = prop("string", "The agent's model.", { minLength = 1 }),
      systemPrompt = prop("string", "Extra instructions added to the agent's system prompt.", { minLength = 1 }),
      permissionMode = prop("string", "The agent's permission mode (claude: acceptEdits, the default, bypassPermissions, ...; codex: its --sandbox; gemini: its --approval-mode).", { minLength = 1 }),
      allowedTools = prop("string", "Tools the agent may use unasked, comma-separated (claude: \"Bash(npm test),Edit\"): let it run the check itself.", { minLength = 1 }),
      gitBranch = prop("string", "Also commit the best result to this branch at the end (the work tree keeps it as an uncommitted diff either way).", { minLength = 1 }),
      priority = prop("string", "Accepted for Backbeat compatibility; no effect (every loop starts at once).", { enum = A { "P0", "P1", "P2" } }),
      guards = prop("array", "optimize: commands that must exit 0 before an iteration's score counts (e.g. the tests).", { items = prop("string", "A shell command.", { minLength = 1 }), maxItems = 20 }),
      runs = prop("integer", "optimize: run the eval this many times per iteration; improvements must be significant.", { minimum = 1, maximum = 100 }),
      metric = prop("string", "optimize: take the score from \"NAME: value\" or \"NAME=value\" lines of the eval's output.", { minLength = 1 }),
      minRelDelta = prop("number", "optimize: changes smaller than this fraction are noise (0.01 = 1%).", { minimum = 0 }),
      target = prop("number", "optimize: stop once the score reaches this."),
      maxCostUsd = prop("number", "Never start an iteration expected (the mean cost so far) to take the agents' cost past this many USD. An agent that reports no cost (a command line) needs costPerIterationUsd.", { minimum = 0 }),
      costPerIterationUsd = prop("number", "What an iteration costs when the agent reports none (and the estimate before the first one).", { minimum = 0 }),
      maxDurationMs = prop("integer", "Stop after this long, in ms.", { minimum = 1000 }),
    }, { "strategy" }),
    outputSchema = output({
      success = prop("boolean", "Whether the loop started."),
      loopId = prop("string", "The new loop's id: pass it to LoopStatus, PauseLoop, CancelLoop, ..."),
      strategy = prop("string", "retry or optimize."),
      status = STATUS,
      maxIterations = prop("integer", "0 = unlimited."),
      workingDirectory = prop("string", "The work tree."),
      runDirectory = prop("string", "Where the loop writes its journal and logs."),
      outputPath = prop("string", "The loop's output (output.log in the run directory)."),
      pid = prop("integer", "The loop's process."),
      message = prop("string", "What happened."),
    }, { "success", "loopId", "status" }),
    annotations = { title = "Start a loop", readOnlyHint = false, destructiveHint = false, idempotentHint = false, openWorldHint = true },
    handler = "control.CreateLoop",
  },
  {
    name = "LoopStatus",
    title = "Loop status",
    description = "The state of a loop: status, iteration i/N, phase, best score vs baseline, cost, elapsed time, the last decisions and the diff stat of the best result vs the start. With includeHistory, every iteration's outcome. With waitMs, waits (sending progress notifications) until the loop ends or, with waitFor \"iteration\", until its next decision.",
    inputSchema = object({
      loopId = LOOP_ID,
      includeHistory = prop("boolean", "Include the iterations.", { default = false }),
      historyLimit = prop("integer", "How many of the latest iterations to include.", { minimum = 1, maximum = 1000, default = 20 }),
      workingDirectory = WORKDIR,
      waitMs = prop("integer", "Wait up to this long (ms) before answering, while the loop runs: until it ends, or its next decision with waitFor \"iteration\". 0 answers at once.", { minimum = 0, maximum = 600000, default = 0 }),
      waitFor = prop("string", "With waitMs: \"end\" (the loop finishes) or \"iteration\" (its next decision).", { enum = A { "end", "iteration" }, default = "end" }),
    }, { "loopId" }),
    outputSchema = output({
      success = prop("boolean", "true"),
      loop = { type = "object", description = "The loop.", properties = LOOP_DETAIL, required = A(summary_required()) },
      iterations = prop("array", "With includeHistory: the latest iterations, oldest first.", { items = ITERATION }),
    }, { "success", "loop" }),
    annotations = { title = "Loop status", readOnlyHint = true, openWorldHint = false },
    handler = "loops.LoopStatus",
  },
  {
    name = "ListLoops",
    title = "List loops",
    description = "Every loop beat knows of (the per-user run index: loops of every work tree, started here or anywhere), newest first, with their status and progress; with workingDirectory, that work tree's only. status filters: \"completed\" also matches passed and stopped loops, \"cancelled\" also interrupted ones.",
    inputSchema = object({
      status = prop("string", "Only loops with this status.", { enum = A(runs.STATUSES) }),
      limit = prop("integer", "At most this many loops.", { minimum = 1, maximum = 100, default = 20 }),
      workingDirectory = prop("string", "Only the loops of this work tree (absolute, or relative to the server's directory). Default: every loop.", { minLength = 1 }),
    }),
    outputSchema = output({
      success = prop("boolean", "true"),
      loops = prop("array", "The loops, newest first.", {
        items = { type = "object", properties = LOOP_SUMMARY, required = A(summary_required()) } }),
      count = prop("integer", "How many are listed."),
      workingDirectory = prop("string", "With workingDirectory: the work tree whose loops these are."),
    }, { "success", "loops", "count" }),
    annotations = { title = "List loops", readOnlyHint = true, openWorldHint = false },
    handler = "loops.ListLoops",
  },
  {
    name = "PauseLoop",
    title = "Pause a loop",
    description = "Pause a running loop: after the current iteration's decision (default), or at once with force (the current iteration is ended and discarded). Nothing of the loop runs while it is paused; ResumeLoop continues it.",
    inputSchema = object({
      loopId = LOOP_ID,
      force = prop("boolean", "End the current iteration now and discard it.", { default = false }),
      workingDirectory = WORKDIR,
    }, { "loopId" }),
    outputSchema = output({
      success = prop("boolean", "Whether the loop was paused."),
      loopId = prop("string", "The loop."),
      status = STATUS,
      force = prop("boolean", "Whether the current iteration was ended."),
      pauseRequested = prop("boolean", "The loop pauses (or has paused)."),
      message = prop("string", "What happened."),
    }, { "success", "loopId" }),
    annotations = { title = "Pause a loop", readOnlyHint = false, destructiveHint = false, idempotentHint = true, openWorldHint = false },
    handler = "control.PauseLoop",
  },
  {
    name = "ResumeLoop",
    title = "Resume a loop",
    description = "Continue a paused loop, or one that crashed or was interrupted, from its journal: same options, counters carried over, the iteration that was in flight run again.",
    inputSchema = object({
      loopId = LOOP_ID,
      workingDirectory = WORKDIR,
    }, { "loopId" }),
    outputSchema = output({
      success = prop("boolean", "Whether the loop runs again."),
      loopId = prop("string", "The loop."),
      status = STATUS,
      resumedBy = prop("string", "request: the paused process goes on; process: a new detached process continues it from its journal.", { enum = A { "request", "process" } }),
      pid = nullable("integer", "The loop's process."),
      message = prop("string", "What happened."),
    }, { "success", "loopId" }),
    annotations = { title = "Resume a loop", readOnlyHint = false, destructiveHint = false, idempotentHint = true, openWorldHint = true },
    handler = "control.ResumeLoop",
  },
  {
    name = "CancelLoop",
    title = "Cancel a loop",
    description = "Stop a loop for good: the running agent or command is ended at once, the work tree is left at the best result, and the journal ends with \"cancelled\" and the reason.",
    inputSchema = object({
      loopId = LOOP_ID,
      reason = prop("string", "Why, recorded in the journal.", { maxLength = 1000 }),
      cancelTasks = prop("boolean", "Accepted for Backbeat compatibility: the running agent or command is always ended.", { default = true }),
      workingDirectory = WORKDIR,
    }, { "loopId" }),
    outputSchema = output({
      success = prop("boolean", "Whether the loop was cancelled."),
      loopId = prop("string", "The loop."),
      status = STATUS,
      reason = nullable("string", "The reason given."),
      message = prop("string", "What happened."),
    }, { "success", "loopId" }),
    annotations = { title = "Cancel a loop", readOnlyHint = false, destructiveHint = true, idempotentHint = true, openWorldHint = false },
    handler = "control.CancelLoop",
  },
  {
    name = "RunRecipe",
    title = "Run a recipe",
    description = "Run a beat recipe (a Lua file, e.g. one of beat's recipes/) detached, like `beat run FILE ARGS...`: the loops it starts are listed by ListLoops.",
    inputSchema = object({
      recipe = prop("string", "Path of the recipe file (absolute, or relative to workingDirectory).", { minLength = 1 }),
      args = prop("array", "Arguments passed to the recipe.", { items = prop("string", "An argument."), maxItems = 100 }),
      set = prop("object", "Options overriding those of every loop the recipe runs, like --set KEY=VALUE (max_iterations, agent_timeout, ...).", {
        additionalProperties = { type = A { "string", "number", "boolean" } } }),
      workingDirectory = WORKDIR,
    }, { "recipe" }),
    outputSchema = output({
      success = prop("boolean", "Whether the recipe started."),
      recipe = prop("string", "The recipe."),
      workingDirectory = prop("string", "Where it runs."),
      loopIds = prop("array", "The loops it started so far.", { items = prop("string", "A loop id.") }),
      logPath = prop("string", "The recipe's output."),
      pid = prop("integer", "The recipe's process."),
      message = prop("string", "What happened."),
    }, { "success", "recipe" }),
    annotations = { title = "Run a recipe", readOnlyHint = false, destructiveHint = false, idempotentHint = false, openWorldHint = true },
    handler = "control.RunRecipe",
  },
  {
    name = "LoopReport",
    title = "Loop report",
    description = "A loop's report: its outcome and a chart of the score per iteration as text, and its results table (one row per iteration: snapshot, score, decision, delta, cost, duration, summary); with format \"svg\" or \"html\", the chart (or a self-contained HTML page) is also written into the run directory and its path returned.",
    inputSchema = object({
      loopId = LOOP_ID,
      format = prop("string", "text; svg or html also write report.svg or report.html into the run directory.", { enum = A { "text", "svg", "html" }, default = "text" }),
      workingDirectory = WORKDIR,
    }, { "loopId" }),
    outputSchema = output({
      success = prop("boolean", "true"),
      loopId = prop("string", "The loop."),
      status = STATUS,
      text = prop("string", "The report as text."),
      rows = prop("array", "The results table, one object per iteration.", { items = { type = "object" } }),
      svgPath = nullable("string", "The SVG chart (report.svg in the run directory), once written."),
      htmlPath = nullable("string", "The HTML report (report.html), once written."),
    }, { "success", "loopId", "text" }),
    annotations = { title = "Loop report", readOnlyHint = false, destructiveHint = false, idempotentHint = true, openWorldHint = false },
    handler = "loops.LoopReport",
  },
  {
    name = "LoopDiff",
    title = "Loop diff",
    description = "The patch of a loop's best result (or of one iteration's snapshot) against the work tree as it was before the loop: what the loop changed.",
    inputSchema = object({
      loopId = LOOP_ID,
      iteration = prop("integer", "Diff this iteration's snapshot instead of the best one.", { minimum = 1 }),
      patch = prop("boolean", "Include the patch text (false: only the files and line counts).", { default = true }),
      maxBytes = prop("integer", "Cut the patch at this many bytes.", { minimum = 1024, maximum = 8388608, default = 1048576 }),
      workingDirectory = WORKDIR,
    }, { "loopId" }),
    outputSchema = output({
      success = prop("boolean", "true"),
      loopId = prop("string", "The loop."),
      from = prop("string", "base: the work tree before the loop."),
      to = prop("string", "best, or iter-N."),
      fromCommit = prop("string", "The base snapshot."),
      toCommit = prop("string", "The compared snapshot."),
      filesChanged = prop("integer", "Files changed."),
      insertions = prop("integer", "Lines added."),
      deletions = prop("integer", "Lines removed."),
      files = prop("array", "Each changed file.", { items = object({
        path = prop("string", "Path in the work tree."),
        status = prop("string", "added, deleted, modified or typechange."),
        insertions = prop("integer", "Lines added."),
        deletions = prop("integer", "Lines removed."),
        binary = prop("boolean", "Whether it is a binary file."),
      }, { "path", "status" }, { additionalProperties = true }) }),
      patch = nullable("string", "The unified diff (null with patch false)."),
      truncated = prop("boolean", "Whether the patch was cut at maxBytes."),
      patchBytes = prop("integer", "The full patch's size."),
    }, { "success", "loopId", "from", "to", "filesChanged", "files" }),
    annotations = { title = "Loop diff", readOnlyHint = true, openWorldHint = false },
    handler = "loops.LoopDiff",
  },
}

--- A registry holding every tool, with its handler.
---@return beat.mcp.Registry
function M.registry()
  local reg = tools.new()
  local modules = { control = require "beat.mcp.control", loops = require "beat.mcp.loops" }
  for _, t in ipairs(M.tools) do
    local mod, fn = t.handler:match("^(%w+)%.(%w+)$")
    local def = {}
    for k, v in pairs(t) do def[k] = v end
    def.handler = assert(modules[mod][fn], t.handler)
    reg:add(def)
  end
  return reg
end

return M
