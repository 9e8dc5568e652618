--- beat.loop: what every loop strategy shares — the run's safety and
--- bookkeeping — so a strategy file is only the loop itself.
---
--- `beat.loop.run(name, opts, body)` locks the work tree, snapshots it as
--- `base` (the user's uncommitted work lives on in that ref whatever
--- happens), opens the journal, calls `body(run)`, and whatever way body
--- ends — a result, an error, a failing hook, Ctrl-C — leaves the work tree
--- at the best snapshot, writes the last journal record, prints the summary
--- and returns the exit status (0 passed/completed, 1 failed, 130
--- interrupted).
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
---@field max_cost_usd? number stop once the agents' reported cost reaches this
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

local COMMON = {
  agent = "table", prompt = "string|function", cwd = "string", git = "boolean",
  max_iterations = "number", max_consecutive_failures = "number", max_no_progress = "number",
  cooldown = "number|string", max_duration = "number|string", max_cost_usd = "number",
  agent_timeout = "number|string", continue_context = "boolean", commit_to = "string",
  quiet = "boolean", feedback = "function", on_iteration = "function", on_keep = "function",
  on_discard = "function", stop_when = "function", name = "string", runs_dir = "string",
  max_rate_limit_waits = "number", rate_limit_cooldown = "number|string", listeners = "table",
  max_file_size = "number|string",
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
--- or a non-empty argv list of strings; raises naming the option otherwise.
---@param strategy string
---@param name string the option's name, for the message
---@param v any
---@param level? integer
function M.check_command(strategy, name, v, level)
  local fn = ("beat.strategy(%q)"):format(strategy)
  level = (level or 2) + 1
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
  for _, k in ipairs { "max_iterations", "max_consecutive_failures", "max_no_progress" } do
    if o[k] ~= nil and (math.type(o[k]) ~= "integer" or o[k] < 1) then
      error(("%s: option %s must be a positive integer, got %s"):format(fn, k, tostring(o[k])), 3)
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
  if o.commit_to ~= nil then
    local why = M.branch_error(o.commit_to)
    if why then error(("%s: option commit_to %s"):format(fn, why), 3) end
  end
  if o.agent == nil then error(("%s: option agent is required (e.g. beat.agent.claude{})"):format(fn), 3) end
  if type(o.agent.run) ~= "function" then
    error(("%s: option agent must be an agent with a run method (see beat.agent)"):format(fn), 3)
  end
  if o.prompt == nil then error(("%s: option prompt is required"):format(fn), 3) end
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
---@field phase_name string|nil what runs now: agent, guard, eval, check, cooldown, paused or idle
---  (not `phase`: that name is the method Run:phase, which a field would hide)
---@field phase_started number|nil beat.clock() when the phase began
---@field listeners table list of fun(event, rec) (see Run:emit)
local Run = {}
Run.__index = Run

local PHASES = { agent = true, guard = true, eval = true, check = true, cooldown = true,
  paused = true, idle = true }

--- Calls every listener with (event, rec): the journal's records as written
--- (rec.event, rec.time set) and phase changes. A listener that raises is
--- dropped with a note on stderr; it never stops the run.
---@param event string
---@param rec table
function Run:emit(event, rec)
  for i, fn in ipairs(self.listeners) do
    local ok, err = pcall(fn, event, rec)
    if not ok then
      io.stderr:write(("beat: a run listener failed and was removed: %s\n"):format(tostring(err)))
      table.remove(self.listeners, i)
    end
  end
end

--- Appends a journal record (fsync'd, see beat.journal) and emits it.
---@param event string
---@param fields? table
function Run:write(event, fields)
  local rec = self.journal:write(event, fields)
  self:emit(event, rec or fields or {})
end

--- Enters a phase: agent, guard, eval, check, cooldown, paused or idle. The
--- change is journaled (a `phase` record, not fsync'd: losing the last one
--- to a crash costs nothing) and emitted, so the console and `--json` show
--- what runs now.
---@param name string
function Run:phase(name)
  if not PHASES[name] then error(("run:phase: unknown phase %q"):format(tostring(name)), 2) end
  self.phase_name, self.phase_started = name, beat.clock()
  local rec = { phase = name, iteration = self.iteration }
  local ok, written = pcall(self.journal.write, self.journal, "phase", rec, { sync = false })
  self:emit("phase", ok and written or rec)
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
  if o.max_cost_usd and self.cost_usd >= o.max_cost_usd then
    return ("cost budget of $%.2f reached ($%.2f spent)"):format(o.max_cost_usd, self.cost_usd)
  end
  return nil
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

--- Pauses for the cooldown (cut to the time left).
function Run:cooldown()
  local c = self.opts.cooldown
  if c and c > 0 then
    self:phase("cooldown")
    beat.sleep(self:limit(c))
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
  local dir = self.journal:iter_dir(n)
  local waits, delay = 0, self.opts.rate_limit_cooldown or 30
  self:phase("agent")
  while true do
    local req = {
      prompt = prompt, cwd = self.cwd, timeout = self:agent_timeout(), iteration = n,
      transcript = dir .. "/agent.log",
      env = { BEAT_RUN_ID = self.id, BEAT_ITERATION = tostring(n) },
      continue_context = self.opts.continue_context,
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
    local cost = tonumber(res.cost_usd)
    if res.cost_usd ~= nil and not (cost and cost >= 0 and cost < math.huge) then
      -- a negative cost would be subtracted and max_cost_usd never reached
      self:write("note", { iteration = n, note = ("the agent reported a cost of %s; counted as unknown (0)")
        :format(tostring(res.cost_usd)) })
      cost = nil
    end
    self.cost_usd = self.cost_usd + (cost or 0)
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
    self:phase("agent")
  end
end

--- Runs a check or eval command in the work tree (or `at.cwd`, with
--- `at.env`), here or through the strategy's `eval_executor`/`executor`,
--- logging its output to iter-N/<name>.log. Returns the exec result
--- (`infra_error` set when the executor, not the command, failed), or a
--- result with code 127 and `error` when it could not start.
---@param n integer|string
---@param name string "check", "eval", "guard-1", ...
---@param cmd string|string[]
---@param timeout? number
---@param at? {cwd?: string, env?: table} another directory (a candidate's worktree) and environment
function Run:command(n, name, cmd, timeout, at)
  at = at or {}
  if not at.cwd then self.since[#self.since + 1] = name end
  self:phase(name == "eval" and "eval" or name:match("^guard") and "guard" or "check")
  local eopts = { cwd = at.cwd or self.cwd, env = at.env, timeout = self:limit(timeout), max_output = 256 * 1024 }
  local ex = self.opts.eval_executor or self.opts.executor
  local r, err
  if ex then
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
  fs.write(("%s/%s.log"):format(dir, name), require("beat.redact").text(
    ("$ %s\n# exit %d%s, %.2fs\n--- stdout\n%s\n--- stderr\n%s\n"):format(
      type(cmd) == "table" and table.concat(cmd, " ") or cmd, r.code,
      r.infra_error and (" (infrastructure: %s)"):format(r.infra_error) or r.timed_out and " (timed out)" or "",
      r.duration or 0, r.stdout or "", r.stderr or "")))
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
--- strategy rejects the iteration. The snapshot is also the run's `last`
--- (`beat restore RUN last`).
---@return string|nil snapshot, string? rejected
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
---@param snap? string
---@return string|nil name
function Run:restore(snap)
  if not self.repo then return nil end
  snap = snap or self.best
  local tmp = ("refs/beat/%s/restoring"):format(self.id)
  local res, err = self.repo:restore { commit = snap, backup = tmp }
  local refs = self.repo:refs(tmp) or {}
  local backup = refs[1] and refs[1].name == tmp and refs[1].id
  local name
  if backup then
    local same = false
    if self.at then
      local d = self.repo:diff { from = self.at, to = backup, patch = false }
      same = d ~= nil and d.files_changed == 0
    end
    if not same then
      name = ("pre-restore-%d"):format(#self.pre_restores + 1)
      local ok, serr = self.repo:set_ref { ref = ("refs/beat/%s/%s"):format(self.id, name), commit = backup }
      if not ok then error("cannot keep the work tree's snapshot before a restore: " .. tostring(serr), 0) end
      local during, count = what_ran(self.since, self.iteration)
      local what = during and ("files changed while %s ran (by %s or by you)"):format(during, count > 1 and "them" or "it")
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

--- Records an iteration's outcome: results.tsv row and a `decision`
--- journal record (which the console shows). Iterations above 0 with a
--- decision are the run's count of iterations (`iterations` in run_end,
--- the summary, `beat runs` and `beat show` all use it).
---@param row {iteration: integer|string, status: string, score?: any, best?: any, delta?: any, cost_usd?: number, duration_s?: number, summary?: string, snapshot?: string}
function Run:record(row)
  self.journal:row {
    iteration = row.iteration, snapshot = row.snapshot and row.snapshot:sub(1, 12),
    score = row.score or row.score_text, status = row.status, delta = row.delta,
    cost_usd = row.cost_usd, duration_s = row.duration_s, summary = row.summary,
  }
  local round = M.round_of(row.iteration) or 0   -- candidates "3.1", "3.2": one iteration, 3
  if round > 0 and not self.decided[round] then
    self.decided[round] = true
    self.completed = self.completed + 1
  end
  self:write("decision", row)
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

-- A failure of the world before the run could start (nothing to undo, no
-- journal): one line on stderr, exit status 1.
local function start_failed(run, msg)
  io.stderr:write("beat: ", msg, "\n")
  run.status, run.reason = "failed", msg
  return 1, run
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
    if o.commit_to and status ~= "interrupted" and run.best then
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
  -- the last record: "run_end", or "interrupted" when a signal stopped the run
  local event = status == "interrupted" and "interrupted" or "run_end"
  local rec = {
    status = status, reason = reason, iterations = run.completed, best = run.best,
    base = run.base, last = run.last, cost_usd = run.cost_usd, elapsed = run:elapsed(),
    best_score = run.best_score, baseline_score = run.baseline_score, notes = notes,
    diff = diff, git = run.repo ~= nil, dir = run.journal.dir,
    unfinished_iteration = run.iteration > 0 and not run.decided[run.iteration] and run.iteration or nil,
  }
  local wok, werr = pcall(run.write, run, event, rec)
  if not wok then
    notes[#notes + 1] = "could not write the journal: " .. tostring(werr)
    run:emit(event, rec)   -- the console still gets its summary
  end
  run.status, run.reason = status, reason
end

-- An agent that runs a program which is not installed is a usage error,
-- reported before anything is snapshotted or spent.
local function preflight(agent, cwd)
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

--- Starts a run and calls body(run); see the module comment. body returns
--- status ("passed"|"completed"|"failed"|"stopped"), reason.
---@param strategy string
---@param opts table validated options (see M.options)
---@param body fun(run: beat.Run): (string, string)
---@return integer exit_status, beat.Run run
function M.run(strategy, opts, body)
  local cwd = opts.cwd or fs.cwd()
  if not fs.is_dir(cwd) then
    error(("beat.strategy(%q): work tree %s is not a directory"):format(strategy, cwd), 0)
  end
  local run = setmetatable({ opts = opts, strategy = strategy, cwd = fs.realpath(cwd),
    iteration = 0, completed = 0, decided = {}, cost_usd = 0, consecutive_failures = 0,
    history = {}, started = beat.clock(), since = {}, pre_restores = {}, listeners = {} }, Run)
  for i, fn in ipairs(opts.listeners or {}) do
    if type(fn) ~= "function" then
      error(("beat.strategy(%q): option listeners[%d] must be a function, got %s"):format(strategy, i, type(fn)), 0)
    end
    run.listeners[#run.listeners + 1] = fn
  end
  -- the console (or --json, or nothing: see beat.ui) follows the run too
  local view = require("beat.ui").listener { quiet = opts.quiet }
  if view then run.listeners[#run.listeners + 1] = view end

  preflight(opts.agent, run.cwd)
  local lock
  local root = run.cwd
  if opts.git ~= false then
    local repo, err = beat.git.open { dir = run.cwd, max_file_size = opts.max_file_size }
    if not repo then
      usage_error(("%s (beat needs git to keep your work safe; --no-git runs without snapshots, unsafe)")
        :format(err))
    end
    run.repo = repo
    local gitdir
    root, gitdir = repo:path()
    -- an agent started inside .git would edit git's own files, which no
    -- snapshot holds: refuse, and name the work tree to run from
    for _, d in ipairs { gitdir, (gitdir:gsub("/worktrees/[^/]+$", "")) } do
      if run.cwd == d or run.cwd:sub(1, #d + 1) == d .. "/" then
        usage_error(("the working directory %s is inside the git directory %s, not the work tree: run beat in %s")
          :format(run.cwd, d, root))
      end
    end
  end
  local runs_dir, runs_rel = runs_dir_of(opts, root)
  for _, d in ipairs { root .. "/.beat", runs_dir } do
    local st = fs.stat(d)
    if st and st.type ~= "directory" and not fs.is_dir(d) then
      usage_error(("%s exists and is not a directory (beat keeps its runs in %s): move it away")
        :format(d, runs_dir))
    end
  end
  if run.repo and runs_rel then
    -- the runs directory is never snapshotted nor restored, wherever it is
    run.repo:close()
    run.repo = assert(beat.git.open { dir = run.cwd, exclude = { ".beat", runs_rel },
      max_file_size = opts.max_file_size })
  end
  if run.repo then
    -- the lock first (nothing is written before it); it names the run
    -- once its id is reserved
    local lerr
    lock, lerr = run.repo:lock { id = "starting" }
    if not lock then usage_error(lerr) end
    ensure_excluded(run.repo, runs_rel)
    -- worktrees and Slurm jobs that dead runs of this work tree left behind
    -- (none of them is alive: we hold the lock)
    require("beat.parallel").sweep(run.repo, runs_dir)
    local tree, info = run.repo:tree()
    if not tree then
      lock:release()
      return start_failed(run, "cannot snapshot the work tree: " .. tostring(info))
    end
    if #info.skipped > 0 then
      -- a file no snapshot holds could not be given back: refuse to start
      local f = info.skipped[1]
      lock:release()
      usage_error(("%s (%s) is larger than max_file_size (%s): beat could not restore it; "
        .. "ignore it (.gitignore) or raise max_file_size (--max-file-size)%s"):format(f.path,
        size.format(f.size), size.format(opts.max_file_size or beat.git.default_max_file_size),
        #info.skipped > 1 and (" (and %d more)"):format(#info.skipped - 1) or ""))
    end
  end
  -- the machines of the strategy's executors see the work tree
  local unseen = require("beat.parallel").check_executors(opts, root)
  if unseen then
    if lock then lock:release() end
    usage_error(unseen)
  end
  -- The run's id is free in this work tree's runs directory and, with git,
  -- in the repository, whose refs/beat/ every linked work tree shares: the
  -- base snapshot's ref is created only where no run has that id yet.
  local j, jerr = journal.create(runs_dir, beat.now(), run.repo and function(id)
    local base, berr = run.repo:snapshot {
      message = ("beat: run %s base (the work tree before the run)"):format(id) }
    if not base then return nil, "cannot snapshot the work tree: " .. tostring(berr) end
    local ok, rerr = run.repo:set_ref { ref = id .. "/base", commit = base, create = true }
    if ok == nil then return nil, "cannot record the base snapshot: " .. tostring(rerr) end
    run.base = ok and base or nil
    return ok
  end)
  if not j then
    if lock then lock:release() end
    return start_failed(run, run.repo and tostring(jerr)
      or "cannot create the run directory: " .. tostring(jerr))
  end
  run.journal, run.id, run.best, run.at = j, j.id, run.base, run.base
  if lock then lock:relabel(run.id) end

  run:write("run_start", {
    id = run.id, strategy = strategy, cwd = run.cwd, base = run.base, pid = beat.pid(),
    head = run.repo and run.repo:head() or nil, config = opts, git = run.repo ~= nil,
    dir = j.dir,
  })

  local res = table.pack(xpcall(body, function(e)
    if task.is_cancelled(e) or getmetatable(e) == HookError then return e end
    return debug.traceback(tostring(e), 2)
  end, run))
  local status, reason
  if res[1] then
    status, reason = res[2], res[3]
  elseif task.is_cancelled(res[2]) then
    status, reason = "interrupted", "interrupted by a signal"
  elseif getmetatable(res[2]) == HookError then
    status, reason = "failed", tostring(res[2])
  else
    status, reason = "failed", "error: " .. tostring(res[2])
  end
  -- cleanup runs shielded from the cancellation that may have ended the body
  local ok, ferr = pcall(task.shield, finish, run, status, reason)
  if lock then lock:release() end
  run:emit("closed", { status = status })   -- not journaled: listeners let go (the status line goes)
  if not ok then io.stderr:write("beat: finishing the run failed: ", tostring(ferr), "\n") end
  local code = (status == "passed" or status == "completed" or status == "stopped") and 0
    or status == "interrupted" and 130 or 1
  return code, run
end

return M
