--- Tasks: coroutines scheduled on the libuv loop.
---
--- Every blocking-looking call in beat (`beat.exec`, `beat.sleep`,
--- `proc:wait`, `task:wait`) goes through `M.await`: it starts libuv work
--- whose callback wakes the task, and yields. A task owns the processes and
--- timers it starts (its cleanup hooks): they end when it is cancelled or
--- when it finishes.
local M = {}

---@class beat.Task
---@field status "running"|"done"|"failed"|"cancelled"
---@field name string
local Task = {}
Task.__index = Task

--- The error object a cancelled task sees at its blocking call.
M.cancelled = setmetatable({}, {
  __tostring = function() return "task cancelled" end,
  __name = "beat.cancelled",
})

local current = nil        ---@type beat.Task?
local live = {}            -- every task not yet finished
local unobserved = {}      -- failed tasks nobody waited for
local next_id = 0

---@param err any
---@return boolean
function M.is_cancelled(err)
  return err == M.cancelled
end

local function finish(t, ok, ...)
  live[t] = nil
  if ok then
    t.status, t.results = "done", table.pack(...)
  else
    local err = ...
    t.status = err == M.cancelled and "cancelled" or "failed"
    t.error = err
    t.traceback = debug.traceback(t.co, tostring(err), 0)
  end
  -- the coroutine is dead: closing it runs its pending <close> variables
  local closed, close_err = coroutine.close(t.co)
  if not closed and t.status == "done" then
    t.status, t.error = "failed", close_err
    t.traceback = tostring(close_err)
  end
  for key, hook in pairs(t.cleanups) do
    t.cleanups[key] = nil
    pcall(hook)
  end
  local waiters = t.waiters
  t.waiters = {}
  if t.status == "failed" and #waiters == 0 and not t.observed then
    -- reported on the next turn of the loop unless someone waits for it first
    unobserved[t] = true
    local timer = require("beat._runtime").timer()
    timer:start(0, function()
      timer:close()
      if unobserved[t] then
        io.stderr:write(("beat: task %s failed: %s\n"):format(t.name, t.traceback))
      end
    end)
  end
  for _, wake in ipairs(waiters) do wake() end
end

local step

-- A task that called coroutine.yield() itself (not through a beat call)
-- is resumed on the next turn of the loop: a plain yield gives the other
-- tasks a turn, like beat.sleep(0).
local function reschedule(t)
  local timer = require("beat._runtime").timer()
  local token = {}
  t.token = token
  timer:start(0, function()
    timer:close()
    if t.token == token then
      t.token = nil
      step(t)
    end
  end)
end

function step(t, ...)
  local prev = current
  current = t
  t.in_await = false
  local res = table.pack(coroutine.resume(t.co, ...))
  current = prev
  if coroutine.status(t.co) == "dead" then
    finish(t, table.unpack(res, 1, res.n))
  elseif not t.in_await and t.token == nil then
    reschedule(t)
  end
end

--- Starts fn(...) as a new task; it runs at once until its first blocking call.
---@param fn function
---@return beat.Task
function M.go(fn, ...)
  if type(fn) ~= "function" then
    error(("beat.go: fn must be a function, got %s"):format(type(fn)), 2)
  end
  return M.start(false, fn, ...)
end

--- Starts a task; `observed` means its caller reports its error (the main
--- task of `beat run`, a REPL line), so it is not reported when it fails.
---@param observed boolean
---@param fn function
---@return beat.Task
function M.start(observed, fn, ...)
  next_id = next_id + 1
  local t = setmetatable({
    co = coroutine.create(fn), status = "running", name = "#" .. next_id,
    cleanups = {}, waiters = {}, observed = observed, shielded = 0,
  }, Task)
  live[t] = true
  step(t, ...)
  return t
end

--- The running task, or an error naming `what` when called outside one.
---@param what string the API function asking, for the error message
---@return beat.Task
function M.current(what)
  local co, main = coroutine.running()
  if current == nil or main or current.co ~= co then
    error(("%s must be called inside a task (a recipe, a REPL line or beat.go)")
      :format(what or "this function"), 3)
  end
  return current
end

--- The running task, or nil.
function M.running()
  local co = coroutine.running()
  if current and current.co == co then return current end
  return nil
end

--- Registers fn to run when the task ends or is cancelled; returns a key
--- for `undefer`.
function Task:defer(fn)
  local key = {}
  self.cleanups[key] = fn
  return key
end

function Task:undefer(key)
  self.cleanups[key] = nil
end

