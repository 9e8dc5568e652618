-- multi-metric.lua — two metrics, one decision: accuracy first, then size.
--
-- Shows: beat.score.metrics() reading every `name: value` line; a
-- lexicographic objective (lower val_loss wins unless within 5%, then fewer
-- parameters wins); a constraint (train_loss must stay under 0.1, a guard
-- against degenerate fits); the offline tune proposer, so it runs anywhere.
--
-- Run: beat run recipes/multi-metric.lua [ITERATIONS]
local beat = require "beat"
local sample = require "sample_project"

local dir = sample.setup()
local status = beat.strategy("optimize") {
  cwd = dir,
  prompt = "find a small network with a low validation loss",
  agent = beat.agent.tune { seed = 3, params = sample.params },
  eval = sample.eval,
  score = beat.score.metrics(),
  objective = beat.objective {
    order = {
      { "val_loss", direction = "minimize", rel_tolerance = 0.05 },
      { "params", direction = "minimize" },
    },
    constraints = { { metric = "train_loss", max = 0.1 } },
    sentinels = { [1e6] = "diverged" },   -- train.lua's marker for a run that blew up
  },
  max_iterations = math.tointeger(tonumber((...) or "")) or 15,
  max_no_progress = 5,
}
io.write("\n", sample.diff(dir))
return status
