--- beat.parallel: what running candidates at once needs besides the loop
--- (strategies/parallel.lua is the loop).
---
---   beat.parallel.each(n, fn)        fn(1..n), each in its own task; none outlives the call
---   beat.parallel.semaphore(n)       at most n holders at once: sem:run(fn, ...)
---   beat.parallel.worktrees(run)     the run's candidate worktrees, under
---                                    .beat/runs/<id>/wt/; all removed on close
---   beat.parallel.cleanup(run_id)    what a dead run left: its worktrees and
---                                    its Slurm jobs
---
--- Worktrees never outlive their run: a round removes its own, the set's
--- `<close>` removes what is left however the run ends (Ctrl-C, cancel, an
--- error), and a run killed with SIGKILL is cleaned up by `cleanup(run_id)`,
--- which every run of the same work tree calls at its start for runs whose
--- process is gone (`sweep`), and `beat loop resume` calls for the run it
--- continues. A run that may have worktrees says so with an empty file
--- `<runs dir>/.worktrees/<id>`, made before its first worktree and removed
--- after its last, so the sweep looks at those runs only, not at every run
--- the work tree ever had.
local fs = require "beat.fs"
local task = require "beat.task"
local runtime = require "beat._runtime"

local M = {}

-- Calls fn on the next turn of the loop, outside any task: waking or
-- cancelling a task from there is what libuv callbacks do.
local function soon(fn)
  local timer = runtime.timer()
  timer:start(0, function()
    timer:close()
    fn()
  end)
end

--------------------------------------------------------------------------------
-- Tasks

-- An error as the task raised it: cancellations and error objects (a
-- failing hook) as they are, anything else with its traceback.
local function keep_error(e)
  if task.is_cancelled(e) or type(e) == "table" then return e end
  return debug.traceback(tostring(e), 2)
end

