--- beat.check — the one option checker.
---
--- A public function takes one options table and checks it at the door. A bad option is
--- a programmer error: it raises, blaming the line that called the function, with one
--- message shape:
---
---   beat.measure: opts.runs must be a positive integer, got 0
---   beat.measure: unknown option opts.run
---
--- Declare the schema once, at load time, and check at the door:
---
---   local check = require "beat.check"
---   local OPTS = {
---     runs = "posint",                                  -- a kind, by name
---     stdin = "string|boolean",                         -- a union of kinds
---     aggregate = { enum = { "median", "mean" } },      -- one of these values
---     level = { "number", range = "(0, 0.5)" },         -- a number in an interval
---     timeout = "duration",                             -- "90s" or seconds (beat.duration)
---     score = { "function", what = "an extractor such as beat.score.last_number" },
---     cmd = { "string|table", required = true },
---   }
---   function M.measure(opts)
---     opts = check.options("beat.measure", opts, OPTS)  -- nil becomes {}
---
--- Kinds by name: any, string, nonempty (a non-empty string), boolean, table, function,
--- number (not NaN), finite, integer (or int), posint, nonnegint, positive, nonneg (finite
--- ≥ 0), duration, strings (a list of strings), env (NAME = string|false), true, false.
--- A table spec `{kinds?, enum =, range =, test =, what =, required =}`: `enum` lists
--- values allowed besides the kinds, `range` bounds numbers ("[0, 1)", "(0, inf)"), `test`
--- is a further condition (a function(v) → ok), `what` names what is expected in the
--- message, `required` rejects nil.
---
--- One value (a positional argument, a field): `check.value(where, "cmd", cmd, kind)`.
--- A nested table: `check.options(where, entry, SCHEMA, {prefix = "opts.params[2]"})`
--- names its fields `opts.params[2].file`. `{lenient = true}` lets unknown keys pass.
---
--- Rules a schema cannot say go through `check.fail` (same shape) or `check.error`
--- (`<fn>: <message>`, for rules between options). `level` is what you would pass to
--- `error` from the function that calls check: 2 (the default) blames that function's
--- caller. Assign the result (`opts = check.options(...)`) rather than `return check…`:
--- a tail call drops the calling function's frame, and the blame lands one level off.
--- Failures of the world are not checked here: they return nil, reason.

---@alias beat.check.Kind string|beat.check.Spec a kind name ("posint"), a union ("string|table") or a spec

---@class beat.check.Spec
---@field [1]? string           kind names, "|"-separated (default: any, or only `enum`)
---@field enum? any[]           values allowed besides the kinds
---@field range? string         an interval for numbers: "[0, 1)", "(0, inf)"
---@field test? fun(v: any): boolean  a further condition on a value of the right kind
---@field what? string          what the message says it must be
---@field required? boolean     nil is an error

local M = {}

local format, concat = string.format, table.concat

--------------------------------------------------------------------------------
-- Showing a value in a message

local function quote(s)
  if #s > 60 then s = s:sub(1, 60) .. "…" end
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == "\n" then return "\\n" elseif c == "\t" then return "\\t"
    elseif c == '"' or c == "\\" then return "\\" .. c end
    return format("\\%d", c:byte())
  end) .. '"'
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if v ~= v then return "nan" end -- not "-nan": the sign of a NaN means nothing
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  if t == "table" then return "{…}" end
  return "a " .. t
end

