local beat = require "beat"
local H = require "tests.helpers"
local cluster = require "tests.fixtures.slurm.cluster"

local function errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(err)
end

local function wait_file(path, limit)
  local deadline = beat.clock() + (limit or 10)
  while beat.clock() < deadline do
    local s = H.read(path)
    if s and s ~= "" then return s end
    beat.sleep(0.02)
  end
  error("no file " .. path)
end

describe("beat.executor.local", function()
  local ex = beat.executor["local"]()

  it("runs a command through beat.exec and returns its result", function()
    local dir = H.tmpdir()
    local r = assert(ex:exec("pwd; echo err >&2; exit 3",
      { cwd = dir, run_id = "r1", iteration = 2, candidate = 1 }))
    assert.equal(dir .. "\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.equal(3, r.code)
    assert.equal(0, r.signal)
    assert.is_false(r.timed_out)
    assert.equal("local", r.executor)
    assert.is_nil(r.infra_error)
  end)

  it("spawns a command whose proc can be waited for and killed", function()
    local m = H.marker()
    local p = assert(ex:spawn({ "sleep", m }))
    assert.is_true(H.wait_started(m))
    p:kill()
    local r = p:wait()
    assert.equal(143, r.code)
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("is also beat.executor.here(), checks a directory, and has nothing to clean up", function()
    assert.equal("local", beat.executor.here().kind)
    assert.is_true(ex:check(H.tmpdir()))
    local ok, err = ex:check("/nonexistent/beat-wt")
    assert.is_nil(ok)
    assert.equal("executor: work tree /nonexistent/beat-wt: no such directory", err)
    assert.equal(0, ex:cleanup("r1"))
  end)

  it("rejects unknown and malformed options, naming them", function()
    assert.matches("executor:exec: unknown option opts.bogus", errmsg(ex.exec, ex, "true", { bogus = 1 }))
    assert.matches("executor:exec: opts.candidate must be a positive integer, got 0",
      errmsg(ex.exec, ex, "true", { candidate = 0 }))
    assert.matches("executor:exec: opts.run_id must be a run id", errmsg(ex.exec, ex, "true", { run_id = "a b" }))
    assert.matches("opts.iteration must be", errmsg(ex.exec, ex, "true", { iteration = "3,4" }))
    assert.matches("beat.exec: opts.timeout must be a duration", errmsg(ex.exec, ex, "true", { timeout = "x" }))
    assert.matches("beat.executor.local: takes no options", errmsg(beat.executor["local"], { x = 1 }))
  end)

  it("bound to a run and iteration, adds them to every exec and spawn and keeps the rest", function()
    local got = {}
    local spy = setmetatable({
      exec = function(_, cmd, o) got[#got + 1] = o return ex:exec(cmd, o) end,
      spawn = function(_, cmd, o) got[#got + 1] = o return ex:spawn(cmd, o) end,
    }, { __index = ex })
    local b = beat.executor.bind(spy, { run_id = "r9", iteration = "3.2" })
    assert.equal("local", b.kind)
    assert.equal("hi\n", assert(b:exec("echo hi", { timeout = 5 })).stdout)
    assert.equal(0, assert(b:spawn({ "true" }, { iteration = "4.1" })):wait().code)
    assert.same({ timeout = 5, run_id = "r9", iteration = "3.2" }, got[1])
    assert.same({ run_id = "r9", iteration = "4.1" }, got[2])   -- the caller's own wins
    assert.is_true(b:check(H.tmpdir()))
    assert.matches("beat.executor.bind: ex must be an executor", errmsg(beat.executor.bind, {}, {}))
  end)
end)

describe("beat.slurm options", function()
  it("is beat.executor.slurm, and builds without talking to a cluster", function()
    local ex = beat.slurm { partition = "gpu", gres = "gpu:1", cpus = 4, mem = "8G", time = "2h",
      account = "lab", qos = "high", extra = { "--exclusive" } }
    assert.equal("slurm", ex.kind)
    assert.equal("slurm", beat.executor.slurm {}.kind)
    assert.same({ "--partition=gpu", "--account=lab", "--qos=high", "--gres=gpu:1",
      "--cpus-per-task=4", "--mem=8G", "--time=0-02:00:00", "--exclusive" }, ex.args)
  end)

  it("rejects bad options with one message naming the option", function()
    local cases = {
      { { cpus = 0 }, "beat.slurm: opts.cpus must be a positive integer, got 0" },
      { { cpus = 1.5 }, "beat.slurm: opts.cpus must be a positive integer, got 1.5" },
      { { mem = "lots" }, 'beat.slurm: opts.mem must be megabytes (a positive integer) or a size like "4G", got "lots"' },
      { { mem = 0 }, "beat.slurm: opts.mem must be megabytes" },
      { { time = "soon" }, "beat.slurm: opts.time must be a duration" },
      { { time = 0 }, "beat.slurm: opts.time must be more than 0, got 0" },
      { { partition = "" }, "beat.slurm: opts.partition must be a non-empty string without spaces, got \"\"" },
      { { partition = "a b" }, "beat.slurm: opts.partition must be a non-empty string" },
      { { gres = 1 }, "beat.slurm: opts.gres must be a non-empty string" },
      { { extra = "--exclusive" }, "beat.slurm: opts.extra must be a list of srun arguments, got string" },
      { { extra = { "--a", 2 } }, "beat.slurm: opts.extra[2] must be a non-empty string, got 2" },
      { { queue_timeout = "x" }, "beat.slurm: opts.queue_timeout must be a duration" },
      { { nodes = 2 }, "beat.slurm: unknown option opts.nodes" },
    }
    for _, case in ipairs(cases) do
      local msg = errmsg(beat.slurm, case[1])
      assert.is_truthy(msg:find(case[2], 1, true), msg)
    end
    -- the message points at the caller's line
    local ok, err = pcall(function()
      local x = beat.slurm { cpus = -1 }
      return x
    end)
    assert.is_false(ok)
    assert.matches("executor_spec%.lua:%d+: beat%.slurm: opts%.cpus", err)
  end)
end)

local available, why = cluster.available()
if not available then
  describe("beat.slurm on a real cluster #slurm", function()
    pending("skipped: " .. why)
  end)
  return
end

describe("beat.slurm on a real cluster #slurm", function()
  local c, ex

  setup(function()
    c = assert(cluster.start { cpus = 8 })
    ex = beat.slurm { conf = c.conf }
  end)

  teardown(function()
    if c then
      c:stop()
      -- stopped by pid: no daemon or step of this cluster is left (the
      -- bound is loose: slurmd ends its steps on its own time on a loaded machine)
      assert.same({}, H.wait_gone(c.conf, 15))
      assert.same({}, H.wait_gone(c.dir .. "/munge", 15))
      assert.same({}, H.wait_gone("slurmstepd", 15))
    end
  end)

  after_each(function()
    if c then assert.same({}, c:wait_empty(10)) end
  end)

  -- A command that runs `sleep m` once it is running on the node (srun's own
  -- command line also holds m, so "a process with m" does not mean the job
  -- started); returns it and a function waiting until the job runs.
  local function sleeper(m)
    local file = H.tmpdir() .. "/started"
    return ("echo $SLURM_JOB_ID > %s; exec sleep %s"):format(file, m), function()
      return wait_file(file, 15)
    end
  end

  it("runs a command as a job named beat-<run>-<iteration> in the given directory", function()
    local dir = H.tmpdir()
    local r = assert(ex:exec('pwd; echo "$SLURM_JOB_NAME $SLURM_JOB_PARTITION"',
      { cwd = dir, run_id = "run1", iteration = 3, candidate = 2 }))
    assert.equal(0, r.code, r.stderr)
    assert.equal(dir .. "\n" .. "beat-run1-3.2 " .. c.partition .. "\n", r.stdout)
    assert.equal("beat-run1-3.2", r.job_name)
    assert.matches("^%d+$", r.job_id)
    assert.equal(c.node, r.node)
    assert.equal("slurm", r.executor)
    assert.equal(1, r.attempts)
    assert.is_nil(r.infra_error)
  end)

  it("passes cpus, mem, time, partition and extra arguments to srun", function()
    local ex2 = beat.slurm { conf = c.conf, partition = c.partition, cpus = 2, mem = 100,
      time = "90s", extra = { "--comment=beat-test" } }
    local r = assert(ex2:exec('echo "$SLURM_CPUS_PER_TASK"; squeue -h -j "$SLURM_JOB_ID" -o "%P %m %l %k"'))
    assert.equal(0, r.code, r.stderr)
    -- Slurm rounds time limits up to whole minutes
    assert.equal("2\n" .. c.partition .. " 100M 2:00 beat-test\n", r.stdout)
  end)

  it("passes env to the command, and only env with clear_env", function()
    local r = assert(ex:exec('echo "$BEAT_X|${HOME:+home}"', { env = { BEAT_X = "a b" } }))
    assert.equal("a b|home\n", r.stdout)
    r = assert(ex:exec('echo "$BEAT_X|${HOME:+home}"', { env = { BEAT_X = "c" }, clear_env = true }))
    assert.equal("c|\n", r.stdout)
  end)

  it("streams output back line by line while the job runs, keeping Slurm's lines out of stderr", function()
    local seen = {}
    local r = assert(ex:exec("echo one; echo warn >&2; sleep 1; echo two; exit 4", {
      stdout = function(line) seen[#seen + 1] = { line, beat.clock() } end,
    }))
    assert.equal(4, r.code)
    assert.equal("one", seen[1][1])
    assert.equal("two", seen[2][1])
    -- "one" arrived while the command still slept (1 s apart; loose for a busy machine)
    assert.is_true(seen[2][2] - seen[1][2] > 0.5)
    assert.equal("warn\n", r.stderr)
    assert.is_nil(r.stdout)
    -- srun's own "task 0: Exited with exit code 4" is kept aside, in r.slurm
    assert.matches("Exited with exit code 4", table.concat(r.slurm, "\n"))
  end)

  it("feeds stdin to the command and caps captured stderr like beat.exec, keeping head and tail", function()
    local r = assert(ex:exec({ "cat" }, { stdin = "fed\n" }))
    assert.equal("fed\n", r.stdout)
    r = assert(ex:exec("seq 1 20000 >&2", { max_output = 1000 }))
    assert.equal(0, r.code)
    assert.is_true(r.truncated)
    assert.equal("1\n2\n3\n", r.stderr:sub(1, 6))
    assert.equal("19999\n20000\n", r.stderr:sub(-12))
    assert.matches("bytes truncated", r.stderr)
    assert.is_true(#r.stderr < 1100)
    assert.equal(#("\n"):rep(20000) + #table.concat((function()
      local t = {} for i = 1, 20000 do t[i] = tostring(i) end return t end)()), r.stderr_bytes)
  end)

  it("writes stdout and stderr to one file, line by line in order", function()
    local dir = H.tmpdir()
    local log = dir .. "/eval.log"
    local r = assert(ex:exec("echo a; echo b >&2; sleep 0.2; echo c", { stdout = log, stderr = log }))
    assert.equal(0, r.code)
    local text = H.read(log)
    assert.is_truthy(text == "a\nb\nc\n" or text == "b\na\nc\n", text)
  end)

  it("returns the command's exit code, and 128+N with the signal for one killed by signal N", function()
    local r = assert(ex:exec("exit 7"))
    assert.equal(7, r.code)
    assert.equal(0, r.signal)
    r = assert(ex:exec("exit 137"))
    assert.equal(137, r.code)
    assert.equal(0, r.signal)
    r = assert(ex:exec("kill -KILL $$"))
    assert.equal(137, r.code)
    assert.equal(9, r.signal)
    assert.is_nil(r.infra_error)
    r = assert(ex:exec({ "no-such-command-beat" }))
    assert.equal(127, r.code)
    assert.is_nil(r.infra_error)
  end)

  it("runs 4 evals of sleep 1 at once in under 2.5 s", function()
    -- the node declares 8 CPUs on this 2-core machine, so the 4 jobs run
    -- side by side; srun costs ~40 ms each on an idle machine. 2.5 s leaves
    -- room for a loaded machine while still failing if they ran in series (4 s).
    local t0 = beat.clock()
    local tasks = {}
    for i = 1, 4 do
      tasks[i] = beat.go(function() return ex:exec({ "sleep", "1" }, { run_id = "par", iteration = i }) end)
    end
    local results = beat.all(tasks)
    local elapsed = beat.clock() - t0
    for i = 1, 4 do assert.equal(0, results[i].code, results[i].stderr) end
    assert.is_true(elapsed < 2.5, ("took %.2f s"):format(elapsed))
  end)

  it("ends a job that times out: code 124, the job cancelled, no process left", function()
    local m = H.marker()
    local r = assert(ex:exec({ "sleep", m }, { timeout = 0.5 }))
    assert.equal(124, r.code)
    assert.is_true(r.timed_out)
    assert.is_nil(r.infra_error)
    assert.same({}, c:queue())      -- already gone when exec returns
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("counts the timeout from the start of the command, not from its submission", function()
    local big = beat.slurm { conf = c.conf, cpus = c.cpus }
    local blocker = assert(big:spawn({ "sleep", "1.5" }))
    while #c:queue() == 0 do beat.sleep(0.05) end
    local r = assert(big:exec({ "sleep", "0.2" }, { timeout = 1 }))
    assert.equal(0, r.code, r.stderr)
    assert.is_false(r.timed_out)
    assert.is_true(r.queued > 0.8, ("queued %.2f s"):format(r.queued))
    assert.equal(0, blocker:wait().code)
  end)

  it("gives up on a job still queued after queue_timeout, as an infra_error", function()
    local big = beat.slurm { conf = c.conf, cpus = c.cpus, queue_timeout = 0.5 }
    local blocker = assert(big:spawn({ "sleep", "30" }))
    while #c:queue() == 0 do beat.sleep(0.05) end
    local r = assert(big:exec({ "true" }))
    assert.matches("still queued after 0.5s", r.infra_error)
    blocker:kill()
    blocker:wait()
  end)

  it("cancelling the task mid-run leaves no job and no process", function()
    local m = H.marker()
    local cmd, started = sleeper(m)
    local t = beat.go(function() return ex:exec(cmd, { run_id = "cx", iteration = 1, timeout = 60 }) end)
    started()
    t:cancel()
    local ok, err = t:join()
    assert.is_false(ok)
    assert.is_true(beat.is_cancelled(err))
    assert.same({}, c:queue())
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("cancelling the task while its job is still queued leaves no job", function()
    local big = beat.slurm { conf = c.conf, cpus = c.cpus }
    local blocker = assert(big:spawn({ "sleep", "30" }, { run_id = "blk", iteration = 1 }))
    while #c:queue() == 0 do beat.sleep(0.05) end
    local t = beat.go(function() return big:exec({ "true" }, { run_id = "cq", iteration = 1 }) end)
    while #c:queue() < 2 do beat.sleep(0.05) end
    t:cancel()
    assert.is_false(t:join())
    local left = c:queue()
    assert.equal(1, #left)
    assert.matches("beat%-blk%-1", left[1])
    blocker:kill()
    blocker:wait()
  end)

  it("Ctrl-C of a beat running a job leaves no job and no process", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local cmd, started = sleeper(m)
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      local ex = beat.slurm { conf = %q }
      local f = io.open(%q, "w"); f:write(beat.pid()); f:close()
      ex:exec(%q, { run_id = "ctrlc", iteration = 1, timeout = 60 })
    ]]):format(c.conf, dir .. "/pid", cmd))
    local p = assert(beat.spawn({ H.bin, "run", recipe }, { grace = 10 }))
    local pid = wait_file(dir .. "/pid")
    started()
    beat.exec { "kill", "-INT", pid }
    local r = assert(p:wait(20))
    assert.equal(130, r.code, r.stderr)
    assert.same({}, c:queue())
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("kill() of a spawned job cancels it and wait() returns once it has left the queue", function()
    local m = H.marker()
    local cmd, started = sleeper(m)
    local p = assert(ex:spawn(cmd, { run_id = "k", iteration = 1, timeout = 60 }))
    started()
    assert.is_true(p:kill())
    local r = p:wait()
    assert.is_true(r.code ~= 0)
    assert.is_nil(r.infra_error)
    assert.same({}, c:queue())
    assert.same({}, H.wait_gone(m, 3))
    assert.is_false(p:kill())
  end)

  it("reports a job scancelled from outside as an infra_error, not the command's failure", function()
    local m = H.marker()
    local cmd, started = sleeper(m)
    local t = beat.go(function()
      return ex:exec(cmd, { run_id = "ext", iteration = 7, timeout = 60 })
    end)
    local id = started():match("%d+")
    c:run { "scancel", id }
    local r = t:wait()
    assert.matches("^job %d+ was cancelled outside beat", r.infra_error or "", nil, nil,
      ("code %d, slurm said:\n%s"):format(r.code, table.concat(r.slurm, "\n")))
    assert.equal("cancelled", r.infra)
    assert.equal(1, r.attempts)
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("reports a scancel as an infra_error even when the command traps SIGTERM and exits 1", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local t = beat.go(function()
      return ex:exec(("trap 'exit 1' TERM; echo $SLURM_JOB_ID > %s/started; sleep %s & wait")
        :format(dir, m), { run_id = "ext", iteration = 8, timeout = 60 })
    end)
    local id = wait_file(dir .. "/started", 15):match("%d+")
    c:run { "scancel", id }
    local r = t:wait()
    assert.equal("cancelled", r.infra, ("code %d, slurm said:\n%s"):format(r.code, table.concat(r.slurm, "\n")))
    assert.equal("CANCELLED", r.slurm_state)
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("retries a command once after a node failure, and reports a second failure as infra_error", function()
    local dir = H.tmpdir()
    local down = ("scontrol update nodename=%s state=down reason=beat-test; sleep 30"):format(c.node)
    local r = assert(ex:exec(("if [ -e first ]; then echo second; else touch first; %s; fi"):format(down),
      { cwd = dir }))
    assert.equal(0, r.code, r.stderr)
    assert.equal("second\n", r.stdout)
    assert.equal(2, r.attempts)
    assert.matches("^node failure on " .. c.node, r.retried)
    assert.is_nil(r.infra_error)
    c:wait_empty(10)
    r = assert(ex:exec(down))
    assert.equal(2, r.attempts)
    assert.matches("^node failure on " .. c.node, r.infra_error)
    assert.equal("node_failure", r.infra)
  end)

  it("reports a request Slurm refuses as an infra_error with srun's reason", function()
    local r = assert(beat.slurm({ conf = c.conf, gres = "gpu:1" }):exec({ "true" }))
    assert.equal("srun: Invalid generic resource (gres) specification", r.infra_error)
    assert.equal("refused", r.infra)
    r = assert(beat.slurm({ conf = c.conf, partition = "nope" }):exec({ "true" }))
    assert.matches("^srun: .*[Pp]artition", r.infra_error)
  end)

  it("returns nil and a reason for a cwd that does not exist here", function()
    local r, err = ex:exec({ "true" }, { cwd = "/nonexistent/beat-wt" })
    assert.is_nil(r)
    assert.equal("beat.slurm: cwd /nonexistent/beat-wt: no such directory", err)
  end)

  it("checks that a node sees the work tree, with one line when it does not", function()
    assert.is_true(ex:check(H.tmpdir()))
    if not c.private then
      pending("unshare(1) is not permitted here: no directory hidden from the node")
      return
    end
    -- the node sees an empty tmpfs at c.private: another filesystem, same path
    local ok, err = ex:check(c.private)
    assert.is_nil(ok)
    assert.equal(("beat.slurm: work tree %s on node %s is not the one beat sees (the marker " ..
      "beat wrote is not there); it must be on a filesystem the compute nodes share")
      :format(c.private, c.node), err)
    assert.is_nil(err:find("\n"))
    -- a directory that does not exist at all on the node
    local wt = c.private .. "/wt"
    assert(beat.fs.mkdir_p(wt))
    ok, err = ex:check(wt)
    assert.equal(("beat.slurm: work tree %s is not visible on node %s; it must be on a " ..
      "filesystem the compute nodes share"):format(wt, c.node), err)
    assert.same({}, beat.fs.list(wt))      -- the marker was removed
  end)

  it("never runs a command in another directory when the node cannot see its cwd", function()
    if not c.private then
      pending("unshare(1) is not permitted here: no directory hidden from the node")
      return
    end
    local wt = c.private .. "/wt2"
    assert(beat.fs.mkdir_p(wt))
    local ran = H.tmpdir() .. "/ran"
    local r = assert(ex:exec(("pwd; touch %s"):format(ran), { cwd = wt }))
    assert.equal("worktree", r.infra)
    assert.equal(("work tree %s is not visible on %s"):format(wt, c.node), r.infra_error)
    assert.equal("", r.stdout)
    assert.is_false(beat.fs.exists(ran))      -- not run at all (slurmstepd alone would use /tmp)
  end)

  it("cleanup(run_id) cancels what a run killed with SIGKILL left in the queue, and no other job", function()
    local dir = H.tmpdir()
    local big = beat.slurm { conf = c.conf, cpus = c.cpus }
    local blocker = assert(big:spawn({ "sleep", "60" }, { run_id = "other", iteration = 1 }))
    while #c:queue() == 0 do beat.sleep(0.05) end
    -- jobs of run dead1 with no srun left at all (as after a crash of the
    -- login node), queued behind the blocker
    for i = 8, 9 do
      c:run { "sbatch", "--job-name=beat-dead1-" .. i, "--cpus-per-task=" .. c.cpus, "--output=/dev/null",
        "--wrap=sleep 60" }
    end
    -- and a beat running dead1 killed with SIGKILL while its two jobs wait
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      local ex = beat.slurm { conf = %q, cpus = %d }
      local procs = {}
      for i = 1, 2 do procs[i] = assert(ex:spawn({ "true" }, { run_id = "dead1", iteration = i })) end
      while not (procs[1].job_id and procs[2].job_id) do beat.sleep(0.02) end
      local f = io.open(%q, "w"); f:write(beat.pid()); f:close()
      for _, p in ipairs(procs) do p:wait() end
    ]]):format(c.conf, c.cpus, dir .. "/pid"))
    local p = assert(beat.spawn { H.bin, "run", recipe })
    local pid = wait_file(dir .. "/pid")
    beat.exec { "kill", "-KILL", pid }
    assert.equal(137, p:wait().code)
    -- whether Slurm dropped the jobs of the killed srun depends on the
    -- moment it died; the sbatch ones stay until someone cancels them
    local dead = {}
    for _, line in ipairs(c:queue()) do
      local name = line:match("^%S+ (%S+)")
      if name:match("^beat%-dead1%-") then dead[#dead + 1] = name end
    end
    assert.is_true(#dead >= 2, table.concat(c:queue(), "\n"))
    assert.equal(#dead, ex:cleanup("dead1"))
    local left = c:queue()
    assert.equal(1, #left, table.concat(left, "\n"))
    assert.matches("beat%-other%-1 RUNNING", left[1])
    assert.equal(0, ex:cleanup("dead1"))
    blocker:kill()
    blocker:wait()
  end)

end)
