--- beat.runs.status: the state of a run, read from its run directory (the
--- journal is the source of truth) and, for its process, the index.
---
--- States:
---
---   starting     reserved by --detach; its process has not written run_start yet
---   running      its process is alive (an iteration, a check, an eval, a cooldown)
---   paused       waiting after a pause request with nothing running — or, after
---                a forced pause, stopped with nothing running at all
---   passed, failed, completed, stopped, cancelled    ended (run_end)
---   interrupted  stopped by a signal (Ctrl-C, SIGTERM); can be resumed
---   crashed      its process is gone without an end record (kill -9, OOM, reboot);
---                can be resumed
---   missing      the index knows it, its run directory is gone
local fs = require "beat.fs"
local journal = require "beat.journal"
local replay = require "beat.runs.replay"
local proc = require "beat.runs.proc"

local M = {}

--- Every state a run can be in.
M.STATES = { "starting", "running", "paused", "passed", "failed", "completed", "stopped",
  "cancelled", "interrupted", "crashed", "missing" }

--- States whose run is over for good (no pause, resume or cancel).
M.FINAL = { passed = true, failed = true, completed = true, stopped = true, cancelled = true }

---@class beat.RunDecision
---@field iteration integer
---@field status string keep, discard, crash, pass, fail, baseline
---@field score? number
---@field score_text? string
---@field best_text? string
---@field summary? string
---@field cost_usd? number
---@field duration_s? number
---@field consecutive_failures? integer failed iterations in a row after this decision
---@field time number

