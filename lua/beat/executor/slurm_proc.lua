--- beat.slurm's running job: one command running as a Slurm job (its srun
--- attempts, output, deadlines, cancel, and the result), as returned by
--- beat.slurm's spawn.
local beat_exec = require "beat.exec"
local client = require "beat.executor.slurm_client"
local duration = require "beat.duration"
local runtime = require "beat._runtime"
local state = require "beat.executor.slurm_state"
local task = require "beat.task"

local M = {}

local format = string.format
local clock = runtime.clock
local whoami = client.whoami
local chatter, diagnose, suspicious = state.chatter, state.diagnose, state.suspicious

local MAX_MESSAGES = 60     -- Slurm lines kept per attempt (the last ones)
local POLL = 0.25           -- while queued: how often deadlines are looked at
local GUARD_TAG = state.GUARD_TAG

--------------------------------------------------------------------------------
-- Output sinks

-- Captured text capped at max bytes (the first and last halves kept), like
-- beat.exec's capture.
local function capture(max)
  local head, tail, first, last = {}, {}, 1, 0
  local hn, tn, dropped = 0, 0, 0
  local cap = {}
  function cap.add(line)
    local data = line .. "\n"
    if last == 0 and hn + #data <= max // 2 then
      head[#head + 1], hn = data, hn + #data
      return
    end
    last = last + 1
    tail[last], tn = data, tn + #data
    while tn > max - max // 2 and first <= last do
      tn, dropped = tn - #tail[first], dropped + #tail[first]
      tail[first], first = nil, first + 1
    end
  end
  function cap.text()
    local rest = table.concat(tail, "", first, last)
    if dropped == 0 then return table.concat(head) .. rest end
    return table.concat(head) .. format("\n... [%d bytes truncated] ...\n", dropped) .. rest
  end
  function cap.truncated() return dropped > 0 end
  return cap
end

--------------------------------------------------------------------------------
-- A command running as a job

---@class beat.SlurmProc
---@field pid integer pid of srun's session leader (beat's shim)
---@field job_name string
---@field job_id string|nil known once Slurm has answered
local Proc = {}
Proc.__index = Proc

M.Proc = Proc

-- Closes the files output was written to (stdout/stderr given as paths).
local function close_files(p)
  for path, f in pairs(p.files or {}) do
    f:close()
    p.files[path] = nil
  end
end
M.close_files = close_files

