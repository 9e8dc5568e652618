-- Loops started and steered through `beat mcp start` by the official
-- TypeScript SDK client (tests/fixtures/mcp-sdk-driver.js, driven a line at a
-- time): CreateLoop, LoopStatus to the end, PauseLoop, ResumeLoop,
-- CancelLoop, and loops that outlive the client and the server.
-- Each spec has a private run index (XDG_STATE_HOME) and sequences its fake
-- agents on fifos (tests/fixtures/control/agent.sh), not on sleeps.
local beat = require "beat"
local H = require "tests.helpers"
local json = require "cjson"

local AGENT = H.root .. "/tests/fixtures/control/agent.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local SDK_DIR = os.getenv("BEAT_MCP_SDK_DIR")
  or ((os.getenv("BEAT_NPM_CACHE") or ((os.getenv("HOME") or "/root") .. "/.cache/beat-npm")) .. "/mcp-sdk-1.32.2")
local NODE = require("beat.exec").which("node")
-- Waits are bounded loosely, only so a broken beat cannot hang the suite.
local WAIT = 60

local missing
if not NODE then
  missing = "node is not installed"
elseif not beat.fs.exists(SDK_DIR .. "/node_modules/@modelcontextprotocol/sdk/package.json") then
  missing = ("the MCP SDK is not installed in %s: run sh tests/fixtures/mcp-install-sdk.sh"):format(SDK_DIR)
end

local procs = require "beat.runs.proc"

-- A private index and a sync directory. Whatever way the spec ends, its
-- SDK clients are closed and no process of its loops is left (detached
-- loops outlive the test by design). busted keeps one finally per spec:
-- other cleanups go in s.cleanups.
local function session()
  local s = { xdg = H.tmpdir(), sync = H.tmpdir(), cleanups = {} }
  s.env = { XDG_STATE_HOME = s.xdg, SYNC = s.sync }
  finally(function()
    for i = #s.cleanups, 1, -1 do pcall(s.cleanups[i]) end
    for _, id in ipairs(beat.fs.list(s.xdg .. "/beat/runs") or {}) do
      local e = json.decode(H.read(("%s/beat/runs/%s/run.json"):format(s.xdg, id)) or "{}")
      local pid = math.tointeger(e.pid)
      if pid and procs.alive { pid = pid, start_time = math.tointeger(e.start_time) } then procs.kill(pid, 9) end
    end
    for _, pid in ipairs(H.pids_with(s.sync)) do procs.kill(pid, 9) end
  end)
  return s
end

local function mkfifo(path)
  assert(beat.exec({ "mkfifo", path }).code == 0)
end

-- Waits for a file to appear.
local function wait_file(path)
  local deadline = beat.clock() + WAIT
  while not beat.fs.exists(path) do
    assert(beat.clock() < deadline, "timed out waiting for " .. path)
    beat.sleep(0.02)
  end
end

-- Writes a line to a fifo a fake agent waits on.
local function release(path)
  assert(beat.exec({ "sh", "-c", 'echo go > "$1"', "_", path }, { timeout = WAIT }).code == 0)
end

-- The SDK client, connected to `beat mcp start` in dir.
local Driver = {}
Driver.__index = Driver

