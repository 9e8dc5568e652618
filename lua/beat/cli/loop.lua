--- `beat loop`: the Backbeat-compatible command line, a built-in recipe
--- over the retry and optimize strategies.
local M = {}

local USAGE = [[beat loop PROMPT (--until CMD | --eval CMD [--direction minimize|maximize]) [options] [--detach]
       beat loop list|status|pause|resume|cancel|attach ...]]

local HELP = [[
Runs an agent in a loop on the work tree (the current directory, or -w DIR).

  --until CMD              retry: stop when CMD exits 0 (e.g. "npm test")
  --eval CMD               optimize: score each iteration with CMD; by default the
                           number on its last line (see --metric)
  --direction D            minimize (default) or maximize; also --minimize, --maximize
  -a, --agent NAME         claude (default), codex, gemini, aider, or any command
                           (the prompt is appended as its last argument)
  --model M                model for the agent
  --max-iterations N       default 10; 0: no limit (a duration, cost, patience or
                           failure bound, Ctrl-C or 'beat loop cancel' ends the run)
  --max-failures N         consecutive failures before giving up, default 3
  --cooldown DUR           pause between iterations
  --eval-timeout DUR       timeout of the check / eval command
  --agent-timeout DUR      timeout of one agent run
  --continue-context       resume the agent's previous session between iterations
                           (also --checkpoint)
  --runs N                 optimize: run the eval N times per iteration (median,
                           significance-tested comparison)
  --guard CMD              optimize: must exit 0 before the eval counts (repeatable)
  --metric NAME            optimize: score from "NAME: value" / "NAME=value" lines
  --min-delta X            optimize: smaller changes are noise (absolute)
  --min-rel-delta X        optimize: smaller changes are noise (fraction, 0.01 = 1%)
  --target X               optimize: stop once the score reaches X
  --patience N             optimize: stop after N iterations without improvement
  --max-cost USD           stop once the agent's reported cost reaches USD
  --max-duration DUR       stop after DUR
  --reset-on-failure       retry: start each attempt from the original tree
  --keep-last              retry: when the run fails, leave the last attempt in the
                           work tree (default: back to the original tree; the last
                           attempt is kept as snapshot 'last')
  --commit-to BRANCH       commit the best result to BRANCH (the work tree keeps it
                           as an uncommitted diff either way)
  -w, --working-directory DIR
  --no-git                 run without snapshots: UNSAFE, nothing can be undone
  -q, --quiet              no per-iteration lines
  --detach                 run in the background, in a session of its own: prints
                           the run id at once; output goes to .beat/runs/ID/output.log

Managing runs (ID: a run id, a unique prefix, or last; any directory):
  beat loop list [--status STATE] [--all] [--json] [--limit N] [-w DIR]
                           this work tree's runs (--all: every work tree's),
                           newest first; STATE: running, paused, completed,
                           passed, failed, stopped, cancelled, interrupted,
                           crashed, starting, missing
  beat loop status ID [--history] [--history-limit N] [--json]
                           state, iteration i/N, phase, best vs baseline, cost,
                           elapsed, the last decisions (--history: all of them)
  beat loop pause ID [--force] [--wait]
                           pause after the current iteration's decision; nothing
                           runs while paused (--force: end the iteration now, it
                           is run again on resume; --wait: until it is paused)
  beat loop resume ID [--detach|--foreground]
                           continue a paused run; or a crashed or interrupted one
                           from its journal — detached if it was, else in this
                           terminal (or as told)
  beat loop cancel ID [REASON] [--no-wait]
                           stop now: the work tree goes to the best snapshot and
                           the journal ends with 'cancelled' and REASON; waits
                           until the run has ended (--no-wait: does not)
  beat loop attach ID      follow a detached run's output (Ctrl-C detaches; the
                           run goes on); also 'beat logs ID [-f]'

Durations: 500ms, 30s, 5m, 1h30m, or bare milliseconds (1500 = 1.5s); timeouts
and --max-duration must be longer than 0. Every value is checked before anything
is written.
Exit status: 0 passed/completed (and --detach: started), 1 failed or cancelled,
2 usage error (a bad id, a request the run's state does not allow), 130 interrupted.
Every run is journaled in .beat/runs/<id>/; 'beat restore <id> base' undoes it.
Files that change while a check or eval runs (written by it, or by you) are saved
as snapshot pre-restore-N before beat puts the work tree back; the summary says so.]]

