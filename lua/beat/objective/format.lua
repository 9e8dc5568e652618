--- beat.objective.format — numbers in an objective's reasons.
---
--- Numbers keep their magnitude (about four significant digits, beat.numfmt):
--- two numbers of the same order of magnitude side by side get the same
--- decimals ("120.4 KB < 131.0 KB"); numbers of different magnitudes each get
--- their own ("0.1684 > 0.01196", "1000000 > 0.01196"), never "0" for a
--- small non-zero value; different numbers never print the same. A value a
--- metric names as a sentinel (`sentinels = {[1e6] = "diverged"}`) prints as
--- its name, and so do inf and NaN; no percentage is given next to them.
--- Negative numbers use the Unicode minus (U+2212), as percentages do: "(−8.1%)".
local numfmt = require "beat.numfmt"

local M = {}

local format, abs, floor, log = string.format, math.abs, math.floor, math.log

local MINUS = "\226\136\146" -- U+2212

local function is_integral(v)
  return math.type(v) == "integer" or (v == floor(v) and abs(v) < 2 ^ 53)
end

local function finite(v)
  return v == v and v ~= math.huge and v ~= -math.huge
end

-- The name v has as a sentinel (or as a non-finite number), else nil.
local function sentinel(v, sentinels)
  if sentinels then
    for value, name in pairs(sentinels) do
      if value == v then return tostring(name) end
    end
  end
  if not finite(v) then return numfmt.format(v, { minus = MINUS }) end
  return nil
end
M.sentinel = sentinel

local function decade(v)
  return floor(log(abs(v), 10))
end

-- One number alone: whole when integral (below 1e15), else `sig` significant digits.
local function single(v, sig)
  if is_integral(v) and abs(v) < 1e15 then
    return (format("%d", v):gsub("^%-", MINUS))
  end
  return numfmt.format(v, { digits = sig, minus = MINUS })
end

--- Formats one number, or two (alike when they are of the same magnitude).
--- Sentinel values (opts `sentinels`, and inf, NaN) print as their names.
---@param a number
---@param b? number
---@param sentinels? table<number, string>
---@return string, string?
function M.pair(a, b, sentinels)
  local na, nb = sentinel(a, sentinels), b ~= nil and sentinel(b, sentinels) or nil
  if na or nb then
    return na or single(a, 4), b ~= nil and (nb or single(b, 4)) or nil
  end
  local m = abs(a)
  if b and abs(b) > m then m = abs(b) end
  local function fix(v, d)
    local s = format("%." .. d .. "f", v)
    if s:match("^%-0%.?0*$") then s = s:sub(2) end
    return (s:gsub("^%-", MINUS))
  end
  local both_integral = is_integral(a) and (b == nil or is_integral(b))
  local alike = b == nil or a == 0 or b == 0 or decade(a) == decade(b)
  if m ~= 0 and (m >= 1e15 or m < 1e-4) or not (both_integral or alike) then
    -- magnitudes apart (or beyond fixed notation): each its own significant digits
    local p = 4
    local sa, sb = single(a, p), b ~= nil and single(b, p) or nil
    while b and a ~= b and sa == sb and p < 17 do
      p = p + 1
      sa, sb = single(a, p), single(b, p)
    end
    return sa, sb
  end
  local d
  if both_integral then
    d = 0
  elseif m == 0 then
    d = 1
  else
    d = 3 - floor(log(m, 10))
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
  local sentinels = spec and spec.sentinels
  if spec and spec.format then
    local function f(v) return sentinel(v, sentinels) or tostring(spec.format(v)) end
    return f(a), b ~= nil and f(b) or nil
  end
  local sa, sb = M.pair(a, b, sentinels)
  -- a sentinel's name takes no unit: "diverged", not "diverged KB"
  local function unit(s, v) return sentinel(v, sentinels) and s or with_unit(s, spec) end
  return unit(sa, a), sb and unit(sb, b)
end

--- One value, as values() formats it.
---@param spec? table
---@param v number
---@return string
function M.one(spec, v)
  return (M.values(spec, v))
end

--- The change from b to a in percent: "−8.1%", "+0.012%", "+1307%",
--- "+8.36e+09%"; nil when b is 0, either is not finite or is one of the
--- sentinels (a percentage of a marker means nothing).
---@param a number
---@param b number
---@param sentinels? table<number, string>
---@return string|nil
function M.pct(a, b, sentinels)
  if b == 0 or sentinel(a, sentinels) or sentinel(b, sentinels) then return nil end
  local r = (a - b) / abs(b) * 100
  if r == 0 then return "0%" end
  if not finite(r) then return nil end
  local s
  local m = abs(r)
  if m >= 1000 then s = numfmt.format(m, { digits = 3 })
  elseif m >= 0.1 then s = format("%.1f", m)
  else s = format("%.2g", m) end
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
