--- beat.mcp.runs: loops as the MCP tools show them. A loop is a run of
--- beat.runs (found through the per-user index from any directory; its
--- state — running, paused, crashed, ... — from the journal and its process);
--- this module turns its status table into Backbeat's field names
--- (loop.id, currentIteration, ...) plus beat's own, adding what only the
--- run_start record says (the prompt, the check or eval, the options) and,
--- for LoopStatus' history, each iteration's agent and command records.
local beat = require "beat"
local fs = require "beat.fs"
local json = require "beat.mcp.json"
local runs = require "beat.runs"

local M = {}

--- Every status a loop can show: beat.runs' states.
M.STATUSES = { table.unpack(runs.STATES) }

-- ListLoops' status filter: Backbeat's names match beat's equivalents too.
local FILTER = {
  completed = { completed = true, passed = true, stopped = true },
  cancelled = { cancelled = true, interrupted = true },
}

--- ISO 8601 UTC time with milliseconds, or nil.
---@param t? number seconds since the epoch
function M.iso(t)
  if type(t) ~= "number" or t ~= t or t == math.huge or t == -math.huge then return nil end
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

--- The work tree root for a directory (default: the current one): the git
--- work tree's top, or dir itself outside git; nil and why when it is not
--- a directory.
---@param dir? string
---@return string|nil root
---@return string? err
function M.root(dir)
  dir = dir or fs.cwd()
  if not fs.is_dir(dir) then return nil, ("workingDirectory %s is not a directory"):format(dir) end
  local repo = beat.git.open { dir = dir, watch = false }
  if repo then
    local root = repo:path()
    repo:close()
    return root
  end
  return fs.realpath(dir) or dir
end

--- A message of beat.runs (written for `beat loop ...` users) in the words
--- of the tools: loops and loopIds, the tools to call instead of commands.
---@param msg string
---@return string
function M.message(msg)
  msg = tostring(msg)
  msg = msg:gsub("^run id must be", "argument loopId must be")
  msg = msg:gsub("^run id '([^']*)'", "loopId %1")
  msg = msg:gsub("^no run '([^']*)'", "no loop %1")
  msg = msg:gsub("^no runs in the work tree", "no loops in the work tree")
  msg = msg:gsub("^no runs yet", "no loops yet")
  msg = msg:gsub("^run ", "loop ")
  msg = msg:gsub("%(see 'beat loop list %-%-all'%)", "(ListLoops lists them)")
  msg = msg:gsub("'beat loop status ([%w_%-]+)'", 'LoopStatus {"loopId": "%1"}')
  msg = msg:gsub("'beat loop cancel ([%w_%-]+)'", 'CancelLoop {"loopId": "%1"}')
  msg = msg:gsub("'beat loop resume ([%w_%-]+)'", 'ResumeLoop {"loopId": "%1"}')
  return msg
end

