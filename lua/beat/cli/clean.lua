--- `beat clean`: removes finished runs — their directories in .beat/runs and
--- their snapshot refs refs/beat/<run>/ — never a running one.
local M = {}

local USAGE = "beat clean [--older-than DUR] [--keep N] [--unfinished] [--dry-run] [-w DIR]"

local HELP = [[
Removes the runs of this work tree that have ended: each run's directory
(.beat/runs/<id>/: journal, results.tsv, logs) and its snapshots
(refs/beat/<id>/...: base, best, last, iter-N, pre-restore-N, ...), and
prints what it removed. A running run is never touched: one holding the
work tree's lock, or whose process is alive without an end record. After
a run is cleaned, 'beat restore <id> ...' no longer works for it.

  --keep N          keep the N newest of the runs that could go (default 1,
                    so the last run can still be undone; --keep 0 removes
                    it too)
  --older-than DUR  only runs that ended more than DUR ago (30m, 12h, 7d)
  --unfinished      also runs that died without an end record (killed or
                    crashed); by default they are kept
  --dry-run, -n     print what would be removed, remove nothing
  -w DIR            another work tree

Runs of other work trees of the same repository (git worktree) are left
alone: their snapshots share refs/beat/ but their journals are not here.
Exit status: 0; 1 when something could not be removed; 2 for bad input.]]

local function ago(s)
  s = math.max(0, s)
  if s < 90 then return ("%ds ago"):format(math.floor(s)) end
  if s < 5400 then return ("%d min ago"):format(math.floor(s / 60 + 0.5)) end
  if s < 36 * 3600 then return ("%d h ago"):format(math.floor(s / 3600 + 0.5)) end
  return ("%d days ago"):format(math.floor(s / 86400 + 0.5))
end

