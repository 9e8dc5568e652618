--- beat.agent.fn: a Lua function as the agent.
---
---   beat.agent.fn(function(ctx)
---     -- ctx: {prompt, cwd, iteration, history, timeout, env, transcript}
---     local r = beat.exec({"sed", "-i", "s/a/b/", "x.txt"}, {cwd = ctx.cwd})
---     return r.code == 0 or nil, "sed failed"
---   end)
---
--- The function runs in a task of its own, so it may call beat.exec, beat.sleep
--- and the rest. What it returns becomes the result:
---   nothing or true     → ok
---   a string            → ok, with that text
---   false|nil, "why"    → ok=false, error "why"
---   a table             → merged into the result (ok defaults to true), so it can
---                         report cost_usd, tokens, rate_limited, ...
--- An error raised inside it is reported as ok=false with the message (the
--- traceback goes to the transcript when one is given). With a timeout the task
--- is cancelled when the time is up (its processes end) and the result is
--- code 124, timed_out=true.
local agent = require "beat.agent"

local M = {}

local spec = { name = "fn", no_common = true, schema = { fn = "function", name = "string",
                                                        timeout = "duration" } }

local function write_transcript(path, text)
  if not path then return end
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then require("beat").fs.mkdir_p(dir) end
  local f = io.open(path, "wb")
  if f then f:write(text, "\n"); f:close() end
end

function spec.run(self, opts)
  local beat = require "beat"
  local task = require "beat.task"
  local ctx = {}
  for k, v in pairs(opts) do ctx[k] = v end
  local timeout = opts.timeout
  if timeout == nil then timeout = self.opts.timeout end
  if timeout ~= nil then timeout = beat.duration(timeout) end
  ctx.timeout = timeout

  local started = beat.clock()
  local traceback
  local child = task.go(function()
    return xpcall(self.opts.fn, function(e)
      traceback = debug.traceback(tostring(e), 2)
      return e
    end, ctx)
  end)
  local timed_out = false
  local watchdog
  if timeout then
    watchdog = task.go(function()
      beat.sleep(timeout)
      if not child:done() then
        timed_out = true
        child:cancel()
      end
    end)
  end
  local joined, ok, a, b = child:join()
  if watchdog and not watchdog:done() then watchdog:cancel() end

  local res = { duration = beat.clock() - started, timed_out = false, rate_limited = false,
                transcript = opts.transcript, tokens = { input = 0, output = 0 }, turns = 0,
                cost_usd = 0 }
  if timed_out then
    res.ok, res.code, res.timed_out = false, 124, true
    res.error = ("timed out after %s"):format(require("beat.duration").format(timeout))
  elseif not joined or not ok then
    local err = joined and a or ok
    if task.is_cancelled(err) then error(err, 0) end
    res.ok, res.code = false, 1
    res.error = "the function raised: " .. tostring(err)
    write_transcript(opts.transcript, traceback or tostring(err))
  elseif type(a) == "table" then
    for k, v in pairs(a) do res[k] = v end
    if res.ok == nil then res.ok = true end
    if res.code == nil then res.code = res.ok and 0 or 1 end
    if res.ok then res.error = nil elseif not res.error then res.error = "the function reported failure" end
  elseif a == nil or a == true then
    if a == nil and b ~= nil then
      res.ok, res.code, res.error = false, 1, tostring(b)
    else
      res.ok, res.code = true, 0
    end
  elseif a == false then
    res.ok, res.code, res.error = false, 1, b ~= nil and tostring(b) or "the function returned false"
  elseif type(a) == "string" then
    res.ok, res.code, res.text = true, 0, a
  else
    res.ok, res.code, res.text = true, 0, tostring(a)
  end
  if res.text and opts.transcript and not res.error then write_transcript(opts.transcript, res.text) end
  return res
end

local new = agent.define(spec)

--- A Lua function as an agent: fn(function(ctx) ... end) or fn{fn = f, name =, timeout =}.
---@param f function|{fn: function, name?: string, timeout?: number|string}
---@return beat.Agent
function M.new(f)
  if type(f) == "function" then f = { fn = f } end
  if type(f) ~= "table" or type(f.fn) ~= "function" then
    error("beat.agent.fn: expects a function, or a table with opts.fn a function, got "
      .. type(type(f) == "table" and f.fn or f), 2)
  end
  local a = new(f)
  if f.name then a.name = f.name end
  return a
end
M.spec = spec

return M
