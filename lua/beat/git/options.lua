--- beat.git.options — how beat.git's functions take their arguments, and the
--- checks they share. Every function takes one options table, checked at
--- the door by beat.check (`repo:snapshot: opts.ref must be a string, got 42`);
--- most also take their main argument alone: `repo:restore(id)` is
--- `repo:restore{commit = id}`.
local check = require "beat.check"

local M = {}

--- The options table of a function called as f(x), f{key = x, ...} or
--- f(x, {more}): a fresh table, the caller's is never changed.
---@param fname string the function, for messages
---@param arg any x, or the options table
---@param key string the option x stands for
---@param extra? table more options (f(x, {more}))
---@return table opts
function M.table(fname, arg, key, extra)
  local opts = {}
  if type(arg) == "table" then
    for k, v in pairs(arg) do opts[k] = v end
  else
    opts[key] = arg
  end
  if extra ~= nil then
    check.value(fname, "opts", extra, "table", 3)
    for k, v in pairs(extra) do
      if opts[k] == nil then opts[k] = v end
    end
  end
  return opts
end

--- A size in bytes: an integer >= 0 (2^30, a float with an integer value, counts).
M.SIZE = {
  "number", what = "a size in bytes (an integer >= 0)",
  test = function(v) local n = math.tointeger(v) return n ~= nil and n >= 0 end,
}

--- A string that names something: required.
M.NAME = { "string", required = true }

--- A holder's id (a run id): one non-empty line.
M.ID = {
  "string", required = true, what = "a non-empty single line",
  test = function(v) return v ~= "" and not v:find("[\n\r]") end,
}

--- refs/beat/<x> or <x> → refs/beat/<x>; a ref elsewhere under refs/ raises:
--- beat never writes other refs.
---@param fname string
---@param name string
---@param label string "opts.ref"
---@return string ref
function M.beat_ref(fname, name, label)
  if name:sub(1, 5) ~= "refs/" then return "refs/beat/" .. name end
  if name:sub(1, 10) ~= "refs/beat/" then
    check.fail(fname, label, "a ref under refs/beat/ (beat never writes other refs)", name, 3)
  end
  return name
end

--- A list of work-tree paths ("dir", "dir/sub") to exclude, checked and
--- normalized (no trailing slash); nil gives `default`.
---@param fname string
---@param list any
---@param default string[]
---@return string[]
function M.exclude_list(fname, list, default)
  if list == nil then return default end
  check.value(fname, "opts.exclude", list, { "table", what = "a list of work-tree paths" }, 3)
  local out = {}
  for i, p in ipairs(list) do
    local ok = type(p) == "string"
    if ok then
      p = p:gsub("/+$", "")
      ok = p ~= "" and p:sub(1, 1) ~= "/" and not p:find("\0")
      for part in p:gmatch("[^/]+") do
        if part == "." or part == ".." then ok = false end
      end
    end
    if not ok then
      check.fail(fname, ("opts.exclude[%d]"):format(i), "a relative path inside the work tree", list[i], 3)
    end
    out[#out + 1] = p
  end
  return out
end

--- A path without its trailing slash ("/" stays).
---@param p string
---@return string
function M.strip_slash(p)
  if #p > 1 and p:sub(-1) == "/" then return p:sub(1, -2) end
  return p
end

return M