-- flag → {key, kind}; kinds: string, int, number, duration, bool, list
local FLAGS = {
  ["--until"] = { "until_cmd", "string" }, ["--eval"] = { "eval", "string" },
  ["--direction"] = { "direction", "string" }, ["--minimize"] = { "direction", "const", "minimize" },
  ["--maximize"] = { "direction", "const", "maximize" },
  ["-a"] = { "agent", "string" }, ["--agent"] = { "agent", "string" }, ["--model"] = { "model", "string" },
  ["--max-iterations"] = { "max_iterations", "int", zero = true }, ["--max-failures"] = { "max_consecutive_failures", "int" },
  ["--cooldown"] = { "cooldown", "duration" },
  ["--eval-timeout"] = { "eval_timeout", "duration", positive = true },
  ["--agent-timeout"] = { "agent_timeout", "duration", positive = true },
  ["--continue-context"] = { "continue_context", "bool" }, ["--checkpoint"] = { "continue_context", "bool" },
  ["--runs"] = { "runs", "int" },
  ["--guard"] = { "guard", "list" }, ["--metric"] = { "metric", "string" },
  ["--min-delta"] = { "min_delta", "number", min = 0 },
  ["--min-rel-delta"] = { "min_rel_delta", "number", min = 0, below = 1 },
  ["--target"] = { "target", "number" }, ["--patience"] = { "patience", "int" },
  ["--max-cost"] = { "max_cost_usd", "number", min = 0 },
  ["--max-duration"] = { "max_duration", "duration", positive = true },
  ["--reset-on-failure"] = { "reset_on_failure", "bool" }, ["--keep-last"] = { "keep_last", "bool" },
  ["--commit-to"] = { "commit_to", "string" },
  ["-w"] = { "cwd", "string" }, ["--working-directory"] = { "cwd", "string" },
  ["--no-git"] = { "no_git", "bool" }, ["-q"] = { "quiet", "bool" }, ["--quiet"] = { "quiet", "bool" },
  ["--detach"] = { "detach", "bool" },
  -- internal: the run id reserved by --detach, and "this process is the detached run"
  ["--run-id"] = { "run_id", "string" }, ["--detached-run"] = { "detached_run", "bool" },
}

