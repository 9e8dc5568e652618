--- beat.exec and beat.spawn: run commands as if blocking, many at once.
---
--- Shaped after Neovim's vim.system. Each command runs in a session of its
--- own under a shim (engine/shim.c) that ends the whole process tree on
--- timeout, cancel, or beat's death. A result is complete only after the
--- command exited and every pipe reached end of file.
local core = require "beat._exec"
local runtime = require "beat._runtime"
local fsc = require "beat._fs"
local task = require "beat.task"
local duration = require "beat.duration"
local check = require "beat.check"

local M = {}

local SIG = runtime.signals
local DEFAULT_MAX_OUTPUT = 1024 * 1024
local DEFAULT_GRACE = 5
local MAX_OUTPUT_LIMIT = 1 << 30
local DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

---@class beat.ExecOpts
---@field cwd? string working directory
---@field env? table<string, string|false> merged into the inherited environment (false removes)
---@field clear_env? boolean start from an empty environment (plus `env`)
---@field stdin? string|boolean string written then closed; true keeps a pipe (spawn); default /dev/null
---@field timeout? number|string seconds or a duration: SIGTERM to the tree, SIGKILL after `grace`
---@field grace? number|string SIGTERM→SIGKILL delay, default 5s
---@field stdout? boolean|string|fun(line: string) true capture (default), false discard, a path, or a per-line function
---@field stderr? boolean|string|fun(line: string) same as stdout
---@field max_output? integer bytes kept per captured stream (first and last half), default 1 MiB

---@class beat.ExecResult
---@field code integer exit code; 124 on timeout; 128+sig when killed by a signal
---@field signal integer the signal that ended the command, or 0
---@field stdout string|nil captured output (nil unless captured)
---@field stderr string|nil
---@field duration number seconds
---@field timed_out boolean
---@field truncated boolean some captured output was dropped (head and tail kept)

local OUTPUT = { "boolean|string|function", what = "true, false, a file path or a function" }
local OPTS = {
  cwd = "string", env = "table", clear_env = "boolean", stdin = "string|boolean",
  timeout = "duration", grace = "duration", stdout = OUTPUT, stderr = OUTPUT,
  max_output = { "integer", range = ("[2, %d]"):format(MAX_OUTPUT_LIMIT),
                 what = ("an integer from 2 to %d (1 GiB)"):format(MAX_OUTPUT_LIMIT) },
}

