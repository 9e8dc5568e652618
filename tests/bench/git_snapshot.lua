-- Benchmark: snapshot a 20,000-file repository after changing one file.
--
--   build/beat run tests/bench/git_snapshot.lua [files] [rounds]
--
-- Compares beat.git against the git CLI doing the same thing with a
-- temporary index (cp .git/index; GIT_INDEX_FILE=… git add -A && git
-- write-tree && git commit-tree), for both ways beat finds the changed files:
-- the inotify watch (the change set is known) and the full scan (it is not).
-- Targets (issue 3): watch ≤ 1/10 of the CLI; full scan no slower than the CLI.
-- Then repo:tree alone, first after an open (the base snapshot of every
-- `beat loop`) and after one change; then full scans again with `* text=auto`
-- committed (the index's blob ids are then not trusted as the files' bytes)
-- and with 5,000 untracked files.
-- Prints medians; it never fails on a time, only on a wrong tree.
local beat = require "beat"
local git = require "beat.git"

local FILES = tonumber(arg and arg[1]) or 20000
local ROUNDS = tonumber(arg and arg[2]) or 7
local PER_DIR = 100

local env = {
  GIT_CONFIG_NOSYSTEM = "1", GIT_OPTIONAL_LOCKS = "0",
  GIT_AUTHOR_NAME = "bench", GIT_AUTHOR_EMAIL = "bench@localhost",
  GIT_COMMITTER_NAME = "bench", GIT_COMMITTER_EMAIL = "bench@localhost",
}

local function run(cmd, cwd, extra)
  local e = {}
  for k, v in pairs(env) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  local r = assert(beat.exec(cmd, { cwd = cwd, env = e }))
  if r.code ~= 0 then error(("%s: %s"):format(type(cmd) == "table" and table.concat(cmd, " ") or cmd, r.stderr)) end
  return r.stdout, r
end

local median = require("beat.stats").median

local function ms(s) return ("%.2f ms"):format(s * 1000) end

