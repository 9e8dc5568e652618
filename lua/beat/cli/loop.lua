--- `beat loop`: the Backbeat-compatible command line, a built-in recipe
--- over the retry and optimize strategies.
local M = {}

local USAGE = [=[beat loop PROMPT (--until CMD | --eval CMD [--direction minimize|maximize]) [options] [--detach]
       beat loop [PROMPT] --pipeline --step PROMPT... (--until CMD | --eval CMD) [options]
       beat loop list|status|pause|resume|cancel|attach ...]=]

local HELP = [[
Runs an agent in a loop on the work tree (the current directory, or -w DIR).

  --until CMD              retry: stop when CMD exits 0 (e.g. "npm test")
  --eval CMD               optimize: score each iteration with CMD; by default the
                           number on its last line (see --metric)
  --direction D            minimize (default) or maximize; also --minimize, --maximize
  --strategy S             retry or optimize (default: from --until / --eval)
  -a, --agent NAME         claude (default), codex, gemini, aider, or any command
                           line (split into words like a shell would, run without
                           one): the prompt is its last argument, or goes where
                           {prompt} stands, e.g. -a "my-agent --task {prompt}";
                           a known name with arguments ("claude --effort low")
                           is that CLI with extra arguments
  -m, --model M            model for the agent
  --agent-arg ARG          an argument for the agent's CLI (repeatable)
  --permission-mode MODE   the agent's permission mode (claude: acceptEdits,
                           bypassPermissions, ...; codex: its --sandbox;
                           gemini: its --approval-mode)
  --allowed-tools LIST     tools the agent may use unasked ("Bash", "Bash(make *)")
  --disallowed-tools LIST  tools it may not use
  --system-prompt TEXT     standing instructions added to the agent's own
  --eval-mode agent        a second agent, in a fresh session, reviews each
                           iteration (the diff, and the output of --until /
                           --eval CMD if given) and returns a verdict: pass/fail
                           (retry) or a score (optimize, higher is better
                           unless --direction minimize)
  --eval-prompt TEXT       what the judge judges (default: is the task done /
                           how well is it done, 0-100)
  --judge-agent NAME       the judge's agent, as -a takes it (default: the same
                           as -a, with the same flags)
  --pipeline --step P      each iteration runs the --step prompts in order, each
                           a fresh agent session (repeat --step), then the check
                           or eval once; PROMPT is then optional context
  --max-iterations N       default 10; 0: no limit (a duration, cost, patience or
                           failure bound, Ctrl-C or 'beat loop cancel' ends the run)
  --max-failures N         consecutive failures before giving up, default 3
  --cooldown DUR           pause between iterations
  --eval-timeout DUR       timeout of the check / eval command (default 60s;
                           0 = none)
  --agent-timeout DUR      timeout of one agent run
  --continue-context       resume the agent's previous session between iterations
                           (also --checkpoint)
  --runs N                 optimize: run the eval N times per iteration (median,
                           significance-tested comparison)
  --guard CMD              optimize: must exit 0 before the eval counts (repeatable)
  --candidates N           with --eval: each round, N agents at once, each in its
                           own worktree (the parallel strategy); the best that
                           beats the best is kept; at most 256
  --slurm                  with --candidates: run the guards and evals as Slurm
                           jobs (srun; agents stay here); the work tree must be on
                           a filesystem the nodes share
  --slurm-arg ARG          an srun argument for those jobs, as is (repeatable),
                           e.g. --slurm-arg=--partition=gpu --slurm-arg=--gres=gpu:1
  --metric NAME            optimize: score from "NAME: value" / "NAME=value" lines
  --min-delta X            optimize: smaller changes are noise (absolute)
  --min-rel-delta X        optimize: smaller changes are noise (fraction, 0.01 = 1%)
  --target X               optimize: stop once the score reaches X
  --patience N             optimize: stop after N iterations without improvement
  --max-cost USD           never start an iteration expected (the mean cost so
                           far) to take the cost past USD; an agent that
                           reports no cost needs --cost-per-iteration
  --cost-per-iteration USD what an iteration costs when the agent reports none
                           (and the estimate before the first one)
  --max-duration DUR       stop after DUR
  --max-file-size SIZE     a file the agent makes larger than SIZE (default 1G;
                           500M, 2G, or bytes) is not snapshotted: the iteration
                           is rejected and the file moved into the run's directory
  --reset-on-failure       retry: start each attempt from the original tree
  --keep-last              retry: when the run fails, leave the last attempt in the
                           work tree (default: back to the original tree; the last
                           attempt is kept as snapshot 'last')
  --commit-to BRANCH       commit the best result to BRANCH, creating it from HEAD
                           (the work tree keeps it as an uncommitted diff either
                           way); --git-branch BRANCH is the same
  --protect GLOB           the agent may not change files matching GLOB: an
                           iteration that does is rejected (tampered) and undone
                           (repeatable)
  --no-default-protect     do not protect what the check / eval / guards run
                           (their scripts; test directories of a test runner)
  -w, --working-directory DIR
  --no-git                 run without snapshots: UNSAFE, nothing can be undone
  -q, --quiet              no per-iteration lines: only the summary (with the run
                           id, the undo command and the journal)
  --plain                  one plain line per event, no status line, no colour
  --json                   stdout is JSON only: one event per line (docs/json.md)
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

