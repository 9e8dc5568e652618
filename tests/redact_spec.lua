-- beat.redact, and no secret in any file of a run directory.
local beat = require "beat"
local redact = require "beat.redact"
local H = require "tests.helpers"

-- Fake secrets in real formats (none of them was ever valid).
local ANT = "sk-ant-api03-Zq3xT9vLp2Rk8WmN4bHc7Yd1Fg6Js0Ae5Uo-QrStUvWxYz12AA"
local KEYS = {
  ANT,
  "sk-proj-4fGh7Jk9Lm2Np5Qr8St1Uv3Wx6Yz0Ab",
  "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R",
  "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
  "AKIAIOSFODNN7EXAMPL3",
  "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
  "AIzaSyD-1234567890abcdefghijklmnopqrstu",
  "glpat-Ab12Cd34Ef56Gh78Ij90",
}

describe("beat.redact", function()
  it("finds secret names by their segments, not by a word inside them", function()
    for _, name in ipairs { "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
      "PGPASSWORD", "SMTP_PASS", "apiKey", "accessToken", "api-key", "client_secret", "HTTP_AUTH",
      "GOOGLE_APPLICATION_CREDENTIALS", "MYSQL_PWD", "Authorization" } do
      assert.is_true(redact.is_secret_name(name), name)
    end
    for _, name in ipairs { "tokens", "max_tokens", "input_tokens", "author", "GIT_AUTHOR_NAME",
      "keyboard", "key", "PWD", "OLDPWD", "tokenizer", "HOME", "PATH", "monkey" } do
      assert.is_false(redact.is_secret_name(name), name)
    end
  end)

  it("redacts well-known key formats and leaves ordinary text alone", function()
    for _, key in ipairs(KEYS) do
      local out = redact.text("before " .. key .. " after")
      assert.equal("before [redacted] after", out, key)
    end
    local pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1b2c3\nabcDEF==\n-----END RSA PRIVATE KEY-----"
    assert.equal("-----BEGIN RSA PRIVATE KEY-----[redacted]-----END RSA PRIVATE KEY-----",
      redact.text(pem))
    assert.equal("Authorization: Bearer [redacted]\n",
      redact.text("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_9x\n"))
    assert.equal("Authorization: Basic [redacted]", redact.text("Authorization: Basic dXNlcjpwYXNzd29yZA=="))
    local plain = "a task-force of risk-averse skeletons; the bearer of bad news; sk-learn; "
      .. "tokens: 1234, max_tokens=4096, author: Ann Example, \"input_tokens\": 52, keyboard=azerty"
    assert.equal(plain, redact.text(plain))
  end)

  it("redacts --token=X and --password X arguments and NAME=value assignments", function()
    assert.equal("run --token=[redacted] --verbose", redact.text("run --token=abc123xyz --verbose"))
    assert.equal("run --password [redacted] -v", redact.text("run --password hunter22 -v"))
    assert.equal("--api-key '[redacted]'", redact.text("--api-key 'k3y-value'"))
    assert.equal("export DB_PASSWORD=[redacted]", redact.text("export DB_PASSWORD=correct-horse-9"))
    assert.equal('{"api_key": "[redacted]", "tokens": 12}',
      redact.text('{"api_key": "abcdefgh1234", "tokens": 12}'))
    assert.same({ "tool", "--password", "[redacted]", "--token=[redacted]", "--name", "x" },
      redact.argv { "tool", "--password", "hunter2", "--token=abcdef", "--name", "x" })
  end)

  it("redacts values added at run time, also as JSON text, in texts it has seen before", function()
    local seen = "x plain-secret-value/with\"quote y"
    assert.equal(seen, redact.text(seen))          -- nothing secret yet (and the answer is kept)
    redact.add("plain-secret-value/with\"quote")
    assert.equal("x [redacted] y", redact.text("x plain-secret-value/with\"quote y"))
    assert.equal('{"v":"[redacted]"}', redact.text('{"v":"plain-secret-value\\/with\\"quote"}'))
    redact.add("short")   -- too short to redact safely
    assert.equal("short", redact.text("short"))
  end)

  it("rewrites a large file in chunks, finding keys split across every chunk boundary", function()
    local dir = H.tmpdir()
    local path = dir .. "/big.log"
    local f = assert(io.open(path, "wb"))
    local n, filler = 0, ("x"):rep(9973 - #ANT - 2) -- a prime period: keys fall at every alignment
    for _ = 1, 400 do               -- ~4 MB, one line
      f:write(filler, " ", ANT, " ")
      n = n + 1
    end
    f:write("\n-----BEGIN OPENSSH PRIVATE KEY-----\n", ("b3BlbnNzaC1rZXktdjEAAAAA\n"):rep(100),
      "-----END OPENSSH PRIVATE KEY-----\n")
    f:close()
    local size = #H.read(path)
    assert.equal(n + 1, redact.file(path))
    local data = H.read(path)
    assert.is_nil(data:find(ANT, 1, true))
    assert.is_nil(data:find("b3BlbnNzaC1rZXktdjEAAAAA", 1, true))
    local count = select(2, data:gsub("%[redacted%]", ""))
    assert.equal(n + 1, count)
    assert.equal(size - n * (#ANT - #"[redacted]") - (25 * 100 + 1 - #"[redacted]"), #data)
  end)

  it("leaves a file without secrets untouched", function()
    local dir = H.tmpdir()
    local path = dir .. "/clean.log"
    H.write(path, ("nothing to see here\n"):rep(10000))
    local inode = beat.exec({ "stat", "-c", "%i %Y", path }).stdout
    assert.equal(0, redact.file(path))
    assert.equal(inode, beat.exec({ "stat", "-c", "%i %Y", path }).stdout)
    assert.is_false(beat.fs.exists(path .. ".redacting"))
    assert.is_nil(redact.file(dir .. "/missing.log"))
  end)
end)

describe("a run's files", function()
  local TOKEN = "tok-value-not-a-known-format-71"
  local APIKEY = "plain-api-key-value-42"

  it("hold no secret from the environment, the prompt or an argument, and no snapshot message does", function()
    local dir = H.git_repo { ["a.txt"] = "broken\n" }
    H.write(dir .. "/agent.sh", ([[
echo "my token is $GITHUB_TOKEN and key %s"
echo "stderr: $MY_API_KEY" >&2
if [ "$BEAT_ITERATION" = 1 ]; then echo "failing with $GITHUB_TOKEN" >&2; exit 3; fi
echo fixed > a.txt
]]):format(ANT))
    H.write(dir .. "/check.sh", 'echo "check sees $MY_API_KEY"; echo "and $GITHUB_TOKEN" >&2; grep -q fixed a.txt\n')
    local r = H.loop(dir, { "fix a.txt --token=abcdefgh12345 " .. ANT, "--until", "sh check.sh",
      "-a", "sh agent.sh --password hunter22", "--max-iterations", "3" },
      { GITHUB_TOKEN = TOKEN, MY_API_KEY = APIKEY })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, rundir, id = H.last_run(dir)
    -- every file of the run directory
    local files = assert(beat.exec({ "find", rundir, "-type", "f" })).stdout
    local seen = {}
    for file in files:gmatch("[^\n]+") do
      local data = H.read(file)
      for _, secret in ipairs { TOKEN, APIKEY, ANT, "abcdefgh12345", "hunter22" } do
        assert.is_nil(data:find(secret, 1, true), secret .. " in " .. file)
      end
      if data:find("[redacted]", 1, true) then seen[file:match("[^/]+/[^/]+$")] = true end
    end
    assert.is_true(seen["iter-1/agent.log"] and seen["iter-2/agent.log"], files)
    assert.is_true(seen["iter-0/check.log"] and seen["iter-2/check.log"], files)
    assert.is_true(seen[id .. "/journal.jsonl"] and seen[id .. "/results.tsv"], files)
    local log = H.read(rundir .. "/iter-2/agent.log")
    assert.matches("my token is %[redacted%] and key %[redacted%]", log)
    -- snapshot commit messages
    local refs = assert(beat.exec({ "git", "for-each-ref", "--format=%(objectname)", "refs/beat/" },
      { cwd = dir })).stdout
    for commit in refs:gmatch("%x+") do
      local msg = assert(beat.exec({ "git", "log", "--format=%B", commit }, { cwd = dir })).stdout
      for _, secret in ipairs { TOKEN, APIKEY, ANT, "abcdefgh12345", "hunter22" } do
        assert.is_nil(msg:find(secret, 1, true))
      end
    end
  end)

  it("hold no key from a large agent transcript, keys split across read chunks included", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    -- ~3 MB of output: a key every 9973 bytes lands across every chunk boundary
    H.write(dir .. "/agent.sh", ([[
lua5.4 -e 'local k = "key=%s"; local pad = ("y"):rep(9973 - #k - 1)
for i = 1, 300 do io.write(pad, k, i %% 7 == 0 and "\n" or " ") end'
echo 90 > value.txt
]]):format(ANT))
    local r = H.loop(dir, { "lower it", "--eval", "cat value.txt", "-a", "sh agent.sh",
      "--max-iterations", "1" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, rundir = H.last_run(dir)
    local log = H.read(rundir .. "/iter-1/agent.log")
    assert.is_true(#log > 2500000)
    assert.is_nil(log:find("sk-ant-", 1, true))
    assert.equal(300, select(2, log:gsub("%[redacted%]", "")))
  end)

  it("keep the agent's tokens and an author field, and record the agent, not its internals", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    H.write(dir .. "/agent.sh", [[
echo 90 > value.txt
echo '{"type":"result","text":"lowered it","tokens":{"input":1234,"output":56},"cost_usd":0.01}'
]])
    local recipe = H.recipe(dir, [[
local beat = require "beat"
return (beat.strategy("optimize") {
  agent = beat.agent.command { argv = { "sh", "agent.sh", "{prompt}" }, jsonl = true,
                               env = { SERVICE_TOKEN = "agent-env-secret-99" } },
  prompt = "lower it", eval = "cat value.txt", max_iterations = 1,
})]])
    local r = H.beat({ "run", recipe }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local recs, rundir = H.last_run(dir)
    local agent = H.events(recs, "agent")[1]
    assert.same({ input = 1234, output = 56 }, agent.tokens)
    local start = H.events(recs, "run_start")[1]
    local a = start.config.agent
    assert.equal("command", a.name)
    assert.equal("sh", a.program)
    assert.same({ "sh", "agent.sh", "{prompt}" }, a.argv)
    assert.equal("arg", a.prompt_via)
    assert.equal("[redacted]", a.env.SERVICE_TOKEN)
    local data = H.read(rundir .. "/journal.jsonl")
    assert.is_nil(data:find("<function>", 1, true), data)
    assert.is_nil(data:find('"spec"', 1, true), data)
    assert.is_nil(data:find("agent-env-secret-99", 1, true))
    -- an author field written by a recipe stays readable
    local j = assert(require("beat.journal").open(rundir))
    j:write("note", { author = "Ann Example", tokens = 7, password = "hunter22" })
    local last = j:records()
    last = last[#last]
    assert.equal("Ann Example", last.author)
    assert.equal(7, last.tokens)
    assert.equal("[redacted]", last.password)
  end)
end)