local dir = assert(beat.fs.tmpdir("beat-bench-git"))
local ok, err = pcall(function()
  -- the repository: FILES small source-like files in FILES/PER_DIR directories
  io.write(("generating %d files in %s ... "):format(FILES, dir)) io.flush()
  run({ "git", "init", "-q", "-b", "main" }, dir)
  for i = 0, FILES - 1 do
    local d = ("%s/src/m%03d"):format(dir, i // PER_DIR)
    if i % PER_DIR == 0 then assert(beat.fs.mkdir_p(d)) end
    local f = assert(io.open(("%s/f%05d.c"):format(d, i), "wb"))
    f:write(("/* file %d */\nint f%d(int x) { return x * %d + 1; }\n"):format(i, i, i))
    f:close()
  end
  beat.sleep(1.1) -- so that no index entry is racily clean
  run({ "git", "add", "-A" }, dir)
  run({ "git", "commit", "-q", "-m", "generated" }, dir)
  io.write("done\n")

  local counter = 0
  local function change_one()
    counter = counter + 1
    local i = (counter * 7919) % FILES
    local f = assert(io.open(("%s/src/m%03d/f%05d.c"):format(dir, i // PER_DIR, i), "ab"))
    f:write(("/* change %d */\n"):format(counter))
    f:close()
  end

  -- the git CLI with a temporary index
  local idx = dir .. "/.git/bench-index"
  local cli_script = ([[cp .git/index %q && export GIT_INDEX_FILE=%q && git add -A && ]] ..
    [[t=$(git write-tree) && git commit-tree -p HEAD -m bench "$t" >/dev/null && echo "$t"]]):format(idx, idx)
  local cli, cli_tree = {}, nil
  for _ = 1, ROUNDS do
    change_one()
    local t0 = beat.clock()
    cli_tree = run({ "sh", "-c", cli_script }, dir):gsub("%s+$", "")
    cli[#cli + 1] = beat.clock() - t0
  end

  -- beat, full scan (no watch)
  local repo = assert(git.open { dir = dir, watch = false })
  local full = {}
  for _ = 1, ROUNDS do
    change_one()
    local t0 = beat.clock()
    local _, info = assert(repo:snapshot { ref = "bench/full" })
    full[#full + 1] = beat.clock() - t0
    assert(info.scan == "full")
  end
  repo:close()

  -- beat, watch: the first snapshot scans and starts the watch
  repo = assert(git.open { dir = dir })
  change_one()
  local t0 = beat.clock()
  assert(repo:snapshot { ref = "bench/watch" })
  local first = beat.clock() - t0
  local watch, last = {}, nil
  for _ = 1, ROUNDS do
    change_one()
    t0 = beat.clock()
    local _, info = assert(repo:snapshot { ref = "bench/watch" })
    watch[#watch + 1] = beat.clock() - t0
    assert(info.scan == "watch", "the watch was not used: " .. tostring(info.watch))
    last = info.tree
  end
  -- the tree alone (no commit, no ref): after one change, through the
  -- watch; and the first one after each open, which starts the watch
  local trees = {}
  for _ = 1, ROUNDS do
    change_one()
    t0 = beat.clock()
    local _, info = assert(repo:tree())
    trees[#trees + 1] = beat.clock() - t0
    assert(info.scan == "watch")
    last = info.tree
  end
  local opens = {}
  for _ = 1, ROUNDS do
    local r2 = assert(git.open { dir = dir })
    t0 = beat.clock()
    local _, info = assert(r2:tree())
    opens[#opens + 1] = beat.clock() - t0
    assert(info.scan == "full")
    r2:close()
  end
  -- correctness: the three agree on the final state
  local _, finfo = assert(repo:snapshot { full = true })
  local cli_now = run({ "sh", "-c", cli_script }, dir):gsub("%s+$", "")
  assert(finfo.tree == last and last == cli_now, "trees differ: watch " .. last .. ", full " ..
    finfo.tree .. ", git " .. cli_now)
  repo:close()
  assert(cli_tree)

  local c, w, f = median(cli), median(watch), median(full)
  print(("repo: %d files, one file changed per snapshot, median of %d"):format(FILES, ROUNDS))
  print(("git CLI, temporary index : %s"):format(ms(c)))
  print(("beat, watch (known set)  : %s   ratio %.4f  (target <= 0.1)"):format(ms(w), w / c))
  print(("beat, full scan          : %s   ratio %.3f   (target <= 1)"):format(ms(f), f / c))
  print(("beat, first snapshot (starts the watch, full scan): %s"):format(ms(first)))
  print(("beat, repo:tree, first after open (starts the watch): %s"):format(ms(median(opens))))
  print(("beat, repo:tree after one change (watch): %s"):format(ms(median(trees))))

  -- full scans against the CLI in a given state of the repository; the first
  -- round of each is left out (it writes the objects, for both)
  local function versus(label)
    local repo2 = assert(git.open { dir = dir, watch = false })
    local t1 = beat.clock()
    local _, i1 = assert(repo2:snapshot { ref = "bench/full" })
    local first_scan, first_hashed = beat.clock() - t1, i1.hashed
    run({ "sh", "-c", cli_script }, dir)
    local b, g, info = {}, {}, nil
    for _ = 1, ROUNDS do
      change_one()
      t1 = beat.clock()
      _, info = assert(repo2:snapshot { ref = "bench/full" })
      b[#b + 1] = beat.clock() - t1
      t1 = beat.clock()
      local t = run({ "sh", "-c", cli_script }, dir):gsub("%s+$", "")
      g[#g + 1] = beat.clock() - t1
      assert(t == info.tree, label .. ": trees differ: beat " .. info.tree .. ", git " .. t)
    end
    repo2:close()
    local mb, mg = median(b), median(g)
    print(("%s: full scan %s (%d files read), git CLI %s, ratio %.3f; first scan %s (%d read)"):format(
      label, ms(mb), info.hashed, ms(mg), mb / mg, ms(first_scan), first_hashed))
    return mb
  end

  -- `* text=auto`: git add may have stored other bytes than the files hold, so
  -- the index's blob ids are not trusted; the first full scan reads every
  -- tracked file, later ones take what it learnt from .git/beat/raw-index
  local fa = assert(io.open(dir .. "/.gitattributes", "wb"))
  fa:write("* text=auto\n")
  fa:close()
  run({ "git", "add", ".gitattributes" }, dir)
  run({ "git", "commit", "-q", "-m", "attributes" }, dir)
  versus("* text=auto committed")

  -- untracked files that are not ignored: each is read and hashed by both
  local UNTRACKED = 5000
  for i = 0, UNTRACKED - 1 do
    local d = ("%s/data/u%03d"):format(dir, i // PER_DIR)
    if i % PER_DIR == 0 then assert(beat.fs.mkdir_p(d)) end
    local fu = assert(io.open(("%s/u%05d.txt"):format(d, i), "wb"))
    fu:write(("untracked %d\n"):format(i))
    fu:close()
  end
  local with = versus(("+ %d untracked"):format(UNTRACKED))
  print(("  cost per untracked file: %.1f us"):format((with - f) / UNTRACKED * 1e6))
end)
beat.fs.rm_rf(dir)
if not ok then error(err, 0) end
