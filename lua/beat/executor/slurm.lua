--- beat.slurm: run commands as Slurm jobs.
---
--- Each command is its own job, started with `srun` (one task, one node), in
--- the given directory (`--chdir`), named `beat-<run>-<iteration>`. srun is
--- chosen over `sbatch --wait` because it relays the command's stdout and
--- stderr as they come (sbatch writes files on the node that would have to be
--- tailed over the shared filesystem), returns the command's own exit status
--- (128+N for a signal), starts in tens of milliseconds on an idle cluster
--- (sbatch waits for a scheduling pass), and a job whose srun dies is ended by
--- Slurm. What srun cannot guarantee (a job still queued when beat is killed
--- with SIGKILL) `cleanup(run_id)` finds by name.
---
--- Slurm's own messages (lines of srun and slurmstepd on stderr) are kept out
--- of the command's stderr and read to tell the command's failures from the
--- scheduler's: a node failure, a job cancelled from outside, an allocation
--- refused, a work tree the node cannot see. Those set `infra_error`; a node
--- failure is retried once. See docs/api/executor.md.
local beat_exec = require "beat.exec"
local duration = require "beat.duration"
local executor = require "beat.executor"
local fs = require "beat.fs"
local runtime = require "beat._runtime"
local task = require "beat.task"

local M = {}

local format = string.format
local clock = runtime.clock

local DEFAULT_GRACE = 5
local DEFAULT_MAX_OUTPUT = 1024 * 1024
local MAX_MESSAGES = 60     -- Slurm lines kept per attempt (the last ones)
local POLL = 0.25           -- while queued: how often deadlines are looked at
local GONE_LIMIT = 15       -- seconds to wait for a cancelled job to leave the queue
local GUARD_TAG = "beat-slurm: work tree "

local function sleep(s) require("beat").sleep(s) end

-- Runs on the node: enters the work tree or fails with one recognisable line,
-- never runs the command elsewhere (slurmstepd falls back to /tmp when
-- --chdir fails).
local GUARD = 'cd "$1" 2>/dev/null || { echo "' .. GUARD_TAG ..
  '$1 is not visible on $(hostname)" >&2; exit 125; }; shift; exec "$@"'

local KNOWN = {
  partition = true, gres = true, cpus = true, mem = true, time = true, account = true,
  qos = true, extra = true, conf = true, queue_timeout = true,
}

local function show(v)
  if type(v) == "string" then return format("%q", v) end
  return tostring(v)
end

---@class beat.SlurmOpts
---@field partition? string   -p
---@field gres? string        --gres, e.g. "gpu:1"
---@field cpus? integer       --cpus-per-task
---@field mem? integer|string --mem: megabytes, or "4G", "512M"
---@field time? number|string --time: Slurm's limit for each job, a duration ("90m") or seconds
---@field account? string     -A
---@field qos? string         --qos
---@field extra? string[]     more srun arguments, passed as they are
---@field conf? string        path of slurm.conf (SLURM_CONF for srun, squeue, scancel)
---@field queue_timeout? number|string  give up (infra_error) on a job still queued after this

local Slurm = {}
Slurm.__index = Slurm
Slurm.__tostring = function() return "executor slurm" end

