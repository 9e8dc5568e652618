--- beat.slurm's srun command line: the options of one command checked, and
--- the job (a beat.SlurmProc, not started yet) with its srun argv, name,
--- environment and output sinks.
local beat_exec = require "beat.exec"
local duration = require "beat.duration"
local fs = require "beat.fs"
local runtime = require "beat._runtime"
local state = require "beat.executor.slurm_state"
local Proc = require("beat.executor.slurm_proc").Proc

local M = {}

local format = string.format

local DEFAULT_GRACE = 5
local DEFAULT_MAX_OUTPUT = 1024 * 1024
local GUARD_TAG = state.GUARD_TAG

-- Runs on the node: enters the work tree or fails with one recognisable line,
-- never runs the command elsewhere (slurmstepd falls back to /tmp when
-- --chdir fails).
local GUARD = 'cd "$1" 2>/dev/null || { echo "' .. GUARD_TAG ..
  '$1 is not visible on $(hostname)" >&2; exit 125; }; shift; exec "$@"'

local counter = 0

local function job_name(naming)
  local run = naming.run_id or ("pid" .. runtime.pid())
  local it = naming.iteration
  if not it then
    counter = counter + 1
    it = "x" .. counter
  end
  if naming.candidate and not it:find(".", 1, true) then it = it .. "." .. naming.candidate end
  return "beat-" .. run .. "-" .. it
end

-- The srun command line and options for one command (ex: the executor; fn:
-- the calling method's name, for errors, which are raised at its caller).
function M.prepare(ex, fn, cmd, eopts, naming, level)
  local function fail(fmt, ...) error(fn .. ": " .. format(fmt, ...), level or 4) end
  local argv
  if type(cmd) == "string" then
    if cmd == "" then fail("cmd must not be empty") end
    argv = { "/bin/sh", "-c", cmd }
  elseif type(cmd) == "table" then
    if #cmd == 0 then fail("cmd must not be an empty list") end
    argv = {}
    for i = 1, #cmd do
      local v = cmd[i]
      if type(v) == "number" then v = tostring(v) end
      if type(v) ~= "string" then fail("cmd[%d] must be a string, got %s", i, type(v)) end
      argv[i] = v
    end
  else
    fail("cmd must be an argv table or a shell string, got %s", type(cmd))
  end
  local timeout, grace
  if eopts.timeout ~= nil then
    local why
    timeout, why = duration.parse(eopts.timeout)
    if not timeout then fail("opts.timeout %s", why) end
  end
  do
    local why
    grace, why = duration.parse(eopts.grace == nil and DEFAULT_GRACE or eopts.grace)
    if not grace then fail("opts.grace %s", why) end
  end
  for _, k in ipairs { "stdout", "stderr" } do
    local v = eopts[k]
    if v ~= nil and type(v) ~= "boolean" and type(v) ~= "string" and type(v) ~= "function" then
      fail("opts.%s must be true, false, a file path or a function, got %s", k, type(v))
    end
  end
  if eopts.env ~= nil and type(eopts.env) ~= "table" then
    fail("opts.env must be a table of strings, got %s", type(eopts.env))
  end
  if eopts.cwd ~= nil and type(eopts.cwd) ~= "string" then
    fail("opts.cwd must be a string, got %s", type(eopts.cwd))
  end
  local p = setmetatable({
    ex = ex, job_name = job_name(naming), timeout = timeout, grace = grace,
    queue_timeout = ex.queue_timeout, stdin = eopts.stdin, attempt = 0,
    max_output = eopts.max_output or DEFAULT_MAX_OUTPUT,
  }, Proc)
  -- srun's environment: the caller's env merged into beat's; a new job even
  -- when beat itself runs inside an allocation
  local env = {}
  for k, v in pairs(eopts.env or {}) do env[k] = v end
  if ex.conf and env.SLURM_CONF == nil then env.SLURM_CONF = ex.conf end
  env.SLURM_JOB_ID, env.SLURM_JOBID = false, false
  p.env = env
  local export
  if eopts.clear_env then
    local names = {}
    for k, v in pairs(eopts.env or {}) do
      if v ~= false then names[#names + 1] = k end
    end
    table.sort(names)
    export = #names > 0 and table.concat(names, ",") or "NONE"
  end
  -- output: files are written here, by beat (one handle per path, so
  -- stdout and stderr sent to the same file interleave as lines)
  local files = {}
  p.files = files
  local function file_sink(path)
    if not files[path] then
      local f, err = io.open(path, "wb")
      if not f then return nil, err end
      f:setvbuf("line")
      files[path] = f
    end
    local f = files[path]
    return function(line) f:write(line, "\n") end
  end
  local out, errs = eopts.stdout, eopts.stderr
  if type(out) == "string" then
    local sink, err = file_sink(out)
    if not sink then return nil, format("beat.slurm: stdout %s", err) end
    p.stdout = sink
  else
    p.stdout = out
  end
  if errs == nil or errs == true then
    p.capture = true
  elseif type(errs) == "string" then
    local sink, err = file_sink(errs)
    if not sink then return nil, format("beat.slurm: stderr %s", err) end
    p.stderr_sink = sink
  elseif type(errs) == "function" then
    p.stderr_sink = errs
  end
  local dir = fs.realpath(eopts.cwd or fs.cwd() or ".")
  if not dir or not fs.is_dir(dir) then
    return nil, format("beat.slurm: cwd %s: no such directory", eopts.cwd or ".")
  end
  p.cwd = dir
  local srun = beat_exec.which("srun")
  if not srun then
    return nil, "beat.slurm: srun not found on PATH (the Slurm client commands must be installed here)"
  end
  local a = { srun, "--verbose", "--job-name=" .. p.job_name, "--chdir=" .. dir,
    "--nodes=1", "--ntasks=1" }
  if export then a[#a + 1] = "--export=" .. export end
  for _, x in ipairs(ex.args) do a[#a + 1] = x end
  for _, x in ipairs { "/bin/sh", "-c", GUARD, "beat-slurm-guard", dir } do a[#a + 1] = x end
  for _, x in ipairs(argv) do a[#a + 1] = x end
  p.argv = a
  return p
end

return M
