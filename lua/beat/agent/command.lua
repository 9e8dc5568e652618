--- beat.agent.command: any program as an agent.
---
---   beat.agent.command{argv = {"my-agent", "--task", "{prompt}"}}
---   beat.agent.command{argv = {"my-agent"}, prompt_via = "stdin"}
---   beat.agent.command{argv = {"my-agent", "--file", "{prompt_file}"}}
---
--- argv is run directly (no shell). The prompt is delivered as:
---   "arg"   — replaces "{prompt}" inside argv elements (default when argv has it);
---   "file"  — written to a private temp file whose path replaces "{prompt_file}"
---             (or is appended when argv has no placeholder); removed afterwards
---             (default when argv has "{prompt_file}");
---   "stdin" — written to stdin, then stdin is closed (the default otherwise).
--- `args` (or its older name extra_args) are appended to argv. The text is
--- the tail of stdout. ok is exit code 0. With `jsonl = true`,
--- stdout lines that are JSON objects go to on_event and a line such as
--- {"type":"result","cost_usd":0.1,"tokens":{"input":1,"output":2},"text":"..."}
--- fills the result fields (so a wrapper script can report cost).
local agent = require "beat.agent"

local M = {}

local num, str = agent.num, agent.str

local spec = {
  name = "command",
  -- a jsonl wrapper may report cost in its result line; a plain program cannot
  reports_cost = function(self) if self.opts.jsonl then return nil end return false end,
  schema = {
    argv = "strings", prompt_via = { enum = { "arg", "stdin", "file" } }, jsonl = "boolean",
  },
}

local function has(argv, placeholder)
  for _, a in ipairs(argv) do
    if a:find(placeholder, 1, true) then return true end
  end
  return false
end

function spec.init(o, where)
  if not o.argv or #o.argv == 0 then
    error(where .. ": opts.argv is required (a list such as {\"my-agent\", \"{prompt}\"})", 3)
  end
  if o.bin then
    error(where .. ": opts.bin is not used: the program is opts.argv[1]", 3)
  end
  if not o.prompt_via then
    if has(o.argv, "{prompt}") then o.prompt_via = "arg"
    elseif has(o.argv, "{prompt_file}") then o.prompt_via = "file"
    else o.prompt_via = "stdin" end
  elseif o.prompt_via == "arg" and not has(o.argv, "{prompt}") then
    error(where .. ": opts.prompt_via is \"arg\" but no element of opts.argv contains {prompt}", 3)
  end
end

-- Plain (non-pattern) replacement of every occurrence of `what` in s.
local function replace(s, what, with)
  local out, pos = {}, 1
  while true do
    local i, j = s:find(what, pos, true)
    if not i then break end
    out[#out + 1] = s:sub(pos, i - 1)
    out[#out + 1] = with
    pos = j + 1
  end
  out[#out + 1] = s:sub(pos)
  return table.concat(out)
end

function spec.command(self, req)
  local o = self.opts
  local argv, files, stdin = {}, nil, nil
  local prompt_file
  if o.prompt_via == "file" then
    local fs = require("beat").fs
    local dir = assert(fs.tmpdir("beat-prompt"))
    prompt_file = dir .. "/prompt.txt"
    local f = assert(io.open(prompt_file, "wb"))
    f:write(req.prompt)
    f:close()
    files = { prompt_file, dir }
  elseif o.prompt_via == "stdin" then
    stdin = req.prompt
  end
  for i, a in ipairs(o.argv) do
    if o.prompt_via == "arg" then a = replace(a, "{prompt}", req.prompt) end
    if prompt_file then a = replace(a, "{prompt_file}", prompt_file) end
    argv[i] = a
  end
  if prompt_file and not has(o.argv, "{prompt_file}") then argv[#argv + 1] = prompt_file end
  for _, a in ipairs(agent.user_args(o)) do argv[#argv + 1] = a end
  return { argv = argv, stdin = stdin, files = files }
end

function spec.start(self)
  return { lines = {}, first = 1, n = 0, size = 0, jsonl = self.opts.jsonl }
end

function spec.line(_, st, line, stream)
  if stream ~= "stdout" then return end
  st.n = st.n + 1
  st.lines[st.n] = line
  st.size = st.size + #line + 1
  while st.size > 256 * 1024 and st.first < st.n do
    st.size = st.size - #st.lines[st.first] - 1
    st.lines[st.first] = nil
    st.first = st.first + 1
  end
end

function spec.event(self, st, ev, line)
  if ev.type == "result" then st.result = ev end
  spec.line(self, st, line, "stdout")
end

function spec.finish(_, st)
  local out = {}
  local r = st.result
  if r then
    out.text = str(r.text)
    out.cost_usd = num(r.cost_usd)
    if type(r.tokens) == "table" then
      out.tokens = { input = num(r.tokens.input) or 0, output = num(r.tokens.output) or 0 }
    end
    out.turns = num(r.turns)
    out.session_id = str(r.session_id)
    if r.rate_limited == true then out.rate_limited = true; out.ok = false end
    out.retry_after = num(r.retry_after)
    if str(r.error) then out.error = r.error; out.ok = false end
  end
  if not out.text then
    local kept = {}
    for i = st.first, st.n do kept[#kept + 1] = st.lines[i] end
    local text = table.concat(kept, "\n")
    if text ~= "" then out.text = text end
  end
  return out
end

--- Any program as an agent; see beat.agent.command.
---@param opts {argv: string[], prompt_via?: "arg"|"stdin"|"file", jsonl?: boolean, env?: table, timeout?: number|string}
---@return beat.Agent
local new = agent.define(spec)

function M.new(opts)
  local a = new(opts)
  a.spec = setmetatable({ jsonl = a.opts.jsonl }, { __index = spec })
  return a
end
M.spec = spec

return M
