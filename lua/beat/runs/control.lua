--- beat.runs.control: runs as managed objects — list them, read their
--- status, pause, resume and cancel them from any directory, start loops
--- detached. What `beat loop list|status|pause|resume|cancel` and the MCP
--- server call.
---
--- Every function that acts on a run takes its id (a unique prefix of one,
--- or "last": the newest run of this work tree) and returns a result, or
--- `nil, message, code` where message is one line for the user and code the
--- exit status it calls for: 2 for a bad id, an ambiguous prefix or a run
--- not in a state that allows the request (nothing was changed), 1 for a
--- failure of the world (a file that cannot be written).
local beat = require "beat"
local fs = require "beat.fs"
local json = require "cjson"
local index = require "beat.runs.index"
local status = require "beat.runs.status"
local proc = require "beat.runs.proc"
local channel = require "beat.runs.channel"
local journal = require "beat.journal"

local M = {}

local USAGE, WORLD = 2, 1

-- The work tree of dir (default: the current directory), or nil.
local function work_tree(dir)
  local repo = beat.git.open { dir = dir or ".", watch = false }
  if repo then
    local root = repo:path()
    repo:close()
    return root
  end
  return nil
end

--- A run to act on: `{id, dir, root, entry}`.
---@class beat.RunRef
---@field id string
---@field dir string the run directory
---@field root? string the work tree
---@field entry? beat.IndexEntry

