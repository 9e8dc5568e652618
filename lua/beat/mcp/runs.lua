--- beat.mcp.runs: what the MCP tools know of runs, read from their run
--- directories (`<work tree>/.beat/runs/<id>/journal.jsonl`) — read-only;
--- the journal is the source of truth.
---
--- Until runs are recorded in a per-user index (detached runs), a run is
--- found in the work tree the client names (workingDirectory) or the
--- server's current directory, and a run with no end record is `running`
--- while the process that wrote its run_start record lives, else `crashed`.
--- The summaries use Backbeat's field names (loop.id, currentIteration, …)
--- plus beat's own.
local beat = require "beat"
local journal = require "beat.journal"
local fs = require "beat.fs"
local json = require "beat.mcp.json"

local M = {}

--- Every status a run can show.
M.STATUSES = { "starting", "running", "paused", "passed", "completed", "failed", "stopped",
  "cancelled", "interrupted", "crashed" }

-- ListLoops' status filter: Backbeat's names match beat's equivalents too.
local FILTER = {
  completed = { completed = true, passed = true, stopped = true },
  cancelled = { cancelled = true, interrupted = true },
}

--- ISO 8601 UTC time with milliseconds, or nil.
---@param t? number seconds since the epoch
function M.iso(t)
  if type(t) ~= "number" then return nil end
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. (".%03dZ"):format(math.floor((t - s) * 1000))
end

local function preview(s, n)
  if type(s) ~= "string" then return nil end
  s = s:gsub("%s+", " ")
  if utf8.len(s) and utf8.len(s) > n then
    s = s:sub(1, utf8.offset(s, n - 2) - 1) .. "..."
  end
  return s
end

-- The boot time, for telling a live process from a reused pid.
local function boot_time()
  local data = fs.read("/proc/stat") or ""
  return tonumber(data:match("\nbtime (%d+)"))
end

--- Whether the process that wrote a run_start record at `since` is alive:
--- pid exists, is not a zombie, and started no later than the record (a
--- younger process is another one that got the same pid).
---@param pid any
---@param since? number
function M.alive(pid, since)
  pid = math.tointeger(pid)
  if not pid or pid <= 0 then return false end
  local stat = fs.read(("/proc/%d/stat"):format(pid))
  if not stat then return false end
  local rest = stat:match("^.*%) (.*)$")
  if not rest then return false end
  local fields = {}
  for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
  if fields[1] == "Z" or fields[1] == "X" then return false end
  -- rest starts at field 3 (state); starttime is field 22, in clock ticks
  local ticks, btime = tonumber(fields[20]), boot_time()
  if ticks and btime and since then
    local started = btime + ticks / 100   -- USER_HZ is 100 on Linux
    if started > since + 2 then return false end
  end
  return true
end

--- The work tree root holding runs, for a directory (default: the current
--- one): the git work tree's top, or dir itself outside git.
---@param dir? string
---@return string|nil root
---@return string? err
---@return table? repo
function M.root(dir)
  dir = dir or fs.cwd()
  if not fs.is_dir(dir) then return nil, ("workingDirectory %s is not a directory"):format(dir) end
  local repo = beat.git.open { dir = dir, watch = false }
  if repo then return (repo:path()), nil, repo end
  return fs.realpath(dir) or dir
end

--- Runs of a work tree, newest first: {id, dir}.
---@param root string
function M.list(root)
  local runs = journal.list(root .. "/.beat/runs")
  local out = {}
  for i = #runs, 1, -1 do out[#out + 1] = runs[i] end
  return out
end

