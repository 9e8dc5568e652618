--- beat.agent.pipeline: several agent runs per iteration, in order.
---
---   beat.agent.pipeline{agent = beat.agent.claude{}, steps = {
---     "Write a failing test for the bug described below.",
---     "Make the test pass without changing it.",
---   }}
---
--- One iteration runs each step as a fresh session of `agent` (never
--- resumed: each step sees the work tree the steps before it left, not their
--- conversation), in order. A step's prompt is its text, then where it stands
--- in the pipeline, then the iteration's prompt (the task, and what the
--- strategy adds: the failing check's output, the scores so far). The
--- strategy runs its check or eval once, after the last step.
---
--- The result is the iteration's: ok when every step was; cost_usd, tokens
--- and turns summed over the steps (cost nil only when no step reported
--- one); text the last step's. A step that fails ends the iteration there
--- (ok = false, error "step K of N: ..."). A rate-limited step ends it too,
--- rate_limited, and when the run calls the pipeline again for the same
--- iteration (after waiting), it starts at that step: the steps before it are
--- not run twice. A timeout bounds the whole iteration: each step gets what
--- is left of it.
---
--- Each step's transcript is <transcript dir>/agent-step-K.log (iter-N/ in a
--- run), and the iteration's agent.log lists the steps; when the run gives
--- the agent a `journal` function (beat.loop does), each step is journaled
--- as an `agent_step` record: {step, of, ok, error, cost_usd, tokens, turns,
--- duration, rate_limited, transcript, text}.
local agent = require "beat.agent"

local M = {}

local spec = {
  name = "pipeline",
  no_common = true,
  schema = {
    agent = { "table", required = true, what = "an agent (beat.agent.claude{}, ...)" },
    steps = { "strings", required = true, what = "a list of step prompts" },
    timeout = "duration",
  },
}

function spec.init(o, where)
  if type(o.agent.run) ~= "function" then
    error(where .. ": opts.agent must be an agent with a run method (see beat.agent)", 3)
  end
  if #o.steps == 0 then error(where .. ": opts.steps must list at least one step prompt", 3) end
  for i, s in ipairs(o.steps) do
    if not s:match("%S") then error(("%s: opts.steps[%d] must be a prompt, got an empty string"):format(where, i), 3) end
  end
end

-- The reports of the inner agent, for Agent:reports_cost, credentials and
-- can_run_commands.
function spec.reports_cost(self)
  local a = self.opts.agent
  if type(a.reports_cost) == "function" then return a:reports_cost() end
  return nil
end

function spec.auth(self)
  local a = self.opts.agent
  if type(a.credentials) == "function" then return a:credentials() end
  return "not needed"
end

function spec.can_run_commands(self, q)
  local a = self.opts.agent
  if type(a.can_run_commands) ~= "function" then return nil, "beat cannot tell whether the pipeline's agent runs shell commands" end
  return a:can_run_commands { command = q.command, cwd = q.cwd }
end

