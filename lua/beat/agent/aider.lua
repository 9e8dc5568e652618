--- beat.agent.aider: aider, one message per run.
---
---   aider --message-file <F> --yes-always --no-auto-commits --no-stream --no-pretty
---         --no-check-update [--model M] [--read <S>] [args...] [files...]
---
--- system_prompt goes in a second private temp file given with --read (a
--- read-only file in the chat), removed after the run. aider has no
--- permission modes or tool lists: those options are not taken.
---
--- The prompt is written to a private temp file (removed afterwards) and given
--- with --message-file, so it never passes through a shell or the argument
--- list. aider is not on npm, so these flags follow aider's documented options
--- (aider/args.py) rather than a --help run here. beat keeps the work tree
--- under its own git control, hence --no-auto-commits.
---
--- aider prints plain text. Parsed: its status line
--- "Tokens: 2.4k sent, 150 received. Cost: $0.01 message, $0.02 session."
--- (tokens and cost of the run) and its error lines
--- "litellm.RateLimitError: ..." (a rate limit). The text is the tail of the
--- rest of the output.
local agent = require "beat.agent"

local M = {}

local spec = {
  name = "aider",
  reports_cost = true,      -- its "Cost: $X message" line
  bin = "aider",
  schema = { model = "nonempty", files = "strings", system_prompt = "string" },
}

-- API key variables aider (through litellm) reads for the providers people use most.
local KEY_VARS = { "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
                   "OPENROUTER_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "XAI_API_KEY",
                   "COHERE_API_KEY", "AZURE_API_KEY", "AWS_ACCESS_KEY_ID", "OLLAMA_API_BASE" }

function spec.command(self, req)
  local o = self.opts
  local file, dir = agent.temp_file("beat-aider", "message.txt", req.prompt)
  local argv = { o.bin or "aider", "--message-file", file, "--yes-always", "--no-auto-commits",
                 "--no-stream", "--no-pretty", "--no-check-update" }
  if o.model then argv[#argv + 1] = "--model"; argv[#argv + 1] = o.model end
  if o.system_prompt then
    local path = dir .. "/instructions.md"
    local f = assert(io.open(path, "wb"))
    f:write(o.system_prompt)
    f:close()
    argv[#argv + 1] = "--read"
    argv[#argv + 1] = path
  end
  for _, a in ipairs(agent.user_args(o)) do argv[#argv + 1] = a end
  for _, a in ipairs(o.files or {}) do argv[#argv + 1] = a end
  return { argv = argv, files = { dir } }
end

function spec.start()
  return { lines = {}, n = 0, size = 0 }
end

-- "2.4k" → 2400, "1.1M" → 1100000, "345" → 345
local function count(s)
  local n, suffix = s:match("^([%d.,]+)([kKmM]?)$")
  n = n and tonumber((n:gsub(",", "")))
  if not n then return nil end
  local mult = ({ k = 1e3, K = 1e3, m = 1e6, M = 1e6 })[suffix] or 1
  return math.floor(n * mult + 0.5)
end

function spec.line(_, st, line, stream)
  local sent, recv = line:match("^Tokens: ([%d.,]+[kKmM]?) sent.-([%d.,]+[kKmM]?) received")
  if sent then
    st.input = (st.input or 0) + (count(sent) or 0)
    st.output = (st.output or 0) + (count(recv) or 0)
    local cost = line:match("Cost: %$([%d.,]+) message")
    if cost then st.cost = (st.cost or 0) + (tonumber((cost:gsub(",", ""))) or 0) end
    return
  end
  if line:match("^litellm%.RateLimitError") or line:match("^RateLimitError") then
    st.rate_limited = true
    st.rate_error = line
    return
  end
  if stream == "stdout" then
    st.n = st.n + 1
    st.lines[st.n] = line
    st.size = st.size + #line + 1
    -- keep about the last 256 KiB
    while st.size > 256 * 1024 and st.first_kept ~= st.n do
      st.first_kept = (st.first_kept or 1)
      st.size = st.size - #st.lines[st.first_kept] - 1
      st.lines[st.first_kept] = nil
      st.first_kept = st.first_kept + 1
    end
  end
end

function spec.finish(_, st)
  local out = {}
  local kept = {}
  for i = st.first_kept or 1, st.n do kept[#kept + 1] = st.lines[i] end
  local text = table.concat(kept, "\n"):gsub("^%s+", ""):gsub("%s+$", "")
  if text ~= "" then out.text = text end
  if st.input then out.tokens = { input = st.input, output = st.output } end
  out.cost_usd = st.cost
  if st.rate_limited then
    out.rate_limited = true
    out.ok = false
    out.error = st.rate_error
    out.retry_after = agent.retry_after_from(st.rate_error)
  end
  return out
end

function spec.auth(_, ctx)
  for _, v in ipairs(KEY_VARS) do
    if ctx.env[v] and ctx.env[v] ~= "" then return v end
  end
  for _, name in ipairs { ".aider.conf.yml", ".env" } do
    local path = ctx.home and (ctx.home .. "/" .. name)
    local f = path and io.open(path, "rb")
    if f then
      local data = f:read("a")
      f:close()
      if data:lower():match("api[%-_]key") then return "~/" .. name .. " (an API key entry)" end
    end
  end
  return nil, "no provider API key (ANTHROPIC_API_KEY, OPENAI_API_KEY, ...) in the environment, "
    .. "~/.aider.conf.yml or ~/.env"
end

function spec.can_run_commands()
  return nil, "aider runs a shell command only when it proposes one, as its own settings allow"
end

--- aider adapter; options: model, files (paths added to the chat), system_prompt,
--- plus the common ones.
---@param opts? table
---@return beat.Agent
M.new = agent.define(spec)
M.spec = spec

return M
