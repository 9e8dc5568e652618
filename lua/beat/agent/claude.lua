--- beat.agent.claude: Claude Code in headless mode.
---
---   claude -p --output-format stream-json --verbose --permission-mode <mode>
---          [--model M] [--max-turns N] [--append-system-prompt S]
---          [--allowedTools T1,T2] [--resume SESSION] [extra_args...]
---
--- The prompt goes on stdin. Checked against Claude Code 2.1.332's --help
--- (--max-turns works though --help no longer lists it). Parsed from the
--- stream: the `system/init` record (session_id), the final `result` record
--- (`result`, `is_error`, `subtype`, `errors`, `total_cost_usd`, `num_turns`,
--- `usage`, `api_error_status`), `rate_limit_event` records
--- (`rate_limit_info.status == "rejected"`, `resetsAt`) and `system/api_retry`
--- records (`error_status`, `retry_delay_ms`). Rate limits are recognised from
--- these fields only, never from the model's prose.
local agent = require "beat.agent"

local M = {}

local num, str = agent.num, agent.str

local PERMISSION_MODES = { "acceptEdits", "bypassPermissions", "auto", "dontAsk", "plan",
                           "manual", "default" }

local spec = {
  name = "claude",
  bin = "claude",
  resume = true,
  jsonl = true,
  schema = {
    model = "nonempty", max_turns = "posint", permission_mode = { enum = PERMISSION_MODES },
    allowed_tools = "strings", append_system_prompt = "string",
  },
}

function spec.command(self, req)
  local o = self.opts
  local argv = { o.bin or "claude", "-p", "--output-format", "stream-json", "--verbose",
                 "--permission-mode", o.permission_mode or "acceptEdits" }
  local function add(...) for _, a in ipairs { ... } do argv[#argv + 1] = a end end
  if o.model then add("--model", o.model) end
  if o.max_turns then add("--max-turns", tostring(o.max_turns)) end
  if o.append_system_prompt then add("--append-system-prompt", o.append_system_prompt) end
  if o.allowed_tools and #o.allowed_tools > 0 then
    add("--allowedTools", table.concat(o.allowed_tools, ","))
  end
  if req.resume then add("--resume", req.resume) end
  for _, a in ipairs(o.extra_args or {}) do add(a) end
  return { argv = argv, stdin = req.prompt }
end

function spec.start(_, req)
  return { resume_cost = req.resume_cost, resumed = req.resume }
end

local function usage_tokens(u)
  if type(u) ~= "table" then return nil end
  local input = (num(u.input_tokens) or 0) + (num(u.cache_creation_input_tokens) or 0)
              + (num(u.cache_read_input_tokens) or 0)
  return { input = math.tointeger(input) or input,
           output = math.tointeger(num(u.output_tokens) or 0) or num(u.output_tokens),
           cache_read = num(u.cache_read_input_tokens) }
end

function spec.event(_, st, ev)
  local t = ev.type
  if t == "system" then
    if ev.subtype == "init" then
      st.session_id = str(ev.session_id) or st.session_id
      st.model = str(ev.model)
    elseif ev.subtype == "api_retry" then
      if num(ev.error_status) == 429 or ev.error == "rate_limit" then
        st.retry_delay = (num(ev.retry_delay_ms) or 0) / 1000
      end
    end
  elseif t == "rate_limit_event" then
    local info = type(ev.rate_limit_info) == "table" and ev.rate_limit_info or {}
    if info.status == "rejected" then
      st.rejected = true
      local resets = num(info.resetsAt)
      if resets then st.resets_at = resets end
    end
  elseif t == "assistant" then
    local msg = type(ev.message) == "table" and ev.message or {}
    if ev.error == "rate_limit" or num(ev.api_error_status) == 429 then st.assistant_rate_limited = true end
    if type(msg.content) == "table" then
      for _, block in ipairs(msg.content) do
        if type(block) == "table" and block.type == "text" and type(block.text) == "string" then
          st.last_text = block.text
        end
      end
    end
  elseif t == "result" then
    st.result = ev
    st.session_id = str(ev.session_id) or st.session_id
  end
end

function spec.finish(_, st, res)
  local out = { session_id = st.session_id }
  local r = st.result
  local now = require("beat").now()
  if st.resets_at then out.retry_after = math.max(0, st.resets_at - now) end
  if not out.retry_after and st.retry_delay then out.retry_after = st.retry_delay end
  if not r then
    out.ok = false
    out.text = st.last_text
    if st.rejected or st.assistant_rate_limited then out.rate_limited = true end
    if res.code == 0 and not res.timed_out then
      out.error = "claude printed no result record"
    end
    return out
  end
  out.text = str(r.result) or st.last_text
  out.turns = math.tointeger(num(r.num_turns)) or num(r.num_turns)
  out.tokens = usage_tokens(r.usage)
  local total = num(r.total_cost_usd)
  if total then
    -- A resumed session reports its running total: this run's cost is the difference.
    if st.resumed and st.resume_cost and total >= st.resume_cost then
      out.cost_usd = total - st.resume_cost
    else
      out.cost_usd = total
    end
    st.session_cost_usd = total
  end
  local status = num(r.api_error_status)
  local is_error = r.is_error == true or (type(r.subtype) == "string" and r.subtype:match("^error") ~= nil)
  if status == 429 or st.rejected or (is_error and st.assistant_rate_limited) then
    out.rate_limited = true
  end
  if is_error and not out.rate_limited and type(r.result) == "string" then
    -- Older CLIs end a subscription cap with "Claude AI usage limit reached|<epoch>"
    -- in the error result (the CLI's text, not the model's).
    local epoch = r.result:match("^Claude AI usage limit reached|(%d+)")
    if epoch then
      out.rate_limited = true
      out.retry_after = math.max(0, tonumber(epoch) - now)
    end
  end
  if is_error then
    out.ok = false
    local errs = type(r.errors) == "table" and r.errors or {}
    local why = str(errs[1]) or str(r.result) or ("claude ended with " .. tostring(r.subtype))
    out.error = why
  else
    out.ok = true
  end
  return out
end

--- Claude Code adapter; see beat.agent.claude for the options.
---@param opts? beat.agent.ClaudeOpts
---@return beat.Agent
M.new = agent.define(spec)
M.spec = spec

return M
