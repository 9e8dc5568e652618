-- `beat mcp start` driven over its stdin/stdout: raw JSON-RPC lines written
-- to the real process, and (below) the official TypeScript SDK client.
local beat = require "beat"
local H = require "tests.helpers"
local json = require "beat.mcp.json"

local SLOW = "sh " .. H.root .. "/tests/fixtures/mcp-slow-agent.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local VERSIONS = { "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", "2024-10-07" }
local LATEST = VERSIONS[1]
-- Waits for an answer are bounded loosely: the machine is shared and busy.
local WAIT = 20

-- pids of live processes whose environment holds marker.
local function pids_with_env(marker)
  local pids = {}
  for _, name in ipairs(beat.fs.list("/proc") or {}) do
    if name:match("^%d+$") then
      local env = H.read("/proc/" .. name .. "/environ")
      local stat = H.read("/proc/" .. name .. "/stat") or ""
      if env and env:find(marker, 1, true) and not stat:match("%) Z") then pids[#pids + 1] = tonumber(name) end
    end
  end
  return pids
end

-- A `beat mcp start` process and a raw client for it.
local Client = {}
Client.__index = Client

local function start(opts)
  opts = opts or {}
  local c = setmetatable({ msgs = {}, bad = {}, stderr = {}, mark = "beat-mcp-spec-" .. H.marker() }, Client)
  local argv = { H.bin, "mcp", "start" }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  c.proc = assert(beat.spawn(argv, {
    cwd = opts.cwd or H.tmpdir(), stdin = true, max_output = 64 * 1024 * 1024,
    env = { BEAT_MCP_SPEC_MARK = c.mark },
    stdout = function(line)
      local m = json.decode(line)
      local first = type(m) == "table" and (json.is_array(m) and m[1] or m) or nil
      if type(first) ~= "table" or first.jsonrpc ~= "2.0" then c.bad[#c.bad + 1] = line end
      c.msgs[#c.msgs + 1] = m
    end,
    stderr = function(line) c.stderr[#c.stderr + 1] = line end,
  }))
  return c
end

function Client:send(v)
  assert(self.proc:write((type(v) == "string" and v or json.encode(v)) .. "\n"))
end

function Client:request(id, method, params)
  self:send { jsonrpc = "2.0", id = id, method = method, params = params }
end

-- The first message after index `from` (default 0) that pred accepts; waits.
function Client:wait_for(pred, from, limit)
  local deadline = beat.clock() + (limit or WAIT)
  local i = from or 0
  while true do
    while i < #self.msgs do
      i = i + 1
      if pred(self.msgs[i]) then return self.msgs[i], i end
    end
    if beat.clock() > deadline or self.proc:done() then return nil end
    beat.sleep(0.01)
  end
end

-- The answer to request id (the first after message index `from`).
function Client:answer(id, limit, from)
  return self:wait_for(function(m) return type(m) == "table" and m.id == id and m.method == nil end, from or 0, limit)
end

function Client:call(id, method, params)
  local from = #self.msgs
  self:request(id, method, params)
  return self:answer(id, nil, from)
end

function Client:tool(id, name, args)
  local a = self:call(id, "tools/call", { name = name, arguments = args or {} })
  assert(a and a.result, "no result for " .. name .. ": " .. json.encode(a))
  return a.result
end

function Client:init(version)
  local a = self:call("init", "initialize", { protocolVersion = version or LATEST, capabilities = {},
    clientInfo = { name = "mcp_spec", version = "1" } })
  assert(a and a.result, json.encode(a))
  self:send { jsonrpc = "2.0", method = "notifications/initialized" }
  return a.result
end

-- Closes stdin, waits for the exit; checks that stdout held only protocol
-- messages and that no process of the server is left.
function Client:finish()
  self.proc:close_stdin()
  local r = assert(self.proc:wait(WAIT), "the server did not exit after its input closed")
  assert.same({}, self.bad)
  assert.same({}, pids_with_env(self.mark))
  return r
end

local function error_of(a) return a and a.error and a.error.code, a and a.error and a.error.message end

-- A loop that keeps running (its agent sleeps); returns the repo, the
-- process and the run id once the agent runs.
local function running_loop()
  local dir = H.git_repo { ["a.txt"] = "a\n" }
  local loop = assert(beat.spawn({ H.bin, "loop", "wait", "--until", "false", "-a", SLOW, "--max-iterations", "1" },
    { cwd = dir, stdout = false, stderr = false, env = { SLOW_SECONDS = "120" } }))
  local deadline = beat.clock() + WAIT
  while beat.clock() < deadline do
    local ok, recs, _, id = pcall(H.last_run, dir)
    if ok and #H.events(recs, "decision") >= 1 then return dir, loop, id, math.tointeger(recs[1].pid) end
    beat.sleep(0.05)
  end
  error("the loop did not start")
end

local function stop_loop(loop)
  loop:kill("TERM")
  loop:wait()
end

-- Two finished runs made by `beat loop`: retry (passed) then optimize.
local function finished_runs()
  local dir = H.git_repo { ["bug.txt"] = "broken\n", ["value.txt"] = "10\n" }
  local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", FIX, "--max-iterations", "5", "-q" })
  assert.equal(0, r.code, r.stderr)
  r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "3", "-q" }, { VALUES = "8 9 5" })
  assert.equal(0, r.code, r.stderr)
  local runs = require("beat.journal").list(dir .. "/.beat/runs")
  return dir, runs[1].id, runs[2].id
end

describe("beat mcp start", function()
  it("answers initialize with the client's version when supported, else with the latest", function()
    for _, v in ipairs { VERSIONS[1], VERSIONS[2], VERSIONS[3], VERSIONS[4], VERSIONS[5], "2099-01-01", "1.0" } do
      local c = start()
      local res = c:init(v)
      local want = (v == "2099-01-01" or v == "1.0") and LATEST or v
      assert.equal(want, res.protocolVersion, v)
      assert.equal("beat", res.serverInfo.name)
      assert.same({ tools = { listChanged = false }, logging = {} }, res.capabilities)
      assert.is_string(res.instructions)
      assert.equal(0, c:finish().code)
    end
  end)

  it("refuses requests before initialize, answers ping, and refuses a second initialize", function()
    local c = start()
    assert.same({ -32002, "Server not initialized: send initialize before tools/list" },
      { error_of(c:call(1, "tools/list")) })
    assert.same({}, c:call(2, "ping").result)
    assert.same({ -32602, "Invalid params: protocolVersion must be a string" },
      { error_of(c:call(3, "initialize", { capabilities = {}, clientInfo = { name = "x", version = "1" } })) })
    assert.same({ -32602, "Invalid params: clientInfo must be an object with a name" },
      { error_of(c:call(4, "initialize", { protocolVersion = LATEST, capabilities = {} })) })
    c:init()
    assert.same({ -32600, "Invalid Request: the session is already initialized" },
      { error_of(c:call(5, "initialize", { protocolVersion = LATEST, capabilities = {}, clientInfo = { name = "x" } })) })
    assert.is_table(c:call(6, "tools/list").result)
    assert.equal(0, c:finish().code)
  end)

  it("answers malformed JSON with -32700 and bad messages with -32600, and keeps serving", function()
    local c = start()
    c:init()
    local n = #c.msgs
    for _, line in ipairs { '{"jsonrpc":"2.0",', "not json", '{"a":1}}' } do
      c:send(line)
      local m = c:wait_for(function(x) return x.error end, n)
      n = #c.msgs
      assert.equal(-32700, m.error.code, line)
      assert.matches("^Parse error: ", m.error.message)
      assert.equal(json.null, m.id)
    end
    local cases = {
      { "42", json.null, "Invalid Request: a message must be a JSON object or a batch" },
      { '{"id":7,"method":"ping"}', 7, 'Invalid Request: jsonrpc must be "2.0"' },
      { '{"jsonrpc":"2.0","id":null,"method":"ping"}', json.null, "Invalid Request: id must be a string or a number" },
      { '{"jsonrpc":"2.0","id":{},"method":"ping"}', json.null, "Invalid Request: id must be a string or a number" },
      { '{"jsonrpc":"2.0","id":8}', 8, "Invalid Request: no method" },
      { '{"jsonrpc":"2.0","id":9,"method":5}', 9, "Invalid Request: method must be a string" },
    }
    for _, case in ipairs(cases) do
      c:send(case[1])
      local m = c:wait_for(function(x) return x.error end, n)
      n = #c.msgs
      assert.same({ -32600, case[3] }, { error_of(m) }, case[1])
      assert.equal(case[2], m.id)
    end
    assert.same({}, c:call(10, "ping").result)
    assert.equal(0, c:finish().code)
  end)

  it("answers a line of invalid UTF-8 with a parse error and keeps serving", function()
    local c = start()
    c:init()
    local n = #c.msgs
    for _, bad in ipairs { "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80" } do
      c:send('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' .. bad .. '"}}')
      local m = c:wait_for(function(x) return x.error end, n)
      n = #c.msgs
      assert.same({ -32700, "Parse error: the message is not valid UTF-8" }, { error_of(m) })
    end
    assert.same({}, c:call(2, "ping").result)
    assert.equal(0, c:finish().code)
  end)

  it("answers unknown methods with -32601 and invalid params with -32602", function()
    local c = start()
    c:init()
    assert.same({ -32601, "Method not found: resources/list" }, { error_of(c:call(1, "resources/list")) })
    assert.same({ -32601, "Method not found: frobnicate" }, { error_of(c:call(2, "frobnicate", {})) })
    c:send '{"jsonrpc":"2.0","id":3,"method":"tools/list","params":[1]}'
    assert.same({ -32602, "Invalid params: params must be an object" }, { error_of(c:answer(3)) })
    assert.same({ -32602, "Invalid params: unknown cursor (every tool is on the first page)" },
      { error_of(c:call(4, "tools/list", { cursor = "abc" })) })
    assert.same({ -32602, "Invalid params: name must be a string (see tools/list)" },
      { error_of(c:call(5, "tools/call", { arguments = {} })) })
    assert.same({ -32602, "Invalid params: unknown tool Frob (see tools/list)" },
      { error_of(c:call(6, "tools/call", { name = "Frob" })) })
    assert.same({ -32602, "Invalid params: arguments must be an object" },
      { error_of(c:call(7, "tools/call", { name = "ListLoops", arguments = "x" })) })
    assert.matches("^Invalid params: level must be one of debug, info",
      select(2, error_of(c:call(8, "logging/setLevel", { level = "loud" }))))
    assert.same({}, c:call(9, "ping").result)
    assert.equal(0, c:finish().code)
  end)

  it("answers a message longer than the limit with an error carrying its id, and keeps serving", function()
    for _, case in ipairs { { args = {}, limit = 16 * 1024 * 1024 }, { args = { "--max-line", "64K" }, limit = 65536 } } do
      local c = start { args = case.args }
      c:init()
      c:send('{"jsonrpc":"2.0","id":99,"method":"ping","params":{"pad":"' .. ("x"):rep(case.limit) .. '"}}')
      local a = c:answer(99)
      assert.equal(-32600, a.error.code)
      assert.matches(("more than the limit of %d"):format(case.limit), a.error.message, 1, true)
      -- just under the limit is a message like any other
      local pad = case.limit - #'{"jsonrpc":"2.0","id":100,"method":"ping","params":{"pad":""}}'
      c:send('{"jsonrpc":"2.0","id":100,"method":"ping","params":{"pad":"' .. ("y"):rep(pad) .. '"}}')
      assert.same({}, c:answer(100).result)
      assert.equal(0, c:finish().code)
    end
  end)

  it("answers a bad tool argument with isError and a text naming the argument", function()
    local c = start()
    c:init()
    local cases = {
      { "LoopStatus", {}, "LoopStatus: missing required argument loopId (a string)" },
      { "ListLoops", { limit = 0 }, "ListLoops: argument limit must be an integer from 1 to 100, got 0" },
      { "ListLoops", { limit = 2.5 }, "ListLoops: argument limit must be an integer from 1 to 100, got 2.5" },
      { "ListLoops", { status = "done" }, 'ListLoops: argument status must be one of "starting", "running", "paused", "passed", "completed", "failed", "stopped", "cancelled", "interrupted", "crashed", got "done"' },
      { "LoopStatus", { loopId = "x", waitMs = "5" }, 'LoopStatus: argument waitMs must be an integer from 0 to 600000, got "5"' },
      { "LoopStatus", { loopId = "" }, "LoopStatus: argument loopId must not be empty" },
      { "LoopDiff", { loopId = "x", colour = 1 }, "LoopDiff: unknown argument colour (expected iteration, loopId, maxBytes, patch, workingDirectory)" },
      { "CreateLoop", { prompt = "x", strategy = "fast", exitCondition = "true" }, 'CreateLoop: argument strategy must be one of "retry", "optimize", got "fast"' },
      { "CreateLoop", { prompt = "x", strategy = "retry", exitCondition = "true", guards = { "ok", 3 } }, "CreateLoop: argument guards[1] must be a string, got 3" },
      { "CreateLoop", { prompt = "x", strategy = "retry", exitCondition = "true", maxIterations = -1 }, "CreateLoop: argument maxIterations must be an integer >= 0, got -1" },
      { "RunRecipe", { recipe = "r.lua", set = { x = { 1 } } }, "RunRecipe: argument set.x must be a string or a number or a boolean, got an array" },
    }
    for i, case in ipairs(cases) do
      local res = c:tool(i, case[1], case[2])
      assert.is_true(res.isError, case[3])
      assert.equal(case[3], res.content[1].text)
    end
    assert.equal(0, c:finish().code)
  end)

  it("lists every tool with its schemas, and shows each protocol version what it knows", function()
    local c = start()
    c:init()
    local tools = c:call(1, "tools/list").result.tools
    local names = {}
    for i, t in ipairs(tools) do
      names[i] = t.name
      assert.equal("object", t.inputSchema.type, t.name)
      assert.equal("object", t.outputSchema.type, t.name)
      assert.is_string(t.title)
      assert.is_string(t.description)
      assert.is_boolean(t.annotations.readOnlyHint)
    end
    assert.same({ "CreateLoop", "LoopStatus", "ListLoops", "PauseLoop", "ResumeLoop", "CancelLoop", "RunRecipe",
      "LoopReport", "LoopDiff" }, names)
    assert.equal(0, c:finish().code)

    c = start()
    c:init("2024-11-05")
    for _, t in ipairs(c:call(1, "tools/list").result.tools) do
      assert.is_nil(t.outputSchema)
      assert.is_nil(t.annotations)
      assert.is_nil(t.title)
    end
    local res = c:tool(2, "ListLoops")
    assert.is_nil(res.structuredContent)
    assert.equal(true, json.decode(res.content[2].text).success)   -- the data is in the text
    assert.equal(0, c:finish().code)
  end)

  it("answers JSON-RPC batches in protocol 2025-03-26 only", function()
    local c = start()
    c:send('[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}]')
    assert.same({ -32600, "Invalid Request: a JSON-RPC batch before initialize (send initialize alone)" },
      { error_of(c:wait_for(function(m) return m.error end)) })
    c:init("2025-03-26")
    c:send('[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},'
      .. '{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"ListLoops"}},{"jsonrpc":"2.0","id":"c","method":"nope"}]')
    local batch = c:wait_for(function(m) return json.is_array(m) end)
    assert.equal(3, #batch)
    local by = {}
    for _, m in ipairs(batch) do by[m.id] = m end
    assert.same({}, by.a.result)
    assert.is_true(json.decode(by.b.result.content[2].text).success)   -- no structuredContent before 2025-06-18
    assert.equal(-32601, by.c.error.code)
    local n = #c.msgs
    c:send("[]")
    assert.same({ -32600, "Invalid Request: an empty batch" }, { error_of(c:wait_for(function(m) return m.error end, n)) })
    assert.equal(0, c:finish().code)

    c = start()
    c:init(LATEST)
    c:send('[{"jsonrpc":"2.0","id":1,"method":"ping"}]')
    assert.same({ -32600, "Invalid Request: JSON-RPC batches are not supported in protocol version 2025-11-25 (only in 2025-03-26)" },
      { error_of(c:wait_for(function(m) return m.error end)) })
    assert.is_nil(c:answer(1, 0.2))
    assert.equal(0, c:finish().code)
  end)

  it("reads loops made by beat loop: ListLoops, LoopStatus, LoopDiff, LoopReport", function()
    local dir, retry_id, opt_id = finished_runs()
    local c = start { cwd = dir }
    c:init()
    local list = c:tool(1, "ListLoops").structuredContent
    assert.equal(2, list.count)
    assert.same({ opt_id, retry_id }, { list.loops[1].id, list.loops[2].id })   -- newest first
    assert.same({ "completed", "passed" }, { list.loops[1].status, list.loops[2].status })
    assert.equal(2, c:tool(2, "ListLoops", { status = "completed" }).structuredContent.count)   -- Backbeat's name
    assert.equal(retry_id, c:tool(3, "ListLoops", { status = "passed" }).structuredContent.loops[1].id)
    assert.equal(0, c:tool(4, "ListLoops", { status = "running" }).structuredContent.count)
    assert.equal(1, c:tool(5, "ListLoops", { limit = 1 }).structuredContent.count)

    local st = c:tool(6, "LoopStatus", { loopId = opt_id, includeHistory = true, historyLimit = 2 })
    local loop = st.structuredContent.loop
    assert.same({ "completed", "optimize", 3, 3, 5, 10, "cat value.txt", "minimize", "finished" },
      { loop.status, loop.strategy, loop.currentIteration, loop.maxIterations, loop.bestScore, loop.baselineScore,
        loop.exitCondition, loop.evalDirection, loop.phase })
    assert.same({ filesChanged = 1, insertions = 1, deletions = 1 }, loop.diffStat)
    assert.equal(4, #loop.lastDecisions)
    assert.same({ 2, 3 }, { st.structuredContent.iterations[1].iterationNumber, st.structuredContent.iterations[2].iterationNumber })
    assert.same({ "discard", 9 }, { st.structuredContent.iterations[1].status, st.structuredContent.iterations[1].score })
    assert.matches("completed, iteration 3/3", st.content[1].text)
    assert.equal("passed", c:tool(7, "LoopStatus", { loopId = retry_id, workingDirectory = dir }).structuredContent.loop.status)
    assert.equal(opt_id, c:tool(8, "LoopStatus", { loopId = "last" }).structuredContent.loop.id)

    local diff = c:tool(9, "LoopDiff", { loopId = opt_id }).structuredContent
    assert.same({ "best", 1, "value.txt", "modified" }, { diff.to, diff.filesChanged, diff.files[1].path, diff.files[1].status })
    assert.matches("\n%-10\n%+5\n$", diff.patch)
    diff = c:tool(10, "LoopDiff", { loopId = opt_id, iteration = 2, patch = false }).structuredContent
    assert.same({ "iter-2", json.null }, { diff.to, diff.patch })
    local err = c:tool(11, "LoopDiff", { loopId = opt_id, iteration = 9 })
    assert.is_true(err.isError)
    assert.equal(("loop %s has no snapshot of iteration 9 (it has iterations 1, 2, 3)"):format(opt_id), err.content[1].text)

    local report = c:tool(12, "LoopReport", { loopId = retry_id }).structuredContent
    assert.equal(4, #report.rows)
    assert.equal("pass", report.rows[4].status)
    assert.matches("iteration%s+snapshot%s+score%s+status", report.text)
    assert.is_true(c:tool(13, "LoopReport", { loopId = retry_id, format = "svg" }).isError)

    err = c:tool(14, "LoopStatus", { loopId = "zzz" })
    assert.equal(("no loop zzz in %s/.beat/runs (ListLoops shows the loops there)"):format(beat.fs.realpath(dir)), err.content[1].text)
    assert.matches("^loopId m%w* is ambiguous", c:tool(15, "LoopStatus", { loopId = opt_id:sub(1, 1) }).content[1].text)
    assert.matches("is not a directory$", c:tool(16, "ListLoops", { workingDirectory = "/nonexistent" }).content[1].text)
    assert.equal(0, c:finish().code)
  end)

  it("shows a running loop as running, and one whose process was killed as crashed", function()
    local dir, loop, id, pid = running_loop()
    local c = start { cwd = dir }
    c:init()
    local s = c:tool(1, "LoopStatus", { loopId = id }).structuredContent.loop
    assert.same({ "running", "agent", 1, pid }, { s.status, s.phase, s.currentIteration, s.pid })
    assert.equal(1, c:tool(2, "ListLoops", { status = "running" }).structuredContent.count)
    beat.exec { "kill", "-KILL", tostring(pid) }
    loop:wait()
    s = c:tool(3, "LoopStatus", { loopId = id }).structuredContent.loop
    assert.equal("crashed", s.status)
    assert.equal(0, c:finish().code)
  end)

  it("does not take a younger process that got a run's pid for the run", function()
    local dir = H.tmpdir()
    local sleeper = assert(beat.spawn({ "sleep", "60" }, { stdout = false }))
    finally(function() sleeper:kill("KILL") sleeper:wait() end)
    local pid = sleeper.pid   -- a live process started just now
    for id, age in pairs { aaaa0001 = 3600, aaaa0002 = -60 } do
      beat.fs.mkdir_p(dir .. "/.beat/runs/" .. id)
      H.write(dir .. "/.beat/runs/" .. id .. "/journal.jsonl", json.encode {
        event = "run_start", id = id, strategy = "retry", pid = pid, time = beat.now() - age, cwd = dir,
        config = { prompt = "p", max_iterations = 2 } } .. "\n")
    end
    local c = start { cwd = dir }
    c:init()
    -- started an hour before the process: the pid is someone else's now
    assert.equal("crashed", c:tool(1, "LoopStatus", { loopId = "aaaa0001" }).structuredContent.loop.status)
    assert.equal("running", c:tool(2, "LoopStatus", { loopId = "aaaa0002" }).structuredContent.loop.status)
    assert.equal(0, c:finish().code)
  end)

  it("waits in LoopStatus with progress notifications, serves other requests meanwhile, and cancels on notifications/cancelled", function()
    local dir, loop, id = running_loop()
    finally(function() stop_loop(loop) end)
    local c = start { cwd = dir }
    c:init()
    c:request(7, "tools/call", { name = "LoopStatus", arguments = { loopId = id, waitMs = 60000 },
      _meta = { progressToken = "p7" } })
    local p = c:wait_for(function(m) return m.method == "notifications/progress" end)
    assert.equal("p7", p.params.progressToken)
    assert.equal(60000, p.params.total)
    assert.is_number(p.params.progress)
    assert.matches("^loop " .. id .. ": running, iteration 1", p.params.message)
    assert.same({}, c:call(8, "ping").result)          -- answered while 7 waits
    assert.same({ -32600, "Invalid Request: request id 7 is already in use" }, { error_of(c:call(7, "ping")) })
    c:send { jsonrpc = "2.0", method = "notifications/cancelled", params = { requestId = 7, reason = "enough" } }
    assert.same({}, c:call(9, "ping").result)
    beat.sleep(0.5)
    for _, m in ipairs(c.msgs) do
      assert.is_false(m.id == 7 and m.result ~= nil, "a cancelled request was answered")
    end
    assert.same({}, c:call(7, "ping").result)          -- the id is free again
    assert.equal(0, c:finish().code)
  end)

  it("answers a waiting call and exits 0 when stdin closes mid-call, leaving no process", function()
    local dir, loop, id = running_loop()
    finally(function() stop_loop(loop) end)
    local c = start { cwd = dir }
    c:init()
    c:request(1, "tools/call", { name = "LoopStatus", arguments = { loopId = id, waitMs = 600000 },
      _meta = { progressToken = 1 } })
    assert(c:wait_for(function(m) return m.method == "notifications/progress" end))
    local t0 = beat.clock()
    local r = c:finish()             -- closes stdin while the call waits up to 10 minutes
    assert.equal(0, r.code)
    assert.is_true(beat.clock() - t0 < WAIT)
    assert.equal("running", c:answer(1, 0).result.structuredContent.loop.status)
  end)

  it("exits 0 on SIGTERM and on SIGINT while a call waits, answering nothing more and leaving no process", function()
    local dir, loop, id = running_loop()
    finally(function() stop_loop(loop) end)
    for _, sig in ipairs { "TERM", "INT" } do
      local c = start { cwd = dir }
      c:init()
      c:request(1, "tools/call", { name = "LoopStatus", arguments = { loopId = id, waitMs = 600000 },
        _meta = { progressToken = 1 } })
      assert(c:wait_for(function(m) return m.method == "notifications/progress" end))
      c.proc:kill(sig)
      local r = assert(c.proc:wait(WAIT))
      assert.equal(0, r.code, sig)
      assert.is_nil(c:answer(1, 0))
      assert.same({}, c.bad)
      assert.same({}, pids_with_env(c.mark))
    end
    -- the loop was not the server's: it still runs
    assert.equal("running", require("beat.mcp.runs").summary({ id = id, dir = dir .. "/.beat/runs/" .. id }).status)
  end)

  it("serves at most --max-concurrent calls at once; the next message waits its turn", function()
    local dir, loop, id = running_loop()
    finally(function() stop_loop(loop) end)
    local c = start { cwd = dir, args = { "--max-concurrent", "1" } }
    c:init()
    c:request(1, "tools/call", { name = "LoopStatus", arguments = { loopId = id, waitMs = 1500 } })
    c:request(2, "ping")
    local _, i2 = c:wait_for(function(m) return m.id == 2 end)
    local _, i1 = c:wait_for(function(m) return m.id == 1 end)
    assert.is_true(i1 < i2, "ping was answered before the call holding the only slot")
    assert.equal(0, c:finish().code)
  end)

  it("sends notifications/message at the level the client set", function()
    local c = start()
    c:init()
    c:tool(1, "ListLoops")
    assert.is_nil(c:wait_for(function(m) return m.method == "notifications/message" end, 0, 0))
    assert.same({}, c:call(2, "logging/setLevel", { level = "debug" }).result)
    local _, n = c:tool(3, "ListLoops"), #c.msgs
    local log = c:wait_for(function(m) return m.method == "notifications/message" end)
    assert.same({ "debug", "beat" }, { log.params.level, log.params.logger })
    assert.matches("^ListLoops answered in %d+ ms", log.params.data)
    assert.same({}, c:call(4, "logging/setLevel", { level = "error" }).result)
    n = #c.msgs
    c:tool(5, "ListLoops")
    assert.is_nil(c:wait_for(function(m) return m.method == "notifications/message" end, n, 0))
    assert.equal(0, c:finish().code)
  end)

  it("returns the not-yet-built control tools as tool errors", function()
    local c = start()
    c:init()
    for i, case in ipairs {
      { "CreateLoop", { prompt = "x", strategy = "retry", exitCondition = "true" } },
      { "PauseLoop", { loopId = "x" } }, { "ResumeLoop", { loopId = "x" } },
      { "CancelLoop", { loopId = "x" } }, { "RunRecipe", { recipe = "x.lua" } },
    } do
      local res = c:tool(i, case[1], case[2])
      assert.is_true(res.isError)
      assert.matches("^" .. case[1] .. " requires detached runs %(not built yet%)", res.content[1].text)
    end
    assert.equal(0, c:finish().code)
  end)
end)

describe("CreateLoop's arguments as a beat loop command line (control.loop_argv)", function()
  local control = require "beat.mcp.control"
  local catalog = require "beat.mcp.catalog"
  local tools = require "beat.mcp.tools"
  local schema
  for _, t in ipairs(catalog.tools) do if t.name == "CreateLoop" then schema = t.inputSchema end end

  local function argv(args)
    local checked = assert(tools.check_object(schema, args, ""))
    return control.loop_argv(checked)
  end

  it("runs a retry loop and an optimize loop with the options asked for", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n", ["value.txt"] = "10\n" }
    local a = assert(argv { prompt = "fix it", strategy = "retry", exitCondition = "grep -q fixed bug.txt",
      agent = FIX, maxIterations = 4, maxConsecutiveFailures = 2, cooldownMs = 50, evalTimeout = 5000,
      freshContext = false, maxDurationMs = 600000, maxCostUsd = 3.5 })
    table.insert(a, "-q")
    -- a command agent reports no cost: --max-cost needs what an iteration costs
    for _, x in ipairs { "--cost-per-iteration", "0.01" } do table.insert(a, x) end
    local r = H.loop(dir, a)
    assert.equal(0, r.code, r.stderr)
    local recs = H.last_run(dir)
    local cfg = recs[1].config
    assert.same({ "fix it", "grep -q fixed bug.txt", 4, 2, 0.05, 5, true, 600, 3.5 },
      { cfg.prompt, cfg.check, cfg.max_iterations, cfg.max_consecutive_failures, cfg.cooldown, cfg.check_timeout,
        cfg.continue_context, cfg.max_duration, cfg.max_cost_usd })
    assert.equal("passed", recs[#recs].status)

    a = assert(argv { prompt = "raise it", strategy = "optimize", exitCondition = "cat value.txt", agent = SET,
      evalDirection = "maximize", maxIterations = 2, runs = 2, minRelDelta = 0.01, target = 50,
      guards = { "true", "test -f value.txt" }, workingDirectory = dir })
    table.insert(a, "-q")
    r = H.beat({ "loop", table.unpack(a) }, { cwd = H.tmpdir(), env = { VALUES = "20 30" } })
    assert.equal(0, r.code, r.stderr)
    recs = H.last_run(dir)
    cfg = recs[1].config
    assert.same({ "cat value.txt", "maximize", 2, 2, 0.01, 50, { "true", "test -f value.txt" } },
      { cfg.eval, cfg.direction, cfg.max_iterations, cfg.runs, cfg.min_rel_delta, cfg.target, cfg.guard })
    assert.equal("completed", recs[#recs].status)
    assert.is_true(#H.events(recs, "guard") >= 2)   -- both guards ran
  end)

  it("refuses optimize-only arguments with retry, and systemPrompt until beat loop takes it", function()
    local base = { prompt = "p", strategy = "retry", exitCondition = "true" }
    for _, case in ipairs {
      { "guards", { "true" } }, { "runs", 3 }, { "metric", "ms" }, { "target", 1 }, { "minRelDelta", 0.1 },
      { "evalDirection", "maximize" },
    } do
      local args = {}
      for k, v in pairs(base) do args[k] = v end
      args[case[1]] = case[2]
      assert.same({ nil, ('CreateLoop: argument %s needs strategy "optimize"'):format(case[1]) }, { argv(args) })
    end
    base.systemPrompt = "be brief"
    assert.same({ nil, "CreateLoop: argument systemPrompt is not supported by `beat loop` yet" }, { argv(base) })
  end)
end)

describe("beat mcp config, test and usage", function()
  it("prints the mcpServers JSON and the Codex TOML with the absolute path of the binary", function()
    local r = H.beat { "mcp", "config" }
    assert.equal(0, r.code, r.stderr)
    local bin = beat.fs.realpath(H.bin)
    assert.same({ mcpServers = { beat = { command = bin, args = { "mcp", "start" } } } }, json.decode(r.stdout))
    r = H.beat { "mcp", "config", "--codex" }
    assert.equal(('[mcp_servers.beat]\ncommand = "%s"\nargs = ["mcp", "start"]\n'):format(bin), r.stdout)
  end)

  it("passes its self-check", function()
    local r = H.beat({ "mcp", "test" }, { cwd = H.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    assert.matches("^ok: beat %S+ speaks MCP 2025%-11%-25; 9 tools: CreateLoop, LoopStatus", r.stdout)
  end)

  it("answers --help, and a bad subcommand or option with one line and exit 2", function()
    local r = H.beat { "mcp", "--help" }
    assert.equal(0, r.code)
    assert.matches("^Usage: beat mcp start", r.stdout)
    for _, case in ipairs {
      { { "mcp" }, "beat: mcp: missing subcommand: start, config or test (see 'beat mcp --help')\n" },
      { { "mcp", "serve" }, "beat: mcp: unknown subcommand 'serve': start, config or test\n" },
      { { "mcp", "start", "--max-line", "10" }, "beat: mcp start: --max-line must be a size from 1K to 1G (e.g. 16M), got '10'\n" },
      { { "mcp", "start", "--max-line" }, "beat: mcp start: --max-line needs a value\n" },
      { { "mcp", "start", "--max-concurrent", "0" }, "beat: mcp start: --max-concurrent must be an integer from 1 to 1024, got '0'\n" },
      { { "mcp", "start", "--bogus" }, "beat: mcp start: unknown option '--bogus' (see 'beat mcp --help')\n" },
      { { "mcp", "config", "x" }, "beat: mcp config: unknown argument 'x'\n" },
      { { "mcp", "test", "x" }, "beat: mcp test: unexpected argument 'x'\n" },
    } do
      r = H.beat(case[1], { stdin = "" })
      assert.equal(2, r.code, table.concat(case[1], " "))
      assert.equal(case[2], r.stderr)
      assert.equal("", r.stdout)
    end
  end)
end)

-- The official TypeScript SDK client, pinned by tests/fixtures/mcp-install-sdk.sh.
local SDK_DIR = os.getenv("BEAT_MCP_SDK_DIR")
  or ((os.getenv("BEAT_NPM_CACHE") or ((os.getenv("HOME") or "/root") .. "/.cache/beat-npm")) .. "/mcp-sdk-1.32.2")
local NODE = require("beat.exec").which("node")

describe("beat mcp start with the official TypeScript SDK client", function()
  local missing
  if not NODE then
    missing = "node is not installed"
  elseif not beat.fs.exists(SDK_DIR .. "/node_modules/@modelcontextprotocol/sdk/package.json") then
    missing = ("the MCP SDK is not installed in %s: run sh tests/fixtures/mcp-install-sdk.sh"):format(SDK_DIR)
  end

  it("connects over stdio, validates every schema with Ajv, and gets structured results that match them", function()
    if missing then return pending(missing) end
    local dir, retry_id, opt_id = finished_runs()
    local calls = {
      { name = "ListLoops", arguments = {} },
      { name = "LoopStatus", arguments = { loopId = opt_id, includeHistory = true } },
      { name = "LoopStatus", arguments = { loopId = retry_id } },
      { name = "LoopDiff", arguments = { loopId = opt_id } },
      { name = "LoopReport", arguments = { loopId = retry_id } },
      { name = "ListLoops", arguments = { limit = "all" } },
    }
    local r = assert(beat.exec({ NODE, H.root .. "/tests/fixtures/mcp-sdk-client.js", SDK_DIR, H.bin, dir, json.encode(calls) },
      { timeout = 120 }))
    assert.equal(0, r.code, r.stderr)
    local out = json.decode(r.stdout)
    assert.equal(LATEST, out.protocolVersion)
    assert.equal("beat", out.serverInfo.name)
    local names = {}
    for i, t in ipairs(out.tools) do names[i] = t.name end
    assert.same({ "CreateLoop", "LoopStatus", "ListLoops", "PauseLoop", "ResumeLoop", "CancelLoop", "RunRecipe",
      "LoopReport", "LoopDiff" }, names)
    assert.same({}, out.schemaErrors)
    for i = 1, 5 do
      local call = out.calls[i]
      assert.is_nil(call.exception, call.name)
      assert.is_false(call.isError, call.name)
      assert.is_true(call.valid, call.name .. ": " .. json.encode(call.validationErrors))
    end
    assert.equal(2, out.calls[1].structuredContent.count)
    assert.equal("completed", out.calls[2].structuredContent.loop.status)
    assert.equal("passed", out.calls[3].structuredContent.loop.status)
    assert.matches("^ListLoops: argument limit must be an integer", out.calls[6].text[1])
    assert.is_true(out.calls[6].isError)
    assert.is_true(out.serverGone)
    assert.equal("", out.stderr)
  end)
end)
