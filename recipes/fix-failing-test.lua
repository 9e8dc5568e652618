-- fix-failing-test.lua — retry an agent until the test suite passes.
--
-- Shows: the retry strategy; the failing check's output carried into the
-- next prompt; budgets (iterations, cost, time); a stop_when hook.
--
-- Run in your project:   beat run /path/to/recipes/fix-failing-test.lua ["npm test"]
-- The agent is Claude Code unless BEAT_AGENT names another: codex, gemini,
-- aider, or any command line (the prompt is appended as its last argument).
local beat = require "beat"

local check = (...) or "npm test"

return (beat.strategy("retry") {
  agent = beat.agent.named(os.getenv("BEAT_AGENT") or "claude"),
  prompt = ("The command `%s` fails. Find the cause and fix the code so it passes. "
    .. "Change a test only if the test itself is wrong."):format(check),
  check = check,
  check_timeout = "10m",
  agent_timeout = "20m",
  max_iterations = 8,
  max_cost_usd = 10,
  max_duration = "2h",
  stop_when = function(state)
    -- an example policy: give up early if the agent keeps crashing
    if state.consecutive_failures >= 2 and state.iteration >= 4 then
      return "the agent keeps failing"
    end
  end,
})
