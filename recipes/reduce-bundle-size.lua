-- reduce-bundle-size.lua — make a build smaller without breaking the tests.
--
-- Shows: optimize with a size measurement; units in the score ("123 KB" on
-- the last line is read as 123); the test suite as a guard (a candidate that
-- breaks it is a crash, never kept); a noise floor; a cost budget.
--
-- Run in your project:
--   beat run /path/to/recipes/reduce-bundle-size.lua ["node scripts/measure-bundle.js"] ["npm test"]
-- The measure command must print the size on its last line. BEAT_AGENT picks
-- the agent (claude by default).
local beat = require "beat"

local measure, tests = ...
measure = measure or "node scripts/measure-bundle.js"
tests = tests or "npm test"

local agent = beat.agent.named(os.getenv("BEAT_AGENT") or "claude")

return (beat.strategy("optimize") {
  agent = agent,
  prompt = "Reduce the production bundle size: remove dead code, replace heavy dependencies, "
    .. "split rarely used code. Keep behaviour identical.",
  eval = measure,
  direction = "minimize",
  guard = { tests },
  min_rel_delta = 0.002,        -- 0.2% of a bundle is noise
  max_iterations = 15,
  patience = 6,
  -- a cost budget needs an agent that reports its cost (a plain command does not)
  max_cost_usd = agent:reports_cost() ~= false and 10 or nil,
  agent_timeout = "20m",
  eval_timeout = "10m",
})
