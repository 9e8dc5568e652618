--- beat.signals — this machine's signal numbers by name and names by
--- number: the one table every module uses (exec's proc:kill, score's
--- "killed by signal 9 (SIGKILL)"). The numbers come from the runtime's C
--- headers, since they differ between architectures (SIGBUS is 7 on x86,
--- 10 on others).
local runtime = require "beat._runtime"

local M = {}

local names = {}
for name, n in pairs(runtime.signals) do names[n] = name end

--- The name of a signal number, e.g. "SIGTERM" for 15; nil for a number
--- beat has no name for.
---@param n integer
---@return string|nil
function M.name(n)
  return names[n]
end

--- The number of a signal given as "TERM", "term", "SIGTERM" or a number;
--- nil for a name beat does not know.
---@param sig string|integer
---@return integer|nil
function M.number(sig)
  if math.type(sig) == "integer" then return sig end
  if type(sig) ~= "string" then return nil end
  local name = sig:upper()
  if name:sub(1, 3) ~= "SIG" then name = "SIG" .. name end
  return runtime.signals[name]
end

return M
