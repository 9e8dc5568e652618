--- beat.loop.start: everything before a run's first iteration — the
--- preflight (the directory, the agent's program, the git repository, a
--- usable runs directory), the work tree's lock, the run's id and base
--- snapshot (open_new), or the dead run it continues (open_resumed).
--- Nothing is written before the lock is held.
local beat = require "beat"
local journal = require "beat.journal"
local fs = require "beat.fs"
local size = require "beat.size"
local R = require "beat.loop.run"
local Run, usage_error, say = R.Run, R.usage_error, R.say

local M = {}

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
  if id == "starting" then   -- a run that has the lock and no id yet
    return ("work tree is in use by a run that is starting%s (one loop per work tree, %s): see 'beat loop list' in a moment")
      :format(pid and (" (pid " .. pid .. ")") or "", root)
  end
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

--- Checks what a run needs before anything is written: the directory, the
--- agent's program, the git repository (not started inside .git), a usable
--- `.beat`, and — with `opts.probe_lock` — that no other run holds the work
--- tree. Raises a usage error (one line, exit 2) naming what is wrong.
--- `beat loop --detach` calls it (probe_lock) in the starting process so
--- mistakes are reported there, not in the detached run's log; a probe
--- finds the work tree without libgit2 where it can and asks the work
--- tree's lock whether a run holds it (the run's own start takes the lock).
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
    if type(opts[k]) == "table" and R.callable(opts[k]) then preflight(opts[k].agent, place.cwd) end
  end
  local gitdir
  if opts.git ~= false then
    local found = opts.probe_lock and find_git(place.cwd)
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
    local busy = require("beat.git.lock").in_use(gitdir)
    if busy then usage_error(lock_message(place.root, busy)) end
    if place.repo then
      place.repo:close()
      place.repo = nil
    end
  end
  return place
end

--- Takes session.pending when it is for this run: a reserved id goes to the
--- first run of the process, a resume to the first run of the same strategy
--- whose run directory is the one to resume.
function M.take_pending(session, strategy, place)
  local p = session.pending
  if not p then return nil end
  if p.resume and ((p.strategy and p.strategy ~= strategy)
      or (p.dir and p.dir ~= place.runs_dir .. "/" .. p.resume)) then
    return nil
  end
  session.pending = nil
  return p
end

--- A Run not yet started: its options, where it runs, its listeners (the
--- strategy's, and the console's view of beat.ui).
function M.new_run(strategy, opts, place)
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
local function index_run(run, session, extra)
  local ident = me()
  local entry = { id = run.id, root = run.root, dir = run.journal.dir, strategy = run.strategy,
    pid = ident.pid, start_time = ident.start_time, boot_id = ident.boot_id, status = "running",
    detached = session.detached or nil }
  for k, v in pairs(extra or {}) do entry[k] = v end
  local ok, err = require("beat.runs.index").put(entry)
  if not ok then
    run:write("note", { note = ("the run is not in the index of runs (%s): other directories will not find it")
      :format(tostring(err)) })
  end
end

--- A new run: the lock, its id (reserved by --detach, or here), the base
--- snapshot, run_start (which records the session's origin).
function M.open_new(run, place, reserved, session)
  local index = require "beat.runs.index"
  -- the first command's shim starts while the base snapshot is taken
  require("beat.exec").ready_shim()
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
    config = run.opts, git = run.repo ~= nil, origin = session.origin, detached = session.detached or nil,
    max_iterations = run.opts.max_iterations, dir = j.dir,
  })
  if j.reserve_error then
    run:write("note", { note = "the run is not in the index of runs: " .. tostring(j.reserve_error) })
  end
  index_run(run, session, { started = beat.now() })
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

--- A run that continues a dead one from its journal: refuses what cannot be
--- continued, takes the lock, ends what the dead process left running,
--- repairs the journal's tail, carries the counters over and puts the work
--- tree at the best snapshot (what was there is kept as pre-restore-N).
function M.open_resumed(run, place, id, session)
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
  -- a parallel run's candidate worktrees and Slurm jobs go too
  local cleaned = run.repo and require("beat.parallel").cleanup(id,
    { cwd = run.cwd, runs_dir = place.runs_dir, repo = run.repo }) or nil
  local rows = {}
  for _, d in ipairs(r.decisions) do rows[#rows + 1] = R.tsv_row(d) end
  local torn = j:repair(rows)

  local d = r.last_decision
  run.base = r.start.base
  run.best = d and d.best or run.base
  run.last = d and d.snapshot or nil
  run.iteration = d and R.round_of(d.iteration) or 0
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
  local ident = me()
  run:write("resume", { pid = ident.pid, start_time = ident.start_time, boot_id = ident.boot_id,
    after_iteration = d and run.iteration or nil, elapsed = r.elapsed, cost_usd = r.cost_usd,
    killed = killed, torn = torn, cleaned = cleaned, stale_locks = #stale > 0 and stale or nil, origin = session.origin, detached = session.detached or nil,
    from = r.ended and r.ended.status or "crashed", closing = run.closing })
  index_run(run, session)
  say(run, "beat run %s: %s in %s, %s%s", run.id, run.strategy, run.cwd,
    run.closing and "closing it" or d and ("resumed after iteration " .. run.iteration) or "resumed from the start",
    #killed > 0 and ("; ended %d process%s the dead run left"):format(#killed, #killed == 1 and "" or "es") or "")
  if run.repo then
    run:restore(run.best, ("files the stopped run left in the work tree (iteration %d was under way)")
      :format(run.iteration + 1))
  end
end

--- Journals every command the run's process starts (the shim's identity),
--- so a resume can end what a dead process left running. Returns the
--- function that stops it.
function M.watch_processes(run)
  local exec = require "beat.exec"
  local procs = require "beat.runs.proc"
  local key = {}
  exec.observers[key] = function(p)
    local ident = procs.identity(p.pid)
    if ident then
      run:write("process", { iteration = run.iteration, label = p.label, pid = ident.pid,
        start_time = ident.start_time, boot_id = ident.boot_id }, { sync = false, repair = false })
    end
  end
  return function() exec.observers[key] = nil end
end


return M
