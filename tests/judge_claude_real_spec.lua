-- `beat loop --eval-mode agent` with the real Claude Code CLI (the pinned npm
-- package, tests/fixtures/install-claude.sh) as the judge, against the
-- scripted Messages API (tests/fixtures/fake_anthropic.js, scenario
-- "structured"): the verdict comes back as Claude Code's structured output
-- (--json-schema), a verdict the schema rejects is an evaluation error, and
-- the judge's cost is what the server billed. No network: ANTHROPIC_BASE_URL
-- points at the fake, the key is a dummy, HOME is a temp dir.
local beat = require "beat"
local H = require "tests.helpers"
local cjson = require "cjson"

local VERSION = "2.1.332"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"

local function claude_bin()
  local explicit = os.getenv("BEAT_CLAUDE_BIN")
  if explicit and explicit ~= "" then return explicit end
  local cache = os.getenv("BEAT_NPM_CACHE") or ((os.getenv("HOME") or "/root") .. "/.cache/beat-npm")
  return cache .. "/claude-code-" .. VERSION .. "/node_modules/.bin/claude"
end

local BIN = claude_bin()
local NODE = require("beat.agent.list").which("node")
local SERVER = H.root .. "/tests/fixtures/fake_anthropic.js"

local function start_server(dir, inputs)
  local port_file = dir .. "/port"
  local log = dir .. "/requests.jsonl"
  local proc = assert(beat.spawn({ NODE, SERVER, "--port-file", port_file, "--log", log, "--max-seconds", "300",
    "--scenario", "structured", "--structured-inputs", cjson.encode(inputs) },
    { stdout = false, stderr = dir .. "/server.err" }))
  local deadline = beat.clock() + 20
  while beat.clock() < deadline do
    local port = H.read(port_file)
    if port and port:match("^%d+$") then return "http://127.0.0.1:" .. port, proc, log end
    beat.sleep(0.05)
  end
  proc:kill("KILL")
  error("the fake Anthropic server did not start: " .. tostring(H.read(dir .. "/server.err")))
end

local function requests(log)
  local out = {}
  for line in (H.read(log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

-- The environment of a `beat loop` whose `claude` is the pinned CLI talking to the fake.
local function env_for(url, home)
  local bindir = BIN:match("^(.*)/[^/]+$")
  return {
    PATH = bindir .. ":" .. os.getenv("PATH"), HOME = home,
    ANTHROPIC_BASE_URL = url, ANTHROPIC_API_KEY = "dummy-key-for-tests",
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1", DISABLE_AUTOUPDATER = "1",
    ANTHROPIC_AUTH_TOKEN = false, ANTHROPIC_MODEL = false, CLAUDE_CONFIG_DIR = false,
  }
end

describe("the real Claude Code CLI as the judge", function()
  local dir, home, server
  local missing
  if not beat.fs.access(BIN, "x") then
    missing = ("Claude Code %s is not installed at %s: run sh tests/fixtures/install-claude.sh"):format(VERSION, BIN)
  elseif not NODE then
    missing = "node is not installed: the fake Anthropic API server needs it"
  end

  before_each(function()
    dir = H.tmpdir()
    home = dir .. "/home"
    beat.fs.mkdir_p(home)
  end)
  after_each(function()
    if server then server:kill("KILL"); server:wait(); server = nil end
  end)

  if missing then
    pending(missing)
    return
  end

  it("returns its verdict as structured output (--json-schema), and its cost is what the server billed", function()
    local url, log
    url, server, log = start_server(dir, { { pass = false, reason = "the bug is still there" },
                                           { pass = true, reason = "bug.txt says fixed" } })
    local work = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(work, { "fix the bug", "--until", "cat bug.txt", "-a", FIX, "--eval-mode", "agent",
      "--judge-agent", "claude --model claude-sonnet-4-5", "--agent-timeout", "120s" }, env_for(url, home))
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("passed: the check passed on iteration 1", r.stdout)
    local recs, rundir = H.last_run(work)
    local judged = H.events(recs, "judge")
    assert.equal(2, #judged)
    assert.same({ false, true }, { judged[1].pass, judged[2].pass })
    assert.equal("bug.txt says fixed", judged[2].reason)
    -- Claude Code printed the verdict as the result's structured_output
    local result
    for line in H.read(rundir .. "/iter-1/judge.log"):gmatch("[^\n]+") do
      local ok, ev = pcall(cjson.decode, line)
      if ok and type(ev) == "table" and ev.type == "result" then result = ev end
    end
    assert.same({ pass = true, reason = "bug.txt says fixed" }, result.structured_output)
    -- every request offered the StructuredOutput tool; the judge's prompt carried the check output
    local reqs = requests(log)
    local billed = 0
    for _, q in ipairs(reqs) do
      if q.billed_usd then billed = billed + q.billed_usd end
      if q.tools then
        local offered = {}
        for _, t in ipairs(q.tools) do offered[t] = true end
        assert.is_true(offered.StructuredOutput)
      end
    end
    -- the working agent (a script) costs nothing: the run's cost is the judge's
    local last = recs[#recs]
    assert.is_true(billed > 0)
    assert.is_true(math.abs(last.cost_usd - billed) < 1e-9, ("%s vs %s"):format(last.cost_usd, billed))
    assert.is_true(math.abs((judged[1].cost_usd + judged[2].cost_usd) - billed) < 1e-9)
  end)

  it("counts a verdict the schema rejects as an evaluation error, retried once, never a pass", function()
    local url
    url, server = start_server(dir, { { pass = "maybe" } })
    local work = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(work, { "fix the bug", "--strategy", "retry", "-a", FIX, "--eval-mode", "agent",
      "--judge-agent", "claude", "--max-iterations", "1", "--agent-timeout", "120s" }, env_for(url, home))
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local recs = H.last_run(work)
    local judged = H.events(recs, "judge")
    assert.equal(4, #judged)
    for _, j in ipairs(judged) do
      assert.is_false(j.ok)
      assert.is_nil(j.pass)
      -- the CLI refused the tool call, so its answer was prose
      assert.equal("the answer holds no JSON verdict", j.error)
    end
    local d = H.events(recs, "decision")
    assert.same({ "fail", "fail" }, { d[1].status, d[2].status })
    assert.matches("check error: the judge gave no verdict %(2 attempts%)", d[2].summary)
  end)
end)