---@class beat.RunStatus
---@field id string
---@field root? string the work tree
---@field dir string the run directory
---@field journal string the journal's path
---@field output? string output.log of a detached run (nil when there is none)
---@field strategy? string
---@field state string see the module comment
---@field reason? string why it ended (from the end record), or what is known of a crash
---@field final boolean ended for good
---@field resumable boolean `beat loop resume` continues it (paused, interrupted, crashed)
---@field alive boolean its process is running
---@field pid? integer
---@field detached boolean
---@field iteration integer the iteration under way (or the last decided)
---@field max_iterations? integer 0 = no limit
---@field phase? string agent, guard, eval, check, cooldown, paused, idle (while alive)
---@field phase_since? number when that phase began (seconds since the epoch)
---@field pause_requested boolean a pause is pending (the run pauses after this iteration's decision)
---@field best_text? string
---@field baseline_text? string
---@field best_score? number the best score as a number (optimize, a single-number objective)
---@field baseline_score? number the baseline's score as a number (likewise)
---@field consecutive_failures? integer failed iterations in a row at the last decision
---@field cost_usd number
---@field elapsed number seconds of run time (pauses excluded)
---@field started? number seconds since the epoch
---@field ended? number
---@field resumes integer
---@field decisions beat.RunDecision[] the last ones (or all with history), oldest first
---@field base? string the base snapshot (the work tree before the run)
---@field best? string the best snapshot so far
---@field diff? {files_changed: integer, insertions: integer, deletions: integer, files: table[]} best vs base (with opts.diff)
---@field warning? string e.g. a torn journal line

local function finite(v)
  if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return nil
end

-- Round R and candidate K of an iteration id: n, or "R.K" for a parallel candidate.
local function round_candidate(id)
  if type(id) == "string" then
    local r, k = id:match("^(%d+)%.(%d+)$")
    if r then return math.tointeger(tonumber(r)), math.tointeger(tonumber(k)) end
  end
  return math.tointeger(tonumber(id)), nil
end

local function decision(d)
  local round, candidate = round_candidate(d.iteration)
  return { iteration = round, candidate = candidate, status = d.status, score = type(d.score) == "number" and d.score or nil,
    score_text = d.score_text, best_text = d.best_text, summary = d.summary, cost_usd = d.cost_usd,
    duration_s = d.duration_s, consecutive_failures = math.tointeger(d.consecutive_failures), time = d.time }
end

--- The status of the run in `dir` (a run directory); `entry` is its index
--- entry when known (for the process of a run that has not started yet).
---@param dir string
---@param entry? beat.IndexEntry
---@param opts? {history?: boolean, history_limit?: integer, decisions?: integer, diff?: boolean}
---@return beat.RunStatus
function M.inspect(dir, entry, opts)
  opts = opts or {}
  local id = (entry and entry.id) or dir:match("([^/]+)/*$")
  local s = { id = id, dir = dir, journal = dir .. "/journal.jsonl", root = entry and entry.root,
    final = false, resumable = false, alive = false, detached = entry and entry.detached == true or false,
    iteration = 0, cost_usd = 0, elapsed = 0, resumes = 0, decisions = {}, pause_requested = false }
  local out = (entry and entry.output) or (dir .. "/output.log")
  if fs.exists(out) then s.output = out end
  local j = journal.open(dir)
  if not j then
    s.state = "missing"
    s.reason = ("the run directory %s is gone"):format(dir)
    if entry and entry.status and entry.status ~= "running" then s.reason = s.reason .. " (it had " .. entry.status .. ")" end
    return s
  end
  local records, warning = j:records()
  s.warning = warning
  local r = replay.read(records)
  local start = r.start or {}
  s.strategy = start.strategy or (entry and entry.strategy)
  s.root = s.root or (start.cwd and start.cwd)
  s.started = start.time or (entry and entry.started)
  s.max_iterations = math.tointeger(start.max_iterations)
    or (type(start.config) == "table" and math.tointeger(start.config.max_iterations)) or nil
  s.detached = s.detached or start.detached == true
  s.resumes = r.resumes
  s.cost_usd = r.cost_usd
  s.iteration = r.iteration
  local owner = r.owner
  if not owner and entry and entry.pid then
    owner = { pid = math.tointeger(entry.pid), start_time = math.tointeger(entry.start_time), boot_id = entry.boot_id }
  end
  s.pid = owner and owner.pid
  local d = r.last_decision or {}
  s.best_text, s.baseline_text = d.best_score, d.baseline_score
  s.consecutive_failures = math.tointeger(d.consecutive_failures)
  local state = type(d.state) == "table" and d.state or {}
  s.best_score = finite(state.best)
  s.baseline_score = finite(state.baseline)
  if r.ended then
    local e = r.ended
    s.state, s.reason, s.ended = e.status or "failed", e.reason, e.time
    s.best_text = e.best_score or s.best_text
    s.baseline_text = e.baseline_score or s.baseline_text
    s.elapsed = tonumber(e.elapsed) or r.elapsed
    s.cost_usd = tonumber(e.cost_usd) or s.cost_usd
    s.final = M.FINAL[s.state] == true
    s.resumable = replay.RESUMABLE_END[s.state] == true
  elseif proc.alive(owner) then
    s.alive = true
    s.state = not r.start and "starting" or r.paused and "paused" or "running"
    s.pause_requested = r.pause_requested and not r.paused
    -- a request the loop has not read yet counts too
    for _, name in ipairs(fs.list(dir .. "/requests") or {}) do
      if name:match("%.json$") then
        local ok, req = pcall(require("cjson").decode, fs.read(dir .. "/requests/" .. name) or "")
        if ok and type(req) == "table" then
          if req.request == "pause" and not req.force then s.pause_requested = not r.paused
          elseif req.request == "resume" then s.pause_requested = false end
        end
      end
    end
    if r.phase then s.phase, s.phase_since = r.phase.phase, r.phase.time end
    s.elapsed = r.elapsed
    if not r.paused and r.elapsed_time then s.elapsed = r.elapsed + math.max(0, require("beat").now() - r.elapsed_time) end
  else
    s.state = "crashed"
    s.resumable = r.start ~= nil
    s.elapsed = r.elapsed
    s.reason = r.start and ("its process (pid %s) is gone without an end record; last record at %s")
        :format(tostring(owner and owner.pid or "?"), os.date("%Y-%m-%d %H:%M:%S", math.floor(r.last_time or 0)))
      or ("it died before it started%s"):format(s.output and (" (see " .. s.output .. ")") or "")
  end
  s.base = start.base
  s.best = (r.ended and r.ended.best) or d.best or start.base
  if opts.diff and s.base and s.best and s.root then
    local repo = require("beat.git").open { dir = s.root, watch = false }
    local df = repo and repo:diff { from = s.base, to = s.best, patch = false }
    if df then
      local files = {}
      for i, f in ipairs(df.files) do
        files[i] = { path = f.path, status = f.status, insertions = f.insertions, deletions = f.deletions }
      end
      s.diff = { files_changed = df.files_changed, insertions = df.insertions, deletions = df.deletions, files = files }
    end
    if repo then repo:close() end
  end
  local want = opts.history and (opts.history_limit or math.huge) or (opts.decisions or 5)
  for i = math.max(1, #r.decisions - want + 1), #r.decisions do
    s.decisions[#s.decisions + 1] = decision(r.decisions[i])
  end
  return s
end

return M
