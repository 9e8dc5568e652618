--- beat.agent.env — the environment an agent's process gets: beat's own,
--- with the variables that make Claude Code think it is nested in another
--- session removed (unless kept), the adapter's, the command's and the run's
--- `env` applied, BEAT_ITERATION added. Re-exported by beat.agent.
local M = {}

---@class beat.Agent
local Agent = {}
M.methods = Agent

-- Claude Code variables kept by default: provider and auth configuration a user
-- sets in their shell on purpose. Everything else named CLAUDECODE or
-- CLAUDE_CODE_* is removed from the child's environment unless the adapter's
-- or the run's `env` sets it.
M.default_keep_env = {
  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY",
  "CLAUDE_CODE_SKIP_BEDROCK_AUTH", "CLAUDE_CODE_SKIP_VERTEX_AUTH",
  "CLAUDE_CODE_SKIP_FOUNDRY_AUTH", "CLAUDE_CODE_OAUTH_TOKEN",
}

--- Whether a variable marks a nested Claude Code session (and so is scrubbed).
---@param name string
---@return boolean
function M.is_nested_marker(name)
  return name == "CLAUDECODE" or name:sub(1, 12) == "CLAUDE_CODE_"
end

-- The nested-session variables beat itself was started with (found once:
-- that environment does not change).
local inherited_markers
local function nested_markers()
  if not inherited_markers then
    inherited_markers = {}
    for k in pairs(require("beat.exec").environ()) do
      if M.is_nested_marker(k) then inherited_markers[#inherited_markers + 1] = k end
    end
    table.sort(inherited_markers)
  end
  return inherited_markers
end

--- The `env` table to give beat.exec for an agent run: the adapter's env, the
--- command's env and the run's env merged (later wins), CLAUDECODE and
--- CLAUDE_CODE_* from beat's own environment removed unless set there or kept,
--- BEAT_ITERATION added (BEAT_RUN_ID comes with the run's env).
---@param layers table[] env tables, lowest priority first
---@param keep string[] names never scrubbed
---@param iteration integer|nil
---@return table<string, string|false>
function M.child_env(layers, keep, iteration)
  local env = {}
  for _, name in ipairs(nested_markers()) do env[name] = false end
  for _, name in ipairs(keep or {}) do env[name] = nil end
  for i = 1, layers.n or #layers do
    for k, v in pairs(layers[i] or {}) do
      if v == false then env[k] = false else env[k] = tostring(v) end
    end
  end
  if iteration ~= nil and env.BEAT_ITERATION == nil then env.BEAT_ITERATION = tostring(iteration) end
  return env
end

--- The environment the agent's CLI would get (beat's, nested-session
--- variables scrubbed, the adapter's `env` applied), and the home directory in it. For checks that read
--- credentials or settings without running anything.
---@return table<string, string> env, string|nil home
function Agent:environment()
  local env = require("beat.exec").environ()
  local changes = M.child_env({ self.opts.env, n = 1 }, self.opts.keep_env or M.default_keep_env)
  for k, v in pairs(changes) do
    if v == false then env[k] = nil else env[k] = v end
  end
  return env, env.HOME
end

return M
