--- The flags of `beat loop` for real agents and Backbeat's loop options:
--- the strategy (explicit or inferred), agent pass-through flags, an agent as
--- the evaluator (--eval-mode agent), pipelines, protected paths, budgets and
--- --git-branch. cli/loop.lua parses the command line with these flags added
--- to its own, then calls `validate` (usage errors, exit 2, nothing written)
--- and `complete` (builds the agents and the check or eval).
local M = {}

-- flag → {key, kind, ...} as in cli/loop.lua's FLAGS
M.FLAGS = {
  ["-m"] = { "model", "string" },
  ["--strategy"] = { "strategy", "string" },
  ["--git-branch"] = { "git_branch", "string" },
  ["--agent-arg"] = { "agent_args", "list" },
  ["--permission-mode"] = { "permission_mode", "string" },
  ["--allowed-tools"] = { "allowed_tools", "string" },
  ["--disallowed-tools"] = { "disallowed_tools", "string" },
  ["--system-prompt"] = { "system_prompt", "string" },
  ["--eval-mode"] = { "eval_mode", "string" },
  ["--eval-prompt"] = { "eval_prompt", "string" },
  ["--judge-agent"] = { "judge_agent", "string" },
  ["--pipeline"] = { "pipeline", "bool" },
  ["--step"] = { "steps", "list" },
  ["--protect"] = { "protect", "list" },
  ["--no-default-protect"] = { "no_default_protect", "bool" },
  ["--cost-per-iteration"] = { "cost_per_iteration", "number", min = 0 },
  -- 0 = no timeout; the default (60 s) is set by complete()
  ["--eval-timeout"] = { "eval_timeout", "duration" },
}

