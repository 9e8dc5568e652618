--- beat.numfmt: numbers for people — significant digits, magnitude kept,
--- sentinels named.
---
---   numfmt.format(0.0073124)            --> "0.007312"
---   numfmt.format(1234567)              --> "1.235e+06"
---   numfmt.format(250000)               --> "250000"   (integers below 1e6 print whole)
---   numfmt.format(0.1, {digits = 2})    --> "0.1"      (trailing zeros dropped)
---   numfmt.format(1e6, {sentinels = {[1e6] = "diverged"}})  --> "diverged"
---   numfmt.format(0/0), numfmt.format(math.huge)             --> "NaN", "inf"
---   numfmt.distinct{0.0101, 0.0102}     --> {"0.0101", "0.0102"}  (more digits
---                                            only when needed to tell them apart)
---
--- Rules: 0 is "0"; an integral value below 1e6 in magnitude prints whole;
--- values from 1e-4 to 1e6 print in fixed notation with `digits` significant
--- digits; smaller and larger ones in scientific notation (C's %e, trailing
--- zeros of the mantissa dropped). A value never prints as "0" unless it is 0.
--- The journal stores non-finite numbers as the strings "nan", "inf" and
--- "-inf"; `number` reads them back.
local M = {}

local abs, floor, log = math.abs, math.floor, math.log

M.DIGITS = 4

--- The number v stands for: a number, or one of the strings the journal uses
--- for non-finite values ("nan", "inf", "-inf", "+inf", "infinity"); nil
--- otherwise.
---@param v any
---@return number|nil
function M.number(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then return nil end
  local s = v:lower():gsub("^%s+", ""):gsub("%s+$", ""):gsub("\u{2212}", "-")
  if s == "nan" or s == "-nan" then return 0 / 0 end
  if s == "inf" or s == "+inf" or s == "infinity" then return math.huge end
  if s == "-inf" or s == "-infinity" then return -math.huge end
  return tonumber(s)
end

local function strip_zeros(s)
  -- "0.0073000" → "0.0073", "12.000" → "12", "1.2300e+06" → "1.23e+06"
  local mant, exp = s:match("^(.-)(e[%+%-]%d+)$")
  if not mant then mant, exp = s, "" end
  if mant:find(".", 1, true) then mant = mant:gsub("0+$", ""):gsub("%.$", "") end
  return mant .. exp
end

---@class beat.NumfmtOpts
---@field digits? integer significant digits, 1..17 (default 4)
---@field sentinels? table<number, string> exact values with a name: {[1e6] = "diverged"}
---@field minus? string the minus sign (default "-"; "\u{2212}" for typeset text)

local function check_opts(opts)
  if opts == nil then return M.DIGITS, nil, "-" end
  if type(opts) ~= "table" then error("beat.numfmt: opts must be a table, got " .. type(opts), 3) end
  local d = opts.digits or M.DIGITS
  if math.type(d) ~= "integer" or d < 1 or d > 17 then
    error(("beat.numfmt: opts.digits must be an integer from 1 to 17, got %s"):format(tostring(opts.digits)), 3)
  end
  if opts.sentinels ~= nil and type(opts.sentinels) ~= "table" then
    error("beat.numfmt: opts.sentinels must be a table {[value] = name}, got " .. type(opts.sentinels), 3)
  end
  if opts.minus ~= nil and type(opts.minus) ~= "string" then
    error("beat.numfmt: opts.minus must be a string, got " .. type(opts.minus), 3)
  end
  return d, opts.sentinels, opts.minus or "-"
end

local function fmt(v, digits, sentinels, minus)
  if sentinels then
    for value, name in pairs(sentinels) do
      if value == v then return tostring(name) end
    end
  end
  if v ~= v then return "NaN" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return minus .. "inf" end
  if v == 0 then return "0" end
  local m = abs(v)
  local s
  if m < 1e6 and (math.type(v) == "integer" or v == floor(v)) then
    s = ("%d"):format(floor(m))
  elseif m >= 1e-4 and m < 1e6 then
    local decimals = digits - 1 - floor(log(m, 10))
    if decimals < 0 then decimals = 0 end
    s = strip_zeros(("%." .. decimals .. "f"):format(m))
  else
    s = strip_zeros(("%." .. (digits - 1) .. "e"):format(m))
  end
  if v < 0 then s = minus .. s end
  return s
end

--- v formatted with its magnitude (see the rules above). Strings the journal
--- uses for non-finite values are read first; any other non-number is
--- returned as tostring(v).
---@param v any
---@param opts? beat.NumfmtOpts
---@return string
function M.format(v, opts)
  local digits, sentinels, minus = check_opts(opts)
  local n = M.number(v)
  if n == nil then return tostring(v) end
  return fmt(n, digits, sentinels, minus)
end

--- Formats a list so that different values never print the same: the digits
--- grow (up to 17) until they are told apart. Returns a new list of strings.
---@param list number[]
---@param opts? beat.NumfmtOpts
---@return string[]
function M.distinct(list, opts)
  local digits, sentinels, minus = check_opts(opts)
  if type(list) ~= "table" then error("beat.numfmt: distinct needs a list of numbers, got " .. type(list), 2) end
  local out
  for d = digits, 17 do
    out = {}
    local seen, clash = {}, false
    for i, v in ipairs(list) do
      local n = M.number(v)
      out[i] = n and fmt(n, d, sentinels, minus) or tostring(v)
      local prev = seen[out[i]]
      if prev ~= nil and prev ~= n and n == n then clash = true end
      seen[out[i]] = n
    end
    if not clash then break end
  end
  return out
end

return M
