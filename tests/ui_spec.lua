-- beat.ui: the live view of a run — a status line on a terminal (driven
-- through a real pty: tmux, and script(1) for the raw bytes), plain lines
-- in a pipe, --json events, -q.
local beat = require "beat"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local SLOW = "sh " .. H.root .. "/tests/fixtures/loop/slow-set.sh"

local function repo()
  return H.git_repo { ["value.txt"] = "100\n" }
end

-- A tmux server of its own, in the foreground under beat.spawn so nothing
-- outlives the test; one session running cmd in a pane of w x h.
local function tmux_session(cmd, w, h)
  local sock = ("beat-ui-%d-%d"):format(beat.pid(), math.random(1e6))
  local function tmux(...)
    return assert(beat.exec { "tmux", "-L", sock, ... })
  end
  local server = assert(beat.spawn({ "tmux", "-L", sock, "-D" }, { grace = 0.2 }))
  local deadline = beat.clock() + 5
  while not beat.exec({ "tmux", "-L", sock, "list-sessions" }).stderr:find("no sessions")
    and beat.clock() < deadline do beat.sleep(0.05) end
  tmux("new-session", "-d", "-s", "ui", "-x", tostring(w or 80), "-y", tostring(h or 30), cmd)
  local t = {}
  function t.screen(escapes)
    if escapes then return tmux("capture-pane", "-p", "-e", "-t", "ui").stdout end
    return tmux("capture-pane", "-p", "-t", "ui").stdout
  end
  function t.keys(...) tmux("send-keys", "-t", "ui", ...) end
  function t.resize(cols) tmux("resize-window", "-t", "ui", "-x", tostring(cols)) end
  --- Waits (up to limit s, generous: the machine is busy) for the screen to match pattern.
  function t.wait(pattern, limit, escapes)
    local until_ = beat.clock() + (limit or 20)
    local text
    repeat
      text = t.screen(escapes)
      if text:find(pattern) then return text end
      beat.sleep(0.05)
    until beat.clock() > until_
    error(("screen never showed %q:\n%s"):format(pattern, text))
  end
  function t.close()
    beat.exec { "tmux", "-L", sock, "kill-server" }
    server:kill()
  end
  return t
end

-- The line of the screen holding the status line (a spinner, then "iter i/N" or "baseline").
local function status_line(text)
  for line in text:gmatch("[^\n]+") do
    if line:match("^%S+ iter %d+/%d+ ") or line:match("^%S+ baseline ") then return line end
  end
end

