-- parallel: N candidates at once, each in its own worktree; keep the best
-- one if it beats the best so far.
--
--   beat.strategy("parallel"){agent = ..., prompt = "make it faster",
--     eval = "node bench.js", candidates = 4}
--   beat loop "make it faster" --eval "node bench.js" --candidates 4 [--slurm]
--
-- Iteration 0 is the baseline: the eval on the unchanged work tree. Then each
-- round: N candidates at once, each in a linked worktree checked out from the
-- best snapshot (.beat/runs/<id>/wt/<round>.<k>): the agent proposes →
-- snapshot → guards → eval, all in that worktree, your work tree untouched.
-- Then the best candidate that beats the best (objective:compare, as in
-- optimize: a tie, within noise, never wins) is kept: its snapshot becomes
-- the best and is restored into your work tree. The worktrees are removed
-- as each candidate ends. Candidate k of round r is iteration "r.k" in the
-- journal; its agent, guards and eval see BEAT_ITERATION=r, BEAT_CANDIDATE=k.
-- Copy this file to strategies/parallel.lua next to your recipe to change it.
local beat = require "beat"

local DEFAULTS = {
  max_iterations = 10, max_consecutive_failures = 3, max_no_progress = 3, cooldown = 0,
  runs = 1, warmup = 0,
}
local OPTIONS = {
  eval = "string|table", eval_timeout = "number|string", score = "function",
  objective = "table", direction = "string", min_delta = "number", min_rel_delta = "number",
  runs = "number", warmup = "number", guard = "string|table", target = "number|table",
  patience = "number", history_lines = "number", metric = "string",
  candidates = "number", prompts = "table|function", max_agents = "number", max_evals = "number",
  executor = "table", agent_executor = "table", eval_executor = "table",
}
local MAX_CANDIDATES = 256   -- per round: each is a checkout of the repository

local function first_line(s, max)
  s = tostring(s or ""):match("^%s*([^\n]*)") or ""
  if #s > max then s = s:sub(1, max - 3) .. "..." end
  return s
end

local function fail(fmt, ...)
  error(('beat.strategy("parallel"): ' .. fmt):format(...), 3)
end

