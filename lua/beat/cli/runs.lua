--- `beat runs`, `beat show RUN`, `beat restore RUN [WHICH]`: look back at
--- runs and undo them. Runs live in <work tree>/.beat/runs/<id>/.
local M = {}

local function work_tree(cli, dir)
  local beat = require "beat"
  local repo, err = beat.git.open(dir or ".")
  if repo then return repo, repo:path() end
  if dir and not beat.fs.is_dir(dir) then cli.usage_error("working directory %s does not exist", dir) end
  return nil, beat.fs.realpath(dir or "."), err
end

local function take_dir_flag(cli, args)
  local rest, dir = {}, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-w" or a == "--working-directory" then
      dir = args[i + 1] or cli.usage_error("%s needs a directory", a)
      i = i + 2
    elseif a:sub(1, 1) == "-" then
      cli.usage_error("unknown option '%s'", a)
    else
      rest[#rest + 1] = a
      i = i + 1
    end
  end
  return rest, dir
end

-- Runs known to the work tree: journals in .beat/runs, plus runs whose
-- snapshots are still in git when the journal is gone (an agent or a
-- `git clean -x` removed .beat/).
local function known_runs(root, repo)
  local journal = require "beat.journal"
  local runs = journal.list(root .. "/.beat/runs")
  if repo then
    local seen = {}
    for _, r in ipairs(runs) do seen[r.id] = true end
    for _, ref in ipairs(repo:refs("refs/beat/") or {}) do
      local id = ref.name:match("^refs/beat/([^/]+)/")
      if id and not seen[id] then
        seen[id] = true
        runs[#runs + 1] = { id = id, dir = root .. "/.beat/runs/" .. id, journal_gone = true }
      end
    end
    table.sort(runs, function(a, b) return a.id < b.id end)
  end
  return runs
end

local function find_run(cli, root, id, repo)
  local runs = known_runs(root, repo)
  if #runs == 0 then cli.usage_error("no runs in %s/.beat/runs", root) end
  if id == nil or id == "last" or id == "latest" then return runs[#runs] end
  local found
  for _, r in ipairs(runs) do
    if r.id:sub(1, #id) == id then
      if found then cli.usage_error("run id '%s' is ambiguous", id) end
      found = r
    end
  end
  if not found then cli.usage_error("no run '%s' in %s/.beat/runs (see 'beat runs')", id, root) end
  return found
end

local function summarize(j)
  local recs, warning = j:records()
  local start, last = {}, recs[#recs] or {}
  local iters = 0
  for _, r in ipairs(recs) do
    if r.event == "run_start" and not start.event then start = r end
    if r.event == "decision" and (r.iteration or 0) > iters then iters = r.iteration end
    if r.event == "run_end" or r.event == "interrupted" then last = r end
  end
  -- running, paused, crashed (its process gone without an end record), or how it ended
  local st = require("beat.runs.status").inspect(j.dir)
  if last.event ~= "run_end" and last.event ~= "interrupted" or st.alive then
    last = { reason = st.reason }
  end
  return start, last, st.state, iters, recs, warning
end

function M.register(cli)
  cli.command("runs", {
    summary = "list the runs of this work tree",
    usage = "beat runs [-w DIR]",
    run = function(args)
      local rest, dir = take_dir_flag(cli, args)
      if rest[1] then cli.usage_error("runs: unexpected argument '%s'", rest[1]) end
      local repo, root = work_tree(cli, dir)
      local journal = require "beat.journal"
      local runs = known_runs(root, repo)
      if #runs == 0 then print("no runs yet") return 0 end
      for _, r in ipairs(runs) do
        local j = journal.open(r.dir)
        if j then
          local start, last, status, iters = summarize(j)
          print(("%s  %s  %-9s  %-11s %3d iter  %s"):format(r.id,
            os.date("%Y-%m-%d %H:%M", math.floor(start.time or 0)), start.strategy or "?", status,
            iters, last.reason or ""))
        else
          print(("%s  (journal gone; snapshots kept in refs/beat/%s/)"):format(r.id, r.id))
        end
      end
      return 0
    end,
  })

  cli.command("show", {
    summary = "show what a run did",
    usage = "beat show [RUN|last] [-w DIR]",
    run = function(args)
      local rest, dir = take_dir_flag(cli, args)
      local repo, root = work_tree(cli, dir)
      local r = find_run(cli, root, rest[1], repo)
      local journal = require "beat.journal"
      local j = journal.open(r.dir)
      if not j then
        print(("run %s: its journal is gone; its snapshots are in refs/beat/%s/ ('beat restore %s base' still works)")
          :format(r.id, r.id, r.id))
        return 0
      end
      local start, last, status, iters, _, warning = summarize(j)
      print(("run %s (%s) in %s"):format(r.id, start.strategy or "?", start.cwd or root))
      print(("status: %s%s"):format(status, last.reason and (" — " .. last.reason) or ""))
      print(("iterations: %d%s"):format(iters, last.cost_usd and last.cost_usd > 0
        and ("; agent cost $%.2f"):format(last.cost_usd) or ""))
      if last.best_score then print(("best: %s (baseline: %s)"):format(last.best_score, last.baseline_score)) end
      print("")
      io.write(require("beat.fs").read(j.tsv) or "")
      if warning then print("warning: " .. warning) end
      print(("\njournal: %s"):format(j.path))
      return 0
    end,
  })

  cli.command("restore", {
    summary = "put the work tree back as it was at a point of a run",
    usage = "beat restore RUN [base|best|last|iter-N|pre-restore-N|before-restore-N] [-w DIR]",
    help = [[
Makes the work tree equal to a snapshot of run RUN ("last" for the newest):
base (default) is the work tree as it was before the run — uncommitted and
untracked files included — so this undoes the run; best is the best result;
last is the last iteration; iter-N is iteration N; pre-restore-N is what
the run saved before it rewrote the work tree (files a check or eval wrote,
or your edits made while it ran). Ignored files are never touched, HEAD,
the index and branches are not changed. The work tree as it is now is first saved as
refs/beat/RUN/before-restore-N (a new N each time), so a restore can itself
be undone. Works from the snapshots in git even when .beat/ was deleted.]],
    run = function(args)
      local rest, dir = take_dir_flag(cli, args)
      if not rest[1] then cli.usage_error("restore: missing RUN (see 'beat runs')") end
      if rest[3] then cli.usage_error("restore: unexpected argument '%s'", rest[3]) end
      local which = rest[2] or "base"
      if not (which == "base" or which == "best" or which == "last" or which:match("^iter%-%d+$")
          or which:match("^before%-restore%-%d+$") or which:match("^pre%-restore%-%d+$")) then
        cli.usage_error("restore: WHICH must be base, best, last, iter-N, pre-restore-N or before-restore-N, got '%s'", which)
      end
      local repo, root, err = work_tree(cli, dir)
      if not repo then cli.usage_error("restore: %s", err) end
      local r = find_run(cli, root, rest[1], repo)
      local prefix = ("refs/beat/%s/"):format(r.id)
      local target, backups = nil, 0
      for _, x in ipairs(repo:refs(prefix) or {}) do
        if x.name == prefix .. which then target = x.id end
        local n = tonumber(x.name:match("/before%-restore%-(%d+)$"))
        if n and n > backups then backups = n end
      end
      if not target then cli.usage_error("restore: run %s has no snapshot '%s'", r.id, which) end
      local lock, lerr = repo:lock { id = "restore" }
      if not lock then io.stderr:write("beat: restore: ", lerr, "\n") return 1 end
      local changed = repo:changed(target)
      if changed == false then
        lock:release()
        print(("the work tree already equals %s of run %s; nothing to do"):format(which, r.id))
        return 0
      end
      -- every restore keeps its own backup: none is ever overwritten
      local backup = ("before-restore-%d"):format(backups + 1)
      local res, rerr = repo:restore { commit = target, backup = prefix .. backup }
      lock:release()
      if not res then io.stderr:write("beat: restore: ", tostring(rerr), "\n") return 1 end
      print(("work tree restored to %s of run %s (%s): %d written, %d removed"):format(
        which, r.id, target:sub(1, 10), res.written, res.removed))
      print(("undo this: beat restore %s %s"):format(r.id, backup))
      return 0
    end,
  })
end

-- for `beat report` (cli/report.lua): the same work tree and run lookup
M.work_tree, M.find_run = work_tree, find_run

return M
