--- `beat repl`: each line runs in its own task; the event loop keeps
--- running while the user types (readline's callback interface).
local rl = require "beat._readline"
local task = require "beat.task"
local runtime = require "beat._runtime"

local M = {}

local function show(...)
  local n = select("#", ...)
  if n == 0 then return end
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    if type(v) == "table" and not getmetatable(v) then
      local ok, json = pcall(require("cjson").encode, v)
      parts[i] = ok and json or tostring(v)
    else
      parts[i] = type(v) == "string" and ("%q"):format(v):gsub("\\\n", "\\n") or tostring(v)
    end
  end
  print(table.concat(parts, "\t"))
end

-- Compiles a line: "=expr" and bare expressions print their value.
-- Returns the chunk, or nil plus "incomplete" or the syntax error.
local function compile(src, env)
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end
  local chunk = load("return " .. src, "=repl", "t", env)
  if chunk then return chunk end
  local err
  chunk, err = load(src, "=repl", "t", env)
  if chunk then return chunk end
  if err:find("<eof>$") then return nil, "incomplete" end
  return nil, err
end

---@param cli table the cli module (drive, on_interrupt)
---@return integer status
function M.run(cli)
  local beat = require "beat"
  local env = setmetatable({ beat = beat }, { __index = _G, __newindex = _G })
  local history = (os.getenv("HOME") or ".") .. "/.beat_history"
  rl.read_history(history)
  print(("beat %s REPL (%s). `beat` is loaded; =expr prints; Ctrl-C cancels; Ctrl-D exits.")
    :format(beat.version, _VERSION))

  local done, running, buffer = false, nil, nil
  local prompt

  local function run_line(chunk)
    running = task.start(true, function()
      local res = table.pack(xpcall(chunk, function(e)
        if task.is_cancelled(e) then return e end
        return debug.traceback(tostring(e), 2)
      end))
      if res[1] then
        show(table.unpack(res, 2, res.n))
      elseif task.is_cancelled(res[2]) then
        print("cancelled")
      else
        io.stderr:write(tostring(res[2]), "\n")
      end
    end)
    -- the line's task may block; the prompt returns when it ends
    beat.go(function()
      running:join()
      running = nil
      prompt()
    end)
  end

  local function on_line(line)
    if line == nil then
      io.write("\n")
      done = true
      return
    end
    if line:match("%S") then rl.add_history(line) end
    local src = buffer and (buffer .. "\n" .. line) or line
    if not src:match("%S") then return prompt() end
    local chunk, err = compile(src, env)
    if err == "incomplete" then
      buffer = src
      return prompt()
    end
    buffer = nil
    if not chunk then
      io.stderr:write(err, "\n")
      return prompt()
    end
    run_line(chunk)
  end

  -- standard input that cannot be polled (a file, /dev/null): read it
  -- line by line without line editing; each line on a fresh turn of the
  -- loop, so a long script does not nest calls
  local plain = false
  local function next_plain_line()
    local timer = runtime.timer()
    timer:start(0, function()
      timer:close()
      on_line(io.read("l"))
    end)
  end

  function prompt()
    if plain then return next_plain_line() end
    local ok = rl.prompt(buffer and ">> " or "beat> ", on_line)
    if not ok then
      plain = true
      next_plain_line()
    end
  end

  local status = 0
  cli.on_interrupt(function(code)
    if code ~= cli.EXIT_INT then      -- SIGTERM: leave, cancelling what runs
      done, status = true, code
      return false
    end
    -- a busy line is interrupted inside task.start, before `running` is set
    local line_task = running or task.running()
    if line_task then
      line_task:cancel()
    else
      buffer = nil
      rl.interrupt()
    end
    return true
  end)

  prompt()
  while not done do
    if not runtime.run("once") then break end
  end
  rl.close()
  rl.write_history(history)
  cli.on_interrupt(nil)
  task.cancel_all()
  runtime.run("default")
  return status
end

return M