local function loop_cmd(dir, args, env)
  local parts = { "cd", dir, "&&", "env" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = ("%s='%s'"):format(k, v) end
  parts[#parts + 1] = H.bin
  parts[#parts + 1] = "loop"
  for _, a in ipairs(args) do parts[#parts + 1] = "'" .. a .. "'" end
  return table.concat(parts, " ") .. "; echo LOOP-EXITED-$?; sleep 60"
end

describe("the status line on a terminal", function()
  it("updates while a 2 s agent runs, shows the phase and fits the width, and is gone after the run", function()
    local dir = repo()
    local t = tmux_session(loop_cmd(dir, { "lower", "--eval", "cat value.txt", "-a", SLOW,
      "--max-iterations", "2" }, { SLEEP = "2" }), 80, 30)
    finally(t.close)
    local first = t.wait("iter 1/2 agent 0s")
    local line = status_line(first)
    assert.matches("best score 100", line)
    assert.matches("last baseline", line)
    assert.is_true(utf8.len(line) < 80, line)
    -- the same iteration a second later: the phase's clock moved (redrawn in place)
    local later = t.wait("iter 1/2 agent 1s")
    assert.equal(1, select(2, later:gsub("iter 1/2 agent", "")))   -- one status line, not a new one each time
    -- SIGWINCH: a narrower terminal gets a shorter line
    t.resize(50)
    local narrow = t.wait("iter 2/2 agent")
    local nl = status_line(narrow)
    assert.is_true(utf8.len(nl) < 50, nl)
    local done = t.wait("LOOP%-EXITED%-0")
    assert.is_nil(status_line(done), done)
    assert.matches("iter 1   keep", done)
    assert.matches("completed: 2 iterations done", done)
    -- nothing of the status line is left over anywhere on the screen
    assert.is_nil(done:find(" agent %ds"), done)
  end)

  it("is erased on Ctrl-C: the interrupt message and the summary stand on clean lines", function()
    local dir = repo()
    local t = tmux_session(loop_cmd(dir, { "lower", "--eval", "cat value.txt", "-a", SLOW,
      "--max-iterations", "3" }, { SLEEP = "30" }), 80, 30)
    finally(t.close)
    t.wait("iter 1/3 agent")
    t.keys("C-c")
    local done = t.wait("LOOP%-EXITED%-130")
    assert.is_nil(status_line(done), done)
    assert.matches("\nbeat: interrupted, stopping", done)      -- at the start of its own line
    assert.matches("\ninterrupted: interrupted by a signal", done)
    assert.matches("0 iterations in [%d.]+m?s; iteration 1 did not finish", done)
    assert.is_nil(done:find(" agent %ds"), done)
  end)

  it("colours decisions, and not with NO_COLOR set", function()
    local dir = repo()
    local t = tmux_session(loop_cmd(dir, { "lower", "--eval", "cat value.txt", "-a", SET,
      "--max-iterations", "2" }, { VALUES = "90 95" }), 100, 30)
    finally(t.close)
    local coloured = t.wait("LOOP%-EXITED%-0", nil, true)
    assert.matches("\27%[32mkeep", coloured)
    assert.matches("\27%[33mdiscard", coloured)

    local dir2 = repo()
    local t2 = tmux_session(loop_cmd(dir2, { "lower", "--eval", "cat value.txt", "-a", SET,
      "--max-iterations", "2" }, { VALUES = "90 95", NO_COLOR = "1" }), 100, 30)
    finally(t2.close)
    local plain = t2.wait("LOOP%-EXITED%-0", nil, true)
    assert.matches("iter 1   keep", plain)
    assert.is_nil(plain:find("\27[", 1, true), plain)
  end)
end)

-- The raw bytes a terminal would get: script(1) gives beat a pty.
local function through_pty(dir, args, env)
  local cmd = { H.bin, "loop" }
  for _, a in ipairs(args) do cmd[#cmd + 1] = "'" .. a .. "'" end
  local r = assert(beat.exec({ "script", "-qec", table.concat(cmd, " "), "/dev/null" },
    { cwd = dir, env = env }))
  return r
end

describe("plain output", function()
  it("in a pipe has no escape sequences and no redraws: one line per event", function()
    local dir = repo()
    local r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2" },
      { VALUES = "90 95" })
    assert.equal(0, r.code, r.stderr)
    assert.is_nil(r.stdout:find("[\27\r]"), r.stdout)
    assert.matches("\nbaseline  score 100  — the unchanged work tree\n", r.stdout)
    assert.matches("\niter 1: agent running\n", r.stdout)
    assert.matches("\niter 1: eval running\n", r.stdout)
    assert.matches("\niter 1   keep      score 90", r.stdout)
  end)

  it("with --plain on a terminal has no escape sequences either", function()
    local dir = repo()
    local r = through_pty(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2",
      "--plain" }, { VALUES = "90 95" })
    assert.equal(0, r.code, r.stdout)
    assert.matches("iter 2   discard", r.stdout)
    assert.is_nil(r.stdout:find("\27", 1, true), r.stdout)
  end)

  it("on a terminal without --plain redraws (the test above can fail)", function()
    local dir = repo()
    local r = through_pty(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2" },
      { VALUES = "90 95" })
    assert.equal(0, r.code, r.stdout)
    assert.truthy(r.stdout:find("\r\27[K", 1, true), r.stdout)
    assert.truthy(r.stdout:find("\27[32mkeep", 1, true), r.stdout)
  end)

  it("with NO_COLOR on a terminal has no colour", function()
    local dir = repo()
    local r = through_pty(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2" },
      { VALUES = "90 95", NO_COLOR = "1" })
    assert.equal(0, r.code, r.stdout)
    assert.is_nil(r.stdout:find("\27%[[%d;]*m"), r.stdout)
  end)

  it("with -q drops the per-iteration lines and keeps the summary, run id, undo command and journal", function()
    local dir = repo()
    local r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2", "-q" },
      { VALUES = "90 95" })
    assert.equal(0, r.code, r.stderr)
    local _, rundir, id = H.last_run(dir)
    assert.is_nil(r.stdout:find("iter 1", 1, true), r.stdout)
    assert.is_nil(r.stdout:find("running", 1, true), r.stdout)
    assert.matches("completed: 2 iterations done", r.stdout)
    assert.matches("best: score 90 %(baseline: score 100%)", r.stdout)
    assert.matches("undo: beat restore " .. id .. " base", r.stdout)
    assert.matches("journal: " .. rundir:gsub("%p", "%%%0"), r.stdout)
  end)
end)

describe("--json", function()
  it("prints only JSON: one event per line, the journal's records plus phase changes", function()
    local dir = repo()
    local r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "3", "--json" },
      { VALUES = "90 95 80" })
    assert.equal(0, r.code, r.stderr)
    local events, decisions, phases = {}, {}, {}
    for line in r.stdout:gmatch("[^\n]*\n") do
      local ok, ev = pcall(beat.json.decode, line)
      assert.is_true(ok and type(ev) == "table", "not a JSON object: " .. line)
      assert.equal(1, ev.version)
      events[#events + 1] = ev
      if ev.event == "decision" and ev.iteration > 0 then decisions[#decisions + 1] = ev end
      if ev.event == "phase" then phases[ev.phase] = (phases[ev.phase] or 0) + 1 end
    end
    local recs, _, id = H.last_run(dir)
    for _, ev in ipairs(events) do assert.equal(id, ev.run) end
    assert.equal("run_start", events[1].event)
    assert.equal("run_end", events[#events].event)
    assert.same({ 1, 2, 3 }, { decisions[1].iteration, decisions[2].iteration, decisions[3].iteration })
    assert.equal(3, #decisions)
    assert.equal(3, phases.agent)
    assert.equal(4, phases.eval)   -- the baseline and three iterations
    -- every journal record was printed, in order, and the phase changes are journaled too
    assert.equal(#recs, #events)
    for i, rec in ipairs(recs) do assert.equal(rec.event, events[i].event) end
  end)

  it("is refused together with --plain, before anything is written", function()
    local dir = repo()
    local r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--json", "--plain" })
    assert.equal(2, r.code)
    assert.equal("beat: loop: give --json or --plain, not both\n", r.stderr)
    assert.is_nil(beat.fs.stat(dir .. "/.beat"))
  end)

  it("works for beat run of a recipe: --json before FILE", function()
    local dir = repo()
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("optimize") { cwd = %q, agent = beat.agent.named(%q), prompt = "x",
        eval = "cat value.txt", max_iterations = 2 })
    ]]):format(dir, SET))
    local r = H.beat({ "run", "--json", recipe }, { env = { VALUES = "90 95" } })
    assert.equal(0, r.code, r.stderr)
    local n = 0
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = beat.json.decode(line)
      if ev.event == "decision" then n = n + 1 end
    end
    assert.equal(3, n)
  end)
end)

describe("the iteration count", function()
  it("is one number everywhere: summary, run_end and beat runs agree after Ctrl-C", function()
    local dir = repo()
    local p = assert(beat.spawn({ H.bin, "loop", "lower", "--eval", "cat value.txt", "-a", SLOW,
      "--max-iterations", "5" }, { cwd = dir, env = { SLEEP = "1" }, stdout = true }))
    -- wait until iteration 2's agent runs (iteration 1 decided), then interrupt
    local deadline = beat.clock() + 30
    while beat.clock() < deadline do
      local runs = require("beat.journal").list(dir .. "/.beat/runs")
      local j = runs[1] and require("beat.journal").open(runs[1].dir)
      local started = false
      for _, rec in ipairs(j and j:records() or {}) do
        if rec.event == "phase" and rec.phase == "agent" and rec.iteration == 2 then started = true end
      end
      if started then break end
      beat.sleep(0.05)
    end
    p:kill("INT")
    local r = assert(p:wait(20))
    assert.equal(130, r.code)
    assert.matches("\n1 iteration in [^\n]*; iteration 2 did not finish\n", r.stdout)
    local recs, _, id = H.last_run(dir)
    assert.equal(1, recs[#recs].iterations)
    assert.equal(2, recs[#recs].unfinished_iteration)
    local runs = H.beat({ "runs" }, { cwd = dir }).stdout
    assert.matches(id .. "[^\n]* 1 iter", runs)
  end)
end)

describe("what a run says (issue 12)", function()
  local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"

  it("the first retry prompt says the check fails before any change, not 'previous attempt 0'", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local log = H.tmpdir() .. "/prompts"
    local r = H.loop(dir, { "fix the bug", "--until", "grep -q fixed bug.txt", "-a", FIX }, { PROMPT_LOG = log })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local prompts = {}
    for p in H.read(log):gmatch("(.-)\n===\n") do prompts[#prompts + 1] = p end
    assert.equal(3, #prompts)
    assert.matches("^fix the bug\n\nThe check fails before any change: The check exited 1%.", prompts[1])
    assert.is_nil(prompts[1]:find("Previous attempt", 1, true))
    assert.matches("\n\nPrevious attempt %(iteration 1 of 10%): The check exited 1%.", prompts[2])
    assert.matches("\n\nPrevious attempt %(iteration 2 of 10%)", prompts[3])
  end)

  it("labels iteration 0 as the initial check or the baseline, not 'iter 0'", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", FIX })
    assert.equal(0, r.code, r.stderr)
    assert.matches("\ninitial check  fail  — check exited 1 before any change\n", r.stdout)
    assert.is_nil(r.stdout:find("iter 0", 1, true), r.stdout)
    assert.matches("\n3 iterations in ", r.stdout)
    local dir2 = repo()
    local r2 = H.loop(dir2, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "1" },
      { VALUES = "90" })
    assert.matches("\nbaseline  score 100  — the unchanged work tree\n", r2.stdout)
    assert.is_nil(r2.stdout:find("iter 0", 1, true), r2.stdout)
  end)

  it("says 1 iteration, not 1 iterations", function()
    local dir = repo()
    local r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "1" },
      { VALUES = "90" })
    assert.matches("completed: 1 iteration done\n", r.stdout)
    assert.matches("\n1 iteration in ", r.stdout)
    local dir2 = H.git_repo { ["bug.txt"] = "broken\n" }
    local r2 = H.loop(dir2, { "fix", "--until", "grep -q fixed bug.txt", "-a", FIX, "--max-iterations", "1" })
    assert.matches("the check still fails after 1 iteration\n", r2.stdout)
  end)

  it("a failing baseline shows the first error line, the tail of its output and the log's path", function()
    local dir = repo()
    H.write(dir .. "/eval.sh", table.concat({
      "echo 'loader:1228' >&2", "echo '  throw err;' >&2",
      "echo \"Error: Cannot find module './nothere'\" >&2",
      "for i in 1 2 3 4 5 6; do echo \"    at frame $i\" >&2; done",
      "echo 'Node.js v20.20.2' >&2", "exit 1" }, "\n") .. "\n")
    local r = H.loop(dir, { "lower", "--eval", "sh eval.sh", "-a", SET }, { VALUES = "90" })
    assert.equal(1, r.code)
    local _, rundir = H.last_run(dir)
    -- the one-line reason names the cause, not the version line
    assert.matches("failed: the baseline cannot be scored: eval exited 1 %(stderr: Error: Cannot find module './nothere'%)", r.stdout)
    local excerpt = r.stdout:match("the baseline eval's output %((.-)%):\n(.-)\n0 iterations")
    assert.equal(rundir .. "/iter-0/eval.log", excerpt)
    local body = r.stdout:match("the baseline eval's output %(.-%):\n(.-)\n0 iterations")
    assert.equal("  Error: Cannot find module './nothere'\n  …\n      at frame 5\n      at frame 6\n  Node.js v20.20.2", body)
  end)
end)
