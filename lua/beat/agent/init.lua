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
--- Shared machinery lives here so every CLI adapter behaves the same: the
--- child environment is scrubbed of variables that make Claude Code think it is
--- nested in another session, BEAT_RUN_ID and BEAT_ITERATION are added, every
--- output line is streamed to the transcript file (memory stays bounded), the
--- prompt never passes through a shell, and a timeout ends the agent and all
--- its children. Programmer mistakes (bad options) raise; failures of the world
--- (missing CLI, crash, timeout, rate limit) come back as ok=false with `error`.
---
--- Writing an adapter: see `M.define` and docs/api/agent.md.
local M = {}

local check = require "beat.check"
local cjson = require "cjson"

local MAX_LINE = 8 * 1024 * 1024     -- a longer output line is cut (see beat.exec)
local MAX_TEXT = 256 * 1024          -- the final message kept in the result
local STDERR_TAIL = 40               -- stderr lines kept for error messages

-- Claude Code variables kept by default: provider and auth configuration a user
-- sets in their shell on purpose. Everything else named CLAUDECODE or
-- CLAUDE_CODE_* is removed from the child's environment unless the adapter's
-- or the run's `env` sets it.
M.default_keep_env = {
  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY",
  "CLAUDE_CODE_SKIP_BEDROCK_AUTH", "CLAUDE_CODE_SKIP_VERTEX_AUTH",
  "CLAUDE_CODE_SKIP_FOUNDRY_AUTH", "CLAUDE_CODE_OAUTH_TOKEN",
}

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
-- Environment

