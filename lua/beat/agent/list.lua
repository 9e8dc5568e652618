--- beat.agent.list: what `beat agents` shows — each adapter, whether its CLI
--- is on PATH, and the CLI's version — and what `beat agents check` shows:
--- whether each CLI can run headless here.
---
---   for _, row in ipairs(require("beat.agent.list").list()) do ... end
---   print(require("beat.agent.list").format(rows))
---   local rows = require("beat.agent.list").check { names = {"claude"} }
---   io.write(require("beat.agent.list").format_check(rows))
local M = {}

-- The adapters in the order shown, with the executable each one drives.
M.adapters = {
  { name = "claude", bin = "claude", package = "npm @anthropic-ai/claude-code",
    summary = "Claude Code: claude -p --output-format stream-json" },
  { name = "codex", bin = "codex", package = "npm @openai/codex",
    summary = "OpenAI Codex: codex exec --json" },
  { name = "gemini", bin = "gemini", package = "npm @google/gemini-cli",
    summary = "Gemini CLI: gemini --output-format stream-json" },
  { name = "aider", bin = "aider", package = "pip aider-chat",
    summary = "aider: aider --message-file" },
  { name = "command", summary = "any program: command{argv = {...}}" },
  { name = "fn", summary = "a Lua function" },
  { name = "tune", summary = "offline proposer: edits parameters in files" },
}

--- The full path of an executable found on PATH (or the path itself when it
--- contains a slash and is executable), or nil.
---@param name string
---@param path? string PATH to search (default: $PATH)
---@return string|nil
function M.which(name, path)
  return (require("beat.exec").which(name, path))
end

---@class beat.AgentListRow
---@field name string adapter name (beat.agent.<name>)
---@field bin string|nil executable it runs
---@field path string|nil where that executable is, when installed
---@field installed boolean
---@field version string|nil first line of `<bin> --version`
---@field error string|nil why the version could not be read
---@field package string|nil where to install it from
---@field summary string

--- One row per adapter. Runs `<bin> --version` for each installed CLI (in
--- parallel, each with a 20 s timeout), so it must be called inside a task.
---@param opts? {path?: string, bins?: table<string, string>} PATH to search; executable per adapter name
---@return beat.AgentListRow[]
function M.list(opts)
  opts = opts or {}
  local beat = require "beat"
  local rows, jobs = {}, {}
  for i, a in ipairs(M.adapters) do
    local row = { name = a.name, bin = a.bin, package = a.package, summary = a.summary }
    if opts.bins and opts.bins[a.name] then row.bin = opts.bins[a.name] end
    if row.bin then
      row.path = M.which(row.bin, opts.path)
      row.installed = row.path ~= nil
      if row.installed then
        jobs[#jobs + 1] = beat.go(function()
          local r, err = beat.exec({ row.path, "--version" },
            { timeout = 20, grace = 1, max_output = 64 * 1024 })
          if not r then row.error = err
          elseif r.code ~= 0 then row.error = ("--version exited %d"):format(r.code)
          else
            local line = (r.stdout or ""):match("[^\n]*%S[^\n]*") or (r.stderr or ""):match("[^\n]*%S[^\n]*")
            row.version = line and (line:gsub("^%s+", ""):gsub("%s+$", "")) or nil
          end
        end)
      end
    else
      row.installed = true
      row.version = "built in"
    end
    rows[i] = row
  end
  for _, t in ipairs(jobs) do t:join() end
  return rows
end