-- The prompt an LLM agent sees: its task, the best score, what was tried
-- (by every candidate of the rounds before).
local function default_prompt(o, run, task, best_text, base_text)
  local lines = { task, "",
    ("Score (the eval `%s`): baseline %s, best so far %s; the objective is to %s it.")
      :format(type(o.eval) == "table" and table.concat(o.eval, " ") or o.eval, base_text, best_text,
        o.direction or "improve"),
    "Make one focused change that you expect to improve the score. Changes that do not improve it are discarded." }
  local h = run.history
  if #h > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Tried so far (most recent last):"
    for i = math.max(1, #h - (o.history_lines or 10) + 1), #h do
      local e = h[i]
      lines[#lines + 1] = ("- iteration %s: %s%s%s"):format(e.iteration, e.status,
        e.score_text and (" (" .. e.score_text .. ")") or "",
        e.idea ~= "" and (" — " .. e.idea) or "")
    end
  end
  return table.concat(lines, "\n")
end

return function(opts)
  -- a list of prompts may stand for `prompt`, and sets how many candidates
  local given = {}
  for k, v in pairs(type(opts) == "table" and opts or {}) do given[k] = v end
  if type(given.prompts) == "table" then
    if given.prompt == nil then given.prompt = given.prompts[1] end
    if given.candidates == nil then given.candidates = #given.prompts end
  elseif type(given.prompts) == "function" and given.prompt == nil then
    given.prompt = ""   -- the function gives every candidate its task
  end
  if given.candidates == nil then given.candidates = 4 end
  local o = beat.loop.options("parallel", type(opts) == "table" and given or opts, OPTIONS, DEFAULTS)
  local n = o.candidates
  if math.type(n) ~= "integer" or n < 1 or n > MAX_CANDIDATES then
    fail("opts.candidates must be an integer from 1 to %d, got %s", MAX_CANDIDATES, tostring(n))
  end
  if type(o.prompts) == "table" then
    if #o.prompts ~= n then fail("opts.prompts must list %d prompts (one per candidate), got %d", n, #o.prompts) end
    for i, p in ipairs(o.prompts) do
      if type(p) ~= "string" or not p:match("%S") then fail("opts.prompts[%d] must be a non-empty string", i) end
    end
  end
  for _, k in ipairs { "max_agents", "max_evals" } do
    if o[k] ~= nil and (math.type(o[k]) ~= "integer" or o[k] < 1) then
      fail("opts.%s must be a positive integer, got %s", k, tostring(o[k]))
    end
  end
  for _, k in ipairs { "executor", "agent_executor", "eval_executor" } do
    if o[k] ~= nil and not beat.executor.is_executor(o[k]) then
      fail("opts.%s must be an executor (beat.executor.here(), beat.slurm{...})", k)
    end
  end
  if o.git == false then fail("needs git: each candidate runs in a worktree of the repository (git = false)") end
  if o.continue_context then fail("opts.continue_context does not apply: the candidates are separate sessions") end
  if o.eval == nil then fail("opts.eval is required (the command that scores)") end
  if o.objective and o.direction then fail("give either objective or direction, not both") end
  local objective = o.objective or beat.objective {
    metric = o.metric or "score", direction = o.direction or "minimize", min_delta = o.min_delta,
    min_rel_delta = o.min_rel_delta, target = o.target,
  }
  if objective.kind == "pareto" then
    fail("a pareto objective is not supported (one candidate's snapshot is kept each round); use optimize")
  end
  local score = o.score or beat.score.last_number
  beat.loop.check_command("parallel", "eval", o.eval)
  local guards = type(o.guard) == "string" and { o.guard } or o.guard or {}
  for i, g in ipairs(guards) do
    beat.loop.check_command("parallel", type(o.guard) == "table" and ("guard[%d]"):format(i) or "guard", g)
  end
  -- how many agents, and how many candidates' guards and evals, run at once:
  -- through a cluster, every candidate; here, one per core
  local eval_executor = o.eval_executor or o.executor
  local max_evals = o.max_evals or ((eval_executor and eval_executor.kind ~= "local") and n or beat.cpus())

  return beat.loop.run("parallel", o, function(run)
    local worktrees <close> = beat.parallel.worktrees(run)   -- all removed however the run ends
    local agents = beat.parallel.semaphore(o.max_agents or n)
    local evals = beat.parallel.semaphore(max_evals)

    -- Scores the tree at `at.cwd` (default the work tree) as it is now: a
    -- score, or nil, reason, and the infrastructure error when the
    -- executor's machinery failed (then it is not the candidate's failure).
    local function evaluate(id, at)
      at = at or {}
      if o.runs > 1 then
        return run:measure(id, o.eval, { runs = o.runs, warmup = o.warmup, timeout = o.eval_timeout,
          score = score, cwd = at.cwd, env = at.env })
      end
      local r = run:command(id, "eval", o.eval, o.eval_timeout, at)
      if r.infra_error then return nil, "infrastructure: " .. r.infra_error, r.infra_error end
      if r.error then return nil, r.error end
      return score(r, { cwd = at.cwd or run.cwd, label = "eval" })
    end

    if run.resumed then
      -- what the dead run left (worktrees, Slurm jobs) is gone and the work
      -- tree holds the best snapshot; continuing a round is not built yet
      return "failed", ("a parallel run is not continued after a crash: its candidates' worktrees and jobs were removed, and the work tree holds the best result so far (beat restore %s best)")
        :format(run.id)
    end

    -- baseline
    local baseline, why = evaluate(0)
    run:restore()   -- what the eval wrote is not the agent's work
    if baseline == nil then
      run:record { iteration = 0, status = "crash", summary = "baseline: " .. tostring(why) }
      return "failed", "the baseline cannot be scored: " .. tostring(why)
    end
    local best = baseline
    run.baseline_score = objective:describe(baseline)
    run.best_score = run.baseline_score
    run:record { iteration = 0, status = "baseline", snapshot = run.base, score = objective:scalar(baseline),
      score_text = objective:describe(baseline), summary = "the unchanged work tree" }
    local reached, treason = objective:target_reached(baseline)
    if reached then
      return "completed", "the baseline already reaches the target: " .. treason
    end

    -- One candidate: in its own worktree from the best snapshot, the agent
    -- proposes, the result is snapshotted, the guards and the eval run.
    -- Returns what the round decides on: {id, k, status?, summary?, score?, snap, ...}.
    local function candidate(round, k, from, best_text, base_text)
      local id = ("%d.%d"):format(round, k)
      local c = { id = id, k = k, t0 = beat.clock() }
      local at = { env = { BEAT_RUN_ID = run.id, BEAT_ITERATION = tostring(round), BEAT_CANDIDATE = tostring(k) } }
      local repo, path = worktrees:add(id, from)
      if not repo then
        c.status, c.summary = "crash", "cannot make its worktree: " .. tostring(path)
        return c
      end
      at.cwd = path

      -- propose
      local state = run:state { iteration = round, candidate = k, candidates = n, best_score = best,
        best_text = best_text }
      local prompt
      if type(o.prompt) == "function" then
        prompt = run:text_hook("prompt", state)
      else
        local task = type(o.prompts) == "table" and o.prompts[k]
          or type(o.prompts) == "function" and run:text_hook("prompts", k, state)
          or ("%s\n\nYou are candidate %d of %d; try a different idea from the others."):format(o.prompt, k, n)
        prompt = default_prompt(o, run, task, best_text, base_text)
      end
      c.agent = agents:run(run.propose, run, id, prompt,
        { cwd = path, iteration = round, env = at.env, history = run.history })
      local changed, cerr = repo:changed(from)
      if changed == nil then error("cannot compare candidate " .. id .. ": " .. tostring(cerr), 0) end
      local snap, info = repo:snapshot { ref = ("refs/beat/%s/iter-%s"):format(run.id, id), parent = from,
        max_file_size = o.max_file_size, message = ("beat: run %s iteration %s (candidate %d of round %d)"):format(run.id, id, k, round) }
      if not snap then error("snapshot failed: " .. tostring(info), 0) end
      c.snap, c.changed = snap, changed

      -- check and score
      if #info.skipped > 0 then
        c.status, c.summary = "rejected", worktrees:set_aside(id, path, info.skipped)
      elseif c.agent.infra_error then
        c.status, c.summary = "infra", "agent: infrastructure: " .. c.agent.infra_error
      elseif not c.agent.ok then
        c.status, c.summary = "crash", "agent failed: " .. tostring(c.agent.error or ("exit " .. tostring(c.agent.code)))
      elseif not changed then
        c.status, c.summary = "discard", "the agent changed nothing"
      else
        evals:run(function()
          for i, g in ipairs(guards) do
            local r = run:command(id, "guard-" .. i, g, o.eval_timeout, at)
            if r.infra_error then
              c.status, c.summary = "infra", ("guard %d: infrastructure: %s"):format(i, r.infra_error)
              return
            elseif r.code ~= 0 then
              c.status, c.summary = "crash", ("guard %d (%s) %s"):format(i, type(g) == "table" and g[1] or g,
                r.timed_out and "timed out" or ("exited " .. r.code))
              return
            end
          end
          local value, err, infra = evaluate(id, at)
          if infra then
            c.status, c.summary = "infra", "eval: " .. tostring(err)
          elseif value == nil then
            c.status, c.summary = "crash", tostring(err)
          else
            c.score = value
          end
        end)
      end
      worktrees:remove(id)   -- its work is in the snapshot
      c.duration = beat.clock() - c.t0
      return c
    end

    local since_keep, no_progress = 0, 0
    for round = 1, o.max_iterations do
      local stop = run:budget_stop() or run:user_stop { best_score = best }
      if stop then return "stopped", stop end
      run.iteration = round
      run:hook("on_iteration", run:state { iteration = round, candidates = n, best_score = best })

      -- propose, check and score: the candidates at once
      local from, best_text, base_text = run.best, objective:describe(best), objective:describe(baseline)
      local cands = beat.parallel.each(n, function(k)
        return candidate(round, k, from, best_text, base_text)
      end)

      -- decide: the best candidate that beats the best, if any
      local winner
      for _, c in ipairs(cands) do
        if c.score ~= nil then
          c.verdict, c.reason = objective:compare(c.score, best)
          if c.verdict == "better" and (winner == nil or objective:compare(c.score, winner.score) == "better") then
            winner = c
          end
        end
      end
      local delta
      if winner then
        local a, b = objective:scalar(winner.score), objective:scalar(best)
        if a and b and b ~= 0 then delta = (a - b) / math.abs(b) end
        best = winner.score
        run.best_score = objective:describe(best)
        run:keep(winner.snap)
        run:restore()   -- your work tree gets the winner (what else changed there is saved first)
        since_keep = 0
      else
        since_keep = since_keep + 1
      end
      local scored, failed, changed, all_infra = 0, 0, false, true
      for _, c in ipairs(cands) do
        if c.score ~= nil then
          scored = scored + 1
          c.status = c == winner and "keep" or "discard"
          c.summary = (c.verdict == "better" and c ~= winner)
            and ("better: %s; candidate %s was better still"):format(c.reason, winner.id)
            or ("%s: %s"):format(c.verdict, c.reason)
        end
        if c.status == "crash" or c.status == "rejected" then failed = failed + 1 end
        if c.changed then changed = true end
        if c.status ~= "infra" then all_infra = false end
        run:hook(c == winner and "on_keep" or "on_discard", run:state { iteration = c.id, round = round,
          candidate = c.k, status = c.status, score = c.score, best_score = best })
      end
      -- a round fails when nothing could be scored and something crashed; a
      -- round the infrastructure failed entirely counts neither way
      if scored > 0 then
        run.consecutive_failures = 0
      elseif failed > 0 then
        run.consecutive_failures = run.consecutive_failures + 1
      end
      if changed then no_progress = 0 elseif not all_infra then no_progress = no_progress + 1 end

      -- record: every candidate, as iteration "round.k"
      for _, c in ipairs(cands) do
        local score_text = c.score ~= nil and objective:describe(c.score) or nil
        table.insert(run.history, { iteration = c.id, status = c.status, score = c.score,
          value = c.score ~= nil and objective:scalar(c.score) or nil, score_text = score_text,
          kept = c == winner, proposal = c.agent and c.agent.proposal,
          idea = first_line(c.agent and c.agent.text, 160), summary = c.summary })
        run:record { iteration = c.id, round = round, candidate = c.k, status = c.status, snapshot = c.snap,
          score = c.score ~= nil and objective:scalar(c.score) or nil, score_text = score_text,
          best_text = objective:describe(best), delta = c == winner and delta or nil,
          cost_usd = c.agent and c.agent.cost_usd, duration_s = c.duration, summary = c.summary }
      end

      -- stop?
      local budget = run:budget_stop()
      if budget then return "stopped", budget end
      if winner then
        local hit, why_hit = objective:target_reached(best)
        if hit then return "completed", "target reached: " .. why_hit end
      end
      if run.consecutive_failures >= o.max_consecutive_failures then
        return "failed", ("%d rounds in a row without a scored candidate"):format(run.consecutive_failures)
      end
      if o.patience and since_keep >= o.patience then
        return "completed", ("no improvement in %d rounds (patience)"):format(since_keep)
      end
      if no_progress >= o.max_no_progress then
        return "stopped", ("no progress: no candidate changed anything %d rounds in a row"):format(no_progress)
      end
      if round < o.max_iterations then run:cooldown() end
    end
    return "completed", ("%d round%s of %d candidate%s done"):format(o.max_iterations,
      o.max_iterations == 1 and "" or "s", n, n == 1 and "" or "s")
  end)
end
