--- What the benches share: a shell script timed as a user would time it,
--- wall clock and the CPU of everything it ran. (In lib/: make bench runs
--- every tests/bench/*.lua, and this is not a bench.)
local beat = require "beat"

local M = {}

--- Runs script with `sh -c` (in dir) and returns its wall time, the CPU
--- time (user + system) of everything it ran, from the shell's `times`
--- (10 ms resolution), and the result; fails on a non-zero exit.
---@param script string
---@param dir? string
---@return number wall, number cpu, table result
function M.timed(script, dir)
  local r = assert(beat.exec({ "sh", "-c", script .. "\ntimes" }, { cwd = dir }))
  if r.code ~= 0 then error(("sh -c: exit %d: %s%s"):format(r.code, r.stdout, r.stderr), 0) end
  local cpu = 0
  local children = r.stdout:match("[^\n]*\n([^\n]*)\n?$") or ""
  for m, sec in children:gmatch("(%d+)m([%d.]+)s") do cpu = cpu + tonumber(m) * 60 + tonumber(sec) end
  return r.duration, cpu, r
end

return M
