-- strategies/optimize.lua, the run's safety guarantees, the journal, and
-- `beat loop` as a user drives it.
local beat = require "beat"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local EVAL = "cat value.txt"

local loop = H.loop

local function statuses(dir)
  local out = {}
  for _, d in ipairs(H.events(H.last_run(dir), "decision")) do out[#out + 1] = d.status end
  return out
end

-- every file of the work tree except .git and .beat, path → bytes
local function tree(dir)
  local files = {}
  local r = assert(beat.exec({ "find", ".", "-path", "./.git", "-prune", "-o", "-path", "./.beat",
    "-prune", "-o", "-type", "f", "-print" }, { cwd = dir }))
  for path in r.stdout:gmatch("[^\n]+") do files[path] = H.read(dir .. "/" .. path) end
  return files
end

describe("optimize", function()
  it("keeps improvements, discards regressions and ties, ends on the best snapshot", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower it", "--eval", EVAL, "-a", SET, "--max-iterations", "5",
      "--min-delta", "0.5" }, { VALUES = "90 95 90.2 80 85" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "baseline", "keep", "discard", "discard", "keep", "discard" }, statuses(dir))
    assert.equal("80\n", H.read(dir .. "/value.txt"))
    assert.matches("best: score 80 %(baseline: score 100%)", r.stdout)
    -- byte-equal to the best snapshot
    local recs, _, id = H.last_run(dir)
    local best = recs[#recs].best
    local show = assert(beat.exec({ "git", "show", best .. ":value.txt" }, { cwd = dir }))
    assert.equal("80\n", show.stdout)
    local ref = assert(beat.exec({ "git", "rev-parse", ("refs/beat/%s/best"):format(id) }, { cwd = dir }))
    assert.equal(best .. "\n", ref.stdout)
    assert.equal("", assert(beat.exec({ "git", "diff", "--stat", best }, { cwd = dir })).stdout)
    -- results.tsv has a row per iteration
    local tsv = H.read(("%s/.beat/runs/%s/results.tsv"):format(dir, id))
    local rows = 0
    for _ in tsv:gmatch("\n") do rows = rows + 1 end
    assert.equal(7, rows)
    assert.matches("^iteration\tsnapshot\tscore\tstatus\tdelta\tcost_usd\tduration_s\tsummary\n", tsv)
    for n = 1, 5 do
      local iter = ("%s/.beat/runs/%s/iter-%d/"):format(dir, id, n)
      assert.matches("set value to", H.read(iter .. "agent.log"))
      assert.matches("^%$ cat value.txt\n# exit 0", H.read(iter .. "eval.log"))
    end
  end)

  it("maximizes with --direction maximize and reads a named metric", function()
    local dir = H.git_repo { ["value.txt"] = "acc: 0.5\n" }
    local r = loop(dir, { "raise it", "--eval", EVAL, "-a", SET, "--max-iterations", "2",
      "--maximize", "--metric", "acc" }, { VALUES = "acc:0.7 acc:0.6" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "baseline", "keep", "discard" }, statuses(dir))
    assert.equal("acc:0.7\n", H.read(dir .. "/value.txt"))
  end)

  it("counts a failing guard as a crash and never keeps that candidate", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower it", "--eval", EVAL, "-a", SET, "--max-iterations", "2",
      "--guard", "! grep -q 50 value.txt" }, { VALUES = "50 70" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "baseline", "crash", "keep" }, statuses(dir))
    assert.equal("70\n", H.read(dir .. "/value.txt"))
  end)

  it("stops when the baseline cannot be scored", function()
    local dir = H.git_repo { ["value.txt"] = "no number here\n" }
    local r = loop(dir, { "lower it", "--eval", EVAL, "-a", SET }, { VALUES = "1" })
    assert.equal(1, r.code)
    assert.matches("failed: the baseline cannot be scored: eval printed no number", r.stdout)
    assert.equal(0, #H.events(H.last_run(dir), "agent"))
  end)

  it("stops at the target and after patience runs out", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--target", "60" }, { VALUES = "90 50 40" })
    assert.equal(0, r.code)
    assert.matches("completed: target reached", r.stdout)
    assert.equal(2, #H.events(H.last_run(dir), "agent"))
    dir = H.git_repo { ["value.txt"] = "100\n" }
    r = loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--patience", "2" }, { VALUES = "90 95 96 10" })
    assert.equal(0, r.code)
    assert.matches("no improvement in 2 iterations", r.stdout)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("gives up after 3 consecutive crashes with the best result kept", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET }, { VALUES = "90 crash crash crash 1" })
    assert.equal(1, r.code)
    assert.matches("failed: 3 consecutive failures", r.stdout)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("keeps the user's uncommitted and untracked work, and beat restore brings it back byte for byte", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n", ["src/a.txt"] = "committed\n" }
    H.write(dir .. "/src/a.txt", "uncommitted edit\n")
    H.write(dir .. "/notes.txt", "untracked notes\n")
    H.write(dir .. "/.gitignore", "ignored.log\n")
    H.write(dir .. "/ignored.log", "ignored\n")
    local before = tree(dir)
    local head = git("rev-parse", "HEAD")
    local status_before = git("status", "--porcelain")
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--max-iterations", "2" }, { VALUES = "90 80" })
    assert.equal(0, r.code, r.stderr)
    assert.equal("80\n", H.read(dir .. "/value.txt"))
    assert.equal("uncommitted edit\n", H.read(dir .. "/src/a.txt"))
    assert.equal("untracked notes\n", H.read(dir .. "/notes.txt"))
    assert.equal(head, git("rev-parse", "HEAD"))
    local _, _, id = H.last_run(dir)
    -- the base snapshot holds the original tree
    assert.equal("uncommitted edit\n", git("show", ("refs/beat/%s/base:src/a.txt"):format(id)))
    assert.equal("untracked notes\n", git("show", ("refs/beat/%s/base:notes.txt"):format(id)))
    r = H.beat({ "restore", id }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.same(before, tree(dir))
    assert.equal(status_before, git("status", "--porcelain"))
    assert.matches("%.beat/", H.read(dir .. "/.git/info/exclude"))
  end)

  it("with --runs measures each candidate repeatedly and keeps only significant improvements", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    -- the eval adds noise -2, -1, 0, 1, 2 in turn: 99.5 is within the noise, 90 is not
    local counter = H.tmpdir() .. "/n"
    local eval = ([[n=$(cat %s 2>/dev/null || echo 0); echo $((n + 1)) > %s; ]] ..
      [[awk -v k=$((n %% 5)) '{ print $1 + k - 2 }' value.txt]]):format(counter, counter)
    local r = loop(dir, { "lower", "--eval", eval, "-a", SET, "--runs", "5", "--max-iterations", "2" },
      { VALUES = "99.5 90" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "baseline", "discard", "keep" }, statuses(dir))
    local evals = H.events(H.last_run(dir), "eval")
    assert.equal(5, #evals[1].values)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("keeps every candidate that enters the Pareto front", function()
    local dir = H.git_repo { ["value.txt"] = "size: 10\nspeed: 10\n" }
    local agent = H.tmpdir() .. "/pareto.sh"
    H.write(agent, [[
case "$BEAT_ITERATION" in
  1) printf 'size: 5\nspeed: 12\n' > value.txt ;;
  2) printf 'size: 8\nspeed: 8\n' > value.txt ;;
  3) printf 'size: 6\nspeed: 13\n' > value.txt ;;
esac
]])
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("optimize") {
        cwd = %q, prompt = "smaller and faster", max_iterations = 3,
        agent = beat.agent.command { argv = { "sh", %q } },
        eval = "cat value.txt", score = beat.score.metrics(),
        objective = beat.objective { pareto = true, metrics = { size = "minimize", speed = "maximize" } },
      })
    ]]):format(dir, agent))
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stdout .. r.stderr)
    -- 1 dominates the baseline; 2 is dominated by 1; 3 trades off against 1 (enters)
    assert.same({ "baseline", "keep", "discard", "keep" }, statuses(dir))
  end)

  it("tells an LLM agent the best score and what was tried, and calls every hook", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local log = H.tmpdir() .. "/prompts"
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      local calls = { on_iteration = 0, on_keep = 0, on_discard = 0 }
      local code = beat.strategy("optimize") {
        cwd = %q, prompt = "lower the value", eval = "cat value.txt", max_iterations = 5,
        agent = beat.agent.command { argv = { "sh", "-c", 'printf "%%s\n===\n" "$1" >> %s; sh %s', "agent", "{prompt}" } },
        on_iteration = function() calls.on_iteration = calls.on_iteration + 1 end,
        on_keep = function() calls.on_keep = calls.on_keep + 1 end,
        on_discard = function() calls.on_discard = calls.on_discard + 1 end,
        stop_when = function(state) if state.iteration == 3 then return "enough for today" end end,
      }
      print(("hooks %%d %%d %%d"):format(calls.on_iteration, calls.on_keep, calls.on_discard))
      return code
    ]]):format(dir, log, H.root .. "/tests/fixtures/loop/set-value.sh"))
    local r = H.beat({ "run", recipe }, { env = { VALUES = "90 95 80 70" } })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("stopped: enough for today", r.stdout)
    assert.matches("hooks 3 2 1\n", r.stdout)     -- kept 90 and 80, discarded 95
    local prompts = H.read(log)
    assert.matches("lower the value", prompts)
    assert.matches("baseline score 100, best so far score 90", prompts)
    assert.matches("iteration 1: keep %(score 90%)", prompts)
    assert.matches("iteration 2: discard %(score 95%)", prompts)
  end)

  it("does not take files the eval writes for the agent's work", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower", "--eval", "date +%N > bench-results.txt; cat value.txt", "-a", "true",
      "--max-iterations", "2" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "baseline", "discard", "discard" }, statuses(dir))
    assert.matches("the agent changed nothing", r.stdout)
    assert.is_false(beat.fs.exists(dir .. "/bench-results.txt"))
  end)

  it("keeps a backup for every restore and finds runs whose .beat/ was deleted", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--max-iterations", "1" }, { VALUES = "90" })
    assert.equal(0, r.code, r.stderr)
    local _, _, id = H.last_run(dir)
    H.write(dir .. "/later.txt", "written after the run\n")
    r = H.beat({ "restore", id, "base" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.matches("undo this: beat restore " .. id .. " before%-restore%-1", r.stdout)
    assert.is_false(beat.fs.exists(dir .. "/later.txt"))
    r = H.beat({ "restore", id, "base" }, { cwd = dir })      -- again: nothing to do, nothing lost
    assert.matches("nothing to do", r.stdout)
    beat.fs.rm_rf(dir .. "/.beat")
    r = H.beat({ "restore", id, "before-restore-1" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.equal("written after the run\n", H.read(dir .. "/later.txt"))
    assert.equal("90\n", H.read(dir .. "/value.txt"))
    assert.matches(id, H.beat({ "runs" }, { cwd = dir }).stdout)
  end)

  it("commits the best result to a branch only when asked, leaving HEAD alone", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local head = git("rev-parse", "HEAD")
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--max-iterations", "1",
      "--commit-to", "beat/best" }, { VALUES = "90" })
    assert.equal(0, r.code, r.stderr)
    assert.equal("90\n", git("show", "beat/best:value.txt"))
    assert.equal(head, git("rev-parse", "HEAD"))
    assert.equal("refs/heads/main\n", git("symbolic-ref", "HEAD"))
  end)

  it("refuses a second run on the same work tree", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local mark = H.tmpdir() .. "/eval-started"
    local first = assert(beat.spawn({ H.bin, "loop", "lower", "--eval", 'touch "$MARK"; sleep 2; cat value.txt',
      "-a", SET, "--max-iterations", "1" }, { cwd = dir, env = { VALUES = "90", MARK = mark } }))
    -- the baseline eval runs only while the first run holds the lock; the
    -- bound only stops a broken beat from hanging the suite
    local deadline = beat.clock() + 30
    while not beat.fs.exists(mark) and beat.clock() < deadline do beat.sleep(0.02) end
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET }, { VALUES = "1" })
    assert.equal(2, r.code)
    assert.matches("work tree is in use by run", r.stderr)
    assert.equal(0, first:wait().code)
  end)