function Proc:_on_stderr(line)
  local a = self.att
  if line:match("^srun: ") or line:match("^slurmstepd[%w%.%-]*: ") then
    local id = line:match("^srun: jobid (%d+):") or line:match("^srun: job (%d+) queued")
      or line:match("^srun: Granted job allocation (%d+)")
    if id then a.job_id, self.job_id = id, id end
    local node = line:match("^srun: jobid %d+: nodes%(%d+%):`([^']*)'")
    if node then a.node, self.node = node, node end
    if line:match("^srun: launching StepId=") and not a.launched then a.launched = clock() end
    if not chatter(line) then
      a.messages[#a.messages + 1] = line
      if #a.messages > MAX_MESSAGES then table.remove(a.messages, 1) end
    end
    return
  end
  if line:sub(1, #GUARD_TAG) == GUARD_TAG and not a.guard then
    a.guard = "work tree " .. line:sub(#GUARD_TAG + 1)
    return
  end
  a.stderr_bytes = a.stderr_bytes + #line + 1
  local sink = self.stderr_sink
  if sink then sink(line) end
end

-- Starts one attempt: an srun.
function Proc:_launch()
  self.attempt = self.attempt + 1
  local a = { started = clock(), messages = {}, stderr_bytes = 0 }
  self.att = a
  if self.capture then
    local cap = capture(self.max_output)
    self.stderr_capture = cap
    self.stderr_sink = cap.add
  end
  local proc, err = beat_exec.spawn(self.argv, {
    cwd = self.cwd, env = self.env, stdin = self.stdin, grace = self.grace,
    stdout = self.stdout, max_output = self.max_output,
    stderr = function(line) self:_on_stderr(line) end,
  })
  if not proc then return nil, "beat.slurm: " .. err end
  a.proc, self.pid = proc, proc.pid
  return true
end

-- The result of a finished attempt, or nil when it is retried.
function Proc:_finish(r)
  local a = self.att
  if self.reason then
    -- we ended it (timeout, kill, cancel): make sure the job is gone
    task.shield(self._gone, self, a)
  end
  local res = {
    code = r.code, signal = r.signal, stdout = r.stdout, stdout_bytes = r.stdout_bytes,
    stderr = self.stderr_capture and self.stderr_capture.text() or nil,
    stderr_bytes = a.stderr_bytes,
    truncated = r.truncated or (self.stderr_capture and self.stderr_capture.truncated()) or false,
    duration = clock() - self.started, timed_out = false,
    queued = (a.launched or clock()) - a.started,
    executor = "slurm", job_name = self.job_name, job_id = a.job_id, node = a.node,
    attempts = self.attempt, slurm = a.messages,
  }
  if res.signal == 0 and res.code > 128 and res.code < 192 then
    local exited = false
    for _, m in ipairs(a.messages) do
      if m:find("Exited with exit code", 1, true) then exited = true end
    end
    if not exited then res.signal = res.code - 128 end
  end
  if self.reason == "timeout" then
    res.code, res.timed_out = 124, true
  elseif self.reason == "queue_timeout" then
    res.infra_error = format("job %s still queued after %gs: %s", a.job_id or self.job_name,
      self.queue_timeout, a.messages[#a.messages] or "")
  elseif self.reason ~= "killed" then
    local state
    if not a.guard and suspicious(a, r.code) then
      state = self.ex:_job_state(a.job_id)
      res.slurm_state = state
    end
    local kind, why = diagnose(a, r.code, state)
    if kind == "time_limit" then
      res.code, res.timed_out, res.time_limit = 124, true, true
    elseif kind then
      if kind ~= "refused" then task.shield(self._gone, self, a) end
      res.infra_error, res.infra = why, kind
      if kind == "node_failure" and self.attempt < 2 then
        self.retried = why
        local ok, err = self:_launch()
        if ok then return nil end
        res.infra_error = err
      end
    end
  end
  res.retried = self.retried
  self.result = res
  close_files(self)
  return res
end

-- Cancels the attempt's job (by id, else by name) and waits until it has
-- left the queue, so nothing it does lands after the caller moved on.
function Proc:_gone(a)
  if a.gone then return end
  a.gone = true
  local ex = self.ex
  local ids = a.job_id and { a.job_id } or ex:_jobs(function(n) return n == self.job_name end) or {}
  local ok, err = ex:_cancel_ids(ids, self.job_name)
  if not ok then self.cleanup_error = err end
end

-- Ends the attempt for `reason`: scancel, then srun (SIGTERM, SIGKILL after
-- grace) if it has not exited by itself after grace.
function Proc:_end(reason)
  self.reason = self.reason or reason
  local a = self.att
  local ex = self.ex
  if a.job_id then
    ex:_client { "scancel", a.job_id }
  else
    ex:_client { "scancel", "--name=" .. self.job_name, "--user=" .. (whoami() or "") }
  end
  a.term_at = clock() + self.grace
end

-- One turn of wait(): waits for srun until the next deadline and acts on
-- what happened. Returns nil to go on, or the values wait() returns.
function Proc:_turn(until_)
  local a, now = self.att, clock()
  local step
  if a.term_at then
    step = a.term_at - now                -- srun's time to end by itself
  elseif self.reason then
    step = nil                            -- srun was sent SIGTERM: the shim ends it
  elseif self.timeout and a.launched then
    step = a.launched + self.timeout - now
  elseif (self.timeout or self.queue_timeout) and not a.launched then
    step = POLL                           -- the deadline starts at launch
  end
  if until_ and (not step or until_ - now < step) then step = until_ - now end
  if step and step < 0 then step = 0 end
  local r, err = a.proc:wait(step)
  if r then
    self:_finish(r)
    return nil
  elseif err ~= "timeout" then
    close_files(self)
    return true, nil, err
  end
  now = clock()
  if a.term_at and now >= a.term_at then
    a.term_at = nil
    a.proc:kill("TERM")
  elseif self.timeout and a.launched and not self.reason and now >= a.launched + self.timeout then
    task.shield(self._end, self, "timeout")
  elseif self.queue_timeout and not a.launched and not self.reason
    and now >= a.started + self.queue_timeout then
    task.shield(self._end, self, "queue_timeout")
  elseif until_ and now >= until_ then
    return true, nil, "timeout"
  end
  return nil
end

--- Waits for the command; returns its result (see beat.exec, plus
--- infra_error, job_id, job_name, node, attempts, queued, slurm). With a
--- limit, returns nil, "timeout" if it has not finished by then (the job
--- goes on). If the task is cancelled meanwhile, the job is cancelled and
--- has left the queue before the cancellation is raised.
---@param limit? number|string
---@return table|nil, string?
function Proc:wait(limit)
  local until_
  if limit ~= nil then
    local s, why = duration.parse(limit)
    if not s then error("proc:wait: timeout " .. why, 2) end
    until_ = clock() + s
  end
  while not self.result do
    local ok, done, r, err = pcall(self._turn, self, until_)
    if not ok then
      -- cancelled (srun was sent SIGTERM and has exited) or an output
      -- callback failed: the job must not outlive this call either way
      self.reason = self.reason or "killed"
      pcall(task.shield, self._gone, self, self.att)
      close_files(self)
      error(done, 0)
    end
    if done then return r, err end
  end
  return self.result
end

--- Ends the job: "TERM" (default), "INT" or "KILL" cancel it (srun is sent
--- SIGTERM and cancels the step; the next wait() also scancels it and waits
--- until it has left the queue). Other signals go to srun, which forwards
--- them to the command. Returns false if it already finished.
---@param sig? string|integer
---@return boolean
function Proc:kill(sig)
  if self.result then return false end
  local s = sig == nil and "TERM" or tostring(sig):upper():gsub("^SIG", "")
  local a = self.att
  if s == "TERM" or s == "INT" or s == "KILL" or s == "15" or s == "2" or s == "9" then
    self.reason = self.reason or "killed"
    return a.proc:kill("TERM")
  end
  return a.proc:kill(sig)
end

--- Writes to the command's stdin (spawn with stdin = true; srun forwards it).
function Proc:write(data) return self.att.proc:write(data) end

--- Closes the command's stdin.
function Proc:close_stdin() self.att.proc:close_stdin() end

--- Whether the command has finished.
function Proc:done() return self.result ~= nil end

return M
