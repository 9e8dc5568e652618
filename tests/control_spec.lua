-- Runs as managed objects: detached loops, the per-user index, list /
-- status / pause / resume / cancel from anywhere, resume after kill -9.
-- Every spec uses a private XDG_STATE_HOME (the index) and sequences on
-- files and fifos (tests/fixtures/control/*.sh), never on sleeps.
local beat = require "beat"
local H = require "tests.helpers"
local json = require "cjson"

local AGENT = H.root .. "/tests/fixtures/control/agent.sh"
local HOLD = H.root .. "/tests/fixtures/control/hold.sh"

-- A private index and a sync directory; env for every beat of the spec.
-- Whatever way the spec ends, no process of its runs is left: detached
-- runs outlive the test process by design, so they are ended here.
local function session()
  local s = { xdg = H.tmpdir(), sync = H.tmpdir(), elsewhere = H.tmpdir() }
  s.env = { XDG_STATE_HOME = s.xdg, SYNC = s.sync }
  finally(function()
    local procs = require "beat.runs.proc"
    for _, id in ipairs(beat.fs.list(s.xdg .. "/beat/runs") or {}) do
      local e = json.decode(H.read(("%s/beat/runs/%s/run.json"):format(s.xdg, id)) or "{}")
      local pid = math.tointeger(e.pid)
      if pid and procs.alive { pid = pid, start_time = math.tointeger(e.start_time) } then
        procs.kill(pid, 9)
      end
    end
    for _, pid in ipairs(H.pids_with(s.sync)) do procs.kill(pid, 9) end
  end)
  return s
end

local function run_beat(s, args, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(s.env) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return H.beat(args, { cwd = opts.cwd or s.elsewhere, env = env })
end

local function mkfifo(path)
  assert(beat.exec({ "mkfifo", path }).code == 0)
end

-- Waits for a file to appear; the bound only keeps a broken beat from
-- hanging the suite.
local function wait_file(path, limit)
  local deadline = beat.clock() + (limit or 60)
  while not beat.fs.exists(path) do
    assert(beat.clock() < deadline, "timed out waiting for " .. path)
    beat.sleep(0.02)
  end
end

-- Writes a line to a fifo a fixture waits on.
local function release(path)
  assert(beat.exec({ "sh", "-c", 'echo go > "$1"', "_", path }, { timeout = 60 }).code == 0)
end

local function status(s, id)
  local r = run_beat(s, { "loop", "status", id, "--json" })
  assert(r.code == 0, r.stderr)
  return json.decode(r.stdout)
end

-- Polls `beat loop status` until pred(status) holds (bounded against a hang).
local function wait_status(s, id, pred, limit)
  local deadline = beat.clock() + (limit or 60)
  while true do
    local st = status(s, id)
    if pred(st) then return st end
    assert(beat.clock() < deadline, "timed out; state " .. tostring(st.state))
    beat.sleep(0.05)
  end
end

-- Live processes whose parent is pid.
local function children(pid)
  local out = {}
  for _, name in ipairs(beat.fs.list("/proc") or {}) do
    if name:match("^%d+$") then
      local st = require("beat.runs.proc").stat(tonumber(name))
      if st and st.ppid == pid and st.state ~= "Z" then out[#out + 1] = st.pid end
    end
  end
  return out
end

local function git_in(dir)
  return function(...)
    local r = assert(beat.exec({ "git", ... }, { cwd = dir }))
    assert(r.code == 0, r.stderr)
    return (r.stdout:gsub("%s+$", ""))
  end
end

-- every file of the work tree except .git and .beat, path → bytes
local function files(dir)
  local out = {}
  local r = assert(beat.exec({ "find", ".", "-path", "./.git", "-prune", "-o", "-path", "./.beat",
    "-prune", "-o", "-type", "f", "-print" }, { cwd = dir }))
  for path in r.stdout:gmatch("[^\n]+") do out[path:sub(3)] = H.read(dir .. "/" .. path) end
  return out
end

-- A user's work in progress, the same bytes every time: committed files,
-- an uncommitted edit, an untracked file.
local function user_repo(extra)
  local spec = { ["value.txt"] = "100\n", ["src/a.txt"] = "a\n", ["log.txt"] = "" }
  for k, v in pairs(extra or {}) do spec[k] = v end
  local dir = H.git_repo(spec)
  H.write(dir .. "/src/a.txt", "uncommitted \0\1\2 edit\n")
  H.write(dir .. "/untracked.bin", "\255\254 untracked\n")
  return dir
end

-- results.tsv without what differs between two runs of the same loop
-- (snapshot ids, durations): iteration, status, score, summary.
local function decisions(dir, id)
  local out = {}
  local tsv = H.read(("%s/.beat/runs/%s/results.tsv"):format(dir, id))
  for line in tsv:gmatch("[^\n]+") do
    local f = {}
    for cell in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = cell end
    out[#out + 1] = table.concat({ f[1], f[3], f[4], f[8] }, "|")
  end
  return out
end

-- What a finished run left: its decisions, its best tree (the base's when
-- nothing was kept), the work tree.
local function outcome(dir, id)
  local r = assert(beat.exec({ "git", "rev-parse", "--verify", "-q", ("refs/beat/%s/best^{tree}"):format(id) }, { cwd = dir }))
  local best = r.code == 0 and r.stdout or git_in(dir)("rev-parse", ("refs/beat/%s/base^{tree}"):format(id))
  return { decisions = decisions(dir, id), best = (best:gsub("%s+$", "")), files = files(dir) }
end

local function run_id(dir)
  local _, _, id = H.last_run(dir)
  return id
end

describe("beat loop --detach", function()
  it("prints the run id at once; the loop outlives its starter and is paused, resumed and cancelled from another directory", function()
    local s = session()
    local repo = user_repo()
    mkfifo(s.sync .. "/go-agent-1")
    mkfifo(s.sync .. "/go-agent-2")
    local t0 = beat.clock()
    local r = run_beat(s, { "loop", "raise it", "--eval", "cat value.txt", "--maximize", "-a", AGENT,
      "--max-iterations", "5", "--detach" }, { cwd = repo, env = { VALUES = "120 130 140 150 160" } })
    local took = beat.clock() - t0
    assert.equal(0, r.code, r.stderr)
    local id = r.stdout:match("^(%w+)\n$")
    assert.truthy(id, r.stdout)
    -- the id is reserved before the loop's process does anything; the bound
    -- is loose (a busy shared machine), the measured time is ~20-60 ms
    assert.is_true(took < 2, ("beat loop --detach took %.3fs"):format(took))
    assert.matches("beat loop attach " .. id, r.stderr)

    -- listed from elsewhere (not a work tree: every run), running
    wait_file(s.sync .. "/held-agent-1")
    r = run_beat(s, { "loop", "list" })
    assert.equal(0, r.code, r.stderr)
    assert.matches(id .. "%s+running%s+optimize%s+1/5%s+agent", r.stdout)
    local st = status(s, id)
    assert.equal("running", st.state)
    assert.equal("agent", st.phase)
    assert.is_true(st.detached)
    local pid = math.tointeger(st.pid)

    -- pause: the agent of iteration 1 finishes, its decision is made, then nothing runs
    r = run_beat(s, { "loop", "pause", id })
    assert.equal(0, r.code, r.stderr)
    assert.matches("after iteration 1's decision", r.stdout)
    assert.is_true(status(s, id).pause_requested)
    release(s.sync .. "/go-agent-1")
    st = wait_status(s, id, function(x) return x.state == "paused" end)
    assert.equal("paused", st.phase)
    assert.equal(2, #H.events(H.last_run(repo), "decision"))   -- the baseline and iteration 1
    assert.same({}, children(pid))
    assert.is_true(require("beat.runs.proc").alive { pid = pid })
    r = run_beat(s, { "loop", "list" })
    assert.matches(id .. "%s+paused", r.stdout)

    -- resume from another directory: iteration 2 starts
    r = run_beat(s, { "loop", "resume", id }, { cwd = H.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    assert.equal(("run %s resumed\n"):format(id), r.stdout)
    wait_file(s.sync .. "/held-agent-2")
    local agent_pids = H.pids_with(s.sync .. "/go-agent-2")
    assert.equal(1, #agent_pids)

    -- cancel: the agent is ended, the work tree is at the best snapshot
    r = run_beat(s, { "loop", "cancel", id, "enough", "for", "today" }, { cwd = H.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    assert.equal(("run %s cancelled: enough for today\n"):format(id), r.stdout)
    st = status(s, id)
    assert.equal("cancelled", st.state)
    assert.equal("enough for today", st.reason)
    assert.is_false(st.alive)
    assert.same({}, H.wait_gone(s.sync .. "/go-agent-2", 10))
    assert.is_false(require("beat.runs.proc").alive { pid = pid })
    local git = git_in(repo)
    assert.equal(git("rev-parse", ("refs/beat/%s/best^{tree}"):format(id)),
      git("rev-parse", ("refs/beat/%s/iter-1^{tree}"):format(id)))
    assert.equal("120\n", H.read(repo .. "/value.txt"))
    assert.equal("uncommitted \0\1\2 edit\n", H.read(repo .. "/src/a.txt"))
    -- its output went to output.log, which beat logs prints
    r = run_beat(s, { "logs", id })
    assert.equal(0, r.code, r.stderr)
    assert.matches("pause requested", r.stdout)
    assert.matches("cancelled: enough for today", r.stdout)
  end)

  it("lists loops of two work trees with --all and refuses a second loop in a busy work tree, naming the running one", function()
    local s = session()
    local a, b = user_repo(), user_repo()
    mkfifo(s.sync .. "/go-agent-1")
    local ids = {}
    for _, repo in ipairs { a, b } do
      local r = run_beat(s, { "loop", "fix", "--until", "false", "-a", AGENT, "--max-iterations", "3", "--detach" },
        { cwd = repo })
      assert.equal(0, r.code, r.stderr)
      ids[#ids + 1] = r.stdout:match("^(%w+)\n$")
    end
    local r = run_beat(s, { "loop", "list", "--all" })
    assert.equal(0, r.code, r.stderr)
    for i, repo in ipairs { a, b } do
      assert.matches(ids[i] .. "%s+%a+%s+retry.-" .. repo:gsub("%p", "%%%0"), r.stdout)
    end
    -- in a's directory, only a's run
    r = run_beat(s, { "loop", "list" }, { cwd = a })
    assert.matches(ids[1], r.stdout)
    assert.is_nil(r.stdout:find(ids[2], 1, true))
    r = run_beat(s, { "loop", "list", "--all", "--json" })
    local doc = json.decode(r.stdout)
    assert.equal(1, doc.version)
    assert.equal(2, #doc.runs)

    -- a second loop in a: refused, one line naming the running run, nothing written
    wait_status(s, ids[1], function(x) return x.state == "running" and x.iteration >= 1 end)
    local before = beat.fs.list(a .. "/.beat/runs")
    for _, extra in ipairs { {}, { "--detach" } } do
      local args = { "loop", "again", "--until", "true", "-a", AGENT }
      for _, x in ipairs(extra) do args[#args + 1] = x end
      r = run_beat(s, args, { cwd = a })
      assert.equal(2, r.code, r.stdout)
      assert.matches("in use by run " .. ids[1], r.stderr)
      assert.matches("beat loop status " .. ids[1], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
    end
    assert.same(before, beat.fs.list(a .. "/.beat/runs"))
    for _, id in ipairs(ids) do
      assert.equal(0, run_beat(s, { "loop", "cancel", id }).code)
    end
    assert.same({}, H.wait_gone(s.sync .. "/go-agent-1", 10))
  end)

  it("asks the work tree's lock, not every run the user ever had, whether the work tree is busy", function()
    local s = session()
    local repo = user_repo()
    -- the per-user index of a user with many runs
    for i = 1, 300 do
      local dir = ("%s/beat/runs/old%03d"):format(s.xdg, i)
      assert(beat.fs.mkdir_p(dir))
      H.write(dir .. "/run.json", json.encode { id = ("old%03d"):format(i), root = repo, status = "running",
        dir = repo .. "/.beat/runs/old", pid = 1 })
    end
    local env = { SYNC = s.sync }
    for k, v in pairs(s.env) do env[k] = v end
    local trace, r = H.strace("%file", { H.bin, "loop", "fix", "--until", "true", "-a", AGENT, "--detach" },
      { cwd = repo, env = env })
    if not trace then return pending(r) end
    assert.equal(0, r.code, r.stderr)
    local id = r.stdout:match("^(%w+)\n$")
    assert.equal("passed", wait_status(s, id, function(x) return x.final end).state)
    assert.is_nil(trace:find("/old%d+/run%.json"), "the start read the index of every run")
  end)

  it("names a run that holds the work tree but has no id yet as starting", function()
    local s = session()
    local repo = user_repo()
    local held = assert(beat.git.open { dir = repo, watch = false })
    local lock = assert(held:lock { id = "starting" })   -- as a run's start takes it
    local r = run_beat(s, { "loop", "fix", "--until", "true", "-a", AGENT, "--detach" }, { cwd = repo })
    lock:release()
    held:close()
    assert.equal(2, r.code, r.stderr)
    assert.matches(("^beat: loop: work tree is in use by a run that is starting %%(pid %d%%) %%(one loop per work tree, ")
      :format(beat.pid()), r.stderr)
    assert.matches("see 'beat loop list' in a moment\n$", r.stderr)
    assert.is_false(beat.fs.exists(repo .. "/.beat/runs"))   -- nothing written
  end)
end)

describe("beat loop list, status, pause, resume, cancel", function()
  it("answer a bad id, an ambiguous prefix and a finished run with one line and exit 2, changing nothing", function()
    local s = session()
    local repo = user_repo()
    local ids = {}
    for _ = 1, 2 do
      local r = run_beat(s, { "loop", "fix", "--until", "true", "-a", AGENT }, { cwd = repo })
      assert.equal(0, r.code, r.stderr)
      ids[#ids + 1] = run_id(repo)
    end
    local common = 0
    while ids[1]:sub(1, common + 1) == ids[2]:sub(1, common + 1) do common = common + 1 end
    assert.is_true(common >= 1, "run ids share their first digit (time-sorted)")
    local prefix = ids[1]:sub(1, common)
    local journal = H.read(("%s/.beat/runs/%s/journal.jsonl"):format(repo, ids[1]))
    local cases = {
      { { "loop", "status", "zzzzzzzz" }, "no run 'zzzzzzzz'" },
      { { "loop", "status", "a/b" }, "run id must be" },
      { { "loop", "status" }, "missing the run id" },
      { { "loop", "pause", prefix }, "ambiguous" },
      { { "loop", "pause", ids[1] }, "has ended %(passed%): nothing to pause" },
      { { "loop", "resume", ids[1] }, "has ended %(passed%): nothing to resume" },
      { { "loop", "cancel", ids[1] }, "has ended %(passed%): nothing to cancel" },
      { { "loop", "list", "--status", "asleep" }, "%-%-status must be one of" },
      { { "loop", "status", ids[1], "--history-limit", "0" }, "positive integer" },
      { { "loop", "attach", ids[1] }, "no output log" },
      { { "loop", "frobnicate-not-a-prompt", "--bogus" }, "unknown option '%-%-bogus'" },
    }
    for _, c in ipairs(cases) do
      local r = run_beat(s, c[1], { cwd = repo })
      assert.equal(2, r.code, table.concat(c[1], " ") .. ": " .. r.stderr)
      assert.matches(c[2], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
      assert.equal("", r.stdout)
    end
    assert.equal(journal, H.read(("%s/.beat/runs/%s/journal.jsonl"):format(repo, ids[1])))
    assert.is_false(beat.fs.exists(("%s/.beat/runs/%s/requests"):format(repo, ids[1])))
    -- and the good ones
    local st = status(s, ids[1])
    assert.equal("passed", st.state)
    assert.equal(ids[1], st.id)
    assert.equal(run_beat(s, { "loop", "status", "last" }, { cwd = repo }).stdout,
      run_beat(s, { "loop", "status", ids[2] }).stdout)
    local r = run_beat(s, { "loop", "list", "--status", "passed" }, { cwd = repo })
    assert.matches(ids[1], r.stdout)
    r = run_beat(s, { "loop", "list", "--status", "running" }, { cwd = repo })
    assert.equal("no running runs\n", r.stdout)
  end)

  it("status --history shows every decision; --history-limit the last N", function()
    local s = session()
    local repo = user_repo()
    local r = run_beat(s, { "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "7",
      "--max-failures", "9" }, { cwd = repo, env = { VALUES = "90 95 80 85 70 75 60" } })
    assert.equal(0, r.code, r.stderr)
    local id = run_id(repo)
    local st = status(s, id)
    assert.equal(5, #st.decisions)
    assert.equal(7, st.iteration)
    assert.equal(7, st.max_iterations)
    assert.equal("score 60", st.best_text)
    assert.equal("score 100", st.baseline_text)
    r = run_beat(s, { "loop", "status", id, "--history", "--json" })
    assert.equal(8, #json.decode(r.stdout).decisions)
    r = run_beat(s, { "loop", "status", id, "--history-limit", "2", "--json" })
    local d = json.decode(r.stdout).decisions
    assert.equal(2, #d)
    assert.equal(7, d[2].iteration)
    r = run_beat(s, { "loop", "status", id })
    assert.matches("state:%s+completed", r.stdout)
    assert.matches("iteration:%s+7/7", r.stdout)
    assert.matches("best:%s+score 60 %(baseline score 100%)", r.stdout)
    assert.matches("changes:%s+2 files, %+5 %-1 %(best vs base%)", r.stdout)   -- value.txt, log.txt (4 kept)
    assert.equal(2, st.diff.files_changed)
  end)
end)

describe("beat loop --max-iterations 0", function()
  it("has no iteration limit, says which bounds hold, and ends on one of them", function()
    local s = session()
    local repo = user_repo()
    local r = run_beat(s, { "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "0",
      "--patience", "3" }, { cwd = repo, env = { VALUES = "90 95 96 97 98" } })
    assert.equal(0, r.code, r.stderr)
    assert.matches("no iteration limit: the run stops after 3 iterations without improvement", r.stdout)
    assert.matches("completed: no improvement in 3 iterations %(patience%)", r.stdout)
    assert.matches("completed%s+optimize%s+%d+/∞", run_beat(s, { "loop", "list" }, { cwd = repo }).stdout)
  end)
end)

-- A run killed with SIGKILL at a point the test chooses: it holds there on
-- a fifo; beat is killed; then the run is resumed.
describe("a run killed with kill -9 and resumed", function()
  -- Runs the loop twice: uninterrupted, then held at `hold` and killed, then
  -- resumed; returns both outcomes and what the test checked on the way.
  local function crash_and_resume(args, env, hold, opts)
    opts = opts or {}
    local s = session()
    local ref = user_repo()
    local r = run_beat(s, args, { cwd = ref, env = { SYNC = false, VALUES = env.VALUES } })
    assert(r.code == (opts.code or 0), r.stdout .. r.stderr)
    local want = outcome(ref, run_id(ref))

    local repo = user_repo()
    local original = files(repo)
    mkfifo(s.sync .. "/go-" .. hold)
    -- detached, so that no shim of this test ends what the crash leaves
    local dargs = { table.unpack(args) }
    dargs[#dargs + 1] = "--detach"
    r = run_beat(s, dargs, { cwd = repo, env = { VALUES = env.VALUES } })
    assert.equal(0, r.code, r.stderr)
    local id = r.stdout:match("^(%w+)\n$")
    wait_file(s.sync .. "/held-" .. hold)
    local procs = require "beat.runs.proc"
    local pid = math.tointeger(status(s, id).pid)
    -- the held command: stop its shim so that it cannot end it, kill beat,
    -- then the shim: the command survives, as after a crash that took the
    -- shim down too
    local held = H.pids_with(s.sync .. "/go-" .. hold)
    assert.equal(1, #held)
    local shim = procs.stat(held[1]).session
    assert.equal(0, beat.exec({ "kill", "-STOP", tostring(shim) }).code)
    assert.equal(0, beat.exec({ "kill", "-KILL", tostring(pid) }).code)
    assert.equal(0, beat.exec({ "kill", "-KILL", tostring(shim) }).code)
    local deadline = beat.clock() + 30
    while procs.alive { pid = pid } and beat.clock() < deadline do beat.sleep(0.02) end
    assert.is_false(procs.alive { pid = pid })
    assert.is_true(procs.alive(procs.identity(held[1])))

    r = run_beat(s, { "loop", "list" }, { cwd = repo })
    assert.matches(id .. "%s+crashed", r.stdout)
    r = run_beat(s, { "runs" }, { cwd = repo })
    assert.matches(id .. ".-crashed", r.stdout)

    -- resume: the leftover is ended, the in-flight iteration runs again
    os.remove(s.sync .. "/go-" .. hold)
    r = run_beat(s, { "loop", "resume", id, "--foreground" }, { cwd = H.tmpdir(), env = { VALUES = env.VALUES } })
    assert(r.code == (opts.code or 0), r.stdout .. r.stderr)
    assert.matches("resumed", r.stdout)
    assert.same({}, H.wait_gone(s.sync .. "/go-" .. hold, 5))
    local records = H.last_run(repo)
    local resume = H.events(records, "resume")[1]
    assert.truthy(resume)
    assert.is_true(#resume.killed >= 1)
    local got = outcome(repo, id)
    assert.same(want.decisions, got.decisions)
    assert.equal(want.best, got.best)
    assert.same(want.files, got.files)
    assert.equal(opts.state or "passed", status(s, id).state)

    -- and the run undoes as any other: the user's dirty tree, byte for byte
    r = run_beat(s, { "restore", id, "base" }, { cwd = repo })
    assert.equal(0, r.code, r.stderr)
    assert.same(original, files(repo))
    return records
  end

  it("while the agent works: a retry run ends as if never interrupted", function()
    crash_and_resume({ "loop", "fix", "--until", HOLD .. " check grep -q 'iteration 4' log.txt",
      "-a", AGENT, "--max-iterations", "6" }, {}, "agent-2")
  end)

  it("while the check runs: a retry run ends as if never interrupted", function()
    -- the 4th call of the check is iteration 3's
    crash_and_resume({ "loop", "fix", "--until", HOLD .. " check grep -q 'iteration 4' log.txt",
      "-a", AGENT, "--max-iterations", "6" }, {}, "check-4")
  end)

  it("while the baseline is scored: an optimize run ends as if never interrupted", function()
    crash_and_resume({ "loop", "lower", "--eval", HOLD .. " eval cat value.txt", "-a", AGENT,
      "--max-iterations", "5" }, { VALUES = "90 95 same 70 crash" }, "eval-1", { state = "completed" })
  end)
end)

describe("a run stopped and continued", function()
  local function reference(s, args, values)
    local ref = user_repo()
    local r = run_beat(s, args, { cwd = ref, env = { SYNC = false, VALUES = values } })
    assert(r.code == 0, r.stdout .. r.stderr)
    return outcome(ref, run_id(ref))
  end

  it("after Ctrl-C (interrupted) goes on from its journal as if never stopped", function()
    local s = session()
    local args = { "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "4" }
    local values = "90 95 80 same"
    local want = reference(s, args, values)
    local repo = user_repo()
    mkfifo(s.sync .. "/go-agent-3")
    local argv = { H.bin }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local p = assert(beat.spawn(argv, { cwd = repo, env = { XDG_STATE_HOME = s.xdg, SYNC = s.sync, VALUES = values } }))
    wait_file(s.sync .. "/held-agent-3")
    p:kill("INT")
    local r = assert(p:wait(60))
    assert.equal(130, r.code, r.stdout .. r.stderr)
    assert.matches("continue it: beat loop resume", r.stdout)
    local id = run_id(repo)
    assert.equal("interrupted", status(s, id).state)
    assert.is_true(status(s, id).resumable)
    os.remove(s.sync .. "/go-agent-3")
    r = run_beat(s, { "loop", "resume", id }, { cwd = repo, env = { VALUES = values } })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("resumed after iteration 2", r.stdout)
    local got = outcome(repo, id)
    assert.same(want.decisions, got.decisions)
    assert.equal(want.best, got.best)
    assert.same(want.files, got.files)
    assert.equal(1, status(s, id).resumes)
  end)

  it("after pause --force: the iteration under way is ended, nothing runs, resume runs it again", function()
    local s = session()
    local args = { "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "4" }
    local values = "90 85 80 75"
    local want = reference(s, args, values)
    local repo = user_repo()
    mkfifo(s.sync .. "/go-agent-2")
    local dargs = { table.unpack(args) }
    dargs[#dargs + 1] = "--detach"
    local r = run_beat(s, dargs, { cwd = repo, env = { VALUES = values } })
    local id = r.stdout:match("^(%w+)\n$")
    wait_file(s.sync .. "/held-agent-2")
    local pid = math.tointeger(status(s, id).pid)
    r = run_beat(s, { "loop", "pause", id, "--force" })
    assert.equal(0, r.code, r.stderr)
    local st = wait_status(s, id, function(x) return x.state == "paused" and not x.alive end)
    assert.is_true(st.resumable)
    assert.same({}, H.wait_gone(s.sync .. "/go-agent-2", 10))
    -- its end record comes before its exit, and under load the kernel can take
    -- a moment to tear the process down (seen waiting in __flush_work, as the
    -- release of an inotify watch does): the bound only stops a hang
    local procs, deadline = require "beat.runs.proc", beat.clock() + 10
    while procs.alive { pid = pid } and beat.clock() < deadline do beat.sleep(0.02) end
    assert.is_false(procs.alive { pid = pid })
    assert.equal("90\n", H.read(repo .. "/value.txt"))   -- at the best snapshot
    os.remove(s.sync .. "/go-agent-2")
    -- it was detached: it goes on detached
    r = run_beat(s, { "loop", "resume", id }, { env = { VALUES = values } })
    assert.equal(0, r.code, r.stderr)
    assert.matches("resumed in the background", r.stderr)
    st = wait_status(s, id, function(x) return x.final end)
    assert.equal("completed", st.state)
    local got = outcome(repo, id)
    assert.same(want.decisions, got.decisions)
    assert.equal(want.best, got.best)
    assert.same(want.files, got.files)
  end)

  it("cancelling a crashed run closes it: the work tree at the best snapshot, the journal ends cancelled", function()
    local s = session()
    local repo = user_repo()
    local original = files(repo)
    mkfifo(s.sync .. "/go-agent-3")
    local r = run_beat(s, { "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "5",
      "--detach" }, { cwd = repo, env = { VALUES = "90 95 99" } })
    local id = r.stdout:match("^(%w+)\n$")
    wait_file(s.sync .. "/held-agent-3")
    local pid = math.tointeger(status(s, id).pid)
    assert.equal(0, beat.exec({ "kill", "-KILL", tostring(pid) }).code)
    wait_status(s, id, function(x) return x.state == "crashed" end)
    assert.same({}, H.wait_gone(s.sync .. "/go-agent-3", 10))   -- its shims ended what they ran
    -- `last` gets its ref when a run ends: a dead run's last is its newest iteration
    assert.equal("", assert(beat.exec({ "git", "for-each-ref", ("refs/beat/%s/last"):format(id) }, { cwd = repo })).stdout)
    r = run_beat(s, { "show", id, "--diff", "last" }, { cwd = repo })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("\n%-90\n%+95\n", r.stdout)
    -- so does `best`: until then the journal's latest decision says which it is
    assert.equal("", assert(beat.exec({ "git", "for-each-ref", ("refs/beat/%s/best"):format(id) }, { cwd = repo })).stdout)
    r = run_beat(s, { "show", id, "--diff", "best" }, { cwd = repo })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("\n%-100\n%+90\n", r.stdout)
    assert.equal(0, run_beat(s, { "restore", id, "best" }, { cwd = repo }).code)
    assert.equal("90\n", H.read(repo .. "/value.txt"))
    H.write(repo .. "/value.txt", "half an edit\n")   -- as a dead agent may leave it
    -- and as git leaves a ref it was updating when the process was killed
    H.write(("%s/.git/refs/beat/%s/best.lock"):format(repo, id), "")
    r = run_beat(s, { "loop", "cancel", id, "not", "worth", "it" }, { cwd = repo })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches(("run %s cancelled: not worth it"):format(id), r.stdout)
    local st = status(s, id)
    assert.equal("cancelled", st.state)
    assert.equal("not worth it", st.reason)
    assert.equal(0, assert(beat.exec({ "git", "rev-parse", "-q", "--verify", ("refs/beat/%s/last"):format(id) },
      { cwd = repo })).code)   -- ended now: `last` has its ref
    assert.equal("90\n", assert(beat.exec({ "git", "show", ("refs/beat/%s/best:value.txt"):format(id) },
      { cwd = repo })).stdout)   -- and `best`
    assert.equal("90\n", H.read(repo .. "/value.txt"))
    -- the half edit was kept: nothing is lost
    local records = H.last_run(repo)
    local pre = H.events(records, "pre_restore")
    assert.is_true(#pre >= 1)
    assert.equal(0, run_beat(s, { "restore", id, pre[#pre].name }, { cwd = repo }).code)
    assert.equal("half an edit\n", H.read(repo .. "/value.txt"))
    assert.equal(0, run_beat(s, { "restore", id, "base" }, { cwd = repo }).code)
    assert.same(original, files(repo))
    -- and it is over
    r = run_beat(s, { "loop", "resume", id }, { cwd = repo })
    assert.equal(2, r.code)
    assert.matches("has ended %(cancelled%)", r.stderr)
  end)

  it("a recipe run resumes by running the recipe again with its arguments; listeners see records and phases", function()
    local s = session()
    local recipe = H.tmpdir() .. "/recipe.lua"
    H.write(recipe, ([[
      local beat = require "beat"
      local n, events = tonumber(arg[1]), {}
      local code = beat.strategy("optimize") {
        agent = beat.agent.command { argv = { %q, "{prompt}" } }, prompt = "lower it",
        eval = "cat value.txt", max_iterations = n, cooldown = "10ms",
        on_keep = function(st) beat.exec { %q, "keep", "true" } end,
        listeners = { function(event, rec)
          events[#events + 1] = event == "phase" and ("phase " .. rec.phase) or event
        end },
      }
      beat.fs.write(os.getenv("EVENTS"), table.concat(events, "\n") .. "\n")
      return code
    ]]):format(AGENT, HOLD))
    local values = "90 95 80 70"
    local ref = user_repo()
    local events = H.tmpdir() .. "/events"
    local r = run_beat(s, { "run", recipe, "4" }, { cwd = ref, env = { SYNC = false, VALUES = values, EVENTS = events } })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local want = outcome(ref, run_id(ref))
    local seen = H.read(events)
    for _, e in ipairs { "run_start", "phase eval", "eval", "decision", "phase idle", "phase agent", "agent",
                        "phase cooldown", "process", "run_end" } do
      assert.truthy(seen:find("\n" .. e .. "\n", 1, true) or seen:find("^" .. e .. "\n"), e)
    end
    -- killed inside the second on_keep hook (iteration 3): the best is already iteration 3,
    -- the journal does not know it yet
    local repo = user_repo()
    mkfifo(s.sync .. "/go-keep-2")
    r = run_beat(s, { "run", "--detach", recipe, "4" }, { cwd = repo, env = { VALUES = values, EVENTS = events } })
    assert.equal(0, r.code, r.stderr)
    local id = r.stdout:match("^(%w+)\n$")
    wait_file(s.sync .. "/held-keep-2")
    local pid = math.tointeger(status(s, id).pid)
    assert.equal(0, beat.exec({ "kill", "-KILL", tostring(pid) }).code)
    wait_status(s, id, function(x) return x.state == "crashed" end)
    os.remove(s.sync .. "/go-keep-2")
    r = run_beat(s, { "loop", "resume", id, "--foreground" }, { env = { VALUES = values, EVENTS = events } })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("resumed after iteration 2", r.stdout)
    local got = outcome(repo, id)
    assert.same(want.decisions, got.decisions)
    assert.equal(want.best, got.best)
    assert.same(want.files, got.files)
  end)
end)

describe("beat loop attach", function()
  it("follows a detached run's output; Ctrl-C detaches and the run goes on", function()
    local s = session()
    local repo = user_repo()
    mkfifo(s.sync .. "/go-agent-2")
    local r = run_beat(s, { "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "3",
      "--detach" }, { cwd = repo, env = { VALUES = "90 80 70" } })
    local id = r.stdout:match("^(%w+)\n$")
    wait_file(s.sync .. "/held-agent-2")
    local out = {}
    local p = assert(beat.spawn({ H.bin, "loop", "attach", id }, { cwd = s.elsewhere,
      env = { XDG_STATE_HOME = s.xdg }, stdout = function(line) out[#out + 1] = line end }))
    local deadline = beat.clock() + 60
    while not table.concat(out, "\n"):find("iter 1", 1, true) and beat.clock() < deadline do beat.sleep(0.02) end
    assert.matches("beat run " .. id, table.concat(out, "\n"))
    p:kill("INT")
    r = assert(p:wait(30))
    assert.equal(0, r.code)
    assert.matches("detached from run " .. id, r.stderr)
    assert.equal("running", status(s, id).state)
    -- following to the end: attach returns when the run has ended
    p = assert(beat.spawn({ H.bin, "logs", id, "-f" }, { cwd = s.elsewhere, env = { XDG_STATE_HOME = s.xdg } }))
    release(s.sync .. "/go-agent-2")
    r = assert(p:wait(60))
    assert.equal(0, r.code, r.stderr)
    assert.matches("iter 3 .*completed: 3 iterations done", r.stdout)
    assert.equal("completed", status(s, id).state)
  end)
end)

describe("beat loop --checkpoint", function()
  it("is --continue-context", function()
    local s = session()
    local repo = user_repo()
    local r = run_beat(s, { "loop", "fix", "--until", "true", "-a", AGENT, "--checkpoint" }, { cwd = repo })
    assert.equal(0, r.code, r.stderr)
    assert.is_true(H.events(H.last_run(repo), "run_start")[1].config.continue_context)
  end)
end)

describe("the state of a run", function()
  -- A finished run's journal made to say it was killed before its end, by
  -- the process pid started at start_time.
  local function forge(repo, id, pid, start_time)
    local path = ("%s/.beat/runs/%s/journal.jsonl"):format(repo, id)
    local lines = {}
    for line in H.read(path):gmatch("[^\n]+") do
      local rec = json.decode(line)
      if rec.event == "run_start" then rec.pid, rec.start_time = pid, start_time end
      if rec.event ~= "run_end" then lines[#lines + 1] = json.encode(rec) end
    end
    H.write(path, table.concat(lines, "\n") .. "\n")
  end

  it("is crashed, never running, when its recorded pid belongs to another process now", function()
    local s = session()
    local repo = user_repo()
    assert.equal(0, run_beat(s, { "loop", "fix", "--until", "true", "-a", AGENT }, { cwd = repo }).code)
    local id = run_id(repo)
    local me = require("beat.runs.proc").identity()
    -- whose pid a live process (this one) reuses
    forge(repo, id, me.pid, me.start_time + 1)
    assert.matches(id .. "%s+crashed", run_beat(s, { "loop", "list" }, { cwd = repo }).stdout)
    assert.matches(id .. ".-crashed", run_beat(s, { "runs" }, { cwd = repo }).stdout)
    assert.matches("\ncrashed: ", run_beat(s, { "show", id }, { cwd = repo }).stdout)
    forge(repo, id, me.pid, me.start_time)
    assert.matches(id .. "%s+running", run_beat(s, { "loop", "list" }, { cwd = repo }).stdout)
  end)

  it("is not crashed while its process is still exiting: its main thread gone, another still holding its files", function()
    -- beat has a signal thread: killed, its main thread can be a zombie while
    -- the other, last, thread is still closing the process's files, the
    -- work-tree lock among them (a resume then found the work tree in use).
    -- A program whose main thread ends while another goes on stands for it.
    local s = session()
    local dir = H.tmpdir()
    local p = assert(beat.spawn { H.main_thread_exits(), dir .. "/pid" })
    finally(function() p:kill("KILL") end)
    local pid, st = H.await_main_thread_exit(dir .. "/pid")
    local procs = require "beat.runs.proc"
    assert.equal("Z", st.state)   -- its main thread has ended
    assert.is_true(procs.alive { pid = pid, start_time = st.start_time })
    assert.equal(2, st.threads)
    local repo = user_repo()
    assert.equal(0, run_beat(s, { "loop", "fix", "--until", "true", "-a", AGENT }, { cwd = repo }).code)
    local id = run_id(repo)
    forge(repo, id, pid, st.start_time)
    assert.matches(id .. "%s+running", run_beat(s, { "loop", "list" }, { cwd = repo }).stdout)
    local r = run_beat(s, { "loop", "resume", id }, { cwd = repo })
    assert.equal(2, r.code)
    assert.matches(("run %s is running, not paused: nothing to resume"):format(id), r.stderr)
    -- gone: crashed
    p:kill("KILL")
    assert(p:wait(30))
    assert.is_false(procs.alive { pid = pid, start_time = st.start_time })
    assert.matches(id .. "%s+crashed", run_beat(s, { "loop", "list" }, { cwd = repo }).stdout)
  end)

  it("a detached loop with a bad flag, a missing agent or no repository is refused before anything starts", function()
    local s = session()
    local repo = user_repo()
    local plain = H.tmpdir()
    local cases = {
      { repo, { "loop", "x", "--until", "true", "-a", "/nonexistent/agent", "--detach" }, "not installed" },
      { plain, { "loop", "x", "--until", "true", "-a", AGENT, "--detach" }, "not a git repository" },
      { repo, { "loop", "x", "--until", "true", "--max-iterations", "-1", "--detach" }, "positive integer or 0" },
      { repo .. "/.git", { "loop", "x", "--until", "true", "-a", AGENT, "--detach" }, "inside the git directory" },
    }
    for _, c in ipairs(cases) do
      local r = run_beat(s, c[2], { cwd = c[1] })
      assert.equal(2, r.code, r.stdout .. r.stderr)
      assert.matches(c[3], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
      assert.equal("", r.stdout)
    end
    assert.is_false(beat.fs.exists(repo .. "/.beat"))
    assert.same({}, beat.fs.list(s.xdg .. "/beat/runs") or {})
  end)
end)
