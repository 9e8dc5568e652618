--- beat.judge: an agent as the check or the eval (`--eval-mode agent`).
---
---   beat.strategy("retry"){agent = beat.agent.claude{}, prompt = "...",
---     check = beat.judge{agent = beat.agent.claude{}, criteria = "the error messages are friendly"}}
---   beat.strategy("optimize"){..., direction = "maximize",
---     eval = beat.judge{agent = beat.agent.codex{}, command = "npm test"}}
---
--- After each iteration a second agent, in a fresh session, reviews the work:
--- the task, the criteria, the diff (retry: against the work tree before the
--- run — everything done so far; optimize: against the best so far, with its
--- score), and the output of `command` when one is given (it runs first, in
--- the work tree). It answers with a verdict — `{"pass": bool, "reason": ...}`
--- as retry's check, `{"score": number, "reason": ...}` as optimize's eval —
--- as structured output: Claude Code gets the JSON schema with
--- `--json-schema` and its `structured_output` is read; any other agent is
--- asked for a JSON object, which beat finds in its final message (the whole
--- text, a ```json block, or the last {...} in it) and validates. A verdict
--- that is missing or malformed, or a judge run that fails, is an evaluation
--- error: the judge runs once more, and a second failure is an error result
--- (retry: the check fails; optimize: the iteration crashes) — never a pass.
---
--- A judge is a callable table: `judge{run =, iteration =, name =, cwd =,
--- timeout =}` returns a result shaped like beat.exec's (code 0 pass / 1 fail,
--- stdout ending in the verdict — for a score, the number on the last line,
--- so beat.score.last_number reads it; `error` and code 125 on an evaluation
--- error), which is what beat.loop's Run:command takes for a Lua check/eval.
--- Its cost is added to the run's (and so counts against max_cost_usd); each
--- attempt is journaled as a `judge` record and its transcript kept as
--- iter-N/judge.log (iter-N/judge-2.log for the second attempt). Files the
--- judge writes are undone with the check's (the strategies restore the
--- iteration's snapshot after the check).
local beat = require "beat"
local check = require "beat.check"
local cjson = require "cjson"

local M = {}

local OPTS = {
  agent = { "table", required = true, what = "an agent (beat.agent.claude{}, ...)" },
  mode = { enum = { "pass", "score" } },
  task = "string",
  criteria = "string",
  command = { "string|table", what = "a command (string or argv list)" },
  command_timeout = "duration",
  direction = { enum = { "minimize", "maximize" } },
  timeout = "duration",
  max_diff_bytes = "posint",
}

local DEFAULT_DIFF = 60 * 1000
local OUTPUT_TAIL = 8 * 1000
local ATTEMPTS = 2

local SCHEMAS = {
  pass = { type = "object", additionalProperties = false, required = { "pass", "reason" },
           properties = { pass = { type = "boolean" }, reason = { type = "string" } } },
  score = { type = "object", additionalProperties = false, required = { "score", "reason" },
            properties = { score = { type = "number" }, reason = { type = "string" } } },
}

---@class beat.Judge
---@field agent table
---@field command? string|string[]
local Judge = {}
Judge.__index = Judge

function Judge:__tostring()
  return ("judge (%s)%s"):format(self.agent.name or "agent",
    self.command and (": " .. (type(self.command) == "table" and table.concat(self.command, " ") or self.command)) or "")
end

function Judge:__call(ctx)
  return self:evaluate(ctx)
end

--- The JSON schema of a verdict, as Claude Code's --json-schema takes it.
---@param mode "pass"|"score"
---@return string
function M.schema(mode)
  return cjson.encode(SCHEMAS[mode])
end

-- The agent to run for a mode: Claude Code gets --json-schema (one agent per
-- mode, built once); any other agent is used as it is.
function Judge:_agent(mode)
  local a = self.agent
  local Agent = require("beat.agent").Agent
  if a.name ~= "claude" or getmetatable(a) ~= Agent then return a end
  self._agents = self._agents or {}
  if self._agents[mode] then return self._agents[mode] end
  local o = {}
  for k, v in pairs(a.opts) do o[k] = v end
  local args = {}
  for _, x in ipairs(o.args or {}) do
    if x == "--json-schema" then self._agents[mode] = a; return a end
    args[#args + 1] = x
  end
  args[#args + 1] = "--json-schema"
  args[#args + 1] = M.schema(mode)
  o.args = args
  self._agents[mode] = beat.agent.claude(o)
  return self._agents[mode]
end

--------------------------------------------------------------------------------
-- Parsing a verdict

-- The end of the JSON object that starts at i (the index of its "}"), or nil.
local function object_end(text, i)
  local depth, in_str, esc = 0, false, false
  for j = i, #text do
    local c = text:byte(j)
    if in_str then
      if esc then esc = false
      elseif c == 92 then esc = true      -- \
      elseif c == 34 then in_str = false end
    elseif c == 34 then in_str = true
    elseif c == 123 then depth = depth + 1
    elseif c == 125 then
      depth = depth - 1
      if depth == 0 then return j end
    end
  end
  return nil
end

local function decode_object(s)
  local ok, v = pcall(cjson.decode, s)
  if ok and type(v) == "table" then return v end
  return nil
end

--- The JSON objects a text holds, most likely verdict first: the whole text,
--- then ```json blocks (last first), then each {...} (last first).
---@param text string
---@return table[]
function M.objects(text)
  local out = {}
  if type(text) ~= "string" or text == "" then return out end
  local whole = decode_object((text:gsub("^%s+", ""):gsub("%s+$", "")))
  if whole then out[#out + 1] = whole end
  local blocks = {}
  for body in text:gmatch("```[%w_-]*%s*\n(.-)\n?```") do blocks[#blocks + 1] = body end
  for i = #blocks, 1, -1 do
    local v = decode_object(blocks[i])
    if v then out[#out + 1] = v end
  end
  -- each "{" from the end, at most 64 of them
  local starts = {}
  for pos in text:gmatch("(){") do starts[#starts + 1] = pos end
  local tried = 0
  for k = #starts, 1, -1 do
    if tried >= 64 then break end
    local e = object_end(text, starts[k])
    if e then
      tried = tried + 1
      local v = decode_object(text:sub(starts[k], e))
      if v then out[#out + 1] = v end
    end
  end
  return out
end

-- Why v is not a verdict for mode, or nil.
local function invalid(v, mode)
  if type(v) ~= "table" then return "not a JSON object" end
  if v.reason ~= nil and type(v.reason) ~= "string" then return "reason is not a string" end
  if mode == "pass" then
    if type(v.pass) ~= "boolean" then return ('"pass" must be true or false, got %s'):format(check.show(v.pass)) end
  else
    local s = v.score
    if type(s) ~= "number" or s ~= s or s == math.huge or s == -math.huge then
      return ('"score" must be a finite number, got %s'):format(check.show(s))
    end
  end
  return nil
end

--- The verdict in an agent's result for mode ("pass" or "score"): its
--- structured_output when the CLI gave one, else the first JSON object of
--- its final message that is a valid verdict. Returns {pass =|score =,
--- reason =}, or nil and why.
---@param res table the agent's result
---@param mode "pass"|"score"
---@return table|nil verdict, string? err
function M.parse(res, mode)
  if type(res.structured_output) == "table" then
    local why = invalid(res.structured_output, mode)
    if why then return nil, "the structured output is not a verdict: " .. why end
    return res.structured_output
  end
  local first_why
  for _, v in ipairs(M.objects(res.text)) do
    local why = invalid(v, mode)
    if not why then return v end
    first_why = first_why or why
  end
  if first_why then return nil, "no valid verdict in the answer: " .. first_why end
  return nil, "the answer holds no JSON verdict"
end

--------------------------------------------------------------------------------
-- The prompt

local function cut_head(s, max)
  if #s <= max then return s end
  return s:sub(1, max) .. ("\n[... %d more bytes cut]"):format(#s - max)
end

local function cut_tail(s, max)
  if #s <= max then return s end
  return "[...]\n" .. s:sub(-max)
end

function Judge:_prompt(run, n, mode, cmd_text)
  local o = run.opts
  local task = self.task or (type(o.prompt) == "string" and o.prompt) or nil
  local lines = {
    "You are the judge in a loop where a coding agent works on this repository. You are in a fresh session and did not make the change below. Review the work; you may read files and run read-only commands, but do not change any file.",
  }
  if task then lines[#lines + 1] = "\nThe agent's task:\n" .. task end
  local dir = self.direction or o.direction or "minimize"
  if mode == "pass" then
    lines[#lines + 1] = "\nWhat to judge:\n" .. (self.criteria or "Is the task done, correctly and completely?")
  else
    lines[#lines + 1] = "\nWhat to score:\n" .. (self.criteria or (dir == "maximize"
      and "How well the work accomplishes the task, from 0 (not at all) to 100 (completely and well)."
      or "How far the work is from accomplishing the task, from 0 (completely and well) to 100 (not at all)."))
    lines[#lines + 1] = ("%s scores are better."):format(dir == "maximize" and "Higher" or "Lower")
  end
  -- the change
  local from, label
  if mode == "pass" then
    from, label = run.base, "since the run started (everything the agent changed so far)"
  else
    from = run.best
    label = ("since the best version so far%s"):format(run.best_score and (" (" .. run.best_score .. ")") or "")
  end
  if run.repo and from and run.at then
    local d = run.repo:diff { from = from, to = run.at }
    if d and d.files_changed > 0 then
      lines[#lines + 1] = ("\nThe change %s: %d file%s, +%d -%d:\n```diff\n%s\n```"):format(label, d.files_changed,
        d.files_changed == 1 and "" or "s", d.insertions, d.deletions,
        cut_head(d.patch or "", self.max_diff_bytes or DEFAULT_DIFF))
    elseif d then
      lines[#lines + 1] = n == 0 and "\nNo change yet: this is the work tree before the agent's first iteration; judge it as it is."
        or ("\nThe agent changed nothing %s."):format(label)
    end
  elseif not run.repo then
    lines[#lines + 1] = "\n(No git: beat cannot show the change; look at the work tree.)"
  end
  if cmd_text then lines[#lines + 1] = "\n" .. cmd_text end
  if mode == "pass" then
    lines[#lines + 1] = '\nAnswer with one JSON object and nothing else: {"pass": true or false, "reason": "one or two sentences"}. "pass" is true only when the task is done and the criteria are met.'
  else
    lines[#lines + 1] = '\nAnswer with one JSON object and nothing else: {"score": <a number>, "reason": "one or two sentences"}.'
  end
  return table.concat(lines, "\n")
end

--------------------------------------------------------------------------------
-- Judging

--- Runs the judge for an iteration; see the module comment.
---@param ctx {run: beat.Run, iteration: integer, name?: string, cwd?: string, timeout?: number}
---@return table exec-shaped result
function Judge:evaluate(ctx)
  local run, n = ctx.run, ctx.iteration or 0
  local t0 = beat.clock()
  local mode = self.mode or (ctx.name == "eval" and "score" or "pass")
  local out = {}
  -- the command first: the judge sees its output
  local cmd_text
  if self.command then
    local shown = type(self.command) == "table" and table.concat(self.command, " ") or self.command
    local r, err = beat.exec(self.command, { cwd = ctx.cwd or run.cwd,
      timeout = run:limit(self.command_timeout or ctx.timeout), max_output = 256 * 1024 })
    run.journal:check()
    if not r then
      cmd_text = ("The command `%s` could not start: %s"):format(shown, tostring(err))
      out[#out + 1] = ("$ %s\n# could not start: %s"):format(shown, tostring(err))
    else
      local text = (r.stdout or "") .. ((r.stderr or "") ~= "" and ("\n" .. r.stderr) or "")
      local what = r.timed_out and "timed out" or ("exited %d"):format(r.code)
      cmd_text = ("The command `%s` %s; the end of its output:\n```\n%s\n```"):format(shown, what,
        cut_tail(text, OUTPUT_TAIL))
      out[#out + 1] = ("$ %s\n# %s\n%s"):format(shown, what, cut_tail(text, OUTPUT_TAIL))
    end
  end
  local agent = self:_agent(mode)
  local prompt = self:_prompt(run, n, mode, cmd_text)
  local dir = run.journal:iter_dir(n)
  local verdict, why
  for attempt = 1, ATTEMPTS do
    local transcript = ("%s/judge%s.log"):format(dir, attempt == 1 and "" or ("-" .. attempt))
    local timeout = run:limit(self.timeout or run.opts.agent_timeout)
    local ok, res = pcall(agent.run, agent, {
      prompt = prompt, cwd = ctx.cwd or run.cwd, timeout = timeout, iteration = n, transcript = transcript,
      env = { BEAT_RUN_ID = run.id, BEAT_ITERATION = tostring(n), BEAT_JUDGE = "1" },
      continue_context = false,
    })
    run.journal:check()
    require("beat.redact").file(transcript)
    if not ok then
      if require("beat.task").is_cancelled(res) then error(res, 0) end
      res = { ok = false, error = "the judge raised: " .. tostring(res) }
    end
    if type(res) ~= "table" then res = { ok = false, error = "the judge returned " .. type(res) } end
    require("beat.budget").charge(run, n, res, "judge")
    if not res.ok then
      why = "the judge agent failed: " .. tostring(res.error or ("exit " .. tostring(res.code)))
    else
      verdict, why = M.parse(res, mode)
    end
    run.journal:write("judge", { iteration = n, attempt = attempt, mode = mode, ok = verdict ~= nil,
      pass = verdict and verdict.pass, score = verdict and verdict.score, reason = verdict and verdict.reason,
      error = not verdict and why or nil, cost_usd = res.cost_usd, duration = res.duration,
      text = type(res.text) == "string" and res.text:sub(1, 2000) or nil })
    if verdict then break end
  end
  local name = self.agent.name or "agent"
  if not verdict then
    out[#out + 1] = ("judge (%s): evaluation error, %d attempts: %s"):format(name, ATTEMPTS, why)
    return { code = 125, signal = 0, stdout = table.concat(out, "\n") .. "\n", stderr = "",
             duration = beat.clock() - t0, timed_out = false,
             error = ("the judge gave no verdict (%d attempts): %s"):format(ATTEMPTS, why) }
  end
  local reason = verdict.reason or ""
  if mode == "pass" then
    out[#out + 1] = ("judge (%s): %s\n%s"):format(name, verdict.pass and "pass" or "fail", reason)
    return { code = verdict.pass and 0 or 1, signal = 0, stdout = table.concat(out, "\n") .. "\n", stderr = "",
             duration = beat.clock() - t0, timed_out = false, verdict = verdict }
  end
  out[#out + 1] = ("judge (%s): score %s\n%s\n%s"):format(name, tostring(verdict.score), reason, tostring(verdict.score))
  return { code = 0, signal = 0, stdout = table.concat(out, "\n") .. "\n", stderr = "",
           duration = beat.clock() - t0, timed_out = false, verdict = verdict }
end

--- A judge: see the module comment. Options: agent (required), mode ("pass"
--- as a check, "score" as an eval; default: by where it is used), task (default:
--- the run's prompt), criteria (what to judge: `--eval-prompt`), command (run
--- first; the judge sees its output), command_timeout (default: the
--- strategy's check/eval timeout), direction (for scores; default: the
--- run's), timeout (the judge agent's; default: agent_timeout),
--- max_diff_bytes (default 60000).
---@param opts {agent: table, mode?: "pass"|"score", task?: string, criteria?: string, command?: string|string[], command_timeout?: number|string, direction?: "minimize"|"maximize", timeout?: number|string, max_diff_bytes?: integer}
---@return beat.Judge
function M.new(opts)
  opts = check.options("beat.judge", opts, OPTS)
  if type(opts.agent.run) ~= "function" then
    check.fail("beat.judge", "opts.agent", "an agent with a run method (see beat.agent)", opts.agent)
  end
  if opts.command ~= nil then
    local ok, err = pcall(require("beat.loop").check_command, "judge", "command", opts.command, 1)
    if not ok then check.error("beat.judge", (tostring(err):gsub("^.-opts%.command ", "opts.command "))) end
    if require("beat.loop").callable(opts.command) then
      check.fail("beat.judge", "opts.command", "a command (string or argv list)", opts.command)
    end
  end
  local j = setmetatable({}, Judge)
  for k, v in pairs(opts) do j[k] = v end
  for _, k in ipairs { "timeout", "command_timeout" } do
    if j[k] ~= nil then j[k] = beat.duration(j[k]) end
  end
  return j
end

M.Judge = Judge

return setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
