--- beat.agent.claude: Claude Code in headless mode.
---
---   claude -p --output-format stream-json --verbose --permission-mode <mode>
---          [--model M] [--max-turns N] [--append-system-prompt S]
---          [--allowedTools T1,T2] [--disallowedTools T3] [--resume SESSION] [args...]
---
--- The prompt goes on stdin. Checked against Claude Code 2.1.332's --help
--- (--max-turns works though --help no longer lists it; so does
--- --permission-mode default, the same as manual). Permission modes, as the
--- real CLI behaves headless (tests/agent_claude_real_spec.lua): in every
--- mode but bypassPermissions a Bash command that needs approval is refused
--- (nobody answers the prompt; the result's `permission_denials` lists it)
--- unless an allow rule (`--allowedTools Bash` or `Bash(make *)`, or the
--- settings files' permissions.allow) covers it; acceptEdits still runs
--- simple file commands such as `echo x > f`. bypassPermissions runs
--- everything, but as root the CLI refuses to start unless IS_SANDBOX=1.
--- `--disallowedTools Bash` removes the tool from what the model is offered.
--- Parsed from the
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
  reports_cost = true,      -- total_cost_usd in the result record
  resume = true,
  jsonl = true,
  schema = {
    model = "nonempty", max_turns = "posint", permission_mode = { enum = PERMISSION_MODES },
    allowed_tools = "strings", disallowed_tools = "strings",
    system_prompt = "string", append_system_prompt = "string",
  },
  aliases = { append_system_prompt = "system_prompt" },
}

function spec.command(self, req)
  local o = self.opts
  local argv = { o.bin or "claude", "-p", "--output-format", "stream-json", "--verbose",
                 "--permission-mode", o.permission_mode or "acceptEdits" }
  local function add(...) for _, a in ipairs { ... } do argv[#argv + 1] = a end end
  if o.model then add("--model", o.model) end
  if o.max_turns then add("--max-turns", tostring(o.max_turns)) end
  if o.system_prompt then add("--append-system-prompt", o.system_prompt) end
  if o.allowed_tools and #o.allowed_tools > 0 then
    add("--allowedTools", table.concat(o.allowed_tools, ","))
  end
  if o.disallowed_tools and #o.disallowed_tools > 0 then
    add("--disallowedTools", table.concat(o.disallowed_tools, ","))
  end
  if req.resume then add("--resume", req.resume) end
  for _, a in ipairs(agent.user_args(o)) do add(a) end
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
  -- with --json-schema: the validated object (beat.judge reads it)
  if type(r.structured_output) == "table" then out.structured_output = r.structured_output end
  out.turns = math.tointeger(num(r.num_turns)) or num(r.num_turns)
  -- Tool calls the permission mode refused (each tool once, in order).
  if type(r.permission_denials) == "table" then
    local seen = {}
    for _, d in ipairs(r.permission_denials) do
      local name = type(d) == "table" and str(d.tool_name)
      if name and not seen[name] then
        seen[name] = true
        out.denied_tools = out.denied_tools or {}
        out.denied_tools[#out.denied_tools + 1] = name
      end
    end
  end
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

--------------------------------------------------------------------------------
-- Checks without running the CLI

local function file_exists(path)
  local f = path and io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function read_json(path)
  local f = path and io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  local ok, v = pcall(require("cjson").decode, data)
  return ok and type(v) == "table" and v or nil
end

-- Shows a path under home as ~/...
local function tilde(path, home)
  if home and home ~= "" and path:sub(1, #home + 1) == home .. "/" then
    return "~" .. path:sub(#home + 1)
  end
  return path
end

local function config_dir(ctx)
  local d = ctx.env.CLAUDE_CONFIG_DIR
  if d and d ~= "" then return d end
  return ctx.home and (ctx.home .. "/.claude") or nil
end

function spec.auth(_, ctx)
  local env = ctx.env
  for _, v in ipairs { "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY" } do
    if env[v] and env[v] ~= "" and env[v] ~= "0" and env[v] ~= "false" then
      return v .. " (the cloud provider's credentials are not checked)"
    end
  end
  for _, v in ipairs { "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN" } do
    if env[v] and env[v] ~= "" then return v end
  end
  local dir = config_dir(ctx)
  if dir and file_exists(dir .. "/.credentials.json") then
    return tilde(dir .. "/.credentials.json", ctx.home)
  end
  local settings = dir and read_json(dir .. "/settings.json")
  if settings and type(settings.apiKeyHelper) == "string" then
    return "apiKeyHelper in " .. tilde(dir .. "/settings.json", ctx.home)
  end
  return nil, "no ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN or ~/.claude/.credentials.json: "
    .. "set a key, or log in once with `claude` (or make a token with `claude setup-token`)"
end

-- The value after `flag` (or in --flag=value form) among a CLI's arguments.
local function arg_values(args, names)
  local out = {}
  for i, a in ipairs(args) do
    for _, n in ipairs(names) do
      if a == n and args[i + 1] then out[#out + 1] = args[i + 1] end
      if a:sub(1, #n + 1) == n .. "=" then out[#out + 1] = a:sub(#n + 2) end
    end
  end
  return out
end

local function is_root()
  local f = io.open("/proc/self/status", "rb")
  if not f then return false end
  local data = f:read("a")
  f:close()
  return data:match("\nUid:%s+(%d+)") == "0"
end

-- Whether a permission rule lets Bash run `command` (nil: any command).
-- Rules: "Bash" (every command), "Bash(npm test)" (that command),
-- "Bash(npm run:*)" (a prefix, the older syntax), "Bash(git *)" (* matches anything).
local function bash_rule_allows(rule, command)
  if rule == "Bash" or rule == "Bash(*)" then return true end
  local inner = rule:match("^Bash%((.*)%)$")
  if not inner then return false end
  if command == nil then return nil end
  local prefix = inner:match("^(.*):%*$")
  if prefix then return command:sub(1, #prefix) == prefix end
  local pat = "^" .. inner:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
  return command:match(pat) ~= nil
end

-- Permission rules from the settings files Claude Code reads for a run in cwd.
local function settings_rules(ctx, cwd)
  local allow, deny = {}, {}
  local files = { "/etc/claude-code/managed-settings.json" }
  local dir = config_dir(ctx)
  if dir then files[#files + 1] = dir .. "/settings.json" end
  if cwd then
    files[#files + 1] = cwd .. "/.claude/settings.json"
    files[#files + 1] = cwd .. "/.claude/settings.local.json"
  end
  for _, path in ipairs(files) do
    local s = read_json(path)
    local p = s and type(s.permissions) == "table" and s.permissions
    if p then
      for _, list in ipairs { { p.allow, allow }, { p.deny, deny } } do
        if type(list[1]) == "table" then
          for _, r in ipairs(list[1]) do
            if type(r) == "string" then
              list[2][#list[2] + 1] = { rule = r, from = tilde(path, ctx.home) }
            end
          end
        end
      end
    end
  end
  return allow, deny
end

-- The permission mode a run gets: the option, or what the user's args say.
local function effective_mode(o)
  local args = agent.user_args(o)
  local mode = o.permission_mode or "acceptEdits"
  local given = arg_values(args, { "--permission-mode" })
  if #given > 0 then mode = given[#given] end
  for _, a in ipairs(args) do
    if a == "--dangerously-skip-permissions" then mode = "bypassPermissions" end
  end
  return mode
end

local ROOT_REFUSAL = "as root Claude Code refuses to start in bypassPermissions mode unless "
  .. "IS_SANDBOX=1 is set (only in a sandbox: env = {IS_SANDBOX = \"1\"}, or export it)"

-- Why the CLI would exit at once with these options, or nil.
function spec.refuses_to_start(self, ctx)
  if effective_mode(self.opts) == "bypassPermissions" and is_root() and ctx.env.IS_SANDBOX ~= "1" then
    return ROOT_REFUSAL
  end
end

function spec.can_run_commands(self, q)
  local o = self.opts
  local args = agent.user_args(o)
  local mode = effective_mode(o)
  local command = q.command
  if type(command) == "table" then command = table.concat(command, " ") end

  local allow, deny = settings_rules(q, q.cwd)
  for _, r in ipairs(o.allowed_tools or {}) do allow[#allow + 1] = { rule = r, from = "allowed tools" } end
  for _, r in ipairs(arg_values(args, { "--allowedTools", "--allowed-tools" })) do
    for _, x in ipairs(agent.split_list(r)) do allow[#allow + 1] = { rule = x, from = "its arguments" } end
  end
  for _, r in ipairs(o.disallowed_tools or {}) do deny[#deny + 1] = { rule = r, from = "disallowed tools" } end
  for _, r in ipairs(arg_values(args, { "--disallowedTools", "--disallowed-tools" })) do
    for _, x in ipairs(agent.split_list(r)) do deny[#deny + 1] = { rule = x, from = "its arguments" } end
  end

  for _, d in ipairs(deny) do
    if bash_rule_allows(d.rule, command) == true then
      return false, ("%s is denied (%s)"):format(d.rule, d.from)
    end
  end
  if mode == "bypassPermissions" then
    local refusal = spec.refuses_to_start(self, q)
    if refusal then return false, refusal end
    return true, "permission mode bypassPermissions runs every command without asking"
  end
  if mode == "plan" then
    return false, "permission mode plan is read-only: it runs no commands"
  end
  local partial
  for _, a in ipairs(allow) do
    local ok = bash_rule_allows(a.rule, command)
    if ok == true then
      return true, ("permission mode %s, and %s allows %s"):format(mode, a.from,
        command and ("`" .. command .. "`") or "Bash commands")
    elseif ok == nil then
      partial = partial or a
    end
  end
  if partial then
    return nil, ("permission mode %s allows only Bash commands matching %s (%s)")
      :format(mode, partial.rule, partial.from)
  end
  local hint = "allow them with --allowed-tools Bash (Lua: allowed_tools = {\"Bash\"}), or narrower "
    .. "with 'Bash(make *)'"
  return false, ("permission mode %s asks before running %s, and nobody answers in a headless run: %s")
    :format(mode, command and ("`" .. command .. "`") or "commands", hint)
end

--- Claude Code adapter; see beat.agent.claude for the options.
---@param opts? beat.agent.ClaudeOpts
---@return beat.Agent
M.new = agent.define(spec)
M.spec = spec

return M
