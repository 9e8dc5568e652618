--- beat.objective.format — numbers in an objective's reasons.
---
--- Two numbers side by side get the same decimals, about four significant digits, and
--- enough decimals that different numbers never print the same: "120.4 KB < 131.0 KB".
--- Negative numbers use the Unicode minus (U+2212), as percentages do: "(−8.1%)".
local M = {}

local format, abs = string.format, math.abs

local MINUS = "\226\136\146" -- U+2212

local function is_integral(v)
  return math.type(v) == "integer" or (v == math.floor(v) and abs(v) < 2 ^ 53)
end

--- Formats one number, or two with the same number of decimals.
---@param a number
---@param b? number
---@return string, string?
function M.pair(a, b)
  local m = abs(a)
  if b and abs(b) > m then m = abs(b) end
  local function fix(v, d)
    local s = format("%." .. d .. "f", v)
    if s:match("^%-0%.?0*$") then s = s:sub(2) end
    return (s:gsub("^%-", MINUS))
  end
  if m ~= 0 and (m >= 1e15 or m < 1e-4) then
    local p = 4
    local function g(v) return (format("%." .. p .. "g", v):gsub("^%-", MINUS)) end
    while b and a ~= b and g(a) == g(b) and p < 17 do p = p + 1 end
    return g(a), b and g(b)
  end
  local d
  if is_integral(a) and (b == nil or is_integral(b)) then
    d = 0
  elseif m == 0 then
    d = 1
  else
    d = 3 - math.floor(math.log(m, 10))
    if d < 0 then d = 0 end
  end
  while b and a ~= b and fix(a, d) == fix(b, d) and d < 17 do d = d + 1 end
  -- drop trailing zeros both numbers share: 0.9100/0.8500 → 0.91/0.85, 131.0/120.4 stays
  while d > 0 and fix(a, d):sub(-1) == "0" and (b == nil or fix(b, d):sub(-1) == "0") do
    d = d - 1
  end
  return fix(a, d), b and fix(b, d)
end

local function with_unit(s, spec)
  local unit = spec and spec.unit
  if not unit or unit == "" then return s end
  if unit:sub(1, 1) == "%" then return s .. unit end
  return s .. " " .. unit
end

--- Formats a value (and a second one alike) as a metric spec says: its `format`
--- function, or pair() followed by its `unit`.
---@param spec? {unit?: string, format?: fun(v: number): string}
---@param a number
---@param b? number
---@return string, string?
function M.values(spec, a, b)
  if spec and spec.format then
    return tostring(spec.format(a)), b ~= nil and tostring(spec.format(b)) or nil
  end
  local sa, sb = M.pair(a, b)
  return with_unit(sa, spec), sb and with_unit(sb, spec)
end

--- One value, as values() formats it.
---@param spec? table
---@param v number
---@return string
function M.one(spec, v)
  return (M.values(spec, v))
end

--- The change from b to a in percent: "−8.1%", "+0.012%", or nil when b is 0.
---@param a number
---@param b number
---@return string|nil
function M.pct(a, b)
  if b == 0 then return nil end
  local r = (a - b) / abs(b) * 100
  if r == 0 then return "0%" end
  local s
  if abs(r) >= 0.1 then s = format("%.1f", abs(r)) else s = format("%.2g", abs(r)) end
  return (r < 0 and MINUS or "+") .. s .. "%"
end

--- A p-value: "p=0.004", "p=1.2e-05".
---@param p number
---@return string
function M.p(p)
  if p < 0.001 then return format("p=%.1e", p) end
  return (format("p=%.3f", p):gsub("0+$", ""):gsub("%.$", ""))
end

return M
