-- strategies/parallel.lua and `beat loop --candidates N [--slurm]`: candidates
-- at once, each in its own worktree, here and through a real Slurm cluster;
-- worktrees, processes and jobs never outlive the run.
local beat = require "beat"
local H = require "tests.helpers"
local cluster = require "tests.fixtures.slurm.cluster"

local AGENT = "sh " .. H.root .. "/tests/fixtures/loop/candidate.sh"
local EVAL = "cat value.txt"

-- Decisions of the newest run: {{iteration, status}, ...} in order.
local function decisions(dir)
  local out = {}
  for _, d in ipairs(H.events(H.last_run(dir), "decision")) do
    out[#out + 1] = { d.iteration, d.status }
  end
  return out
end

-- The work trees git knows of in dir's repository (paths).
local function worktree_list(dir)
  local r = assert(beat.exec({ "git", "worktree", "list", "--porcelain" }, { cwd = dir }))
  assert(r.code == 0, r.stderr)
  local out = {}
  for path in r.stdout:gmatch("worktree ([^\n]+)") do out[#out + 1] = path end
  return out
end

-- Asserts that only the user's work tree is left: git lists nothing else,
-- git keeps no record of a linked one, and the run has no wt/ directory.
local function only_users_tree(dir, run_dir)
  assert.same({ beat.fs.realpath(dir) }, worktree_list(dir))
  assert.same({}, beat.fs.list(dir .. "/.git/worktrees") or {})
  if run_dir then assert.is_false(beat.fs.exists(run_dir .. "/wt")) end
end

local function spawn_loop(dir, args, env)
  local argv = { H.bin, "loop" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(beat.spawn(argv, { cwd = dir, env = env, grace = 10 }))
end

local function wait_for(what, fn, limit)
  local deadline = beat.clock() + (limit or 20)
  while beat.clock() < deadline do
    if fn() then return end
    beat.sleep(0.05)
  end
  error("timed out waiting for " .. what)
end

local function lines_of(path)
  local out = {}
  for l in (H.read(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  table.sort(out)
  return out
end

describe("parallel candidates", function()
  it("run a round of 4 candidates whose agents each sleep 1 s in under 2 s", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "4",
      "--max-iterations", "1" }, { SLEEP = "1", VALUES_1 = "90 80 95 85" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local ds = H.events(H.last_run(dir), "decision")
    assert.equal(5, #ds)
    -- from the baseline's decision to the last candidate's: one after the
    -- other the agents alone take 4 s; 2 s leaves a loaded machine room for
    -- the checkouts, snapshots and evals. This proves concurrency, not speed.
    local round = ds[5].time - ds[1].time
    assert.is_true(round < 2, ("the round took %.2f s"):format(round))
    assert.equal("80\n", H.read(dir .. "/value.txt"))
  end)

  it("keep the best candidate that beats the best; a tie never wins; the worktrees are removed", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    H.write(dir .. "/notes.txt", "my own untracked notes\n")
    local r = H.loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "4",
      "--max-iterations", "2", "--min-delta", "0.5" },
      { VALUES_1 = "90 70 95 80", VALUES_2 = "70 69.9 same crash" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ { 0, "baseline" },
      { "1.1", "discard" }, { "1.2", "keep" }, { "1.3", "discard" }, { "1.4", "discard" },
      { "2.1", "discard" }, { "2.2", "discard" }, { "2.3", "discard" }, { "2.4", "crash" } }, decisions(dir))
    assert.equal("70\n", H.read(dir .. "/value.txt"))
    assert.equal("my own untracked notes\n", H.read(dir .. "/notes.txt"))
    local recs, run_dir, id = H.last_run(dir)
    local best = recs[#recs].best
    local iter = assert(beat.exec({ "git", "rev-parse", ("refs/beat/%s/iter-1.2"):format(id) }, { cwd = dir }))
    assert.equal(best .. "\n", iter.stdout)
    local ds = H.events(recs, "decision")
    assert.matches("candidate 1.2 was better still", ds[2].summary)
    assert.matches("^tie", ds[7].summary)        -- 69.9 is within --min-delta of 70
    assert.equal(2, ds[7].round)
    assert.equal(2, ds[7].candidate)
    assert.equal(2, recs[#recs].iterations)       -- two rounds
    assert.matches("2 iterations", r.stdout)
    local tsv = H.read(run_dir .. "/results.tsv")
    assert.matches("\n1%.2\t%x+\t70\tkeep\t", tsv)
    assert.matches("\n2%.4\t%x+\t\tcrash\t", tsv)
    only_users_tree(dir, run_dir)
  end)

  it("give agent, guards and eval BEAT_CANDIDATE beside BEAT_ITERATION, in the candidate's worktree", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local seen, cmds = H.tmpdir() .. "/agent", H.tmpdir() .. "/cmds"
    local log = ('echo "%%s $BEAT_ITERATION.$BEAT_CANDIDATE $(pwd -P)" >> %s'):format(cmds)
    local r = H.loop(dir, { "lower it", "-a", AGENT, "--candidates", "2", "--max-iterations", "1",
      "--guard", log:format("guard"), "--eval", log:format("eval") .. "; cat value.txt" },
      { VALUES_1 = "90 80", SEEN = seen })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, run_dir = H.last_run(dir)
    local wt = beat.fs.realpath(run_dir) .. "/wt/"
    assert.same({ "1.1 " .. wt .. "1.1", "1.2 " .. wt .. "1.2" }, lines_of(seen))
    assert.same({ "eval . " .. beat.fs.realpath(dir),
      "eval 1.1 " .. wt .. "1.1", "eval 1.2 " .. wt .. "1.2",
      "guard 1.1 " .. wt .. "1.1", "guard 1.2 " .. wt .. "1.2" }, lines_of(cmds))
    only_users_tree(dir, run_dir)
  end)

  it("are listed by beat show and beat report with their round.candidate ids", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "2",
      "--max-iterations", "1" }, { VALUES_1 = "90 80" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local show = H.beat({ "show" }, { cwd = dir })
    assert.equal(0, show.code, show.stderr)
    assert.matches("\n%s*1%.1%s+discard%s+score 90", show.stdout)
    assert.matches("\n%s*1%.2%s+keep%s+score 80", show.stdout)
    local log = H.beat({ "show", "last", "--log", "1.2" }, { cwd = dir })
    assert.equal(0, log.code, log.stderr)
    assert.matches("candidate 2 set value to 80", log.stdout)
    local js = beat.json.decode(H.beat({ "show", "--json" }, { cwd = dir }).stdout)
    assert.matches("/iter%-1%.2/agent%.log$", js.logs["1.2"].agent)
    local report = H.beat({ "report" }, { cwd = dir })
    assert.equal(0, report.code, report.stderr)
    assert.matches("1 iteration %(2 candidates%)", report.stdout)
    local rj = beat.json.decode(H.beat({ "report", "--json" }, { cwd = dir }).stdout)
    assert.equal("1.2", rj.iterations[3].iteration)
    assert.equal(1, rj.iterations[3].round)
    assert.equal(2, rj.iterations[3].candidate)
    -- a candidate's snapshot was taken in its worktree, yet it is this work tree's
    local back = H.beat({ "restore", "last", "iter-1.1" }, { cwd = dir })
    assert.equal(0, back.code, back.stdout .. back.stderr)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("stop the run when a hook fails in one candidate: the others end, no worktree or process is left", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m = H.marker()
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      return (beat.strategy("parallel") {
        agent = beat.agent.command { argv = { "sh", %q } }, eval = "cat value.txt", candidates = 4,
        prompts = function(k)
          if k == 3 then beat.sleep(0.5) error("no idea for candidate 3") end
          return "idea " .. k
        end,
      })]]):format(H.root .. "/tests/fixtures/loop/candidate.sh"))
    local r = H.beat({ "run", recipe }, { cwd = dir, env = { VALUES_1 = "hang hang hang hang", MARKER = m } })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("hook prompts failed: [^\n]*no idea for candidate 3", r.stdout)
    assert.same({}, H.wait_gone(m, 3))
    local _, run_dir = H.last_run(dir)
    only_users_tree(dir, run_dir)
    assert.equal("100\n", H.read(dir .. "/value.txt"))
  end)

  it("end on Ctrl-C mid-round with no worktree and no process left", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m = H.marker()
    local p = spawn_loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "4", "-q" },
      { VALUES_1 = "hang hang hang hang", MARKER = m })
    wait_for("4 agents", function() return #H.pids_with(m) >= 4 end)
    p:kill("INT")
    local r = assert(p:wait(30))
    assert.equal(130, r.code, r.stderr)
    assert.same({}, H.wait_gone(m, 3))
    local recs, run_dir = H.last_run(dir)
    assert.equal("interrupted", recs[#recs].event)
    only_users_tree(dir, run_dir)
    assert.equal("100\n", H.read(dir .. "/value.txt"))
  end)

  it("left behind by a run killed with SIGKILL are removed by cleanup(run_id) and by the next run", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local function killed_run()
      local m = H.marker()
      local p = spawn_loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "2", "-q" },
        { VALUES_1 = "hang hang", MARKER = m })
      wait_for("2 agents", function() return #H.pids_with(m) >= 2 end)
      p:kill(9)
      p:wait(30)
      assert.same({}, H.wait_gone(m, 5))   -- beat's shim ends its children with it
      local _, run_dir, id = H.last_run(dir)
      assert.equal(3, #worktree_list(dir))
      return run_dir, id
    end
    local run_dir, id = killed_run()
    -- the run said it may have worktrees
    local mark = ("%s/.beat/runs/.worktrees/%s"):format(dir, id)
    assert.is_true(beat.fs.exists(mark))
    -- one worktree's directory is gone already: git's record of it goes too
    beat.fs.rm_rf(run_dir .. "/wt/1.1")
    local done = assert(beat.parallel.cleanup(id, { cwd = dir }))
    assert.same({ jobs = 0, worktrees = 2 }, done)
    only_users_tree(dir, run_dir)
    assert.is_false(beat.fs.exists(mark))
    assert.same({ jobs = 0, worktrees = 0 }, beat.parallel.cleanup(id, { cwd = dir }))

    run_dir = killed_run()
    local r = H.loop(dir, { "again", "--until", "true", "-a", AGENT })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    only_users_tree(dir, run_dir)

    run_dir = killed_run()
    r = H.beat({ "clean", "--unfinished", "--keep", "0" }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.is_false(beat.fs.exists(run_dir))
    only_users_tree(dir)

    -- beat loop resume removes what the dead run left, and says it does not continue a round
    run_dir, id = killed_run()
    r = H.beat({ "loop", "resume", id }, { cwd = dir })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("not continued after a crash", r.stdout .. r.stderr)
    only_users_tree(dir, run_dir)
  end)

  it("are looked for at a run's start only in the runs that may have them, not in every run", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    -- a parallel run that ended: its worktrees are gone, and so is its mark
    local r = H.loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "2",
      "--max-iterations", "1" }, { VALUES_1 = "90 80" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, ended = H.last_run(dir)
    assert.same({}, beat.fs.list(dir .. "/.beat/runs/.worktrees"))
    -- many runs of the past; one dead one with a mark and a half-made worktree
    for i = 1, 300 do assert(beat.fs.mkdir_p(("%s/.beat/runs/old%03d"):format(dir, i))) end
    assert(beat.fs.mkdir_p(dir .. "/.beat/runs/dead/wt/1.1"))
    H.write(dir .. "/.beat/runs/.worktrees/dead", "")
    local seen, st = H.strace("%stat,%file", { H.bin, "loop", "again", "--until", "true", "-a", AGENT },
      { cwd = dir })
    if not seen then return pending(st) end
    assert.equal(0, st.code, st.stdout .. st.stderr)
    assert.is_nil(seen:find("/old%d+/"), "the start looked into every run directory")
    assert.is_nil(seen:find(ended:match("[^/]+$") .. "/wt", 1, true))
    assert.is_false(beat.fs.exists(dir .. "/.beat/runs/dead/wt"))
    assert.same({}, beat.fs.list(dir .. "/.beat/runs/.worktrees"))
  end)

  it("reject bad options in one line, before anything is written", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local cases = {
      { { "--candidates", "0" }, "loop: --candidates must be a positive integer, got '0'" },
      { { "--candidates", "257" }, "loop: --candidates must be at most 256, got '257'" },
      { { "--slurm" }, "loop: --slurm needs --candidates N (--candidates 1 runs one candidate at a time)" },
      { { "--candidates", "2", "--slurm-arg", "--exclusive" }, "loop: --slurm-arg needs --slurm" },
      { { "--candidates", "2", "--continue-context" },
        "loop: --continue-context does not apply to --candidates (separate sessions)" },
    }
    for _, c in ipairs(cases) do
      local args = { "p", "--eval", EVAL, "-a", AGENT }
      for _, a in ipairs(c[1]) do args[#args + 1] = a end
      local r = H.loop(dir, args)
      assert.equal(2, r.code, r.stderr)
      assert.equal("beat: " .. c[2] .. "\n", r.stderr)
    end
    local r = H.loop(dir, { "p", "--until", "true", "-a", AGENT, "--candidates", "2" })
    assert.equal("beat: loop: --candidates needs --eval\n", r.stderr)
    assert.is_false(beat.fs.exists(dir .. "/.beat"))

    local parallel = beat.strategy("parallel")
    local agent = beat.agent.command { argv = { "true" } }
    local function err(o)
      o.agent, o.cwd = o.agent or agent, dir
      if o.prompt == nil and o.prompts == nil then o.prompt = "p" end
      if o.eval == nil then o.eval = EVAL end
      local ok, e = pcall(parallel, o)
      assert.is_false(ok)
      return tostring(e)
    end
    local P = 'beat.strategy("parallel"): '
    assert.matches(P .. "opts.candidates must be an integer from 1 to 256, got 0", err { candidates = 0 }, 1, true)
    assert.matches(P .. "opts.prompts must list 3 prompts (one per candidate), got 2",
      err { candidates = 3, prompts = { "a", "b" } }, 1, true)
    assert.matches(P .. "opts.max_evals must be a positive integer, got 0", err { max_evals = 0 }, 1, true)
    assert.matches(P .. "opts.eval_executor must be an executor", err { eval_executor = {} }, 1, true)
    assert.matches(P .. "needs git", err { git = false }, 1, true)
    assert.matches(P .. "a pareto objective is not supported",
      err { objective = beat.objective { pareto = true, metrics = { a = "minimize", b = "minimize" } } }, 1, true)
    assert.is_false(beat.fs.exists(dir .. "/.beat"))
  end)

  it("take their prompts from a list, one per candidate", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local prompts = H.tmpdir() .. "/prompts"
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      return (beat.strategy("parallel") {
        agent = beat.agent.fn(function(ctx)
          local f = io.open(%q, "a"); f:write(ctx.env.BEAT_CANDIDATE, ": ", ctx.prompt:match("^[^\n]*"), "\n"); f:close()
        end),
        eval = "cat value.txt", prompts = { "try caching", "try a smaller model" }, max_iterations = 1,
      })]]):format(prompts))
    local r = H.beat({ "run", recipe }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "1: try caching", "2: try a smaller model" }, lines_of(prompts))
    -- the default: the same prompt, and which candidate it is
    local seen = H.tmpdir() .. "/default"
    H.write(recipe, ([[
      local beat = require "beat"
      return (beat.strategy("parallel") {
        agent = beat.agent.fn(function(ctx)
          local f = io.open(%q, "a"); f:write(ctx.prompt:match("You are candidate %%d of %%d[^\n]*"), "\n"); f:close()
        end),
        eval = "cat value.txt", prompt = "lower it", candidates = 2, max_iterations = 1,
      })]]):format(seen))
    r = H.beat({ "run", recipe }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "You are candidate 1 of 2; try a different idea from the others.",
      "You are candidate 2 of 2; try a different idea from the others." }, lines_of(seen))
  end)

  it("limit the agents and evals running at once to max_agents and max_evals", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local log = H.tmpdir() .. "/log"
    -- each command logs its start and end; the most at once is counted from the log
    local cmd = ('echo "+ %%s $(date +%%%%s.%%%%N)" >> %s; sleep 0.3; echo "- %%s $(date +%%%%s.%%%%N)" >> %s'):format(log, log)
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      return (beat.strategy("parallel") {
        agent = beat.agent.command { argv = { "sh", "-c", %q .. '; echo $BEAT_CANDIDATE > value.txt' } },
        eval = %q .. "; cat value.txt", prompt = "p", candidates = 4, max_agents = 2, max_evals = 1,
        max_iterations = 1,
      })]]):format(cmd:format("agent", "agent"), cmd:format("eval", "eval")))
    local r = H.beat({ "run", recipe }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local events = {}
    for sign, kind, t in (H.read(log) or ""):gmatch("([+-]) (%a+) ([%d.]+)") do
      events[#events + 1] = { t = tonumber(t), d = sign == "+" and 1 or -1, kind = kind }
    end
    table.sort(events, function(a, b) return a.t < b.t or (a.t == b.t and a.d < b.d) end)
    local now, most = { agent = 0, eval = 0 }, { agent = 0, eval = 0 }
    for _, e in ipairs(events) do
      now[e.kind] = now[e.kind] + e.d
      most[e.kind] = math.max(most[e.kind], now[e.kind])
    end
    assert.same({ agent = 2, eval = 1 }, most)
  end)
end)

