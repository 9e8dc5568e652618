-- autoresearch.lua — Karpathy-style overnight research on a training script.
--
-- Shows: a train-style eval printing `val_bpb: 0.9979` and `peak_vram_mb: 2048`
-- lines; several metrics read at once; a memory constraint (a candidate over
-- budget is infeasible whatever its loss); a wall-clock budget for the whole
-- run and a time limit for each training run; noise-aware comparison.
--
-- Run in the research repo:
--   beat run /path/to/recipes/autoresearch.lua ["python train.py"] [MEMORY_MB]
-- BEAT_AGENT picks the agent (claude by default).
local beat = require "beat"

local train, memory_mb = ...
train = train or "python train.py"
memory_mb = tonumber(memory_mb) or 24000

return (beat.strategy("optimize") {
  agent = beat.agent.named(os.getenv("BEAT_AGENT") or "claude"),
  prompt = "You are doing research on this training script. Propose and implement one idea "
    .. "that should lower the validation bits per byte (val_bpb) within the fixed time budget. "
    .. "Keep peak memory under " .. memory_mb .. " MB.",
  eval = train,
  eval_timeout = "10m",                   -- each training run has a fixed budget
  score = beat.score.metrics(),           -- every `name: value` line
  objective = beat.objective {
    metric = "val_bpb", direction = "minimize", min_delta = 0.001,
    constraints = { { metric = "peak_vram_mb", max = memory_mb, unit = "MB" } },
  },
  max_duration = "8h",                    -- overnight
  max_iterations = 100,
  max_consecutive_failures = 5,
  agent_timeout = "30m",
})