end)

describe("beat loop", function()
  it("rejects bad command lines with exit 2 and one line", function()
    local dir = H.git_repo {}
    local cases = {
      { { "x" }, "give %-%-until CMD" },
      { { "x", "--until", "a", "--eval", "b" }, "not both" },
      { { "--until", "true" }, "missing PROMPT" },
      { { "x", "--until", "true", "--max-iterations", "zero" }, "must be a positive integer" },
      { { "x", "--until", "true", "--cooldown", "soon" }, "%-%-cooldown must be a duration" },
      { { "x", "--eval", "true", "--direction", "up" }, "must be minimize or maximize" },
      { { "x", "--until", "true", "--runs", "3" }, "%-%-runs needs %-%-eval" },
      { { "x", "--until", "true", "--frobnicate" }, "unknown option '%-%-frobnicate'" },
    }
    for _, c in ipairs(cases) do
      local r = loop(dir, c[1])
      assert.equal(2, r.code, table.concat(c[1], " "))
      assert.matches(c[2], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
    end
  end)

  it("answers bad runs/show/restore arguments with exit 2 and one line, changing nothing", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.beat({ "show", "last" }, { cwd = dir })
    assert.equal(2, r.code)
    assert.matches("^beat: no runs in .*%.beat/runs\n$", r.stderr)
    assert.equal(0, loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--max-iterations", "1" }, { VALUES = "90" }).code)
    local cases = {
      { { "show", "zzzz" }, "no run 'zzzz'" },
      { { "restore" }, "missing RUN" },
      { { "restore", "last", "sideways" }, "WHICH must be base, best, last, iter%-N, pre%-restore%-N" },
      { { "restore", "last", "iter-9" }, "has no snapshot 'iter%-9'" },
      { { "runs", "-w", dir .. "/missing" }, "does not exist" },
      { { "runs", "--bogus" }, "unknown option '%-%-bogus'" },
    }
    for _, c in ipairs(cases) do
      r = H.beat(c[1], { cwd = dir })
      assert.equal(2, r.code, table.concat(c[1], " "))
      assert.matches(c[2], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
    end
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("refuses a directory that is not a git repository unless --no-git", function()
    local dir = H.tmpdir()
    H.write(dir .. "/value.txt", "100\n")
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", SET }, { VALUES = "90" })
    assert.equal(2, r.code)
    assert.matches("not a git repository", r.stderr)
    r = loop(dir, { "lower", "--eval", EVAL, "-a", SET, "--no-git", "--max-iterations", "1" }, { VALUES = "90" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("%-%-no%-git: no snapshots", r.stderr)
  end)

  it("refuses an agent that is not installed before touching anything", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = loop(dir, { "lower", "--eval", EVAL, "-a", "beat-no-such-agent --fast" })
    assert.equal(2, r.code)
    assert.equal("beat: agent command: beat-no-such-agent is not installed or not executable (see 'beat agents')\n", r.stderr)
    assert.is_false(beat.fs.exists(dir .. "/.beat"))
  end)

  it("accepts bare milliseconds and unit durations", function()
    local p = require("beat.cli.loop").parse(require("beat.cli"),
      { "x", "--until", "true", "--cooldown", "1500", "--agent-timeout", "5m", "--max-duration", "30s" })
    assert.equal(1.5, p.cooldown)
    assert.equal(300, p.agent_timeout)
    assert.equal(30, p.max_duration)
  end)

  it("on Ctrl-C mid-iteration ends every process, restores the best and journals the interruption", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m = H.marker()
    local agent = H.tmpdir() .. "/slow-agent.sh"
    H.write(agent, ("#!/bin/sh\nif [ \"$BEAT_ITERATION\" = 2 ]; then echo 1 > value.txt; sleep %s; fi\necho 90 > value.txt\n"):format(m))
    local p = assert(beat.spawn({ H.bin, "loop", "lower", "--eval", EVAL, "-a", "sh " .. agent }, { cwd = dir }))
    assert.is_true(H.wait_started(m, 10))
    local pid
    for _, r in ipairs(H.last_run(dir)) do if r.event == "run_start" then pid = r.pid end end
    beat.exec { "kill", "-INT", ("%d"):format(pid) }
    local r = assert(p:wait(30))
    assert.equal(130, r.code, r.stdout .. r.stderr)
    assert.same({}, H.wait_gone(m, 3))
    assert.equal("90\n", H.read(dir .. "/value.txt"))    -- iteration 2's "1" was not kept
    local recs = H.last_run(dir)
    assert.equal("interrupted", recs[#recs].event)
  end)

  it("on Ctrl-C waits for the agent to end before restoring, so its last writes are undone", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m = H.marker()
    local agent = H.tmpdir() .. "/stubborn.sh"
    H.write(agent, ("#!/bin/sh\ntrap 'sleep 0.5; echo late > late.txt; exit 1' TERM\nsleep %s & wait\n"):format(m))
    local p = assert(beat.spawn({ H.bin, "loop", "lower", "--eval", EVAL, "-a", "sh " .. agent }, { cwd = dir }))
    assert.is_true(H.wait_started(m, 10))
    local pid = H.last_run(dir)[1].pid
    beat.exec { "kill", "-INT", ("%d"):format(pid) }
    local r = assert(p:wait(30))
    assert.equal(130, r.code, r.stdout .. r.stderr)
    assert.is_false(beat.fs.exists(dir .. "/late.txt"))
    assert.matches("the work tree is as it was before the run", r.stdout)
  end)

  it("after kill -9 mid-iteration leaves no process and a journal of valid JSON lines", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m = H.marker()
    local agent = H.tmpdir() .. "/slow-agent.sh"
    H.write(agent, ("#!/bin/sh\nif [ \"$BEAT_ITERATION\" = 2 ]; then sleep %s; fi\necho 9$BEAT_ITERATION > value.txt\n"):format(m))
    local p = assert(beat.spawn({ H.bin, "loop", "lower", "--eval", EVAL, "-a", "sh " .. agent }, { cwd = dir }))
    assert.is_true(H.wait_started(m, 10))
    local recs, rundir = H.last_run(dir)
    beat.exec { "kill", "-KILL", ("%d"):format(recs[1].pid) }
    assert.equal(137, assert(p:wait(30)).code)
    assert.same({}, H.wait_gone(m, 1))
    local data = H.read(rundir .. "/journal.jsonl")
    local n = 0
    for line in data:gmatch("([^\n]*)\n") do
      n = n + 1
      assert.is_table(beat.json.decode(line))
    end
    assert.is_true(n >= 4)
    assert.equal("\n", data:sub(-1))
  end)
end)
