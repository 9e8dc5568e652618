--- beat.agent: whatever proposes the next change.
---
--- Constructors: `claude`, `codex`, `gemini`, `aider` (headless coding CLIs),
--- `command` (any program), `fn` (a Lua function), `tune` (an offline proposer
--- that edits numeric or enumerated parameters in files), `pipeline` (several
--- runs of an agent per iteration). Each returns an agent
--- whose `agent:run{prompt=..., ...}` runs it once and returns a normalised
--- result:
---
---   {ok, code, text, cost_usd, tokens = {input, output}, turns, duration,
---    rate_limited, retry_after, error, transcript, session_id, timed_out, signal}
---
--- Every CLI adapter runs through the same machinery, so all behave the same:
--- the child environment is scrubbed of variables that make Claude Code think
--- it is nested in another session, BEAT_ITERATION is added, every
--- output line is streamed to the transcript file (memory stays bounded), the
--- prompt never passes through a shell, and a timeout ends the agent and all
--- its children. Programmer mistakes (bad options) raise; failures of the world
--- (missing CLI, crash, timeout, rate limit) come back as ok=false with `error`.
---
--- This file: the agent object and M.define, which makes an adapter's
--- constructor from its spec; the constructors. Beside it: run.lua (agent:run,
--- the machinery every CLI adapter shares), env.lua (the child's environment),
--- helpers.lua (what adapters share), describe.lua (agent:describe, :version),
--- preflight.lua (agent:credentials, :reports_cost, :can_run_commands),
--- named.lua (agents named on the command line), pipeline.lua (several runs
--- an iteration), list.lua (`beat agents`); one adapter a file.
---
--- Writing an adapter: see `M.define` and docs/api/agent.md.
local M = {}

local check = require "beat.check"
local env = require "beat.agent.env"
local helpers = require "beat.agent.helpers"
local named = require "beat.agent.named"

--------------------------------------------------------------------------------
-- Validation

--- Validates opts against schema {name = kind} with beat.check (kinds such as
--- "nonempty", "posint", "duration", "strings", "env", {enum = {...}}); raises with a
--- message naming the option. Unknown options raise unless `lenient`.
---@param where string "beat.agent.claude"
---@param opts table
---@param schema table<string, string|table>
---@param lenient? boolean
function M.validate(where, opts, schema, lenient)
  if opts == nil then check.fail(where, "opts", "a table", opts, 3) end
  check.options(where, opts, schema, { lenient = lenient, level = 3 })
end

--------------------------------------------------------------------------------
-- The agent object and the shared run machinery

---@class beat.AgentResult
---@field ok boolean the agent finished its work (exit 0, no reported error, not timed out)
---@field code integer|nil exit code (124 on timeout, 128+sig on signal death, 127 when it could not start)
---@field text string|nil the agent's final message
---@field cost_usd number|nil what this run cost, when the CLI reports it (or opts.price allows computing it)
---@field tokens {input: integer, output: integer}|nil
---@field turns integer|nil model turns
---@field duration number seconds
---@field rate_limited boolean a rate limit or usage cap stopped it; wait and retry rather than count a failure
---@field retry_after number|nil seconds to wait, when known
---@field error string|nil why ok is false, one line
---@field transcript string|nil path of the transcript file
---@field session_id string|nil the CLI's session id (for continue_context)
---@field timed_out boolean
---@field signal integer|nil
---@field infra_error string|nil the executor's machinery failed, not the agent (see beat.executor): not the agent's failure

---@class beat.AgentRunOpts
---@field prompt string the task
---@field cwd? string working directory (default: beat's)
---@field timeout? number|string ends the agent and its children after this long
---@field grace? number|string SIGTERM→SIGKILL delay (default 5s)
---@field env? table<string, string|false> added to the child's environment
---@field iteration? integer sets BEAT_ITERATION
---@field transcript? string file receiving every output line (stderr lines prefixed "[stderr] ")
---@field on_event? fun(ev: table) called with each parsed event; must not block
---@field continue_context? boolean resume the previous session (or prepend its summary)
---@field history? beat.HistoryEntry[] the scored history, for tune and fn agents
---@field executor? beat.Executor where the agent's command runs (default: here, beat.exec); fn agents run in beat

---@class beat.HistoryEntry one earlier iteration, as a strategy records it in run.history
---@field iteration integer
---@field status? string "keep", "discard", "crash", ...
---@field score? any the iteration's score: a number, a table of metrics or a measurement
---@field value? number the score as one number (the objective's scalar), when score is not one
---@field ok? boolean false: the iteration failed (no score)
---@field kept? boolean whether the strategy kept the change
---@field proposal? table the agent result's `proposal` (tune: the values it set, by parameter)
---@field params? table the same as proposal, for histories written by hand

---@class beat.Agent
---@field name string
---@field opts table the validated constructor options
local Agent = {}
Agent.__index = Agent

for _, methods in ipairs { require "beat.agent.run", require "beat.agent.describe", env.methods,
                           (require "beat.agent.preflight") } do
  for name, fn in pairs(methods) do Agent[name] = fn end
end

--- Options every CLI adapter accepts besides its own. `args` are appended to
--- the command line; `extra_args` is its older name, still accepted.
M.common_schema = {
  bin = "nonempty", args = "strings", extra_args = "strings", env = "env", keep_env = "strings",
  timeout = "duration", grace = "duration", continue_context = "boolean",
  price = "table", summarize = "function",
}

--- The longest system_prompt an adapter takes (bytes). Claude and Codex get it
--- as one argument, and Linux refuses a single argument over 128 KiB.
M.MAX_SYSTEM_PROMPT = 100 * 1000

--- Defines an adapter. spec fields:
---   name        string, used in messages ("beat.agent.<name>")
---   bin         default executable (nil for in-process agents)
---   schema      the adapter's own options {name = kind}; common options are added
---   aliases     {old = new}: two names for one option (giving both raises)
---   resume      true when the CLI resumes a session by id (continue_context)
---   jsonl       true to decode each stdout line as JSON and call `event`
---   init(opts)  optional: checks or fills options after validation
---   command(agent, req) → {argv, stdin?, env?, files?}; req = {prompt, cwd, iteration, resume?}
---               files: temp files or directories removed after the run
---   start(agent, req) → state table for one run
---   event(agent, state, ev, line)  for each stdout line that is a JSON object (jsonl adapters)
---   line(agent, state, line, stream) for each other line ("stdout"|"stderr")
---   finish(agent, state, exec_result) → fields of the result
---     {ok?, text?, cost_usd?, tokens?, turns?, rate_limited?, retry_after?, error?, session_id?}
---   run(agent, opts) → result: replaces the process machinery entirely (fn, tune)
---   auth(agent, ctx) → source|nil, hint: where the CLI finds its credentials
---               (ctx = {env = the child's environment, home = its HOME}); never calls a model
---   can_run_commands(agent, opts) → true|false|nil, reason (see Agent:can_run_commands)
---   reports_cost  true|false, or function(agent) → true|false|nil (see Agent:reports_cost)
--- Returns a constructor `function(opts) → agent`.
---@param spec table
---@return fun(opts: table): beat.Agent
function M.define(spec)
  assert(type(spec) == "table" and type(spec.name) == "string", "beat.agent.define: spec.name required")
  local schema = {}
  if not spec.no_common then
    for k, v in pairs(M.common_schema) do schema[k] = v end
  end
  for k, v in pairs(spec.schema or {}) do schema[k] = v end
  local where = "beat.agent." .. spec.name
  local aliases = { extra_args = "args" }
  for k, v in pairs(spec.aliases or {}) do aliases[k] = v end
  return function(opts)
    opts = opts or {}
    M.validate(where, opts, schema)
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    for old, new in pairs(aliases) do
      if schema[old] and copy[old] ~= nil then
        if copy[new] ~= nil then
          check.error(where, ("give opts.%s or opts.%s (its older name), not both"):format(new, old), 3)
        end
        copy[new], copy[old] = copy[old], nil
      end
    end
    if copy.system_prompt ~= nil and #copy.system_prompt > M.MAX_SYSTEM_PROMPT then
      check.error(where, ("opts.system_prompt is %d bytes, more than the %d allowed")
        :format(#copy.system_prompt, M.MAX_SYSTEM_PROMPT), 3)
    end
    if spec.init then spec.init(copy, where) end
    return setmetatable({ name = spec.name, opts = copy, spec = spec }, Agent)
  end
end

M.Agent = Agent

--------------------------------------------------------------------------------
-- Constructors (each adapter loads on first use)

---@class beat.agent.CommonOpts
---@field bin? string the executable (default: the CLI's name, found on PATH)
---@field args? string[] appended to the CLI's command line
---@field extra_args? string[] older name of `args`
---@field env? table<string, string|false>
---@field keep_env? string[]
---@field timeout? number|string
---@field grace? number|string
---@field continue_context? boolean
---@field price? {input: number, output: number} USD per million tokens, when the CLI reports no cost
---@field summarize? fun(last: table): string

---@class beat.agent.ClaudeOpts: beat.agent.CommonOpts
---@field model? string `--model`
---@field max_turns? integer `--max-turns`
---@field permission_mode? "acceptEdits"|"bypassPermissions"|"auto"|"dontAsk"|"plan"|"manual"|"default" `--permission-mode` (default acceptEdits)
---@field allowed_tools? string[] `--allowedTools` rules: "Bash", "Bash(make *)", "Edit", ...
---@field disallowed_tools? string[] `--disallowedTools` rules
---@field system_prompt? string appended to Claude Code's system prompt (`--append-system-prompt`)
---@field append_system_prompt? string older name of `system_prompt`

---@class beat.agent.CodexOpts: beat.agent.CommonOpts
---@field model? string `--model`
---@field permission_mode? "read-only"|"workspace-write"|"danger-full-access" `--sandbox` (default workspace-write)
---@field sandbox? "read-only"|"workspace-write"|"danger-full-access" the same as permission_mode
---@field system_prompt? string developer instructions (`-c developer_instructions="..."`)

---@class beat.agent.GeminiOpts: beat.agent.CommonOpts
---@field model? string `--model`
---@field permission_mode? "yolo"|"auto_edit"|"default"|"plan" `--approval-mode` (default yolo)
---@field approval_mode? "yolo"|"auto_edit"|"default"|"plan" the same as permission_mode
---@field allowed_tools? string[] Gemini tool names allowed without asking (a policy file given with `--policy`)
---@field disallowed_tools? string[] Gemini tool names denied (the same policy file)
---@field system_prompt? string instructions given as a GEMINI.md context file (`--include-directories`)

---@class beat.agent.AiderOpts: beat.agent.CommonOpts
---@field model? string `--model`
---@field files? string[] files added to the chat
---@field system_prompt? string instructions in a read-only file (`--read`)

---@class beat.agent.CommandOpts
---@field argv string[] the program and its arguments; "{prompt}" / "{prompt_file}" are replaced
---@field prompt_via? "arg"|"stdin"|"file"
---@field jsonl? boolean read a {"type":"result",...} line for cost and tokens
---@field args? string[] appended to argv
---@field env? table<string, string|false>
---@field timeout? number|string

--- Claude Code: `claude -p --output-format stream-json --verbose --permission-mode <mode> ...`,
--- prompt on stdin.
---@param opts? beat.agent.ClaudeOpts
---@return beat.Agent
function M.claude(opts) return require("beat.agent.claude").new(opts) end

--- OpenAI Codex: `codex exec --json --sandbox <mode> --skip-git-repo-check [--model M] -`,
--- prompt on stdin.
---@param opts? beat.agent.CodexOpts
---@return beat.Agent
function M.codex(opts) return require("beat.agent.codex").new(opts) end

--- Gemini CLI: `gemini --output-format stream-json --approval-mode <mode> --skip-trust [--model M]`,
--- prompt on stdin.
---@param opts? beat.agent.GeminiOpts
---@return beat.Agent
function M.gemini(opts) return require("beat.agent.gemini").new(opts) end

--- aider: `aider --message-file F --yes-always --no-auto-commits --no-stream --no-pretty ...`.
---@param opts? beat.agent.AiderOpts
---@return beat.Agent
function M.aider(opts) return require("beat.agent.aider").new(opts) end

--- Any program: `command{argv = {"my-agent", "{prompt}"}}`, or with prompt_via = "stdin"|"file".
---@param opts beat.agent.CommandOpts
---@return beat.Agent
function M.command(opts) return require("beat.agent.command").new(opts) end

--- A Lua proposer: `fn(function(ctx) ... end)`.
---@param f function|table
---@return beat.Agent
function M.fn(f) return require("beat.agent.fn").new(f) end

--- Several agent runs per iteration, in order: `pipeline{agent = claude{}, steps = {"...", "..."}}`
--- (each step a fresh session; see beat.agent.pipeline).
---@param opts {agent: table, steps: string[], timeout?: number|string}
---@return beat.Agent
function M.pipeline(opts) return require("beat.agent.pipeline").new(opts) end

--- The offline proposer: edits numeric or enumerated parameters in files.
---@param opts table
---@return beat.Agent
function M.tune(opts) return require("beat.agent.tune").new(opts) end

--------------------------------------------------------------------------------
-- The shared pieces, under the names adapters and users know them by

M.default_keep_env, M.is_nested_marker, M.child_env = env.default_keep_env, env.is_nested_marker, env.child_env
M.decode_line, M.num, M.str, M.tail, M.retry_after_from = helpers.decode_line, helpers.num, helpers.str,
  helpers.tail, helpers.retry_after_from
M.user_args, M.remove_files, M.temp_file = helpers.user_args, helpers.remove_files, helpers.temp_file
M.ADAPTER_NAMES, M.split_words, M.split_list = named.ADAPTER_NAMES, named.split_words, named.split_list
M.parse_spec, M.named = named.parse_spec, named.named

--- Rows for `beat agents`: see beat.agent.list.
---@return table[]
function M.list() return require("beat.agent.list").list() end

return M