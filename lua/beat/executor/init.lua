--- beat.executor: where a command runs.
---
--- An executor runs a command and hands back the result of beat.exec:
---   executor:exec(cmd, opts)  -> {code, signal, stdout, stderr, duration, timed_out,
---                                 truncated, ..., infra_error?} | nil, err
---   executor:spawn(cmd, opts) -> proc with :wait([limit]), :kill([sig]), :write(data),
---                                :close_stdin(), :done(), pid
---   executor:check(dir)       -> true | nil, "one line": can the executor's
---                                machines see this work tree?
---   executor:cleanup(run_id)  -> n | nil, err: end what a dead run left behind
--- `cmd` and `opts` are those of beat.exec, plus `run_id`, `iteration` and
--- `candidate`, which name the work (a Slurm job is called beat-<run>-<iteration>).
---
--- `infra_error` is set (a one-line string) when the machinery failed, not the
--- command: the scheduler refused or lost the job, a node failed, the job was
--- cancelled from outside. Such a result is not the command's verdict and
--- must never be scored as the candidate's failure.
---
--- Constructors:
---   beat.executor["local"]() / beat.executor.here()   this machine (beat.exec)
---   beat.executor.slurm{...} / beat.slurm{...}         a Slurm cluster (srun)
local M = {}

local EXEC_OPTS = {
  cwd = true, env = true, clear_env = true, stdin = true, timeout = true, grace = true,
  stdout = true, stderr = true, max_output = true,
}
local NAMING = { run_id = true, iteration = true, candidate = true }

---@class beat.ExecutorOpts: beat.ExecOpts
---@field run_id? string       the run the command belongs to (names Slurm jobs; cleanup by run)
---@field iteration? integer|string  the iteration ("3", or "3.2" for candidate 2 of round 3)
---@field candidate? integer   the candidate (1..N) of a parallel round

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

--- Checks an executor's exec/spawn options; returns the options for
--- beat.exec and the naming fields. Raises, naming the option, on bad input.
---@param fn string the function named in errors, e.g. "beat.slurm:exec"
---@param opts table|nil
---@param depth? integer frames between the caller of check_opts and the user (default 1)
---@return table exec_opts, table naming
function M.check_opts(fn, opts, depth)
  -- levels: 1 fail, 2 check_opts, 3 its caller, 3 + depth the user
  local level = 3 + (depth or 1)
  local function fail(fmt, ...) error(("%s: " .. fmt):format(fn, ...), level) end
  opts = opts or {}
  if type(opts) ~= "table" then fail("opts must be a table, got %s", type(opts)) end
  local eopts, naming = {}, {}
  for k, v in pairs(opts) do
    if EXEC_OPTS[k] then
      eopts[k] = v
    elseif NAMING[k] then
      naming[k] = v
    else
      fail("unknown option opts.%s", tostring(k))
    end
  end
  if naming.run_id ~= nil and (type(naming.run_id) ~= "string" or not naming.run_id:match("^[%w_.%-]+$")) then
    fail("opts.run_id must be a run id (letters, digits, '.', '_', '-'), got %s", show(naming.run_id))
  end
  local it = naming.iteration
  if it ~= nil then
    if math.type(it) == "integer" then
      if it < 0 then fail("opts.iteration must be a non-negative integer or a string like \"3.2\", got %d", it) end
      naming.iteration = tostring(it)
    elseif type(it) ~= "string" or not it:match("^[%w_.%-]+$") then
      fail("opts.iteration must be a non-negative integer or a string like \"3.2\", got %s", show(it))
    end
  end
  local c = naming.candidate
  if c ~= nil and (math.type(c) ~= "integer" or c < 1) then
    fail("opts.candidate must be a positive integer, got %s", show(c))
  end
  return eopts, naming
end

--- Whether x is an executor (has exec and spawn methods).
---@param x any
---@return boolean
function M.is_executor(x)
  return type(x) == "table" and type(x.exec) == "function" and type(x.spawn) == "function"
end

--- The executor ex with `naming` (run_id, iteration, candidate) added to
--- the options of every exec and spawn, so code that only runs commands (an
--- agent adapter) names its Slurm jobs after the run without knowing it.
--- check, cleanup and kind are ex's own.
---@param ex beat.Executor
---@param naming {run_id?: string, iteration?: integer|string, candidate?: integer}
---@return beat.Executor
function M.bind(ex, naming)
  if not M.is_executor(ex) then
    error(("beat.executor.bind: ex must be an executor, got %s"):format(type(ex)), 2)
  end
  local function with(opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    for k, v in pairs(naming) do if o[k] == nil then o[k] = v end end
    return o
  end
  return setmetatable({
    exec = function(_, cmd, opts) return ex:exec(cmd, with(opts)) end,
    spawn = function(_, cmd, opts) return ex:spawn(cmd, with(opts)) end,
  }, { __index = ex, __tostring = function() return tostring(ex) end })
end

--- This machine: today's behaviour, through beat.exec / beat.spawn.
---@return beat.Executor
M["local"] = function(opts)
  return require("beat.executor.local").new(opts)
end
--- The same as beat.executor["local"]() (`local` is a Lua keyword).
M.here = M["local"]

--- A Slurm cluster: each command runs as its own job through srun.
--- See lua/beat/executor/slurm.lua and docs/api/executor.md.
---@param opts beat.SlurmOpts
---@return beat.Executor
function M.slurm(opts)
  return require("beat.executor.slurm").new(opts)
end

return M
