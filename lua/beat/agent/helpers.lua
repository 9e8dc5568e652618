--- beat.agent.helpers — what adapters share: reading a CLI's JSON lines
--- and fields, its rate-limit messages, the arguments a user appended, and
--- temporary files for a run. Re-exported by beat.agent (agent.num,
--- agent.temp_file, ...), which is how adapters use them.
local cjson = require "cjson"

local M = {}

local MAX_TEXT = 256 * 1024          -- the final message kept in the result

--- Decodes one line of JSON; returns the table or nil (never raises).
---@param line string
---@return table|nil
function M.decode_line(line)
  local first = line:find("%S")
  if not first or line:byte(first) ~= 123 then return nil end -- "{"
  local ok, v = pcall(cjson.decode, line)
  if ok and type(v) == "table" then return v end
  return nil
end

--- A JSON number field as a Lua number, or nil (cjson.null and strings are nil).
function M.num(v)
  if type(v) == "number" and v == v then return v end
  return nil
end

--- A JSON string field, or nil.
function M.str(v)
  if type(v) == "string" then return v end
  return nil
end

--- Keeps the last `max` bytes of text.
function M.tail(text, max)
  max = max or MAX_TEXT
  if text and #text > max then return text:sub(-max) end
  return text
end

--- Parses "try again in 5 minutes", "retry in 12.5s", "Please retry in 300ms"
--- style phrases from a CLI's structured error message into seconds.
---@param msg string|nil
---@return number|nil
function M.retry_after_from(msg)
  if type(msg) ~= "string" then return nil end
  local lower = msg:lower()
  local n, unit = lower:match("retry in ([%d.]+)%s*(%a*)")
  if not n then n, unit = lower:match("try again in ([%d.]+)%s*(%a*)") end
  if not n then n, unit = lower:match("retry after ([%d.]+)%s*(%a*)") end
  n = tonumber(n)
  if not n then return nil end
  local mult = ({ ms = 0.001, s = 1, sec = 1, secs = 1, second = 1, seconds = 1,
                  m = 60, min = 60, mins = 60, minute = 60, minutes = 60,
                  h = 3600, hr = 3600, hour = 3600, hours = 3600,
                  d = 86400, day = 86400, days = 86400 })[unit] or 1
  return n * mult
end

--- The arguments a user asked to append (opts.args, or its older name extra_args).
---@param o table validated adapter options
---@return string[]
function M.user_args(o)
  return o.args or o.extra_args or {}
end

--- Removes the temp files and directories an adapter's command() listed in
--- `files` (directories with everything in them).
---@param files string[]|nil
function M.remove_files(files)
  local fs = require("beat.fs")
  for _, f in ipairs(files or {}) do
    if fs.is_dir(f) then fs.rm_rf(f) else os.remove(f) end
  end
end

--- Writes text to a new file `name` inside a new private temp directory
--- (prefix-XXXXXX under $TMPDIR); returns the file's path and the directory,
--- which the adapter lists in `files` so they are removed after the run.
---@param prefix string
---@param name string
---@param text string
---@return string path, string dir
function M.temp_file(prefix, name, text)
  local fs = require("beat.fs")
  local dir = assert(fs.tmpdir(prefix))
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path, dir
end

return M