-- A rule the schema cannot say (the command, the environment's names), in
-- the one message shape. `level` is error()'s, from the function calling
-- fail; every check blames the line that called beat.exec or beat.spawn.
local function fail(fn, label, what, got, level)
  check.fail(fn, label, what, got, level + 1)
end

local function signum(fn, sig)
  if sig == nil then return SIG.SIGTERM end
  local n = require("beat.signals").number(sig)
  if n then return n end
  error(("%s: unknown signal %s"):format(fn, tostring(sig)), 3)
end

local CAPTURE = { mode = "capture", max = DEFAULT_MAX_OUTPUT } -- read only, shared
local NO_OPTS = {}                                              -- read only, shared

local function output_spec(v, max)
  if v == nil or v == true then
    return max == DEFAULT_MAX_OUTPUT and CAPTURE or { mode = "capture", max = max }
  end
  if v == false then return nil end
  if type(v) == "string" then return { mode = "file", path = v } end
  return { mode = "lines", fn = v, max = max }
end

local started_env -- read once: what beat was started with does not change

--- The environment beat was started with, as a table name → value (a new
--- table each call; the caller may change it).
---@return table<string, string>
function M.environ()
  if not started_env then
    started_env = {}
    local f = io.open("/proc/self/environ", "rb")
    if f then
      for kv in f:read("a"):gmatch("([^%z]+)") do
        local k, v = kv:match("^([^=]+)=(.*)$")
        if k then started_env[k] = v end
      end
      f:close()
    end
  end
  local vars = {}
  for k, v in pairs(started_env) do vars[k] = v end
  return vars
end

local function build_env(fn, opts, level)
  if opts.env == nil and not opts.clear_env then return nil, os.getenv("PATH") end
  local vars = opts.clear_env and {} or M.environ()
  for k, v in pairs(opts.env or {}) do
    if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
      fail(fn, "opts.env keys", "variable names", k, level)
    end
    if v == false then
      vars[k] = nil
    elseif type(v) == "string" or type(v) == "number" then
      vars[k] = tostring(v)
    else
      fail(fn, "opts.env." .. k, "a string, a number or false", v, level)
    end
  end
  local list = {}
  for k, v in pairs(vars) do list[#list + 1] = k .. "=" .. v end
  table.sort(list)
  return list, vars.PATH or DEFAULT_PATH   -- execvp's default when the child has no PATH
end

--- Finds the executable for a command name the way execvp would: a name
--- with a slash is taken as a path (relative to cwd), others are looked up
--- in PATH (default: beat's own). Returns the absolute path, or nil and why.
---@param name string
---@param path? string
---@param cwd? string
---@return string|nil, string?
function M.which(name, path, cwd)
  return core.which(name, path or os.getenv("PATH") or DEFAULT_PATH, cwd)
end

---@class beat.Proc
---@field pid integer pid of the command's session leader
local Proc = {}
Proc.__index = Proc

--- Observers of started commands: every function in this table (any keys)
--- is called with each proc beat starts, right after it started. beat.loop
--- journals the shim's pid and start time, so a resumed run can end what a
--- dead one left running. An observer's error is ignored.
---@type table<any, fun(proc: beat.Proc)>
M.observers = {}

--- Starts the shim the next command will take, unless one waits already:
--- for a caller with other work before its first command (a run's start
--- snapshots the work tree first), so that the shim's start overlaps that
--- work instead of delaying the command. A no-op where shims are started
--- from beat's own binary.
M.ready_shim = core.warm

--- Lets go the shim that waits for the next command (after each command
--- starts, the next one's shim is started ahead of need; see
--- docs/api/exec.md): for a process about to wait a long while, such as a
--- paused run, which keeps nothing below it then. The next command starts
--- one as usual.
M.release_waiting_shim = core.release_warm

-- Checks and normalises a command and its options; `level` blames the
-- user's line (error()'s level as seen from prepare). Returns the spec for
-- core.spawn (all but its file), the label, the timeout, the grace period
-- and the PATH to look the command up in.
local function prepare(fn, cmd, opts, level)
  if opts == nil then
    opts = NO_OPTS
  else
    opts = check.options(fn, opts, OPTS, { level = level })
  end
  local argv, label
  if type(cmd) == "string" then
    if cmd == "" then fail(fn, "cmd", "a command, not empty", cmd, level) end
    argv, label = { "/bin/sh", "-c", cmd }, cmd
  elseif type(cmd) == "table" then
    if #cmd == 0 then fail(fn, "cmd", "a non-empty argv list", cmd, level) end
    argv = {}
    for i = 1, #cmd do
      local a = cmd[i]
      if type(a) == "number" then a = tostring(a) end
      if type(a) ~= "string" or a:find("\0", 1, true) then
        fail(fn, ("cmd[%d]"):format(i), "a string without NUL bytes", a, level)
      end
      argv[i] = a
    end
    label = argv[1]
  else
    fail(fn, "cmd", "an argv table or a shell string", cmd, level)
  end
  if #label > 80 then label = label:sub(1, 77) .. "..." end
  local timeout = opts.timeout ~= nil and duration.parse(opts.timeout) or nil
  local grace = opts.grace == nil and DEFAULT_GRACE or duration.parse(opts.grace)
  local max = opts.max_output == nil and DEFAULT_MAX_OUTPUT or opts.max_output
  local env, path = build_env(fn, opts, level + 1)
  local stdin = opts.stdin
  return {
    args = argv, env = env, cwd = opts.cwd,
    stdin = stdin ~= nil and stdin ~= false and "pipe" or nil,
    stdout = output_spec(opts.stdout, max), stderr = output_spec(opts.stderr, max),
    grace_ms = math.floor(grace * 1000),
  }, label, timeout, grace, path
end

-- `frames`: the functions between start and the user's line (0 when the
-- API function tail-calls start, 1 when it calls it and then waits).
local function start(fn, cmd, opts, frames)
  local t = task.current(fn)
  local spec, label, timeout, grace, path = prepare(fn, cmd, opts, 3 + frames)
  local cwd = spec.cwd
  if cwd then
    local st = fsc.stat(cwd)
    if not st or not (st.type == "directory" or (st.type == "link" and fsc.realpath(cwd))) then
      return nil, ("exec: %s: cwd %s: no such directory"):format(label, cwd)
    end
  end
  local file, why = core.which(spec.args[1], path or os.getenv("PATH") or DEFAULT_PATH, cwd)
  if not file then return nil, ("exec: %s: %s"):format(label, why) end
  spec.file = file

  local proc = setmetatable({ label = label, started = runtime.clock(), timed_out = false }, Proc)
  local handle, err = core.spawn(spec, function(res) proc:_complete(res) end)
  if not handle then return nil, ("exec: %s: %s"):format(label, err) end
  proc.handle, proc.pid, proc.grace = handle, handle:pid(), grace
  local stdin = opts and opts.stdin
  if type(stdin) == "string" then
    handle:write(stdin)
    handle:close_stdin()
  end
  proc.owner, proc.owner_key = t, t:defer(function() proc:_end() end)
  if next(M.observers) ~= nil then
    for _, observe in pairs(M.observers) do pcall(observe, proc) end
  end
  if timeout then
    proc.timer = runtime.timer()
    proc.timer:start(timeout * 1000, function()
      proc.timed_out = true
      proc:_end()
    end)
  end
  return proc
end

function Proc:_complete(res)
  res.duration = runtime.clock() - self.started
  res.timed_out = self.timed_out
  if self.timed_out then res.code = 124 end
  if res.exec_error then
    self.exec_error = ("exec: %s: %s"):format(self.label, res.exec_error)
  end
  if self.timer then self.timer:close() end
  if self.backstop then self.backstop:close() end
  self.owner:undefer(self.owner_key)
  self.result = res
  local waiters = self.waiters
  self.waiters = nil
  if waiters then
    for _, wake in ipairs(waiters) do wake() end
  end
end

-- Ends the command's tree: SIGTERM, SIGKILL after the grace period (done by
-- the shim), and a last-resort SIGKILL of the shim itself if it does not
-- answer.
function Proc:_end()
  if self.result or self.ending then return end
  self.ending = true
  self.handle:kill(SIG.SIGTERM)
  self.backstop = runtime.timer()
  self.backstop:start((self.grace + 2) * 1000, function() self.handle:hard_kill() end)
