--- beat.runs.replay: what a run's journal says about it, read in one pass —
--- for `beat loop status` and `list` (where is it, is it over) and for
--- `beat loop resume` (everything a run needs to go on where a dead one
--- stopped). Pure: it reads records, it touches nothing.
local M = {}

-- cjson writes non-finite numbers as the strings beat.journal gives them
local NONFINITE = { inf = math.huge, ["-inf"] = -math.huge, nan = 0 / 0, ["-nan"] = 0 / 0 }

--- A copy of a value read back from the journal with the non-finite numbers
--- ("inf", "-inf", "nan") turned back into numbers: scores as they were.
---@param v any
---@return any
function M.numbers(v)
  if type(v) == "string" then
    local n = NONFINITE[v]
    if n ~= nil then return n end
    return v
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = M.numbers(x) end
  return out
end

---@class beat.RunReplay
---@field start? table the run_start record (nil: the run died before it, or has not started yet)
---@field owner? beat.ProcIdentity the process that runs (or ran) it: of the last run_start or resume record
---@field ended? table the run_end or interrupted record closing the last segment, if any
---@field decisions table[] decision records, one per iteration (the last one wins)
---@field last_decision? table
---@field resumes integer how many times the run was resumed
---@field cost_usd number every agent's reported cost, the dead iterations' too
---@field elapsed number seconds of run time (pauses excluded) at the last record that says
---@field elapsed_time? number when that record was written (seconds since the epoch)
---@field last_time? number when the last record was written
---@field phase? table the last phase record of the last segment
---@field iteration integer the iteration going on (of the last phase, agent or decision record)
---@field pre_restores table[] pre_restore records
---@field processes beat.ProcIdentity[] the shims of the last segment's commands
---@field requests table[] control records of the last segment
---@field paused boolean whether the last segment is waiting in a pause now (its last phase is "paused")
---@field pause_requested boolean a pause was asked for and not yet followed by a resume

--- Reads the records of one journal (oldest first).
---@param records table[]
---@return beat.RunReplay
function M.read(records)
  local r = { decisions = {}, resumes = 0, cost_usd = 0, elapsed = 0, iteration = 0,
              pre_restores = {}, processes = {}, requests = {}, paused = false,
              pause_requested = false }
  local by_iter = {}
  for _, rec in ipairs(records) do
    local ev = rec.event
    if type(rec.elapsed) == "number" then r.elapsed, r.elapsed_time = rec.elapsed, rec.time end
    r.last_time = rec.time or r.last_time
    if ev == "run_start" or ev == "resume" then
      if ev == "run_start" then r.start = rec else r.resumes = r.resumes + 1 end
      r.owner = { pid = math.tointeger(rec.pid), start_time = math.tointeger(rec.start_time),
                  boot_id = rec.boot_id }
      r.ended, r.phase, r.processes, r.requests = nil, nil, {}, {}
      r.paused, r.pause_requested = false, false
    elseif ev == "run_end" or ev == "interrupted" then
      r.ended = rec
    elseif ev == "decision" and math.tointeger(rec.iteration) then
      local n = math.tointeger(rec.iteration)
      if not by_iter[n] then r.decisions[#r.decisions + 1] = rec else
        for i, d in ipairs(r.decisions) do if d == by_iter[n] then r.decisions[i] = rec end end
      end
      by_iter[n] = rec
      r.last_decision = rec
      r.iteration = n
    elseif ev == "phase" then
      r.phase = rec
      r.paused = rec.phase == "paused"
      if math.tointeger(rec.iteration) then r.iteration = math.tointeger(rec.iteration) end
    elseif ev == "agent" then
      local c = tonumber(rec.cost_usd)
      if c and c >= 0 and c < math.huge then r.cost_usd = r.cost_usd + c end
    elseif ev == "pre_restore" then
      r.pre_restores[#r.pre_restores + 1] = rec
    elseif ev == "process" and math.tointeger(rec.pid) then
      r.processes[#r.processes + 1] = { pid = math.tointeger(rec.pid),
        start_time = math.tointeger(rec.start_time), boot_id = rec.boot_id }
    elseif ev == "control" then
      r.requests[#r.requests + 1] = rec
      if rec.request == "pause" and not rec.force then r.pause_requested = true
      elseif rec.request == "resume" then r.pause_requested = false end
    end
  end
  return r
end

--- Statuses of an end record that `beat loop resume` can continue from.
M.RESUMABLE_END = { interrupted = true, paused = true }

return M