--- The timeout of the check, eval and guards when --eval-timeout is not
--- given (Backbeat's default), in seconds.
M.DEFAULT_EVAL_TIMEOUT = 60

local OPTIMIZE_ONLY = { "direction", "runs", "metric", "target", "patience", "min_delta", "min_rel_delta" }

--- Checks the parsed flags together; raises usage errors. Returns the
--- strategy, "retry" or "optimize", and sets p.strategy and p.commit_to
--- (from --git-branch).
---@param cli table
---@param p table parsed flags
---@param usage string the usage line, for a missing PROMPT
---@return "retry"|"optimize"
function M.validate(cli, p, usage)
  local err = cli.usage_error
  if p.until_cmd and p.eval then err("loop: give --until or --eval, not both") end
  if p.strategy and p.strategy ~= "retry" and p.strategy ~= "optimize" then
    err("loop: --strategy must be retry or optimize, got '%s'", p.strategy)
  end
  local inferred = p.until_cmd and "retry" or p.eval and "optimize" or nil
  if p.strategy and inferred and p.strategy ~= inferred then
    err("loop: --strategy %s conflicts with %s, which means %s", p.strategy,
      p.until_cmd and "--until" or "--eval", inferred)
  end
  local mode = p.eval_mode or "command"
  if mode ~= "command" and mode ~= "shell" and mode ~= "agent" then
    err("loop: --eval-mode must be command or agent, got '%s'", mode)
  end
  local judged = mode == "agent"
  local strategy = p.strategy or inferred
  if judged then
    if not strategy then
      err("loop: --eval-mode agent needs --strategy retry|optimize (or --until CMD / --eval CMD, whose output the judge sees)")
    end
    if p.runs then err("loop: --runs needs a command eval, not --eval-mode agent") end
    if p.metric then err("loop: --metric needs a command eval, not --eval-mode agent") end
  else
    if p.eval_prompt then err("loop: --eval-prompt needs --eval-mode agent") end
    if p.judge_agent then err("loop: --judge-agent needs --eval-mode agent") end
    if not strategy then err("loop: give --until CMD (retry) or --eval CMD (optimize)") end
    if strategy == "retry" and not p.until_cmd then
      err("loop: --strategy retry needs --until CMD (or --eval-mode agent)")
    end
    if strategy == "optimize" and not p.eval then
      err("loop: --strategy optimize needs --eval CMD (or --eval-mode agent)")
    end
  end
  if p.steps and not p.pipeline then err("loop: --step needs --pipeline") end
  if p.pipeline and not p.steps then err("loop: --pipeline needs at least one --step PROMPT") end
  if p.pipeline and p.continue_context then
    err("loop: --continue-context does not go with --pipeline: each step is a fresh session")
  end
  if not p.pipeline and (not p.prompt or not p.prompt:match("%S")) then
    err("loop: missing PROMPT (usage: %s)", (usage:match("^[^\n]+")))
  end
  local needs_optimize = judged and "--strategy optimize" or "--eval"
  local needs_retry = judged and "--strategy retry" or "--until"
  if strategy == "retry" then
    for _, k in ipairs(OPTIMIZE_ONLY) do
      if p[k] ~= nil then err("loop: --%s needs %s", (k:gsub("_", "-")), needs_optimize) end
    end
    if #p.guard > 0 then err("loop: --guard needs %s", needs_optimize) end
  else
    if p.reset_on_failure then err("loop: --reset-on-failure needs %s", needs_retry) end
    if p.keep_last then err("loop: --keep-last needs %s", needs_retry) end
  end
  if p.git_branch then
    local why = require("beat.loop").branch_error(p.git_branch)
    if why then err("loop: --git-branch %s", why) end
    if p.commit_to and p.commit_to ~= p.git_branch then
      err("loop: --git-branch and --commit-to name the same branch (where the result is committed): give one")
    end
    p.commit_to = p.git_branch
  end
  if p.no_git and p.protect then err("loop: --protect needs git (beat finds changed files by comparing snapshots): drop --no-git") end
  p.strategy = strategy
  return strategy
end

-- An agent from a -a style value and pass-through options; a usage error names the flag.
local function named(cli, flag, name, opts)
  local ok, agent = pcall(require("beat.agent").named, name, opts)
  if not ok then
    local msg = type(agent) == "table" and agent.usage or tostring(agent)
    cli.usage_error("loop: %s %s", flag, (msg:gsub("^.-beat%.agent%.[%w_.]+: ", "")))
  end
  return agent
end

--- The pass-through options of the working agent, from the flags.
---@param p table
---@return table
function M.agent_options(p)
  return { args = p.agent_args, permission_mode = p.permission_mode, allowed_tools = p.allowed_tools,
           disallowed_tools = p.disallowed_tools, system_prompt = p.system_prompt, model = p.model }
end

-- The prompt of a pipeline run without PROMPT: the steps, as context.
local function pipeline_prompt(steps)
  local lines = { "Each iteration runs these steps in order:" }
  for i, s in ipairs(steps) do lines[#lines + 1] = ("%d. %s"):format(i, s) end
  return table.concat(lines, "\n")
end

--- Fills the strategy options from the flags: agent (a pipeline with
--- --pipeline), prompt, check or eval (a judge with --eval-mode agent) and
--- their timeout, protect, cost_per_iteration. Raises usage errors (an
--- agent the flags do not fit, --max-cost with an agent that reports no
--- cost); prints one warning line when the agent may not run the command
--- itself.
---@param cli table
---@param p table validated flags
---@param opts table strategy options to complete
function M.complete(cli, p, opts)
  local beat = require "beat"
  local pass = M.agent_options(p)
  local agent = named(cli, "--agent", p.agent or "claude", pass)
  local prompt = p.prompt
  if p.pipeline then
    agent = beat.agent.pipeline { agent = agent, steps = p.steps }
    if not prompt or not prompt:match("%S") then prompt = pipeline_prompt(p.steps) end
  end
  opts.agent, opts.prompt = agent, prompt
  local timeout = p.eval_timeout
  if timeout == nil then timeout = M.DEFAULT_EVAL_TIMEOUT elseif timeout == 0 then timeout = nil end
  local cmd = p.until_cmd or p.eval
  local check = cmd
  if p.eval_mode == "agent" then
    local judge_agent = p.judge_agent and named(cli, "--judge-agent", p.judge_agent, nil)
      or named(cli, "--agent", p.agent or "claude", pass)
    if p.strategy == "optimize" then p.direction = p.direction or "maximize" end
    check = beat.judge { agent = judge_agent, mode = p.strategy == "retry" and "pass" or "score",
      task = prompt, criteria = p.eval_prompt, command = cmd,
      direction = p.strategy == "optimize" and p.direction or nil }
  end
  if p.strategy == "retry" then
    opts.check, opts.check_timeout = check, timeout
  else
    opts.eval, opts.eval_timeout = check, timeout
  end
  opts.protect = p.protect
  opts.default_protect = not p.no_default_protect
  opts.cost_per_iteration = p.cost_per_iteration
  local why = require("beat.budget").check(opts)
  if why then cli.usage_error("loop: --max-cost: %s", why) end
  if cmd and type(agent.can_run_commands) == "function" then
    local ok, can, reason = pcall(agent.can_run_commands, agent, { command = cmd, cwd = p.cwd or beat.fs.cwd() })
    if ok and can == false then
      io.stderr:write(("beat: warning: the agent may not run `%s` itself: %s\n"):format(cmd, reason))
    end
  end
end

return M