--- Runs fn(k) for k = 1..n, each in a task of its own, and returns their
--- first results as a list once all have finished. When one raises, the
--- others are cancelled and waited for, then its error is raised (as it
--- was: a hook's error object stays one). When the calling task is
--- cancelled, every fn is cancelled and waited for before the cancellation
--- goes on. Either way no task outlives the call, so neither do their
--- processes (cancelling beat.exec waits until its process tree is gone).
---@param n integer
---@param fn fun(k: integer): any
---@return any[]
function M.each(n, fn)
  task.current("beat.parallel.each")
  local tasks, results, failure = {}, {}, nil
  local function cancel_all() for _, t in ipairs(tasks) do t:cancel() end end
  for k = 1, n do
    tasks[k] = task.go(function()
      local ok, res = xpcall(fn, keep_error, k)
      if ok then
        results[k] = res
      elseif not task.is_cancelled(res) and failure == nil then
        failure = res
        soon(cancel_all)
      end
    end)
  end
  -- the tasks catch their own errors: a wait raises only when this task is cancelled
  local ok, err = pcall(function()
    for _, t in ipairs(tasks) do t:wait() end
  end)
  if not ok then
    task.shield(function()
      cancel_all()
      for _, t in ipairs(tasks) do t:join() end
    end)
    error(err, 0)
  end
  if failure ~= nil then error(failure, 0) end
  return results
end

---@class beat.Semaphore
---@field n integer how many may hold it at once
---@field used integer how many hold it now
local Semaphore = {}
Semaphore.__index = Semaphore

--- A counting semaphore for tasks: at most n hold it at once; the others
--- wait in order of arrival.
---@param n integer
---@return beat.Semaphore
function M.semaphore(n)
  if math.type(n) ~= "integer" or n < 1 then
    error(("beat.parallel.semaphore: n must be a positive integer, got %s"):format(tostring(n)), 2)
  end
  return setmetatable({ n = n, used = 0, queue = {} }, Semaphore)
end

--- Takes a place, waiting for one if all n are held. A task cancelled while
--- waiting takes none.
function Semaphore:acquire()
  if self.used < self.n then
    self.used = self.used + 1
    return
  end
  local entry = {}
  local ok, err = pcall(task.await, "semaphore:acquire", function(wake)
    entry.wake = wake
    self.queue[#self.queue + 1] = entry
    return function() entry.cancelled = true end
  end)
  if not ok then
    entry.cancelled = true
    if entry.granted then self:release() end   -- handed over, then cancelled: pass it on
    error(err, 0)
  end
end

--- Gives the place back: to the first task still waiting, if any.
function Semaphore:release()
  while #self.queue > 0 do
    local entry = table.remove(self.queue, 1)
    if not entry.cancelled then
      entry.granted = true
      soon(function() entry.wake() end)
      return
    end
  end
  self.used = self.used - 1
end

--- Runs fn(...) holding a place; gives it back however fn ends.
function Semaphore:run(fn, ...)
  self:acquire()
  local res = table.pack(pcall(fn, ...))
  self:release()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--------------------------------------------------------------------------------
-- Worktrees

-- The repository's common git directory (shared by its linked work trees).
local function common_dir(repo)
  local _, gitdir = repo:path()
  return (gitdir:gsub("/worktrees/[^/]+/?$", ""))
end

-- Linked work trees git knows of whose directory is under `under` (made by
-- beat: their admin directory has beat's marker): {{path, admin}, ...}.
local function linked_under(repo, under)
  local common = common_dir(repo)
  local out = {}
  local real = fs.realpath(under) or under
  for _, name in ipairs(fs.list(common .. "/worktrees") or {}) do
    local admin = common .. "/worktrees/" .. name
    local gitdir = (fs.read(admin .. "/gitdir") or ""):match("^([^\n]+)")
    local path = gitdir and gitdir:gsub("/%.git$", "")
    if path and fs.exists(admin .. "/beat") then
      for _, u in ipairs { under, real } do
        if path:sub(1, #u + 1) == u .. "/" then
          out[#out + 1] = { path = path, admin = admin }
          break
        end
      end
    end
  end
  return out
end

-- Removes every worktree under dir (a run's wt/, beat's own): the linked
-- work trees git records there (directory and git's record, as `git
-- worktree remove` and `prune`), then the directory with whatever is left
-- in it (a worktree half made when beat died). Returns how many worktrees,
-- or nil, err.
local function remove_all(repo, dir)
  local n = 0
  for _, wt in ipairs(linked_under(repo, dir)) do
    local ok, err = repo:remove_worktree(wt.path)
    if not ok and not fs.is_dir(wt.path) then
      ok, err = fs.rm_rf(wt.admin)       -- its directory is gone already: git's record of it goes too
    end
    if not ok then return nil, tostring(err) end
    n = n + 1
  end
  if fs.is_dir(dir) then
    n = n + #(fs.list(dir) or {})
    local ok, err = fs.rm_rf(dir)
    if not ok then return nil, tostring(err) end
  end
  return n
end

-- The file that says the run in run_dir (<runs dir>/<id>) may have worktrees.
local function mark_of(run_dir)
  local runs_dir, id = run_dir:match("^(.*)/([^/]+)$")
  return runs_dir .. "/.worktrees", id
end

---@class beat.Worktrees
---@field dir string .beat/runs/<id>/wt
local Worktrees = {}
Worktrees.__index = Worktrees

--- The candidate worktrees of a run (which must use git), under
--- `<run dir>/wt/`. Hold it in a `<close>` variable: closing removes every
--- worktree still there.
---@param run beat.Run
---@return beat.Worktrees
function M.worktrees(run)
  if not run.repo then error("beat.parallel.worktrees: the run has no git repository", 2) end
  return setmetatable({ run = run, repo = run.repo, dir = run.journal.dir .. "/wt", open = {} }, Worktrees)
end

--- A new worktree `<run dir>/wt/<id>` checked out at commit (detached HEAD,
--- no branch), opened. Returns the repo and its path, or nil, err.
---@param id string "3.2"
---@param commit string
---@return beat.git.Repo|nil repo, string path_or_err
function Worktrees:add(id, commit)
  local path = self.dir .. "/" .. id
  if not self.marked then
    local marks, run_id = mark_of(self.run.journal.dir)
    local ok, err = fs.mkdir_p(marks)
    if ok then ok, err = fs.write(marks .. "/" .. run_id, "", false) end
    if not ok then return nil, err end
    self.marked = true
  end
  -- a watch would cost more than the one full scan a candidate's snapshot takes
  local repo, err = self.repo:worktree { path = path, commit = commit, watch = false }
  if not repo then
    self:remove(id)
    return nil, err
  end
  self.open[id] = repo
  return repo, path
end

--- Removes worktree id (its directory and git's record of it).
---@param id string
function Worktrees:remove(id)
  local repo = self.open[id]
  if repo then
    repo:close()
    self.open[id] = nil
  end
  local path = self.dir .. "/" .. id
  local ok = self.repo:remove_worktree(path)
  if not ok and fs.is_dir(path) then fs.rm_rf(path) end
end

--- Removes every worktree of the run, and the wt/ directory. Idempotent.
function Worktrees:close()
  for id in pairs(self.open) do self:remove(id) end
  if remove_all(self.repo, self.dir) and self.marked then
    local marks, run_id = mark_of(self.run.journal.dir)
    os.remove(marks .. "/" .. run_id)
    self.marked = false
  end
end
Worktrees.__close = Worktrees.close

--- Moves files too large to snapshot out of a worktree, into
--- `<run dir>/too-large/iter-<id>/`, journals a `too_large` record, and
--- returns one line naming them (as beat.loop does for the work tree).
---@param id string
---@param path string the worktree
---@param files {path: string, size: integer}[]
---@return string
function Worktrees:set_aside(id, path, files)
  local size = require "beat.size"
  local dest = ("%s/too-large/iter-%s"):format(self.run.journal.dir, id)
  local names = {}
  for _, f in ipairs(files) do
    local to = dest .. "/" .. f.path
    fs.mkdir_p(to:match("^(.*)/[^/]*$"))
    if not os.rename(path .. "/" .. f.path, to) then os.remove(path .. "/" .. f.path) end
    names[#names + 1] = ("%s (%s)"):format(f.path, size.format(f.size))
  end
  self.run:write("too_large", { iteration = id, files = files, set_aside = dest })
  return ("too large to snapshot (max_file_size %s): %s; moved to %s"):format(
    size.format(self.run.opts.max_file_size or require("beat.git").default_max_file_size),
    table.concat(names, ", "), dest)
end

--------------------------------------------------------------------------------
-- Executors

-- The distinct executors of a strategy's options.
local function executors_of(opts)
  local list, seen = {}, {}
  for _, k in ipairs { "executor", "agent_executor", "eval_executor" } do
    local ex = opts[k]
    if ex ~= nil and not seen[ex] then
      seen[ex], list[#list + 1] = true, ex
    end
  end
  return list
end

--- Whether the machines of every executor in opts (executor, agent_executor,
--- eval_executor) see the work tree `dir`: nil when they do, else one line.
---@param opts table a strategy's options
---@param dir string
---@return string|nil
function M.check_executors(opts, dir)
  for _, ex in ipairs(executors_of(opts)) do
    if type(ex.check) == "function" then
      fs.mkdir_p(dir .. "/.beat")    -- the marker goes there, not into your files
      local ok, err = ex:check(dir)
      if not ok then return tostring(err) end
    end
  end
  return nil
end

-- The executors a run's journal names (its run_start config), rebuilt to
-- clean up after it: a Slurm executor needs only where its cluster is.
local function journal_executors(run_dir)
  local f = io.open(run_dir .. "/journal.jsonl")
  local line = f and f:read("l")
  if f then f:close() end
  local ok, rec = pcall(require("cjson").decode, line or "")
  local cfg = ok and type(rec) == "table" and type(rec.config) == "table" and rec.config or {}
  local list = {}
  for _, k in ipairs { "executor", "agent_executor", "eval_executor" } do
    local x = cfg[k]
    if type(x) == "table" and x.kind == "slurm" then
      local conf = type(x.conf) == "string" and x.conf or nil
      local dup = false
      for _, e in ipairs(list) do if e.conf == conf then dup = true end end
      if not dup then list[#list + 1] = require("beat.executor").slurm { conf = conf } end
    end
  end
  return list
end

--------------------------------------------------------------------------------
-- Cleaning up after a dead run

local function check_id(fn, id)
  if type(id) ~= "string" or not id:match("^[%w_.%-]+$") then
    error(("%s: run_id must be a run id, got %s"):format(fn, type(id) == "string" and ("%q"):format(id) or type(id)), 3)
  end
end

---@class beat.parallel.CleanupOptions
---@field cwd? string the run's work tree (default: the current directory)
---@field runs_dir? string where its runs are (default: <work tree>/.beat/runs)
---@field repo? beat.git.Repo the work tree's repository, already open
---@field executors? beat.Executor[] executors whose jobs to cancel (default: those the run's journal names)

--- Removes what run `run_id`, whose process is gone (killed with SIGKILL,
--- crashed), left behind: its Slurm jobs still queued or running are
--- cancelled (first: they may still write into the worktrees), then its
--- candidate worktrees under `<runs dir>/<id>/wt/` are removed, with git's
--- record of them. Never call it for a live run. Returns
--- `{jobs = n, worktrees = n}`, or nil and why.
---@param run_id string
---@param opts? beat.parallel.CleanupOptions
---@return {jobs: integer, worktrees: integer}|nil, string?
function M.cleanup(run_id, opts)
  check_id("beat.parallel.cleanup", run_id)
  opts = opts or {}
  local repo = opts.repo
  if not repo then
    local err
    repo, err = require("beat.git").open { dir = opts.cwd or fs.cwd(), watch = false }
    if not repo then return nil, err end
  end
  local root = repo:path()
  local run_dir = (opts.runs_dir or (root .. "/.beat/runs")) .. "/" .. run_id
  local done = { jobs = 0, worktrees = 0 }
  local first_err
  for _, ex in ipairs(opts.executors or journal_executors(run_dir)) do
    if type(ex.cleanup) == "function" then
      local n, err = ex:cleanup(run_id)
      if n then done.jobs = done.jobs + n else first_err = first_err or err end
    end
  end
  local n, err = remove_all(repo, run_dir .. "/wt")
  if n then done.worktrees = n else first_err = first_err or err end
  if not first_err then
    local marks, id = mark_of(run_dir)
    os.remove(marks .. "/" .. id)
  end
  if not opts.repo then repo:close() end
  if first_err then return nil, first_err end
  return done
end

-- Whether the run in run_dir may still be alive: no end record, and the
-- process its journal names (pid and start time) still runs.
local function maybe_alive(run_dir)
  if not fs.exists(run_dir .. "/journal.jsonl") then return false end
  return require("beat.runs.status").inspect(run_dir).alive
end

--- Cleans up after every run under runs_dir that may have left worktrees
--- (its `.worktrees/<id>` file) and whose process is gone: called by
--- beat.loop once it holds the work tree's lock (so no other run of this
--- work tree is alive; a run of another work tree sharing runs_dir is left
--- alone while its process lives). Failures are notes on stderr.
---@param repo beat.git.Repo
---@param runs_dir string
function M.sweep(repo, runs_dir)
  for _, id in ipairs(fs.list(runs_dir .. "/.worktrees") or {}) do
    if id:match("^[%w_.%-]+$") and not maybe_alive(runs_dir .. "/" .. id) then
      local ok, res, err = pcall(M.cleanup, id, { repo = repo, runs_dir = runs_dir })
      if not ok or not res then
        io.stderr:write(("beat: could not clean up after run %s: %s\n"):format(id, tostring(ok and err or res)))
      end
    end
  end
end

return M
