--- beat.git.lock — one run per work tree: repo:lock and the lock it gives.
--- The lock is an flock(2) on a file in the git directory, so the kernel
--- drops it when the holder exits however it exits; the file says who holds
--- it ("<pid> <id>"), for the message whoever is refused gets.
--- Conventions as in beat.git (see lua/beat/git/init.lua).
local check = require "beat.check"
local fs = require "beat.fs"
local O = require "beat.git.options"

local M = {}

---@class beat.git.Repo
local Repo = {}
M.methods = Repo

--- A work tree's lock (repo:lock).
---@class beat.git.Lock
---@field private _k userdata the beat.fs lock
local Lock = {}
Lock.__index = Lock

-- What the lock file says: "<pid> <id>".
local function holder(id)
  return ("%d %s\n"):format(require("beat._runtime").pid(), id)
end

--- Let go of the lock (idempotent; also on `<close>`, garbage collection and
--- the end of the process).
function Lock:release() self._k:release() end

--- Whether this object still holds the lock.
---@return boolean
function Lock:held() return self._k:held() end

--- Change the id whoever is refused is told (the lock stays held): a run
--- takes the lock before its id is reserved.
---@param id string
---@return true|nil ok
---@return string? err
function Lock:relabel(id)
  check.value("lock:relabel", "id", id, O.ID)
  if not self._k:held() then check.error("lock:relabel", "the lock was released") end
  return self._k:record(holder(id))
end

Lock.__close = Lock.release

---@class beat.git.LockOptions
---@field id string who holds it (the run id), shown to whoever is refused
---@field name? string the lock's name (default "run": one run per work tree)

local LOCK = {
  id = O.ID,
  name = { "string", what = "a plain file name", test = function(v) return v:match("^[%w%-_.]+$") ~= nil end },
}

-- The lock `name` of the git directory gitdir, taken for id: the fs lock,
-- or nil and why.
local function take(gitdir, id, name)
  local dir = gitdir .. "/beat"
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, "lock: " .. err end
  local path = dir .. "/" .. (name or "run") .. ".lock"
  local k, lerr, code = fs.lock(path, holder(id))
  if k then return k end
  if code ~= fs.errno.EWOULDBLOCK then return nil, "lock: " .. lerr end
  -- the holder recorded "<pid> <id>" (it may not have yet)
  local pid, holder_id = (fs.read(path) or ""):match("^(%d+) ([^\n]+)")
  if pid then
    return nil, string.format("work tree is in use by run %s (pid %s)", holder_id, pid)
  end
  return nil, "work tree is in use by another run"
end

--- Take the work tree's lock. Released by `lock:release()`, `<close>`, garbage
--- collection, or the end of the process however it ends (a lock left by a
--- killed process is simply taken over).
---@param opts string|beat.git.LockOptions the holder's id, or options
---@return beat.git.Lock|nil lock
---@return string? err `"work tree is in use by run <id> (pid N)"`
function Repo:lock(opts)
  local fname = "repo:lock"
  opts = check.options(fname, O.table(fname, opts, "id"), LOCK)
  local _, gitdir = self:path()
  local k, err = take(gitdir, opts.id, opts.name)
  if not k then return nil, err end
  return setmetatable({ _k = k }, Lock)
end

--- Whether a run holds the work tree whose git directory is gitdir, asked
--- without opening the repository (`beat loop --detach` asks before it
--- starts the run): nil when the lock is free (it is taken and let go), else
--- what repo:lock would say.
---@param gitdir string
---@return string|nil err `"work tree is in use by run <id> (pid N)"`
function M.in_use(gitdir)
  local k, err = take(gitdir, "probe")
  if not k then return err end
  k:release()
  return nil
end

return M