-- The names of the variables beat itself was started with.
local function inherited_names()
  local names = {}
  for k in pairs(require("beat.exec").environ()) do names[#names + 1] = k end
  table.sort(names)
  return names
end

--- Whether a variable marks a nested Claude Code session (and so is scrubbed).
---@param name string
---@return boolean
function M.is_nested_marker(name)
  return name == "CLAUDECODE" or name:sub(1, 12) == "CLAUDE_CODE_"
end

--- The `env` table to give beat.exec for an agent run: the adapter's env, the
--- command's env and the run's env merged (later wins), CLAUDECODE and
--- CLAUDE_CODE_* from beat's own environment removed unless set there or kept,
--- BEAT_RUN_ID and BEAT_ITERATION added.
---@param layers table[] env tables, lowest priority first
---@param keep string[] names never scrubbed
---@param iteration integer|nil
---@return table<string, string|false>
function M.child_env(layers, keep, iteration)
  local env = {}
  for _, name in ipairs(inherited_names()) do
    if M.is_nested_marker(name) then env[name] = false end
  end
  for _, name in ipairs(keep or {}) do env[name] = nil end
  for i = 1, layers.n or #layers do
    for k, v in pairs(layers[i] or {}) do
      if v == false then env[k] = false else env[k] = tostring(v) end
    end
  end
  if iteration ~= nil and env.BEAT_ITERATION == nil then env.BEAT_ITERATION = tostring(iteration) end
  return env
end

--------------------------------------------------------------------------------
-- Small shared helpers for adapters

--- Decodes one line of JSON; returns the table or nil (never raises).
---@param line string
---@return table|nil
function M.decode_line(line)
  local first = line:find("%S")
  if not first or line:byte(first) ~= 123 then return nil end -- "{"
  local ok, v = pcall(cjson.decode, line)
  if ok and type(v) == "table" then return v end
  return nil
end

--- A JSON number field as a Lua number, or nil (cjson.null and strings are nil).
function M.num(v)
  if type(v) == "number" and v == v then return v end
  return nil
end

--- A JSON string field, or nil.
function M.str(v)
  if type(v) == "string" then return v end
  return nil
end

--- Keeps the last `max` bytes of text.
function M.tail(text, max)
  max = max or MAX_TEXT
  if text and #text > max then return text:sub(-max) end
  return text
end

--- Parses "try again in 5 minutes", "retry in 12.5s", "Please retry in 300ms"
--- style phrases from a CLI's structured error message into seconds.
---@param msg string|nil
---@return number|nil
function M.retry_after_from(msg)
  if type(msg) ~= "string" then return nil end
  local lower = msg:lower()
  local n, unit = lower:match("retry in ([%d.]+)%s*(%a*)")
  if not n then n, unit = lower:match("try again in ([%d.]+)%s*(%a*)") end
  if not n then n, unit = lower:match("retry after ([%d.]+)%s*(%a*)") end
  n = tonumber(n)
  if not n then return nil end
  local mult = ({ ms = 0.001, s = 1, sec = 1, secs = 1, second = 1, seconds = 1,
                  m = 60, min = 60, mins = 60, minute = 60, minutes = 60,
                  h = 3600, hr = 3600, hour = 3600, hours = 3600,
                  d = 86400, day = 86400, days = 86400 })[unit] or 1
  return n * mult
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

local RUN_SCHEMA = {
  prompt = "string", cwd = "string", timeout = "duration", grace = "duration", env = "env",
  iteration = "int", transcript = "string", on_event = "function",
  continue_context = "boolean", history = "table",
  executor = { "table", test = function(v) return type(v.exec) == "function" end,
    what = "an executor (beat.executor.here(), beat.slurm{...})" },
}

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

--- The arguments a user asked to append (opts.args, or its older name extra_args).
---@param o table validated adapter options
---@return string[]
function M.user_args(o)
  return o.args or o.extra_args or {}
end

-- Checks agent:run's options, blaming the caller of agent:run.
local function check_run_opts(where, opts, need_prompt)
  if opts == nil then check.fail(where, "opts", "a table", opts, 3) end
  check.options(where, opts, RUN_SCHEMA, { lenient = true, level = 3 })
  if need_prompt then check.value(where, "opts.prompt", opts.prompt, { "string", required = true }, 3) end
end

-- The text prepended to the prompt when continue_context is on and the CLI
-- cannot resume a session.
local function default_summary(last)
  local parts = { ("[Context: your previous attempt (iteration %s)]"):format(
    last.iteration ~= nil and tostring(last.iteration) or "?") }
  if last.prompt then
    local p = last.prompt
    if #p > 2000 then p = p:sub(1, 2000) .. " [...]" end
    parts[#parts + 1] = "You were asked:\n" .. p
  end
  if last.text and last.text ~= "" then
    local t = last.text
    if #t > 4000 then t = "[...] " .. t:sub(-4000) end
    parts[#parts + 1] = "Your final message was:\n" .. t
  end
  parts[#parts + 1] = "Outcome: " .. (last.ok and "finished" or ("failed: " .. tostring(last.error)))
  parts[#parts + 1] = "[End of context]"
  return table.concat(parts, "\n\n")
end

--- Works out the prompt and resume id for this run from continue_context.
function Agent:_context(req, continue)
  local last = self._last
  if not continue or not last then return end
  if self.spec.resume and last.session_id then
    req.resume = last.session_id
    req.resume_cost = last.session_cost_usd
  else
    local summarize = self.opts.summarize or default_summary
    local s = summarize(last)
    if type(s) == "string" and s ~= "" then req.prompt = s .. "\n\n" .. req.prompt end
  end
end

--- The command this agent would run for a request, without running it:
--- {argv = {...}, stdin = string|nil, env = table|nil, files = {...}}.
--- Useful to check an adapter's command line.
---@param opts {prompt: string, cwd?: string, iteration?: integer, resume?: string}
---@return table
function Agent:command(opts)
  local where = "beat.agent." .. self.name .. ":command"
  M.validate(where, opts, { prompt = "string", cwd = "string", iteration = "int",
                            resume = "string" }, true)
  local req = { prompt = opts.prompt, cwd = opts.cwd, iteration = opts.iteration,
                resume = opts.resume }
  local cmd = self.spec.command(self, req)
  -- A preview: temp files the command names (aider's message file, a system
  -- prompt file) are removed at once; a run writes them afresh.
  M.remove_files(cmd.files)
  return cmd
end

--- Removes the temp files and directories an adapter's command() listed in
--- `files` (directories with everything in them).
---@param files string[]|nil
function M.remove_files(files)
  local fs = require("beat.fs")
  for _, f in ipairs(files or {}) do
    if fs.is_dir(f) then fs.rm_rf(f) else os.remove(f) end
  end
end

--- Writes text to a new file `name` inside a new private temp directory
--- (prefix-XXXXXX under $TMPDIR); returns the file's path and the directory,
--- which the adapter lists in `files` so they are removed after the run.
---@param prefix string
---@param name string
---@param text string
---@return string path, string dir
function M.temp_file(prefix, name, text)
  local fs = require("beat.fs")
  local dir = assert(fs.tmpdir(prefix))
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path, dir
end

local function cost_from_price(price, tokens)
  if type(price) ~= "table" or not tokens then return nil end
  local pin, pout = tonumber(price.input), tonumber(price.output)
  if not pin or not pout then return nil end
  return ((tokens.input or 0) * pin + (tokens.output or 0) * pout) / 1e6
end

--- Runs the agent once. See beat.AgentRunOpts and beat.AgentResult.
---@param opts beat.AgentRunOpts
---@return beat.AgentResult
function Agent:run(opts)
  local where = "beat.agent." .. self.name .. ":run"
  check_run_opts(where, opts, not self.spec.run)
  if self.spec.run then return self.spec.run(self, opts) end

  local beat = require "beat"
  local req = { prompt = opts.prompt, cwd = opts.cwd, iteration = opts.iteration }
  local continue = opts.continue_context
  if continue == nil then continue = self.opts.continue_context end
  self:_context(req, continue)

  local cmd = self.spec.command(self, req)
  local env = M.child_env({ self.opts.env, cmd.env, opts.env, n = 3 },
    self.opts.keep_env or M.default_keep_env, opts.iteration)

  local transcript
  if opts.transcript then
    local dir = opts.transcript:match("^(.*)/[^/]*$")
    if dir and dir ~= "" then beat.fs.mkdir_p(dir) end
    transcript = io.open(opts.transcript, "wb")
  end

  local st = self.spec.start and self.spec.start(self, req) or {}
  local on_event = opts.on_event
  local jsonl = self.spec.jsonl
  local event, line_fn = self.spec.event, self.spec.line
  local stderr_tail, stderr_n = {}, 0

  local function on_stdout(line)
    if transcript then transcript:write(line, "\n") end
    if jsonl then
      local ev = M.decode_line(line)
      if ev then
        if event then event(self, st, ev, line) end
        if on_event then on_event(ev) end
        return
      end
    end
    if line_fn then line_fn(self, st, line, "stdout") end
    if on_event then on_event { type = "line", stream = "stdout", text = line } end
  end
  local function on_stderr(line)
    if transcript then transcript:write("[stderr] ", line, "\n") end
    stderr_n = stderr_n + 1
    stderr_tail[(stderr_n - 1) % STDERR_TAIL + 1] = #line > 1000 and line:sub(1, 1000) or line
    if line_fn then line_fn(self, st, line, "stderr") end
    if on_event then on_event { type = "line", stream = "stderr", text = line } end
  end

  local timeout = opts.timeout
  if timeout == nil then timeout = self.opts.timeout end
  local started = beat.clock()
  -- here, or through the executor the request names (a Slurm node, say)
  local run_cmd = beat.exec
  if opts.executor then run_cmd = function(argv, o) return opts.executor:exec(argv, o) end end
  local res, err = run_cmd(cmd.argv, {
    cwd = opts.cwd, env = env, stdin = cmd.stdin,
    timeout = timeout, grace = opts.grace or self.opts.grace,
    stdout = on_stdout, stderr = on_stderr, max_output = self.opts.max_line or MAX_LINE,
  })
  if transcript then transcript:close() end
  M.remove_files(cmd.files)

  local function stderr_last()
    for i = 0, math.min(stderr_n, STDERR_TAIL) - 1 do
      local l = stderr_tail[(stderr_n - 1 - i) % STDERR_TAIL + 1]
      if l:find("%S") then return (l:gsub("\27%[[%d;]*%a", ""):gsub("^%s+", ""):gsub("%s+$", "")) end
    end
  end

  local result
  if not res then
    result = { ok = false, code = 127, error = err, duration = beat.clock() - started,
               timed_out = false, rate_limited = false }
  else
    local parsed = self.spec.finish and self.spec.finish(self, st, res) or {}
    result = parsed
    result.code = res.code
    result.signal = res.signal ~= 0 and res.signal or nil
    result.timed_out = res.timed_out
    result.duration = res.duration
    result.rate_limited = parsed.rate_limited == true
    if res.infra_error then
      -- the executor's machinery failed (a Slurm node, a cancelled job), not the agent
      result.ok, result.infra_error = false, res.infra_error
      result.error = "infrastructure: " .. res.infra_error
    elseif res.timed_out then
      result.ok = false
      result.error = ("timed out after %s"):format(
        require("beat.duration").format(require("beat.duration").parse(timeout)))
    elseif res.signal ~= 0 then
      result.ok = false
      result.error = parsed.error or ("killed by signal %d"):format(res.signal)
    elseif res.code ~= 0 then
      result.ok = false
      result.error = parsed.error or ("exited with code %d%s"):format(res.code,
        stderr_last() and (": " .. stderr_last()) or "")
    else
      result.ok = parsed.ok ~= false
      if not result.ok and not result.error then result.error = "the agent reported an error" end
    end
  end
  result.text = M.tail(result.text)
  result.transcript = opts.transcript
  if result.cost_usd == nil then result.cost_usd = cost_from_price(self.opts.price, result.tokens) end
  result.session_cost_usd = nil
  if result.ok then result.error = nil end

  -- The session's running total as last reported. A resumed run that printed
  -- no total (killed, timed out) keeps the one before, so the next run's share
  -- is its own plus what the unreported run spent, never the whole session.
  local session_cost = st and st.session_cost_usd
  if session_cost == nil and self._last and result.session_id ~= nil
     and result.session_id == self._last.session_id then
    session_cost = self._last.session_cost_usd
  end
  self._last = {
    iteration = opts.iteration, prompt = opts.prompt, text = result.text, ok = result.ok,
    error = result.error, session_id = result.session_id,
    session_cost_usd = session_cost,
  }
  return result
end

-- Options recorded as they are by describe(): plain settings, never code,
-- the environment's values or what argv already shows.
local NOT_DESCRIBED = { argv = true, bin = true, args = true, extra_args = true, env = true, keep_env = true,
  fn = true, summarize = true, prompt_via = true }

local function plain(v, depth)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t ~= "table" or depth > 4 then return nil end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" or math.type(k) == "integer" then out[k] = plain(x, depth + 1) end
  end
  return out
end

--- What the journal records about this agent (run_start), without running
--- anything: {name, program, argv, prompt_via, options, env}. `argv` is the
--- command line with "{prompt}" (or "{prompt_file}") where the prompt goes;
--- `prompt_via` is "arg", "file" or "stdin"; `options` are the plain
--- constructor options (model, max_turns, params, ...); `env` the variables
--- the agent sets (the journal redacts their values). In-process agents (fn,
--- tune) have no program or argv. A version is not included: knowing it means
--- running `<program> --version` (see Agent:version).
---@return table
function Agent:describe()
  local d = { name = self.name, options = {} }
  for k, v in pairs(self.opts) do
    if not NOT_DESCRIBED[k] then d.options[k] = plain(v, 0) end
  end
  if next(d.options) == nil then d.options = nil end
  if self.opts.env then d.env = self.opts.env end
  if self.spec.run or not self.spec.command then return d end
  local ok, cmd = pcall(self.spec.command, self, { prompt = "{prompt}" })
  if not ok or type(cmd) ~= "table" or type(cmd.argv) ~= "table" then return d end
  local function temp(a)
    for _, f in ipairs(cmd.files or {}) do
      if a == f or a:sub(1, #f + 1) == f .. "/" then return true end
    end
  end
  local argv, via = {}, cmd.stdin and "stdin" or nil
  for i, a in ipairs(cmd.argv) do
    if temp(a) then a, via = "{prompt_file}", "file" end
    if a:find("{prompt}", 1, true) then via = "arg" end
    argv[i] = a
  end
  M.remove_files(cmd.files)   -- the adapter's temporary prompt file
  d.program, d.argv, d.prompt_via = argv[1], argv, via
  return d
end

--- The executable this agent runs, and its --version output (first line), or
--- nil and why. Runs `<bin> --version` (needs a beat task).
---@return string|nil version, string? err
function Agent:version()
  if not self.spec.bin then return nil, "no executable" end
  local beat = require "beat"
  local argv = { self.opts.bin or self.spec.bin }
  for _, a in ipairs(self.spec.version_args or { "--version" }) do argv[#argv + 1] = a end
  local r, err = beat.exec(argv, { timeout = 20, grace = 1, max_output = 64 * 1024 })
  if not r then return nil, err end
  if r.code ~= 0 then return nil, ("%s --version exited %d"):format(argv[1], r.code) end
  local out = (r.stdout or ""):match("[^\n]*%S[^\n]*") or (r.stderr or ""):match("[^\n]*%S[^\n]*")
  return out and (out:gsub("^%s+", ""):gsub("%s+$", "")) or ""
end

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

--- The environment the agent's CLI would get (beat's, nested-session
--- variables scrubbed, the adapter's `env` applied), and the home directory in it. For checks that read
--- credentials or settings without running anything.
---@return table<string, string> env, string|nil home
function Agent:environment()
  local env = require("beat.exec").environ()
  local changes = M.child_env({ self.opts.env, n = 1 }, self.opts.keep_env or M.default_keep_env)
  for k, v in pairs(changes) do
    if v == false then env[k] = nil else env[k] = v end
  end
  return env, env.HOME
end

--- Where this agent's CLI would find its credentials, without calling a
--- model: an API key variable, a login file, ... Returns a short description
--- of the source ("ANTHROPIC_API_KEY", "~/.codex/auth.json"), or nil and a
--- one-line hint on how to authenticate. Agents that need none (command, fn,
--- tune) return "not needed".
---@return string|nil source, string? hint
function Agent:credentials()
  if not self.spec.auth then return "not needed" end
  local env, home = self:environment()
  return self.spec.auth(self, { env = env, home = home })
end

--- Whether this agent's results carry what each run cost: true (Claude Code
--- and aider report it; tune costs nothing), false (it reports none: a
--- command agent, Codex or Gemini without `price`), nil when beat cannot tell
--- (a Lua fn agent, a command agent with `jsonl`). beat.budget refuses
--- max_cost_usd for an agent that reports no cost unless cost_per_iteration
--- is given.
---@return boolean|nil
function Agent:reports_cost()
  local r = self.spec.reports_cost
  if type(r) == "function" then return r(self) end
  return r
end

--- Whether the agent, as configured (permission mode, allowed and disallowed
--- tools, its arguments, the CLI's settings files), may run shell commands —
--- such as the check command — by itself in a headless run. Returns true,
--- false, or nil when beat cannot tell, and a one-line reason (for false,
--- what to change). Reads files only; never runs the CLI.
---@param opts? {command?: string|string[], cwd?: string} the command it should be able to run; the work tree
---@return boolean|nil ok, string reason
function Agent:can_run_commands(opts)
  opts = opts or {}
  M.validate("beat.agent." .. self.name .. ":can_run_commands", opts,
    { command = "string|table", cwd = "string" })
  if self.spec.can_run_commands then
    local env, home = self:environment()
    return self.spec.can_run_commands(self, { command = opts.command, cwd = opts.cwd,
                                              env = env, home = home })
  end
  if self.spec.run then return nil, self.name .. " runs in beat itself: it runs no shell by its own choice" end
  return nil, "beat cannot tell whether " .. self.name .. " runs shell commands"
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
-- Agents named on the command line (`beat loop -a ...`, BEAT_AGENT)

--- The coding-agent CLIs `named` knows by name, in the order messages list them.
M.ADAPTER_NAMES = { "claude", "codex", "gemini", "aider" }

-- The pass-through options `beat loop` has flags for, with those flags.
local PASS_FLAGS = {
  args = "--agent-arg", permission_mode = "--permission-mode", allowed_tools = "--allowed-tools",
  disallowed_tools = "--disallowed-tools", system_prompt = "--system-prompt", model = "-m/--model",
}

-- Raises a usage error: one line, exit status 2 from the command line (the
-- shape beat.cli's usage errors have), still a readable message in Lua.
local function usage(fmt, ...)
  error(setmetatable({ usage = fmt:format(...) }, {
    __tostring = function(e) return e.usage end,
  }), 0)
end

--- Splits a command line into words the way a POSIX shell does with quotes
--- and backslashes — 'single', "double" (where \ escapes \ " $ ` and newline),
--- and \x outside quotes — but expands nothing: no variables, globs, ~ or
--- command substitution. Returns the words, or nil and why.
---@param s string
---@return string[]|nil words, string? err
function M.split_words(s)
  local words, cur, i, n = {}, nil, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      if cur then words[#words + 1] = cur; cur = nil end
      i = i + 1
    elseif c == "'" then
      local j = s:find("'", i + 1, true)
      if not j then return nil, "unterminated ' quote" end
      cur = (cur or "") .. s:sub(i + 1, j - 1)
      i = j + 1
    elseif c == '"' then
      local buf = {}
      i = i + 1
      while true do
        if i > n then return nil, 'unterminated " quote' end
        local d = s:sub(i, i)
        if d == '"' then i = i + 1; break end
        local e = s:sub(i + 1, i + 1)
        if d == "\\" and e:match('^[\\"$`\n]$') then
          if e ~= "\n" then buf[#buf + 1] = e end
          i = i + 2
        else
          buf[#buf + 1] = d
          i = i + 1
        end
      end
      cur = (cur or "") .. table.concat(buf)
    elseif c == "\\" then
      if i == n then return nil, "a backslash at the end" end
      local e = s:sub(i + 1, i + 1)
      if e ~= "\n" then cur = (cur or "") .. e end
      i = i + 2
    else
      local j = s:find("[%s'\"\\]", i) or n + 1
      cur = (cur or "") .. s:sub(i, j - 1)
      i = j
    end
  end
  if cur then words[#words + 1] = cur end
  return words
end

--- Splits a list of tools given as one string ("Bash,Edit" or "Bash(git *) Edit")
--- at commas and spaces outside parentheses.
---@param s string
---@return string[]
function M.split_list(s)
  local out, buf, depth = {}, {}, 0
  local function flush()
    if #buf > 0 then out[#out + 1] = table.concat(buf); buf = {} end
  end
  for ch in s:gmatch(".") do
    if ch == "(" then depth = depth + 1 elseif ch == ")" and depth > 0 then depth = depth - 1 end
    if depth == 0 and (ch == "," or ch:match("%s")) then flush() else buf[#buf + 1] = ch end
  end
  flush()
  return out
end

---@class beat.AgentSpec what an `-a` value names
---@field name string "claude", "codex", "gemini", "aider", or "command"
---@field args? string[] for a known CLI: the arguments after its name
---@field argv? string[] for any other program: its command line

--- Parses what `beat loop -a` takes: a known agent name, alone or followed
--- by arguments for that CLI ("claude --effort low" → {name = "claude",
--- args = {"--effort", "low"}}), or any other command line ({name =
--- "command", argv = {...}}). Words are split as by beat.agent.split_words.
--- Raises a usage error for an empty or badly quoted value.
---@param s string
---@return beat.AgentSpec
function M.parse_spec(s)
  if type(s) ~= "string" or not s:match("%S") then
    usage("beat.agent.named: the agent must be a name (%s) or a command line, got %s",
      table.concat(M.ADAPTER_NAMES, ", "), check.show(s))
  end
  local words, err = M.split_words(s)
  if not words then usage("beat.agent.named: cannot split the agent command line %s: %s", check.show(s), err) end
  for _, name in ipairs(M.ADAPTER_NAMES) do
    if words[1] == name then return { name = name, args = { table.unpack(words, 2) } } end
  end
  return { name = "command", argv = words }
end

-- Which adapters take an option, for messages ("claude, codex and gemini").
local function takers(opt)
  local names = {}
  for _, name in ipairs(M.ADAPTER_NAMES) do
    local spec = require("beat.agent." .. name).spec
    if (spec.schema or {})[opt] or M.common_schema[opt] then names[#names + 1] = name end
  end
  if #names == 0 then return "no agent" end
  if #names == 1 then return names[1] end
  return table.concat(names, ", ", 1, #names - 1) .. " and " .. names[#names]
end

--- An agent from what the command line gives: `name` as `beat loop -a`
--- takes it (see beat.agent.parse_spec) and the pass-through options of
--- `beat loop`'s flags: args (--agent-arg, appended after the arguments in
--- `name`), permission_mode, allowed_tools, disallowed_tools (a list, or one
--- string split at commas and spaces outside parentheses), system_prompt,
--- model — and any other option of the named adapter. A command line that is
--- not a known agent is run without a shell with the prompt as its last
--- argument (or where "{prompt}" stands); it takes only `args`.
---
--- Bad input raises a usage error (one line; `beat` exits 2): an option the
--- adapter does not take ("agent aider does not take permission_mode
--- (--permission-mode): claude, codex and gemini do"), a value it refuses,
--- a badly quoted command line.
---@param name string
---@param opts? {args?: string[], permission_mode?: string, allowed_tools?: string[]|string, disallowed_tools?: string[]|string, system_prompt?: string, model?: string}
---@return beat.Agent
function M.named(name, opts)
  opts = opts or {}
  if type(opts) ~= "table" then usage("beat.agent.named: opts must be a table, got %s", check.show(opts)) end
  local spec = M.parse_spec(name)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  for _, k in ipairs { "allowed_tools", "disallowed_tools" } do
    if type(o[k]) == "string" then o[k] = M.split_list(o[k]) end
  end
  if o.args ~= nil and type(o.args) ~= "table" then
    usage("beat.agent.named: args must be a list of strings, got %s", check.show(o.args))
  end
  local args = {}
  for _, a in ipairs(spec.args or {}) do args[#args + 1] = a end
  for _, a in ipairs(o.args or {}) do args[#args + 1] = a end
  o.args = #args > 0 and args or nil

  local ctor, schema
  if spec.name == "command" then
    local argv, placeholder = {}, false
    for _, w in ipairs(spec.argv) do
      argv[#argv + 1] = w
      if w:find("{prompt", 1, true) then placeholder = true end
    end
    for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
    if not placeholder then argv[#argv + 1] = "{prompt}" end
    o.args, o.argv = nil, argv
    ctor, schema = M.command, require("beat.agent.command").spec.schema
  else
    ctor, schema = M[spec.name], require("beat.agent." .. spec.name).spec.schema
  end
  local keys = {}
  for k in pairs(o) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not (schema[k] or M.common_schema[k]) then
      local what = spec.name == "command" and ("the command agent " .. spec.argv[1]) or ("agent " .. spec.name)
      if PASS_FLAGS[k] then
        usage("%s does not take %s (%s): %s %s", what, k, PASS_FLAGS[k], takers(k),
          takers(k):find(" and ", 1, true) and "do" or "does")
      end
      usage("%s does not take option %s", what, k)
    end
  end
  local ok, agent = pcall(ctor, o)
  if not ok then
    local msg = type(agent) == "table" and agent.usage or tostring(agent)
    usage("%s", (msg:gsub("^[^\n]-:%d+: ", "")))
  end
  return agent
end

--- Rows for `beat agents`: see beat.agent.list.
---@return table[]
function M.list() return require("beat.agent.list").list() end

return M
