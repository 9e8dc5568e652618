-- tune-demo.lua — the demo `make demo` runs: optimize, offline, for real.
--
-- Copies recipes/sample-project (a small deterministic training run) into a
-- fresh git repository in a temp dir, then runs the optimize strategy with
-- the offline `tune` proposer on its hyperparameters. The eval really
-- trains the model; the score is its validation loss. Prints each
-- iteration, the summary, and the diff of the best result.
--
-- Run: beat run recipes/tune-demo.lua [ITERATIONS] [SEED]
local beat = require "beat"
local sample = require "sample_project"

local iterations = math.tointeger(tonumber((...) or "")) or 25
local seed = math.tointeger(tonumber(select(2, ...) or "")) or 7

local dir = sample.setup()
print(("sample project in %s\n"):format(dir))

local status = beat.strategy("optimize") {
  cwd = dir,
  prompt = "lower the validation loss of train.lua by tuning config.lua",
  agent = beat.agent.tune { seed = seed, params = sample.params },
  eval = sample.eval,
  score = beat.score.metric("val_loss"),
  objective = beat.objective {
    metric = "val_loss", direction = "minimize",
    min_rel_delta = 0.01,          -- a change under 1% is noise, not progress
    sentinels = { [1e6] = "diverged" },   -- train.lua's marker for a run that blew up
  },
  max_iterations = iterations,
  max_no_progress = 5,
}

print("\nthe best configuration, as an uncommitted diff in " .. dir .. ":\n")
io.write(sample.diff(dir))
return status
