--- beat.loop: what every loop strategy shares — the run's safety and
--- bookkeeping — so a strategy file is only the loop itself.
---
--- `beat.loop.run(name, opts, body)` locks the work tree, snapshots it as
--- `base` (the user's uncommitted work lives on in that ref whatever
--- happens), opens the journal, calls `body(run)`, and whatever way body
--- ends — a result, an error, a failing hook, Ctrl-C — leaves the work tree
--- at the best snapshot, writes the last journal record, prints the summary
--- and returns the exit status (0 passed/completed/stopped, 1 failed or
--- cancelled, 130 interrupted).
---
--- A run is also a managed object: it is listed in the per-user index
--- (beat.runs.index), announces its phase (`run:phase`) and every journal
--- record to listeners (`run:emit`), follows control requests (pause,
--- resume, cancel: beat.runs.channel), and can be resumed from its journal
--- after its process died (`run.resumed`, `run:iterations()`).
local beat = require "beat"
local task = require "beat.task"
local journal = require "beat.journal"
local duration = require "beat.duration"
local fs = require "beat.fs"
local size = require "beat.size"

local M = {}

--- Overrides from `beat run recipe.lua --set key=value`, applied to the
--- options of every run the recipe starts.
M.overrides = {}

--- How this process was started, recorded in each run's run_start so
--- `beat loop resume` can start a dead run again the same way:
--- `{kind = "loop", args = {...}, dir = DIR}` (beat loop's arguments and
--- directory) or `{kind = "recipe", file = PATH, args = {...}, set = {...},
--- dir = DIR}` (beat run). Set by the command line.
---@type table|nil
M.origin = nil

--- What the next run of this process is, set by the command line and taken
--- by the first `beat.loop.run` that matches: `{id = ID}` a run id reserved
--- by `beat loop --detach` (the run directory exists), or `{resume = ID,
--- strategy = NAME, root = DIR}` continue that run from its journal.
---@type table|nil
M.pending = nil

--- Whether this process is a detached run (started by --detach).
M.detached = false