local function connect(s, dir, env)
  local d = setmetatable({ lines = {}, stderr = {}, n = 0 }, Driver)
  local e = {}
  for k, v in pairs(s.env) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = v end
  d.proc = assert(beat.spawn({ NODE, H.root .. "/tests/fixtures/mcp-sdk-driver.js", SDK_DIR, H.bin, dir }, {
    cwd = dir, stdin = true, env = e, max_output = 64 * 1024 * 1024,
    stdout = function(line) d.lines[#d.lines + 1] = json.decode(line) end,
    stderr = function(line) d.stderr[#d.stderr + 1] = line end,
  }))
  d.ready = d:wait(function(m) return m.event == "ready" end)
  assert.same({}, d.ready.schemaErrors)
  s.cleanups[#s.cleanups + 1] = function()
    pcall(d.proc.close_stdin, d.proc)
    if not d.proc:wait(10) then d.proc:kill("KILL") d.proc:wait() end
  end
  return d
end

function Driver:wait(pred)
  local deadline = beat.clock() + WAIT
  while true do
    for _, m in ipairs(self.lines) do if pred(m) then return m end end
    assert(beat.clock() < deadline and not self.proc:done(),
      "the SDK driver did not answer: " .. table.concat(self.stderr, "\n"))
    beat.sleep(0.02)
  end
end

function Driver:send(cmd)
  self.n = self.n + 1
  cmd.id = self.n
  assert(self.proc:write(json.encode(cmd) .. "\n"))
  local id = self.n
  return self:wait(function(m) return m.id == id end)
end

-- Calls a tool; checks that the structured result matches the output schema.
function Driver:call(name, args)
  local r = self:send { op = "call", name = name, arguments = args or {} }
  assert.is_nil(r.exception, name .. ": " .. tostring(r.exception))
  if not r.isError then
    assert.is_true(r.valid, name .. ": " .. json.encode(r.validationErrors or {}))
  end
  return r
end

-- A tool's structured result (asserting it is not a tool error).
function Driver:ok(name, args)
  local r = self:call(name, args)
  assert.is_false(r.isError, name .. ": " .. tostring(r.text and r.text[1]))
  return r.structuredContent
end

-- Polls LoopStatus until pred(loop) holds.
function Driver:until_loop(id, pred)
  local deadline = beat.clock() + WAIT
  while true do
    local loop = self:ok("LoopStatus", { loopId = id }).loop
    if pred(loop) then return loop end
    assert(beat.clock() < deadline, ("timed out; loop %s is %s (%s)"):format(id, loop.status, loop.phase))
    beat.sleep(0.1)
  end
end

local function journal(dir, id)
  local j = assert(require("beat.journal").open(dir .. "/.beat/runs/" .. id))
  return (j:records())
end

-- Processes below pid (its whole tree), pid included.
local function tree(pid)
  local kids = {}
  for _, st in ipairs(procs.all()) do
    kids[st.ppid] = kids[st.ppid] or {}
    table.insert(kids[st.ppid], st.pid)
  end
  local out, queue = {}, { procs.stat(pid) and pid or nil }
  while #queue > 0 do
    local p = table.remove(queue)
    out[#out + 1] = p
    for _, c in ipairs(kids[p] or {}) do queue[#queue + 1] = c end
  end
  return out
end

describe("beat mcp start steered by the official TypeScript SDK client", function()
  it("runs a retry loop and an optimize loop with CreateLoop and follows them with LoopStatus to the end", function()
    if missing then return pending(missing) end
    local s = session()
    local retry_dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local opt_dir = H.git_repo { ["value.txt"] = "10\n" }
    local d = connect(s, retry_dir, { VALUES = "8 9 5" })
    assert.same({ "CreateLoop", "LoopStatus", "ListLoops", "PauseLoop", "ResumeLoop", "CancelLoop", "RunRecipe",
      "LoopReport", "LoopDiff" }, d.ready.tools)

    local retry = d:ok("CreateLoop", { prompt = "fix the bug", strategy = "retry", exitCondition = "grep -q fixed bug.txt",
      agent = FIX, maxIterations = 5 })
    assert.is_true(retry.success)
    assert.matches("^%w+$", retry.loopId)
    assert.equal(beat.fs.realpath(retry_dir), retry.workingDirectory)
    local opt = d:ok("CreateLoop", { prompt = "lower it", strategy = "optimize", exitCondition = "cat value.txt",
      agent = SET, maxIterations = 3, workingDirectory = opt_dir, cooldownMs = 10 })
    assert.is_true(opt.success)
    assert.equal(beat.fs.realpath(opt_dir), opt.workingDirectory)

    local done = function(l) return not l.alive and l.status ~= "starting" end
    local r = d:until_loop(retry.loopId, done)
    assert.same({ "passed", 3, "finished", 0 }, { r.status, r.currentIteration, r.phase, r.consecutiveFailures })
    local o = d:until_loop(opt.loopId, done)
    assert.same({ "completed", 3, 5, 10, "score 5", 3 }, { o.status, o.currentIteration, o.bestScore, o.baselineScore,
      o.bestScoreText, o.maxIterations })
    assert.same({ filesChanged = 1, insertions = 1, deletions = 1 }, o.diffStat)
    assert.is_true(o.detached)

    -- the work trees hold the results; the journals say how the loops were started
    assert.equal("fixed\n", H.read(retry_dir .. "/bug.txt"))
    assert.equal("5\n", H.read(opt_dir .. "/value.txt"))
    local recs = journal(retry_dir, retry.loopId)
    assert.same({ "loop", true }, { recs[1].origin.kind, recs[1].detached })
    assert.equal("passed", recs[#recs].status)
    assert.equal(4, #H.events(recs, "decision"))   -- the first check, then iterations 1-3
    recs = journal(opt_dir, opt.loopId)
    assert.same({ "cat value.txt", "minimize", 0.01 }, { recs[1].config.eval, recs[1].config.direction, recs[1].config.cooldown })
    assert.equal("completed", recs[#recs].status)

    -- every loop of the index, newest first; one work tree's with workingDirectory
    local list = d:ok("ListLoops", {})
    assert.same({ 2, opt.loopId, retry.loopId }, { list.count, list.loops[1].id, list.loops[2].id })
    assert.same({ 1, retry.loopId }, { d:ok("ListLoops", { workingDirectory = retry_dir }).count,
      d:ok("ListLoops", { workingDirectory = retry_dir }).loops[1].id })
    assert.equal(1, d:ok("ListLoops", { status = "passed" }).count)
    assert.equal(2, d:ok("ListLoops", { status = "completed" }).count)   -- Backbeat's name matches passed too

    local st = d:ok("LoopStatus", { loopId = opt.loopId, includeHistory = true, historyLimit = 2 })
    assert.same({ 2, 3 }, { st.iterations[1].iterationNumber, st.iterations[2].iterationNumber })
    assert.same({ "discard", 9, 0 }, { st.iterations[1].status, st.iterations[1].score, st.iterations[1].exitCode })
    local diff = d:ok("LoopDiff", { loopId = opt.loopId })
    assert.same({ "value.txt", "modified" }, { diff.files[1].path, diff.files[1].status })
    local report = d:ok("LoopReport", { loopId = opt.loopId, format = "svg" })
    assert.matches("score per iteration, lower is better", report.text, 1, true)
    assert.equal(opt_dir .. "/.beat/runs/" .. opt.loopId .. "/report.svg", report.svgPath)
    assert.matches("^<%?xml[^\n]*\n<svg", H.read(report.svgPath))
    assert.equal(0, d:send { op = "close" }.exitCode)
  end)

  it("pauses, resumes and cancels a loop; a second CreateLoop on its work tree is a tool error naming it", function()
    if missing then return pending(missing) end
    local s = session()
    local dir = H.git_repo { ["value.txt"] = "10\n", ["log.txt"] = "" }
    mkfifo(s.sync .. "/go-agent-1")
    mkfifo(s.sync .. "/go-agent-2")
    local d = connect(s, dir, { VALUES = "5 4 3" })
    local c = d:ok("CreateLoop", { prompt = "lower it", strategy = "optimize", exitCondition = "cat value.txt",
      agent = AGENT, maxIterations = 3 })
    local id = c.loopId
    wait_file(s.sync .. "/held-agent-1")

    local busy = d:call("CreateLoop", { prompt = "another", strategy = "retry", exitCondition = "true", agent = AGENT })
    assert.is_true(busy.isError)
    assert.matches(("^CreateLoop: the work tree %s is in use by loop %s %%(pid %%d+%%)"):format(
      beat.fs.realpath(dir):gsub("%p", "%%%0"), id), busy.text[1])
    assert.equal(1, #require("beat.journal").list(dir .. "/.beat/runs"))   -- nothing was started

    local loop = d:ok("LoopStatus", { loopId = id }).loop
    assert.same({ "running", "agent", 1, true }, { loop.status, loop.phase, loop.currentIteration, loop.alive })
    local pid = math.tointeger(loop.pid)

    -- pause: iteration 1 is decided, then nothing of the loop runs
    local p = d:ok("PauseLoop", { loopId = id })
    assert.same({ true, "running", false, true }, { p.success, p.status, p.force, p.pauseRequested })
    assert.is_true(d:ok("LoopStatus", { loopId = id }).loop.pauseRequested)
    release(s.sync .. "/go-agent-1")
    loop = d:until_loop(id, function(l) return l.status == "paused" end)
    assert.same({ "paused", true }, { loop.phase, loop.alive })
    assert.same({ pid }, tree(pid))                      -- its process waits with nothing below it
    assert.is_false(beat.fs.exists(s.sync .. "/held-agent-2"))
    assert.equal(2, #H.events(journal(dir, id), "decision"))
    assert.is_true(d:call("PauseLoop", { loopId = id }).isError)   -- already paused

    -- resume: the same process goes on with iteration 2
    local res = d:ok("ResumeLoop", { loopId = id })
    assert.same({ "request", pid }, { res.resumedBy, math.tointeger(res.pid) })
    wait_file(s.sync .. "/held-agent-2")

    -- force: iteration 2 ends now, the process exits; resuming starts a new one
    p = d:ok("PauseLoop", { loopId = id, force = true })
    assert.is_true(p.force)
    loop = d:until_loop(id, function(l) return l.status == "paused" and not l.alive end)
    assert.same({}, H.pids_with(s.sync))                 -- the held agent was ended
    assert.is_true(loop.resumable)
    os.remove(s.sync .. "/held-agent-2")
    res = d:ok("ResumeLoop", { loopId = id })
    assert.equal("process", res.resumedBy)
    local new_pid = math.tointeger(res.pid)
    assert.is_true(new_pid ~= pid)
    wait_file(s.sync .. "/held-agent-2")                 -- iteration 2 runs again

    -- cancel: the agent is ended, the work tree is at the best snapshot, the journal says why
    local cancel = d:ok("CancelLoop", { loopId = id, reason = "good enough" })
    assert.same({ "cancelled", "good enough" }, { cancel.status, cancel.reason })
    assert.same({}, H.pids_with(s.sync))
    assert.is_false(procs.alive { pid = new_pid })
    assert.equal("5\n", H.read(dir .. "/value.txt"))     -- iteration 1's, kept
    assert.equal("iteration 1\n", H.read(dir .. "/log.txt"))
    local recs = journal(dir, id)
    assert.same({ "run_end", "cancelled", "good enough" }, { recs[#recs].event, recs[#recs].status, recs[#recs].reason })
    local again = d:call("CancelLoop", { loopId = id })
    assert.is_true(again.isError)
    assert.equal(("CancelLoop: loop %s has ended (cancelled): nothing to cancel"):format(id), again.text[1])
    assert.equal(0, d:send { op = "close" }.exitCode)
  end)

  it("leaves a loop running when the client closes and when the server is killed; it finishes on its own and a new server sees it", function()
    if missing then return pending(missing) end
    local s = session()
    local dir = H.git_repo { ["value.txt"] = "10\n", ["log.txt"] = "" }
    mkfifo(s.sync .. "/go-agent-1")
    local d = connect(s, dir, { VALUES = "7 6" })
    local c = d:ok("CreateLoop", { prompt = "lower it", strategy = "optimize", exitCondition = "cat value.txt",
      agent = AGENT, maxIterations = 2 })
    wait_file(s.sync .. "/held-agent-1")
    local server = math.tointeger(d.ready.pid)
    local loop_pid = math.tointeger(d:ok("LoopStatus", { loopId = c.loopId }).loop.pid)
    -- not a descendant of the server: its own session, another parent
    local lst, sst = procs.stat(loop_pid), procs.stat(server)
    assert.is_true(lst.ppid ~= server and lst.session ~= sst.session)

    local closed = d:send { op = "close" }
    assert.same({ 0, json.null, true }, { closed.exitCode, closed.signal, closed.serverGone })
    assert.same({}, tree(server))                        -- nothing of the server is left
    assert.is_true(procs.alive { pid = loop_pid })

    -- a new server, started elsewhere, finds it through the index; SIGTERM ends that server, not the loop
    local d2 = connect(s, H.tmpdir())
    local loop = d2:ok("LoopStatus", { loopId = c.loopId }).loop
    assert.same({ "running", "agent", loop_pid }, { loop.status, loop.phase, loop.pid })
    assert.equal(c.loopId, d2:ok("ListLoops", { status = "running" }).loops[1].id)
    local killed = d2:send { op = "kill", signal = "SIGTERM" }
    assert.same({ 0, json.null, true }, { killed.exitCode, killed.signal, killed.serverGone })
    assert.is_true(procs.alive { pid = loop_pid })

    -- the loop goes on by itself
    release(s.sync .. "/go-agent-1")
    local d3 = connect(s, H.tmpdir())
    loop = d3:until_loop(c.loopId, function(l) return not l.alive end)
    assert.same({ "completed", 2, 6 }, { loop.status, loop.currentIteration, loop.bestScore })
    assert.equal("6\n", H.read(dir .. "/value.txt"))
    assert.equal(0, d3:send { op = "close" }.exitCode)
  end)

  it("runs a recipe detached with RunRecipe, with its arguments and --set options", function()
    if missing then return pending(missing) end
    local s = session()
    local dir = H.git_repo { ["value.txt"] = "10\n", ["lower.lua"] = ([[
      local beat = require "beat"
      return beat.strategy("optimize") {
        agent = beat.agent.command { argv = { "sh", %q, "{prompt}" } },
        prompt = arg[1], eval = "cat value.txt", max_iterations = 5,
      }
    ]]):format(H.root .. "/tests/fixtures/loop/set-value.sh") }
    local d = connect(s, dir, { VALUES = "8 6 7 2 1" })
    local r = d:ok("RunRecipe", { recipe = "lower.lua", args = { "lower it" }, set = { max_iterations = 2 } })
    assert.same({ true, beat.fs.realpath(dir) .. "/lower.lua", 1 }, { r.success, r.recipe, #r.loopIds })
    local loop = d:until_loop(r.loopIds[1], function(l) return not l.alive and l.status ~= "starting" end)
    assert.same({ "completed", 2, 6, "lower it", true }, { loop.status, loop.currentIteration, loop.bestScore,
      loop.promptPreview, loop.detached })
    assert.equal("6\n", H.read(dir .. "/value.txt"))
    assert.matches("completed", H.read(r.logPath))
    assert.equal(0, d:send { op = "close" }.exitCode)
  end)

  it("answers bad CreateLoop and RunRecipe arguments with a tool error naming the argument", function()
    if missing then return pending(missing) end
    local s = session()
    local dir = H.git_repo { ["value.txt"] = "10\n" }
    local d = connect(s, dir)
    for _, case in ipairs {
      { { prompt = "p", strategy = "retry", exitCondition = "true", metric = "ms" }, 'CreateLoop: argument metric needs strategy "optimize"' },
      { { prompt = "p", strategy = "retry" }, "CreateLoop: missing required argument exitCondition" },
      { { strategy = "retry", exitCondition = "true" }, "CreateLoop: missing required argument prompt" },
      { { prompt = "p", strategy = "retry", exitCondition = "true", evalPrompt = "is it done?" }, 'CreateLoop: argument evalPrompt needs evalMode "agent"' },
      { { prompt = "p", strategy = "retry", exitCondition = "true", maxConsecutiveFailures = 0 }, "CreateLoop: argument maxConsecutiveFailures must be an integer >= 1, got 0" },
      { { prompt = "p", strategy = "retry", exitCondition = "true", agent = "no-such-agent-xyz" }, "CreateLoop: argument agent" },
      { { prompt = "p", strategy = "optimize", exitCondition = "cat value.txt", agent = SET, maxCostUsd = 1 }, "CreateLoop: argument maxCostUsd: " },
      { { prompt = "p", strategy = "retry", exitCondition = "true", agent = SET, gitBranch = "bad..name" }, "CreateLoop: argument gitBranch: " },
      { { prompt = "p", strategy = "retry", exitCondition = "true", workingDirectory = "/nonexistent/dir" }, "CreateLoop: argument workingDirectory: /nonexistent/dir is not a directory" },
    } do
      local r = d:call("CreateLoop", case[1])
      assert.is_true(r.isError, case[2])
      assert.equal(case[2], r.text[1]:sub(1, #case[2]))
    end
    local r = d:call("RunRecipe", { recipe = "nope.lua" })
    assert.is_true(r.isError)
    assert.equal(("RunRecipe: argument recipe: %s/nope.lua is not a file"):format(beat.fs.realpath(dir)), r.text[1])
    assert.same({}, require("beat.journal").list(dir .. "/.beat/runs"))   -- nothing was started
    assert.equal(0, d:ok("ListLoops", {}).count)
    assert.equal(0, d:send { op = "close" }.exitCode)
  end)
end)
