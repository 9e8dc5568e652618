-- optimize: score every iteration with an eval command; keep what is better.
--
--   beat.strategy("optimize"){agent = ..., prompt = "make it faster",
--     eval = "node bench.js", direction = "minimize"}
--
-- Iteration 0 is the baseline: the eval on the unchanged work tree. Then
-- each iteration: the agent proposes → guards must pass → eval → compare
-- with the best → keep (the snapshot becomes the best) or discard (the work
-- tree goes back to the best) or crash (a failure; back to the best).
-- A score within noise is a tie, and ties never replace the best.
-- A run resumed after its process died (beat loop resume) goes on after its
-- last decision, with the scores and counters that decision recorded.
-- Copy this file to strategies/optimize.lua next to your recipe to change it.
local beat = require "beat"

local DEFAULTS = {
  max_iterations = 10, max_consecutive_failures = 3, max_no_progress = 3, cooldown = 0,
  runs = 1, warmup = 0,
}
local OPTIONS = {
  eval = "string|table|function", eval_timeout = "number|string", score = "function",
  objective = "table", direction = "string", min_delta = "number", min_rel_delta = "number",
  runs = "number", warmup = "number", guard = "string|table", target = "number|table",
  patience = "number", history_lines = "number", metric = "string",
}

local function first_line(s, max)
  s = tostring(s or ""):match("^%s*([^\n]*)") or ""
  if #s > max then s = s:sub(1, max - 3) .. "..." end
  return s
end

