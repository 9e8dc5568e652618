-- custom-strategy.lua — a strategy of your own, in about 40 lines.
--
-- "Best of N": each round asks the agent for N candidates, each starting
-- from the best so far, scores them all, and keeps the round's winner only
-- if it beats the best. Uses only the public API: beat.loop gives the
-- safety (lock, base snapshot, journal, restore on any exit), the rest is
-- the loop. Runs offline on the sample project with the tune proposer.
--
-- Run: beat run recipes/custom-strategy.lua [ROUNDS] [N]
local beat = require "beat"
local sample = require "sample_project"

local function best_of_n(opts)
  local o = beat.loop.options("best-of-n", opts,
    { eval = "table|string", candidates = "number", direction = "string" },
    { max_iterations = 3, candidates = 3, direction = "minimize" })
  local objective = beat.objective { direction = o.direction }
  return beat.loop.run("best-of-n", o, function(run)
    local function score(i)
      return beat.score.last_number(run:command(i, "eval", o.eval))
    end
    local best = score(0)
    if not best then return "failed", "the baseline cannot be scored" end
    run.baseline_score, run.best_score = objective:describe(best), objective:describe(best)
    for round = 1, o.max_iterations do
      local stop = run:budget_stop() or run:user_stop()
      if stop then return "stopped", stop end
      run.iteration = round
      local winner
      for c = 1, o.candidates do
        local i = round * 100 + c             -- iteration ids 101, 102, ... 201, ...
        run:restore()                         -- every candidate starts from the best
        local agent = run:propose(i, o.prompt, { history = run.history })
        local snap = run:snapshot(i)
        local value = agent.ok and score(i) or nil
        table.insert(run.history, { iteration = i, score = value, value = value })
        if value and (not winner or objective:compare(value, winner.value) == "better") then
          winner = { value = value, snap = snap }
        end
      end
      local verdict, reason = "worse", "no candidate could be scored"
      if winner then verdict, reason = objective:compare(winner.value, best) end
      if verdict == "better" then
        best = winner.value
        run:keep(winner.snap)
        run.best_score = objective:describe(best)
        run.history[#run.history].kept = true
      end
      run:restore()
      run:record { iteration = round, status = verdict == "better" and "keep" or "discard",
        score = winner and winner.value, score_text = winner and objective:describe(winner.value),
        best_text = objective:describe(best), summary = reason }
    end
    return "completed", ("%d rounds of %d candidates"):format(o.max_iterations, o.candidates)
  end)
end

local dir = sample.setup()
local rounds, n = ...
local status = best_of_n {
  cwd = dir,
  prompt = "lower val_loss",
  agent = beat.agent.tune { seed = 11, params = sample.params },
  eval = sample.eval,
  max_iterations = math.tointeger(tonumber(rounds or "")) or 3,
  candidates = math.tointeger(tonumber(n or "")) or 3,
}
io.write("\n", sample.diff(dir))
return status
