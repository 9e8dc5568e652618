--- beat.agent: whatever proposes the next change.
---
--- Constructors: `claude`, `codex`, `gemini`, `aider` (headless coding CLIs),
--- `command` (any program), `fn` (a Lua function), `tune` (an offline proposer
--- that edits numeric or enumerated parameters in files). Each returns an agent
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
      env[k] = (v == false) and false or tostring(v)
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
}

--- Options every CLI adapter accepts besides its own.
M.common_schema = {
  bin = "nonempty", extra_args = "strings", env = "env", keep_env = "strings",
  timeout = "duration", grace = "duration", continue_context = "boolean",
  price = "table", summarize = "function",
}

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
  return self.spec.command(self, req)
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
  local res, err = beat.exec(cmd.argv, {
    cwd = opts.cwd, env = env, stdin = cmd.stdin,
    timeout = timeout, grace = opts.grace or self.opts.grace,
    stdout = on_stdout, stderr = on_stderr, max_output = self.opts.max_line or MAX_LINE,
  })
  if transcript then transcript:close() end
  for _, f in ipairs(cmd.files or {}) do os.remove(f) end

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
    if res.timed_out then
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

  self._last = {
    iteration = opts.iteration, prompt = opts.prompt, text = result.text, ok = result.ok,
    error = result.error, session_id = result.session_id,
    session_cost_usd = (st and st.session_cost_usd) or nil,
  }
  return result
end

-- Options recorded as they are by describe(): plain settings, never code,
-- the environment's values or what argv already shows.
local NOT_DESCRIBED = { argv = true, bin = true, extra_args = true, env = true, keep_env = true,
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
  local files = {}
  for _, f in ipairs(cmd.files or {}) do files[f] = true end
  local argv, via = {}, cmd.stdin and "stdin" or nil
  for i, a in ipairs(cmd.argv) do
    if files[a] then a, via = "{prompt_file}", "file" end
    if a:find("{prompt}", 1, true) then via = "arg" end
    argv[i] = a
  end
  -- the adapter's temporary prompt file, then its directory
  for _, f in ipairs(cmd.files or {}) do os.remove(f) end
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
---   resume      true when the CLI resumes a session by id (continue_context)
---   jsonl       true to decode each stdout line as JSON and call `event`
---   init(opts)  optional: checks or fills options after validation
---   command(agent, req) → {argv, stdin?, env?, files?}; req = {prompt, cwd, iteration, resume?}
---   start(agent, req) → state table for one run
---   event(agent, state, ev, line)  for each stdout line that is a JSON object (jsonl adapters)
---   line(agent, state, line, stream) for each other line ("stdout"|"stderr")
---   finish(agent, state, exec_result) → fields of the result
---     {ok?, text?, cost_usd?, tokens?, turns?, rate_limited?, retry_after?, error?, session_id?}
---   run(agent, opts) → result: replaces the process machinery entirely (fn, tune)
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
  return function(opts)
    opts = opts or {}
    M.validate(where, opts, schema)
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    if spec.init then spec.init(copy, where) end
    return setmetatable({ name = spec.name, opts = copy, spec = spec }, Agent)
  end
end

M.Agent = Agent

--------------------------------------------------------------------------------
-- Constructors (each adapter loads on first use)

---@class beat.agent.ClaudeOpts
---@field model? string
---@field max_turns? integer
---@field permission_mode? "acceptEdits"|"bypassPermissions"|"auto"|"dontAsk"|"plan"|"manual"|"default"
---@field allowed_tools? string[]
---@field append_system_prompt? string
---@field bin? string
---@field extra_args? string[]
---@field env? table<string, string|false>
---@field keep_env? string[]
---@field timeout? number|string
---@field continue_context? boolean

--- Claude Code: `claude -p --output-format stream-json --verbose --permission-mode <mode> ...`,
--- prompt on stdin.
---@param opts? beat.agent.ClaudeOpts
---@return beat.Agent
function M.claude(opts) return require("beat.agent.claude").new(opts) end

--- OpenAI Codex: `codex exec --json --sandbox <mode> --skip-git-repo-check [--model M] -`,
--- prompt on stdin.
---@param opts? table
---@return beat.Agent
function M.codex(opts) return require("beat.agent.codex").new(opts) end

--- Gemini CLI: `gemini --output-format stream-json --approval-mode <mode> --skip-trust [--model M]`,
--- prompt on stdin.
---@param opts? table
---@return beat.Agent
function M.gemini(opts) return require("beat.agent.gemini").new(opts) end

--- aider: `aider --message-file F --yes-always --no-auto-commits --no-stream --no-pretty ...`.
---@param opts? table
---@return beat.Agent
function M.aider(opts) return require("beat.agent.aider").new(opts) end

--- Any program: `command{argv = {"my-agent", "{prompt}"}}`, or with prompt_via = "stdin"|"file".
---@param opts table
---@return beat.Agent
function M.command(opts) return require("beat.agent.command").new(opts) end

--- A Lua proposer: `fn(function(ctx) ... end)`.
---@param f function|table
---@return beat.Agent
function M.fn(f) return require("beat.agent.fn").new(f) end

--- The offline proposer: edits numeric or enumerated parameters in files.
---@param opts table
---@return beat.Agent
function M.tune(opts) return require("beat.agent.tune").new(opts) end

--- An agent by name, as `beat loop -a NAME` and the recipes' BEAT_AGENT take
--- it: "claude", "codex", "gemini", "aider", or any command line, run
--- without a shell, with the prompt as its last argument (or where
--- "{prompt}" stands).
---@param name string
---@param opts? table options for a named adapter (model = ..., ...)
---@return beat.Agent
function M.named(name, opts)
  if type(name) ~= "string" or not name:match("%S") then
    error(("beat.agent.named: name must be an adapter name or a command line, got %s"):format(tostring(name)), 2)
  end
  if name == "claude" or name == "codex" or name == "gemini" or name == "aider" then
    return M[name](opts or {})
  end
  local argv, placeholder = {}, false
  for word in name:gmatch("%S+") do
    argv[#argv + 1] = word
    if word:find("{prompt}", 1, true) then placeholder = true end
  end
  if not placeholder then argv[#argv + 1] = "{prompt}" end
  return M.command { argv = argv }
end

--- Rows for `beat agents`: see beat.agent.list.
---@return table[]
function M.list() return require("beat.agent.list").list() end

return M
