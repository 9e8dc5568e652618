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

local function find_run(cli, root, id)
  local journal = require "beat.journal"
  local runs = journal.list(root .. "/.beat/runs")
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
  local start, last = recs[1] or {}, recs[#recs] or {}
  local iters = 0
  for _, r in ipairs(recs) do
    if r.event == "decision" and (r.iteration or 0) > iters then iters = r.iteration end
  end
  local status = (last.event == "run_end" or last.event == "interrupted") and last.status
    or "unfinished"
  return start, last, status, iters, recs, warning
end

function M.register(cli)
  cli.command("runs", {
    summary = "list the runs of this work tree",
    usage = "beat runs [-w DIR]",
    run = function(args)
      local rest, dir = take_dir_flag(cli, args)
      if rest[1] then cli.usage_error("runs: unexpected argument '%s'", rest[1]) end
      local _, root = work_tree(cli, dir)
      local journal = require "beat.journal"
      local runs = journal.list(root .. "/.beat/runs")
      if #runs == 0 then print("no runs yet") return 0 end
      for _, r in ipairs(runs) do
        local j = assert(journal.open(r.dir))
        local start, last, status, iters = summarize(j)
        print(("%s  %s  %-9s  %-11s %3d iter  %s"):format(r.id,
          os.date("%Y-%m-%d %H:%M", math.floor(start.time or 0)), start.strategy or "?", status,
          iters, last.reason or ""))
      end
      return 0
    end,
  })

  cli.command("show", {
    summary = "show what a run did",
    usage = "beat show [RUN|last] [-w DIR]",
    run = function(args)
      local rest, dir = take_dir_flag(cli, args)
      local _, root = work_tree(cli, dir)
      local r = find_run(cli, root, rest[1])
      local journal = require "beat.journal"
      local j = assert(journal.open(r.dir))
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
    usage = "beat restore RUN [base|best|iter-N] [-w DIR]",
    help = [[
Makes the work tree equal to a snapshot of run RUN ("last" for the newest):
base (default) is the work tree as it was before the run — uncommitted and
untracked files included — so this undoes the run; best is the best result;
iter-N is iteration N. Ignored files are never touched, HEAD, the index and
branches are not changed. The work tree as it is now is first saved as
refs/beat/RUN/before-restore, so a restore can itself be undone.]],
    run = function(args)
      local rest, dir = take_dir_flag(cli, args)
      if not rest[1] then cli.usage_error("restore: missing RUN (see 'beat runs')") end
      if rest[3] then cli.usage_error("restore: unexpected argument '%s'", rest[3]) end
      local which = rest[2] or "base"
      if not (which == "base" or which == "best" or which:match("^iter%-%d+$") or which == "before-restore") then
        cli.usage_error("restore: WHICH must be base, best or iter-N, got '%s'", which)
      end
      local repo, root, err = work_tree(cli, dir)
      if not repo then cli.usage_error("restore: %s", err) end
      local r = find_run(cli, root, rest[1])
      local ref = ("refs/beat/%s/%s"):format(r.id, which)
      local refs = repo:refs(ref)
      local target
      for _, x in ipairs(refs) do if x.name == ref then target = x.id end end
      if not target then cli.usage_error("restore: run %s has no snapshot '%s'", r.id, which) end
      local lock, lerr = repo:lock { id = "restore" }
      if not lock then io.stderr:write("beat: restore: ", lerr, "\n") return 1 end
      local res, rerr = repo:restore { commit = target, backup = ("refs/beat/%s/before-restore"):format(r.id) }
      lock:release()
      if not res then io.stderr:write("beat: restore: ", tostring(rerr), "\n") return 1 end
      print(("work tree restored to %s of run %s (%s): %d written, %d removed"):format(
        which, r.id, target:sub(1, 10), res.written, res.removed))
      print(("undo this: beat restore %s before-restore"):format(r.id))
      return 0
    end,
  })
end

return M