-- Runs known here: every index entry, plus the run directories of this
-- work tree (runs from before the index, or when it could not be written).
local function known(root)
  local by_id, list = {}, {}
  for _, e in ipairs(index.all()) do
    if e.dir then
      local ref = { id = e.id, dir = e.dir, root = e.root, entry = e }
      by_id[e.id], list[#list + 1] = ref, ref
    end
  end
  if root then
    for _, r in ipairs(journal.list(root .. "/.beat/runs")) do
      if not by_id[r.id] then
        local ref = { id = r.id, dir = r.dir, root = root }
        by_id[r.id], list[#list + 1] = ref, ref
      end
    end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--- Finds a run by id, unique prefix, or "last" (the newest run of the work
--- tree `opts.root`, default the current directory's; anywhere when not in
--- one). Returns the run, or nil, message, 2.
---@param id string
---@param opts? {root?: string}
---@return beat.RunRef|nil, string?, integer?
function M.find(id, opts)
  opts = opts or {}
  if type(id) ~= "string" or not id:match("^[%w_%-]+$") then
    return nil, ("run id must be letters and digits (a run id, a unique prefix of one, or last), got '%s'")
      :format(tostring(id)), USAGE
  end
  local root = opts.root or work_tree()
  local runs = known(root)
  if id == "last" or id == "latest" then
    for i = #runs, 1, -1 do
      if not root or runs[i].root == root then return runs[i] end
    end
    return nil, root and ("no runs in the work tree %s (see 'beat loop list --all')"):format(root)
      or "no runs yet", USAGE
  end
  local found = {}
  for _, r in ipairs(runs) do
    if r.id == id then return r end
    if r.id:sub(1, #id) == id then found[#found + 1] = r end
  end
  if #found == 1 then return found[1] end
  if #found > 1 then
    local names = {}
    for i = 1, math.min(#found, 4) do names[i] = found[i].id end
    return nil, ("run id '%s' is ambiguous: %s%s"):format(id, table.concat(names, ", "), #found > 4 and ", ..." or ""), USAGE
  end
  return nil, ("no run '%s' (see 'beat loop list --all')"):format(id), USAGE
end

---@class beat.ListOptions
---@field status? string only runs in this state (see beat.runs.status)
---@field all? boolean every work tree's runs (default: the work tree `root` only)
---@field root? string the work tree (default: the current directory's)
---@field limit? integer at most this many, newest first

--- The runs of this work tree (or all), newest first, as status tables.
---@param opts? beat.ListOptions
---@return beat.RunStatus[]
function M.list(opts)
  opts = opts or {}
  local root = opts.root or work_tree()
  local out = {}
  local runs = known(root)
  for i = #runs, 1, -1 do
    local r = runs[i]
    if opts.all or not root or r.root == root then
      local st = status.inspect(r.dir, r.entry or { id = r.id, root = r.root })
      st.root = st.root or r.root
      if not opts.status or st.state == opts.status then
        out[#out + 1] = st
        if opts.limit and #out >= opts.limit then break end
      end
    end
  end
  return out
end

--- The status of one run (see beat.RunStatus); `history` gives every
--- decision (the last `history_limit`), else the last five; `diff` adds the
--- diff stat of the best snapshot against the base.
---@param id string
---@param opts? {history?: boolean, history_limit?: integer, diff?: boolean, root?: string}
---@return beat.RunStatus|nil, string?, integer?
function M.status(id, opts)
  opts = opts or {}
  local r, why, code = M.find(id, opts)
  if not r then return nil, why, code end
  local st = status.inspect(r.dir, r.entry or { id = r.id, root = r.root },
    { history = opts.history, history_limit = opts.history_limit, diff = opts.diff })
  st.root = st.root or r.root
  return st
end

local seq = 0
-- Writes a request for the run's process and wakes it.
local function request(st, req)
  local dir = channel.requests_dir(st.dir)
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, "cannot write the request: " .. tostring(err), WORLD end
  seq = seq + 1
  req.from = { pid = beat.pid(), cwd = fs.cwd() }
  req.time = beat.now()
  local name = ("%016d-%d-%d.json"):format(math.floor(beat.now() * 1000), beat.pid(), seq)
  ok, err = fs.write(dir .. "/" .. name, json.encode(req))
  if not ok then return nil, "cannot write the request: " .. tostring(err), WORLD end
  -- the wake-up; only once the process has its handler (it wrote run_start or resume)
  if st.pid and st.state ~= "starting" then
    proc.kill(st.pid, require("beat._runtime").signals.SIGUSR2)
  end
  return true
end

local function refuse(st, what)
  local why
  if st.final then
    why = ("run %s has ended (%s): nothing to %s"):format(st.id, st.state, what)
  elseif st.state == "missing" then
    why = ("run %s: %s"):format(st.id, st.reason)
  else
    why = ("run %s is %s: cannot %s it"):format(st.id, st.state, what)
  end
  return nil, why, USAGE
end

--- Asks a running loop to pause: it finishes the current iteration's
--- decision, then waits with nothing running. `force`: end the current
--- iteration now (it is run again on resume); the process exits.
---@param id string
---@param opts? {force?: boolean, root?: string}
---@return beat.RunStatus|nil, string?, integer?
function M.pause(id, opts)
  opts = opts or {}
  local st, why, code = M.status(id, opts)
  if not st then return nil, why, code end
  if st.state == "paused" then return nil, ("run %s is already paused"):format(st.id), USAGE end
  if not st.alive or (st.state ~= "running" and st.state ~= "starting") then return refuse(st, "pause") end
  if st.pause_requested and not opts.force then
    return nil, ("run %s will pause already, after iteration %d's decision"):format(st.id, st.iteration), USAGE
  end
  local ok, err, c = request(st, { request = "pause", force = opts.force or nil })
  if not ok then return nil, err, c end
  st.pause_requested = true
  return st
end

--- Asks a running loop to stop now: what runs is ended (its process
--- groups get SIGTERM, then SIGKILL after the grace), the work tree goes to
--- the best snapshot, the journal ends with `cancelled` and the reason. A
--- crashed or interrupted run is closed the same way without running
--- anything (this process does it).
---@param id string
---@param reason? string
---@param opts? {root?: string, quiet?: boolean} quiet (default true): no summary on stdout when this process closes a dead run
---@return beat.RunStatus|nil, string?, integer?
function M.cancel(id, reason, opts)
  opts = opts or {}
  local st, why, code = M.status(id, opts)
  if not st then return nil, why, code end
  if st.final or st.state == "missing" then return refuse(st, "cancel") end
  reason = reason and reason ~= "" and reason or "by request (beat loop cancel)"
  if st.alive then
    local ok, err, c = request(st, { request = "cancel", reason = reason })
    if not ok then return nil, err, c end
    return st
  end
  -- no process: close it from here (what it left running is ended, the
  -- work tree goes to the best snapshot, the journal gets its run_end)
  local ok, err = pcall(require("beat.loop").close, st.dir, "cancelled", reason, { quiet = opts.quiet ~= false })
  if not ok then
    if type(err) == "table" and err.usage then return nil, err.usage, USAGE end
    return nil, tostring(err), WORLD
  end
  return M.status(st.id, opts)
end

-- argv of this beat
local function beat_argv(...)
  local argv = { beat.exepath() }
  for _, a in ipairs { ... } do argv[#argv + 1] = a end
  return argv
end

-- The environment for a detached process: ours plus `env`.
local function environment(env)
  if not env then return nil end
  local vars = require("beat.exec").environ()
  for k, v in pairs(env) do vars[k] = v ~= false and tostring(v) or nil end
  local list = {}
  for k, v in pairs(vars) do list[#list + 1] = k .. "=" .. v end
  table.sort(list)
  return list
end

-- Starts `argv` detached with its output appended to `output`; returns pid.
local function spawn(argv, cwd, output, env)
  local pid, err = require("beat._proc").spawn_detached {
    file = argv[1], args = argv, cwd = cwd, output = output, env = environment(env) }
  if not pid then return nil, "cannot start the detached run: " .. tostring(err), WORLD end
  return pid
end

--- Continues a run: a paused one (its process goes on), or one whose
--- process is gone — crashed, interrupted, force-paused — from its journal
--- (options rebuilt from run_start, counters carried over, what the dead
--- process left running ended, the work tree at the best snapshot, the
--- iteration that was under way run again). `detach` (default true): the
--- resumed run gets a detached process of its own, output appended to its
--- output.log; false: it runs in this process (inside a task; `beat loop
--- resume` does this), printing as `beat loop` does and returning its exit
--- status when it ends.
---@param id string
---@param opts? {detach?: boolean, root?: string, env?: table<string, string|false>}
---@return beat.RunStatus|integer|nil result the status (detached, or a paused run; `resumed_by` is "request" for a paused run told to go on, "process" for a new detached process), or the exit status of a run resumed here
---@return string? message
---@return integer? code
function M.resume(id, opts)
  opts = opts or {}
  local st, why, code = M.status(id, opts)
  if not st then return nil, why, code end
  if st.state == "paused" and st.alive then
    local ok, err, c = request(st, { request = "resume" })
    if not ok then return nil, err, c end
    st.resumed_by = "request"
    return st
  end
  if st.final or st.state == "missing" then return refuse(st, "resume") end
  if st.alive then
    return nil, ("run %s is %s, not paused: nothing to resume"):format(st.id, st.state), USAGE
  end
  local recs = (journal.open(st.dir)):records()
  local start
  for _, r in ipairs(recs) do if r.event == "run_start" then start = r break end end
  if not start then
    return nil, ("run %s died before it started (the work tree was not touched): start it again"):format(st.id), USAGE
  end
  local origin = start.origin
  if type(origin) ~= "table" or (origin.kind ~= "loop" and origin.kind ~= "recipe") then
    return nil, ("run %s does not say how it was started (run by an older beat, or from the REPL): it cannot be resumed")
      :format(st.id), USAGE
  end
  if opts.detach ~= false then
    local argv = beat_argv("loop", "resume", st.id, "--detached-run")
    local pid, err, c = spawn(argv, origin.dir, st.dir .. "/output.log", opts.env)
    if not pid then return nil, err, c end
    local ident = proc.identity(pid) or { pid = pid }
    index.put { id = st.id, pid = ident.pid, start_time = ident.start_time, boot_id = ident.boot_id,
      detached = true }
    st.pid, st.alive, st.detached, st.resumed_by = pid, true, true, "process"
    return st
  end
  return require("beat.cli.loop").resume_here(st, start)
end

---@class beat.DetachOptions
---@field args? string[] the arguments of `beat loop` (prompt and flags) for a loop
---@field recipe? string a recipe file to run instead (`beat run FILE ARGS`)
---@field recipe_args? string[] its arguments
---@field set? table<string, string> its --set overrides
---@field cwd? string where to start it (default: the current directory)
---@field env? table<string, string|false> environment changes for the run (default: this process's)

--- Starts a loop (or a recipe) detached: it runs in a session of its own,
--- outlives this process, writes its output to `.beat/runs/ID/output.log`.
--- Everything that can be checked is checked first (a bad flag, a missing
--- agent, not a git repository, a work tree busy with another run): nothing
--- is started then. Returns the run id at once (the id is reserved here,
--- before the loop's process does anything), and {pid, dir, output}.
---@param opts beat.DetachOptions
---@return string|nil id, table|string info_or_message, integer? code
function M.start_detached(opts)
  if type(opts) ~= "table" then error("beat.runs.control.start_detached: opts must be a table", 2) end
  local cwd = fs.realpath(opts.cwd or fs.cwd())
  if not cwd or not fs.is_dir(cwd) then
    return nil, ("working directory %s does not exist"):format(tostring(opts.cwd)), USAGE
  end
  local loop = require "beat.loop"
  local argv, place
  local ok, err = pcall(function()
    local here = fs.cwd()
    fs.chdir(cwd)   -- relative paths in the arguments are the caller's
    local pok, perr = pcall(function()
      if opts.recipe then
        local file = fs.realpath(opts.recipe)
        if not file or fs.is_dir(file) then
          error({ usage = ("run: cannot read recipe %s"):format(opts.recipe) }, 0)
        end
        place = { root = work_tree(cwd) or cwd }
        place.runs_dir = place.root .. "/.beat/runs"
        argv = beat_argv("run")
        for k, v in pairs(opts.set or {}) do argv[#argv + 1] = "--set"; argv[#argv + 1] = k .. "=" .. tostring(v) end
        argv[#argv + 1] = file
        for _, a in ipairs(opts.recipe_args or {}) do argv[#argv + 1] = a end
      else
        local cli_loop = require "beat.cli.loop"
        local p = cli_loop.parse(require("beat.cli"), opts.args or {})
        local strategy, lopts = cli_loop.options(require("beat.cli"), p)
        lopts.probe_lock = true
        place = loop.preflight(strategy, lopts)
        place.strategy = strategy
        argv = beat_argv("loop")
        for _, a in ipairs(opts.args or {}) do if a ~= "--detach" then argv[#argv + 1] = a end end
      end
    end)
    fs.chdir(here)
    if not pok then error(perr, 0) end
  end)
  if not ok then
    if type(err) == "table" and err.usage then return nil, (err.usage:gsub("^loop: ", "")), USAGE end
    return nil, tostring(err), USAGE
  end
  local j, jerr = journal.create(place.runs_dir, beat.now(), { reserve = function(id)
    local ok, why = index.reserve(id)
    if ok == nil then return true, why end   -- an unwritable index only costs finding the run elsewhere
    return ok
  end })
  if not j then return nil, "cannot create the run directory: " .. tostring(jerr), WORLD end
  -- the hidden flags go first: a recipe's own arguments follow its file
  table.insert(argv, 3, "--run-id")
  table.insert(argv, 4, j.id)
  table.insert(argv, 5, "--detached-run")
  local output = j.dir .. "/output.log"
  local pid, serr, code = spawn(argv, cwd, output, opts.env)
  if not pid then
    fs.rm_rf(j.dir)
    index.remove(j.id)
    return nil, serr, code
  end
  local ident = proc.identity(pid) or { pid = pid }
  index.put { id = j.id, root = place.root, dir = j.dir, output = output, pid = ident.pid,
    start_time = ident.start_time, boot_id = ident.boot_id, started = beat.now(), detached = true,
    strategy = place.strategy }
  return j.id, { pid = pid, dir = j.dir, output = output }
end

return M