--- A value as a message shows it: strings quoted, numbers as they are, tables briefly
--- (`{0, 1.5}`, `{a = 1}`), other values by their type ("a function").
---@param v any
---@return string
function M.show(v)
  if type(v) ~= "table" then return scalar(v) end
  local parts, n = {}, #v
  for i = 1, math.min(n, 5) do parts[i] = scalar(v[i]) end
  if n > 5 then parts[#parts + 1] = "…" end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do
    if i > 5 then parts[#parts + 1] = "…"; break end
    local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. scalar(k) .. "]")
    parts[#parts + 1] = name .. " = " .. scalar(v[k])
  end
  local s = "{" .. concat(parts, ", ") .. "}"
  if #s > 80 then s = s:sub(1, 78) .. "…}" end
  return s
end

--------------------------------------------------------------------------------
-- Raising

--- Raises `<where>: <label> must be <what>, got <value>`.
---@param where string the function the user called, "beat.measure"
---@param label string what is wrong, "opts.runs"
---@param what string what it must be, "a positive integer"
---@param got any the value given
---@param level? integer as error()'s, from the caller (default 2)
function M.fail(where, label, what, got, level)
  error(format("%s: %s must be %s, got %s", where, label, what, M.show(got)), (level or 2) + 1)
end

--- Raises `<where>: <msg>`, for a rule between options ("give either a or b").
---@param where string
---@param msg string
---@param level? integer as error()'s, from the caller (default 2)
function M.error(where, msg, level)
  error(where .. ": " .. msg, (level or 2) + 1)
end

--------------------------------------------------------------------------------
-- Kinds

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function is_duration(v)
  return (type(v) == "number" or type(v) == "string") and require("beat.duration").parse(v) ~= nil
end

local function is_strings(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v or type(x) ~= "string" then return false end
  end
  return true
end

local function is_env(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if type(k) ~= "string" or k == "" or k:find("=", 1, true) then return false end
    if not (type(x) == "string" or type(x) == "number" or x == false) then return false end
  end
  return true
end

local KINDS = {
  any = { "anything", function() return true end },
  string = { "a string", function(v) return type(v) == "string" end },
  nonempty = { "a non-empty string", function(v) return type(v) == "string" and v ~= "" end },
  boolean = { "a boolean", function(v) return type(v) == "boolean" end },
  table = { "a table", function(v) return type(v) == "table" end },
  ["function"] = { "a function", function(v) return type(v) == "function" end },
  number = { "a number", function(v) return type(v) == "number" and v == v end },
  finite = { "a finite number", finite },
  integer = { "an integer", function(v) return math.type(v) == "integer" end },
  posint = { "a positive integer", function(v) return math.type(v) == "integer" and v > 0 end },
  nonnegint = { "a non-negative integer", function(v) return math.type(v) == "integer" and v >= 0 end },
  positive = { "a positive number", function(v) return finite(v) and v > 0 end },
  nonneg = { "a non-negative number", function(v) return finite(v) and v >= 0 end },
  duration = { 'a duration like "90s" or a number of seconds', is_duration },
  strings = { "a list of strings", is_strings },
  env = { "a table of NAME = string|false", is_env },
  ["true"] = { "true", function(v) return v == true end },
  ["false"] = { "false", function(v) return v == false end },
}
KINDS.int = KINDS.integer

-- "a or b", "a, b or c"
local function either(list)
  if #list == 1 then return list[1] end
  return concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

-- "[0, 1)" → a test and its text; raises on a malformed interval (a bug in a schema).
local function parse_range(r)
  local open, lo, hi, close = r:match("^([%[%(])%s*([^,]-)%s*,%s*([^%]%)]-)%s*([%]%)])$")
  local function num(x) return x == "inf" and math.huge or x == "-inf" and -math.huge or tonumber(x) end
  local a, b = num(lo), num(hi)
  if not open or not a or not b then error("beat.check: malformed range " .. tostring(r), 0) end
  return function(v)
    if type(v) ~= "number" or v ~= v then return true end -- only numbers have a range
    return (open == "[" and v >= a or v > a) and (close == "]" and v <= b or v < b)
  end
end

local compiled = setmetatable({}, { __mode = "k" })

-- A kind (a name, a union or a table spec) as {test = fn(v) → ok, what = text, required}.
local function compile(kind)
  local c = compiled[kind]
  if c then return c end
  local spec = type(kind) == "table" and kind or { kind }
  local tests, whats = {}, {}
  local names = spec[1]
  if names == nil and spec.enum == nil then names = "any" end
  if names ~= nil then
    for name in tostring(names):gmatch("[^|]+") do
      local k = KINDS[name]
      if not k then error("beat.check: unknown kind " .. tostring(name), 0) end
      tests[#tests + 1], whats[#whats + 1] = k[2], k[1]
    end
  end
  local enum = spec.enum
  if enum then
    local quoted = {}
    for i, e in ipairs(enum) do quoted[i] = M.show(e) end
    whats[#whats + 1] = either(quoted)
    tests[#tests + 1] = function(v)
      for _, e in ipairs(enum) do if v == e then return true end end
      return false
    end
  end
  local what = either(whats)
  local in_range = spec.range and parse_range(spec.range)
  if spec.range then what = what .. " in " .. spec.range end
  local extra = spec.test
  c = {
    what = spec.what or what,
    required = spec.required,
    test = function(v)
      local ok = false
      for _, t in ipairs(tests) do if t(v) then ok = true; break end end
      if ok and in_range then ok = in_range(v) end
      if ok and extra then ok = extra(v) end
      return ok
    end,
  }
  compiled[kind] = c
  return c
end

-- How a key is named in a message: opts.name, opts[1], opts["a b"].
local function label_of(prefix, key)
  if type(key) == "string" and key:match("^[%a_][%w_]*$") then return prefix .. "." .. key end
  return prefix .. "[" .. scalar(key) .. "]"
end

--------------------------------------------------------------------------------
-- Checking

--- Checks one value against a kind. Returns v.
---@param where string "beat.score.metric"
---@param label string what the value is, "opts.name" or "cmd"
---@param v any
---@param kind beat.check.Kind "posint", "string|table", {enum = {...}}, ...
---@param level? integer as error()'s, from the caller (default 2)
---@return any v
function M.value(where, label, v, kind, level)
  local c = compile(kind)
  if v == nil then
    if c.required then M.fail(where, label, c.what, v, (level or 2) + 1) end
  elseif not c.test(v) then
    M.fail(where, label, c.what, v, (level or 2) + 1)
  end
  return v
end

---@class beat.check.How
---@field level? integer as error()'s, from the function calling check (default 2)
---@field prefix? string how the table is named in messages (default "opts")
---@field lenient? boolean let keys the schema does not name pass (default: they raise)

--- Checks an options table against a schema {key = kind}. nil is an empty table. Keys the
--- schema does not name raise unless `how.lenient`. Returns the table (never a copy).
---@param where string the function the user called, "beat.measure"
---@param opts table|nil
---@param schema table<any, beat.check.Kind>
---@param how? beat.check.How
---@return table opts
function M.options(where, opts, schema, how)
  local level = (how and how.level or 2) + 1
  local prefix = how and how.prefix or "opts"
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then M.fail(where, prefix, "a table", opts, level) end
  if not (how and how.lenient) then
    local unknown
    for k in pairs(opts) do
      if schema[k] == nil and (unknown == nil or tostring(k) < tostring(unknown)) then unknown = k end
    end
    if unknown ~= nil then
      M.error(where, "unknown option " .. label_of(prefix, unknown), level)
    end
  end
  -- the common case, every option right, in one pass; only a failure pays for the
  -- sorted pass below, which reports the first bad option in a stable order
  local bad = false
  for k, kind in pairs(schema) do
    local v, c = opts[k], compile(kind)
    if v == nil then bad = c.required else bad = not c.test(v) end
    if bad then break end
  end
  if not bad then return opts end
  local keys = {}
  for k in pairs(schema) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    M.value(where, label_of(prefix, k), opts[k], schema[k], level)
  end
  return opts
end

return M
