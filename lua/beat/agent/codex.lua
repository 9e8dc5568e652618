--- beat.agent.codex: OpenAI Codex CLI in headless mode.
---
---   codex exec --json --sandbox <mode> --skip-git-repo-check
---        [-c developer_instructions="<system_prompt>"] [--model M] [args...] -
---   codex exec resume --json --skip-git-repo-check -c sandbox_mode="<mode>"
---        [-c developer_instructions=...] [--model M] [args...] <thread_id> -   (continue_context)
---
--- The prompt goes on stdin, which is then closed (an open stdin makes codex
--- wait). Checked against codex-cli 0.171.0's --help: `--full-auto` is gone,
--- and `exec resume` takes no --sandbox (so the mode is given with -c).
--- permission_mode is the sandbox (read-only | workspace-write |
--- danger-full-access); `codex exec` never stops to ask, so commands run
--- inside it. system_prompt becomes the config key developer_instructions,
--- written as a TOML string (-c parses its value as TOML): with 0.171.0
--- against a logging Responses API server, the text arrived verbatim as a
--- developer message of the request.
--- Parsed JSONL events: `thread.started` (thread_id → session_id),
--- `item.completed` with item.type "agent_message" (the final text),
--- `turn.completed` (usage: input_tokens, cached_input_tokens, output_tokens),
--- `turn.failed` (error.message) and top-level `error` events (message; codex
--- also uses these for transient "Reconnecting..." notices, so they only
--- explain a failure, never cause one). Codex reports no cost; give
--- opts.price = {input = usd_per_million, output = usd_per_million} to compute one.
local agent = require "beat.agent"

local M = {}

local num, str = agent.num, agent.str

local SANDBOXES = { "read-only", "workspace-write", "danger-full-access" }

local spec = {
  name = "codex",
  reports_cost = function(self) return self.opts.price ~= nil end,   -- tokens only, priced by opts.price
  bin = "codex",
  resume = true,
  jsonl = true,
  schema = {
    model = "nonempty",
    permission_mode = { enum = SANDBOXES },
    sandbox = { enum = SANDBOXES },
    system_prompt = { "string", test = function(v) return utf8.len(v) ~= nil end,
                      what = "a string of valid UTF-8" },
  },
  aliases = { sandbox = "permission_mode" },
}

--- A TOML basic string holding s (which must be valid UTF-8).
---@param s string
---@return string
function M.toml_string(s)
  return '"' .. s:gsub('[%c"\\\127]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\t"] = "\\t",
                    ["\n"] = "\\n", ["\f"] = "\\f", ["\r"] = "\\r" }
    return named[c] or ("\\u%04X"):format(c:byte())
  end) .. '"'
end

function spec.command(self, req)
  local o = self.opts
  local sandbox = o.permission_mode or "workspace-write"
  local argv = { o.bin or "codex", "exec" }
  local function add(...) for _, a in ipairs { ... } do argv[#argv + 1] = a end end
  if req.resume then
    add("resume", "--json", "--skip-git-repo-check", "-c", ('sandbox_mode="%s"'):format(sandbox))
  else
    add("--json", "--sandbox", sandbox, "--skip-git-repo-check")
  end
  if o.system_prompt then add("-c", "developer_instructions=" .. M.toml_string(o.system_prompt)) end
  if o.model then add("--model", o.model) end
  for _, a in ipairs(agent.user_args(o)) do add(a) end
  if req.resume then add(req.resume) end
  add("-")
  return { argv = argv, stdin = req.prompt }
end

function spec.start()
  return { input = 0, output = 0, cached = 0, turns = 0 }
end

-- Codex's own error messages for rate limits and usage caps (these come in
-- structured error events, never from the model's text).
local function is_rate_limit(msg)
  if type(msg) ~= "string" then return false end
  local m = msg:lower()
  return m:find("usage limit", 1, true) ~= nil or m:find("rate limit", 1, true) ~= nil
      or m:find("too many requests", 1, true) ~= nil or m:find("429", 1, true) ~= nil
      or m:find("quota", 1, true) ~= nil
end

function spec.event(_, st, ev)
  local t = ev.type
  if t == "thread.started" then
    st.session_id = str(ev.thread_id)
  elseif t == "item.completed" then
    local item = type(ev.item) == "table" and ev.item or {}
    if item.type == "agent_message" and type(item.text) == "string" then
      st.text = item.text
    end
  elseif t == "turn.completed" then
    local u = type(ev.usage) == "table" and ev.usage or {}
    st.input = st.input + (num(u.input_tokens) or 0)
    st.output = st.output + (num(u.output_tokens) or 0)
    st.cached = st.cached + (num(u.cached_input_tokens) or 0)
    st.turns = st.turns + 1
    st.failed = nil
  elseif t == "turn.failed" then
    local e = type(ev.error) == "table" and ev.error or {}
    st.failed = str(e.message) or "turn failed"
    st.turns = st.turns + 1
  elseif t == "error" then
    st.last_error = str(ev.message)
  end
end

function spec.finish(_, st, res)
  local out = {
    session_id = st.session_id, text = st.text, turns = st.turns,
    tokens = { input = math.tointeger(st.input) or st.input,
               output = math.tointeger(st.output) or st.output,
               cache_read = math.tointeger(st.cached) or st.cached },
  }
  local why = st.failed or (res.code ~= 0 and st.last_error) or nil
  if st.failed then
    out.ok = false
    out.error = st.failed
  elseif res.code ~= 0 and st.last_error then
    out.error = st.last_error
  end
  if why and is_rate_limit(why) then
    out.rate_limited = true
    out.retry_after = agent.retry_after_from(why)
  end
  return out
end

function spec.auth(_, ctx)
  local env = ctx.env
  if env.OPENAI_API_KEY and env.OPENAI_API_KEY ~= "" then return "OPENAI_API_KEY" end
  local home = env.CODEX_HOME
  if not home or home == "" then home = ctx.home and (ctx.home .. "/.codex") end
  local path = home and (home .. "/auth.json")
  local f = path and io.open(path, "rb")
  if f then
    f:close()
    if ctx.home and path:sub(1, #ctx.home + 1) == ctx.home .. "/" then path = "~" .. path:sub(#ctx.home + 1) end
    return path
  end
  return nil, "no OPENAI_API_KEY or ~/.codex/auth.json: set a key, or log in once with `codex login`"
end

function spec.can_run_commands(self)
  local args = agent.user_args(self.opts)
  for _, a in ipairs(args) do
    if a == "--dangerously-bypass-approvals-and-sandbox" then
      return true, "codex runs commands with no sandbox (--dangerously-bypass-approvals-and-sandbox)"
    end
  end
  local mode = self.opts.permission_mode or "workspace-write"
  for i, a in ipairs(args) do
    if (a == "--sandbox" or a == "-s") and args[i + 1] then mode = args[i + 1] end
  end
  if mode == "read-only" then
    return false, "sandbox read-only: codex may run commands but they cannot write files "
      .. "(most checks do): use --permission-mode workspace-write"
  end
  return true, ("codex exec runs commands without asking, inside its sandbox (%s)"):format(mode)
end

--- Codex adapter; options: model, permission_mode (or sandbox: "workspace-write"),
--- system_prompt, plus the common ones.
---@param opts? table
---@return beat.Agent
M.new = agent.define(spec)
M.spec = spec

return M
