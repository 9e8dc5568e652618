--- beat.loop.run: the Run object a strategy drives — its events, hooks,
--- limits, the agent, commands and measurements, and the decisions it
--- records. Its methods live in three files: here, loop/control.lua (pause,
--- resume, cancel, sleeping, the iterations) and loop/tree.lua (snapshots
--- and restores of the work tree); beat.loop loads all three.
local beat = require "beat"
local task = require "beat.task"
local duration = require "beat.duration"

local R = {}

--- Whether v can be called: a function, or a table whose metatable has
--- __call (a beat.judge).
---@param v any
---@return boolean
function R.callable(v)
  if type(v) == "function" then return true end
  local mt = type(v) == "table" and getmetatable(v)
  return mt and mt.__call ~= nil or false
end

--- A command as the log and the prompt show it: a shell string as it is, an
--- argv list joined, a Lua check by its tostring ("judge: claude").
---@param cmd string|string[]|function|table
---@return string
function R.command_text(cmd)
  if type(cmd) == "string" then return cmd end
  if type(cmd) == "function" then return "(a Lua function)" end
  if R.callable(cmd) then return tostring(cmd) end
  return table.concat(cmd, " ")
end

--- The iteration an id counts for: n for n, and the round R for a parallel
--- candidate's id "R.K" (candidate K of round R); nil for anything else.
---@param id any
---@return integer|nil
function R.round_of(id)
  if type(id) == "number" then return math.tointeger(id) end   -- 3.0 as JSON gives it back
  if type(id) ~= "string" then return nil end
  return math.tointeger(tonumber(id:match("^(%d+)%.%d+$") or id:match("^%d+$")))
end

-- A mistake in what the user asked for (not a repository, a missing agent,
-- a locked work tree): `beat run` and `beat loop` report it on one line and
-- exit 2, the same error object cli.usage_error raises.
local function usage_error(msg)
  error(setmetatable({ usage = msg }, { __tostring = function(e) return e.usage end }), 0)
end

-- A failure of a user hook: stops the run, names the hook.
local HookError = {}
HookError.__index = HookError
HookError.__tostring = function(e) return ("hook %s failed: %s"):format(e.hook, e.traceback) end

---@class beat.Run
---@field id string
---@field opts table
---@field repo table|nil beat.git repo (nil with git = false)
---@field journal beat.Journal
---@field base string|nil snapshot of the work tree before the run
---@field best string|nil snapshot the work tree returns to on discard
---@field iteration integer
---@field cost_usd number
---@field started number
---@field phase_name? "agent"|"guard"|"eval"|"check"|"cooldown"|"paused"|"idle" what the run is doing now (set by run:phase; the method owns the name `phase`)
---@field phase_started? number beat.clock() when that phase began
---@field listeners (fun(event: string, record: table))[]
---@field resumed? beat.RunResumed set when the run continues a dead one that had decided iterations
local Run = {}
Run.__index = Run

---@class beat.RunResumed
---@field iteration integer the last iteration the dead run decided (0: only the baseline or first check)
---@field status string that decision's status
---@field state? table what the strategy gave `run:record{state = ...}` with that decision
---@field stop? table {status, reason} when that decision ended the run

local PHASES = { agent = true, guard = true, eval = true, check = true, cooldown = true,
  paused = true, idle = true }

-- A line for the console, not the journal: emitted as a `message` event,
-- which beat.ui shows (and --json, -q leave out).
local function say(run, fmt, ...)
  run:emit("message", { text = fmt:format(...) })
end

--- Calls every listener with (event, record): each journal record written
--- through the run (`run:write`), with its type as event, and phase changes
--- ("phase", {phase = name, iteration = n, ...}). A listener that raises is
--- reported once on stderr and otherwise ignored: watching never stops a run.
---@param event string
---@param rec table
function Run:emit(event, rec)
  for i, fn in ipairs(self.listeners) do
    local ok, err = pcall(fn, event, rec)
    if not ok and not self.listener_failed then
      self.listener_failed = true
      io.stderr:write(("beat: run %s: listener %d failed: %s\n"):format(self.id, i, tostring(err)))
    end
  end
end