-- The work trees of the repository (root paths) and the run ids holding
-- the lock of any of them (probed with a non-blocking flock, released at once).
local function work_trees(repo)
  local fs = require "beat.fs"
  local root, gitdir = repo:path()
  local common = gitdir:gsub("/worktrees/[^/]+/?$", "")
  local trees = { { root = common:match("^(.*)/%.git$"), lock = common .. "/beat/run.lock" } }
  for _, name in ipairs(fs.list(common .. "/worktrees") or {}) do
    local link = fs.read(("%s/worktrees/%s/gitdir"):format(common, name))
    local wt = link and link:match("^%s*(.-)/%.git%s*$")
    trees[#trees + 1] = { root = wt, lock = ("%s/worktrees/%s/beat/run.lock"):format(common, name) }
  end
  local holders = {}
  for _, t in ipairs(trees) do
    if fs.exists(t.lock) then
      local lock, _, code = fs.lock(t.lock, ("%d clean\n"):format(require("beat").pid()))
      if lock then
        lock:release()
      elseif code == fs.errno.EWOULDBLOCK then
        -- the holder recorded "<pid> <run id>"
        local pid, id = (fs.read(t.lock) or ""):match("^(%d+) ([^\n]+)")
        if id then holders[id] = { pid = tonumber(pid), root = t.root } end
      end
    end
  end
  local others = {}
  for _, t in ipairs(trees) do
    if t.root and fs.realpath(t.root) ~= fs.realpath(root) then others[#others + 1] = t.root end
  end
  return others, holders
end

function M.register(cli)
  cli.command("clean", {
    usage = USAGE,
    help = HELP,
    run = function(args)
      local runs = require "beat.cli.runs"
      local duration = require "beat.duration"
      local fs = require "beat.fs"
      local beat = require "beat"
      local pos, o = runs.parse_flags(cli, "clean", args, {
        ["--older-than"] = { "value", "older_than" }, ["--keep"] = "value", ["--unfinished"] = "bool",
        ["--dry-run"] = { "bool", "dry_run" }, ["-n"] = { "bool", "dry_run" },
        ["-w"] = { "value", "dir" }, ["--working-directory"] = { "value", "dir" } })
      if pos[1] then cli.usage_error("clean: unexpected argument '%s'", pos[1]) end
      local keep = 1
      if o.keep then
        keep = math.tointeger(tonumber(o.keep))
        if not keep or keep < 0 then cli.usage_error("clean: --keep must be a whole number >= 0, got '%s'", o.keep) end
      end
      local older
      if o.older_than then
        local why
        older, why = duration.parse(o.older_than)
        if not older or o.older_than:match("^%s*[%d.]+%s*$") then
          cli.usage_error("clean: --older-than %s", why or ("needs a unit (30m, 12h, 7d), got '" .. o.older_than .. "'"))
        end
      end
      if o.dir and not fs.is_dir(o.dir) then cli.usage_error("clean: working directory %s does not exist", o.dir) end
      local repo, root = runs.work_tree(cli, o.dir)
      local list = runs.known_runs(root, repo)
      if #list == 0 then print("no runs to clean in " .. root .. "/.beat/runs") return 0 end
      local others, holders = {}, {}
      if repo then others, holders = work_trees(repo) end

      local now = beat.now()
      local candidates, kept = {}, {}
      for _, r in ipairs(list) do
        local info = runs.info(r)
        local holder = holders[info.id]
        if holder or info.status == "running" or info.status == "paused" or info.status == "starting" then
          kept[#kept + 1] = ("kept %s (%s, pid %s)"):format(info.id, info.status == "paused" and "paused" or "running",
            tostring(holder and holder.pid or info.pid))
        elseif info.journal_gone then
          local elsewhere
          for _, wt in ipairs(others) do
            if fs.exists(("%s/.beat/runs/%s/journal.jsonl"):format(wt, info.id)) then elsewhere = wt break end
          end
          if elsewhere then
            kept[#kept + 1] = ("left %s alone (a run of the work tree %s)"):format(info.id, elsewhere)
          else
            info.age = info.started and now - info.started
            candidates[#candidates + 1] = info
          end
        elseif info.status == "crashed" and not o.unfinished then
          kept[#kept + 1] = ("kept %s (crashed: its process died without an end record; 'beat loop resume %s' continues it, --unfinished removes it)")
            :format(info.id, info.id)
        else
          info.age = now - (info.ended or info.started or now)
          candidates[#candidates + 1] = info
        end
      end
      -- the newest `keep` of them stay
      local remove = {}
      for i, info in ipairs(candidates) do
        if i > #candidates - keep then
          kept[#kept + 1] = ("kept %s (%s; --keep %d keeps the newest)"):format(info.id,
            info.journal_gone and "journal gone" or info.status, keep)
        elseif older and not (info.age and info.age > older) then
          kept[#kept + 1] = ("kept %s (ended %s, not older than %s)"):format(info.id,
            info.age and ago(info.age) or "at an unknown time", o.older_than)
        else
          remove[#remove + 1] = info
        end
      end

      local failed, refs_total = 0, 0
      local verb = o.dry_run and "would remove" or "removed"
      for _, info in ipairs(remove) do
        local prefix = ("refs/beat/%s/"):format(info.id)
        local refs = repo and repo:refs(prefix) or {}
        local saved = {}
        for _, x in ipairs(refs) do
          local name = x.name:sub(#prefix + 1)
          if name:match("^pre%-restore%-%d+$") or name:match("^before%-restore%-%d+$") then
            saved[#saved + 1] = ("%s %s"):format(name, x.id:sub(1, 12))
          end
        end
        local what = {}
        local has_dir = fs.is_dir(info.dir)
        if has_dir then what[#what + 1] = info.dir end
        if #refs > 0 then what[#what + 1] = ("%d ref%s under %s"):format(#refs, #refs == 1 and "" or "s", prefix) end
        local ok, err = true, nil
        if not o.dry_run then
          if has_dir and repo and fs.is_dir(info.dir .. "/wt") then
            -- a killed parallel run's worktrees (and Slurm jobs): git's records of them go too
            ok, err = require("beat.parallel").cleanup(info.id, { repo = repo, runs_dir = info.dir:match("^(.*)/[^/]+$") })
          end
          if ok and has_dir then ok, err = fs.rm_rf(info.dir) end
          if ok and #refs > 0 then ok, err = repo:delete_refs(prefix) end
          if ok then require("beat.runs.index").remove(info.id) end
        end
        if ok then
          refs_total = refs_total + #refs
          print(("%s %s (%s%s): %s"):format(verb, info.id, info.journal_gone and "journal gone" or info.status,
            info.age and (", " .. ago(info.age)) or "", table.concat(what, " and ")))
          if #saved > 0 then
            print(("  it held files beat had saved for you (%s): until git gc prunes them, 'git update-ref %s<name> <commit>' brings one back")
              :format(table.concat(saved, ", "), prefix))
          end
        else
          failed = failed + 1
          io.stderr:write(("beat: clean: cannot remove %s: %s\n"):format(info.id, tostring(err)))
        end
      end
      for _, k in ipairs(kept) do print(k) end
      if #remove == 0 then
        print("nothing to clean")
      else
        print(("%s %d run%s and %d ref%s"):format(verb, #remove - failed, #remove - failed == 1 and "" or "s",
          refs_total, refs_total == 1 and "" or "s"))
      end
      return failed > 0 and 1 or 0
    end,
  })
end

return M
