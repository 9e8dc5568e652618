-- What a loop keeps safe in git, end to end through build/beat: the runs
-- directory wherever it is, run ids and restores across linked work trees,
-- files too large to snapshot.
local beat = require "beat"
local H = require "tests.helpers"

local HUGE = H.root .. "/tests/fixtures/loop/huge-file.sh"
local FIX = H.root .. "/tests/fixtures/loop/fix-on-3.sh"

local function journal_at(dir)
  local journal = require "beat.journal"
  local runs = journal.list(dir)
  local run = assert(runs[#runs], "no run in " .. dir)
  return assert(journal.open(run.dir)), run.id
end

describe("the loop in git", function()
  it("never snapshots nor restores a runs directory moved inside the work tree", function()
    local dir, git = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.tmpdir() .. "/recipe.lua"
    H.write(recipe, ([[
      local beat = require "beat"
      return beat.strategy("retry") {
        agent = beat.agent.command { argv = { "sh", "-c", "echo fixed > bug.txt" } },
        prompt = "fix", check = "grep -q fixed bug.txt", runs_dir = %q, quiet = true,
      }
    ]]):format(dir .. "/out/runs"))
    local r = H.beat({ "run", recipe }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local j, id = journal_at(dir .. "/out/runs")
    local files = git("ls-tree", "-r", "--name-only", "refs/beat/" .. id .. "/base")
    assert.is_nil(files:find("out/", 1, true), files)
    local before = H.read(j.path)
    r = H.beat({ "restore", id, "base" }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal(before, H.read(j.path))       -- the journal is not the run's work
    assert.truthy(before:find('"run_end"', 1, true))
  end)

  it("rejects an iteration that leaves a file too large to snapshot, sets the file aside after the snapshot, and undoes the rest", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n", ["keep.txt"] = "the user's\n" }
    H.write(dir .. "/notes.txt", "uncommitted work\n")
    local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", "sh " .. HUGE,
      "--max-iterations", "1" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
    assert.matches("rejected", r.stdout)
    local recs, run_dir, id = H.last_run(dir)
    local d = H.events(recs, "decision")
    assert.equal("rejected", d[#d].status)
    assert.matches("huge.bin (40.0 GiB)", d[#d].summary, 1, true)
    -- the tree is as before the run; the huge file is out of it, kept aside
    assert.is_false(beat.fs.exists(dir .. "/huge.bin"))
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal("the user's\n", H.read(dir .. "/keep.txt"))
    assert.equal("uncommitted work\n", H.read(dir .. "/notes.txt"))
    local aside = run_dir .. "/too-large/iter-1/huge.bin"
    assert.equal(40 * 1024 ^ 3, beat.fs.stat(aside).size)
    assert.equal(1, #H.events(recs, "too_large"))
    -- the rest of the agent's work is in the iteration's snapshot
    local show = assert(beat.exec({ "git", "show", ("refs/beat/%s/iter-1:bug.txt"):format(id) }, { cwd = dir }))
    assert.equal("edited by the agent\n", show.stdout)
  end)

  it("rejects such an iteration in optimize too, and keeps the best result", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n", ["keep.txt"] = "the user's\n" }
    local r = H.loop(dir, { "improve", "--eval", "echo 1", "-a", "sh " .. HUGE, "--max-iterations", "2" })
    assert.is_nil(r.stderr:find("traceback", 1, true), r.stderr)
    local recs = H.last_run(dir)
    local d = H.events(recs, "decision")
    assert.equal("rejected", d[2].status)
    assert.equal("rejected", d[3].status)
    assert.is_false(beat.fs.exists(dir .. "/huge.bin"))
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal("the user's\n", H.read(dir .. "/keep.txt"))
  end)

  it("refuses to start, writing nothing, when the work tree already holds a file too large to snapshot", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    assert.truthy(os.execute("truncate -s 2G " .. dir .. "/data.bin"))
    local r = H.loop(dir, { "fix", "--until", "true", "-a", "true" })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.equal("beat: data.bin (2.0 GiB) is larger than max_file_size (1.0 GiB): beat could not restore it; "
      .. "ignore it (.gitignore) or raise max_file_size (--max-file-size)\n", r.stderr)
    local function nothing_written()
      assert.same({}, beat.fs.list(dir .. "/.beat/runs") or {})
      local refs = assert(beat.exec({ "git", "for-each-ref", "refs/beat/" }, { cwd = dir }))
      assert.equal("", refs.stdout)
    end
    nothing_written()
    -- ignored, it is no obstacle
    H.write(dir .. "/.git/info/exclude", "data.bin\n")
    r = H.loop(dir, { "fix", "--until", "true", "-a", "true" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    -- a limit of the user's own
    H.write(dir .. "/small.bin", ("x"):rep(200 * 1024))
    r = H.loop(dir, { "fix", "--until", "true", "-a", "true", "--max-file-size", "100K" })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("^beat: small.bin %(200.0 KiB%) is larger than max_file_size %(100.0 KiB%)", r.stderr)
    r = H.loop(dir, { "fix", "--until", "true", "-a", "true", "--max-file-size", "lots" })
    assert.equal(2, r.code)
    assert.equal('beat: loop: --max-file-size must be a size like 500M, 2G or a number of bytes, got "lots"\n',
      r.stderr)
  end)

  it("restores a run's base while the tree holds a file too large to snapshot, leaving that file alone", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", "sh " .. FIX }, { FIX_AT = "1" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, _, id = H.last_run(dir)
    os.execute("truncate -s 40G " .. dir .. "/later.bin")
    r = H.beat({ "restore", id, "base" }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal(40 * 1024 ^ 3, beat.fs.stat(dir .. "/later.bin").size)
    assert.matches("left as it is: later.bin (40.0 GiB, too large to snapshot", r.stdout, 1, true)
  end)

  -- A repository with a linked work tree (git worktree add), and a recipe
  -- that starts a retry run at the wall-clock time given in $START.
  local function two_trees()
    local main, git = H.git_repo { ["bug.txt"] = "broken\n" }
    local linked = H.tmpdir() .. "/linked"
    git("worktree", "add", "-q", "--detach", linked)
    local recipe = H.tmpdir() .. "/at.lua"
    H.write(recipe, [[
      local beat = require "beat"
      local start = tonumber(os.getenv("START"))
      while beat.now() < start do end   -- both runs leave this loop in the same millisecond
      return beat.strategy("retry") {
        agent = beat.agent.command { argv = { "true" } }, prompt = "x", check = "true", quiet = true,
      }
    ]])
    return main, linked, recipe, git
  end

  local function ids_in(dir)
    local out = {}
    for _, r in ipairs(require("beat.journal").list(dir .. "/.beat/runs")) do out[#out + 1] = r.id end
    return out
  end

  it("gives runs started at the same moment in two linked work trees distinct ids, 20 times out of 20", function()
    local main, linked, recipe, git = two_trees()
    for i = 1, 20 do
      local start = ("%.3f"):format(beat.now() + 0.4)
      local a = assert(beat.spawn({ H.bin, "run", recipe }, { cwd = main, env = { START = start } }))
      local b = assert(beat.spawn({ H.bin, "run", recipe }, { cwd = linked, env = { START = start } }))
      local ra, rb = a:wait(), b:wait()
      assert.equal(0, ra.code, ("try %d, main: %s%s"):format(i, ra.stdout, ra.stderr))
      assert.equal(0, rb.code, ("try %d, linked: %s%s"):format(i, rb.stdout, rb.stderr))
    end
    local seen = {}
    for _, dir in ipairs { main, linked } do
      local ids = ids_in(dir)
      assert.equal(20, #ids)
      for _, id in ipairs(ids) do
        assert.is_nil(seen[id], "id " .. id .. " given twice")
        seen[id] = true
      end
    end
    local bases = git("for-each-ref", "--format=%(refname)", "refs/beat/")
    local n = 0
    for _ in bases:gmatch("/base\n") do n = n + 1 end
    assert.equal(40, n)
  end)

  it("refuses to restore a snapshot of another work tree with one line and exit 2, unless --into-this-tree", function()
    local main, linked = two_trees()
    H.write(main .. "/main-only.txt", "main's own\n")
    H.write(linked .. "/linked-only.txt", "linked's own\n")
    local r = H.loop(linked, { "fix", "--until", "grep -q fixed bug.txt", "-a", "sh " .. FIX }, { FIX_AT = "1" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local id = ids_in(linked)[1]
    r = H.beat({ "restore", id, "base" }, { cwd = main })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.equal(("beat: restore: run %s belongs to the work tree %s, not this one (%s); "
      .. "restore it there, or pass --into-this-tree\n"):format(id, linked, main), r.stderr)
    assert.equal("main's own\n", H.read(main .. "/main-only.txt"))
    assert.is_false(beat.fs.exists(main .. "/linked-only.txt"))
    -- listed as the other tree's, and never this tree's "last"
    r = H.beat({ "runs" }, { cwd = main })
    assert.equal(("%s  (a run of the work tree %s)\n"):format(id, linked), r.stdout)
    r = H.beat({ "restore", "last" }, { cwd = main })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    -- in its own tree it restores as ever
    r = H.beat({ "restore", id, "base" }, { cwd = linked })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("broken\n", H.read(linked .. "/bug.txt"))
    -- asked for, into this tree; undoable as any restore
    r = H.beat({ "restore", id, "base", "--into-this-tree" }, { cwd = main })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("linked's own\n", H.read(main .. "/linked-only.txt"))
    assert.is_false(beat.fs.exists(main .. "/main-only.txt"))
    local undo = r.stdout:match("undo this: beat restore (%S+ %S+)")
    r = H.beat({ "restore", undo:match("^(%S+)"), undo:match(" (%S+)$") }, { cwd = main })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("main's own\n", H.read(main .. "/main-only.txt"))
    assert.is_false(beat.fs.exists(main .. "/linked-only.txt"))
  end)
end)