--- Appends a journal record and emits it (see Run:emit). `opts.sync =
--- false` skips the fsync, for records that are cheap to lose in a machine
--- crash (phase changes, process ids); `opts.repair = false` for a record
--- written while a command runs (see beat.journal's Journal:write).
---@param event string
---@param fields? table
---@param opts? {sync?: boolean, repair?: boolean}
---@return table record
function Run:write(event, fields, opts)
  local rec = self.journal:write(event, fields, opts)
  self:emit(event, rec)
  return rec
end

--- Enters a phase: "agent", "guard", "eval", "check", "cooldown", "paused"
--- or "idle" (between a decision and the next phase). Journaled as a
--- `phase` record (not fsync'd) so `beat loop status` and other readers see
--- it, and emitted. Control requests are read here too, so one is followed
--- even if its wake-up signal was lost.
---@param name string
function Run:phase(name)
  if not PHASES[name] then error(("run:phase: unknown phase %q"):format(tostring(name)), 2) end
  self.phase_name, self.phase_started = name, beat.clock()
  self:write("phase", { phase = name, iteration = self.iteration, elapsed = self:elapsed() }, { sync = false })
  if self.channel then self.channel:poll() end
end

--- Calls the user's hook `name` if set; an error in it stops the run with
--- the hook's name and traceback.
function Run:hook(name, ...)
  local fn = self.opts[name]
  if not fn then return nil end
  local res = table.pack(xpcall(fn, function(e)
    if task.is_cancelled(e) then return e end
    return debug.traceback(tostring(e), 2)
  end, ...))
  if not res[1] then
    if task.is_cancelled(res[2]) then error(res[2], 0) end
    error(setmetatable({ hook = name, traceback = res[2] }, HookError), 0)
  end
  return table.unpack(res, 2, res.n)
end

--- Seconds since the run started.
function Run:elapsed()
  return beat.clock() - self.started
end

--- Why the run must stop now for a budget (max_duration, max_cost_usd), or nil.
function Run:budget_stop()
  local o = self.opts
  if o.max_duration and self:elapsed() >= o.max_duration then
    return ("time budget of %s used"):format(duration.format(o.max_duration))
  end
  return require("beat.budget").stop(self)
end

--- A timeout for something run now: `t` (nil: none) cut to the time left
--- under max_duration, so no command, agent or pause outlives the budget.
---@param t? number seconds
---@return number|nil
function Run:limit(t)
  if self.opts.max_duration then
    local left = math.max(0.1, self.opts.max_duration - self:elapsed())
    return t and math.min(t, left) or left
  end
  return t
end

--- The agent's timeout for this iteration: its own, cut to the time left.
function Run:agent_timeout()
  return self:limit(self.opts.agent_timeout)
end

--- Pauses for the cooldown (cut to the time left) after iteration n,
--- Calls a hook that must return text (prompt, feedback); anything else
--- stops the run as a failing hook.
function Run:text_hook(name, ...)
  local text = self:hook(name, ...)
  if type(text) ~= "string" then
    error(setmetatable({ hook = name, traceback = ("must return a string, returned %s")
      :format(type(text)) }, HookError), 0)
  end
  return text
end

--- Runs the agent for iteration n; waits out rate limits (not failures).
--- Returns the agent's result (ok=false with error on a crash or timeout).
---@param n integer
---@param prompt string
---@param extra? table more fields for agent:run (history, ...)
function Run:propose(n, prompt, extra)
  self:checkpoint()
  local dir = self.journal:iter_dir(n)
  prompt = require("beat.protect").prompt(self, n, prompt)   -- the files it may not change
  local waits, delay = 0, self.opts.rate_limit_cooldown or 30
  while true do
    self:phase("agent")
    local req = {
      prompt = prompt, cwd = self.cwd, timeout = self:agent_timeout(), iteration = n,
      transcript = dir .. "/agent.log",
      env = { BEAT_RUN_ID = self.id, BEAT_ITERATION = tostring(n) },
      continue_context = self.opts.continue_context,
      -- lets an agent add records (a pipeline's steps) to the journal
      journal = function(event, fields) fields.iteration = n; self.journal:write(event, fields) end,
    }
    local ex = self.opts.agent_executor or self.opts.executor
    if ex then req.executor = require("beat.executor").bind(ex, { run_id = self.id, iteration = tostring(n) }) end
    for k, v in pairs(extra or {}) do req[k] = v end
    local ok, res = pcall(self.opts.agent.run, self.opts.agent, req)
    self.journal:check()   -- the agent may have deleted or changed .beat/
    require("beat.redact").file(req.transcript) -- the agent's output may echo a secret
    if not ok then
      if task.is_cancelled(res) then error(res, 0) end
      res = { ok = false, error = "agent raised: " .. tostring(res) }
    end
    if type(res) ~= "table" then res = { ok = false, error = "agent returned " .. type(res) } end
    require("beat.budget").charge(self, n, res)
    self:write("agent", {
      iteration = n, ok = res.ok, code = res.code, error = res.error, cost_usd = res.cost_usd,
      tokens = res.tokens, turns = res.turns, duration = res.duration,
      rate_limited = res.rate_limited, retry_after = res.retry_after,
      text = type(res.text) == "string" and res.text:sub(1, 2000) or nil,
    })
    if not res.rate_limited then return res end
    waits = waits + 1
    local limit = self.opts.max_rate_limit_waits or 10
    if waits > limit then
      res.ok, res.error = false, ("rate limited %d times in a row"):format(waits)
      return res
    end
    local wait = tonumber(res.retry_after) or delay
    delay = math.min(delay * 2, 900)
    if self.opts.max_duration then
      local left = self.opts.max_duration - self:elapsed()
      if left <= wait then return res end
    end
    self:write("rate_limited", { iteration = n, wait = wait })
    beat.sleep(wait)
  end
end

--- Runs a check or eval command in the work tree (or `at.cwd`, with
--- `at.env`), here or through the strategy's `eval_executor`/`executor`,
--- logging its output to iter-N/<name>.log. Returns the exec result
--- (`infra_error` set when the executor, not the command, failed), or a
--- result with code 127 and `error` when it could not start. `cmd` may also
--- be a Lua function (or callable table, such as a beat.judge) called as
--- `cmd{run =, iteration =, name =, cwd =, timeout =}`, returning a result
--- shaped like beat.exec's: {code, stdout?, stderr?, timed_out?, error?}.
---@param n integer|string
---@param name string "check", "eval", "guard-1", ...
---@param cmd string|string[]|function|table
---@param timeout? number
---@param at? {cwd?: string, env?: table} another directory (a candidate's worktree) and environment
function Run:command(n, name, cmd, timeout, at)
  at = at or {}
  self:phase(name:match("^guard") and "guard" or name:match("^check") and "check" or "eval")
  if not at.cwd then self.since[#self.since + 1] = name end
  local eopts = { cwd = at.cwd or self.cwd, env = at.env, timeout = self:limit(timeout), max_output = 256 * 1024 }
  local ex = self.opts.eval_executor or self.opts.executor
  local r, err
  if R.callable(cmd) then
    r = cmd { run = self, iteration = n, name = name, cwd = eopts.cwd, timeout = eopts.timeout }
    if type(r) ~= "table" or math.type(r.code) ~= "integer" then
      error(("%s: a Lua %s must return a table with an integer code, got %s"):format(name, name, type(r)), 0)
    end
  elseif ex then
    eopts.run_id, eopts.iteration = self.id, tostring(n)
    r, err = ex:exec(cmd, eopts)
  else
    r, err = beat.exec(cmd, eopts)
  end
  self.journal:check()   -- a command may have deleted or changed .beat/ too
  if not r then
    r = { code = 127, signal = 0, stdout = "", stderr = err, error = err, duration = 0,
          timed_out = false }
  end
  local dir = self.journal:iter_dir(n)
  local log = io.open(("%s/%s.log"):format(dir, name), "wb") -- a log: no temp file, no fsync
  if log then
    log:write(require("beat.redact").text(
      ("$ %s\n# exit %d%s, %.2fs\n--- stdout\n%s\n--- stderr\n%s\n"):format(
        R.command_text(cmd), r.code,
        r.infra_error and (" (infrastructure: %s)"):format(r.infra_error) or r.timed_out and " (timed out)" or "",
        r.duration or 0, r.stdout or "", r.stderr or "")))
    log:close()
  end
  self:write(name:match("^%a+"), {
    iteration = n, name = name, code = r.code, signal = r.signal, timed_out = r.timed_out,
    duration = r.duration, error = r.error, infra = r.infra, infra_error = r.infra_error,
    job_id = r.job_id, node = r.node,
  })
  return r
end

--- Measures a command repeatedly in the work tree (beat.measure: runs,
--- warmup, score, timeout cut to the time left) and journals the values as
--- an `eval` record. Returns the measurement, or nil and the reason (and
--- the executor's `infra_error` when its machinery, not the command, failed).
---@param n integer|string
---@param cmd string|string[]
---@param opts table options of beat.measure
function Run:measure(n, cmd, opts)
  if not (opts and opts.cwd) then self.since[#self.since + 1] = "eval" end
  local o = { cwd = self.cwd }
  for k, v in pairs(opts or {}) do o[k] = v end
  o.timeout = self:limit(o.timeout)
  self:phase("eval")
  -- through the executor: each run is one command there; its machinery failing ends the measurement
  local ex, infra = self.opts.eval_executor or self.opts.executor, nil
  if ex then
    local argv = cmd
    cmd = function()
      local r, err = ex:exec(argv, { cwd = o.cwd, env = o.env, timeout = o.timeout,
        max_output = 256 * 1024, run_id = self.id, iteration = tostring(n) })
      if r and r.infra_error then
        infra = r.infra_error
        return nil, "infrastructure: " .. r.infra_error
      end
      return r, err
    end
  end
  local m, why = beat.measure(cmd, o)
  self.journal:check()
  self:write("eval", { iteration = n, runs = o.runs, ok = m ~= nil, error = why,
    values = m and m.values, value = m and m.value, stddev = m and m.stddev, infra_error = infra })
  return m, why, infra
end

-- Moves files too large to snapshot out of the work tree, into the run's
-- directory (or removes them when that is on another file system); returns
-- The results.tsv row of a decision record.
function R.tsv_row(row)
  return {
    iteration = row.iteration, snapshot = type(row.snapshot) == "string" and row.snapshot:sub(1, 12) or nil,
    score = row.score or row.score_text, status = row.status, delta = row.delta,
    cost_usd = row.cost_usd, duration_s = row.duration_s, summary = row.summary,
  }
end

--- Records an iteration's outcome: results.tsv row and a `decision` journal
--- record (which the console shows). Besides the row's own fields:
--- `history` is appended to run.history (what later prompts show);
--- `state` is what the strategy carries from one iteration to the next
--- (counters, the raw best score, the feedback text), and `stop` is
--- {status, reason} when this decision ends the run — both come back in
--- `run.resumed` when a dead run is resumed after this decision. The
--- record also keeps the run's own counters (best snapshot, consecutive
--- failures, elapsed time), so it is all a resume needs.
---@param row {iteration: integer|string, status: string, score?: any, score_text?: string, best_text?: string, delta?: any, cost_usd?: number, duration_s?: number, summary?: string, snapshot?: string, history?: table, state?: table, stop?: table}
function Run:record(row)
  if row.history then table.insert(self.history, row.history) end
  self.journal:row(R.tsv_row(row))
  local rec = {}
  for k, v in pairs(row) do rec[k] = v end
  rec.best, rec.consecutive_failures, rec.elapsed = self.best, self.consecutive_failures, self:elapsed()
  rec.best_score, rec.baseline_score = self.best_score, self.baseline_score
  local round = R.round_of(row.iteration) or 0   -- candidates "3.1", "3.2": one iteration, 3
  if round > 0 and not self.decided[round] then
    -- iterations above 0 with a decision are the run's count of iterations
    -- (`iterations` in run_end, the summary, `beat runs` and `beat show`)
    self.decided[round] = true
    self.completed = self.completed + 1
  end
  self:write("decision", rec)   -- the console shows it (beat.ui)
  self:phase("idle")
end

--- The state given to stop_when and on_* hooks.
function Run:state(extra)
  local s = { run_id = self.id, iteration = self.iteration, elapsed = self:elapsed(),
              cost_usd = self.cost_usd, best = self.best, base = self.base,
              consecutive_failures = self.consecutive_failures, history = self.history }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

--- Whether the user's stop_when hook asks to stop; returns the reason.
function Run:user_stop(extra)
  local v = self:hook("stop_when", self:state(extra))
  if v then return type(v) == "string" and v or "stop_when returned true" end
end


R.Run, R.HookError, R.usage_error, R.say = Run, HookError, usage_error, say
return R
