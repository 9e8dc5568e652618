--- beat.runs.index: the per-user index of runs, so any beat, in any
--- directory, finds every run: `$XDG_STATE_HOME/beat/runs/<id>/run.json`
--- (default `~/.local/state/beat/`).
---
--- An entry points at a run; it is not the run's state. The run's journal
--- (`<work tree>/.beat/runs/<id>/journal.jsonl`) stays the single source of
--- truth; the entry holds what is needed to find it and to know whether its
--- process still lives: the id, the work tree, the run directory, and the
--- process identity (pid, start time, boot id) of the beat that runs it.
--- Each entry is one small JSON file replaced atomically (not fsync'd: a
--- machine crash may lose the newest change of an entry); creating an
--- entry's directory reserves the id for every work tree at once.
local fs = require "beat.fs"
local json = require "cjson"

local M = {}

---@class beat.IndexEntry
---@field id string
---@field root string the work tree
---@field dir string the run directory
---@field pid? integer the beat process that runs it (nil before it started)
---@field start_time? integer that process's start time (/proc/PID/stat field 22)
---@field boot_id? string
---@field started? number seconds since the epoch
---@field strategy? string
---@field detached? boolean started with --detach
---@field status? string the final status, once the run has ended (a cache of the journal's)

--- The index directory: `$XDG_STATE_HOME/beat`, else `$HOME/.local/state/beat`,
--- else a directory of this user under /tmp.
---@return string
function M.dir()
  local state = os.getenv("XDG_STATE_HOME")
  if state and state:sub(1, 1) == "/" then return state .. "/beat" end
  local home = os.getenv("HOME")
  if home and home:sub(1, 1) == "/" then return home .. "/.local/state/beat" end
  return ("/tmp/beat-state-%s"):format(os.getenv("USER") or os.getenv("LOGNAME") or "user")
end

local function entry_dir(id) return M.dir() .. "/runs/" .. id end
local function entry_path(id) return entry_dir(id) .. "/run.json" end

local function valid_id(id)
  return type(id) == "string" and id:match("^[%w_%-]+$") ~= nil
end

--- Reserves id for a new run: true when it was free (and is now taken),
--- false when another run has it, nil and why when the index cannot be
--- written.
---@param id string
---@return boolean|nil ok, string? err
function M.reserve(id)
  assert(valid_id(id), "beat.runs.index.reserve: bad id")
  local ok, err = fs.mkdir_p(M.dir() .. "/runs")
  if not ok then return nil, err end
  local made, merr, code = fs.mkdir(entry_dir(id))
  if made then return true end
  if code == 17 then return false end   -- EEXIST
  return nil, merr
end

--- Reads one entry; nil when there is none.
---@param id string
---@return beat.IndexEntry|nil
function M.get(id)
  if not valid_id(id) then return nil end
  local data = fs.read(entry_path(id))
  if not data then return nil end
  local ok, e = pcall(json.decode, data)
  if not ok or type(e) ~= "table" then return nil end
  e.id = id
  return e
end

--- Writes entry (replacing the one of its id, fields merged over the old
--- ones). Returns true, or nil and why.
---@param entry beat.IndexEntry
---@return true|nil, string?
function M.put(entry)
  assert(valid_id(entry.id), "beat.runs.index.put: bad id")
  local old = M.get(entry.id) or {}
  for k, v in pairs(entry) do old[k] = v end
  local ok, err = fs.mkdir_p(entry_dir(entry.id))
  if not ok then return nil, err end
  -- not fsync'd: an entry points at a run, the run's journal is the record
  return fs.write(entry_path(entry.id), json.encode(old) .. "\n", false)
end

--- Every entry, oldest first (ids sort by time).
---@return beat.IndexEntry[]
function M.all()
  local out = {}
  for _, name in ipairs(fs.list(M.dir() .. "/runs") or {}) do
    local e = M.get(name)
    if e then out[#out + 1] = e end
  end
  return out
end

--- Forgets a run (its directory is not touched).
---@param id string
function M.remove(id)
  if valid_id(id) then fs.rm_rf(entry_dir(id)) end
end

return M