Output: on a terminal, log lines scroll above one status line redrawn in place
(iteration, phase and its time, best vs baseline, last decision, cost, elapsed);
colour unless NO_COLOR is set. In a pipe or with --plain, plain lines.

Durations: 500ms, 30s, 5m, 1h30m, or bare milliseconds (1500 = 1.5s);
--agent-timeout and --max-duration must be longer than 0 (--eval-timeout 0:
none). Every value is checked before anything is written.
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
  ["--eval-timeout"] = { "eval_timeout", "duration" },   -- 0: none
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
  ["--max-file-size"] = { "max_file_size", "size" },
  ["-w"] = { "cwd", "string" }, ["--working-directory"] = { "cwd", "string" },
  ["--no-git"] = { "no_git", "bool" }, ["-q"] = { "quiet", "bool" }, ["--quiet"] = { "quiet", "bool" },
  ["--json"] = { "json", "bool" }, ["--plain"] = { "plain", "bool" },
  ["--detach"] = { "detach", "bool" },
  -- internal: the run id reserved by --detach, and "this process is the detached run"
  ["--run-id"] = { "run_id", "string" }, ["--detached-run"] = { "detached_run", "bool" },
  ["--candidates"] = { "candidates", "int" }, ["--slurm"] = { "slurm", "bool" },
  ["--slurm-arg"] = { "slurm_arg", "list" },
}
for k, v in pairs(require("beat.cli.loop_flags").FLAGS) do FLAGS[k] = v end

