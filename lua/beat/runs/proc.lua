--- beat.runs.proc: process identity, so a recorded pid is never mistaken
--- for another process that reused it, and the ending of what a dead run
--- left running.
---
--- An identity is `{pid, start_time, boot_id}`: the process's start time in
--- clock ticks since boot (field 22 of /proc/PID/stat) and the kernel's boot
--- id. A pid is reused only by a process started later, and a reboot
--- changes the boot id, so a process matches an identity only if it is the
--- very process that was recorded.
local core = require "beat._proc"

local M = {}

---@class beat.ProcIdentity
---@field pid integer
---@field start_time integer clock ticks since boot (/proc/PID/stat field 22)
---@field boot_id string /proc/sys/kernel/random/boot_id

---@class beat.ProcStat
---@field pid integer
---@field comm string
---@field state string one letter: R, S, D, Z, T, ...
---@field ppid integer
---@field pgrp integer
---@field session integer
---@field threads integer its threads not yet gone (field 20, num_threads)
---@field start_time integer

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

local boot_id
--- The kernel's boot id (changes at every boot).
---@return string
function M.boot_id()
  boot_id = boot_id or (read("/proc/sys/kernel/random/boot_id") or "?"):gsub("%s+$", "")
  return boot_id
end

-- After the command name: fields 3-6 (state, ppid, pgrp, session), then
-- 7-19 skipped, 20 (threads), 21 skipped, 22 (start time).
local STAT_FIELDS = "^(%S+) (%S+) (%S+) (%S+)" .. (" %S+"):rep(13) .. " (%S+) %S+ (%S+)"

--- /proc/PID/stat, parsed; nil when there is no such process.
---@param pid integer
---@return beat.ProcStat|nil
function M.stat(pid)
  local data = read("/proc/" .. math.tointeger(pid) .. "/stat")
  if not data then return nil end
  -- the command name may hold spaces and parentheses: split after the last ')'
  local comm, rest = data:match("^%d+ %((.*)%) (.*)$")
  if not rest then return nil end
  local state, ppid, pgrp, session, threads, start_time = rest:match(STAT_FIELDS)
  if not state then return nil end
  return { pid = math.tointeger(pid), comm = comm, state = state, ppid = tonumber(ppid),
           pgrp = tonumber(pgrp), session = tonumber(session), threads = tonumber(threads),
           start_time = tonumber(start_time) }
end

-- Whether a process has finished exiting. A zombie whose other threads are
-- not gone yet has not: its main thread went first (beat has a signal
-- thread), and the last thread still holds the process's files, its
-- work-tree lock among them, until the kernel has closed them (which can
-- take a moment under load, waiting as the release of an inotify watch does).
local function gone(st)
  return st == nil or st.state == "X" or (st.state == "Z" and st.threads <= 1)
end

--- The identity of a live process (default: this one), or nil.
---@param pid? integer
---@return beat.ProcIdentity|nil
function M.identity(pid)
  pid = pid or require("beat._runtime").pid()
  local st = M.stat(pid)
  if gone(st) then return nil end
  return { pid = st.pid, start_time = st.start_time, boot_id = M.boot_id() }
end

--- Whether the process of an identity is still running. An identity without
--- a start time (a run journaled before beat recorded one) matches a live
--- process named beat with that pid.
---@param ident beat.ProcIdentity|nil
---@return boolean
function M.alive(ident)
  if type(ident) ~= "table" or math.type(ident.pid) ~= "integer" then return false end
  if ident.boot_id and ident.boot_id ~= M.boot_id() then return false end
  local st = M.stat(ident.pid)
  if gone(st) then return false end
  if ident.start_time == nil then return st.comm == "beat" end
  return st.start_time == ident.start_time
end

--- Every live process: a list of ProcStat.
---@return beat.ProcStat[]
function M.all()
  local out = {}
  local fs = require "beat._fs"
  for _, name in ipairs(fs.list("/proc") or {}) do
    if name:match("^%d+$") then
      local st = M.stat(tonumber(name))
      if not gone(st) then out[#out + 1] = st end
    end
  end
  return out
end

--- Sends sig (a number) to pid; true, or nil and why.
---@param pid integer
---@param sig integer
---@return true|nil, string?
function M.kill(pid, sig)
  return core.kill(pid, sig)
end

--- Ends what a dead run left running. `leaders` are the identities of the
--- shims beat started its commands under (each the leader of the command's
--- session): every process of such a session that started no earlier than
--- its leader, and every descendant of a leader still alive, gets SIGKILL,
--- again until none is left. Returns the pids it killed.
---@param leaders beat.ProcIdentity[]
---@return integer[] killed
function M.end_sessions(leaders)
  local SIGKILL = require("beat._runtime").signals.SIGKILL
  local boot = M.boot_id()
  local want = {}
  for _, l in ipairs(leaders) do
    if (l.boot_id == nil or l.boot_id == boot) and math.type(l.pid) == "integer" then
      want[l.pid] = l.start_time or 0
    end
  end
  local killed, seen = {}, {}
  if next(want) == nil then return killed end
  local me = require("beat._runtime").pid()
  for _ = 1, 20 do
    local all = M.all()
    local children = {}
    for _, st in ipairs(all) do
      children[st.ppid] = children[st.ppid] or {}
      table.insert(children[st.ppid], st)
    end
    local targets = {}
    for _, st in ipairs(all) do
      local since = want[st.session]
      if since and st.start_time >= since and st.pid ~= me then targets[#targets + 1] = st end
      -- a live leader and its whole tree (processes that left the session too)
      if want[st.pid] and st.start_time == want[st.pid] then
        local queue = { st }
        while #queue > 0 do
          local p = table.remove(queue)
          if p.pid ~= me then targets[#targets + 1] = p end
          for _, c in ipairs(children[p.pid] or {}) do queue[#queue + 1] = c end
        end
      end
    end
    if #targets == 0 then break end
    for _, st in ipairs(targets) do
      if core.kill(st.pid, SIGKILL) and not seen[st.pid] then
        seen[st.pid] = true
        killed[#killed + 1] = st.pid
      end
    end
    require("beat").sleep(0.02)   -- let the kernel take them down before looking again
  end
  table.sort(killed)
  return killed
end

return M
