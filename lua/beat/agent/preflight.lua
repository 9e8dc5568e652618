--- beat.agent.preflight — what beat can tell about an agent before running
--- it, without calling a model: where its CLI finds credentials, whether it
--- reports what a run cost, whether it may run shell commands by itself.
--- Reads files and the environment only.
local check = require "beat.check"

---@class beat.Agent
local Agent = {}

--- Where this agent's CLI would find its credentials, without calling a
--- model: an API key variable, a login file, ... Returns a short description
--- of the source ("ANTHROPIC_API_KEY", "~/.codex/auth.json"), or nil and a
--- one-line hint on how to authenticate. Agents that need none (command, fn,
--- tune) return "not needed".
---@return string|nil source, string? hint
function Agent:credentials()
  if not self.spec.auth then return "not needed" end
  local env, home = self:environment()
  return self.spec.auth(self, { env = env, home = home })
end

--- Whether this agent's results carry what each run cost: true (Claude Code
--- and aider report it; tune costs nothing), false (it reports none: a
--- command agent, Codex or Gemini without `price`), nil when beat cannot tell
--- (a Lua fn agent, a command agent with `jsonl`). beat.budget refuses
--- max_cost_usd for an agent that reports no cost unless cost_per_iteration
--- is given.
---@return boolean|nil
function Agent:reports_cost()
  local r = self.spec.reports_cost
  if type(r) == "function" then return r(self) end
  return r
end

--- Whether the agent, as configured (permission mode, allowed and disallowed
--- tools, its arguments, the CLI's settings files), may run shell commands —
--- such as the check command — by itself in a headless run. Returns true,
--- false, or nil when beat cannot tell, and a one-line reason (for false,
--- what to change). Reads files only; never runs the CLI.
---@param opts? {command?: string|string[], cwd?: string} the command it should be able to run; the work tree
---@return boolean|nil ok, string reason
function Agent:can_run_commands(opts)
  opts = opts or {}
  check.options("beat.agent." .. self.name .. ":can_run_commands", opts,
    { command = "string|table", cwd = "string" })
  if self.spec.can_run_commands then
    local env, home = self:environment()
    return self.spec.can_run_commands(self, { command = opts.command, cwd = opts.cwd,
                                              env = env, home = home })
  end
  if self.spec.run then return nil, self.name .. " runs in beat itself: it runs no shell by its own choice" end
  return nil, "beat cannot tell whether " .. self.name .. " runs shell commands"
end

return Agent