-- The run_start record: the first line of the journal (nil before the
-- run's process wrote it). Only that line is read.
local function start_record(dir)
  local f = io.open(dir .. "/journal.jsonl", "rb")
  if not f then return nil end
  local line = f:read("l")
  f:close()
  if not line then return nil end
  local ok, rec = pcall(json.decode, line)
  if ok and type(rec) == "table" and rec.event == "run_start" then return rec end
  return nil
end

local function command_text(v)
  if type(v) == "string" then return v end
  if type(v) == "table" then
    if v.mode ~= nil then return type(v.command) == "string" and v.command or nil end   -- a judge
    local parts = {}
    for i, a in ipairs(v) do parts[i] = tostring(a) end
    return #parts > 0 and table.concat(parts, " ") or nil
  end
  return nil
end

local function number_or_nil(v)
  if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return nil
end

local function ms(seconds)
  return number_or_nil(seconds) and math.floor(seconds * 1000 + 0.5) or nil
end

local function or_null(v)
  if v == nil then return json.null end
  return v
end

-- Where the loop is: beat.runs' phase while its process lives.
local function phase_of(st)
  if st.alive then
    if st.state == "starting" then return "starting" end
    return st.phase or "starting"
  end
  if st.state == "paused" then return "paused" end
  return "finished"
end

-- Each iteration's records, from the whole journal (LoopStatus' history).
local function iterations(dir, limit)
  local recs = (require("beat.journal").open(dir) or { records = function() return {} end }):records()
  local round_of = require("beat.loop").round_of   -- a parallel run's candidate "3.2" is in round 3
  local by_iter = {}
  for _, r in ipairs(recs) do
    local n = round_of(r.iteration)
    if n then
      local key = tostring(r.iteration)
      by_iter[key] = by_iter[key] or { iteration = n,
        candidate = math.tointeger(tonumber(key:match("^%d+%.(%d+)$"))) }
      local it = by_iter[key]
      if r.event == "agent" then
        it.agent = r
      elseif r.event == "check" or r.event == "eval" then
        it.command = r
      elseif r.event == "decision" then
        it.decision = r
      end
    end
  end
  local ns = {}
  for key in pairs(by_iter) do ns[#ns + 1] = key end
  table.sort(ns, function(a, b)
    local x, y = by_iter[a], by_iter[b]
    if x.iteration ~= y.iteration then return x.iteration < y.iteration end
    return (x.candidate or 0) < (y.candidate or 0)
  end)
  local out = json.array()
  for i = math.max(1, #ns - limit + 1), #ns do
    local it = by_iter[ns[i]]
    local d, a, c = it.decision or {}, it.agent or {}, it.command or {}
    local t_start = number_or_nil(a.time) and number_or_nil(a.duration) and (a.time - a.duration)
      or number_or_nil(a.time) or number_or_nil(c.time)
    out[#out + 1] = {
      iterationNumber = it.iteration, candidate = it.candidate,
      status = it.decision and tostring(d.status) or "running",
      score = or_null(number_or_nil(d.score)),
      scoreText = or_null(type(d.score_text) == "string" and d.score_text or nil),
      exitCode = or_null(math.tointeger(c.code)),
      errorMessage = or_null(type(a.error) == "string" and a.error or (type(c.error) == "string" and c.error) or nil),
      summary = or_null(type(d.summary) == "string" and d.summary or nil),
      snapshot = or_null(type(d.snapshot) == "string" and d.snapshot or nil),
      costUsd = or_null(number_or_nil(a.cost_usd)),
      durationMs = or_null(ms(d.duration_s)),
      startedAt = or_null(M.iso(t_start)),
      completedAt = or_null(it.decision and M.iso(number_or_nil(d.time)) or nil),
    }
  end
  return out
end

--- A loop as the tools show it, from its beat.runs status table (see
--- beat.RunStatus): Backbeat's `loop` fields plus beat's.
--- opts.history (integer): also the last N iterations, read from the
--- journal.
---@param st beat.RunStatus
---@param opts? {history?: integer}
---@return table summary
---@return table? iterations
function M.summary(st, opts)
  opts = opts or {}
  local start = start_record(st.dir) or {}
  local cfg = type(start.config) == "table" and start.config or {}
  local strategy = st.strategy or start.strategy or "?"
  local judge = type(cfg.check) == "table" and cfg.check.mode ~= nil or type(cfg.eval) == "table" and cfg.eval.mode ~= nil
  local jstat = fs.stat(st.journal)
  local s = {
    id = st.id,
    strategy = strategy,
    status = st.state,
    phase = phase_of(st),
    currentIteration = st.iteration or 0,
    maxIterations = st.max_iterations or math.tointeger(cfg.max_iterations) or 0,
    consecutiveFailures = or_null(st.consecutive_failures),
    maxConsecutiveFailures = or_null(math.tointeger(cfg.max_consecutive_failures)),
    bestScore = or_null(st.best_score),
    baselineScore = or_null(st.baseline_score),
    bestScoreText = or_null(type(st.best_text) == "string" and st.best_text or nil),
    baselineScoreText = or_null(type(st.baseline_text) == "string" and st.baseline_text or nil),
    exitCondition = or_null(command_text(cfg.check) or command_text(cfg.eval)),
    evalMode = judge and "agent" or "shell",
    evalDirection = or_null(strategy == "optimize" and (cfg.direction or "minimize") or nil),
    cooldownMs = ms(cfg.cooldown) or 0,
    freshContext = not cfg.continue_context,
    promptPreview = or_null(preview(cfg.prompt, 80)),
    workingDirectory = st.root or start.cwd or fs.dirname(fs.dirname(fs.dirname(st.dir))),
    gitBranch = or_null(type(cfg.commit_to) == "string" and cfg.commit_to or nil),
    createdAt = or_null(M.iso(st.started)),
    updatedAt = or_null(M.iso(jstat and jstat.mtime or nil)),
    completedAt = or_null(M.iso(st.ended)),
    reason = or_null(type(st.reason) == "string" and st.reason or nil),
    costUsd = st.cost_usd or 0,
    elapsedMs = ms(st.elapsed) or 0,
    pid = or_null(st.pid),
    alive = st.alive == true,
    pauseRequested = st.pause_requested == true,
    resumable = st.resumable == true,
    detached = st.detached == true,
    runDirectory = st.dir,
    outputPath = or_null(st.output),
    isPipeline = type(cfg.agent) == "table" and cfg.agent.name == "pipeline",
  }
  s.lastDecisions = json.array()
  for i = math.max(1, #st.decisions - 4), #st.decisions do
    local d = st.decisions[i]
    s.lastDecisions[#s.lastDecisions + 1] = {
      iteration = d.iteration or 0, candidate = d.candidate, status = tostring(d.status or "?"),
      score = or_null(number_or_nil(d.score)), summary = or_null(type(d.summary) == "string" and d.summary or nil),
    }
  end
  s.diffStat = st.diff and { filesChanged = st.diff.files_changed, insertions = st.diff.insertions,
    deletions = st.diff.deletions } or json.null
  local iters
  if opts.history then iters = iterations(st.dir, opts.history) end
  return s, iters
end

--- Whether a status passes ListLoops' filter.
---@param status string
---@param filter? string
function M.matches(status, filter)
  if filter == nil then return true end
  if FILTER[filter] then return FILTER[filter][status] == true end
  return status == filter
end

--- Whether the filter is one of Backbeat's names that match several states.
---@param filter? string
function M.aliased(filter)
  return filter ~= nil and FILTER[filter] ~= nil
end

return M
