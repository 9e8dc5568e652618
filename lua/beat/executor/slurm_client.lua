--- beat.slurm's talk with the cluster: the Slurm client commands (squeue,
--- scancel, scontrol) run against the executor's cluster. The methods here are
--- the executor's own (lua/beat/executor/slurm.lua installs them).
local beat_exec = require "beat.exec"
local runtime = require "beat._runtime"

local M = {}

local format = string.format
local clock = runtime.clock

local GONE_LIMIT = 15       -- seconds to wait for a cancelled job to leave the queue
M.GONE_LIMIT = GONE_LIMIT

local function sleep(s) require("beat").sleep(s) end

local Slurm = {}
M.methods = Slurm

local user_name
local function whoami()
  if not user_name then
    local r = beat_exec.exec({ "id", "-un" }, { timeout = 10 })
    user_name = r and r.code == 0 and r.stdout:match("^%s*(%S+)") or os.getenv("USER")
  end
  return user_name
end
M.whoami = whoami

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

return M