--- Parses the arguments of `beat loop`; raises a usage error (cli.usage_error).
---@param cli table
---@param args string[]
---@return table parsed
function M.parse(cli, args)
  local duration = require "beat.duration"
  local p = { guard = {}, slurm_arg = {} }
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
        elseif kind == "size" then
          local n, why = require("beat.size").parse(v)
          if not n then cli.usage_error("loop: %s %s", flag, why) end
          v = n
        end
        if kind == "list" then p[key] = p[key] or {}; table.insert(p[key], v) else p[key] = v end
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
  if p.json and p.plain then cli.usage_error("loop: give --json or --plain, not both") end
  if p.direction and p.direction ~= "minimize" and p.direction ~= "maximize" then
    cli.usage_error("loop: --direction must be minimize or maximize, got '%s'", p.direction)
  end
  -- the strategy, pipelines, judges, --git-branch; the strategy-only flags
  require("beat.cli.loop_flags").validate(cli, p, USAGE)
  if p.candidates and not p.eval then cli.usage_error("loop: --candidates needs --eval") end
  if p.candidates and p.candidates > 256 then
    cli.usage_error("loop: --candidates must be at most 256, got '%d'", p.candidates)
  end
  if p.candidates and p.continue_context then
    cli.usage_error("loop: --continue-context does not apply to --candidates (separate sessions)")
  end
  if p.slurm and not p.candidates then
    cli.usage_error("loop: --slurm needs --candidates N (--candidates 1 runs one candidate at a time)")
  end
  if #p.slurm_arg > 0 and not p.slurm then cli.usage_error("loop: --slurm-arg needs --slurm") end
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
  local opts = {
    cwd = p.cwd, git = not p.no_git,
    max_iterations = p.max_iterations, max_consecutive_failures = p.max_consecutive_failures,
    cooldown = p.cooldown, agent_timeout = p.agent_timeout, continue_context = p.continue_context,
    max_cost_usd = p.max_cost_usd, max_duration = p.max_duration, commit_to = p.commit_to,
    quiet = p.quiet, max_file_size = p.max_file_size,
  }
  -- agent, prompt, check/eval (or a judge) and their timeout, protect, budgets
  require("beat.cli.loop_flags").complete(cli, p, opts)
  if p.strategy == "retry" then
    opts.reset_on_failure, opts.keep_last = p.reset_on_failure, p.keep_last
    return "retry", opts
  end
  opts.runs, opts.target, opts.patience = p.runs, p.target, p.patience
  opts.direction, opts.min_delta, opts.min_rel_delta = p.direction or "minimize", p.min_delta, p.min_rel_delta
  if #p.guard > 0 then opts.guard = p.guard end
  if p.metric then opts.score, opts.metric = require("beat.score").metric(p.metric), p.metric end
  if p.candidates then
    opts.candidates = p.candidates
    if p.slurm then opts.eval_executor = beat.slurm { extra = #p.slurm_arg > 0 and p.slurm_arg or nil } end
    return "parallel", opts
  end
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
--- the strategy's run continues the dead one (beat.loop.session's pending). Returns
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
  loop.session { origin = origin, pending = { resume = st.id, strategy = start.strategy, dir = st.dir } }
  local code
  if origin.kind == "loop" then
    local p = M.parse(cli, origin.args or {})
    local strategy, opts = M.options(cli, p)
    code = beat.strategy(strategy)(opts)
  else
    local chunk, err = loadfile(origin.file)
    if not chunk then cli.usage_error("run %s: cannot load its recipe: %s", st.id, tostring(err)) end
    loop.session { overrides = origin.set or {} }
    local args = origin.args or {}
    _G.arg = { [0] = origin.file, table.unpack(args) }
    local dir = origin.file:match("^(.*)/[^/]*$") or "."
    package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
    code = chunk(table.unpack(args))
  end
  if loop.session().pending then
    loop.session { pending = false }
    io.stderr:write(("beat: the recipe of run %s did not start a %s loop in %s: nothing was resumed\n")
      :format(st.id, tostring(start.strategy), tostring(st.root)))
    return 1
  end
  return math.type(code) == "integer" and code or 0
end

local SUBCOMMANDS = { list = true, status = true, pause = true, resume = true, cancel = true, attach = true }

function M.register(cli)
  cli.command("loop", {
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
      loop.session { origin = { kind = "loop", args = origin_args(args), dir = beat.fs.cwd() },
        detached = p.detached_run == true, pending = p.run_id and { id = p.run_id } or false }
      if p.no_git then io.stderr:write("beat: --no-git: no snapshots; changes cannot be undone\n") end
      require("beat.ui").configure { mode = p.json and "json" or p.plain and "plain" or "auto",
        quiet = p.quiet or false }
      local code = cli.drive(function()
        return (beat.strategy(strategy)(opts))
      end)
      if p.run_id then require("beat.cli.control").close_reserved(p.run_id, code) end
      return code
    end,
  })
end

return M