---@class beat.LoopOptions
---@field agent table an agent from beat.agent (claude, codex, tune, command, fn, ...)
---@field prompt string|fun(ctx: table): string the task for the agent, or a hook building it
---@field cwd? string the work tree (default: the current directory)
---@field git? boolean take snapshots (default true); false runs without any safety net
---@field max_iterations? integer
---@field max_consecutive_failures? integer
---@field max_no_progress? integer stop after the agent changed nothing this many times in a row
---@field cooldown? number|string pause between iterations
---@field max_duration? number|string stop after this long (checked between iterations; the agent's timeout is cut to fit)
---@field max_cost_usd? number never start an iteration expected to take the cost past this (see beat.budget)
---@field cost_per_iteration? number what an iteration costs when the agent reports no cost (and the estimate before the first)
---@field protect? string|string[] globs of files the agent may not change (see beat.protect)
---@field default_protect? boolean protect the files the check/eval/guard commands run (default true)
---@field agent_timeout? number|string
---@field continue_context? boolean resume the agent's previous session where the CLI can
---@field commit_to? string promote the best snapshot to this branch at the end
---@field max_file_size? integer|string a file the agent makes larger than this (bytes, or "500M", "2G"; default 1G) is not snapshotted: the iteration is rejected and the file set aside
---@field quiet? boolean no per-iteration lines on the console (the summary still prints)
---@field listeners? (fun(event: string, rec: table))[] called with every journal record and phase change (see Run:emit)
---@field feedback? fun(result: table): string what the next prompt says about a failed check
---@field on_iteration? fun(ctx: table)
---@field on_keep? fun(ctx: table)
---@field on_discard? fun(ctx: table)
---@field stop_when? fun(state: table): (boolean|string)
---@field listeners? (fun(event: string, record: table))[] called with every journal record and phase change (see Run:emit)

local COMMON = {
  agent = "table", prompt = "string|function", cwd = "string", git = "boolean",
  max_iterations = "number", max_consecutive_failures = "number", max_no_progress = "number",
  cooldown = "number|string", max_duration = "number|string", max_cost_usd = "number",
  agent_timeout = "number|string", continue_context = "boolean", commit_to = "string",
  quiet = "boolean", feedback = "function", on_iteration = "function", on_keep = "function",
  on_discard = "function", stop_when = "function", name = "string", runs_dir = "string",
  max_rate_limit_waits = "number", rate_limit_cooldown = "number|string", listeners = "table",
  max_file_size = "number|string",
  cost_per_iteration = "number", protect = "string|table", default_protect = "boolean",
}

local DURATIONS = { cooldown = true, max_duration = true, agent_timeout = true,
  rate_limit_cooldown = true, eval_timeout = true, check_timeout = true }

local function convert_override(v)
  if v == "true" then return true elseif v == "false" then return false end
  return math.tointeger(tonumber(v)) or tonumber(v) or v
end

--- Why `name` is not a branch name git accepts (the rules of
--- `git check-ref-format --branch`), or nil when it is one. "refs/heads/x"
--- and "x" both name branch x.
---@param name string
---@return string|nil reason
function M.branch_error(name)
  local short = name:match("^refs/heads/(.*)$") or name
  local function bad(why) return ("must be a valid git branch name (%s), got %q"):format(why, name) end
  if short:match("^refs/") then return bad("a branch, not another kind of ref") end
  if short == "" then return bad("empty") end
  if short:sub(1, 1) == "-" then return bad("it cannot begin with '-'") end
  if short == "@" or short == "HEAD" then return bad("reserved name") end
  if short:find("..", 1, true) then return bad("no '..'") end
  if short:find("@{", 1, true) then return bad("no '@{'") end
  if short:find("[%c ~^:?*%[\\\127]") then
    return bad("no spaces, control characters or any of ~ ^ : ? * [ \\")
  end
  if short:sub(1, 1) == "/" or short:sub(-1) == "/" or short:find("//", 1, true) then
    return bad("no empty part between slashes")
  end
  if short:sub(-1) == "." then return bad("it cannot end with '.'") end
  for part in short:gmatch("[^/]+") do
    if part:sub(1, 1) == "." then return bad("no part may begin with '.'") end
    if part:sub(-5) == ".lock" then return bad("no part may end with '.lock'") end
  end
  return nil
end

--- Whether v can be called: a function, or a table whose metatable has
--- __call (a beat.judge).
---@param v any
---@return boolean
function M.callable(v)
  if type(v) == "function" then return true end
  local mt = type(v) == "table" and getmetatable(v)
  return mt and mt.__call ~= nil or false
end

--- A command as the log and the prompt show it: a shell string as it is, an
--- argv list joined, a Lua check by its tostring ("judge: claude").
---@param cmd string|string[]|function|table
---@return string
function M.command_text(cmd)
  if type(cmd) == "string" then return cmd end
  if type(cmd) == "function" then return "(a Lua function)" end
  if M.callable(cmd) then return tostring(cmd) end
  return table.concat(cmd, " ")
end

--- The iteration an id counts for: n for n, and the round R for a parallel
--- candidate's id "R.K" (candidate K of round R); nil for anything else.
---@param id any
---@return integer|nil
function M.round_of(id)
  if type(id) == "number" then return math.tointeger(id) end   -- 3.0 as JSON gives it back
  if type(id) ~= "string" then return nil end
  return math.tointeger(tonumber(id:match("^(%d+)%.%d+$") or id:match("^%d+$")))
end

--- Checks a command option (eval, check, guard): a non-empty shell string,
--- or a non-empty argv list of strings, or (check, eval) a Lua function or
--- callable table such as a beat.judge; raises naming the option otherwise.
---@param strategy string
---@param name string the option's name, for the message
---@param v any
---@param level? integer
function M.check_command(strategy, name, v, level)
  local fn = ("beat.strategy(%q)"):format(strategy)
  level = (level or 2) + 1
  if M.callable(v) and name ~= "guard" and not name:match("^guard%[") then return end
  if type(v) == "string" then
    if not v:match("%S") then error(("%s: option %s must be a command, got an empty string"):format(fn, name), level) end
  elseif type(v) == "table" then
    if type(v[1]) ~= "string" or not v[1]:match("%S") then
      error(("%s: option %s must be a command (argv list with a program first), got an empty list"):format(fn, name), level)
    end
    for i, a in ipairs(v) do
      if type(a) ~= "string" then
        error(("%s: option %s[%d] must be a string, got %s"):format(fn, name, i, type(a)), level)
      end
    end
  else
    error(("%s: option %s must be a command (string or argv list), got %s"):format(fn, name, type(v)), level)
  end
end

--- Validates opts against the common schema plus the strategy's own
--- (`extra`: name → "type|type"), fills defaults, parses durations.
---@param strategy string
---@param opts table
---@param extra table<string, string>
---@param defaults table
---@return table
function M.options(strategy, opts, extra, defaults)
  local fn = ("beat.strategy(%q)"):format(strategy)
  if type(opts) ~= "table" then error(("%s: options must be a table, got %s"):format(fn, type(opts)), 3) end
  local o = {}
  for k, v in pairs(defaults or {}) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  for k, v in pairs(M.overrides) do o[k] = convert_override(v) end
  for k, v in pairs(o) do
    local want = COMMON[k] or extra[k]
    if not want then
      error(("%s: unknown option %q"):format(fn, tostring(k)), 3)
    end
    local ok = false
    for kind in want:gmatch("[^|]+") do
      if type(v) == kind then ok = true end
    end
    if not ok then
      error(("%s: option %s must be %s, got %s%s"):format(fn, k, want:gsub("|", " or "), type(v),
        type(v) == "string" and (" %q"):format(v) or ""), 3)
    end
    if DURATIONS[k] then
      local s, why = duration.parse(v)
      if not s then error(("%s: option %s %s"):format(fn, k, why), 3) end
      o[k] = s
    elseif k == "max_file_size" then
      local n, why = size.parse(v)
      if not n then error(("%s: option %s %s"):format(fn, k, why), 3) end
      o[k] = n
    end
  end
  if o.max_iterations ~= nil and (math.type(o.max_iterations) ~= "integer" or o.max_iterations < 0) then
    error(("%s: option max_iterations must be an integer >= 0 (0: no limit), got %s"):format(fn, tostring(o.max_iterations)), 3)
  end
  for _, k in ipairs { "max_consecutive_failures", "max_no_progress" } do
    if o[k] ~= nil and (math.type(o[k]) ~= "integer" or o[k] < 1) then
      error(("%s: option %s must be a positive integer, got %s"):format(fn, k, tostring(o[k])), 3)
    end
  end
  for i, l in ipairs(o.listeners or {}) do
    if type(l) ~= "function" then
      error(("%s: option listeners[%d] must be a function, got %s"):format(fn, i, type(l)), 3)
    end
  end
  if o.max_cost_usd ~= nil and not (o.max_cost_usd >= 0 and o.max_cost_usd < math.huge) then
    error(("%s: option max_cost_usd must be a finite number >= 0, got %s"):format(fn, tostring(o.max_cost_usd)), 3)
  end
  for _, k in ipairs { "agent_timeout", "max_duration", "eval_timeout", "check_timeout" } do
    if o[k] ~= nil and not (o[k] > 0) then
      error(("%s: option %s must be longer than 0, got %s"):format(fn, k, tostring(opts[k] or o[k])), 3)
    end
  end
  if o.cost_per_iteration ~= nil and not (o.cost_per_iteration >= 0 and o.cost_per_iteration < math.huge) then
    error(("%s: option cost_per_iteration must be a finite number >= 0, got %s"):format(fn, tostring(o.cost_per_iteration)), 3)
  end
  local perr = require("beat.protect").check_option(o)
  if perr then error(("%s: option %s"):format(fn, perr), 3) end
  if o.commit_to ~= nil then
    local why = M.branch_error(o.commit_to)
    if why then error(("%s: option commit_to %s"):format(fn, why), 3) end
  end
  if o.agent == nil then error(("%s: option agent is required (e.g. beat.agent.claude{})"):format(fn), 3) end
  if type(o.agent.run) ~= "function" then
    error(("%s: option agent must be an agent with a run method (see beat.agent)"):format(fn), 3)
  end
  if o.prompt == nil then error(("%s: option prompt is required"):format(fn), 3) end
  local berr = require("beat.budget").check(o)
  if berr then error(("%s: option max_cost_usd: %s"):format(fn, berr), 3) end
  return o
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
--- crash (phase changes, process ids).
---@param event string
---@param fields? table
---@param opts? {sync?: boolean}
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

--- Follows one control request (from beat.runs.channel): pause (at the
--- next iteration's start; `force`: now, ending the current iteration, the
--- process exits and `beat loop resume` runs it again), resume (a pause),
--- cancel (now: what runs is ended, the work tree goes to the best
--- snapshot, the journal ends with "cancelled" and the reason).
---@param req {request: string, reason?: string, force?: boolean, from?: table}
function Run:control(req)
  self:write("control", { request = req.request, reason = req.reason, force = req.force, from = req.from })
  if req.request == "pause" and not req.force then
    if not self.pause_requested then
      self.pause_requested = true
      say(self, "pause requested: the run pauses after iteration %d's decision", self.iteration)
    end
  elseif req.request == "resume" then
    self.pause_requested = false
  elseif req.request == "cancel" or req.request == "pause" then
    self.stop_request = req.request == "cancel"
      and { status = "cancelled", reason = req.reason or "by request (beat loop cancel)" }
      or { status = "paused", reason = req.reason or "paused by request (forced: the current iteration was ended; beat loop resume runs it again)" }
    self.pause_requested = false
    if self.task then self.task:cancel() end
  end
  if self.waker then self.waker() end
end

-- Sleeps for s seconds in the run's task; a control request wakes it early.
function Run:sleep(s)
  local timer = require("beat._runtime").timer()
  local ok, err = pcall(task.await, "run:sleep", function(wake)
    self.waker = wake
    timer:start(s * 1000, wake)
  end)
  self.waker = nil
  timer:close()
  if not ok then error(err, 0) end
end

--- Waits here while a pause is requested (nothing of the run runs meanwhile;
--- the phase is "paused"; paused time does not count against max_duration).
--- Called where an iteration starts, so a pause never cuts one in half.
function Run:checkpoint()
  if self.channel then self.channel:poll() end
  if not self.pause_requested then return end
  local t0 = beat.clock()
  say(self, "paused before iteration %d (beat loop resume %s)", self.iteration, self.id)
  self:phase("paused")
  while self.pause_requested do
    self:sleep(1)   -- woken at once by a request; the poll is the backstop for a lost signal
    if self.channel then self.channel:poll() end
  end
  self.started = self.started + (beat.clock() - t0)
  say(self, "resumed")
end

--- The iteration numbers still to run, for `for n in run:iterations() do`:
--- from 1 — or, in a resumed run, from the iteration after the last one
--- the dead run decided — to max_iterations (no end when it is 0 or unset).
---@return fun(): integer|nil
function Run:iterations()
  local n = self.resumed and self.resumed.iteration or 0
  local max = self.opts.max_iterations
  return function()
    n = n + 1
    if max and max > 0 and n > max then return nil end
    return n
  end
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
--- unless n is the last one. A pause or cancel request ends it early.
---@param n? integer
function Run:cooldown(n)
  local c, max = self.opts.cooldown, self.opts.max_iterations
  if n and max and max > 0 and n >= max then return end
  if c and c > 0 and not self.pause_requested then
    self:phase("cooldown")
    self:sleep(self:limit(c))
    self:phase("idle")
  end
end

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
    self.journal:check(true)   -- the agent may have deleted or changed .beat/
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
  if M.callable(cmd) then
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
  self.journal:check(true)   -- a command may have deleted or changed .beat/ too
  if not r then
    r = { code = 127, signal = 0, stdout = "", stderr = err, error = err, duration = 0,
          timed_out = false }
  end
  local dir = self.journal:iter_dir(n)
  local log = io.open(("%s/%s.log"):format(dir, name), "wb") -- a log: no temp file, no fsync
  if log then
    log:write(require("beat.redact").text(
      ("$ %s\n# exit %d%s, %.2fs\n--- stdout\n%s\n--- stderr\n%s\n"):format(
        M.command_text(cmd), r.code,
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
  self.journal:check(true)
  self:write("eval", { iteration = n, runs = o.runs, ok = m ~= nil, error = why,
    values = m and m.values, value = m and m.value, stddev = m and m.stddev, infra_error = infra })
  return m, why, infra
end

-- Moves files too large to snapshot out of the work tree, into the run's
-- directory (or removes them when that is on another file system); returns
-- one line naming them and where they went.
local function set_aside(run, n, files)
  local root = run.repo:path()
  local dest = ("%s/too-large/iter-%d"):format(run.journal.dir, n)
  local names, moved = {}, true
  for _, f in ipairs(files) do
    local from, to = root .. "/" .. f.path, dest .. "/" .. f.path
    fs.mkdir_p(to:match("^(.*)/[^/]*$"))
    local ok = os.rename(from, to)
    if not ok then
      moved = false
      os.remove(from)
    end
    names[#names + 1] = ("%s (%s)"):format(f.path, size.format(f.size))
  end
  run.journal:write("too_large", { iteration = n, files = files, set_aside = moved and dest or nil })
  return ("too large to snapshot (max_file_size %s): %s; %s"):format(
    size.format(run.opts.max_file_size or beat.git.default_max_file_size), table.concat(names, ", "),
    moved and ("moved to " .. dest) or "removed")
end

--- Snapshots the work tree as iteration n (nil without git). When the agent
--- left files too large to snapshot, the rest of the tree is snapshotted,
--- then those files are set aside, and the second result says so: the
--- strategy rejects the iteration. When the agent changed a protected file
--- (beat.protect), the second result says which and the third is
--- "tampered": the strategy rejects the iteration with that status. The
--- snapshot is also the run's `last` (`beat restore RUN last`).
---@return string|nil snapshot, string? rejected, string? status
function Run:snapshot(n)
  if not self.repo then return nil end
  local id, info = self.repo:snapshot { ref = ("refs/beat/%s/iter-%d"):format(self.id, n),
    message = ("beat: run %s iteration %d"):format(self.id, n), parent = self.best }
  if not id then error("snapshot failed: " .. tostring(info), 0) end
  self.at, self.since = id, {}
  local ok, lerr = self.repo:set_ref { ref = ("refs/beat/%s/last"):format(self.id), commit = id }
  if not ok then error("cannot record the last snapshot: " .. tostring(lerr), 0) end
  self.last = id
  if #info.skipped > 0 then return id, set_aside(self, n, info.skipped) end
  local tampered = require("beat.protect").check(self, n, id)
  if tampered then return id, tampered, "tampered" end
  return id
end

--- Whether the work tree differs from the given snapshot (true without git).
function Run:changed_since(snap)
  if not self.repo or not snap then return true end
  local changed, err = self.repo:changed(snap)
  if changed == nil then error("cannot compare the work tree: " .. tostring(err), 0) end
  return changed
end

--- Makes snap the best: discards return to it, the run ends on it.
function Run:keep(snap)
  if not self.repo then return end
  self.best = snap
  local ok, err = self.repo:set_ref { ref = ("refs/beat/%s/best"):format(self.id), commit = snap }
  if not ok then error("cannot record the best snapshot: " .. tostring(err), 0) end
end

-- "the check", "guard 1 and the eval": what ran since the last snapshot.
local function what_ran(names, iteration)
  local seen, parts = {}, {}
  for _, name in ipairs(names) do
    local label = name:match("^guard%-(%d+)$") and ("guard " .. name:match("%d+")) or ("the " .. name)
    if name == "eval" and iteration == 0 then label = "the baseline eval" end
    if not seen[label] then seen[label], parts[#parts + 1] = true, label end
  end
  if #parts <= 1 then return parts[1], 1 end
  return table.concat(parts, ", ", 1, #parts - 1) .. " and " .. parts[#parts], #parts
end

--- Restores the work tree to snap (default: the best snapshot), keeping
--- the rule that keeps work safe: what the work tree held that no snapshot
--- has — files a check or eval wrote, edits the user made meanwhile, an
--- interrupted agent's half edit — is kept as `refs/beat/<run>/pre-restore-N`
--- (journaled as `pre_restore`, listed in the summary), so
--- `beat restore RUN pre-restore-N` brings it back. The work tree is
--- snapshotted by the restore itself, after it has read what is there, so a
--- file written meanwhile is in the snapshot or left alone.
--- Returns the pre-restore snapshot's name, or nil when nothing was new.
--- `what` names what changed the files, for the note (default: what ran
--- since the last snapshot).
---@param snap? string
---@param what? string
---@return string|nil name
function Run:restore(snap, what)
  if not self.repo then return nil end
  snap = snap or self.best
  local tmp = ("refs/beat/%s/restoring"):format(self.id)
  local res, err = self.repo:restore { commit = snap, backup = tmp }
  local refs = self.repo:refs(tmp) or {}
  local backup = refs[1] and refs[1].name == tmp and refs[1].id
  local name
  if backup then
    -- nothing is new when the work tree held the last snapshot — or, when
    -- that is unknown (a resumed run), already held the target itself
    local d = self.repo:diff { from = self.at or snap, to = backup, patch = false }
    local same = d ~= nil and d.files_changed == 0
    if not same then
      name = ("pre-restore-%d"):format(#self.pre_restores + 1)
      local ok, serr = self.repo:set_ref { ref = ("refs/beat/%s/%s"):format(self.id, name), commit = backup }
      if not ok then error("cannot keep the work tree's snapshot before a restore: " .. tostring(serr), 0) end
      local during, count = what_ran(self.since, self.iteration)
      what = what or during and ("files changed while %s ran (by %s or by you)"):format(during, count > 1 and "them" or "it")
        or "files changed since the last snapshot (by the agent or by you)"
      self.pre_restores[#self.pre_restores + 1] = { name = name, snapshot = backup, what = what }
      self:write("pre_restore", { name = name, snapshot = backup, iteration = self.iteration,
        during = self.since, note = what })
    end
    self.repo:delete_refs(tmp)
  end
  if not res then
    self.at, self.since = nil, {}   -- unknown now: the next restore keeps whatever is there
    error("restore failed: " .. tostring(err), 0)
  end
  self.at, self.since = snap, {}
  return name
end

-- The results.tsv row of a decision record.
function M.tsv_row(row)
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
  self.journal:row(M.tsv_row(row))
  local rec = {}
  for k, v in pairs(row) do rec[k] = v end
  rec.best, rec.consecutive_failures, rec.elapsed = self.best, self.consecutive_failures, self:elapsed()
  rec.best_score, rec.baseline_score = self.best_score, self.baseline_score
  local round = M.round_of(row.iteration) or 0   -- candidates "3.1", "3.2": one iteration, 3
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

-- git ignores the runs directory (`.beat/`, or `/<dir>/` for a runs_dir
-- moved inside the work tree), so later restores leave it alone too.
local function ensure_excluded(repo, rel)
  local _, gitdir = repo:path()
  if not gitdir then return end
  local common = gitdir:gsub("/worktrees/[^/]+/?$", "")
  local path = common .. "/info/exclude"
  local data = fs.read(path) or ""
  local want = rel and ("/" .. rel .. "/") or ".beat/"
  for line in data:gmatch("[^\n]+") do
    if line == want or (not rel and (line == "/.beat/" or line == ".beat")) then return end
  end
  fs.mkdir_p(common .. "/info")
  fs.append(path, (data == "" or data:sub(-1) == "\n") and want .. "\n" or "\n" .. want .. "\n")
end

-- The runs directory as an absolute path, and its path inside the work
-- tree root when it is there but not under .beat/ (nil otherwise).
local function runs_dir_of(opts, root)
  local dir = opts.runs_dir or (root .. "/.beat/runs")
  if dir:sub(1, 1) ~= "/" then dir = fs.cwd() .. "/" .. dir end
  dir = dir:gsub("/%./", "/"):gsub("/+", "/"):gsub("(.)/%.?$", "%1")
  if dir:sub(1, #root + 1) ~= root .. "/" then return dir, nil end
  local rel = dir:sub(#root + 2)
  if rel == ".beat" or rel:sub(1, 6) == ".beat/" then return dir, nil end
  return dir, rel
end

-- Up to three snapshot names, "a, b, …, z" beyond.
local function names(list)
  if #list <= 3 then return table.concat(list, ", ") end
  return ("%s, %s, ..., %s"):format(list[1], list[2], list[#list])
end

-- Ends the run: work tree at best (or where the strategy asked a failed
-- run to end), optional promote, journal, summary. Every step runs even
-- when an earlier one failed; failures become notes.
local function finish(run, status, reason)
  local o = run.opts
  local notes = {}
  local target = status == "failed" and run.restore_on_failure or run.best
  if run.repo and target then
    local ok, err = pcall(run.restore, run, target)
    if not ok then
      notes[#notes + 1] = ("could not restore the %s snapshot: %s"):format(target == run.best and "best" or
        target == run.base and "base" or "final", tostring(err))
    elseif target ~= run.best and target == run.base and run.last
        and (run.repo:diff { from = run.base, to = run.last, patch = false } or {}).files_changed ~= 0 then
      notes[#notes + 1] = ("the run failed, so the work tree is back as it was before the run; the last attempt is kept: beat restore %s last")
        :format(run.id)
    end
    if o.commit_to and status ~= "interrupted" and status ~= "paused" and run.best then
      local pok, perr = run.repo:promote(run.best, { branch = o.commit_to,
        message = ("beat: run %s"):format(run.id) })
      if pok then
        notes[#notes + 1] = ("best result committed to branch %s"):format(o.commit_to)
      else
        notes[#notes + 1] = ("could not commit to %s: %s"):format(o.commit_to, tostring(perr))
      end
    end
  end
  -- files beat saved before rewriting the work tree, grouped by what ran
  local groups, order = {}, {}
  for _, p in ipairs(run.pre_restores) do
    if not groups[p.what] then groups[p.what], order[#order + 1] = {}, p.what end
    table.insert(groups[p.what], p.name)
  end
  for _, what in ipairs(order) do
    local g = groups[what]
    notes[#notes + 1] = ("%s were saved %s: beat restore %s %s"):format(what, #g == 1 and
      ("as snapshot " .. g[1]) or ("%d times, as snapshots %s"):format(#g, names(g)), run.id, g[#g])
  end
  for _, n in ipairs(require("beat.budget").notes(run)) do notes[#notes + 1] = n end
  local jok, jerr = pcall(run.journal.check, run.journal, true)
  if not jok then notes[#notes + 1] = tostring(jerr) end
  if run.journal.tampered and #run.journal.tampered > 0 then
    local seen, found = {}, {}
    for _, f in ipairs(run.journal.tampered) do
      if not seen[f] then seen[f], found[#found + 1] = 0, f end
      seen[f] = seen[f] + 1
    end
    for i, f in ipairs(found) do if seen[f] > 1 then found[i] = ("%s (%d times)"):format(f, seen[f]) end end
    if #found > 4 then found = { found[1], found[2], found[3], ("... %d more in the journal's tampered records"):format(#found - 3) } end
    notes[#notes + 1] = (".beat/ was changed during the run, by the agent or a command (tampering): %s; the journal was written back from beat's own copy")
      :format(table.concat(found, "; "))
  end
  local diff
  if run.repo and run.base then
    local d = run.repo:diff { from = run.base, to = "worktree", patch = false }
    if d then
      diff = { files_changed = d.files_changed, insertions = d.insertions, deletions = d.deletions,
        files = {} }
      for i, f in ipairs(d.files) do
        if i > 10 then diff.more_files = #d.files - 10 break end
        diff.files[i] = { path = f.path, status = f.status, insertions = f.insertions,
          deletions = f.deletions }
      end
    end
  end
  -- the last record: "run_end", or "interrupted" when the run can go on
  -- (a signal stopped it, or a forced pause): beat loop resume continues it
  local resumable = status == "interrupted" or status == "paused"
  local event = resumable and "interrupted" or "run_end"
  local rec = {
    status = status, reason = reason, iterations = run.completed, best = run.best,
    base = run.base, last = run.last, cost_usd = run.cost_usd, elapsed = run:elapsed(),
    best_score = run.best_score, baseline_score = run.baseline_score, notes = notes,
    diff = diff, git = run.repo ~= nil, dir = run.journal.dir, resumable = resumable or nil,
    unfinished_iteration = run.iteration > 0 and not run.decided[run.iteration] and run.iteration or nil,
  }
  local wok, werr = pcall(run.write, run, event, rec)
  if not wok then
    notes[#notes + 1] = "could not write the journal: " .. tostring(werr)
    run:emit(event, rec)   -- the console still gets its summary
  end
  pcall(require("beat.runs.index").put, { id = run.id, status = status })
  run.status, run.reason = status, reason
end

-- An agent that runs a program which is not installed is a usage error,
-- reported before anything is snapshotted or spent.
local function preflight(agent, cwd)
  if type(agent) ~= "table" then return end
  if agent.inner then preflight(agent.inner, cwd) end   -- a pipeline's agent
  if type(agent.command) ~= "function" or type(agent.spec) ~= "table" or agent.spec.run then return end
  local ok, cmd = pcall(agent.command, agent, { prompt = "", cwd = cwd })
  if not ok or type(cmd) ~= "table" or type(cmd.argv) ~= "table" or type(cmd.argv[1]) ~= "string" then
    return
  end
  local bin = cmd.argv[1]
  if not require("beat.exec").which(bin, nil, cwd) then
    usage_error(("agent %s: %s is not installed or not executable (see 'beat agents')")
      :format(agent.name or "?", bin))
  end
end

-- "work tree is in use by run X (pid N)", with where to look and how to stop it.
local function lock_message(root, err)
  err = tostring(err)
  local id, pid = err:match("in use by run ([%w_%-]+)"), err:match("%(pid (%d+)%)")
  if id and id ~= "restore" and id ~= "probe" then
    return ("work tree is in use by run %s%s (one loop per work tree, %s): see 'beat loop status %s', or stop it with 'beat loop cancel %s'")
      :format(id, pid and (" (pid " .. pid .. ")") or "", root, id, id)
  end
  return ("%s (%s)"):format(err, root)
end

---@class beat.LoopPlace
---@field cwd string the directory the agent and commands run in (real path)
---@field root string the work tree (the git work tree's top, or cwd without git)
---@field repo? table the beat.git repo (nil with git = false, and after a probe)
---@field runs_dir string where the run directories go

-- The work tree holding dir, found as git finds an ordinary one (a .git
-- directory, or a .git file naming the git directory) without starting
-- libgit2, whose start alone costs 30-70 ms: {root, gitdir}, or nil when
-- git itself must decide (GIT_DIR or GIT_WORK_TREE set, nothing found).
local function find_git(dir)
  if os.getenv("GIT_DIR") or os.getenv("GIT_WORK_TREE") then return nil end
  local d = dir
  while true do
    local g = d == "/" and "/.git" or d .. "/.git"
    local st = fs.stat(g)
    if st and st.type == "directory" then return { root = d, gitdir = g } end
    if st and st.type == "file" then
      local target = (fs.read(g) or ""):match("^gitdir:%s*(.-)%s*$")
      if not target or target == "" then return nil end
      if target:sub(1, 1) ~= "/" then target = d .. "/" .. target end
      return { root = d, gitdir = fs.realpath(target) or target }
    end
    if d == "/" then return nil end
    d = d:match("^(.*)/[^/]*$")
    if d == "" then d = "/" end
  end
end

-- A live run of the index in the work tree root, or nil.
local function running_in(root)
  local index = require "beat.runs.index"
  for _, e in ipairs(index.all()) do
    if e.root == root and (e.status == nil or e.status == "running") and e.dir then
      local st = require("beat.runs.status").inspect(e.dir, e)
      if st.alive then return st end
    end
  end
  return nil
end

--- Checks what a run needs before anything is written: the directory, the
--- agent's program, the git repository (not started inside .git), a usable
--- `.beat`, and — with `opts.probe_lock` — that no other run holds the work
--- tree. Raises a usage error (one line, exit 2) naming what is wrong.
--- `beat loop --detach` calls it (probe_lock) in the starting process so
--- mistakes are reported there, not in the detached run's log; a probe
--- finds the work tree without libgit2 where it can and looks for a live
--- run of the work tree in the index (the run's own start takes the lock).
---@param strategy string
---@param opts table
---@return beat.LoopPlace
function M.preflight(strategy, opts)
  local cwd = opts.cwd or fs.cwd()
  if not fs.is_dir(cwd) then
    error(("beat.strategy(%q): work tree %s is not a directory"):format(strategy, cwd), 0)
  end
  local place = { cwd = fs.realpath(cwd) }
  place.root = place.cwd
  if opts.agent then preflight(opts.agent, place.cwd) end
  for _, k in ipairs { "check", "eval" } do   -- a judge's agent
    if type(opts[k]) == "table" and M.callable(opts[k]) then preflight(opts[k].agent, place.cwd) end
  end
  if opts.git ~= false then
    local found = opts.probe_lock and find_git(place.cwd)
    local gitdir
    if found then
      place.root, gitdir = found.root, found.gitdir
    else
      local repo, err = beat.git.open { dir = place.cwd, watch = not opts.probe_lock,
        max_file_size = opts.max_file_size }
      if not repo then
        usage_error(("%s (beat needs git to keep your work safe; --no-git runs without snapshots, unsafe)")
          :format(err))
      end
      place.repo = repo
      place.root, gitdir = repo:path()
    end
    -- an agent started inside .git would edit git's own files, which no
    -- snapshot holds: refuse, and name the work tree to run from
    for _, d in ipairs { gitdir, (gitdir:gsub("/worktrees/[^/]+$", "")) } do
      if place.cwd == d or place.cwd:sub(1, #d + 1) == d .. "/" then
        usage_error(("the working directory %s is inside the git directory %s, not the work tree: run beat in %s")
          :format(place.cwd, d, place.root))
      end
    end
  end
  place.runs_dir, place.runs_rel = runs_dir_of(opts, place.root)
  if place.repo and place.runs_rel then
    -- the runs directory is never snapshotted nor restored, wherever it is
    place.repo:close()
    place.repo = assert(beat.git.open { dir = place.cwd, exclude = { ".beat", place.runs_rel },
      watch = not opts.probe_lock, max_file_size = opts.max_file_size })
  end
  for _, d in ipairs { place.root .. "/.beat", place.runs_dir } do
    local st = fs.stat(d)
    if st and st.type ~= "directory" and not fs.is_dir(d) then
      usage_error(("%s exists and is not a directory (beat keeps its runs in %s): move it away")
        :format(d, place.runs_dir))
    end
  end
  if opts.probe_lock and opts.git ~= false then
    local busy = running_in(place.root)
    if busy then
      usage_error(lock_message(place.root, ("work tree is in use by run %s (pid %d)"):format(busy.id, busy.pid)))
    end
    if place.repo then
      local lock, lerr = place.repo:lock { id = "probe" }
      if not lock then usage_error(lock_message(place.root, lerr)) end
      lock:release()
      place.repo:close()
      place.repo = nil
    end
  end
  return place
end

-- Takes M.pending when it is for this run: a reserved id goes to the first
-- run of the process, a resume to the first run of the same strategy whose
-- run directory is the one to resume.
local function take_pending(strategy, place)
  local p = M.pending
  if not p then return nil end
  if p.resume and ((p.strategy and p.strategy ~= strategy)
      or (p.dir and p.dir ~= place.runs_dir .. "/" .. p.resume)) then
    return nil
  end
  M.pending = nil
  return p
end

local function new_run(strategy, opts, place)
  local run = setmetatable({ opts = opts, strategy = strategy, cwd = place.cwd, root = place.root,
    repo = place.repo, iteration = 0, completed = 0, decided = {}, cost_usd = 0,
    consecutive_failures = 0, history = {}, started = beat.clock(), since = {}, pre_restores = {},
    listeners = {} }, Run)
  for i, fn in ipairs(opts.listeners or {}) do
    if type(fn) ~= "function" then
      error(("beat.strategy(%q): option listeners[%d] must be a function, got %s"):format(strategy, i, type(fn)), 0)
    end
    run.listeners[#run.listeners + 1] = fn
  end
  -- the console (or --json, or nothing: see beat.ui) follows the run too
  local view = require("beat.ui").listener { quiet = opts.quiet }
  if view then run.listeners[#run.listeners + 1] = view end
  return run
end

-- The identity of this process, for run_start, resume and the index.
local function me()
  return require("beat.runs.proc").identity() or { pid = beat.pid() }
end

-- Records in the index where the run is and which process runs it. A
-- failure (an unwritable home) only costs finding the run from elsewhere.
local function index_run(run, extra)
  local ident = me()
  local entry = { id = run.id, root = run.root, dir = run.journal.dir, strategy = run.strategy,
    pid = ident.pid, start_time = ident.start_time, boot_id = ident.boot_id, status = "running",
    detached = M.detached or nil }
  for k, v in pairs(extra or {}) do entry[k] = v end
  local ok, err = require("beat.runs.index").put(entry)
  if not ok then
    run:write("note", { note = ("the run is not in the index of runs (%s): other directories will not find it")
      :format(tostring(err)) })
  end
end

-- A new run: the lock, its id (reserved by --detach, or here), the base
-- snapshot, run_start.
local function open_new(run, place, reserved)
  local index = require "beat.runs.index"
  if run.repo then
    -- the lock first (nothing is written before it); it names the run once
    -- its id is known
    local lock, lerr = run.repo:lock { id = "starting" }
    if not lock then usage_error(lock_message(run.root, lerr)) end
    run.lock = lock
    ensure_excluded(run.repo, place.runs_rel)
    -- worktrees and Slurm jobs that dead runs of this work tree left behind
    -- (none of them is alive: we hold the lock)
    require("beat.parallel").sweep(run.repo, place.runs_dir)
    local tree, info = run.repo:tree()
    if not tree then error("cannot snapshot the work tree: " .. tostring(info), 0) end
    if #info.skipped > 0 then
      -- a file no snapshot holds could not be given back: refuse to start
      local f = info.skipped[1]
      usage_error(("%s (%s) is larger than max_file_size (%s): beat could not restore it; "
        .. "ignore it (.gitignore) or raise max_file_size (--max-file-size)%s"):format(f.path,
        size.format(f.size), size.format(run.opts.max_file_size or beat.git.default_max_file_size),
        #info.skipped > 1 and (" (and %d more)"):format(#info.skipped - 1) or ""))
    end
  end
  -- the machines of the strategy's executors see the work tree
  local unseen = require("beat.parallel").check_executors(run.opts, run.root)
  if unseen then usage_error(unseen) end
  -- The id is free in this work tree's runs directory, in the per-user
  -- index and, with git, in the repository, whose refs/beat/ every linked
  -- work tree shares: the base snapshot's ref is created only where no run
  -- has that id yet. A reserved id was claimed in the index already.
  local function reserve(id)
    local warning
    if not reserved then
      local ok, why = index.reserve(id)
      if ok == false then return false end
      warning = why   -- an unwritable index only costs finding the run from elsewhere
    end
    if not run.repo then return true, warning end
    local base, berr = run.repo:snapshot {
      message = ("beat: run %s base (the work tree before the run)"):format(id) }
    local ok, rerr
    if base then ok, rerr = run.repo:set_ref { ref = id .. "/base", commit = base, create = true } end
    if not ok and not reserved then index.remove(id) end
    if not base then return nil, "cannot snapshot the work tree: " .. tostring(berr) end
    if ok == nil then return nil, "cannot record the base snapshot: " .. tostring(rerr) end
    if ok then run.base = base end
    return ok, warning
  end
  local j, jerr = journal.create(place.runs_dir, beat.now(), { id = reserved, reserve = reserve })
  if not j then error(run.repo and tostring(jerr) or "cannot create the run directory: " .. tostring(jerr), 0) end
  run.journal, run.id = j, j.id
  run.best, run.at = run.base, run.base
  if run.lock then run.lock:relabel(run.id) end
  local ident = me()
  run:write("run_start", {
    id = run.id, strategy = run.strategy, cwd = run.cwd, base = run.base, pid = ident.pid,
    start_time = ident.start_time, boot_id = ident.boot_id, head = run.repo and run.repo:head() or nil,
    config = run.opts, git = run.repo ~= nil, origin = M.origin, detached = M.detached or nil,
    max_iterations = run.opts.max_iterations, dir = j.dir,
  })
  if j.reserve_error then
    run:write("note", { note = "the run is not in the index of runs: " .. tostring(j.reserve_error) })
  end
  index_run(run, { started = beat.now() })
  require("beat.protect").setup(run)   -- journals what is protected; the console says it
end

-- A process killed while git updated one of the run's refs leaves the
-- ref's lock file behind, and every later update of that ref fails. The
-- run's refs are its own and the work tree's lock is held: remove them.
-- Returns the paths removed.
local function remove_stale_locks(repo, id)
  local _, gitdir = repo:path()
  local removed = {}
  local function walk(dir)
    for _, name in ipairs(fs.list(dir) or {}) do
      local path = dir .. "/" .. name
      if fs.is_dir(path) then
        walk(path)
      elseif name:match("%.lock$") and os.remove(path) then
        removed[#removed + 1] = path
      end
    end
  end
  walk(("%s/refs/beat/%s"):format(gitdir:gsub("/worktrees/[^/]+/?$", ""), id))
  return removed
end

-- A run that continues a dead one from its journal: refuses what cannot be
-- continued, takes the lock, ends what the dead process left running,
-- repairs the journal's tail, carries the counters over and puts the work
-- tree at the best snapshot (what was there is kept as pre-restore-N).
local function open_resumed(run, place, id)
  local replay = require("beat.runs.replay")
  local dir = place.runs_dir .. "/" .. id
  local j = journal.open(dir)
  if not j then usage_error(("run %s has no journal in %s: there is nothing to resume"):format(id, dir)) end
  local r = replay.read((j:records()))
  if not r.start then
    usage_error(("run %s died before it started (its journal has no run_start; the work tree was not touched): start it again")
      :format(id))
  end
  if r.start.strategy ~= run.strategy then
    usage_error(("run %s is a %s run, not %s"):format(id, tostring(r.start.strategy), run.strategy))
  end
  if r.ended and not replay.RESUMABLE_END[r.ended.status] then
    usage_error(("run %s has ended (%s): there is nothing to resume"):format(id, tostring(r.ended.status)))
  end
  if not r.ended and require("beat.runs.proc").alive(r.owner) then
    usage_error(("run %s is still running (pid %d): 'beat loop pause %s' or 'beat loop cancel %s'")
      :format(id, r.owner.pid, id, id))
  end
  run.journal, run.id = j, id
  if run.repo then
    local lock, lerr = run.repo:lock { id = run.id }
    if not lock then usage_error(lock_message(run.root, lerr)) end
    run.lock = lock
  end
  local killed = require("beat.runs.proc").end_sessions(r.processes)
  local stale = run.repo and remove_stale_locks(run.repo, run.id) or {}
  local rows = {}
  for _, d in ipairs(r.decisions) do rows[#rows + 1] = M.tsv_row(d) end
  local torn = j:repair(rows)

  local d = r.last_decision
  run.base = r.start.base
  run.best = d and d.best or run.base
  run.last = d and d.snapshot or nil
  run.iteration = d and math.tointeger(d.iteration) or 0
  run.consecutive_failures = d and math.tointeger(d.consecutive_failures) or 0
  run.cost_usd = r.cost_usd
  run.started = beat.clock() - r.elapsed
  run.best_score, run.baseline_score = d and d.best_score, d and d.baseline_score
  for _, x in ipairs(r.decisions) do
    if type(x.history) == "table" then run.history[#run.history + 1] = replay.numbers(x.history) end
  end
  for _, p in ipairs(r.pre_restores) do
    run.pre_restores[#run.pre_restores + 1] = { name = p.name, snapshot = p.snapshot, what = p.note or "files" }
  end
  if d then
    run.resumed = { iteration = run.iteration, status = d.status, state = replay.numbers(d.state),
                    stop = type(d.stop) == "table" and d.stop[1] and d.stop or nil }
  end
  if run.repo and run.best and run.best ~= run.base then   -- as Run:keep left it
    local ok, err = run.repo:set_ref { ref = ("refs/beat/%s/best"):format(run.id), commit = run.best }
    if not ok then error("cannot record the best snapshot: " .. tostring(err), 0) end
  end
  local ident = me()
  run:write("resume", { pid = ident.pid, start_time = ident.start_time, boot_id = ident.boot_id,
    after_iteration = d and run.iteration or nil, elapsed = r.elapsed, cost_usd = r.cost_usd,
    killed = killed, torn = torn, stale_locks = #stale > 0 and stale or nil, origin = M.origin, detached = M.detached or nil,
    from = r.ended and r.ended.status or "crashed", closing = run.closing })
  index_run(run)
  say(run, "beat run %s: %s in %s, %s%s", run.id, run.strategy, run.cwd,
    run.closing and "closing it" or d and ("resumed after iteration " .. run.iteration) or "resumed from the start",
    #killed > 0 and ("; ended %d process%s the dead run left"):format(#killed, #killed == 1 and "" or "es") or "")
  if run.repo then
    run:restore(run.best, ("files the stopped run left in the work tree (iteration %d was under way)")
      :format(run.iteration + 1))
  end
end

-- Journals every command the run's process starts (the shim's identity),
-- so a resume can end what a dead process left running.
local function watch_processes(run)
  local exec = require "beat.exec"
  local procs = require "beat.runs.proc"
  local key = {}
  exec.observers[key] = function(p)
    local ident = procs.identity(p.pid)
    if ident then
      run:write("process", { iteration = run.iteration, label = p.label, pid = ident.pid,
        start_time = ident.start_time, boot_id = ident.boot_id }, { sync = false })
    end
  end
  return function() exec.observers[key] = nil end
end

-- Which bounds end a run without an iteration limit.
local function bounds(o)
  local list = {}
  if o.max_duration then list[#list + 1] = "after " .. duration.format(o.max_duration) end
  if o.max_cost_usd then list[#list + 1] = ("at $%.2f of agent cost"):format(o.max_cost_usd) end
  if o.target then list[#list + 1] = "when the target is reached" end
  if o.patience then list[#list + 1] = ("after %d iterations without improvement"):format(o.patience) end
  if o.max_consecutive_failures then list[#list + 1] = ("after %d failures in a row"):format(o.max_consecutive_failures) end
  if o.max_no_progress then list[#list + 1] = ("when the agent changes nothing %d times in a row"):format(o.max_no_progress) end
  if o.stop_when then list[#list + 1] = "when stop_when says so" end
  return list
end

-- Runs body(run) in a task of its own, so a cancel request ends the body
-- (and what it runs) without touching the caller's task. Returns the
-- packed xpcall result.
local function run_body(run, body)
  local inner = task.go(function()
    return table.pack(xpcall(body, function(e)
      if task.is_cancelled(e) or getmetatable(e) == HookError then return e end
      return debug.traceback(tostring(e), 2)
    end, run))
  end)
  run.task = inner
  local ok = pcall(inner.wait, inner)
  if not ok and inner.status == "running" then
    -- the caller was cancelled (Ctrl-C): end the body too, and wait for it
    inner:cancel()
    pcall(task.shield, inner.join, inner)
  end
  run.task = nil
  if inner.status == "done" then return inner.results[1] end
  if inner.status == "cancelled" or inner.status == "running" then return { false, task.cancelled, n = 2 } end
  return { false, inner.traceback or tostring(inner.error), n = 2 }
end

--- Starts a run and calls body(run); see the module comment. body returns
--- status ("passed"|"completed"|"failed"|"stopped"), reason. When the
--- process was started to resume a run (`beat loop resume`), the run
--- continues that one instead: `run.resumed` says after which decision,
--- and `run:iterations()` starts after it.
---@param strategy string
---@param opts table validated options (see M.options)
---@param body fun(run: beat.Run): (string, string)
---@return integer exit_status, beat.Run run
function M.run(strategy, opts, body)
  require("beat.runs.channel").install()   -- before run_start: controllers may signal from then on
  local place = M.preflight(strategy, opts)
  local run = new_run(strategy, opts, place)
  local pending = take_pending(strategy, place)

  local ok, err = pcall(function()
    if pending and pending.resume then
      open_resumed(run, place, pending.resume)
    else
      open_new(run, place, pending and pending.id)
    end
  end)
  if not ok then
    if run.lock then run.lock:release() end
    -- a run reserved by --detach that cannot start says why in its journal
    if pending and pending.id and run.journal and not run.journal.copy then
      pcall(run.journal.write, run.journal, "run_end", { status = "failed", id = run.id,
        reason = type(err) == "table" and err.usage or tostring(err) })
      pcall(require("beat.runs.index").put, { id = run.id, status = "failed" })
    end
    error(err, 0)
  end
  local o = run.opts
  if (o.max_iterations or 0) == 0 then
    local b = bounds(o)
    say(run, "no iteration limit: the run stops %s, on Ctrl-C, or with 'beat loop cancel %s'",
      #b > 0 and table.concat(b, ", ") or "only", run.id)
  end
  run.channel = require("beat.runs.channel").attach(run)
  local unwatch = watch_processes(run)

  local status, reason
  if run.resumed and run.resumed.stop then
    -- the dead run had decided to stop; only its ending was missing
    status, reason = run.resumed.stop[1], run.resumed.stop[2]
  else
    local res = run_body(run, body)
    if res[1] then
      status, reason = res[2], res[3]
    elseif task.is_cancelled(res[2]) then
      local stop = run.stop_request
      status = stop and stop.status or "interrupted"
      reason = stop and stop.reason or "interrupted by a signal"
    elseif getmetatable(res[2]) == HookError then
      status, reason = "failed", tostring(res[2])
    else
      status, reason = "failed", "error: " .. tostring(res[2])
    end
  end
  -- cleanup runs shielded from the cancellation that may have ended the body
  local fok, ferr = pcall(task.shield, finish, run, status, reason)
  unwatch()
  run.channel:close()
  if run.lock then run.lock:release() end
  run:emit("closed", { status = status })   -- not journaled: listeners let go (the status line goes)
  if not fok then io.stderr:write("beat: finishing the run failed: ", tostring(ferr), "\n") end
  local code = (status == "passed" or status == "completed" or status == "stopped" or status == "paused") and 0
    or status == "interrupted" and 130 or 1
  return code, run
end

--- Closes a run whose process is gone (crashed, interrupted, force-paused)
--- without continuing it: what the dead process left running is ended, the
--- work tree goes to the best snapshot (what was there is kept as
--- pre-restore-N), and the journal ends with `status` and `reason` (e.g.
--- "cancelled"). Raises a usage error when the run cannot be closed (it is
--- running, it has ended, its work tree is busy). Must run in a task.
---@param dir string the run directory
---@param status string
---@param reason string
---@param opts? {quiet?: boolean}
function M.close(dir, status, reason, opts)
  require("beat.runs.channel").install()
  local j = journal.open(dir)
  if not j then usage_error(("no run journal in %s"):format(dir)) end
  local start
  for _, r in ipairs((j:records())) do if r.event == "run_start" then start = r break end end
  if not start then usage_error(("run %s died before it started: there is nothing to close"):format(j.id)) end
  local ropts = { cwd = start.cwd, git = start.git ~= false, quiet = opts and opts.quiet or nil }
  local place = M.preflight(start.strategy, ropts)
  local run = new_run(start.strategy, ropts, place)
  run.closing = true
  local ok, err = pcall(open_resumed, run, { cwd = place.cwd, root = place.root, repo = place.repo,
    runs_dir = dir:match("^(.*)/[^/]+/*$") }, j.id)
  if not ok then
    if run.lock then run.lock:release() end
    error(err, 0)
  end
  local fok, ferr = pcall(task.shield, finish, run, status, reason)
  if run.lock then run.lock:release() end
  if not fok then error(ferr, 0) end
end

return M
