--- JSON for the MCP server: decoding by lua-cjson (fast, in C), encoding in
--- Lua on top of cjson's string escaping, because the protocol needs what
--- Debian's lua-cjson 2.1.0 cannot do: empty arrays (`[]`, not `{}`), numbers
--- that round-trip (a request id of 2^40 comes back as 1099511627776, not
--- 1.0995116277760e+12), and text that is always valid UTF-8.
local cjson = require "cjson"

local M = {}

local decoder = cjson.new()
decoder.decode_invalid_numbers(false)   -- NaN, Infinity and hex are not JSON

--- The value JSON null decodes to (and encodes from).
M.null = cjson.null

local array_mt = { __name = "json.array" }

--- Marks t (default: a new table) as a JSON array, so it encodes as `[]`
--- when empty.
---@param t? table
---@return table
function M.array(t)
  return setmetatable(t or {}, array_mt)
end

--- Whether a decoded value is a JSON array (a Lua sequence 1..n). An empty
--- table is both an empty array and an empty object.
---@param v any
function M.is_array(v)
  if type(v) ~= "table" then return false end
  if getmetatable(v) == array_mt then return true end
  local n = 0
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n == #v
end

--- Whether v is a JSON object (a table with string keys, or empty).
function M.is_object(v)
  if type(v) ~= "table" or getmetatable(v) == array_mt then return false end
  for k in pairs(v) do
    if type(k) ~= "string" then return false end
  end
  return true
end

--- Decodes one JSON text; returns the value, or nil and why (invalid UTF-8
--- is refused here, as cjson would let it through).
---@param s string
---@return any value
---@return string? err
function M.decode(s)
  if not utf8.len(s) then return nil, "the message is not valid UTF-8" end
  local ok, v = pcall(decoder.decode, s)
  if not ok then return nil, (tostring(v):gsub("^.-:%d+: ", "")) end
  return v
end

-- Valid UTF-8: invalid bytes become U+FFFD.
local utf8_clean = require("beat.journal").utf8_clean
M.utf8_clean = utf8_clean

local function number(x)
  if math.type(x) == "integer" then return tostring(x) end
  if x ~= x or x == math.huge or x == -math.huge then return "null" end
  local i = math.tointeger(x)
  if i then return tostring(i) end
  local s = ("%.14g"):format(x)
  if tonumber(s) ~= x then s = ("%.17g"):format(x) end
  return s
end

local encode

--- Makes t encode its keys in the given order (the rest sorted after them).
---@param t table
---@param keys string[]
---@return table
function M.ordered(t, keys)
  return setmetatable(t, { __jsonorder = keys })
end

local function sorted_keys(t)
  local mt = getmetatable(t)
  local first = mt and mt.__jsonorder
  local keys, seen = {}, {}
  for _, k in ipairs(first or {}) do
    if t[k] ~= nil then
      keys[#keys + 1] = k
      seen[k] = true
    end
  end
  local rest = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      error(("json: object keys must be strings, got %s"):format(type(k)), 0)
    end
    if not seen[k] then rest[#rest + 1] = k end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  return keys
end

function encode(v, out, indent, depth, seen)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = cjson.encode(utf8_clean(v))
  elseif t == "number" then
    out[#out + 1] = number(v)
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    if seen[v] then error("json: a table contains itself", 0) end
    if depth > 200 then error("json: nested too deeply", 0) end
    seen[v] = true
    local nl = indent and ("\n" .. indent:rep(depth + 1)) or nil
    local close_nl = indent and ("\n" .. indent:rep(depth)) or nil
    local sep = indent and ": " or ":"
    if M.is_array(v) and (next(v) ~= nil or getmetatable(v) == array_mt) then
      if #v == 0 then
        out[#out + 1] = "[]"
      else
        out[#out + 1] = "["
        for i = 1, #v do
          if i > 1 then out[#out + 1] = "," end
          if nl then out[#out + 1] = nl end
          encode(v[i], out, indent, depth + 1, seen)
        end
        if close_nl then out[#out + 1] = close_nl end
        out[#out + 1] = "]"
      end
    else
      local keys = sorted_keys(v)
      if #keys == 0 then
        out[#out + 1] = "{}"
      else
        out[#out + 1] = "{"
        for i, k in ipairs(keys) do
          if i > 1 then out[#out + 1] = "," end
          if nl then out[#out + 1] = nl end
          out[#out + 1] = cjson.encode(utf8_clean(k))
          out[#out + 1] = sep
          encode(v[k], out, indent, depth + 1, seen)
        end
        if close_nl then out[#out + 1] = close_nl end
        out[#out + 1] = "}"
      end
    end
    seen[v] = nil
  else
    error(("json: cannot encode a %s"):format(t), 0)
  end
end

--- Encodes v as JSON text on one line (or indented with opts.indent).
--- Object keys are sorted; strings are made valid UTF-8. Raises on values
--- JSON cannot hold (functions, cycles, non-string keys).
---@param v any
---@param opts? {indent?: string}
---@return string
function M.encode(v, opts)
  local out = {}
  encode(v, out, opts and opts.indent, 0, {})
  return (table.concat(out):gsub("\\/", "/"))
end

return M
