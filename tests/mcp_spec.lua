-- `beat mcp start` driven over its stdin/stdout: raw JSON-RPC lines written
-- to the real process, and (below) the official TypeScript SDK client.
local beat = require "beat"
local H = require "tests.helpers"
local json = require "beat.mcp.json"

local SLOW = "sh " .. H.root .. "/tests/fixtures/mcp-slow-agent.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local AGENT = H.root .. "/tests/fixtures/control/agent.sh"
local VERSIONS = { "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", "2024-10-07" }
local LATEST = VERSIONS[1]
-- Waits for an answer are bounded loosely: the machine is shared and busy.
local WAIT = 20

-- Each spec gets a private run index (the tools list every run of it), set
-- for every beat the spec starts.
local STATE
before_each(function() STATE = H.tmpdir() end)

local function env(extra)
  local e = { XDG_STATE_HOME = STATE }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function mkfifo(path)
  assert(beat.exec({ "mkfifo", path }).code == 0)
end

-- Waits for a file to appear (bounded only against a broken beat).
local function wait_file(path)
  local deadline = beat.clock() + 60
  while not beat.fs.exists(path) do
    assert(beat.clock() < deadline, "timed out waiting for " .. path)
    beat.sleep(0.02)
  end
end

-- Writes a line to a fifo a fake agent waits on.
local function release(path)
  assert(beat.exec({ "sh", "-c", 'echo go > "$1"', "_", path }, { timeout = 60 }).code == 0)
end

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
    env = env { BEAT_MCP_SPEC_MARK = c.mark, VALUES = opts.values, SYNC = opts.sync, ASAN_OPTIONS = opts.asan },
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

-- Processes below pid (its whole tree, pid included while it lives).
local function tree(pid)
  local procs = require "beat.runs.proc"
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

