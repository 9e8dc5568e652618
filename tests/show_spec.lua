-- beat show (the table, --diff, --log, --json), beat runs --json, beat clean:
-- on real runs in real repositories.
local beat = require "beat"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local SLOW = "sh " .. H.root .. "/tests/fixtures/loop/slow-set.sh"
local AGENTS = H.root .. "/tests/fixtures/agents"

local function show(dir, args, env)
  local argv = { "show" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return H.beat(argv, { cwd = dir, env = env })
end

-- A run of optimize over value.txt: baseline 100, then 90 (keep), 95 (discard), 80 (keep).
local function optimize_run(files)
  local f = files or {}
  f["value.txt"] = f["value.txt"] or "100\n"
  local dir, git = H.git_repo(f)
  return dir, git
end

local function loop(dir, values, extra)
  local args = { "lower it", "--eval", "cat value.txt", "-a", SET, "--max-iterations", tostring(#values) }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local r = H.loop(dir, args, { VALUES = table.concat(values, " ") })
  assert(r.code == 0, r.stdout .. r.stderr)
  local _, rundir, id = H.last_run(dir)
  return id, rundir
end

-- The raw bytes on a terminal (script(1) gives beat a pty).
local function through_pty(dir, args)
  local cmd = { H.bin }
  for _, a in ipairs(args) do cmd[#cmd + 1] = "'" .. a .. "'" end
  return assert(beat.exec({ "script", "-qec", table.concat(cmd, " "), "/dev/null" }, { cwd = dir }))
end

describe("beat show RUN", function()
  it("prints an aligned table of the iterations, then the stop reason, best vs baseline, diff stat and logs", function()
    local dir = optimize_run()
    local id, rundir = loop(dir, { "90", "95", "80" })
    local r = show(dir, { "last" })
    assert.equal(0, r.code, r.stderr)
    local out = r.stdout
    assert.matches("^run " .. id .. " %(optimize%) in ", out)
    local header = out:match("\n(iter +decision +score +best +time +reason)\n")
    assert.truthy(header, out)
    local col = header:find("decision", 1, true)
    local rows = {}
    for line in out:gmatch("\n([^\n]*)") do
      if line:match("^ *base ") or line:match("^ +%d+ ") then
        rows[#rows + 1] = line
        assert.equal("  ", line:sub(col - 2, col - 1), line)   -- the decision column lines up
        assert.truthy(line:sub(col):match("^%a+"), line)
      end
    end
    assert.equal(4, #rows)
    assert.matches("^base  baseline  score 100", rows[1])
    assert.matches("^   1  keep      score 90   score 90", rows[2])
    assert.matches("^   2  discard   score 95   score 90", rows[3])
    assert.matches("worse: score 95 > 90 %(%+5%.6%%%)$", rows[3])
    -- durations in human units, each the iteration's own: they add up to no more than the run
    local sum = 0
    for _, row in ipairs(rows) do
      local v, unit = row:match("  (%d+%.?%d*)(m?s)  ")
      assert.truthy(v, row)
      sum = sum + tonumber(v) * (unit == "ms" and 0.001 or 1)
    end
    local recs = H.last_run(dir)
    assert.is_true(sum <= recs[#recs].elapsed + 0.01, ("%g > %g"):format(sum, recs[#recs].elapsed))
    assert.matches("\ncompleted: 3 iterations done\n", out)
    assert.matches("\nbest: score 80 %(baseline: score 100%)\n", out)
    assert.matches("\n3 iterations in ", out)
    assert.matches("\nbest vs base: 1 file, %+1 %-1\n  modified  value.txt %(%+1 %-1%)\n", out)
    assert.matches("\nlogs: " .. rundir:gsub("%p", "%%%0") .. "/iter%-N/{[a-z,]+}%.log, iterations 0%-3\n", out)
    assert.matches("\njournal: " .. rundir:gsub("%p", "%%%0") .. "/journal%.jsonl\n", out)
    -- by unique prefix, too, and a pipe gets no colour
    local p = show(dir, { id:sub(1, 6) })
    assert.equal(out, p.stdout)
    assert.is_nil(out:find("\27", 1, true))
  end)

  it("labels the initial check of a retry run and counts iterations as the summary does", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh" })
    assert.equal(0, r.code)
    local s = show(dir, {}).stdout
    assert.matches("\ninit  fail ", s)
    assert.matches("\n   3  pass ", s)
    assert.matches("\n3 iterations in ", s)
    assert.matches("\n3 iterations in ", r.stdout)
  end)

  it("finds a run without reading other runs' refs; runs known only by their refs, loose or packed, are still listed", function()
    local dir = optimize_run()
    local first = loop(dir, { "90" })
    local second = loop(dir, { "80" })
    local trace, r = H.strace("openat,open", { H.bin, "show", second }, { cwd = dir })
    if not trace then pending(r) return end
    assert.equal(0, r.code, r.stderr)
    assert.matches("refs/beat/" .. second .. "/", trace, 1, true)           -- its own snapshots
    assert.is_nil(trace:find("refs/beat/" .. first .. "/", 1, true), "read the other run's refs")
    -- the first run's journal gone: its refs still make it a run, loose and then packed;
    -- a directory that deleted refs left empty makes none
    assert(beat.fs.rm_rf(dir .. "/.beat/runs/" .. first))
    assert(beat.fs.mkdir_p(dir .. "/.git/refs/beat/zzzzzzzz"))
    local function ids()
      local out = H.beat({ "runs", "--json" }, { cwd = dir })
      assert.equal(0, out.code, out.stderr)
      local list = {}
      for _, run in ipairs(beat.json.decode(out.stdout).runs) do list[#list + 1] = run.id end
      table.sort(list)
      return list
    end
    assert.same({ first, second }, ids())
    local packed = assert(beat.exec({ "git", "pack-refs", "--all" }, { cwd = dir }))
    assert.equal(0, packed.code, packed.stderr)
    assert.is_nil(beat.fs.stat(dir .. "/.git/refs/beat/" .. first .. "/base"))
    assert.same({ first, second }, ids())
    r = show(dir, { first })
    assert.equal(0, r.code, r.stderr)
    assert.matches("its journal is gone; its snapshots are in refs/beat/" .. first .. "/", r.stdout, 1, true)
  end)

  it("--json prints one document with the iterations, the count, the diff stat and the logs", function()
    local dir = optimize_run()
    local id, rundir = loop(dir, { "90", "95" })
    local r = show(dir, { id, "--json" })
    assert.equal(0, r.code, r.stderr)
    local doc = beat.json.decode(r.stdout)
    assert.equal(1, doc.version)
    assert.equal(id, doc.id)
    assert.equal("completed", doc.status)
    assert.equal(2, doc.iteration_count)
    assert.equal(3, #doc.iterations)
    assert.equal(1, doc.diff.files_changed)
    assert.equal(rundir .. "/iter-1/agent.log", doc.logs["1"].agent)
    local runs = beat.json.decode(H.beat({ "runs", "--json" }, { cwd = dir }).stdout)
    assert.equal(1, runs.version)
    assert.equal(id, runs.runs[1].id)
    assert.equal(2, runs.runs[1].iterations)
    assert.is_false(runs.runs[1].running)
  end)
end)

describe("beat show RUN --diff", function()
  it("prints the patch of best against base, of one iteration, and of the base against HEAD", function()
    local dir = optimize_run()
    H.write(dir .. "/notes.txt", "my draft\n")   -- uncommitted work the run starts from
    local id = loop(dir, { "90", "95", "80" })
    local best = show(dir, { id, "--diff" })
    assert.equal(0, best.code, best.stderr)
    assert.matches("^diff %-%-git a/value%.txt b/value%.txt\n", best.stdout)
    assert.matches("\n%-100\n%+80\n", best.stdout)
    assert.is_nil(best.stdout:find("notes.txt", 1, true))   -- in base and best alike
    local it2 = show(dir, { id, "--diff", "iter-2" })          -- discarded: 95 on top of the best, 90
    assert.matches("\n%-90\n%+95\n", it2.stdout)
    local base = show(dir, { id, "--diff", "base" })
    assert.matches("^diff %-%-git a/notes%.txt b/notes%.txt\nnew file mode", base.stdout)
    assert.matches("\n%+my draft\n", base.stdout)
    assert.is_nil(best.stdout:find("\27", 1, true))
    local bad = show(dir, { id, "--diff", "iter-9" })
    assert.equal(2, bad.code)
    assert.equal(("beat: show: run %s has no snapshot 'iter-9' (see 'beat show %s')\n"):format(id, id), bad.stderr)
    local worse = show(dir, { id, "--diff", "sideways" })
    assert.equal(2, worse.code)
    assert.matches("takes best, base, last, iter%-N or iter%-R%.K", worse.stderr)
  end)

  it("is coloured like git diff on a terminal", function()
    local dir = optimize_run()
    local id = loop(dir, { "90" })
    local r = through_pty(dir, { "show", id, "--diff" })
    assert.equal(0, r.code, r.stdout)
    assert.truthy(r.stdout:find("\27[31m-100\27[0m", 1, true), r.stdout)
    assert.truthy(r.stdout:find("\27[32m+90\27[0m", 1, true), r.stdout)
    assert.truthy(r.stdout:find("\27[36m@@", 1, true), r.stdout)
  end)
end)

describe("beat show RUN --log N", function()
  it("prints Claude's stream-json as the conversation, not raw JSON; --raw as it is", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local env = { PATH = AGENTS .. ":" .. os.getenv("PATH"), FAKE_WRITE = "bug.txt" }
    local r = H.loop(dir, { "fix", "--until", "grep -q fake bug.txt", "-a", "claude" }, env)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local log = show(dir, { "last", "--log", "1" })
    assert.equal(0, log.code, log.stderr)
    assert.equal(table.concat({
      "session sess-0001 · model claude-fake",
      "The log says: rate limit exceeded (429), usage limit reached.",
      "→ Write bug.txt",
      "  ← ok",
      "All done.",
      "",
      "result: success · 3 turns · $0.0123",
    }, "\n") .. "\n", log.stdout)
    local raw = show(dir, { "last", "--log", "1", "agent", "--raw" })
    assert.matches('^{"', raw.stdout)
    assert.truthy(raw.stdout:find('"type":"result"', 1, true))
  end)

  it("prints Codex's and Gemini's JSON lines as the conversation too", function()
    local want = {
      codex = { "→ $ bash -lc ls (exit 0)", "  ← x", "result: turn completed · 24763 input, 122 output tokens" },
      gemini = { "Let me look.", "→ write_file bug.txt", "  ← ok", "Done editing.", "result: success" },
    }
    for name, lines in pairs(want) do
      local dir = H.git_repo { ["bug.txt"] = "broken\n" }
      local env = { PATH = AGENTS .. ":" .. os.getenv("PATH"), FAKE_WRITE = "bug.txt" }
      local r = H.loop(dir, { "fix", "--until", "grep -q fake bug.txt", "-a", name }, env)
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local log = show(dir, { "last", "--log", "1" }).stdout
      for _, l in ipairs(lines) do assert.truthy(log:find(l, 1, true), name .. ": " .. l .. "\n" .. log) end
      assert.is_nil(log:find('{"type"', 1, true), log)
    end
  end)

  it("prints the check or eval log of an iteration, and names what exists when asked for what does not", function()
    local dir = optimize_run()
    local id = loop(dir, { "90" })
    local ev = show(dir, { id, "--log", "0", "eval" })
    assert.equal(0, ev.code, ev.stderr)
    assert.matches("^%$ cat value%.txt\n# exit 0", ev.stdout)
    assert.matches("\n%-%-%- stdout\n100\n", ev.stdout)
    local def = show(dir, { id, "--log", "1" })    -- the agent's log first
    assert.matches("set value to 90", def.stdout)
    local none = show(dir, { id, "--log", "0", "agent" })
    assert.equal(2, none.code)
    assert.equal(("beat: show: iteration 0 of run %s has no agent log (it has: eval)\n"):format(id), none.stderr)
    local far = show(dir, { id, "--log", "7" })
    assert.equal(2, far.code)
    assert.matches("has no logs for iteration 7", far.stderr)
  end)
end)

describe("beat clean", function()
  local function refs(git, id)
    return git("for-each-ref", "--format=%(refname)", "refs/beat/" .. id .. "/")
  end

  it("removes finished runs' directories and refs, keeps the newest, and prints what it removed", function()
    local dir, git = optimize_run()
    local a = loop(dir, { "90" })
    local b = loop(dir, { "80" })
    local c = loop(dir, { "70" })
    local dry = H.beat({ "clean", "--dry-run" }, { cwd = dir })
    assert.equal(0, dry.code, dry.stderr)
    assert.matches("would remove " .. a, dry.stdout)
    assert.is_true(beat.fs.is_dir(dir .. "/.beat/runs/" .. a))
    assert.is_true(#refs(git, a) > 0)
    local r = H.beat({ "clean" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.matches("removed " .. a .. " %(completed, %d+s ago%): [^\n]*%.beat/runs/" .. a .. " and %d+ refs under refs/beat/" .. a .. "/", r.stdout)
    assert.matches("removed " .. b, r.stdout)
    assert.matches("kept " .. c .. " %(completed; %-%-keep 1 keeps the newest%)", r.stdout)
    assert.matches("removed 2 runs and %d+ refs\n$", r.stdout)
    for _, id in ipairs { a, b } do
      assert.is_false(beat.fs.exists(dir .. "/.beat/runs/" .. id))
      assert.equal("", refs(git, id))
    end
    assert.is_true(beat.fs.is_dir(dir .. "/.beat/runs/" .. c))
    assert.is_true(#refs(git, c) > 0)
    assert.equal(2, H.beat({ "restore", a, "base" }, { cwd = dir }).code)   -- gone for good
    -- --older-than: nothing here is an hour old
    local young = H.beat({ "clean", "--keep", "0", "--older-than", "1h" }, { cwd = dir })
    assert.matches("kept " .. c .. " %(ended %d+s ago, not older than 1h%)", young.stdout)
    assert.matches("nothing to clean", young.stdout)
    local all = H.beat({ "clean", "--keep", "0" }, { cwd = dir })
    assert.matches("removed 1 run and", all.stdout)
    assert.equal("", git("for-each-ref", "refs/beat/"))
  end)

  it("never removes a running run, even with --keep 0", function()
    local dir, git = optimize_run()
    local old = loop(dir, { "90" })
    local p = assert(beat.spawn({ H.bin, "loop", "lower", "--eval", "cat value.txt", "-a", SLOW,
      "--max-iterations", "1" }, { cwd = dir, env = { SLEEP = "30" }, stdout = true }))
    finally(function() p:kill("KILL") end)
    local running
    local deadline = beat.clock() + 20
    repeat
      beat.sleep(0.05)
      local runs = require("beat.journal").list(dir .. "/.beat/runs")
      if #runs == 2 then
        local recs = require("beat.journal").open(runs[2].dir):records()
        for _, rec in ipairs(recs) do if rec.event == "phase" and rec.phase == "agent" then running = runs[2].id end end
      end
    until running or beat.clock() > deadline
    assert.truthy(running, "the loop never reached its agent")
    local r = H.beat({ "clean", "--keep", "0", "--unfinished" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.matches("removed " .. old, r.stdout)
    assert.matches("kept " .. running .. " %(running, pid %d+%)", r.stdout)
    assert.is_true(beat.fs.exists(dir .. "/.beat/runs/" .. running .. "/journal.jsonl"))
    assert.matches("refs/beat/" .. running .. "/base", refs(git, running))
    local st = H.beat({ "runs" }, { cwd = dir }).stdout
    assert.matches(running .. "[^\n]* running ", st)
    p:kill("INT")
    local res = assert(p:wait(20))
    assert.equal(130, res.code)
  end)

  it("keeps a run that died without an end record unless --unfinished", function()
    local dir = optimize_run()
    local id, rundir = loop(dir, { "90" })
    -- a run killed with SIGKILL: its journal stops before run_end, its pid is gone
    local lines = {}
    for l in H.read(rundir .. "/journal.jsonl"):gmatch("[^\n]+\n") do lines[#lines + 1] = l end
    table.remove(lines)
    H.write(rundir .. "/journal.jsonl", table.concat(lines))
    local r = H.beat({ "clean", "--keep", "0" }, { cwd = dir })
    assert.matches("kept " .. id .. " %(crashed", r.stdout)
    assert.is_true(beat.fs.is_dir(rundir))
    local u = H.beat({ "clean", "--keep", "0", "--unfinished" }, { cwd = dir })
    assert.matches("removed " .. id .. " %(crashed", u.stdout)
    assert.is_false(beat.fs.exists(rundir))
  end)

  it("refuses bad input with one line, removing nothing", function()
    local dir = optimize_run()
    local id = loop(dir, { "90" })
    for _, c in ipairs {
      { { "--keep", "-1" }, "beat: clean: --keep must be a whole number >= 0, got '-1'\n" },
      { { "--older-than", "soon" }, "beat: clean: --older-than must be a duration" },
      { { "--older-than", "5" }, "beat: clean: --older-than needs a unit (30m, 12h, 7d), got '5'\n" },
      { { "--frobnicate" }, "beat: clean: unknown option '--frobnicate'" },
      { { "extra" }, "beat: clean: unexpected argument 'extra'\n" },
    } do
      local args = { "clean", "--keep", "0" }
      for _, a in ipairs(c[1]) do args[#args + 1] = a end
      local r = H.beat(args, { cwd = dir })
      assert.equal(2, r.code, r.stdout)
      assert.equal(1, select(2, r.stderr:gsub("\n", "")), r.stderr)
      assert.equal(c[2], r.stderr:sub(1, #c[2]))
      assert.is_true(beat.fs.is_dir(dir .. "/.beat/runs/" .. id))
    end
  end)
end)

describe("beat agents --json", function()
  it("prints one document with a row per adapter", function()
    local r = H.beat({ "agents", "--json" }, { env = { PATH = AGENTS .. ":" .. os.getenv("PATH") } })
    assert.equal(0, r.code, r.stderr)
    local doc = beat.json.decode(r.stdout)
    assert.equal(1, doc.version)
    local claude
    for _, a in ipairs(doc.agents) do if a.name == "claude" then claude = a end end
    assert.is_true(claude.installed)
    assert.matches("2%.1%.332", claude.version)
  end)
end)
