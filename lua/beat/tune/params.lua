--- beat.tune.params — the parameters beat.agent.tune edits: where each value is in its
--- file, how to read and rewrite it, and how it maps to [0, 1] for the search.
---
--- A parameter is {file, name | pattern, id?, kind, min, max, choices, format}. `name =
--- "lr"` finds the first `lr = 0.1`, `lr: 0.1`, `"lr": 0.1`, `LR=0.1` or `--lr 0.1` in the
--- file (name as a whole word, quotes around the value kept); `pattern` is a Lua pattern
--- whose one capture is the value (`id` names it). Kinds: "float" and "int" (linear in
--- [min, max]), "log" (log-uniform, min > 0), "choice" (one of `choices`). `format` (e.g.
--- "%.3f") sets how numbers are written. Only the value's characters ever change.
--- Pure Lua (files through io): runs under plain lua5.4.
local check = require "beat.check"

local M = {}

---@class beat.tune.Param
---@field file string
---@field name? string
---@field pattern? string
---@field id? string
---@field kind "int"|"float"|"log"|"choice"
---@field min? number
---@field max? number
---@field choices? any[]
---@field format? string
---@field key string how the value is named in results: id, name or pattern

local function valid_format(f) return pcall(string.format, f, 1.5) end

local PARAM = {
  file = { "nonempty", required = true, what = "a file path" },
  name = "nonempty", id = "nonempty", pattern = { "string", what = "a Lua pattern" },
  kind = { enum = { "int", "float", "log", "choice" } },
  min = "number", max = "number",
  choices = { "table", test = function(c) return #c >= 2 end, what = "a list of at least two values" },
  format = { "string", test = valid_format, what = 'a format such as "%.4f"' },
}

-- A Lua pattern with position captures around its first capture, so string.find returns
-- where the value is; nil and what is wrong when the pattern has no (balanced) capture.
local function position_pattern(pat)
  local i, n = 1, #pat
  while i <= n do
    local c = pat:sub(i, i)
    if c == "%" then
      i = i + 2
    elseif c == "[" then
      local j = i + 1
      if pat:sub(j, j) == "^" then j = j + 1 end
      if pat:sub(j, j) == "]" then j = j + 1 end
      while j <= n and pat:sub(j, j) ~= "]" do
        if pat:sub(j, j) == "%" then j = j + 1 end
        j = j + 1
      end
      i = j + 1
    elseif c == "(" and pat:sub(i + 1, i + 1) ~= ")" then
      local depth, j = 1, i + 1
      while j <= n do
        local d = pat:sub(j, j)
        if d == "%" then j = j + 1
        elseif d == "(" then depth = depth + 1
        elseif d == ")" then depth = depth - 1; if depth == 0 then break end end
        j = j + 1
      end
      if j > n then return nil, "a Lua pattern with balanced parentheses" end
      return pat:sub(1, i - 1) .. "()" .. pat:sub(i, j) .. "()" .. pat:sub(j + 1)
    else
      i = i + 1
    end
  end
  return nil, "a Lua pattern with one capture, the value, as in 'lr = ([%d.eE+-]+)'"
end

--- Checks a list of parameter specs and returns checked copies (kind filled in, ints as
--- integers, `key` set). Raises, naming the field, at `level` (as error()'s, default 2).
---@param list table[]
---@param where string "beat.agent.tune"
---@param level? integer
---@return beat.tune.Param[]
function M.check(list, where, level)
  level = (level or 2) + 1
  local out, keys = {}, {}
  for i, p in ipairs(list) do
    local w = ("opts.params[%d]"):format(i)
    if type(p) ~= "table" then check.fail(where, w, "a table", p, level) end
    check.options(where, p, PARAM, { prefix = w, level = level })
    if (p.name == nil) == (p.pattern == nil) then check.error(where, w .. " needs exactly one of name or pattern", level) end
    local q = {}
    for k, v in pairs(p) do q[k] = v end
    q.kind = q.kind or (q.choices and "choice" or "float")
    if q.kind == "choice" then
      check.value(where, w .. ".choices", q.choices, { "table", required = true, test = PARAM.choices.test,
        what = PARAM.choices.what }, level)
    else
      if type(q.min) ~= "number" or type(q.max) ~= "number" or not (q.min < q.max) then
        check.error(where, ("%s needs numbers min < max, got min=%s max=%s"):format(w, tostring(q.min), tostring(q.max)), level)
      end
      if q.kind == "int" then
        q.min, q.max = math.tointeger(q.min), math.tointeger(q.max)
        if not (q.min and q.max) then check.error(where, w .. ": an int parameter needs integer min and max", level) end
      end
      if q.kind == "log" and q.min <= 0 then
        check.fail(where, w .. ".min", "a number > 0 (a log parameter)", q.min, level)
      end
    end
    if q.pattern then
      local pos, what = position_pattern(q.pattern)
      if not pos then check.fail(where, w .. ".pattern", what, q.pattern, level) end
      q._pos_pattern = pos
    end
    q.key = q.id or q.name or q.pattern
    if keys[q.key] then check.error(where, ("%s: two parameters are named %s; give one an id"):format(w, q.key), level) end
    keys[q.key] = true
    out[i] = q
  end
  return out
end

-- Finding and editing values in files ------------------------------------------------------

local NUMBER_PATTERNS = {
  "^[-+]?%d+%.?%d*[eE][-+]?%d+", "^[-+]?%.%d+[eE][-+]?%d+",
  "^[-+]?%d+%.?%d*", "^[-+]?%.%d+",
}

local function value_at(text, pos, choice)
  local q = text:sub(pos, pos)
  if choice then
    if q == '"' or q == "'" then
      local close = text:find(q, pos + 1, true)
      if close then return pos + 1, close - 1 end
      return nil
    end
    local s, e = text:find("^[%w_%.%-+/]+", pos)
    return s, e
  end
  if q == '"' or q == "'" then pos = pos + 1 end
  for _, p in ipairs(NUMBER_PATTERNS) do
    local s, e = text:find(p, pos)
    if s then return s, e end
  end
  return nil
end

-- Where the value of param p is in text: start, end (inclusive), or nil.
local function locate(p, text)
  if p.pattern then
    local r = { text:find(p._pos_pattern) }
    if not r[1] then return nil end
    local s, e = r[3], r[#r] - 1
    if type(s) ~= "number" or e < s then return nil end
    return s, e
  end
  local name, pos = p.name, 1
  while true do
    local s, e = text:find(name, pos, true)
    if not s then return nil end
    pos = s + 1
    local before = s > 1 and text:sub(s - 1, s - 1) or ""
    local after = text:sub(e + 1, e + 1)
    local word_start = name:match("^[%w_]") ~= nil
    local word_end = name:match("[%w_]$") ~= nil
    if not (word_start and before:match("[%w_]")) and not (word_end and after:match("[%w_]")) then
      local k = e + 1
      local qc = text:sub(k, k)
      if qc == '"' or qc == "'" then k = k + 1 end
      local _, sep_end = text:find("^[ \t]*[=:][ \t]*", k)
      if not sep_end then _, sep_end = text:find("^[ \t]+", k) end
      if sep_end then
        local vs, ve = value_at(text, sep_end + 1, p.kind == "choice")
        if vs then return vs, ve end
      end
    end
  end
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then return nil, werr end
  return true
end
M.write_file = write_file

local function resolve(cwd, file)
  if file:sub(1, 1) == "/" or not cwd then return file end
  return cwd .. "/" .. file
end

--- A value as it is written into the file.
---@param p beat.tune.Param
---@param v any
---@return string
function M.format_value(p, v)
  if p.kind == "choice" then return tostring(v) end
  if p.kind == "int" then return ("%d"):format(v) end
  return (p.format or "%.6g"):format(v)
end

--- Every parameter's current value (a list aligned with params), or nil and why
--- ("tune: cfg.py: no value for lr found").
---@param params beat.tune.Param[]
---@param cwd? string files are relative to it
---@return any[]|nil, string?
function M.read(params, cwd)
  local texts, vals = {}, {}
  for i, p in ipairs(params) do
    local path = resolve(cwd, p.file)
    local text = texts[path]
    if not text then
      local err
      text, err = read_file(path)
      if not text then return nil, ("tune: %s: %s"):format(p.file, err) end
      texts[path] = text
    end
    local s, e = locate(p, text)
    if not s then
      return nil, ("tune: %s: no value for %s found"):format(p.file, p.key)
    end
    local raw = text:sub(s, e)
    vals[i] = p.kind == "choice" and raw or tonumber(raw)
  end
  return vals
end

--- Writes values (a list aligned with params) into their files; true, or nil and why.
---@param params beat.tune.Param[]
---@param cwd? string
---@param vals any[]
---@return true|nil, string?
function M.write(params, cwd, vals)
  local texts, order = {}, {}
  for i, p in ipairs(params) do
    local path = resolve(cwd, p.file)
    if not texts[path] then
      local text, err = read_file(path)
      if not text then return nil, ("tune: %s: %s"):format(p.file, err) end
      texts[path] = text
      order[#order + 1] = path
    end
    local text = texts[path]
    local s, e = locate(p, text)
    if not s then return nil, ("tune: %s: no value for %s found"):format(p.file, p.key) end
    texts[path] = text:sub(1, s - 1) .. M.format_value(p, vals[i]) .. text:sub(e + 1)
  end
  for _, path in ipairs(order) do
    local ok, err = write_file(path, texts[path])
    if not ok then return nil, ("tune: %s"):format(err) end
  end
  return true
end

-- Normalised coordinates --------------------------------------------------------------------

local function clamp(x, lo, hi) return math.max(lo, math.min(hi, x)) end
M.clamp = clamp

--- A value's position in [0, 1] (the middle of its cell for ints and choices).
---@param p beat.tune.Param
---@param v any
---@return number
function M.to_unit(p, v)
  if p.kind == "choice" then
    for i, c in ipairs(p.choices) do
      if tostring(c) == tostring(v) then return (i - 0.5) / #p.choices end
    end
    return 0.5
  end
  v = tonumber(v)
  if not v then return 0.5 end
  if p.kind == "log" then
    if v <= 0 then return 0 end
    return clamp((math.log(v) - math.log(p.min)) / (math.log(p.max) - math.log(p.min)), 0, 1)
  elseif p.kind == "int" then
    return clamp((v - p.min + 0.5) / (p.max - p.min + 1), 0, 1)
  end
  return clamp((v - p.min) / (p.max - p.min), 0, 1)
end

--- The value at position u in [0, 1] (clamped).
---@param p beat.tune.Param
---@param u number
---@return any
function M.from_unit(p, u)
  u = clamp(u, 0, 1)
  if p.kind == "choice" then
    return p.choices[clamp(math.floor(u * #p.choices) + 1, 1, #p.choices)]
  elseif p.kind == "int" then
    return math.tointeger(clamp(p.min + math.floor(u * (p.max - p.min + 1)), p.min, p.max))
  elseif p.kind == "log" then
    return math.exp(math.log(p.min) + u * (math.log(p.max) - math.log(p.min)))
  end
  return p.min + u * (p.max - p.min)
end

return M
