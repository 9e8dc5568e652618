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
---
--- The files of a run, in the order it goes:
---   loop/start.lua    preflight, the lock, the id and base snapshot, or the dead run resumed
---   loop/run.lua      the Run a strategy drives: agent, commands, measure, record, hooks, limits
---   loop/control.lua  pause, resume, cancel; sleeping, the cooldown, the iterations
---   loop/tree.lua     snapshot, keep, restore (what the work tree held is never lost)
---   loop/finish.lua   the end: the work tree at best, notes, the last journal record
local task = require "beat.task"
local journal = require "beat.journal"
local duration = require "beat.duration"
local size = require "beat.size"
local check = require "beat.check"
local R = require "beat.loop.run"
require "beat.loop.control"   -- Run's methods for control requests and waiting
require "beat.loop.tree"      -- Run's methods for snapshots and restores
local start = require "beat.loop.start"
local finish = require("beat.loop.finish").finish
local HookError, usage_error, say = R.HookError, R.usage_error, R.say

local M = {}

---@class beat.LoopSession
---@field overrides? table<string, string> `beat run recipe.lua --set key=value`: applied to the options of every run the recipe starts
---@field origin? table how this process was started, recorded in each run's run_start so `beat loop resume` can start a dead run again the same way: `{kind = "loop", args = {...}, dir = DIR}` (beat loop's arguments and directory) or `{kind = "recipe", file = PATH, args = {...}, set = {...}, dir = DIR}` (beat run)
---@field pending? table|false what the next run of this process is, taken by the first `beat.loop.run` that matches: `{id = ID}` a run id reserved by `beat loop --detach` (the run directory exists), or `{resume = ID, strategy = NAME, dir = DIR}` continue that run from its journal (`beat loop resume`); false: none
---@field detached? boolean this process is a detached run (`--detach`, `beat loop resume --detached-run`)

-- What the command line hands to the runs this process starts.
local session = { overrides = {}, origin = nil, pending = nil, detached = false }

--- The hand-off from the command line to the runs this process starts
--- (see beat.LoopSession): `beat run --set` gives overrides and origin,
--- `beat loop` its origin, `--detach`'s child its reserved id and detached,
--- `beat loop resume` the run to continue. Keys given replace the current
--- values (false clears `pending`); keys left out stay. Returns a copy of
--- the session as it now is (`beat.loop.session()` only reads it).
---@param s? beat.LoopSession
---@return beat.LoopSession
function M.session(s)
  for k, v in pairs(s or {}) do
    if k ~= "overrides" and k ~= "origin" and k ~= "pending" and k ~= "detached" then
      error(("beat.loop.session: unknown field %q"):format(tostring(k)), 2)
    end
    if v == false and k ~= "detached" then v = nil end
    session[k] = v
  end
  return { overrides = session.overrides, origin = session.origin, pending = session.pending,
           detached = session.detached }
end


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

-- The options every strategy takes (beat.check kinds); durations and sizes
-- are parsed after the check, the rules between options below it.
local LISTENERS = { "table", what = "a list of functions",
  test = function(t) for _, f in pairs(t) do if type(f) ~= "function" then return false end end return true end }
