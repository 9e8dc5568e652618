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
local client = require "beat.executor.slurm_client"
local duration = require "beat.duration"
local executor = require "beat.executor"
local fs = require "beat.fs"
local runtime = require "beat._runtime"
local srun = require "beat.executor.slurm_srun"
local task = require "beat.task"

-- The pieces: slurm_srun.lua (the srun command line), slurm_proc.lua (a
-- running job), slurm_state.lua (reading Slurm's messages and job states),
-- slurm_client.lua (squeue, scancel, scontrol).
local close_files = require("beat.executor.slurm_proc").close_files

local M = {}

local format = string.format
local clock = runtime.clock

local GONE_LIMIT = client.GONE_LIMIT

local function sleep(s) require("beat").sleep(s) end

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

-- Talking to the cluster: _client, _jobs, _cancel_ids, _job_state
for k, f in pairs(client.methods) do Slurm[k] = f end

--------------------------------------------------------------------------------
-- The executor's methods

-- Checks the options (raising at the caller of spawn/exec: `depth` frames
-- between it and launch) and submits the job: the started Proc, or nil and why.
local function launch(self, fname, cmd, opts, depth)
  task.current(fname)
  local eopts, naming = executor.check_opts(fname, opts, depth)
  local p, err = srun.prepare(self, fname, cmd, eopts, naming, 3 + depth)
  if not p then return nil, err end
  p.started = clock()
  local ok, lerr = p:_launch()
  if not ok then
    close_files(p)
    return nil, lerr
  end
  return p
end

--- Starts cmd as a Slurm job and returns at once (see Proc). Bad options
--- raise; a command that cannot be submitted (no srun, no such cwd) returns
--- nil, "beat.slurm: why".
---@param cmd string|string[]
---@param opts? beat.ExecutorOpts
---@return beat.SlurmProc|nil, string?
function Slurm:spawn(cmd, opts)
  return launch(self, "beat.slurm:spawn", cmd, opts, 1)   -- a tail call: no frame of its own
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
  local p, err = launch(self, "beat.slurm:exec", cmd, opts, 2)
  if not p then return nil, err end
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
