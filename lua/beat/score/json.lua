--- beat.score.json — finding a JSON object in a command's output and a value inside it.
---
--- The last top-level `{…}` that decodes is the object: text before and after it is fine,
--- log lines with stray quotes or braces do not derail the scan, an invalid last block falls
--- back to the one before. Linear in the size of the output; at most MAX_TRIES decodes.
local M = {}

local byte, find, sub, match, format = string.byte, string.find, string.sub, string.match, string.format

local MAX_DEPTH = 1000
local MAX_TRIES = 50

--- Candidate {…} blocks of text as a flat list open1, close1, open2, close2, …, in order
--- of their closing brace. Strings are tracked only inside a block and never span a line,
--- so stray quotes and braces in log lines do not derail the scan; nesting beyond
--- MAX_DEPTH is ignored; only the last blocks are kept.
local function blocks(text)
  local out = {}
  local stack, sp, extra = {}, 0, 0
  local in_str = false
  local pos = 1
  while true do
    local i = find(text, in_str and "[\"\\\n]" or "[{}\"\n]", pos)
    if not i then break end
    local c = byte(text, i)
    pos = i + 1
    if in_str then
      if c == 92 then pos = i + 2
      elseif c == 34 then in_str = false
      else in_str = false end -- a newline ends a bogus string
    elseif c == 123 then
      if sp < MAX_DEPTH then sp = sp + 1; stack[sp] = i else extra = extra + 1 end
    elseif c == 125 then
      if extra > 0 then
        extra = extra - 1
      elseif sp > 0 then
        out[#out + 1] = stack[sp]
        out[#out + 1] = i
        stack[sp] = nil
        sp = sp - 1
        if #out > 4 * MAX_TRIES * 20 then
          table.move(out, #out - 4 * MAX_TRIES + 1, #out, 1)
          for k = #out, 4 * MAX_TRIES + 1, -1 do out[k] = nil end
        end
      end
    elseif c == 34 then
      if sp > 0 then in_str = true end
    end
  end
  return out
end

--- The last top-level JSON object in text (decoded), or nil.
---@param text string
---@return table|nil
function M.last_object(text)
  local cjson = require "cjson"
  local list = blocks(text)
  local failed_open, failed_close
  local tries = 0
  for k = #list - 1, 1, -2 do
    local open, close = list[k], list[k + 1]
    if not (failed_open and open > failed_open and close < failed_close) then
      tries = tries + 1
      if tries > MAX_TRIES then return nil end
      local ok, v = pcall(cjson.decode, sub(text, open, close))
      if ok and type(v) == "table" then return v end
      failed_open, failed_close = open, close
    end
  end
  return nil
end

--- A key as a list of parts: "metrics.val_bpb" → {"metrics", "val_bpb"}; a list stays.
---@param key string|string[]
---@return string[]
function M.split_key(key)
  if type(key) == "table" then return key end
  local parts = {}
  for part in (key .. "."):gmatch("([^%.]*)%.") do parts[#parts + 1] = part end
  return parts
end

-- The value at a path of parts, or nil and the index of the first part not found.
local function lookup(v, parts)
  for i, part in ipairs(parts) do
    if type(v) ~= "table" then return nil, i end
    local nxt = v[part]
    if nxt == nil and match(part, "^%d+$") then nxt = v[tonumber(part)] end
    if nxt == nil then return nil, i end
    v = nxt
  end
  return v
end

--- The value at `parts` in a decoded object, as a score: a finite number (normalised),
--- a boolean or a table; nil and a reason for a missing key, null, NaN, ±inf or a string.
---@param obj any the decoded object
---@param parts string[] from split_key
---@param source string how to name where it came from ("eval's stdout", "eval's m.json")
---@param from_file boolean whether obj was read from a file (no file-name hint then)
---@return any value, string? reason
function M.pick(obj, parts, source, from_file)
  local snippet = require("beat.score.number").snippet
  local v, at = lookup(obj, parts)
  local kname = table.concat(parts, ".")
  if v == nil then
    local hint = ""
    if not from_file and match(kname, "%.json$") then
      hint = format(' (to read a file, use beat.score.json{file = %q})', kname)
    end
    if at and at < #parts then
      return nil, format("json key %s not found in %s (no %s)", kname, source,
        table.concat(parts, ".", 1, at)) .. hint
    end
    return nil, format("json key %s not found in %s", kname, source) .. hint
  end
  if v == require("cjson").null then return nil, format("json key %s is null", kname) end
  if type(v) == "number" then
    if v ~= v then return nil, format("json key %s is NaN", kname) end
    if v == math.huge or v == -math.huge then return nil, format("json key %s is infinite", kname) end
    return require("beat.score.number").normalize(v)
  end
  if type(v) == "string" then
    return nil, format("json key %s is a string (%q), not a number", kname, snippet(v, 30))
  end
  return v
end

return M
