-- The real Claude Code CLI (npm @anthropic-ai/claude-code, pinned by
-- tests/fixtures/install-claude.sh) driven by beat.agent.claude against a
-- scripted fake Anthropic Messages API (tests/fixtures/fake_anthropic.js) on
-- 127.0.0.1. No network: ANTHROPIC_BASE_URL points at the fake, the key is a
-- dummy, non-essential traffic is off, HOME is a temp dir.
local beat = require "beat"
local H = require "tests.helpers"
local cjson = require "cjson"

local VERSION = "2.1.332"

local function claude_bin()
  local explicit = os.getenv("BEAT_CLAUDE_BIN")
  if explicit and explicit ~= "" then return explicit end
  local cache = os.getenv("BEAT_NPM_CACHE") or ((os.getenv("HOME") or "/root") .. "/.cache/beat-npm")
  return cache .. "/claude-code-" .. VERSION .. "/node_modules/.bin/claude"
end

local BIN = claude_bin()
local NODE = require("beat.agent.list").which("node")
local SERVER = H.root .. "/tests/fixtures/fake_anthropic.js"

-- Starts the fake API; returns its base URL, the process and the request log path.
local function start_server(dir, args)
  local port_file = dir .. "/port"
  local log = dir .. "/requests.jsonl"
  os.remove(port_file) -- a server started before in this test wrote its port there
  local argv = { NODE, SERVER, "--port-file", port_file, "--log", log, "--max-seconds", "300" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local proc = assert(beat.spawn(argv, { stdout = false, stderr = dir .. "/server.err" }))
  local deadline = beat.clock() + 20
  while beat.clock() < deadline do
    local port = H.read(port_file)
    if port and port:match("^%d+$") then
      return "http://127.0.0.1:" .. port, proc, log
    end
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

-- The result record the CLI printed, read back from the transcript.
local function result_record(transcript)
  local rec
  for line in (H.read(transcript) or ""):gmatch("[^\n]+") do
    local ok, ev = pcall(cjson.decode, line)
    if ok and type(ev) == "table" and ev.type == "result" then rec = ev end
  end
  return rec
end

local function agent_for(url, home, extra_env, opts)
  local env = {
    ANTHROPIC_BASE_URL = url, ANTHROPIC_API_KEY = "dummy-key-for-tests",
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1", DISABLE_AUTOUPDATER = "1", HOME = home,
    ANTHROPIC_AUTH_TOKEN = false, ANTHROPIC_MODEL = false, CLAUDE_CONFIG_DIR = false,
  }
  for k, v in pairs(extra_env or {}) do env[k] = v end
  local o = { bin = BIN, permission_mode = "acceptEdits", env = env }
  for k, v in pairs(opts or {}) do o[k] = v end
  return beat.agent.claude(o)
end

describe("beat.agent.claude with the real Claude Code CLI", function()
  local dir, work, home, server
  local missing
  if not beat.fs.access(BIN, "x") then
    missing = ("Claude Code %s is not installed at %s: run sh tests/fixtures/install-claude.sh")
      :format(VERSION, BIN)
  elseif not NODE then
    missing = "node is not installed: the fake Anthropic API server needs it"
  end

  before_each(function()
    dir = H.tmpdir()
    work = dir .. "/work"
    home = dir .. "/home"
    beat.fs.mkdir_p(work)
    beat.fs.mkdir_p(home)
  end)
  after_each(function()
    if server then server:kill("KILL"); server:wait(); server = nil end
    if dir then beat.fs.rm_rf(dir) end
  end)

  if missing then
    pending(missing)
    return
  end

  it("writes the file the model asked for, and beat parses the cost, turns and tokens", function()
    local url, log
    url, server, log = start_server(dir, { "--write-path", work .. "/hello.txt",
                                           "--write-content", "hello from the fake model\n" })
    local transcript = dir .. "/iter-1/agent.log"
    local r = agent_for(url, home):run {
      prompt = "Create hello.txt with a greeting.", cwd = work, timeout = 120,
      transcript = transcript, iteration = 1,
    }
    assert.is_true(r.ok, r.error)
    assert.equal(0, r.code)
    assert.equal("hello from the fake model\n", H.read(work .. "/hello.txt"))
    assert.equal("Done: wrote the file.", r.text)
    assert.equal(2, r.turns)
    assert.same(2400, r.tokens.input)
    assert.same(600, r.tokens.output)
    local rec = assert(result_record(transcript), "no result record in the transcript")
    assert.is_number(r.cost_usd)
    assert.is_true(r.cost_usd > 0)
    assert.equal(rec.total_cost_usd, r.cost_usd)
    assert.equal(rec.session_id, r.session_id)
    assert.is_false(r.rate_limited)
    -- the CLI asked the fake server twice: the tool call, then the answer to its result
    local reqs = requests(log)
    local tool_rounds = 0
    for _, q in ipairs(reqs) do
      assert.matches("^/v1/messages", q.url)
      if q.tool_result then tool_rounds = tool_rounds + 1 end
    end
    assert.equal(1, tool_rounds)
  end)

  it("resumes the session with continue_context and counts only the new run's cost", function()
    local url, log
    url, server, log = start_server(dir, { "--write-path", work .. "/hello.txt" })
    local a = agent_for(url, home, nil, { continue_context = true })
    local r1 = a:run { prompt = "Create hello.txt.", cwd = work, timeout = 120 }
    assert.is_true(r1.ok, r1.error)
    local t2 = dir .. "/iter-2/agent.log"
    local r2 = a:run { prompt = "Do it again.", cwd = work, timeout = 120, transcript = t2 }
    assert.is_true(r2.ok, r2.error)
    assert.equal(r1.session_id, r2.session_id)
    local rec = assert(result_record(t2))
    -- the CLI reports the session's running total; beat reports this run's share
    assert.is_true(rec.total_cost_usd > r1.cost_usd)
    assert.is_true(math.abs(r2.cost_usd - (rec.total_cost_usd - r1.cost_usd)) < 1e-9)
    assert.is_true(#requests(log) >= 4)
  end)

  it("sends the system prompt appended to Claude Code's own, and the model asked for", function()
    local url, log
    url, server, log = start_server(dir, { "--write-path", work .. "/hello.txt" })
    local marker = "BEAT-SYSTEM-PROMPT: run `make test` before you stop.\nSecond line."
    local r = agent_for(url, home, nil, { model = "claude-sonnet-4-5", system_prompt = marker })
      :run { prompt = "Create hello.txt.", cwd = work, timeout = 120 }
    assert.is_true(r.ok, r.error)
    local reqs = requests(log)
    assert.is_true(#reqs >= 2)
    for _, q in ipairs(reqs) do
      assert.equal("claude-sonnet-4-5", q.model)
      if q.tools then
        local system = assert(q.system, "no system prompt in the request")
        local at = system:find(marker, 1, true)
        assert.is_number(at, "the appended text is missing")
        assert.is_true(at > 1000, "Claude Code's own prompt should come first")
      end
    end
  end)

  it("offers no Bash tool when Bash is disallowed", function()
    local url, log
    url, server, log = start_server(dir, { "--write-path", work .. "/hello.txt" })
    local r = agent_for(url, home, nil, { disallowed_tools = { "Bash" } })
      :run { prompt = "Create hello.txt.", cwd = work, timeout = 120 }
    assert.is_true(r.ok, r.error)
    local offered = requests(log)[1].tools
    local set = {}
    for _, t in ipairs(offered) do set[t] = true end
    assert.is_true(set.Write, "Write should still be offered")
    assert.is_nil(set.Bash)
  end)

  it("under acceptEdits refuses a command until allowed_tools allows Bash, as can_run_commands says", function()
    local check = "python3 -c \"open('ran.txt', 'w').write('ran')\""
    local url, log
    url, server, log = start_server(dir, { "--scenario", "bash", "--bash-command", check })
    local a = agent_for(url, home)
    assert.is_false((a:can_run_commands { command = check, cwd = work }))
    local r = a:run { prompt = "Run the check.", cwd = work, timeout = 120 }
    assert.is_true(r.ok, r.error)
    assert.is_nil(beat.fs.stat(work .. "/ran.txt"))
    assert.same({ "Bash" }, r.denied_tools)
    local refused
    for _, q in ipairs(requests(log)) do
      if q.tool_result then refused = q end
    end
    assert.is_true(refused.tool_result_error)
    assert.matches("requires approval", refused.tool_result_text)
    server:kill("KILL"); server:wait()

    url, server, log = start_server(dir, { "--scenario", "bash", "--bash-command", check })
    a = agent_for(url, home, nil, { allowed_tools = { "Bash(python3 *)" } })
    assert.is_true((a:can_run_commands { command = check, cwd = work }))
    r = a:run { prompt = "Run the check.", cwd = work, timeout = 120 }
    assert.is_true(r.ok, r.error)
    assert.equal("ran", H.read(work .. "/ran.txt"))
    assert.is_nil(r.denied_tools)
  end)

  it("in bypassPermissions runs as root only with IS_SANDBOX=1, as can_run_commands says", function()
    local root = (H.read("/proc/self/status") or ""):match("\nUid:%s+(%d+)") == "0"
    local url
    url, server = start_server(dir, { "--scenario", "bash", "--bash-command", "echo ran > ran.txt" })
    local a = agent_for(url, home, { IS_SANDBOX = false }, { permission_mode = "bypassPermissions" })
    local can, why = a:can_run_commands { command = "echo ran > ran.txt", cwd = work }
    local r = a:run { prompt = "Run the check.", cwd = work, timeout = 120 }
    if root then
      assert.is_false(can)
      assert.matches("IS_SANDBOX=1", why)
      assert.is_false(r.ok)
      assert.matches("cannot be used with root", r.error)
    else
      assert.is_true(can)
      assert.is_true(r.ok, r.error)
    end
    r = agent_for(url, home, { IS_SANDBOX = "1" }, { permission_mode = "bypassPermissions" })
      :run { prompt = "Run the check.", cwd = work, timeout = 120 }
    assert.is_true(r.ok, r.error)
    assert.equal("ran\n", H.read(work .. "/ran.txt"))
  end)

  it("over three resumed iterations counts each one's cost once: the sum is what the server billed", function()
    local url, log
    url, server, log = start_server(dir, { "--write-path", work .. "/hello.txt" })
    local a = agent_for(url, home, nil, { model = "claude-sonnet-4-5", continue_context = true })
    local sum, billed_before, session = 0, 0, nil
    for i = 1, 3 do
      local r = a:run { prompt = "Write hello.txt, take " .. i .. ".", cwd = work, timeout = 120, iteration = i }
      assert.is_true(r.ok, r.error)
      if session then assert.equal(session, r.session_id) end
      session = r.session_id
      -- what the server billed for this iteration's requests alone
      local billed = 0
      for _, q in ipairs(requests(log)) do
        assert.is_number(q.billed_usd, "a request for a model without a price: " .. tostring(q.model))
        billed = billed + q.billed_usd
      end
      local this = billed - billed_before
      billed_before = billed
      assert.is_true(this > 0)
      assert.is_true(math.abs(r.cost_usd - this) < 1e-9,
        ("iteration %d: beat counted %.6f, the server billed %.6f"):format(i, r.cost_usd, this))
      sum = sum + r.cost_usd
    end
    assert.is_true(math.abs(sum - billed_before) < 1e-9, ("%.6f vs %.6f"):format(sum, billed_before))
  end)

  it("reports an API rate limit as rate_limited, with the delay the CLI was told", function()
    local url
    url, server = start_server(dir, { "--scenario", "rate_limit", "--retry-after", "1" })
    local r = agent_for(url, home, { CLAUDE_CODE_MAX_RETRIES = "1" })
      :run { prompt = "Anything.", cwd = work, timeout = 120 }
    assert.is_false(r.ok)
    assert.is_true(r.rate_limited)
    assert.is_number(r.retry_after)
    assert.is_true(r.retry_after > 0 and r.retry_after < 10, tostring(r.retry_after))
    assert.matches("429", r.error)
  end)
end)
