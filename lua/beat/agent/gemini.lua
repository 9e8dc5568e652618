--- beat.agent.gemini: Gemini CLI in headless mode.
---
---   gemini --output-format stream-json --approval-mode <mode> --skip-trust [--model M]
---          [--policy <tmp>/policy.toml] [--include-directories <tmp>/context] [args...]
---
--- permission_mode is Gemini's approval mode (yolo | auto_edit | default |
--- plan). allowed_tools and disallowed_tools are Gemini tool names
--- (run_shell_command, write_file, replace, ...) written as allow and deny
--- rules of a policy file given with --policy (the CLI's own mechanism since
--- --allowed-tools was deprecated; a denied tool is not offered to the model
--- at all — checked with 0.61.0 against a logging API server). Headless,
--- anything a rule does not allow and the mode does not approve is refused.
--- system_prompt: Gemini CLI 0.61 can only *replace* its system prompt
--- (GEMINI_SYSTEM_MD), which would drop its tool-use rules; so beat gives the
--- text as a context file, <tmp>/context/GEMINI.md, in a directory added with
--- --include-directories. Gemini sends it with the session's first message as
--- project context (seen in the request with 0.61.0). A user whose settings
--- rename context files (context.fileName) without GEMINI.md must keep it in
--- the list. The temp directory is removed after the run.
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

local MODES = { "yolo", "auto_edit", "default", "plan" }

-- Gemini tool names as policy rules take them: run_shell_command,
-- write_file, mcp_server_*, ... (no quotes, spaces or brackets).
local TOOLS_WHAT = "a list of Gemini tool names such as run_shell_command"
local function tool_names(list)
  for _, name in ipairs(list) do
    if not name:match("^[%w_%-%.%*:]+$") then return false end
  end
  return true
end

local spec = {
  name = "gemini",
  reports_cost = function(self) return self.opts.price ~= nil end,   -- tokens only, priced by opts.price
  bin = "gemini",
  jsonl = true,
  schema = {
    model = "nonempty",
    permission_mode = { enum = MODES },
    approval_mode = { enum = MODES },
    allowed_tools = { "strings", test = tool_names, what = TOOLS_WHAT },
    disallowed_tools = { "strings", test = tool_names, what = TOOLS_WHAT },
    system_prompt = "string",
  },
  aliases = { approval_mode = "permission_mode" },
}

