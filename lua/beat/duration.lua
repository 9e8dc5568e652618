--- Durations: "90s", "1m30s", "500ms", "2h", "1.5s", or a number of seconds.
local M = {}

local units = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }

--- Parses a duration into seconds; returns nil, reason for bad input.
---@param d string|number
---@param bare_unit? number seconds per unit for a bare number in a string ("1500" with bare_unit=0.001 is 1.5 s)
---@return number|nil seconds, string? reason
function M.parse(d, bare_unit)
  if type(d) == "number" then
    if d ~= d or d < 0 or d == math.huge then
      return nil, ("must be a non-negative finite number of seconds, got %s"):format(d)
    end
    return d
  end
  if type(d) ~= "string" then
    return nil, ("must be a duration like \"90s\" or a number of seconds, got %s"):format(type(d))
  end
  local s = d:match("^%s*(.-)%s*$")
  if s:match("^%d+%.?%d*$") then
    return tonumber(s) * (bare_unit or 1)
  end
  local total, pos, seen = 0, 1, false
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d+%.?%d*)(%a+)()", pos)
    if not num or not units[unit] then
      return nil, ("must be a duration like \"90s\", \"1m30s\" or \"500ms\", got %q"):format(d)
    end
    total = total + tonumber(num) * units[unit]
    pos, seen = nxt, true
  end
  if not seen then
    return nil, ("must be a duration like \"90s\", \"1m30s\" or \"500ms\", got %q"):format(d)
  end
  if total == math.huge or total ~= total or total > 1e12 then
    return nil, ("is too large, got %q"):format(d)
  end
  return total
end

--- Like parse, but raises with the caller's name: `beat.duration: ...`.
---@param d string|number
---@param what? string what is being parsed, for the message
---@return number seconds
function M.check(d, what)
  local v, why = M.parse(d)
  if not v then error(("%s %s"):format(what or "beat.duration: duration", why), 3) end
  return v
end

--- Formats seconds for people: 0.25 -> "250ms", 95 -> "1m35s".
---@param s number
---@return string
function M.format(s)
  if s < 1 then return ("%dms"):format(math.floor(s * 1000 + 0.5)) end
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, math.floor(s % 3600 / 60))
end

return M
