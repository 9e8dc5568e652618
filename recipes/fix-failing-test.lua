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

local agent = beat.agent.named(os.getenv("BEAT_AGENT") or "claude")

return (beat.strategy("retry") {
  agent = agent,
  -- the tests of a test runner beat recognises are protected: the prompt
  -- lists them, and an attempt that changes one is undone
  prompt = ("The command `%s` fails. Find the cause and fix the code so it passes."):format(check),
  check = check,
  check_timeout = "10m",
  agent_timeout = "20m",
  max_iterations = 8,
  -- a cost budget needs an agent that reports its cost (a plain command does not)
  max_cost_usd = agent:reports_cost() ~= false and 10 or nil,
  max_duration = "2h",
  stop_when = function(state)
    -- an example policy: give up early if the agent keeps crashing
    if state.consecutive_failures >= 2 and state.iteration >= 4 then
      return "the agent keeps failing"
    end
  end,
})