local COMMON = {
  agent = { "table", required = true, what = "an agent with a run method (see beat.agent), such as beat.agent.claude{}",
    test = function(a) return type(a.run) == "function" end },
  prompt = { "string|function", required = true },
  cwd = "string", git = "boolean", continue_context = "boolean", commit_to = "string", quiet = "boolean",
  max_iterations = { "nonnegint", what = "an integer >= 0 (0: no limit)" },
  max_consecutive_failures = "posint", max_no_progress = "posint", max_rate_limit_waits = "number",
  cooldown = "number|string", max_duration = "number|string", agent_timeout = "number|string",
  rate_limit_cooldown = "number|string", max_file_size = "number|string",
  max_cost_usd = { "nonneg", what = "a finite number >= 0" },
  cost_per_iteration = { "nonneg", what = "a finite number >= 0" },
  feedback = "function", on_iteration = "function", on_keep = "function", on_discard = "function",
  stop_when = "function", name = "string", runs_dir = "string", listeners = LISTENERS,
  protect = "string|table", default_protect = "boolean",
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
M.callable = R.callable
--- A command as the log and the prompt show it (see beat.loop.run).
M.command_text = R.command_text
--- The iteration an id counts for: n for n, and the round R for a parallel
--- candidate's id "R.K"; nil for anything else.
M.round_of = R.round_of
--- The results.tsv row of a decision record.
M.tsv_row = R.tsv_row
--- Checks what a run needs before anything is written (see beat.loop.start).
M.preflight = start.preflight

---@param v any
---@param level? integer
function M.check_command(strategy, name, v, level)
  local fn = ("beat.strategy(%q)"):format(strategy)
  level = (level or 2) + 1
  local label = "opts." .. name
  if M.callable(v) and name ~= "guard" and not name:match("^guard%[") then return end
  if type(v) == "string" then
    if not v:match("%S") then check.fail(fn, label, "a command", v, level) end
  elseif type(v) == "table" then
    if type(v[1]) ~= "string" or not v[1]:match("%S") then
      check.fail(fn, label, "a command (an argv list with a program first)", v, level)
    end
    for i, a in ipairs(v) do
      if type(a) ~= "string" then check.fail(fn, ("%s[%d]"):format(label, i), "a string", a, level) end
    end
  else
    check.fail(fn, label, "a command (a string or an argv list)", v, level)
  end
end

--- Validates opts against the common schema plus the strategy's own
--- (`extra`: name → a beat.check kind such as "number|string"), fills
--- defaults, parses durations and sizes. A bad option raises
--- `beat.strategy("NAME"): opts.X must be <what>, got <value>` (beat.check).
---@param strategy string
---@param opts table
---@param extra table<string, string>
---@param defaults table
---@return table
function M.options(strategy, opts, extra, defaults)
  local fn = ("beat.strategy(%q)"):format(strategy)
  if type(opts) ~= "table" then check.fail(fn, "opts", "a table", opts, 3) end
  local o = {}
  for k, v in pairs(defaults or {}) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  for k, v in pairs(session.overrides or {}) do o[k] = convert_override(v) end
  local schema = {}
  for k, v in pairs(COMMON) do schema[k] = v end
  for k, v in pairs(extra) do schema[k] = v end
  check.options(fn, o, schema, { level = 3 })
  for k in pairs(o) do
    if DURATIONS[k] then
      local s, why = duration.parse(o[k])
      if not s then check.error(fn, ("opts.%s %s"):format(k, why), 3) end
      o[k] = s
    elseif k == "max_file_size" then
      local n, why = size.parse(o[k])
      if not n then check.error(fn, ("opts.%s %s"):format(k, why), 3) end
      o[k] = n
    end
  end
  for _, k in ipairs { "agent_timeout", "max_duration", "eval_timeout", "check_timeout" } do
    if o[k] ~= nil and not (o[k] > 0) then check.fail(fn, "opts." .. k, "longer than 0", opts[k] or o[k], 3) end
  end
  local perr = require("beat.protect").check_option(o)
  if perr then check.error(fn, "opts." .. perr, 3) end
  if o.commit_to ~= nil then
    local why = M.branch_error(o.commit_to)
    if why then check.error(fn, "opts.commit_to " .. why, 3) end
  end
  local berr = require("beat.budget").check(o)
  if berr then check.error(fn, "opts.max_cost_usd: " .. berr, 3) end
  return o
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
  local place = start.preflight(strategy, opts)
  local run = start.new_run(strategy, opts, place)
  local pending = start.take_pending(session, strategy, place)

  local ok, err = pcall(function()
    if pending and pending.resume then
      start.open_resumed(run, place, pending.resume, session)
    else
      start.open_new(run, place, pending and pending.id, session)
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
  local unwatch = start.watch_processes(run)

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
  local first
  for _, r in ipairs((j:records())) do if r.event == "run_start" then first = r break end end
  if not first then usage_error(("run %s died before it started: there is nothing to close"):format(j.id)) end
  local ropts = { cwd = first.cwd, git = first.git ~= false, quiet = opts and opts.quiet or nil }
  local place = start.preflight(first.strategy, ropts)
  local run = start.new_run(first.strategy, ropts, place)
  run.closing = true
  local ok, err = pcall(start.open_resumed, run, { cwd = place.cwd, root = place.root, repo = place.repo,
    runs_dir = dir:match("^(.*)/[^/]+/*$") }, j.id, session)
  if not ok then
    if run.lock then run.lock:release() end
    error(err, 0)
  end
  local fok, ferr = pcall(task.shield, finish, run, status, reason)
  if run.lock then run.lock:release() end
  if not fok then error(ferr, 0) end
end

return M
