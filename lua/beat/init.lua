--- beat: the public API. Submodules load on first use, so `require "beat"`
--- stays cheap: beat.git, beat.agent, beat.score, beat.journal, ...
local runtime = require "beat._runtime"
local task = require "beat.task"
local duration = require "beat.duration"

local M = {}

M.version = "0.1.0"

M.go = task.go
M.all = task.all
M.cancelled = task.cancelled
M.is_cancelled = task.is_cancelled
M.shield = task.shield

--- Suspends the running task for d (seconds or a duration string).
---@param d number|string
function M.sleep(d)
  local s, why = duration.parse(d)
  if not s then error("beat.sleep: duration " .. why, 2) end
  local timer = runtime.timer()
  local ok, err = pcall(task.await, "beat.sleep", function(wake)
    timer:start(s * 1000, wake)
  end)
  timer:close()
  if not ok then error(err, 0) end
end

--- The path of the running beat binary (to run `beat` from a recipe).
M.exepath = runtime.exepath
--- beat's process id.
M.pid = runtime.pid
--- How many CPUs beat may run on (its affinity, as `nproc` counts; at least 1).
M.cpus = runtime.cpus

--- Wall-clock time in seconds since the epoch (float).
M.now = runtime.now
--- Monotonic seconds (float), for measuring durations.
M.clock = runtime.clock

--- Parses "1m30s", "500ms", "2h" or a number into seconds; raises on bad input.
---@param d string|number
---@return number
function M.duration(d)
  local s, why = duration.parse(d)
  if not s then error("beat.duration: duration " .. why, 2) end
  return s
end

--- Loads a loop strategy by name: `strategies/<name>.lua` found on
--- package.path (next to the recipe, or in the current directory) wins over
--- the built-in one, so a user can copy a strategy and change it.
---@param name string "retry", "optimize", or your own
---@return fun(opts: table): integer, table
function M.strategy(name)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    error(("beat.strategy: name must be a strategy name like \"optimize\", got %s"):format(tostring(name)), 2)
  end
  local path = package.searchpath("strategies." .. name, package.path)
  local strategy
  if path then
    local chunk, err = loadfile(path)
    if not chunk then error(err, 2) end
    strategy = chunk()
  else
    local ok, mod = pcall(require, "strategies." .. name)
    if not ok then
      error(("beat.strategy: no strategy named %q (looked for strategies/%s.lua)"):format(name, name), 2)
    end
    strategy = mod
  end
  if type(strategy) ~= "function" then
    error(("beat.strategy: strategies/%s.lua must return a function(opts)"):format(name), 2)
  end
  return strategy
end

-- Functions of submodules exposed directly on beat. beat.exec and
-- beat.spawn too: beat.exec (with beat.check) loads on their first use,
-- so `beat version` does without it.
local shortcuts = {
  exec = function() return require("beat.exec").exec end,
  spawn = function() return require("beat.exec").spawn end,
  measure = function() return require("beat.measure").measure end,
  objective = function() return require("beat.objective").new end,
  json = function() return require("cjson") end,
  slurm = function() return require("beat.executor").slurm end,
}

setmetatable(M, {
  __index = function(t, name)
    if type(name) ~= "string" then return nil end
    local get = shortcuts[name]
    local ok, mod
    if get then
      ok, mod = true, get()
    else
      ok, mod = pcall(require, "beat." .. name)
      if not ok then
        if tostring(mod):find("module 'beat." .. name .. "' not found", 1, true) then
          return nil
        end
        error(mod, 2)
      end
    end
    rawset(t, name, mod)
    return mod
  end,
})

return M