-- Slurm's time format, from seconds: D-HH:MM:SS (rounded up to a second).
local function slurm_time(s)
  s = math.ceil(s)
  return format("%d-%02d:%02d:%02d", s // 86400, s % 86400 // 3600, s % 3600 // 60, s % 60)
end

--- A Slurm executor. Raises on bad options (`beat.slurm: opts.cpus must be a
--- positive integer, got 0`); never talks to the cluster until used.
---@param opts? beat.SlurmOpts
---@return beat.Executor
function M.new(opts)
  -- levels: 1 fail, 2 new, 3 the caller of beat.slurm (which tail-calls new)
  local function fail(fmt, ...) error("beat.slurm: " .. format(fmt, ...), 3) end
  opts = opts or {}
  if type(opts) ~= "table" then fail("opts must be a table, got %s", type(opts)) end
  for k in pairs(opts) do
    if not KNOWN[k] then fail("unknown option opts.%s", tostring(k)) end
  end
  local args = {}
  for _, k in ipairs { "partition", "gres", "account", "qos", "conf" } do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "string" or v == "" or v:find("[%s%z]")) then
      fail("opts.%s must be a non-empty string without spaces, got %s", k, show(v))
    end
  end
  if opts.partition then args[#args + 1] = "--partition=" .. opts.partition end
  if opts.account then args[#args + 1] = "--account=" .. opts.account end
  if opts.qos then args[#args + 1] = "--qos=" .. opts.qos end
  if opts.gres then args[#args + 1] = "--gres=" .. opts.gres end
  if opts.cpus ~= nil then
    if math.type(opts.cpus) ~= "integer" or opts.cpus < 1 then
      fail("opts.cpus must be a positive integer, got %s", show(opts.cpus))
    end
    args[#args + 1] = "--cpus-per-task=" .. opts.cpus
  end
  if opts.mem ~= nil then
    local m = opts.mem
    if math.type(m) == "integer" and m > 0 then
      m = tostring(m)
    elseif type(m) ~= "string" or not m:match("^%d+[KMGTkmgt]?$") or m:match("^0+%a?$") then
      fail("opts.mem must be megabytes (a positive integer) or a size like \"4G\", got %s", show(m))
    end
    args[#args + 1] = "--mem=" .. m
  end
  if opts.time ~= nil then
    local s, why = duration.parse(opts.time)
    if not s then fail("opts.time %s", why) end
    if s <= 0 then fail("opts.time must be more than 0, got %s", show(opts.time)) end
    args[#args + 1] = "--time=" .. slurm_time(s)
  end
  local queue_timeout
  if opts.queue_timeout ~= nil then
    local why
    queue_timeout, why = duration.parse(opts.queue_timeout)
    if not queue_timeout then fail("opts.queue_timeout %s", why) end
  end
  if opts.extra ~= nil then
    if type(opts.extra) ~= "table" then
      fail("opts.extra must be a list of srun arguments, got %s", type(opts.extra))
    end
    for k in pairs(opts.extra) do
      if math.type(k) ~= "integer" or k < 1 or k > #opts.extra then
        fail("opts.extra must be a list of srun arguments, got a key %s", show(k))
      end
    end
    for i, a in ipairs(opts.extra) do
      if type(a) ~= "string" or a == "" then
        fail("opts.extra[%d] must be a non-empty string, got %s", i, show(a))
      end
      args[#args + 1] = a
    end
  end
  return setmetatable({
    kind = "slurm", args = args, conf = opts.conf, queue_timeout = queue_timeout,
    client_env = opts.conf and { SLURM_CONF = opts.conf } or nil,
  }, Slurm)
end

--------------------------------------------------------------------------------
-- Talking to the cluster

local user_name
local function whoami()
  if not user_name then
    local r = beat_exec.exec({ "id", "-un" }, { timeout = 10 })
    user_name = r and r.code == 0 and r.stdout:match("^%s*(%S+)") or os.getenv("USER")
  end
  return user_name
end

-- Runs a Slurm client command (squeue, scancel) against the executor's
-- cluster; the result, or nil and a one-line reason.
function Slurm:_client(argv)
  local r, err = beat_exec.exec(argv, { env = self.client_env, timeout = 30 })
  if not r then return nil, err end
  if r.code ~= 0 then
    local msg = (r.stderr or ""):match("([^\n]+)") or ("exited " .. r.code)
    return nil, format("%s: %s", argv[1], msg), r
  end
  return r
end

-- Ids of this user's jobs in the queue (any state) whose name passes keep(name).
function Slurm:_jobs(keep)
  local r, err = self:_client { "squeue", "-h", "-u", whoami() or "", "-o", "%i %j" }
  if not r then return nil, err end
  local ids = {}
  for id, name in r.stdout:gmatch("(%S+) ([^\n]*)") do
    if keep(name) then ids[#ids + 1] = id end
  end
  return ids
end

-- Cancels jobs (ids) and waits up to `limit` seconds until they have left the
-- queue. Returns true, or nil and why.
function Slurm:_cancel_ids(ids, name, limit)
  if #ids == 0 then return true end
  local argv = { "scancel" }
  for _, id in ipairs(ids) do argv[#argv + 1] = id end
  self:_client(argv)       -- a job that just ended is "already completed": fine
  local want = {}
  for _, id in ipairs(ids) do want[id] = true end
  local deadline = clock() + (limit or GONE_LIMIT)
  while true do
    local left, err = self:_jobs(function(n) return n == name or name == nil end)
    if not left then return nil, err end
    local still = false
    for _, id in ipairs(left) do if want[id] then still = true end end
    if not still then return true end
    if clock() > deadline then
      return nil, format("job %s still in the queue %d s after scancel", table.concat(ids, ","),
        limit or GONE_LIMIT)
    end
    sleep(0.1)
  end
end

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

-- Closes the files output was written to (stdout/stderr given as paths).
local function close_files(p)
  for path, f in pairs(p.files or {}) do
    f:close()
    p.files[path] = nil
  end
end

-- srun chatter from --verbose that says nothing about the outcome.
local function chatter(line)
  return line:match("^srun: defined options$") or line:match("^srun: end of defined options$")
    or line:match("^srun: %-+ %-+$") or line:match("^srun: [%w%-]+%s+: ")
    or line:match("^srun: [%w_]+/[%w_]+: ") or line:match("^srun: jobid %d+: nodes")
    or line:match("^srun: launching StepId=")
end

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

-- Slurm's verdict on a job, from the controller: its state ("CANCELLED",
-- "NODE_FAIL", "FAILED", ...) once it has left RUNNING/COMPLETING (polled
-- for up to 2 s), or nil when the controller no longer knows it.
function Slurm:_job_state(id)
  local deadline = clock() + 2
  while true do
    local r = self:_client { "scontrol", "-o", "show", "job", id }
    local state = r and r.stdout:match("JobState=(%S+)")
    if not state then return nil end
    if (state ~= "RUNNING" and state ~= "COMPLETING" and state ~= "PENDING") or clock() > deadline then
      return state
    end
    sleep(0.05)
  end
end

-- Job states that are Slurm's doing, not the command's.
local INFRA_STATES = {
  CANCELLED = "cancelled", NODE_FAIL = "node_failure", PREEMPTED = "preempted",
  BOOT_FAIL = "boot_failure", TIMEOUT = "time_limit", DEADLINE = "deadline",
}

-- What went wrong on Slurm's side of an attempt: nil for a command that ran
-- and ended on its own, else a kind and one line. The controller's job state
-- decides when it is known (srun's own messages race with the end of the
-- step: a cancelled step does not always get to print "CANCELLED"); srun's
-- messages are the fallback.
local function diagnose(a, code, state)
  if a.guard then return "worktree", a.guard end
  local all = table.concat(a.messages, "\n")
  local kind = state and INFRA_STATES[state]
  if not state then
    if all:find("DUE TO NODE FAILURE", 1, true) or all:find("srun: error: Node failure", 1, true) then
      kind = "node_failure"
    elseif all:find("DUE TO TIME LIMIT", 1, true) then
      kind = "time_limit"
    elseif all:find("DUE TO PREEMPTION", 1, true) then
      kind = "preempted"
    elseif all:find("CANCELLED AT", 1, true) or all:find("has been revoked", 1, true) then
      kind = "cancelled"
    end
  end
  local job = a.job_id or "?"
  if kind == "node_failure" then
    return kind, format("node failure on %s (job %s)", a.node or "?", job)
  elseif kind == "cancelled" then
    return kind, format("job %s was cancelled outside beat (scancel or Slurm)", job)
  elseif kind == "preempted" then
    return kind, format("job %s was preempted", job)
  elseif kind == "boot_failure" then
    return kind, format("node %s failed to boot for job %s", a.node or "?", job)
  elseif kind == "deadline" then
    return kind, format("job %s reached its deadline", job)
  elseif kind == "time_limit" then
    return kind
  end
  if not a.launched and code ~= 0 then
    local first
    for _, m in ipairs(a.messages) do
      local e = m:match("^srun: error: (.*)") or m:match("^srun: fatal: (.*)")
      if e then first = first or e end
    end
    first = first or a.messages[#a.messages] or format("srun exited %d before the command started", code)
    return "refused", "srun: " .. first
  end
  return nil
end

-- Whether an attempt needs the controller's verdict: any non-zero exit (a
-- command that traps the SIGTERM of a cancel exits with a code of its own,
-- and srun's "CANCELLED" line does not always arrive), or Slurm said
-- something alarming. One scontrol call per failing command.
local function suspicious(a, code)
  if not a.job_id then return false end
  if code ~= 0 then return true end
  for _, m in ipairs(a.messages) do
    local l = m:lower()
    if l:find("error", 1, true) or l:find("abort", 1, true) or l:find("cancel", 1, true)
      or l:find("fail", 1, true) or l:find("revoked", 1, true) or l:find("preempt", 1, true) then
      return true
    end
  end
  return false
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

--------------------------------------------------------------------------------
-- The executor's methods

local counter = 0

local function job_name(naming)
  local run = naming.run_id or ("pid" .. runtime.pid())
  local it = naming.iteration
  if not it then
    counter = counter + 1
    it = "x" .. counter
  end
  if naming.candidate and not it:find(".", 1, true) then it = it .. "." .. naming.candidate end
  return "beat-" .. run .. "-" .. it
end

-- The srun command line and options for one command.
function Slurm:_prepare(fn, cmd, eopts, naming)
  local function fail(fmt, ...) error(fn .. ": " .. format(fmt, ...), 4) end
  local argv
  if type(cmd) == "string" then
    if cmd == "" then fail("cmd must not be empty") end
    argv = { "/bin/sh", "-c", cmd }
  elseif type(cmd) == "table" then
    if #cmd == 0 then fail("cmd must not be an empty list") end
    argv = {}
    for i = 1, #cmd do
      local v = cmd[i]
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" then fail("cmd[%d] must be a string, got %s", i, type(v)) end
      argv[i] = v
    end
  else
    fail("cmd must be an argv table or a shell string, got %s", type(cmd))
  end
  local timeout, grace
  if eopts.timeout ~= nil then
    local why
    timeout, why = duration.parse(eopts.timeout)
    if not timeout then fail("opts.timeout %s", why) end
  end
  do
    local why
    grace, why = duration.parse(eopts.grace == nil and DEFAULT_GRACE or eopts.grace)
    if not grace then fail("opts.grace %s", why) end
  end
  for _, k in ipairs { "stdout", "stderr" } do
    local v = eopts[k]
    if v ~= nil and type(v) ~= "boolean" and type(v) ~= "string" and type(v) ~= "function" then
      fail("opts.%s must be true, false, a file path or a function, got %s", k, type(v))
    end
  end
  if eopts.env ~= nil and type(eopts.env) ~= "table" then
    fail("opts.env must be a table of strings, got %s", type(eopts.env))
  end
  if eopts.cwd ~= nil and type(eopts.cwd) ~= "string" then
    fail("opts.cwd must be a string, got %s", type(eopts.cwd))
  end
  local p = setmetatable({
    ex = self, job_name = job_name(naming), timeout = timeout, grace = grace,
    queue_timeout = self.queue_timeout, stdin = eopts.stdin, attempt = 0,
    max_output = eopts.max_output or DEFAULT_MAX_OUTPUT,
  }, Proc)
  -- srun's environment: the caller's env merged into beat's; a new job even
  -- when beat itself runs inside an allocation
  local env = {}
  for k, v in pairs(eopts.env or {}) do env[k] = v end
  if self.conf and env.SLURM_CONF == nil then env.SLURM_CONF = self.conf end
  env.SLURM_JOB_ID, env.SLURM_JOBID = false, false
  p.env = env
  local export
  if eopts.clear_env then
    local names = {}
    for k, v in pairs(eopts.env or {}) do
      if v ~= false then names[#names + 1] = k end
    end
    table.sort(names)
    export = #names > 0 and table.concat(names, ",") or "NONE"
  end
  -- output: files are written here, by beat (one handle per path, so
  -- stdout and stderr sent to the same file interleave as lines)
  local files = {}
  p.files = files
  local function file_sink(path)
    if not files[path] then
      local f, err = io.open(path, "wb")
      if not f then return nil, err end
      f:setvbuf("line")
      files[path] = f
    end
    local f = files[path]
    return function(line) f:write(line, "\n") end
  end
  local out, errs = eopts.stdout, eopts.stderr
  if type(out) == "string" then
    local sink, err = file_sink(out)
    if not sink then return nil, format("beat.slurm: stdout %s", err) end
    p.stdout = sink
  else
    p.stdout = out
  end
  if errs == nil or errs == true then
    p.capture = true
  elseif type(errs) == "string" then
    local sink, err = file_sink(errs)
    if not sink then return nil, format("beat.slurm: stderr %s", err) end
    p.stderr_sink = sink
  elseif type(errs) == "function" then
    p.stderr_sink = errs
  end
  local dir = fs.realpath(eopts.cwd or fs.cwd() or ".")
  if not dir or not fs.is_dir(dir) then
    return nil, format("beat.slurm: cwd %s: no such directory", eopts.cwd or ".")
  end
  p.cwd = dir
  local srun = beat_exec.which("srun")
  if not srun then
    return nil, "beat.slurm: srun not found on PATH (the Slurm client commands must be installed here)"
  end
  local a = { srun, "--verbose", "--job-name=" .. p.job_name, "--chdir=" .. dir,
    "--nodes=1", "--ntasks=1" }
  if export then a[#a + 1] = "--export=" .. export end
  for _, x in ipairs(self.args) do a[#a + 1] = x end
  for _, x in ipairs { "/bin/sh", "-c", GUARD, "beat-slurm-guard", dir } do a[#a + 1] = x end
  for _, x in ipairs(argv) do a[#a + 1] = x end
  p.argv = a
  return p
end

--- Starts cmd as a Slurm job and returns at once (see Proc). Bad options
--- raise; a command that cannot be submitted (no srun, no such cwd) returns
--- nil, "beat.slurm: why".
---@param cmd string|string[]
---@param opts? beat.ExecutorOpts
---@return beat.SlurmProc|nil, string?
function Slurm:spawn(cmd, opts)
  task.current("beat.slurm:spawn")
  local eopts, naming = executor.check_opts("beat.slurm:spawn", opts)
  local p, err = self:_prepare("beat.slurm:spawn", cmd, eopts, naming)
  if not p then return nil, err end
  p.started = clock()
  local ok, lerr = p:_launch()
  if not ok then
    close_files(p)
    return nil, lerr
  end
  return p
end

--- Runs cmd as a Slurm job and waits for it: the result of beat.exec, plus
--- `infra_error` (one line) when Slurm, not the command, failed, and
--- job_id, job_name, node, attempts, queued (seconds waiting for a node),
--- slurm (Slurm's own messages). `timeout` counts from the moment the
--- command starts on its node, not from submission.
---@param cmd string|string[]
---@param opts? beat.ExecutorOpts
---@return table|nil, string?
function Slurm:exec(cmd, opts)
  task.current("beat.slurm:exec")
  local eopts, naming = executor.check_opts("beat.slurm:exec", opts)
  local p, err = self:_prepare("beat.slurm:exec", cmd, eopts, naming)
  if not p then return nil, err end
  p.started = clock()
  local ok, lerr = p:_launch()
  if not ok then
    close_files(p)
    return nil, lerr
  end
  return p:wait()
end

--- Whether the cluster's nodes see dir: beat writes a marker file with a
--- random content under dir (in dir/.beat when it exists) and a job reads it
--- back on a node. Returns true, or nil and one line naming the work tree
--- and the node.
---@param dir string
---@return true|nil, string?
function Slurm:check(dir)
  if type(dir) ~= "string" then
    error(("beat.slurm:check: dir must be a string, got %s"):format(type(dir)), 2)
  end
  local real = fs.realpath(dir)
  if not real or not fs.is_dir(real) then
    return nil, format("beat.slurm: work tree %s: no such directory", dir)
  end
  local nonce = format("%d.%d.%d", runtime.pid(), math.floor(runtime.now() * 1000), math.random(1, 1e9))
  local mdir = fs.is_dir(real .. "/.beat") and real .. "/.beat" or real
  local marker = mdir .. "/.beat-slurm-check." .. nonce
  local wok, werr = fs.write(marker, nonce)
  if not wok then return nil, format("beat.slurm: work tree %s: %s", real, werr) end
  local ok, r, err = pcall(self.exec, self, { "cat", marker }, { cwd = real, timeout = 60 })
  os.remove(marker)
  if not ok then error(r, 0) end
  if not r then return nil, err end
  local where = r.node and ("node " .. r.node) or "the cluster's nodes"
  local advice = "it must be on a filesystem the compute nodes share"
  if r.infra == "worktree" then
    return nil, format("beat.slurm: work tree %s is not visible on %s; %s", real, where, advice)
  elseif r.infra_error then
    return nil, format("beat.slurm: cannot check work tree %s: %s", real, r.infra_error)
  elseif r.code ~= 0 or r.stdout ~= nonce then
    return nil, format("beat.slurm: work tree %s on %s is not the one beat sees " ..
      "(the marker beat wrote is not there); %s", real, where, advice)
  end
  return true
end

--- Cancels every job of run `run_id` still queued or running (named
--- beat-<run_id>-*), e.g. after beat was killed with SIGKILL, and waits until
--- they have left the queue. Returns how many there were, or nil and why.
---@param run_id string
---@return integer|nil, string?
function Slurm:cleanup(run_id)
  if type(run_id) ~= "string" or not run_id:match("^[%w_.%-]+$") then
    error(("beat.slurm:cleanup: run_id must be a run id, got %s"):format(show(run_id)), 2)
  end
  local prefix = "beat-" .. run_id .. "-"
  local ids, err = self:_jobs(function(n) return n:sub(1, #prefix) == prefix end)
  if not ids then return nil, "beat.slurm: " .. err end
  if #ids == 0 then return 0 end
  local argv = { "scancel" }
  for _, id in ipairs(ids) do argv[#argv + 1] = id end
  self:_client(argv)
  local deadline = clock() + GONE_LIMIT
  while true do
    local left, lerr = self:_jobs(function(n) return n:sub(1, #prefix) == prefix end)
    if not left then return nil, "beat.slurm: " .. lerr end
    if #left == 0 then return #ids end
    if clock() > deadline then
      return nil, format("beat.slurm: jobs %s still in the queue %d s after scancel",
        table.concat(left, ","), GONE_LIMIT)
    end
    sleep(0.1)
  end
end

return M
