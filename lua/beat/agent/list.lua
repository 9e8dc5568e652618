--- beat.agent.list: what `beat agents` shows — each adapter, whether its CLI
--- is on PATH, and the CLI's version.
---
---   for _, row in ipairs(require("beat.agent.list").list()) do ... end
---   print(require("beat.agent.list").format(rows))
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

--- Formats rows as the text `beat agents` prints.
---@param rows beat.AgentListRow[]
---@return string
function M.format(rows)
  local lines = { ("%-8s %-10s %-28s %s"):format("ADAPTER", "INSTALLED", "VERSION", "RUNS") }
  for _, r in ipairs(rows) do
    local inst = r.installed and "yes" or "no"
    local ver = r.version or (r.installed and (r.error or "?")) or ("install: " .. (r.package or "?"))
    lines[#lines + 1] = ("%-8s %-10s %-28s %s"):format(r.name, inst, ver, r.summary or "")
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
