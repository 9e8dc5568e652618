--- beat.slurm's reading of Slurm's messages: which srun lines are chatter,
--- and what went wrong on Slurm's side of an attempt (node failure, cancel,
--- preemption, refusal, a work tree the node cannot see) from srun's messages
--- and the controller's job state.
local M = {}

local format = string.format

-- The first words of the line the node guard prints when it cannot enter the
-- work tree (see lua/beat/executor/slurm_srun.lua).
M.GUARD_TAG = "beat-slurm: work tree "

-- srun chatter from --verbose that says nothing about the outcome.
local function chatter(line)
  return line:match("^srun: defined options$") or line:match("^srun: end of defined options$")
    or line:match("^srun: %-+ %-+$") or line:match("^srun: [%w%-]+%s+: ")
    or line:match("^srun: [%w_]+/[%w_]+: ") or line:match("^srun: jobid %d+: nodes")
    or line:match("^srun: launching StepId=")
end
M.chatter = chatter

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
M.diagnose = diagnose

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
M.suspicious = suspicious

return M
