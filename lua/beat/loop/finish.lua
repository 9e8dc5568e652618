--- beat.loop.finish: how every run ends, whatever ended it — the work tree
--- back at the best snapshot (or the base, for a failed run that asked for
--- it), the optional commit to a branch, the notes the summary shows, and
--- the last journal record ("run_end", or "interrupted" when it can go on).
local M = {}

-- Up to three snapshot names, "a, b, …, z" beyond.
local function names(list)
  if #list <= 3 then return table.concat(list, ", ") end
  return ("%s, %s, ..., %s"):format(list[1], list[2], list[#list])
end

-- Ends the run: work tree at best (or where the strategy asked a failed
-- run to end), optional promote, journal, summary. Every step runs even
-- when an earlier one failed; failures become notes.
function M.finish(run, status, reason)
  local o = run.opts
  local notes = {}
  local target = status == "failed" and run.restore_on_failure or run.best
  -- one write of each per run, not per iteration (a dead run's last is its
  -- newest iter-N, its best the journal's: beat.runs.snapshot)
  if run.repo and run.last then
    local ok, err = run.repo:set_ref { ref = ("refs/beat/%s/last"):format(run.id), commit = run.last }
    if not ok then notes[#notes + 1] = "could not record the last snapshot: " .. tostring(err) end
  end
  if run.repo and run.best and run.best ~= run.base then
    local ok, err = run.repo:set_ref { ref = ("refs/beat/%s/best"):format(run.id), commit = run.best }
    if not ok then notes[#notes + 1] = "could not record the best snapshot: " .. tostring(err) end
  end
  if run.repo and target then
    local ok, err = pcall(run.restore, run, target)
    if not ok then
      notes[#notes + 1] = ("could not restore the %s snapshot: %s"):format(target == run.best and "best" or
        target == run.base and "base" or "final", tostring(err))
    elseif target ~= run.best and target == run.base and run.last
        and (run.repo:diff { from = run.base, to = run.last, patch = false } or {}).files_changed ~= 0 then
      notes[#notes + 1] = ("the run failed, so the work tree is back as it was before the run; the last attempt is kept: beat restore %s last")
        :format(run.id)
    end
    if o.commit_to and status ~= "interrupted" and status ~= "paused" and run.best then
      local pok, perr = run.repo:promote(run.best, { branch = o.commit_to,
        message = ("beat: run %s"):format(run.id) })
      if pok then
        notes[#notes + 1] = ("best result committed to branch %s"):format(o.commit_to)
      else
        notes[#notes + 1] = ("could not commit to %s: %s"):format(o.commit_to, tostring(perr))
      end
    end
  end
  -- files beat saved before rewriting the work tree, grouped by what ran
  local groups, order = {}, {}
  for _, p in ipairs(run.pre_restores) do
    if not groups[p.what] then groups[p.what], order[#order + 1] = {}, p.what end
    table.insert(groups[p.what], p.name)
  end
  for _, what in ipairs(order) do
    local g = groups[what]
    notes[#notes + 1] = ("%s were saved %s: beat restore %s %s"):format(what, #g == 1 and
      ("as snapshot " .. g[1]) or ("%d times, as snapshots %s"):format(#g, names(g)), run.id, g[#g])
  end
  if run.conflicts and #run.conflicts > 0 then
    notes[#notes + 1] = ("files you changed while beat restored the work tree were left as you changed them: %s")
      :format(table.concat(run.conflicts, ", ", 1, math.min(#run.conflicts, 10)))
  end
  for _, n in ipairs(require("beat.budget").notes(run)) do notes[#notes + 1] = n end
  local jok, jerr = pcall(run.journal.check, run.journal, true)
  if not jok then notes[#notes + 1] = tostring(jerr) end
  local tampering = run.journal:tampering()
  if tampering then
    notes[#notes + 1] = (".beat/ was changed during the run, by the agent or a command (tampering): %s; the journal was written back from beat's own copy")
      :format(table.concat(tampering, "; "))
  end
  local diff
  if run.repo and run.base then
    local d = run.repo:diff { from = run.base, to = "worktree", patch = false }
    if d then
      diff = { files_changed = d.files_changed, insertions = d.insertions, deletions = d.deletions,
        files = {} }
      for i, f in ipairs(d.files) do
        if i > 10 then diff.more_files = #d.files - 10 break end
        diff.files[i] = { path = f.path, status = f.status, insertions = f.insertions,
          deletions = f.deletions }
      end
    end
  end
  -- the last record: "run_end", or "interrupted" when the run can go on
  -- (a signal stopped it, or a forced pause): beat loop resume continues it
  local resumable = status == "interrupted" or status == "paused"
  local event = resumable and "interrupted" or "run_end"
  local rec = {
    status = status, reason = reason, iterations = run.completed, best = run.best,
    base = run.base, last = run.last, cost_usd = run.cost_usd, elapsed = run:elapsed(),
    best_score = run.best_score, baseline_score = run.baseline_score, notes = notes,
    diff = diff, git = run.repo ~= nil, dir = run.journal.dir, resumable = resumable or nil,
    unfinished_iteration = run.iteration > 0 and not run.decided[run.iteration] and run.iteration or nil,
  }
  local wok, werr = pcall(run.write, run, event, rec)
  if not wok then
    notes[#notes + 1] = "could not write the journal: " .. tostring(werr)
    run:emit(event, rec)   -- the console still gets its summary
  end
  pcall(require("beat.runs.index").put, { id = run.id, status = status })
  run.status, run.reason = status, reason
end


return M