--- The run whose id is `id` or starts with it ("last" for the newest).
---@param root string
---@param id string
---@return table|nil run {id, dir}
---@return string? err
function M.find(root, id)
  local runs = M.list(root)
  if #runs == 0 then return nil, ("no runs in %s/.beat/runs"):format(root) end
  if id == "last" or id == "latest" then return runs[1] end
  local found
  for _, r in ipairs(runs) do
    if r.id == id then return r end
    if r.id:sub(1, #id) == id then
      if found then return nil, ("loopId %s is ambiguous: %s, %s, ..."):format(id, found.id, r.id) end
      found = r
    end
  end
  if not found then
    return nil, ("no loop %s in %s/.beat/runs (ListLoops shows the loops there)"):format(id, root)
  end
  return found
end

local function command_text(v)
  if type(v) == "string" then return v end
  if type(v) == "table" then
    local parts = {}
    for i, a in ipairs(v) do parts[i] = tostring(a) end
    return table.concat(parts, " ")
  end
  return nil
end

local function number_or_nil(v)
  if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return nil
end

-- Where a running loop is, from its last record.
local function phase_of(last, strategy)
  local e = last.event
  if e == "phase" then return last.phase end
  if e == "run_start" then return "baseline" end
  if e == "agent" then return strategy == "retry" and "check" or "eval" end
  if e == "check" or e == "eval" or e == "guard" then return "deciding" end
  if e == "decision" then return "agent" end
  if e == "rate_limited" then return "rate-limited" end
  return e or "starting"
end

--- Reads a run's journal into its summary (Backbeat's `loop` fields plus
--- beat's). opts.history (integer): also the last N iterations; opts.diff:
--- the diff stat of best vs base (needs opts.repo).
---@param run {id: string, dir: string}
---@param opts? {history?: integer, repo?: table, diff?: boolean, decisions?: integer}
---@return table summary
---@return table? iterations
---@return string? warning
function M.summary(run, opts)
  opts = opts or {}
  local j = assert(journal.open(run.dir))
  local recs, warning = j:records()
  local start = recs[1] and recs[1].event == "run_start" and recs[1] or {}
  local last = recs[#recs] or {}
  local cfg = type(start.config) == "table" and start.config or {}
  local strategy = start.strategy or "?"

  local ended = (last.event == "run_end" or last.event == "interrupted") and last or nil
  local status
  if #recs == 0 then
    status = "starting"
  elseif ended then
    status = last.event == "interrupted" and "interrupted" or tostring(last.status or "completed")
  elseif M.alive(start.pid, start.time) then
    status = "running"
  else
    status = "crashed"
  end

  local decisions, by_iter = {}, {}
  local current, cost = 0, 0
  local round_of = require("beat.loop").round_of   -- a parallel run's candidate "3.2" is in round 3
  for _, r in ipairs(recs) do
    local n = round_of(r.iteration)
    if n and n > current then current = n end
    if n then
      by_iter[n] = by_iter[n] or { iteration = n }
      local it = by_iter[n]
      if r.event == "agent" then
        cost = cost + (number_or_nil(r.cost_usd) or 0)
        it.agent = r
      elseif r.event == "check" or r.event == "eval" then
        it.command = r
      elseif r.event == "decision" then
        it.decision = r
        decisions[#decisions + 1] = r
      end
    end
  end
  if ended and number_or_nil(ended.cost_usd) then cost = ended.cost_usd end

  local best, baseline
  for _, d in ipairs(decisions) do
    if d.status == "baseline" then baseline = number_or_nil(d.score) end
    if d.status == "baseline" or d.status == "keep" or d.status == "pass" then
      best = number_or_nil(d.score) or best
    end
  end

  local started = number_or_nil(start.time)
  local elapsed
  if ended and number_or_nil(ended.elapsed) then
    elapsed = ended.elapsed
  elseif started then
    elapsed = (status == "running" and beat.now() or (number_or_nil(last.time) or started)) - started
  end

  -- after a decision, the next iteration's agent is at work (its record
  -- comes when it is done)
  if status == "running" and last.event == "decision" then current = current + 1 end

  local last_decision = decisions[#decisions]
  local max_iter = math.tointeger(cfg.max_iterations) or 0
  local s = {
    id = run.id,
    strategy = strategy,
    status = status,
    phase = status == "running" and phase_of(last, strategy) or "finished",
    currentIteration = current,
    maxIterations = max_iter,
    consecutiveFailures = last_decision and math.tointeger(last_decision.consecutive_failures) or json.null,
    maxConsecutiveFailures = math.tointeger(cfg.max_consecutive_failures) or json.null,
    bestScore = best or json.null,
    baselineScore = baseline or json.null,
    bestScoreText = ended and type(ended.best_score) == "string" and ended.best_score or json.null,
    baselineScoreText = ended and type(ended.baseline_score) == "string" and ended.baseline_score or json.null,
    exitCondition = command_text(cfg.check) or command_text(cfg.eval) or json.null,
    evalDirection = strategy == "optimize" and (cfg.direction or "minimize") or json.null,
    cooldownMs = math.floor((number_or_nil(cfg.cooldown) or 0) * 1000 + 0.5),
    freshContext = not cfg.continue_context,
    promptPreview = preview(cfg.prompt, 80) or json.null,
    workingDirectory = start.cwd or fs.dirname(fs.dirname(fs.dirname(run.dir))),
    gitBranch = type(cfg.commit_to) == "string" and cfg.commit_to or json.null,
    createdAt = M.iso(started) or json.null,
    updatedAt = M.iso(number_or_nil(last.time)) or json.null,
    completedAt = ended and M.iso(number_or_nil(ended.time)) or json.null,
    reason = ended and type(ended.reason) == "string" and ended.reason or json.null,
    costUsd = cost,
    elapsedMs = elapsed and math.floor(elapsed * 1000 + 0.5) or 0,
    pid = math.tointeger(start.pid) or json.null,
    runDirectory = run.dir,
    isPipeline = false,
  }

  local keep = math.tointeger(opts.decisions) or 5
  s.lastDecisions = json.array()
  for i = math.max(1, #decisions - keep + 1), #decisions do
    local d = decisions[i]
    s.lastDecisions[#s.lastDecisions + 1] = {
      iteration = round_of(d.iteration) or 0, status = tostring(d.status or "?"),
      candidate = math.tointeger(tonumber(type(d.iteration) == "string" and d.iteration:match("^%d+%.(%d+)$"))),
      score = number_or_nil(d.score) or json.null, summary = type(d.summary) == "string" and d.summary or json.null,
    }
  end

  s.diffStat = json.null
  if opts.diff and opts.repo then
    local prefix = ("refs/beat/%s/"):format(run.id)
    local refs = {}
    for _, r in ipairs(opts.repo:refs(prefix) or {}) do refs[r.name:sub(#prefix + 1)] = r.id end
    if refs.base then
      local d = opts.repo:diff { from = refs.base, to = refs.best or refs.base, patch = false }
      if d then
        s.diffStat = { filesChanged = d.files_changed, insertions = d.insertions, deletions = d.deletions }
      end
    end
  end

  local iterations
  if opts.history then
    iterations = json.array()
    local ns = {}
    for n in pairs(by_iter) do ns[#ns + 1] = n end
    table.sort(ns)
    for i = math.max(1, #ns - opts.history + 1), #ns do
      local it = by_iter[ns[i]]
      local d, a, c = it.decision or {}, it.agent or {}, it.command or {}
      local t_start = number_or_nil(a.time) and number_or_nil(a.duration) and (a.time - a.duration)
        or number_or_nil(a.time) or number_or_nil(c.time)
      iterations[#iterations + 1] = {
        iterationNumber = it.iteration,
        status = it.decision and tostring(d.status) or "running",
        score = number_or_nil(d.score) or json.null,
        scoreText = type(d.score_text) == "string" and d.score_text or json.null,
        exitCode = math.tointeger(c.code) or json.null,
        errorMessage = type(a.error) == "string" and a.error or (type(c.error) == "string" and c.error) or json.null,
        summary = type(d.summary) == "string" and d.summary or json.null,
        snapshot = type(d.snapshot) == "string" and d.snapshot or json.null,
        costUsd = number_or_nil(a.cost_usd) or json.null,
        durationMs = number_or_nil(d.duration_s) and math.floor(d.duration_s * 1000 + 0.5) or json.null,
        startedAt = M.iso(t_start) or json.null,
        completedAt = it.decision and M.iso(number_or_nil(d.time)) or json.null,
      }
    end
  end
  return s, iterations, warning
end

--- Whether a summary's status passes ListLoops' filter.
---@param status string
---@param filter? string
function M.matches(status, filter)
  if filter == nil then return true end
  if FILTER[filter] then return FILTER[filter][status] == true end
  return status == filter
end

return M