-- Pads each column but the last to its widest cell, two spaces apart.
local function table_text(lines)
  local widths = {}
  for _, cells in ipairs(lines) do
    for i = 1, #cells - 1 do widths[i] = math.max(widths[i] or 0, utf8.len(cells[i]) or #cells[i]) end
  end
  local out = {}
  for _, cells in ipairs(lines) do
    local parts = {}
    for i, c in ipairs(cells) do
      parts[i] = i < #cells and (c .. (" "):rep(widths[i] - (utf8.len(c) or #c))) or c
    end
    out[#out + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  return table.concat(out, "\n") .. "\n"
end

--- Formats rows as the text `beat agents` prints: columns as wide as their
--- longest entry.
---@param rows beat.AgentListRow[]
---@return string
function M.format(rows)
  local lines = { { "ADAPTER", "INSTALLED", "VERSION", "RUNS" } }
  for _, r in ipairs(rows) do
    local inst = r.installed and "yes" or "no"
    local ver = r.version or (r.installed and (r.error or "?")) or ("install: " .. (r.package or "?"))
    lines[#lines + 1] = { r.name, inst, ver, r.summary or "" }
  end
  return table_text(lines)
end

--------------------------------------------------------------------------------
-- beat agents check

---@class beat.AgentCheckRow
---@field name string the agent as given ("claude", "claude --effort low")
---@field adapter string
---@field installed boolean
---@field path string|nil
---@field version string|nil
---@field error string|nil why the version could not be read
---@field package string|nil where to install it from
---@field auth string|nil where its credentials are (nil: none found)
---@field auth_hint string|nil how to authenticate
---@field commands boolean|nil whether it may run shell commands (nil: cannot tell)
---@field commands_reason string|nil
---@field refuses string|nil why the CLI would refuse to start as configured
---@field ready boolean installed, runs --version, has credentials, would start

--- Checks whether each agent CLI can run headless here, spending no tokens:
--- it runs `<cli> --version` and reads environment variables and files
--- (credentials, settings), nothing else. opts.names: agents as `beat loop -a`
--- takes them (default: every installed CLI among claude, codex, gemini,
--- aider); opts.agent: pass-through options for beat.agent.named
--- (permission_mode, allowed_tools, ...) — without names, only the installed
--- CLIs that take all of them, with those values, are checked; opts.command: the command they
--- should be able to run; opts.cwd: the work tree (project settings).
--- Must run inside a task. Raises a usage error for a bad name or option.
---@param opts? {names?: string[], agent?: table, command?: string, cwd?: string, path?: string}
---@return beat.AgentCheckRow[]
function M.check(opts)
  opts = opts or {}
  local agent = require "beat.agent"
  local beat = require "beat"
  local flags = opts.agent or {}
  -- Without names: every installed CLI that takes these options and values
  -- (permission modes are each CLI's own words), each built by name.
  local agents, names = {}, opts.names
  if not names or #names == 0 then
    names = {}
    for _, a in ipairs(M.adapters) do
      if a.bin and M.which(a.bin, opts.path) then
        local ok, ag = pcall(agent.named, a.name, flags)
        if ok then
          names[#names + 1] = a.name
          agents[#names] = ag
        end
      end
    end
  end
  local rows, jobs = {}, {}
  for i, name in ipairs(names) do
    local a = agents[i] or agent.named(name, flags)
    local row = { name = name, adapter = a.name }
    rows[i] = row
    local bin = a.opts.bin or a.spec.bin or (a.opts.argv and a.opts.argv[1])
    for _, ad in ipairs(M.adapters) do
      if ad.name == a.name then row.package = ad.package end
    end
    row.path = bin and M.which(bin, opts.path)
    row.installed = row.path ~= nil
    row.auth, row.auth_hint = a:credentials()
    row.commands, row.commands_reason = a:can_run_commands { command = opts.command, cwd = opts.cwd }
    if a.spec.refuses_to_start then
      local env, home = a:environment()
      row.refuses = a.spec.refuses_to_start(a, { env = env, home = home })
    end
    if row.installed then
      jobs[#jobs + 1] = beat.go(function()
        local r, err = beat.exec({ row.path, "--version" }, { timeout = 20, grace = 1, max_output = 64 * 1024 })
        if not r then row.error = err
        elseif r.code ~= 0 then row.error = ("--version exited %d"):format(r.code)
        else
          local line = (r.stdout or ""):match("[^\n]*%S[^\n]*") or (r.stderr or ""):match("[^\n]*%S[^\n]*")
          row.version = line and (line:gsub("^%s+", ""):gsub("%s+$", "")) or ""
        end
      end)
    end
  end
  for _, t in ipairs(jobs) do t:join() end
  for _, row in ipairs(rows) do
    row.ready = row.installed and row.version ~= nil and row.auth ~= nil and row.refuses == nil
  end
  return rows
end

--- Formats check rows, one line each:
---   claude  ready      2.1.332 (Claude Code); auth: ANTHROPIC_API_KEY; commands: no (why)
---@param rows beat.AgentCheckRow[]
---@return string
function M.format_check(rows)
  local lines = {}
  for _, r in ipairs(rows) do
    local parts = {}
    if not r.installed then
      parts[1] = "not installed" .. (r.package and (" (" .. r.package .. ")") or "")
    else
      parts[1] = r.version and (r.version ~= "" and r.version or "version ?") or ("--version failed: " .. tostring(r.error))
      if r.auth then
        parts[#parts + 1] = "auth: " .. r.auth
      else
        parts[#parts + 1] = "auth: none (" .. tostring(r.auth_hint) .. ")"
      end
      if r.refuses then
        parts[#parts + 1] = "will not start: " .. r.refuses
      elseif r.commands == true then
        parts[#parts + 1] = "commands: yes"
      elseif r.commands == false then
        parts[#parts + 1] = "commands: no (" .. r.commands_reason .. ")"
      else
        parts[#parts + 1] = "commands: " .. (r.commands_reason or "cannot tell")
      end
    end
    lines[#lines + 1] = { r.name, r.ready and "ready" or "not ready", table.concat(parts, "; ") }
  end
  return table_text(lines)
end

return M