end

local function add_waiter(self, wake)
  local waiters = self.waiters
  if not waiters then
    waiters = {}
    self.waiters = waiters
  end
  waiters[#waiters + 1] = wake
end

--- Waits for the command; returns its result. With a timeout (seconds or
--- duration), returns nil, "timeout" if it has not finished by then (the
--- command keeps running).
---@param timeout? number|string
---@return beat.ExecResult|nil, string?
function Proc:wait(timeout)
  if not self.result then
    local limit
    if timeout ~= nil then
      local why
      limit, why = duration.parse(timeout)
      if not limit then error("proc:wait: timeout " .. why, 2) end
    end
    local timer
    local ok, err = pcall(task.await, "proc:wait", function(wake)
      add_waiter(self, wake)
      if limit then
        timer = runtime.timer()
        timer:start(limit * 1000, function() wake("timeout") end)
      end
      return function() self:_end() end
    end)
    if timer then timer:close() end
    if not ok then
      if task.is_cancelled(err) and not self.result then
        -- cancelled: the tree is being ended; wait until it is gone (bounded
        -- by the grace period and the backstop) so nothing it does lands
        -- after the caller has moved on, e.g. restored the work tree
        self:_end()
        pcall(task.shield, task.await, "proc:wait", function(wake)
          add_waiter(self, wake)
        end)
      end
      error(err, 0)
    end
    if not self.result then return nil, "timeout" end
  end
  if self.exec_error then return nil, self.exec_error end
  if self.result.callback_error then
    error(("%s: output callback failed: %s"):format(self.label, self.result.callback_error), 2)
  end
  return self.result
end

--- Sends a signal ("TERM" by default): TERM and INT end the whole tree,
--- with SIGKILL after the grace period; KILL ends it at once; others go to
--- the command's process group. Returns false if the command already ended.
---@param sig? string|integer
---@return boolean
function Proc:kill(sig)
  if self.result then return false end
  local n = signum("proc:kill", sig)
  if n == SIG.SIGTERM then
    self:_end()
    return true
  end
  return self.handle:kill(n)
end

--- Writes to the command's stdin (spawn with stdin = true).
---@param data string
---@return true|nil, string?
function Proc:write(data)
  if type(data) ~= "string" then error("proc:write: data must be a string", 2) end
  return self.handle:write(data)
end

--- Closes the command's stdin (it sees end of file).
function Proc:close_stdin()
  self.handle:close_stdin()
end

--- Whether the command has finished.
function Proc:done()
  return self.result ~= nil
end

--- Runs cmd and waits for it.
---@param cmd string|string[] argv table (no shell) or a string for /bin/sh -c
---@param opts? beat.ExecOpts
---@return beat.ExecResult|nil result, string? err "exec: <cmd>: <why>" when it cannot start
function M.exec(cmd, opts)
  local proc, err = start("beat.exec", cmd, opts, 1)
  if not proc then return nil, err end
  return proc:wait()
end

--- Starts cmd and returns at once.
---@param cmd string|string[]
---@param opts? beat.ExecOpts
---@return beat.Proc|nil proc, string? err
function M.spawn(cmd, opts)
  return start("beat.spawn", cmd, opts, 0)
end

return M
