--- beat.runs.channel: how a running loop hears control requests.
---
--- A request is a small JSON file in the run directory,
--- `.beat/runs/<id>/requests/<time>-<pid>-<n>.json`, written atomically
--- (temp file, rename) by beat.runs.control; then the controller sends
--- SIGUSR2 to the loop's process as a wake-up. The loop reads the requests
--- on that signal and at every phase change (so a lost signal only delays
--- one), in the order they were written, removes each file, journals it
--- (a `control` record) and follows it (Run:control).
---
--- SIGUSR2, not SIGUSR1: beat passes job-control signals such as SIGUSR1 on
--- to its commands' process groups, and the wake-up is for beat alone. The
--- handler is installed before a run writes its first record, and
--- controllers only signal a process whose run_start or resume record they
--- have read, so the signal never meets a beat without its handler (whose
--- default action would kill it).
local fs = require "beat.fs"
local json = require "cjson"

local M = {}

local active = {}      -- run → channel, for the runs of this process
local installed = false

--- The directory requests for the run in `dir` go to.
---@param dir string the run directory
function M.requests_dir(dir) return dir .. "/requests" end

--- Installs the SIGUSR2 handler of this process (once).
function M.install()
  if installed then return end
  installed = true
  local runtime = require "beat._runtime"
  runtime.on_signal(runtime.signals.SIGUSR2, function()
    for _, ch in pairs(active) do pcall(ch.poll, ch) end
  end)
end

local Channel = {}
Channel.__index = Channel

-- Reads and removes the pending requests, oldest first.
local function take(dir)
  local out = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    if name:match("^%d+%-%d+%-%d+%.json$") then
      local path = dir .. "/" .. name
      local data = fs.read(path)
      os.remove(path)
      local ok, req = pcall(json.decode, data or "")
      if ok and type(req) == "table" and type(req.request) == "string" then out[#out + 1] = req end
    end
  end
  return out
end

--- Follows the pending requests (see the module comment). Raises the
--- task's cancellation when a request cancels the run from inside it.
function Channel:poll()
  if self.closed or self.polling then return end
  self.polling = true
  local ok, reqs = pcall(take, self.dir)
  self.polling = false
  if not ok then return end
  local raise
  for _, req in ipairs(reqs) do
    local rok, err = pcall(self.run.control, self.run, req)
    if not rok and raise == nil then raise = err end
  end
  if raise ~= nil then error(raise, 0) end
end

--- Stops listening (the run has ended).
function Channel:close()
  self.closed = true
  active[self.run] = nil
end

--- Starts listening for the run's requests.
---@param run beat.Run
function M.attach(run)
  M.install()
  local ch = setmetatable({ run = run, dir = M.requests_dir(run.journal.dir) }, Channel)
  active[run] = ch
  return ch
end

return M