local available, why = cluster.available()
if not available then
  describe("parallel candidates through Slurm #slurm", function()
    pending("skipped: " .. why)
  end)
  return
end

describe("parallel candidates through Slurm #slurm", function()
  local c

  setup(function()
    c = assert(cluster.start { cpus = 8 })
  end)

  teardown(function()
    if c then c:stop() end
  end)

  after_each(function()
    if c then assert.same({}, c:wait_empty(10)) end
  end)

  local function recipe(dir, eval, extra)
    return H.recipe(dir, ([[
      local beat = require "beat"
      return (beat.strategy("parallel") {
        agent = beat.agent.command { argv = { "sh", %q } }, prompt = "lower it", eval = %q,
        eval_executor = beat.slurm { conf = %q }, max_iterations = 1, %s
      })]]):format(H.root .. "/tests/fixtures/loop/candidate.sh", eval, c.conf, extra or ""))
  end

  it("run 4 evals of sleep 1 at once in under 2.5 s", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.beat({ "run", recipe(dir, "sleep 1; cat value.txt", "candidates = 4") },
      { cwd = dir, env = { VALUES_1 = "90 80 95 85" } })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local first, last = math.huge, 0
    for _, e in ipairs(H.events(H.last_run(dir), "eval")) do
      if e.iteration ~= 0 then
        assert.equal(0, e.code)
        assert.matches("^%d+$", tostring(e.job_id))
        first, last = math.min(first, e.time - e.duration), math.max(last, e.time)
      end
    end
    -- the node declares 8 CPUs, so the 4 jobs run side by side: one after
    -- the other they take 4 s; 2.5 s leaves room for srun and a loaded machine
    assert.is_true(last - first < 2.5, ("the evals took %.2f s"):format(last - first))
    assert.equal("80\n", H.read(dir .. "/value.txt"))
  end)

  it("record an eval job cancelled from outside as an infrastructure error, not a score", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m, started = H.marker(), H.tmpdir() .. "/started"
    local eval = ('if [ "$BEAT_CANDIDATE" = 2 ]; then echo go > %s; exec sleep %s; fi; cat value.txt'):format(started, m)
    local p = assert(beat.spawn({ H.bin, "run", recipe(dir, eval, "candidates = 3") },
      { cwd = dir, env = { VALUES_1 = "90 80 95" } }))
    wait_for("candidate 2's eval", function() return beat.fs.exists(started) end)
    local job
    wait_for("its job", function()
      for _, l in ipairs(c:queue()) do job = job or l:match("^(%d+) beat%-%w+%-1%.2 ") end
      return job
    end)
    c:run { "scancel", job }
    local r = assert(p:wait(60))
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ { 0, "baseline" }, { "1.1", "keep" }, { "1.2", "infra" }, { "1.3", "discard" } }, decisions(dir))
    local recs, run_dir = H.last_run(dir)
    local ds = H.events(recs, "decision")
    assert.matches("^eval: infrastructure: job " .. job .. " was cancelled outside beat", ds[3].summary)
    assert.is_nil(ds[3].score)
    for _, e in ipairs(H.events(recs, "eval")) do
      if e.iteration == "1.2" then assert.equal("cancelled", e.infra) end
    end
    assert.equal(1, recs[#recs].iterations)   -- the round counts, its infra candidate is no failure
    assert.same({}, H.wait_gone(m, 5))
    only_users_tree(dir, run_dir)
  end)

  it("end on Ctrl-C mid-round with no worktree, no process and no Slurm job left", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local m, started = H.marker(), H.tmpdir() .. "/started"
    local eval = ('if [ -n "$BEAT_CANDIDATE" ]; then echo "$SLURM_JOB_ID" >> %s; exec sleep %s; fi; cat value.txt')
      :format(started, m)
    local p = spawn_loop(dir, { "lower it", "--eval", eval, "-a", AGENT, "--candidates", "4", "--slurm", "-q" },
      { VALUES_1 = "90 80 95 85", SLURM_CONF = c.conf })
    wait_for("4 eval jobs", function() return #lines_of(started) >= 4 end, 30)
    p:kill("INT")
    local r = assert(p:wait(60))
    assert.equal(130, r.code, r.stderr)
    assert.same({}, c:queue())        -- beat returns once its jobs have left the queue
    assert.same({}, H.wait_gone(m, 5))
    local _, run_dir = H.last_run(dir)
    only_users_tree(dir, run_dir)
    assert.equal("100\n", H.read(dir .. "/value.txt"))
  end)

  it("run the agents through agent_executor as jobs named after the run and the candidate", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local out = H.tmpdir()
    H.recipe(dir, ([[
      local beat = require "beat"
      return (beat.strategy("parallel") {
        agent = beat.agent.command { argv = { "sh", "-c",
          'echo "$SLURM_JOB_NAME" > %s/$BEAT_CANDIDATE; echo 9$BEAT_CANDIDATE > value.txt' } },
        prompt = "p", eval = "cat value.txt", candidates = 2, max_iterations = 1,
        agent_executor = beat.slurm { conf = %q },
      })]]):format(out, c.conf))
    local r = H.beat({ "run", dir .. "/recipe.lua" }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, _, id = H.last_run(dir)
    assert.equal(("beat-%s-1.1\n"):format(id), H.read(out .. "/1"))
    assert.equal(("beat-%s-1.2\n"):format(id), H.read(out .. "/2"))
    assert.equal("91\n", H.read(dir .. "/value.txt"))
  end)

  it("left behind by a run killed with SIGKILL, queued jobs included, are ended by cleanup(run_id)", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local seen, m = H.tmpdir() .. "/seen", H.marker()
    local p = assert(beat.spawn({ H.bin, "run", recipe(dir, "cat value.txt", "candidates = 2") },
      { cwd = dir, env = { VALUES_1 = "90 80", SLEEP = "2", SEEN = seen } }))
    wait_for("both agents", function() return #lines_of(seen) == 2 end)
    -- every CPU of the node taken: the candidates' evals wait in the queue
    local blocker = assert(beat.slurm { conf = c.conf, cpus = c.cpus }:spawn({ "sleep", m }))
    local function pending()
      local n = 0
      for _, l in ipairs(c:queue()) do
        if l:match("^%d+ beat%-%w+%-1%.%d PENDING$") then n = n + 1 end
      end
      return n
    end
    wait_for("2 queued evals", function() return pending() == 2 end, 30)
    p:kill(9)
    p:wait(30)
    beat.sleep(1)
    assert.equal(2, pending())        -- Slurm keeps a queued job whose srun is gone
    local _, run_dir, id = H.last_run(dir)
    local done = assert(beat.parallel.cleanup(id, { cwd = dir }))
    assert.same({ jobs = 2, worktrees = 2 }, done)
    assert.equal(0, pending())
    blocker:kill()
    blocker:wait()
    only_users_tree(dir, run_dir)
  end)

  it("pass --slurm-arg to srun as is", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "lower it", "-a", AGENT, "--candidates", "1", "--max-iterations", "1", "--slurm",
      "--slurm-arg=--partition=nosuch", "--eval", EVAL }, { SLURM_CONF = c.conf, VALUES_1 = "90" })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("^beat: beat%.slurm: cannot check work tree [^\n]*: srun: [^\n]*[Pp]artition[^\n]*\n$", r.stderr)
    assert.is_false(beat.fs.exists(dir .. "/.beat/runs"))
    r = H.loop(dir, { "lower it", "-a", AGENT, "--candidates", "1", "--max-iterations", "1", "--slurm",
      "--slurm-arg", "--comment=beat-spec",
      "--eval", "scontrol show job $SLURM_JOB_ID | grep -q Comment=beat-spec && cat value.txt" },
      { SLURM_CONF = c.conf, VALUES_1 = "90" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("stop at the start, in one line, when a node does not see the work tree", function()
    if not c.private then
      pending("unshare is not permitted here: no directory the node cannot see")
      return
    end
    local dir = c.private .. "/proj"
    beat.fs.mkdir_p(dir)
    for _, g in ipairs { { "init", "-q" }, { "config", "user.name", "T" }, { "config", "user.email", "t@t" } } do
      table.insert(g, 1, "git")
      assert(beat.exec(g, { cwd = dir }).code == 0)
    end
    H.write(dir .. "/value.txt", "100\n")
    local r = H.loop(dir, { "lower it", "--eval", EVAL, "-a", AGENT, "--candidates", "2", "--slurm" },
      { SLURM_CONF = c.conf })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("^beat: beat%.slurm: work tree " .. dir:gsub("%p", "%%%0")
      .. " is not visible on node [^\n]*; it must be on a filesystem the compute nodes share\n$", r.stderr)
    assert.is_false(beat.fs.exists(dir .. "/.beat/runs"))
  end)
end)