--- The prompt of step k of n.
---@param steps string[]
---@param k integer
---@param prompt string the iteration's prompt
---@return string
function M.step_prompt(steps, k, prompt)
  return ("%s\n\n(This is step %d of %d of one iteration. The steps run in order, each in a fresh session; the work tree holds what the steps before this one changed.)\n\nThe iteration's task and context:\n%s")
    :format(steps[k], k, #steps, prompt)
end

local function add_tokens(sum, t)
  if type(t) ~= "table" then return sum end
  sum = sum or { input = 0, output = 0 }
  sum.input = sum.input + (tonumber(t.input) or 0)
  sum.output = sum.output + (tonumber(t.output) or 0)
  return sum
end

function spec.run(self, opts)
  local beat = require "beat"
  local inner, steps = self.opts.agent, self.opts.steps
  local started = beat.clock()
  local timeout = opts.timeout
  if timeout == nil then timeout = self.opts.timeout end
  if timeout ~= nil then timeout = beat.duration(timeout) end
  local dir = opts.transcript and opts.transcript:match("^(.*)/[^/]*$")
  -- a rate-limited step of this iteration: start there
  local first = 1
  if self._resume and self._resume.iteration == opts.iteration and opts.iteration ~= nil then
    first = self._resume.step
  end
  self._resume = nil
  local res = { ok = true, code = 0, duration = 0, timed_out = false, rate_limited = false, turns = 0,
                transcript = opts.transcript, steps = {} }
  local cost, lines = nil, {}
  for k = first, #steps do
    local left
    if timeout then
      left = timeout - (beat.clock() - started)
      if left <= 0 then
        res.ok, res.code, res.timed_out = false, 124, true
        res.error = ("step %d of %d: not started, the iteration's time (%s) is used up"):format(k, #steps,
          require("beat.duration").format(timeout))
        break
      end
    end
    local transcript = dir and ("%s/agent-step-%d.log"):format(dir, k) or nil
    local ok, r = pcall(inner.run, inner, {
      prompt = M.step_prompt(steps, k, opts.prompt), cwd = opts.cwd, timeout = left, env = opts.env,
      iteration = opts.iteration, transcript = transcript, continue_context = false,
      history = opts.history, on_event = opts.on_event,
    })
    if not ok then
      if require("beat.task").is_cancelled(r) then error(r, 0) end
      r = { ok = false, error = "the agent raised: " .. tostring(r) }
    end
    if type(r) ~= "table" then r = { ok = false, error = "the agent returned " .. type(r) } end
    if transcript then require("beat.redact").file(transcript) end
    local c = tonumber(r.cost_usd)
    if c and c >= 0 and c < math.huge then cost = (cost or 0) + c end
    res.tokens = add_tokens(res.tokens, r.tokens)
    res.turns = res.turns + (tonumber(r.turns) or 0)
    res.text = r.text
    local rec = { step = k, of = #steps, ok = r.ok == true, error = r.error, cost_usd = r.cost_usd,
      tokens = r.tokens, turns = r.turns, duration = r.duration, rate_limited = r.rate_limited or nil,
      transcript = transcript and ("agent-step-%d.log"):format(k) or nil,
      text = type(r.text) == "string" and r.text:sub(1, 2000) or nil }
    res.steps[#res.steps + 1] = rec
    if type(opts.journal) == "function" then opts.journal("agent_step", rec) end
    lines[#lines + 1] = ("step %d of %d: %s%s%s — %s"):format(k, #steps,
      r.ok and "ok" or (r.rate_limited and "rate limited" or ("failed: " .. tostring(r.error))),
      c and (", $%.4f"):format(c) or "", r.duration and (", %.1fs"):format(r.duration) or "",
      transcript and ("agent-step-%d.log"):format(k) or "no transcript")
    if r.rate_limited then
      res.ok, res.rate_limited, res.retry_after, res.code = false, true, r.retry_after, r.code or 1
      res.error = ("step %d of %d: %s"):format(k, #steps, tostring(r.error or "rate limited"))
      self._resume = { iteration = opts.iteration, step = k }
      break
    end
    if not r.ok then
      res.ok, res.code, res.timed_out = false, r.code or 1, r.timed_out == true
      res.error = ("step %d of %d: %s"):format(k, #steps, tostring(r.error or ("exit " .. tostring(r.code))))
      break
    end
  end
  res.cost_usd = cost
  res.duration = beat.clock() - started
  if opts.transcript then
    beat.fs.mkdir_p(dir)
    local f = io.open(opts.transcript, "wb")
    if f then f:write(table.concat(lines, "\n"), "\n"); f:close() end
  end
  return res
end

local new = agent.define(spec)

-- What the journal records about a pipeline (run_start).
local function describe(self)
  local inner = self.opts.agent
  local d = { name = "pipeline", steps = self.opts.steps }
  if type(inner.describe) == "function" then
    local ok, v = pcall(inner.describe, inner)
    if ok then d.agent = v end
  else
    d.agent = { name = inner.name }
  end
  return d
end

--- A pipeline agent; see the module comment.
---@param opts {agent: table, steps: string[], timeout?: number|string}
---@return beat.Agent
function M.new(opts)
  local a = new(opts)
  a.inner = a.opts.agent       -- beat.loop checks that its program is installed
  a.describe = describe
  a.version = function() return a.inner.version and a.inner:version() end
  return a
end

M.spec = spec

return M