-- Closes stdin, waits for the exit; checks that stdout held only protocol
-- messages and that no process of the server is left. `loops` (pids of
-- detached loops the server started, which carry its environment and
-- outlive it on purpose): their processes are not the server's.
function Client:finish(loops)
  self.proc:close_stdin()
  local r = assert(self.proc:wait(WAIT), "the server did not exit after its input closed")
  assert.same({}, self.bad)
  local theirs = {}
  for _, pid in ipairs(loops or {}) do
    for _, p in ipairs(tree(pid)) do theirs[p] = true end
  end
  local left = {}
  for _, pid in ipairs(pids_with_env(self.mark)) do
    if not theirs[pid] then left[#left + 1] = pid end
  end
  assert.same({}, left)
  return r
end

local function error_of(a) return a and a.error and a.error.code, a and a.error and a.error.message end

-- A loop that keeps running (its agent sleeps); returns the repo, the
-- process and the run id once the agent runs.
local function running_loop()
  local dir = H.git_repo { ["a.txt"] = "a\n" }
  local loop = assert(beat.spawn({ H.bin, "loop", "wait", "--until", "false", "-a", SLOW, "--max-iterations", "1" },
    { cwd = dir, stdout = false, stderr = false, env = env { SLOW_SECONDS = "120" } }))
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
  local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", FIX, "--max-iterations", "5", "-q" }, env())
  assert.equal(0, r.code, r.stderr)
  r = H.loop(dir, { "lower", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "3", "-q" }, env { VALUES = "8 9 5" })
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
      { "ListLoops", { status = "done" }, 'ListLoops: argument status must be one of "starting", "running", "paused", "passed", "failed", "completed", "stopped", "cancelled", "interrupted", "crashed", "missing", got "done"' },
      { "LoopStatus", { loopId = "x", waitMs = "5" }, 'LoopStatus: argument waitMs must be an integer from 0 to 600000, got "5"' },
      { "LoopStatus", { loopId = "" }, "LoopStatus: argument loopId must not be empty" },
      { "LoopDiff", { loopId = "x", colour = 1 }, "LoopDiff: unknown argument colour (expected iteration, loopId, maxBytes, patch, workingDirectory)" },
      { "CreateLoop", { prompt = "x", strategy = "fast", exitCondition = "true" }, 'CreateLoop: argument strategy must be one of "retry", "optimize", got "fast"' },
      { "CreateLoop", { prompt = "x", strategy = "retry", exitCondition = "true", guards = { "ok", 3 } }, "CreateLoop: argument guards[1] must be a string, got 3" },
      { "CreateLoop", { prompt = "x", strategy = "retry", exitCondition = "true", maxIterations = -1 }, "CreateLoop: argument maxIterations must be an integer >= 0, got -1" },
      { "CreateLoop", { prompt = "x", exitCondition = "true" }, 'CreateLoop: missing required argument strategy (one of "retry", "optimize")' },
      { "CreateLoop", { prompt = "x", strategy = "retry", exitCondition = "true", pipelineSteps = {} }, "CreateLoop: argument pipelineSteps must have at least 1 item, got 0" },
      { "PauseLoop", { loopId = "x", force = "yes" }, 'PauseLoop: argument force must be a boolean, got "yes"' },
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
    assert.matches("^run %w+ %(retry%): passed", report.text)          -- beat.report's text
    local html = c:tool(13, "LoopReport", { loopId = opt_id, format = "html" })
    local path = ("%s/.beat/runs/%s/report.html"):format(dir, opt_id)
    assert.equal(path, html.structuredContent.htmlPath)
    assert.matches("^<!DOCTYPE html>", H.read(path))
    assert.matches("html: " .. path:gsub("%p", "%%%0") .. "$", html.content[1].text)

    err = c:tool(14, "LoopStatus", { loopId = "zzz" })
    assert.equal("no loop zzz (ListLoops lists them)", err.content[1].text)
    assert.matches("^loopId m%w* is ambiguous: ", c:tool(15, "LoopStatus", { loopId = opt_id:sub(1, 1) }).content[1].text)
    assert.equal("argument loopId must be letters and digits (a run id, a unique prefix of one, or last), got '../x'",
      c:tool(17, "LoopStatus", { loopId = "../x" }).content[1].text)
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
    assert.same({ "crashed", false, "finished" }, { s.status, s.alive, s.phase })
    -- a crashed loop is closed by the server itself: cancelled, at its best snapshot
    local cancel = c:tool(4, "CancelLoop", { loopId = id, reason = "gone" }).structuredContent
    assert.same({ "cancelled", "gone" }, { cancel.status, cancel.reason })
    local recs = H.last_run(dir)
    assert.same({ "run_end", "cancelled", "gone" }, { recs[#recs].event, recs[#recs].status, recs[#recs].reason })
    assert.equal(0, c:finish().code)
  end)

  it("does not take a process that reused a run's pid for the run", function()
    local dir = H.tmpdir()
    local sleeper = assert(beat.spawn({ "sleep", "60" }, { stdout = false }))
    finally(function() sleeper:kill("KILL") sleeper:wait() end)
    local me = require("beat.runs.proc").identity(sleeper.pid)   -- a live process
    for id, start_time in pairs { aaaa0001 = me.start_time - 100, aaaa0002 = me.start_time } do
      beat.fs.mkdir_p(dir .. "/.beat/runs/" .. id)
      H.write(dir .. "/.beat/runs/" .. id .. "/journal.jsonl", json.encode {
        event = "run_start", id = id, strategy = "retry", pid = me.pid, start_time = start_time, boot_id = me.boot_id,
        time = beat.now(), cwd = dir, config = { prompt = "p", max_iterations = 2 } } .. "\n")
    end
    local c = start { cwd = dir }
    c:init()
    -- recorded as started before the process that has the pid now: not the run's
    local s = c:tool(1, "LoopStatus", { loopId = "aaaa0001" }).structuredContent.loop
    assert.same({ "crashed", false, "finished" }, { s.status, s.alive, s.phase })
    s = c:tool(2, "LoopStatus", { loopId = "aaaa0002" }).structuredContent.loop
    assert.same({ "running", true }, { s.status, s.alive })
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
      -- under ASan, without LeakSanitizer's check at exit: on a loaded machine, after a
      -- signal, it sometimes never finishes (the server then outlived the test's bounds; with
      -- detect_leaks=0 it exits at once every time); memory errors are still caught
      local asan = os.getenv("ASAN_OPTIONS") and "detect_leaks=0:abort_on_error=1" or nil
      local c = start { cwd = dir, asan = asan }
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
    assert.equal("running", require("beat.runs.status").inspect(dir .. "/.beat/runs/" .. id).state)
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

  it("starts a detached loop with CreateLoop and answers at once; the server exits 0 on stdin close and the loop finishes on its own", function()
    local sync, dir = H.tmpdir(), H.git_repo { ["value.txt"] = "10\n", ["log.txt"] = "" }
    mkfifo(sync .. "/go-agent-1")
    local c = start { cwd = dir, values = "4", sync = sync }
    local loop_pid
    finally(function()
      local procs = require "beat.runs.proc"
      if loop_pid and procs.alive { pid = loop_pid } then procs.kill(loop_pid, 9) end
      for _, pid in ipairs(H.pids_with(sync)) do procs.kill(pid, 9) end
      if not c.proc:done() then c.proc:kill("KILL") c.proc:wait() end
    end)
    c:init()
    local res = c:tool(1, "CreateLoop", { prompt = "lower it", strategy = "optimize", exitCondition = "cat value.txt",
      agent = AGENT, maxIterations = 1 })
    assert.is_nil(res.isError, res.content[1].text)
    local out = res.structuredContent
    loop_pid = math.tointeger(out.pid)
    assert.same({ true, "optimize", 1, beat.fs.realpath(dir) }, { out.success, out.strategy, out.maxIterations, out.workingDirectory })
    assert.equal(("%s/.beat/runs/%s"):format(beat.fs.realpath(dir), out.loopId), out.runDirectory)
    assert.matches("^loop " .. out.loopId .. " started %(optimize, pid %d+%)", res.content[1].text)
    wait_file(sync .. "/held-agent-1")
    local status = require "beat.runs.status"
    local st = status.inspect(out.runDirectory)
    assert.same({ "running", "agent", loop_pid }, { st.state, st.phase, st.pid })

    -- a second loop on the work tree is refused, naming the first; nothing is started
    local busy = c:tool(2, "CreateLoop", { prompt = "more", strategy = "retry", exitCondition = "true", agent = AGENT })
    assert.is_true(busy.isError)
    assert.equal(("CreateLoop: the work tree %s is in use by loop %s (pid %d): one loop per work tree. "
      .. 'LoopStatus {"loopId": "%s"} shows it; CancelLoop {"loopId": "%s"} stops it'):format(beat.fs.realpath(dir),
      out.loopId, loop_pid, out.loopId, out.loopId), busy.content[1].text)
    assert.equal(1, #require("beat.journal").list(dir .. "/.beat/runs"))

    -- the server goes; the loop (which carries its environment) stays
    assert.equal(0, c:finish({ loop_pid }).code)
    assert.is_true(require("beat.runs.proc").alive { pid = loop_pid })
    release(sync .. "/go-agent-1")
    local deadline = beat.clock() + 60
    repeat
      assert(beat.clock() < deadline, "the loop did not finish")
      beat.sleep(0.05)
      st = status.inspect(out.runDirectory)
    until not st.alive
    assert.same({ "completed", "score 4" }, { st.state, st.best_text })
    assert.equal("4\n", H.read(dir .. "/value.txt"))
    -- once the loop's process has exited (just after its end record), nothing with the server's environment is left
    while require("beat.runs.proc").alive { pid = loop_pid } do
      assert(beat.clock() < deadline, "the loop's process did not exit")
      beat.sleep(0.02)
    end
    assert.same({}, pids_with_env(c.mark))
  end)

  it("refuses to pause, resume or cancel a loop that has ended, with one line, changing nothing", function()
    local dir, retry_id = finished_runs()
    local journal = H.read(("%s/.beat/runs/%s/journal.jsonl"):format(dir, retry_id))
    local c = start { cwd = dir }
    c:init()
    for i, case in ipairs {
      { "PauseLoop", { loopId = retry_id }, "PauseLoop: loop %s has ended (passed): nothing to pause" },
      { "PauseLoop", { loopId = retry_id, force = true }, "PauseLoop: loop %s has ended (passed): nothing to pause" },
      { "ResumeLoop", { loopId = retry_id }, "ResumeLoop: loop %s has ended (passed): nothing to resume" },
      { "CancelLoop", { loopId = retry_id, reason = "x" }, "CancelLoop: loop %s has ended (passed): nothing to cancel" },
      { "CancelLoop", { loopId = "zzz" }, "CancelLoop: no loop zzz (ListLoops lists them)" },
    } do
      local res = c:tool(i, case[1], case[2])
      assert.is_true(res.isError, case[1])
      assert.equal(case[3]:format(retry_id), res.content[1].text)
    end
    assert.equal(journal, H.read(("%s/.beat/runs/%s/journal.jsonl"):format(dir, retry_id)))
    assert.equal(0, c:finish().code)
  end)

  it("resumes a crashed loop in a process of its own with ResumeLoop, and cancels it with CancelLoop", function()
    local dir, loop, id, pid = running_loop()
    local resumed
    finally(function()
      local procs = require "beat.runs.proc"
      if resumed and procs.alive { pid = resumed } then procs.kill(resumed, 9) end
      stop_loop(loop)
    end)
    beat.exec { "kill", "-KILL", tostring(pid) }
    loop:wait()
    local c = start { cwd = H.tmpdir() }
    c:init()
    local s = c:tool(1, "LoopStatus", { loopId = id }).structuredContent.loop
    assert.same({ "crashed", true, false }, { s.status, s.resumable, s.alive })
    local res = c:tool(2, "ResumeLoop", { loopId = id }).structuredContent
    assert.same({ true, "process" }, { res.success, res.resumedBy })
    resumed = math.tointeger(res.pid)
    assert.is_true(resumed ~= pid)
    local deadline = beat.clock() + 60
    repeat   -- the agent runs again (a slow one)
      assert(beat.clock() < deadline, "the loop did not resume")
      beat.sleep(0.05)
      s = c:tool(3, "LoopStatus", { loopId = id }).structuredContent.loop
    until s.status == "running" and s.phase == "agent"
    assert.equal(resumed, s.pid)
    local cancel = c:tool(4, "CancelLoop", { loopId = id, reason = "enough" })
    assert.same({ "cancelled", "enough" }, { cancel.structuredContent.status, cancel.structuredContent.reason })
    assert.is_false(require("beat.runs.proc").alive { pid = resumed })
    local recs = H.last_run(dir)
    assert.same({ "run_end", "cancelled", "enough" }, { recs[#recs].event, recs[#recs].status, recs[#recs].reason })
    assert.equal(1, #H.events(recs, "resume"))
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

  -- `beat loop ARGS` (flags first: the prompt comes last, after "--")
  local function loop(dir, a, extra, cwd)
    table.insert(a, 1, "-q")
    return H.beat({ "loop", table.unpack(a) }, { cwd = cwd or dir, env = env(extra) })
  end

  it("runs a retry loop and an optimize loop with the options asked for", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n", ["value.txt"] = "10\n" }
    local a = assert(argv { prompt = "-fix it", strategy = "retry", exitCondition = "grep -q fixed bug.txt",
      agent = FIX, maxIterations = 4, maxConsecutiveFailures = 2, cooldownMs = 50, evalTimeout = 5000,
      freshContext = false, maxDurationMs = 600000, maxCostUsd = 3.5, costPerIterationUsd = 0.01 })
    local r = loop(dir, a)
    assert.equal(0, r.code, r.stderr)
    local recs = H.last_run(dir)
    local cfg = recs[1].config
    assert.same({ "-fix it", "grep -q fixed bug.txt", 4, 2, 0.05, 5, true, 600, 3.5, 0.01 },
      { cfg.prompt, cfg.check, cfg.max_iterations, cfg.max_consecutive_failures, cfg.cooldown, cfg.check_timeout,
        cfg.continue_context, cfg.max_duration, cfg.max_cost_usd, cfg.cost_per_iteration })
    assert.equal("passed", recs[#recs].status)

    a = assert(argv { prompt = "raise it", strategy = "optimize", exitCondition = "cat value.txt", agent = SET,
      evalDirection = "maximize", maxIterations = 2, runs = 2, minRelDelta = 0.01, target = 50,
      guards = { "true", "test -f value.txt" }, workingDirectory = dir })
    r = loop(dir, a, { VALUES = "20 30" }, H.tmpdir())
    assert.equal(0, r.code, r.stderr)
    recs = H.last_run(dir)
    cfg = recs[1].config
    assert.same({ "cat value.txt", "maximize", 2, 2, 0.01, 50, { "true", "test -f value.txt" } },
      { cfg.eval, cfg.direction, cfg.max_iterations, cfg.runs, cfg.min_rel_delta, cfg.target, cfg.guard })
    assert.equal("completed", recs[#recs].status)
    assert.is_true(#H.events(recs, "guard") >= 2)   -- both guards ran
    -- unlimited iterations: another bound ends the run
    a = assert(argv { prompt = "raise it", strategy = "optimize", exitCondition = "cat value.txt", agent = SET,
      evalDirection = "maximize", maxIterations = 0, target = 30 })
    r = loop(dir, a, { VALUES = "25 30 35" })
    assert.equal(0, r.code, r.stderr)
    recs = H.last_run(dir)
    assert.same({ 0, "completed", 2 }, { recs[1].config.max_iterations, recs[#recs].status, recs[#recs].iterations })
  end)

  it("hands model, systemPrompt, permissionMode and allowedTools to the agent, and commits to gitBranch", function()
    local dir, git = H.git_repo { ["bug.txt"] = "broken\n" }
    local record = H.tmpdir() .. "/record.json"
    local a = assert(argv { prompt = "fix the bug", strategy = "retry", exitCondition = "test -f fixed.txt",
      agent = "claude", model = "sonnet", systemPrompt = "be brief", permissionMode = "dontAsk", allowedTools = "Bash",
      gitBranch = "beat-result", maxIterations = 2, maxCostUsd = 5 })
    local r = loop(dir, a, { PATH = H.root .. "/tests/fixtures/agents:" .. os.getenv("PATH"), HOME = H.tmpdir(),
      FAKE_RECORD = record, FAKE_WRITE = "fixed.txt" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local argv_seen = require("cjson").decode(H.read(record)).argv
    local seen = table.concat(argv_seen, " ")
    for _, want in ipairs { "--permission-mode dontAsk", "--model sonnet", "--append-system-prompt be brief", "--allowedTools Bash" } do
      assert.truthy(seen:find(want, 1, true), seen)
    end
    assert.matches("^%x+\n$", git("rev-parse", "beat-result"))
    assert.equal("passed", H.last_run(dir)[#H.last_run(dir)].status)
  end)

  it("runs pipelineSteps with a judge agent (evalMode agent), without a prompt or an exitCondition", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local a = assert(argv { strategy = "retry", pipelineSteps = { "find the bug", "fix it" }, agent = FIX,
      evalMode = "agent", evalPrompt = "is the bug fixed?", judgeAgent = "sh " .. H.root .. "/tests/fixtures/loop/judge.sh",
      maxIterations = 2 })
    local r = loop(dir, a, { VERDICTS = '{"pass": true, "reason": "fixed"}', JUDGE_STATE = H.tmpdir() .. "/n" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local recs = H.last_run(dir)
    local cfg = recs[1].config
    assert.same({ "pipeline", { "find the bug", "fix it" }, "pass", "is the bug fixed?" },
      { cfg.agent.name, cfg.agent.steps, cfg.check.mode, cfg.check.criteria })
    assert.equal("passed", recs[#recs].status)
  end)

  it("refuses arguments that do not go together, naming them", function()
    local base = { prompt = "p", strategy = "retry", exitCondition = "true" }
    local function with(extra, drop)
      local args = {}
      for k, v in pairs(base) do args[k] = v end
      for k, v in pairs(extra) do args[k] = v end
      if drop then args[drop] = nil end
      return args
    end
    for _, case in ipairs {
      { "guards", { "true" } }, { "runs", 3 }, { "metric", "ms" }, { "target", 1 }, { "minRelDelta", 0.1 },
      { "evalDirection", "maximize" },
    } do
      assert.same({ nil, ('CreateLoop: argument %s needs strategy "optimize"'):format(case[1]) }, { argv(with { [case[1]] = case[2] }) })
    end
    for _, case in ipairs {
      { with({ evalPrompt = "x" }), 'CreateLoop: argument evalPrompt needs evalMode "agent"' },
      { with({ judgeAgent = "claude" }), 'CreateLoop: argument judgeAgent needs evalMode "agent"' },
      { with({ strategy = "optimize", evalMode = "agent", runs = 3 }), 'CreateLoop: argument runs needs evalMode "shell" (a command\'s output to read)' },
      { with({}, "prompt"), "CreateLoop: missing required argument prompt (a string; it may be left out with pipelineSteps)" },
      { with({}, "exitCondition"), 'CreateLoop: missing required argument exitCondition (a string: the check or eval command; it may be left out with evalMode "agent")' },
      { with({ pipelineSteps = { "a" }, freshContext = false }), "CreateLoop: argument freshContext false does not go with pipelineSteps: each step is a fresh agent session" },
    } do
      assert.same({ nil, case[2] }, { argv(case[1]) })
    end
  end)

  it("says what beat loop refused in the words of the tool", function()
    for _, case in ipairs {
      { "loop: --max-cost: the agent (command) reports no cost, so the budget could not be counted: give what an iteration costs (--cost-per-iteration USD; Lua: cost_per_iteration)",
        "argument maxCostUsd: the agent (command) reports no cost, so the budget could not be counted: give what an iteration costs (costPerIterationUsd USD; Lua: cost_per_iteration)" },
      { "loop: --git-branch 'a..b' is not a valid branch name", "argument gitBranch: 'a..b' is not a valid branch name" },
      { "loop: agent command: nope is not installed or not executable (see 'beat agents')",
        "argument agent: agent command: nope is not installed or not executable (see 'beat agents')" },
      { "loop: --eval-timeout must be a duration, got 'x'", "argument evalTimeout: must be a duration, got 'x'" },
      { "work tree is in use by run mx1 (pid 42) (one loop per work tree, /w): see 'beat loop status mx1', or stop it with 'beat loop cancel mx1'",
        'the work tree /w is in use by loop mx1 (pid 42): one loop per work tree. LoopStatus {"loopId": "mx1"} shows it; CancelLoop {"loopId": "mx1"} stops it' },
      { "work tree is in use by a run that is starting (pid 42) (one loop per work tree, /w): see 'beat loop list' in a moment",
        "the work tree /w is in use by a loop that is starting (pid 42): one loop per work tree. ListLoops shows it in a moment" },
      { "the file my-file--x is odd", "the file my-file--x is odd" },
    } do
      assert.equal(case[2], control.loop_message(case[1]))
    end
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
      { timeout = 120, env = env() }))
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
