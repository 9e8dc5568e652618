--- The local executor: commands run on this machine through beat.exec and
--- beat.spawn, exactly as without an executor. `run_id`, `iteration` and
--- `candidate` are accepted (and checked) so strategies pass the same options
--- to every executor; locally they name nothing.
local exec = require "beat.exec"
local executor = require "beat.executor"
local fs = require "beat.fs"

local M = {}

---@class beat.Executor
---@field kind string "local" or "slurm"
local Local = {}
Local.__index = Local
Local.__tostring = function() return "executor local" end

--- Runs cmd on this machine and waits; the result of beat.exec, with
--- `executor = "local"`.
---@param cmd string|string[]
---@param opts? beat.ExecutorOpts
---@return beat.ExecResult|nil, string?
function Local:exec(cmd, opts)
  local eopts = executor.check_opts("executor:exec", opts)
  local r, err = exec.exec(cmd, eopts)
  if r then r.executor = "local" end
  return r, err
end

--- Starts cmd on this machine; the proc of beat.spawn.
---@param cmd string|string[]
---@param opts? beat.ExecutorOpts
---@return beat.Proc|nil, string?
function Local:spawn(cmd, opts)
  local eopts = executor.check_opts("executor:spawn", opts)
  return exec.spawn(cmd, eopts)
end

--- This machine sees every directory it has: true when dir is one.
---@param dir string
---@return true|nil, string?
function Local:check(dir)
  if type(dir) ~= "string" then
    error(("executor:check: dir must be a string, got %s"):format(type(dir)), 2)
  end
  if fs.is_dir(dir) then return true end
  return nil, ("executor: work tree %s: no such directory"):format(dir)
end

--- Nothing outlives a local command (its shim ends it with beat), so there
--- is nothing to clean up: 0.
---@param run_id string
---@return integer
function Local:cleanup(run_id)
  if type(run_id) ~= "string" then
    error(("executor:cleanup: run_id must be a string, got %s"):format(type(run_id)), 2)
  end
  return 0
end

--- The local executor. It takes no options.
---@return beat.Executor
function M.new(opts)
  if opts ~= nil and (type(opts) ~= "table" or next(opts) ~= nil) then
    error("beat.executor.local: takes no options", 2)   -- beat.executor.local tail-calls new
  end
  return setmetatable({ kind = "local" }, Local)
end

return M
