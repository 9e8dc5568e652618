--- `beat loop`: the Backbeat-compatible command line, a built-in recipe
--- over the retry and optimize strategies.
local M = {}

local USAGE = "beat loop PROMPT (--until CMD | --eval CMD [--direction minimize|maximize]) [options]"

local HELP = [[
Runs an agent in a loop on the work tree (the current directory, or -w DIR).

  --until CMD              retry: stop when CMD exits 0 (e.g. "npm test")
  --eval CMD               optimize: score each iteration with CMD; by default the
                           number on its last line (see --metric)
  --direction D            minimize (default) or maximize; also --minimize, --maximize
  -a, --agent NAME         claude (default), codex, gemini, aider, or any command
                           line (split at spaces, run without a shell): the prompt
                           is its last argument, or goes where {prompt} stands,
                           e.g. -a "my-agent --task {prompt} --fast"
  --model M                model for the agent
  --max-iterations N       default 10
  --max-failures N         consecutive failures before giving up, default 3
  --cooldown DUR           pause between iterations
  --eval-timeout DUR       timeout of the check / eval command
  --agent-timeout DUR      timeout of one agent run
  --continue-context       resume the agent's previous session between iterations
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
  --max-cost USD           stop once the agent's reported cost reaches USD
  --max-duration DUR       stop after DUR
  --max-file-size SIZE     a file the agent makes larger than SIZE (default 1G;
                           500M, 2G, or bytes) is not snapshotted: the iteration
                           is rejected and the file moved into the run's directory
  --reset-on-failure       retry: start each attempt from the original tree
  --keep-last              retry: when the run fails, leave the last attempt in the
                           work tree (default: back to the original tree; the last
                           attempt is kept as snapshot 'last')
  --commit-to BRANCH       commit the best result to BRANCH (the work tree keeps it
                           as an uncommitted diff either way)
  -w, --working-directory DIR
  --no-git                 run without snapshots: UNSAFE, nothing can be undone
  -q, --quiet              no per-iteration lines: only the summary (with the run
                           id, the undo command and the journal)
  --plain                  one plain line per event, no status line, no colour
  --json                   stdout is JSON only: one event per line (docs/json.md)

Output: on a terminal, log lines scroll above one status line redrawn in place
(iteration, phase and its time, best vs baseline, last decision, cost, elapsed);
colour unless NO_COLOR is set. In a pipe or with --plain, plain lines.

Durations: 500ms, 30s, 5m, 1h30m, or bare milliseconds (1500 = 1.5s); timeouts
and --max-duration must be longer than 0. Every value is checked before anything
is written.
Exit status: 0 passed/completed, 1 failed, 2 usage error, 130 interrupted.
Every run is journaled in .beat/runs/<id>/; 'beat restore <id> base' undoes it.
Files that change while a check or eval runs (written by it, or by you) are saved
as snapshot pre-restore-N before beat puts the work tree back; the summary says so.]]

-- flag → {key, kind}; kinds: string, int, number, duration, bool, list
local FLAGS = {
  ["--until"] = { "until_cmd", "string" }, ["--eval"] = { "eval", "string" },
  ["--direction"] = { "direction", "string" }, ["--minimize"] = { "direction", "const", "minimize" },
  ["--maximize"] = { "direction", "const", "maximize" },
  ["-a"] = { "agent", "string" }, ["--agent"] = { "agent", "string" }, ["--model"] = { "model", "string" },
  ["--max-iterations"] = { "max_iterations", "int" }, ["--max-failures"] = { "max_consecutive_failures", "int" },
  ["--cooldown"] = { "cooldown", "duration" },
  ["--eval-timeout"] = { "eval_timeout", "duration", positive = true },
  ["--agent-timeout"] = { "agent_timeout", "duration", positive = true },
  ["--continue-context"] = { "continue_context", "bool" }, ["--runs"] = { "runs", "int" },
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
  ["--candidates"] = { "candidates", "int" }, ["--slurm"] = { "slurm", "bool" },
  ["--slurm-arg"] = { "slurm_arg", "list" },
}

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
          if not n or n < 1 then cli.usage_error("loop: %s must be a positive integer, got '%s'", flag, v) end
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
  if not p.prompt or not p.prompt:match("%S") then cli.usage_error("loop: missing PROMPT (usage: %s)", USAGE) end
  if p.json and p.plain then cli.usage_error("loop: give --json or --plain, not both") end
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

function M.register(cli)
  cli.command("loop", {
    summary = "run an agent until a check passes or a score stops improving",
    usage = USAGE,
    help = HELP,
    run = function(args)
      local p = M.parse(cli, args)
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
        quiet = p.quiet, max_file_size = p.max_file_size,
      }
      if p.no_git then io.stderr:write("beat: --no-git: no snapshots; changes cannot be undone\n") end
      require("beat.ui").configure { mode = p.json and "json" or p.plain and "plain" or "auto",
        quiet = p.quiet or false }
      return cli.drive(function()
        if p.until_cmd then
          opts.check, opts.check_timeout, opts.reset_on_failure = p.until_cmd, p.eval_timeout, p.reset_on_failure
          opts.keep_last = p.keep_last
          return (beat.strategy("retry")(opts))
        end
        opts.eval, opts.eval_timeout, opts.runs, opts.target, opts.patience =
          p.eval, p.eval_timeout, p.runs, p.target, p.patience
        opts.direction, opts.min_delta, opts.min_rel_delta = p.direction or "minimize", p.min_delta, p.min_rel_delta
        if #p.guard > 0 then opts.guard = p.guard end
        if p.metric then opts.score, opts.metric = beat.score.metric(p.metric), p.metric end
        if p.candidates then
          opts.candidates = p.candidates
          if p.slurm then opts.eval_executor = beat.slurm { extra = #p.slurm_arg > 0 and p.slurm_arg or nil } end
          return (beat.strategy("parallel")(opts))
        end
        return (beat.strategy("optimize")(opts))
      end)
    end,
  })
end

return M