-- The prompt an LLM agent sees: the task, the best score, what was tried.
local function default_prompt(o, run, best_text, base_text)
  local lines = { o.prompt, "",
    ("Score (the eval `%s`): baseline %s, best so far %s; the objective is to %s it.")
      :format(beat.loop.command_text(o.eval), base_text, best_text,
        o.direction or "improve"),
    "Make one focused change that you expect to improve the score. Changes that do not improve it are discarded." }
  local h = run.history
  if #h > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Tried so far (most recent last):"
    for i = math.max(1, #h - (o.history_lines or 10) + 1), #h do
      local e = h[i]
      lines[#lines + 1] = ("- iteration %d: %s%s%s"):format(e.iteration, e.status,
        e.score_text and (" (" .. e.score_text .. ")") or "",
        e.idea ~= "" and (" — " .. e.idea) or "")
    end
  end
  return table.concat(lines, "\n")
end

return function(opts)
  local o = beat.loop.options("optimize", opts, OPTIONS, DEFAULTS)
  if o.eval == nil then error('beat.strategy("optimize"): opts.eval is required (the command that scores)', 2) end
  if o.objective and o.direction then
    error('beat.strategy("optimize"): give either objective or direction, not both', 2)
  end
  local objective = o.objective or beat.objective {
    metric = o.metric or "score", direction = o.direction or "minimize", min_delta = o.min_delta, min_rel_delta = o.min_rel_delta,
    target = o.target,
  }
  local score = o.score or beat.score.last_number
  beat.loop.check_command("optimize", "eval", o.eval)
  if beat.loop.callable(o.eval) and o.runs > 1 then error('beat.strategy("optimize"): option runs > 1 needs an eval command, not a Lua eval', 2) end
  local guards = type(o.guard) == "string" and { o.guard } or o.guard or {}
  for i, g in ipairs(guards) do
    beat.loop.check_command("optimize", type(o.guard) == "table" and ("guard[%d]"):format(i) or "guard", g)
  end

  return beat.loop.run("optimize", o, function(run)
    local pareto = objective.kind == "pareto"
    local front = pareto and objective:front() or nil

    -- Scores the work tree as it is now; returns a candidate or nil, reason.
    local function evaluate(n)
      local ctx = { cwd = run.cwd, label = "eval" }
      if o.runs > 1 then
        return run:measure(n, o.eval, { runs = o.runs, warmup = o.warmup, timeout = o.eval_timeout,
          score = score })
      end
      local r = run:command(n, "eval", o.eval, o.eval_timeout)
      if r.error then return nil, r.error end
      return score(r, ctx)
    end

    -- what carries over from one iteration to the next (and into a resumed run)
    local carried = run.resumed and run.resumed.state or {}
    local baseline, best = carried.baseline, carried.best
    local since_keep, no_progress = carried.since_keep or 0, carried.no_progress or 0
    if run.resumed and front then   -- the front again, from the same candidates in the same order
      front:add(baseline, { iteration = 0, snapshot = run.base })
      for _, e in ipairs(run.history) do
        if e.score ~= nil then front:add(e.score, { iteration = e.iteration, snapshot = e.snapshot }) end
      end
    end

    -- baseline
    if not run.resumed then
      local why
      baseline, why = evaluate(0)
      run:restore()   -- what the eval wrote is not the agent's work
      if baseline == nil then
        local ending = { "failed", "the baseline cannot be scored: " .. tostring(why) }
        run:record { iteration = 0, status = "crash", summary = "baseline: " .. tostring(why), stop = ending }
        return ending[1], ending[2]
      end
      best = baseline
      run.baseline_score = objective:describe(baseline)
      run.best_score = run.baseline_score
      if front then front:add(baseline, { iteration = 0, snapshot = run.base }) end
      local reached, treason = objective:target_reached(baseline)
      local ending = reached and { "completed", "the baseline already reaches the target: " .. treason } or nil
      run:record { iteration = 0, status = "baseline", snapshot = run.base, score = objective:scalar(baseline),
        score_text = objective:describe(baseline), summary = "the unchanged work tree", stop = ending,
        state = { baseline = baseline, best = best, since_keep = 0, no_progress = 0 } }
      if ending then return ending[1], ending[2] end
    end

    for n in run:iterations() do
      local stop = run:budget_stop() or run:user_stop { best_score = best }
      if stop then return "stopped", stop end
      run.iteration = n
      local t0 = beat.clock()
      run:hook("on_iteration", run:state { iteration = n, best_score = best })

      -- propose
      local best_text, base_text = objective:describe(best), objective:describe(baseline)
      local prompt = type(o.prompt) == "function"
        and run:text_hook("prompt", run:state { iteration = n, best_score = best, best_text = best_text })
        or default_prompt(o, run, best_text, base_text)
      local agent = run:propose(n, prompt, { history = run.history })
      local changed = run:changed_since(run.best)
      local snap, rejected, kind = run:snapshot(n)

      -- check and score
      local status, summary, candidate
      if rejected then
        status, summary, changed = kind or "rejected", rejected, true
      elseif not agent.ok then
        status, summary = "crash", "agent failed: " .. tostring(agent.error or ("exit " .. tostring(agent.code)))
      elseif not changed then
        status, summary = "discard", "the agent changed nothing"
      else
        for i, g in ipairs(guards) do
          local r = run:command(n, "guard-" .. i, g, o.eval_timeout)
          if r.code ~= 0 then
            status, summary = "crash", ("guard %d (%s) %s"):format(i, type(g) == "table" and g[1] or g,
              r.timed_out and "timed out" or ("exited " .. r.code))
            break
          end
        end
        if not status then
          local err
          candidate, err = evaluate(n)
          if candidate == nil then
            status, summary = "crash", tostring(err)
          else
            local verdict, reason
            if front then
              local entered, _
              entered, _, reason = front:add(candidate, { iteration = n, snapshot = snap })
              verdict = entered and "better" or "worse"
            else
              verdict, reason = objective:compare(candidate, best)
            end
            status, summary = verdict == "better" and "keep" or "discard", ("%s: %s"):format(verdict, reason)
          end
        end
      end

      -- decide
      local delta
      if status == "keep" then
        local a, b = objective:scalar(candidate), objective:scalar(best)
        if a and b and b ~= 0 then delta = (a - b) / math.abs(b) end
        best = candidate
        run.best_score = objective:describe(best)
        run:keep(snap)
        run:restore()   -- the kept snapshot holds the agent's change, not the eval's files
        since_keep = 0
        run:hook("on_keep", run:state { iteration = n, score = candidate, best_score = best })
      else
        run:restore(run.best)
        since_keep = since_keep + 1
        run:hook("on_discard", run:state { iteration = n, status = status, score = candidate, best_score = best })
      end
      run.consecutive_failures = (status == "crash" or rejected ~= nil)
        and run.consecutive_failures + 1 or 0
      no_progress = changed and 0 or no_progress + 1

      -- stop? (decided before the record, so a resumed run knows it too)
      local ending
      local budget = run:budget_stop()
      local hit, why_hit = false, nil
      if status == "keep" then hit, why_hit = objective:target_reached(best) end
      if budget then
        ending = { "stopped", budget }
      elseif hit then
        ending = { "completed", "target reached: " .. why_hit }
      elseif run.consecutive_failures >= o.max_consecutive_failures then
        ending = { "failed", ("%d consecutive failures"):format(run.consecutive_failures) }
      elseif o.patience and since_keep >= o.patience then
        ending = { "completed", ("no improvement in %d iterations (patience)"):format(since_keep) }
      elseif no_progress >= o.max_no_progress then
        ending = { "stopped", ("no progress: the agent changed nothing %d times in a row"):format(no_progress) }
      end

      -- record
      local score_text = candidate ~= nil and objective:describe(candidate) or nil
      run:record { iteration = n, status = status, snapshot = snap,
        score = candidate ~= nil and objective:scalar(candidate) or nil, score_text = score_text,
        best_text = objective:describe(best), delta = delta, cost_usd = agent.cost_usd,
        duration_s = beat.clock() - t0, summary = summary, stop = ending,
        history = { iteration = n, status = status, score = candidate, snapshot = snap,
          value = candidate ~= nil and objective:scalar(candidate) or nil, score_text = score_text,
          kept = status == "keep", proposal = agent.proposal, idea = first_line(agent.text, 160),
          summary = summary },
        state = { baseline = baseline, best = best, since_keep = since_keep, no_progress = no_progress } }
      if ending then return ending[1], ending[2] end
      run:cooldown(n)
    end
    return "completed", ("%d iteration%s done"):format(o.max_iterations, o.max_iterations == 1 and "" or "s")
  end)
end
