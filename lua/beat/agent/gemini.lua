--- beat.agent.gemini: Gemini CLI in headless mode.
---
---   gemini --output-format stream-json --approval-mode <mode> --skip-trust [--model M]
---          [extra_args...]
---
--- The prompt goes on stdin: with no -p, a Gemini CLI whose stdin is not a
--- terminal reads the prompt from it and runs headless (checked with 0.61.0;
--- this keeps long prompts clear of the argument-size limit and out of `ps`).
--- `--skip-trust` is needed since 0.61: headless runs in an untrusted folder
--- otherwise exit 55. `stream-json` (rather than `json`) streams events, so
--- the transcript fills as the agent works.
---
--- Parsed events: `init` (session_id), `message` with role "assistant" (text
--- deltas; the text after the last tool call is the final message),
--- `tool_use`/`tool_result` (turn counting), `error`, and the final `result`
--- (status, error {type, message}, stats {input_tokens, output_tokens}).
--- Exit codes: 41 auth, 42 bad input, 44 sandbox, 52 config, 53 turn limit,
--- 54 tool error, 55 untrusted folder, 130 cancelled; a quota error
--- (TerminalQuotaError / RetryableQuotaError, HTTP 429) is a rate limit.
local agent = require "beat.agent"

local M = {}

local num, str = agent.num, agent.str

local EXIT_REASONS = {
  [41] = "authentication failed",
  [42] = "bad input",
  [44] = "sandbox error",
  [52] = "configuration error",
  [53] = "reached the session turn limit",
  [54] = "a tool failed",
  [55] = "the folder is not trusted",
  [130] = "cancelled",
}

local spec = {
  name = "gemini",
  bin = "gemini",
  jsonl = true,
  schema = {
    model = "nonempty",
    approval_mode = { enum = { "yolo", "auto_edit", "default", "plan" } },
  },
}

function spec.command(self, req)
  local o = self.opts
  local argv = { o.bin or "gemini", "--output-format", "stream-json",
                 "--approval-mode", o.approval_mode or "yolo", "--skip-trust" }
  if o.model then argv[#argv + 1] = "--model"; argv[#argv + 1] = o.model end
  for _, a in ipairs(o.extra_args or {}) do argv[#argv + 1] = a end
  return { argv = argv, stdin = req.prompt }
end

function spec.start()
  return { parts = {}, size = 0, turns = 0, in_turn = false }
end

local QUOTA_TYPES = { TerminalQuotaError = true, RetryableQuotaError = true }

local function quota_error(e)
  if type(e) ~= "table" then return false end
  if QUOTA_TYPES[e.type] then return true end
  local code = num(e.code) or num(e.status)
  if code == 429 then return true end
  local msg = str(e.message) or ""
  return msg:find("RESOURCE_EXHAUSTED", 1, true) ~= nil or msg:find("(Status: 429)", 1, true) ~= nil
end

function spec.event(_, st, ev)
  local t = ev.type
  if t == "init" then
    st.session_id = str(ev.session_id)
  elseif t == "message" then
    if ev.role == "assistant" and type(ev.content) == "string" then
      if not st.in_turn then st.turns = st.turns + 1; st.in_turn = true end
      if st.size < 1024 * 1024 then
        st.parts[#st.parts + 1] = ev.content
        st.size = st.size + #ev.content
      end
    end
  elseif t == "tool_use" then
    if not st.in_turn then st.turns = st.turns + 1 end
    st.in_turn = true
    st.parts, st.size = {}, 0
  elseif t == "tool_result" then
    st.in_turn = false
  elseif t == "error" then
    if ev.severity == "error" then st.last_error = str(ev.message) end
  elseif t == "result" then
    st.result = ev
  end
end

function spec.finish(_, st, res)
  local out = { session_id = st.session_id, turns = st.turns }
  local text = table.concat(st.parts)
  if text ~= "" then out.text = text end
  local r = st.result
  if r then
    local stats = type(r.stats) == "table" and r.stats or {}
    if num(stats.input_tokens) or num(stats.output_tokens) then
      out.tokens = { input = math.tointeger(num(stats.input_tokens) or 0),
                     output = math.tointeger(num(stats.output_tokens) or 0),
                     cache_read = math.tointeger(num(stats.cached) or 0) }
    end
    if r.status == "error" then
      out.ok = false
      local e = type(r.error) == "table" and r.error or {}
      out.error = str(e.message) or str(e.type) or "gemini reported an error"
      if quota_error(e) then
        out.rate_limited = true
        out.retry_after = agent.retry_after_from(e.message)
      end
    end
  elseif res.code == 0 and not res.timed_out then
    out.ok = false
    out.error = "gemini printed no result event"
  end
  if res.code ~= 0 and not res.timed_out and res.signal == 0 then
    if res.code == 173 then -- exit(429) on a quota error
      out.rate_limited = true
    end
    local reason = EXIT_REASONS[res.code]
    if not out.error then
      out.error = reason and ("exited with code %d (%s)%s"):format(res.code, reason,
        st.last_error and (": " .. st.last_error) or "") or st.last_error
    end
  end
  return out
end

--- Gemini CLI adapter; options: model, approval_mode ("yolo"), plus the common ones.
---@param opts? table
---@return beat.Agent
M.new = agent.define(spec)
M.spec = spec

return M
