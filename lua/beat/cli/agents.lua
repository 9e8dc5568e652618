--- `beat agents`: which agent CLIs are installed, and their versions;
--- `beat agents check`: whether each can run headless here.
local M = {}

local CHECK_USAGE = "beat agents check [AGENT...] [--permission-mode MODE] [--allowed-tools LIST] "
  .. "[--disallowed-tools LIST] [--command CMD]"

-- Flags of `beat agents check` that take a value, and the option each sets.
local CHECK_FLAGS = {
  ["--permission-mode"] = "permission_mode", ["--allowed-tools"] = "allowed_tools",
  ["--disallowed-tools"] = "disallowed_tools", ["--command"] = "command",
}

--- Parses `beat agents check`'s arguments: {names = {...}, agent = {...}, command = CMD}.
function M.parse_check(cli, args)
  local p = { names = {}, agent = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, value = a:match("^(%-%-[%w-]+)=(.*)$")
    flag = flag or a
    if CHECK_FLAGS[flag] then
      if value == nil then
        value = args[i + 1]
        i = i + 1
      end
      if value == nil or value == "" then cli.usage_error("agents check: %s needs a value", flag) end
      local key = CHECK_FLAGS[flag]
      if key == "command" then p.command = value else p.agent[key] = value end
    elseif a:sub(1, 1) == "-" then
      cli.usage_error("agents check: unknown option '%s' (usage: %s)", a, CHECK_USAGE)
    else
      p.names[#p.names + 1] = a
    end
    i = i + 1
  end
  return p
end

function M.register(cli)
  cli.command("agents", {
    usage = "beat agents [--json] | " .. CHECK_USAGE,
    help = [[
beat agents [--json]
  Lists the agent adapters (claude, codex, gemini, aider, command, fn, tune),
  whether each CLI is on the PATH, its version (from --version), and the
  command line beat runs. --json prints one document
  {"version": 1, "agents": [...]} (docs/json.md).

beat agents check [AGENT...]
  One line per agent CLI: whether it can run headless here — its version,
  where its credentials are (an API key variable or its login file) and
  whether it may run shell commands (the check) by itself under its
  permission mode. Spends no tokens: it runs `<cli> --version` and reads
  environment variables and files, nothing else. AGENT is what `beat loop
  -a` takes ("claude", "claude --permission-mode bypassPermissions"); by
  default every installed CLI. --permission-mode, --allowed-tools and
  --disallowed-tools are the `beat loop` flags (without AGENTs, only the
  CLIs that take them are checked); --command CMD is the command they
  should be able to run (matched against rules such as 'Bash(make *)').
  Exit status: 0 when every agent checked is ready, 1 when one is not (or
  none is installed), 2 for a bad command line.

See docs/agents.md and docs/api/agent.md.]],
    run = function(args)
      if args[1] == "check" then
        local p = M.parse_check(cli, { table.unpack(args, 2) })
        return cli.drive(function()
          local list = require "beat.agent.list"
          local rows = list.check { names = p.names, agent = p.agent, command = p.command,
                                    cwd = require("beat.fs").cwd() }
          if #rows == 0 then
            io.stderr:write(("beat: agents check: no agent CLI is installed%s (see 'beat agents')\n")
              :format(next(p.agent) and " that takes these options" or ""))
            return 1
          end
          io.write(list.format_check(rows))
          for _, r in ipairs(rows) do
            if not r.ready then return 1 end
          end
          return 0
        end)
      end
      local json = args[1] == "--json"
      if json then table.remove(args, 1) end
      if args[1] then cli.usage_error("agents: unexpected argument '%s'", args[1]) end
      return cli.drive(function()
        local list = require "beat.agent.list"
        local rows = list.list()
        if json then
          local doc = require("cjson").encode { version = 1, agents = rows }
          io.write((doc:gsub("\\/", "/")), "\n")
        else
          io.write(list.format(rows))
        end
        return 0
      end)
    end,
  })
end

return M