--- Blocks the running task until `start(wake)` calls wake(...); returns the
--- values given to wake. start may return a cancel function, called if the
--- task is cancelled while it waits. Raises `M.cancelled` on cancel.
---@param what string
---@param start fun(wake: fun(...)): (fun()|nil)
function M.await(what, start)
  local t = M.current(what)
  if t.cancelled and t.shielded == 0 then error(M.cancelled, 0) end
  local token, early = {}, nil
  t.token = token
  local function wake(...)
    if t.token ~= token then return end
    t.token = nil
    if coroutine.status(t.co) == "running" then
      early = table.pack(...)       -- woken before it could yield
    else
      step(t, ...)
    end
  end
  local cancel = start(wake)
  if early then return table.unpack(early, 1, early.n) end
  t.on_cancel = cancel
  t.in_await = true
  local res = table.pack(coroutine.yield())
  t.on_cancel = nil
  if res[1] == M.cancelled and res.n == 1 and t.cancelling then
    t.cancelling = nil
    error(M.cancelled, 0)
  end
  return table.unpack(res, 1, res.n)
end

--- Runs fn(...) in the running task with cancellation held off: blocking
--- calls inside it work even after the task was cancelled (cleanup that must
--- wait: the end of a process, a final journal record). A cancel that
--- arrives meanwhile takes effect at the first blocking call after it.
function M.shield(fn, ...)
  local t = M.current("beat.shield")
  t.shielded = t.shielded + 1
  local res = table.pack(pcall(fn, ...))
  t.shielded = t.shielded - 1
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- Cancels the task: stops what it waits for and raises `beat.cancelled`
--- at its blocking call, so pcall handlers and <close> variables run. The
--- cancellation sticks: every later blocking call raises it again (so a
--- pcall cannot swallow it), except inside beat.shield(fn). Cancelling a
--- finished task does nothing.
function Task:cancel()
  if self.status ~= "running" then return false end
  self.cancelled = true
  if self == current then      -- its own code (or a coroutine it resumed) runs
    if self.shielded == 0 then error(M.cancelled, 0) end
    return true
  end
  if self.token and self.shielded == 0 then
    self.token = nil
    local cancel = self.on_cancel
    self.on_cancel = nil
    if cancel then pcall(cancel) end
    self.cancelling = true
    step(self, M.cancelled)
  end
  -- otherwise it is shielded, or resuming another task: it raises at its
  -- next blocking call outside a shield
  return true
end

--- Waits for the task and returns its results; re-raises its error with the
--- task's traceback.
function Task:wait()
  if self.status == "running" then
    M.await("task:wait", function(wake)
      table.insert(self.waiters, wake)
    end)
  end
  unobserved[self] = nil
  if self.status == "done" then
    return table.unpack(self.results, 1, self.results.n)
  elseif self.status == "cancelled" then
    error(M.cancelled, 0)
  end
  error(self.traceback, 0)
end

--- Waits until the task finishes without raising; returns ok, results or error.
function Task:join()
  local ok, err = pcall(self.wait, self)
  if ok then return true, table.unpack(self.results, 1, self.results.n) end
  return false, self.status == "cancelled" and M.cancelled or err
end

function Task:done()
  return self.status ~= "running"
end

Task.__tostring = function(t) return ("task %s (%s)"):format(t.name, t.status) end

--- Waits for every task; returns a list of each task's first result. If any
--- failed, raises the first failure after all have finished.
---@param tasks beat.Task[]
function M.all(tasks)
  if type(tasks) ~= "table" then
    error(("beat.all: tasks must be a list of tasks, got %s"):format(type(tasks)), 2)
  end
  local results, first_err = {}, nil
  for i, t in ipairs(tasks) do
    if getmetatable(t) ~= Task then
      error(("beat.all: tasks[%d] is not a task"):format(i), 2)
    end
    local ok, res = pcall(t.wait, t)
    if ok then results[i] = res elseif first_err == nil then first_err = res end
  end
  if first_err ~= nil then error(first_err, 0) end
  return results
end

--- Cancels every live task (Ctrl-C), newest first. Called from inside a
--- running task (a busy task interrupted by a signal), it cancels that
--- task last, since cancelling it raises its cancellation there.
function M.cancel_all()
  local list = {}
  local me = current
  for t in pairs(live) do
    if t ~= me then list[#list + 1] = t end
  end
  table.sort(list, function(a, b) return #a.name > #b.name or (#a.name == #b.name and a.name > b.name) end)
  if me then list[#list + 1] = me end
  for _, t in ipairs(list) do t:cancel() end
end

--- Number of live tasks, and whether any failed task went unobserved.
function M.stats()
  local n = 0
  for _ in pairs(live) do n = n + 1 end
  return n, next(unobserved) ~= nil
end

--- Whether t is a task (beat.go's result).
---@param t any
---@return boolean
function M.is_task(t)
  return getmetatable(t) == Task
end

return M