--- Parses the arguments of `beat loop`; raises a usage error (cli.usage_error).
---@param cli table
---@param args string[]
---@return table parsed
function M.parse(cli, args)
  local duration = require "beat.duration"
  local p = { guard = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    flag = flag or a
    local spec = FLAGS[flag]
    if a == "--" then
      for j = i + 1, #args do
        if p.prompt then cli.usage_error("loop: unexpected argument '%s'", args[j]) end
        p.prompt = args[j]
      end
      break
    elseif spec then
      local key, kind = spec[1], spec[2]
      if kind == "bool" or kind == "const" then
        if inline then cli.usage_error("loop: %s takes no value", flag) end
        p[key] = kind == "const" and spec[3] or true
      else
        local v = inline
        if v == nil then
          i = i + 1
          v = args[i]
          if v == nil then cli.usage_error("loop: %s needs a value", flag) end
        end
        if v == "" or not v:match("%S") then
          cli.usage_error("loop: %s needs a value, got an empty string", flag)
        end
        if kind == "int" then
          local n = math.tointeger(tonumber(v))
          if spec.zero and n == 0 then
            v = 0
          elseif not n or n < 1 then
            cli.usage_error("loop: %s must be a positive integer%s, got '%s'", flag, spec.zero and " or 0 (no limit)" or "", v)
          end
          v = n
        elseif kind == "number" then
          local n = tonumber(v)
          if not n or n ~= n or n == math.huge or n == -math.huge then
            cli.usage_error("loop: %s must be a number, got '%s'", flag, v)
          end
          if spec.below and not (n >= spec.min and n < spec.below) then
            cli.usage_error("loop: %s must be a fraction >= %g and < %g (0.01 = 1%%), got '%s'", flag,
              spec.min, spec.below, v)
          elseif spec.min and n < spec.min then
            cli.usage_error("loop: %s must be >= %g, got '%s'", flag, spec.min, v)
          end
          v = n
        elseif kind == "duration" then
          local s, why = duration.parse(v, 0.001)
          if not s then cli.usage_error("loop: %s %s", flag, why) end
          if spec.positive and not (s > 0) then
            cli.usage_error("loop: %s must be longer than 0, got '%s'", flag, v)
          end
          v = s
        end
        if kind == "list" then table.insert(p[key], v) else p[key] = v end
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      cli.usage_error("loop: unknown option '%s' (see 'beat loop --help')", a)
    elseif p.prompt then
      cli.usage_error("loop: unexpected argument '%s' (quote the prompt)", a)
    else
      p.prompt = a
    end
    i = i + 1
  end
  if not p.prompt or not p.prompt:match("%S") then cli.usage_error("loop: missing PROMPT (usage: %s)", USAGE:match("^[^\n]*")) end
  if p.until_cmd and p.eval then cli.usage_error("loop: give --until or --eval, not both") end
  if not p.until_cmd and not p.eval then cli.usage_error("loop: give --until CMD (retry) or --eval CMD (optimize)") end
  if p.direction and p.direction ~= "minimize" and p.direction ~= "maximize" then
    cli.usage_error("loop: --direction must be minimize or maximize, got '%s'", p.direction)
  end
  if p.until_cmd then
    for _, k in ipairs { "direction", "runs", "metric", "target", "patience", "min_delta", "min_rel_delta" } do
      if p[k] ~= nil then cli.usage_error("loop: --%s needs --eval", (k:gsub("_", "-"))) end
    end
    if #p.guard > 0 then cli.usage_error("loop: --guard needs --eval") end
  else
    if p.reset_on_failure then cli.usage_error("loop: --reset-on-failure needs --until") end
    if p.keep_last then cli.usage_error("loop: --keep-last needs --until") end
  end
  if p.commit_to then
    local why = require("beat.loop").branch_error(p.commit_to)
    if why then cli.usage_error("loop: --commit-to %s", why) end
  end
  if p.metric then
    local ok, err = pcall(require("beat.score").metric, p.metric)
    if not ok then
      cli.usage_error("loop: --metric %s", (tostring(err):gsub("^.-opts%.name ", "")))
    end
  end
  return p
end

--- The strategy and its options for parsed `beat loop` arguments (raises
--- a usage error for an agent that does not exist).
---@param cli table
---@param p table from M.parse
---@return string strategy, table opts
function M.options(cli, p)
  local beat = require "beat"
  if p.cwd and not beat.fs.is_dir(p.cwd) then
    cli.usage_error("loop: working directory %s does not exist", p.cwd)
  end
  local ok, agent = pcall(beat.agent.named, p.agent or "claude", p.model and { model = p.model } or nil)
  if not ok then
    cli.usage_error("loop: --agent %s", (tostring(agent):gsub("^.-beat%.agent%.[%w_.]+: ", "")))
  end
  local opts = {
    agent = agent, prompt = p.prompt, cwd = p.cwd, git = not p.no_git,
    max_iterations = p.max_iterations, max_consecutive_failures = p.max_consecutive_failures,
    cooldown = p.cooldown, agent_timeout = p.agent_timeout, continue_context = p.continue_context,
    max_cost_usd = p.max_cost_usd, max_duration = p.max_duration, commit_to = p.commit_to,
    quiet = p.quiet,
  }
  if p.until_cmd then
    opts.check, opts.check_timeout, opts.reset_on_failure = p.until_cmd, p.eval_timeout, p.reset_on_failure
    opts.keep_last = p.keep_last
    return "retry", opts
  end
  opts.eval, opts.eval_timeout, opts.runs, opts.target, opts.patience =
    p.eval, p.eval_timeout, p.runs, p.target, p.patience
  opts.direction, opts.min_delta, opts.min_rel_delta = p.direction or "minimize", p.min_delta, p.min_rel_delta
  if #p.guard > 0 then opts.guard = p.guard end
  if p.metric then opts.score, opts.metric = require("beat.score").metric(p.metric), p.metric end
  return "optimize", opts
end

-- The arguments that say how to start the same loop again (for resume):
-- without the flags about this one process.
local function origin_args(args)
  local out, skip = {}, false
  for _, a in ipairs(args) do
    if skip then
      skip = false
    elseif a == "--run-id" then
      skip = true
    elseif not (a == "--detach" or a == "--detached-run" or a:match("^%-%-run%-id=")) then
      out[#out + 1] = a
    end
  end
  return out
end

--- Runs a dead run again in this process, from its journal's run_start
--- (`st` from beat.runs.status, `start` the run_start record): `beat loop`
--- arguments parsed again, or the recipe run again with its arguments;
--- the strategy's run continues the dead one (beat.loop.pending). Returns
--- the exit status. Called inside a task by beat.runs.control.resume.
---@param st beat.RunStatus
---@param start table
---@return integer status
function M.resume_here(st, start)
  local cli = require "beat.cli"
  local beat = require "beat"
  local loop = require "beat.loop"
  local origin = start.origin
  if origin.dir and not beat.fs.chdir(origin.dir) then
    cli.usage_error("run %s was started in %s, which is gone: it cannot be resumed", st.id, origin.dir)
  end
  loop.origin = origin
  loop.pending = { resume = st.id, strategy = start.strategy, dir = st.dir }
  local code
  if origin.kind == "loop" then
    local p = M.parse(cli, origin.args or {})
    local strategy, opts = M.options(cli, p)
    code = beat.strategy(strategy)(opts)
  else
    local chunk, err = loadfile(origin.file)
    if not chunk then cli.usage_error("run %s: cannot load its recipe: %s", st.id, tostring(err)) end
    loop.overrides = origin.set or {}
    local args = origin.args or {}
    _G.arg = { [0] = origin.file, table.unpack(args) }
    local dir = origin.file:match("^(.*)/[^/]*$") or "."
    package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
    code = chunk(table.unpack(args))
  end
  if loop.pending then
    loop.pending = nil
    io.stderr:write(("beat: the recipe of run %s did not start a %s loop in %s: nothing was resumed\n")
      :format(st.id, tostring(start.strategy), tostring(st.root)))
    return 1
  end
  return math.type(code) == "integer" and code or 0
end

local SUBCOMMANDS = { list = true, status = true, pause = true, resume = true, cancel = true, attach = true }

function M.register(cli)
  cli.command("loop", {
    summary = "run an agent until a check passes or a score stops improving; manage runs",
    usage = USAGE,
    help = HELP,
    run = function(args)
      if SUBCOMMANDS[args[1]] then
        local sub = table.remove(args, 1)
        return require("beat.cli.control").run(cli, sub, args)
      end
      local p = M.parse(cli, args)
      local beat = require "beat"
      local loop = require "beat.loop"
      if p.detach then
        if p.run_id or p.detached_run then cli.usage_error("loop: --detach cannot be combined with --run-id") end
        return cli.drive(function()
          local id, info, code = require("beat.runs.control").start_detached { args = args }
          if not id then
            if code == 2 then cli.usage_error("loop: %s", info) end
            io.stderr:write("beat: loop: ", tostring(info), "\n")
            return 1
          end
          print(id)
          io.stderr:write(("beat: run %s started in the background (pid %d); follow it: beat loop attach %s; status: beat loop status %s\n")
            :format(id, info.pid, id, id))
          return 0
        end)
      end
      local ok, strategy, opts = pcall(M.options, cli, p)
      if not ok then
        if p.run_id then require("beat.cli.control").close_reserved(p.run_id, 2) end
        error(strategy, 0)
      end
      loop.origin = { kind = "loop", args = origin_args(args), dir = beat.fs.cwd() }
      loop.detached = p.detached_run == true
      if p.run_id then loop.pending = { id = p.run_id } end
      if p.no_git then io.stderr:write("beat: --no-git: no snapshots; changes cannot be undone\n") end
      local code = cli.drive(function()
        return (beat.strategy(strategy)(opts))
      end)
      if p.run_id then require("beat.cli.control").close_reserved(p.run_id, code) end
      return code
    end,
  })
end

return M
