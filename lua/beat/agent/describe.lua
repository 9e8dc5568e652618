--- beat.agent.describe — what an agent is, for the journal and `beat
--- agents`: its options, program and command line (agent:describe) and its
--- CLI's version (agent:version). Runs nothing but `<bin> --version`.
local helpers = require "beat.agent.helpers"

---@class beat.Agent
local Agent = {}

-- Options recorded as they are by describe(): plain settings, never code,
-- the environment's values or what argv already shows.
local NOT_DESCRIBED = { argv = true, bin = true, args = true, extra_args = true, env = true, keep_env = true,
  fn = true, summarize = true, prompt_via = true }

local function plain(v, depth)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t ~= "table" or depth > 4 then return nil end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" or math.type(k) == "integer" then out[k] = plain(x, depth + 1) end
  end
  return out
end

--- What the journal records about this agent (run_start), without running
--- anything: {name, program, argv, prompt_via, options, env}. `argv` is the
--- command line with "{prompt}" (or "{prompt_file}") where the prompt goes;
--- `prompt_via` is "arg", "file" or "stdin"; `options` are the plain
--- constructor options (model, max_turns, params, ...); `env` the variables
--- the agent sets (the journal redacts their values). In-process agents (fn,
--- tune) have no program or argv. A version is not included: knowing it means
--- running `<program> --version` (see Agent:version).
---@return table
function Agent:describe()
  local d = { name = self.name, options = {} }
  for k, v in pairs(self.opts) do
    if not NOT_DESCRIBED[k] then d.options[k] = plain(v, 0) end
  end
  if next(d.options) == nil then d.options = nil end
  if self.opts.env then d.env = self.opts.env end
  if self.spec.run or not self.spec.command then return d end
  local ok, cmd = pcall(self.spec.command, self, { prompt = "{prompt}" })
  if not ok or type(cmd) ~= "table" or type(cmd.argv) ~= "table" then return d end
  local function temp(a)
    for _, f in ipairs(cmd.files or {}) do
      if a == f or a:sub(1, #f + 1) == f .. "/" then return true end
    end
  end
  local argv, via = {}, cmd.stdin and "stdin" or nil
  for i, a in ipairs(cmd.argv) do
    if temp(a) then a, via = "{prompt_file}", "file" end
    if a:find("{prompt}", 1, true) then via = "arg" end
    argv[i] = a
  end
  helpers.remove_files(cmd.files)   -- the adapter's temporary prompt file
  d.program, d.argv, d.prompt_via = argv[1], argv, via
  return d
end

--- The executable this agent runs, and its --version output (first line), or
--- nil and why. Runs `<bin> --version` (needs a beat task).
---@return string|nil version, string? err
function Agent:version()
  if not self.spec.bin then return nil, "no executable" end
  local beat = require "beat"
  local argv = { self.opts.bin or self.spec.bin }
  for _, a in ipairs(self.spec.version_args or { "--version" }) do argv[#argv + 1] = a end
  local r, err = beat.exec(argv, { timeout = 20, grace = 1, max_output = 64 * 1024 })
  if not r then return nil, err end
  if r.code ~= 0 then return nil, ("%s --version exited %d"):format(argv[1], r.code) end
  local out = (r.stdout or ""):match("[^\n]*%S[^\n]*") or (r.stderr or ""):match("[^\n]*%S[^\n]*")
  return out and (out:gsub("^%s+", ""):gsub("%s+$", "")) or ""
end

return Agent
