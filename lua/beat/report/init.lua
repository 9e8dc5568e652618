--- beat.report: a run read back from its journal, as charts and a table.
---
---   local report = require "beat.report"
---   local run = assert(report.load(".beat/runs/mx4ssuyb"))
---   io.write(report.terminal(run, { width = 80, color = false }))
---   fs.write("run.svg", report.svg(run))
---   fs.write("run.html", report.html(run))
---   print(report.json(run))
---
--- The run model (`load`, also `beat report --json`) is plain data:
---   {version = 1, id, dir, journal, strategy, cwd, status, reason, started,
---    elapsed, cost_usd, baseline_text, best_text,
---    objective = {kind = "single"|"weighted"|"order"|"pareto"|"none",
---                 metrics = {{name, direction}, ...}},
---    metrics = {name, ...}             -- the charted series, in order
---    iterations = {{iteration, status, kept, baseline, values = {name = number},
---                   score, score_text, best_text, summary, cost_usd,
---                   duration_s, snapshot, front, round, candidate}, ...},
---    front = {iteration, ...} | nil,   -- Pareto runs: the final front
---    warnings = {...}}
---
--- Where the values come from, per decision record: a `metrics` table
--- (name → number) when the strategy records one; else a `score` table; else
--- the numbers in `score_text` ("val_loss 0.01196, params 37"); a numeric
--- `score` is the objective's scalar and replaces the rounded text value of a
--- single metric. A Pareto run's front is the last `front` list a record
--- carries, or else the members that no other kept iteration dominates.
---
--- Charts: one per metric, score against iteration. Kept points, discarded
--- points and the baseline have their own glyphs (they read without colour),
--- the best so far is a step line, iterations without a score are marked on
--- the x axis. A value far outside the rest (a "diverged" sentinel such as
--- 1e6, inf) would squash the others: the axis is clipped to the rest and
--- the point is drawn at the edge, named in the legend.
---
--- A parallel run's candidates are iterations "R.K" (candidate K of round
--- R): `iteration` is that string, `round` R and `candidate` K; charts draw
--- a round's candidates one above the other at x = R.
local model = require "beat.report.model"

local M = {}

M.VERSION = model.VERSION
M.model = model.model
M.load = model.load
M.json = require("beat.report.json").json
M.terminal = require("beat.report.terminal").terminal
M.svg = require("beat.report.svg").svg
M.html = require("beat.report.html").html

return M
