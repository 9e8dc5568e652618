--- beat.objective.front — a Pareto front: the candidates no other candidate dominates.
---
--- `objective:front()` makes one; `front:add(candidate, data)` lets a candidate in when it
--- is feasible, dominated by no member and not a tie with one (ties never replace); the
--- members it dominates leave. `objective:compare(candidate, front)` says what add would do.
local check = require "beat.check"
local compare = require "beat.objective.compare"

local M = {}

local format = string.format

---@class beat.FrontEntry
---@field candidate any
---@field data any

---@class beat.Front
---@field objective beat.Objective
---@field entries table[] members, oldest first: {candidate, data, vals}
local Front = {}
Front.__index = Front
M.Front = Front

--- A new, empty front for a pareto objective.
---@param obj beat.Objective
---@return beat.Front
function M.new(obj)
  return setmetatable({ objective = obj, entries = {} }, Front)
end

--- Whether x is a front.
function M.is_front(x)
  return getmetatable(x) == Front
end

--- The verdict on read values `av` against the front: "worse" (a member dominates it),
--- "tie" (equal to a member), or "better" (it enters; info.dominated lists the indices of
--- the members it pushes out).
---@return "better"|"worse"|"tie" verdict, string reason, table info
function M.compare(obj, av, front)
  for idx, m in ipairs(front.entries) do
    local better, worse, texts = compare.dominance(obj, av, m.vals)
    if worse > 0 and better == 0 then
      return "worse", format("dominated by front member %d: %s", idx, table.concat(texts, ", ")), { member = idx }
    end
    if worse == 0 and better == 0 then
      return "tie", format("ties front member %d: %s", idx, table.concat(texts, ", ")), { member = idx }
    end
  end
  local dominated = {}
  for idx, m in ipairs(front.entries) do
    local better, worse = compare.dominance(obj, av, m.vals)
    if better > 0 and worse == 0 then dominated[#dominated + 1] = idx end
  end
  local reason
  if #front.entries == 0 then
    reason = "first on the front: " .. compare.describe(obj, av)
  elseif #dominated > 0 then
    reason = format("joins the front, dominating %d member%s: %s", #dominated,
      #dominated == 1 and "" or "s", compare.describe(obj, av))
  else
    reason = "joins the front (a new trade-off): " .. compare.describe(obj, av)
  end
  return "better", reason, { dominated = dominated }
end

--- Offers a candidate to the front. It enters when it is feasible, dominated by no
--- member and not a tie with one (ties never replace); the members it dominates leave.
--- `data` is kept alongside (an iteration number, a snapshot ref).
---@param candidate any
---@param data? any
---@return boolean entered
---@return beat.FrontEntry[] dominated the members that left, each {candidate, data}
---@return string reason
function Front:add(candidate, data)
  local obj = self.objective
  if candidate == nil then check.error("beat.objective", "front:add needs a candidate, got nil") end
  local av, why = compare.read(obj, candidate)
  if not av then return false, {}, "infeasible: " .. why end
  local verdict, reason, info = M.compare(obj, av, self)
  if verdict ~= "better" then return false, {}, reason end
  local removed, keep = {}, {}
  local gone = {}
  for _, idx in ipairs(info.dominated) do gone[idx] = true end
  for idx, m in ipairs(self.entries) do
    if gone[idx] then removed[#removed + 1] = { candidate = m.candidate, data = m.data }
    else keep[#keep + 1] = m end
  end
  keep[#keep + 1] = { candidate = candidate, data = data, vals = av }
  self.entries = keep
  return true, removed, reason
end

--- The members of the front, oldest first, as {candidate, data} (a copy).
---@return beat.FrontEntry[]
function Front:members()
  local out = {}
  for i, m in ipairs(self.entries) do out[i] = { candidate = m.candidate, data = m.data } end
  return out
end

--- Number of members.
---@return integer
function Front:size()
  return #self.entries
end

return M
