--- beat.agent.run — running a CLI adapter once (agent:run), the same way
--- for every adapter: the child's environment (beat.agent.env), the prompt
--- never through a shell, every output line streamed to the transcript file
--- and to the adapter's parser (memory stays bounded), a timeout that ends
--- the agent and all its children, and one normalised result. Also
--- agent:command (the command line, without running it) and continue_context.
local check = require "beat.check"
local env = require "beat.agent.env"
local helpers = require "beat.agent.helpers"

---@class beat.Agent
local Agent = {}

local MAX_LINE = 8 * 1024 * 1024     -- a longer output line is cut (see beat.exec)
local STDERR_TAIL = 40               -- stderr lines kept for error messages

local RUN_SCHEMA = {
  prompt = "string", cwd = "string", timeout = "duration", grace = "duration", env = "env",
  iteration = "int", transcript = "string", on_event = "function",
  continue_context = "boolean", history = "table",
  executor = { "table", test = function(v) return type(v.exec) == "function" end,
    what = "an executor (beat.executor.here(), beat.slurm{...})" },
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
  if opts == nil then check.fail(where, "opts", "a table", opts) end
  check.options(where, opts, { prompt = "string", cwd = "string", iteration = "int",
                               resume = "string" }, { lenient = true })
  local req = { prompt = opts.prompt, cwd = opts.cwd, iteration = opts.iteration,
                resume = opts.resume }
  local cmd = self.spec.command(self, req)
  -- A preview: temp files the command names (aider's message file, a system
  -- prompt file) are removed at once; a run writes them afresh.
  helpers.remove_files(cmd.files)
  return cmd
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
  local child_env = env.child_env({ self.opts.env, cmd.env, opts.env, n = 3 },
    self.opts.keep_env or env.default_keep_env, opts.iteration)

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
      local ev = helpers.decode_line(line)
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
    cwd = opts.cwd, env = child_env, stdin = cmd.stdin,
    timeout = timeout, grace = opts.grace or self.opts.grace,
    stdout = on_stdout, stderr = on_stderr, max_output = self.opts.max_line or MAX_LINE,
  })
  if transcript then transcript:close() end
  helpers.remove_files(cmd.files)

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
  result.text = helpers.tail(result.text)
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

return Agent
