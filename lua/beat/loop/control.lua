--- beat.loop.control: the Run methods that follow control requests (pause,
--- resume, cancel from beat.runs.channel) and decide when the run waits:
--- sleeping, the pause checkpoint, the cooldown, the iterations to run.
local beat = require "beat"
local task = require "beat.task"
local R = require "beat.loop.run"
local Run, say = R.Run, R.say

--- Follows one control request (from beat.runs.channel): pause (at the
--- next iteration's start; `force`: now, ending the current iteration, the
--- process exits and `beat loop resume` runs it again), resume (a pause),
--- cancel (now: what runs is ended, the work tree goes to the best
--- snapshot, the journal ends with "cancelled" and the reason).
---@param req {request: string, reason?: string, force?: boolean, from?: table}
function Run:control(req)
  -- it may come while a command runs: it puts nothing back then (the check after the command does)
  self:write("control", { request = req.request, reason = req.reason, force = req.force, from = req.from },
    { repair = false })
  if req.request == "pause" and not req.force then
    if not self.pause_requested then
      self.pause_requested = true
      say(self, "pause requested: the run pauses after iteration %d's decision", self.iteration)
    end
  elseif req.request == "resume" then
    self.pause_requested = false
  elseif req.request == "cancel" or req.request == "pause" then
    self.stop_request = req.request == "cancel"
      and { status = "cancelled", reason = req.reason or "by request (beat loop cancel)" }
      or { status = "paused", reason = req.reason or "paused by request (forced: the current iteration was ended; beat loop resume runs it again)" }
    self.pause_requested = false
    if self.task then self.task:cancel() end
  end
  if self.waker then self.waker() end
end

-- Sleeps for s seconds in the run's task; a control request wakes it early.
function Run:sleep(s)
  local timer = require("beat._runtime").timer()
  local ok, err = pcall(task.await, "run:sleep", function(wake)
    self.waker = wake
    timer:start(s * 1000, wake)
  end)
  self.waker = nil
  timer:close()
  if not ok then error(err, 0) end
end

--- Waits here while a pause is requested (nothing of the run runs meanwhile;
--- the phase is "paused"; paused time does not count against max_duration).
--- Called where an iteration starts, so a pause never cuts one in half.
function Run:checkpoint()
  if self.channel then self.channel:poll() end
  if not self.pause_requested then return end
  local t0 = beat.clock()
  say(self, "paused before iteration %d (beat loop resume %s)", self.iteration, self.id)
  -- a paused run keeps no process: not even the shim waiting for its next command
  require("beat.exec").release_waiting_shim()
  self:phase("paused")
  while self.pause_requested do
    self:sleep(1)   -- woken at once by a request; the poll is the backstop for a lost signal
    if self.channel then self.channel:poll() end
  end
  self.started = self.started + (beat.clock() - t0)
  say(self, "resumed")
end

--- The iteration numbers still to run, for `for n in run:iterations() do`:
--- from 1 — or, in a resumed run, from the iteration after the last one
--- the dead run decided — to max_iterations (no end when it is 0 or unset).
---@return fun(): integer|nil
function Run:iterations()
  local n = self.resumed and self.resumed.iteration or 0
  local max = self.opts.max_iterations
  return function()
    n = n + 1
    if max and max > 0 and n > max then return nil end
    return n
  end
end

--- Pauses for the cooldown (cut to the time left) after iteration n,
--- unless n is the last one. A pause or cancel request ends it early.
---@param n? integer
function Run:cooldown(n)
  local c, max = self.opts.cooldown, self.opts.max_iterations
  if n and max and max > 0 and n >= max then return end
  if c and c > 0 and not self.pause_requested then
    self:phase("cooldown")
    self:sleep(self:limit(c))
    self:phase("idle")
  end
end


return Run
