--- beat.agent.named — agents named on the command line (`beat loop -a
--- ...`, BEAT_AGENT): a known CLI's name with its arguments, or any command
--- line; words split as a shell would, without expanding anything. Bad input
--- raises a usage error (one line, exit 2). Re-exported by beat.agent.
local check = require "beat.check"

local M = {}

-- beat.agent, which requires this file: looked up when called
local function agent() return require "beat.agent" end

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
    if (spec.schema or {})[opt] or agent().common_schema[opt] then names[#names + 1] = name end
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
    ctor, schema = agent().command, require("beat.agent.command").spec.schema
  else
    ctor, schema = agent()[spec.name], require("beat.agent." .. spec.name).spec.schema
  end
  local keys = {}
  for k in pairs(o) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not (schema[k] or agent().common_schema[k]) then
      local what = spec.name == "command" and ("the command agent " .. spec.argv[1]) or ("agent " .. spec.name)
      if PASS_FLAGS[k] then
        usage("%s does not take %s (%s): %s %s", what, k, PASS_FLAGS[k], takers(k),
          takers(k):find(" and ", 1, true) and "do" or "does")
      end
      usage("%s does not take option %s", what, k)
    end
  end
  local ok, made = pcall(ctor, o)
  if not ok then
    local msg = type(made) == "table" and made.usage or tostring(made)
    usage("%s", (msg:gsub("^[^\n]-:%d+: ", "")))
  end
  return made
end

return M
