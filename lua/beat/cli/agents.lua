--- `beat agents`: which agent CLIs are installed, and their versions.
local M = {}

function M.register(cli)
  cli.command("agents", {
    summary = "list agent adapters and whether their CLIs are installed",
    usage = "beat agents [--json]",
    help = [[
Lists the agent adapters (claude, codex, gemini, aider, command, fn, tune),
whether each CLI is on the PATH, its version (from --version), and the
command line beat runs. See docs/api/agent.md.
--json prints one document {"version": 1, "agents": [...]} (docs/json.md).]],
    run = function(args)
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
