--- `beat agents`: which agent CLIs are installed, and their versions.
local M = {}

function M.register(cli)
  cli.command("agents", {
    summary = "list agent adapters and whether their CLIs are installed",
    usage = "beat agents",
    help = [[
Lists the agent adapters (claude, codex, gemini, aider, command, fn, tune),
whether each CLI is on the PATH, its version (from --version), and the
command line beat runs. See docs/api/agent.md.]],
    run = function(args)
      if args[1] then cli.usage_error("agents: unexpected argument '%s'", args[1]) end
      return cli.drive(function()
        local list = require "beat.agent.list"
        io.write(list.format(list.list()))
        return 0
      end)
    end,
  })
end

return M