-- The policy file for allowed and disallowed tools: user-tier rules; a deny
-- outranks an allow of the same tool.
local function policy(o)
  local lines = { "# written by beat for one gemini run" }
  local function rules(list, decision, priority)
    for _, name in ipairs(list or {}) do
      lines[#lines + 1] = ("[[rule]]\ntoolName = \"%s\"\ndecision = \"%s\"\npriority = %d\n")
        :format(name, decision, priority)
    end
  end
  rules(o.allowed_tools, "allow", 900)
  rules(o.disallowed_tools, "deny", 999)
  return table.concat(lines, "\n") .. "\n"
end

function spec.command(self, req)
  local o = self.opts
  local argv = { o.bin or "gemini", "--output-format", "stream-json",
                 "--approval-mode", o.permission_mode or "yolo", "--skip-trust" }
  local function add(...) for _, a in ipairs { ... } do argv[#argv + 1] = a end end
  if o.model then add("--model", o.model) end
  local files
  local tools = (o.allowed_tools and #o.allowed_tools > 0) or (o.disallowed_tools and #o.disallowed_tools > 0)
  if tools or o.system_prompt then
    local fs = require("beat.fs")
    local dir = assert(fs.tmpdir("beat-gemini"))
    files = { dir }
    if tools then
      local path = dir .. "/policy.toml"
      local f = assert(io.open(path, "wb"))
      f:write(policy(o))
      f:close()
      add("--policy", path)
    end
    if o.system_prompt then
      assert(fs.mkdir(dir .. "/context"))
      local f = assert(io.open(dir .. "/context/GEMINI.md", "wb"))
      f:write(o.system_prompt)
      f:close()
      add("--include-directories", dir .. "/context")
    end
  end
  for _, a in ipairs(agent.user_args(o)) do add(a) end
  return { argv = argv, stdin = req.prompt, files = files }
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

function spec.auth(_, ctx)
  local env, home = ctx.env, ctx.home
  local function set(v) return env[v] ~= nil and env[v] ~= "" end
  local function readable(path)
    local f = path and io.open(path, "rb")
    if f then f:close() end
    return f ~= nil
  end
  local settings
  if home then
    local f = io.open(home .. "/.gemini/settings.json", "rb")
    if f then
      local ok, v = pcall(require("cjson").decode, f:read("a"))
      f:close()
      settings = ok and type(v) == "table" and v or nil
    end
  end
  local selected = settings and type(settings.security) == "table" and type(settings.security.auth) == "table"
    and settings.security.auth.selectedType
  if env.GOOGLE_GENAI_USE_VERTEXAI == "true" or selected == "vertex-ai" then
    if set("GOOGLE_API_KEY") then return "Vertex AI (GOOGLE_API_KEY)" end
    if set("GOOGLE_CLOUD_PROJECT") and set("GOOGLE_CLOUD_LOCATION") then
      return "Vertex AI (GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_LOCATION; credentials not checked)"
    end
    return nil, "Vertex AI needs GOOGLE_API_KEY, or GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION"
  end
  if set("GEMINI_API_KEY") then return "GEMINI_API_KEY" end
  for _, path in ipairs { home and (home .. "/.gemini/.env"), home and (home .. "/.env") } do
    local f = io.open(path, "rb")
    if f then
      local data = f:read("a")
      f:close()
      if data:match("%f[%w_]GEMINI_API_KEY%s*=%s*[^%s]") then
        return "GEMINI_API_KEY in " .. path:gsub("^" .. home:gsub("%p", "%%%0"), "~")
      end
    end
  end
  local creds = home and (home .. "/.gemini/oauth_creds.json")
  if readable(creds) then
    if selected == "oauth-personal" or env.GOOGLE_GENAI_USE_GCA == "true" then
      return "~/.gemini/oauth_creds.json"
    end
    return nil, "~/.gemini/oauth_creds.json is there but a headless run needs the auth type: "
      .. "set security.auth.selectedType to \"oauth-personal\" in ~/.gemini/settings.json "
      .. "(logging in once with `gemini` does), or GOOGLE_GENAI_USE_GCA=true"
  end
  return nil, "no GEMINI_API_KEY or ~/.gemini/oauth_creds.json: set a key, or log in once with `gemini`"
end

function spec.can_run_commands(self)
  local o = self.opts
  local mode = o.permission_mode or "yolo"
  local args = agent.user_args(o)
  for i, a in ipairs(args) do
    if a == "--approval-mode" and args[i + 1] then mode = args[i + 1] end
    if a == "-y" or a == "--yolo" then mode = "yolo" end
  end
  local function listed(list)
    for _, n in ipairs(list or {}) do
      if n == "run_shell_command" or n == "*" then return true end
    end
    return false
  end
  if listed(o.disallowed_tools) then
    return false, "run_shell_command is among the disallowed tools"
  end
  if mode == "plan" then return false, "approval mode plan is read-only: it runs no commands" end
  if mode == "yolo" then return true, "approval mode yolo runs every tool without asking" end
  if listed(o.allowed_tools) then
    return true, ("approval mode %s, and the allowed tools include run_shell_command"):format(mode)
  end
  return false, ("approval mode %s asks before running commands, and nobody answers in a headless "
    .. "run: add --allowed-tools run_shell_command, or use --permission-mode yolo"):format(mode)
end

--- Gemini CLI adapter; options: model, permission_mode (or approval_mode: "yolo"),
--- allowed_tools, disallowed_tools, system_prompt, plus the common ones.
---@param opts? table
---@return beat.Agent
M.new = agent.define(spec)
M.spec = spec

return M
