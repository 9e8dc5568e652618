--- `beat restore RUN [WHICH]`: put the work tree back as it was at a
--- snapshot of a run (and undo a restore). Runs are found as cli/runs.lua finds them.
local runs = require "beat.cli.runs"

local M = {}

local iteration_name = runs.iteration_name

local function take_dir_flag(cli, args, flags)
  local rest, dir, seen = {}, nil, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-w" or a == "--working-directory" then
      dir = args[i + 1] or cli.usage_error("%s needs a directory", a)
      i = i + 2
    elseif flags and flags[a] then
      seen[a] = true
      i = i + 1
    elseif a:sub(1, 1) == "-" then
      cli.usage_error("unknown option '%s'", a)
    else
      rest[#rest + 1] = a
      i = i + 1
    end
  end
  return rest, dir, seen
end

function M.register(cli)
  cli.command("restore", {
    usage = "beat restore RUN [base|best|last|iter-N|pre-restore-N|before-restore-N] [--into-this-tree] [-w DIR]",
    help = [[
Makes the work tree equal to a snapshot of run RUN ("last" for the newest):
base (default) is the work tree as it was before the run — uncommitted and
untracked files included — so this undoes the run; best is the best result;
last is the last iteration; iter-N is iteration N (iter-R.K: candidate K of
round R of a parallel run); pre-restore-N is what
the run saved before it rewrote the work tree (files a check or eval wrote,
or your edits made while it ran). Ignored files are never touched, nor are
files too large to snapshot (they are named); HEAD, the index and branches
are not changed. The work tree as it is now is first saved as
refs/beat/RUN/before-restore-N (a new N each time), so a restore can itself
be undone. Works from the snapshots in git even when .beat/ was deleted.

Linked work trees (git worktree add) share their repository's snapshots;
a snapshot taken in another work tree is refused (exit 2) unless
--into-this-tree says to put that tree's files into this one.]],
    run = function(args)
      local rest, dir, flags = take_dir_flag(cli, args, { ["--into-this-tree"] = true })
      if not rest[1] then cli.usage_error("restore: missing RUN (see 'beat runs')") end
      if rest[3] then cli.usage_error("restore: unexpected argument '%s'", rest[3]) end
      local which = rest[2] or "base"
      if not (which == "base" or which == "best" or which == "last" or iteration_name(which:match("^iter%-(.+)$"))
          or which:match("^before%-restore%-%d+$") or which:match("^pre%-restore%-%d+$")) then
        cli.usage_error("restore: WHICH must be base, best, last, iter-N, pre-restore-N or before-restore-N, got '%s'", which)
      end
      local repo, root, err = runs.work_tree(cli, dir)
      if not repo then cli.usage_error("restore: %s", err) end
      local r = runs.find_run(cli, root, rest[1], repo)
      local prefix = ("refs/beat/%s/"):format(r.id)
      local refs, backups = repo:refs(prefix) or {}, 0
      local target = require("beat.runs.snapshot").find(refs, r.id, which, r.dir)
      for _, x in ipairs(refs) do
        local n = tonumber(x.name:match("/before%-restore%-(%d+)$"))
        if n and n > backups then backups = n end
      end
      if not target then cli.usage_error("restore: run %s has no snapshot '%s'", r.id, which) end
      local from = repo:worktree_of(target)
      if from and from:sub(1, #r.dir + 4) == r.dir .. "/wt/" then
        from = repo:worktree_of(prefix .. "base")   -- a parallel candidate's worktree: the run's work tree
      end
      if from and from ~= root and not flags["--into-this-tree"] then
        cli.usage_error("restore: run %s belongs to the work tree %s, not this one (%s); "
          .. "restore it there, or pass --into-this-tree", r.id, from, root)
      end
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
      for _, f in ipairs(res.kept or {}) do
        print(("left as it is: %s (%s, too large to snapshot, so no snapshot holds it)"):format(
          f.path, require("beat.size").format(f.size)))
      end
      for _, path in ipairs(res.conflicts or {}) do
        print(("left as it is: %s (changed while the restore ran)"):format(path))
      end
      print(("undo this: beat restore %s %s"):format(r.id, backup))
      return 0
    end,
  })
end

return M
