-- beat.agent: every adapter driven against fake CLIs (tests/fixtures/agents/)
-- that print what the real CLIs print in headless mode.
local beat = require "beat"
local H = require "tests.helpers"
local cjson = require "cjson"

local FAKES = H.root .. "/tests/fixtures/agents"

local function fake(name) return FAKES .. "/" .. name end

local function recorded(path)
  local data = assert(H.read(path), "the fake agent wrote no record")
  return cjson.decode(data)
end

-- The arguments after the executable.
local function args_of(rec)
  return rec.argv
end

-- Writes a file, creating its directory.
local function put(path, data)
  beat.fs.mkdir_p(path:match("^(.*)/[^/]*$"))
  H.write(path, data)
end

local function lines_of(path)
  local out = {}
  for l in (H.read(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

describe("beat.agent", function()
  local dir, record
  before_each(function()
    dir = H.tmpdir()
    record = dir .. "/record.json"
  end)
  after_each(function()
    if dir then beat.fs.rm_rf(dir) end
  end)

  describe("claude", function()
    it("runs claude -p with stream-json, gives the prompt on stdin, and parses the result record", function()
      local a = beat.agent.claude { bin = fake("claude"), env = { FAKE_RECORD = record, FAKE_WRITE = "out.txt" } }
      local prompt = "fix it; $(touch pwned) `id` \"quoted\" $HOME\nsecond line"
      local r = a:run { prompt = prompt, cwd = dir }
      assert.is_true(r.ok, r.error)
      assert.equal(0, r.code)
      local rec = recorded(record)
      assert.same({ "-p", "--output-format", "stream-json", "--verbose",
                    "--permission-mode", "acceptEdits" }, args_of(rec))
      assert.equal(prompt, rec.stdin)
      assert.is_nil(beat.fs.stat(dir .. "/pwned"))
      assert.equal("written by fake claude\n", H.read(dir .. "/out.txt"))
      assert.equal("All done.", r.text)
      assert.equal(0.0123, r.cost_usd)
      assert.equal(3, r.turns)
      assert.same(1500, r.tokens.input)
      assert.same(456, r.tokens.output)
      assert.equal("sess-0001", r.session_id)
      -- the model's prose mentions "rate limit exceeded (429)": not a rate limit
      assert.is_false(r.rate_limited)
      assert.is_nil(r.error)
      assert.is_number(r.duration)
    end)

    it("maps its options to the CLI's flags", function()
      local a = beat.agent.claude {
        bin = fake("claude"), model = "sonnet", max_turns = 7, permission_mode = "bypassPermissions",
        append_system_prompt = "Be brief.", allowed_tools = { "Edit", "Bash(git *)" },
        extra_args = { "--effort", "low" }, env = { FAKE_RECORD = record },
      }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      assert.same({ "-p", "--output-format", "stream-json", "--verbose",
                    "--permission-mode", "bypassPermissions", "--model", "sonnet",
                    "--max-turns", "7", "--append-system-prompt", "Be brief.",
                    "--allowedTools", "Edit,Bash(git *)", "--effort", "low" },
        args_of(recorded(record)))
    end)

    it("reports a rate limit from the structured records, with when to retry", function()
      local a = beat.agent.claude { bin = fake("claude"), env = { FAKE_MODE = "rate_limit" } }
      local r = a:run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.is_true(r.rate_limited)
      assert.is_number(r.retry_after)
      assert.is_true(r.retry_after > 60 and r.retry_after <= 120, tostring(r.retry_after))
      assert.matches("429", r.error)
    end)

    it("reports a turn limit as a failure with the CLI's reason", function()
      local r = beat.agent.claude { bin = fake("claude"), env = { FAKE_MODE = "max_turns" } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.is_false(r.rate_limited)
      assert.equal("Reached maximum number of turns (1)", r.error)
      assert.equal(0.004, r.cost_usd)
    end)

    it("with continue_context resumes the previous session and counts only the new cost", function()
      local a = beat.agent.claude { bin = fake("claude"), continue_context = true,
                                    env = { FAKE_RECORD = record } }
      local r1 = a:run { prompt = "first", cwd = dir }
      assert.equal(0.0123, r1.cost_usd)
      local r2 = a:run { prompt = "second", cwd = dir }
      local rec = recorded(record)
      assert.equal("--resume", rec.argv[#rec.argv - 1])
      assert.equal("sess-0001", rec.argv[#rec.argv])
      assert.equal("second", rec.stdin)
      assert.is_true(math.abs(r2.cost_usd - 0.0123) < 1e-9, tostring(r2.cost_usd))
    end)

    it("after a resumed run that died without a total, counts the next run's share once", function()
      local a = beat.agent.claude { bin = fake("claude"), continue_context = true }
      local r1 = a:run { prompt = "first", cwd = dir }
      assert.equal(0.0123, r1.cost_usd)
      local r2 = a:run { prompt = "second", cwd = dir, env = { FAKE_MODE = "dies_resumed" } }
      assert.is_false(r2.ok)
      assert.is_nil(r2.cost_usd)
      assert.equal("sess-0001", r2.session_id)
      -- the session's total is now 0.0246: 0.0123 was counted, so this run adds the rest
      local r3 = a:run { prompt = "third", cwd = dir }
      assert.is_true(math.abs(r3.cost_usd - 0.0123) < 1e-9, tostring(r3.cost_usd))
    end)

    it("lists the tools the permission mode refused, each once", function()
      local r = beat.agent.claude { bin = fake("claude"), env = { FAKE_MODE = "denied" } }
        :run { prompt = "p", cwd = dir }
      assert.is_true(r.ok)
      assert.same({ "Bash", "WebFetch" }, r.denied_tools)
      assert.is_nil(beat.agent.claude { bin = fake("claude") }:run { prompt = "p", cwd = dir }.denied_tools)
    end)

    it("starts a fresh session each run by default", function()
      local a = beat.agent.claude { bin = fake("claude"), env = { FAKE_RECORD = record } }
      a:run { prompt = "first", cwd = dir }
      a:run { prompt = "second", cwd = dir }
      local rec = recorded(record)
      for _, arg in ipairs(rec.argv) do assert.not_equal("--resume", arg) end
      assert.equal("second", rec.stdin)
    end)
  end)

  describe("the shared run machinery", function()
    it("reports a crash as ok=false with the exit code and the last stderr line", function()
      local r = beat.agent.claude { bin = fake("claude"), env = { FAKE_MODE = "crash" } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.equal(3, r.code)
      assert.is_false(r.rate_limited)
      assert.equal("exited with code 3: fatal: the fake claude crashed", r.error)
    end)

    it("reports a CLI that is not installed as ok=false, code 127", function()
      local r = beat.agent.codex { bin = "beat-no-such-agent-cli" }:run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.equal(127, r.code)
      assert.matches("beat%-no%-such%-agent%-cli: command not found", r.error)
    end)

    it("ends an agent that ignores SIGTERM, and its children, at the timeout", function()
      local m = H.marker()
      local a = beat.agent.claude { bin = fake("claude"), env = { FAKE_MODE = "slow", FAKE_MARKER = m } }
      local r = a:run { prompt = "p", cwd = dir, timeout = 0.5, grace = 0.3 }
      assert.is_false(r.ok)
      assert.is_true(r.timed_out)
      assert.equal(124, r.code)
      assert.matches("^timed out after", r.error)
      assert.same({}, H.wait_gone(m, 5))
    end)

    it("streams every output line to the transcript and each event to on_event", function()
      local events = {}
      local path = dir .. "/iter-1/agent.log"
      local r = beat.agent.claude { bin = fake("claude") }:run {
        prompt = "p", cwd = dir, transcript = path,
        on_event = function(ev) events[#events + 1] = ev.type end,
      }
      assert.is_true(r.ok)
      assert.equal(path, r.transcript)
      local lines = lines_of(path)
      assert.equal(6, #lines)
      assert.equal("system", cjson.decode(lines[1]).type)
      assert.equal("result", cjson.decode(lines[6]).type)
      assert.same({ "system", "assistant", "assistant", "user", "assistant", "result" }, events)

      r = beat.agent.claude { bin = fake("claude"), env = { FAKE_MODE = "crash" } }
        :run { prompt = "p", cwd = dir, transcript = path }
      assert.matches("%[stderr%] fatal: the fake claude crashed", H.read(path))
    end)

    it("keeps memory bounded whatever the agent prints, and finds no rate limit in prose", function()
      local path = dir .. "/noisy.log"
      local r = beat.agent.command {
        argv = { fake("cmd") }, env = { FAKE_MODE = "noisy", FAKE_NOISE = tostring(20 * 1024 * 1024) },
      }:run { prompt = "p", cwd = dir, transcript = path }
      assert.is_true(r.ok, r.error)
      assert.is_false(r.rate_limited)
      assert.is_true(#r.text <= 256 * 1024)
      assert.matches("got: p", r.text)
      assert.is_true(beat.fs.stat(path).size > 20 * 1024 * 1024)
    end)

    it("scrubs nested-session variables but keeps the ones set for the agent, and sets BEAT_*", function()
      local recipe = H.recipe(dir, ([[
        local beat = require "beat"
        local a = beat.agent.claude { bin = %q,
          env = { FAKE_RECORD = %q, CLAUDE_CODE_MINE = "set-for-agent" } }
        local r = a:run { prompt = "p", cwd = %q, iteration = 4, env = { BEAT_RUN_ID = "run-7" } }
        return r.ok and 0 or 1
      ]]):format(fake("claude"), record, dir))
      local r = H.beat({ "run", recipe }, { env = {
        CLAUDECODE = "1", CLAUDE_CODE_ENTRYPOINT = "cli", CLAUDE_CODE_SSE_PORT = "1234",
        CLAUDE_CODE_USE_BEDROCK = "1", CLAUDE_CODE_MINE = "from-shell", ANTHROPIC_MODEL = "m",
      } })
      assert.equal(0, r.code, r.stderr)
      local env = recorded(record).env
      assert.is_nil(env.CLAUDECODE)
      assert.is_nil(env.CLAUDE_CODE_ENTRYPOINT)
      assert.is_nil(env.CLAUDE_CODE_SSE_PORT)
      assert.equal("1", env.CLAUDE_CODE_USE_BEDROCK)
      assert.equal("set-for-agent", env.CLAUDE_CODE_MINE)
      assert.equal("m", env.ANTHROPIC_MODEL)
      assert.equal("4", env.BEAT_ITERATION)
      assert.equal("run-7", env.BEAT_RUN_ID)
    end)

    it("removes a variable the adapter's or the run's env sets to false", function()
      local recipe = H.recipe(dir, ([[
        local beat = require "beat"
        local a = beat.agent.claude { bin = %q, env = { FAKE_RECORD = %q, GONE_A = false } }
        local r = a:run { prompt = "p", cwd = %q, env = { GONE_B = false } }
        return r.ok and 0 or 1
      ]]):format(fake("claude"), record, dir))
      local r = H.beat({ "run", recipe }, { env = { GONE_A = "a", GONE_B = "b", KEPT_C = "c" } })
      assert.equal(0, r.code, r.stderr)
      local env = recorded(record).env
      assert.is_nil(env.GONE_A)
      assert.is_nil(env.GONE_B)
      assert.equal("c", env.KEPT_C)
    end)

    it("rejects bad options with a message naming the option", function()
      assert.has_error(function() beat.agent.claude { max_turns = "x" } end,
        'beat.agent.claude: opts.max_turns must be a positive integer, got "x"')
      assert.has_error(function() beat.agent.claude { permision_mode = "plan" } end,
        "beat.agent.claude: unknown option opts.permision_mode")
      assert.has_error(function() beat.agent.codex { sandbox = "none" } end,
        'beat.agent.codex: opts.sandbox must be "read-only", "workspace-write" or "danger-full-access", got "none"')
      assert.has_error(function() beat.agent.command {} end)
      assert.has_error(function() beat.agent.claude {}:run { cwd = dir } end,
        "beat.agent.claude:run: opts.prompt must be a string, got nil")
      assert.has_error(function() beat.agent.claude {}:run { prompt = "p", timeout = "soon" } end)
    end)
  end)

  describe("codex", function()
    it("runs codex exec --json with the prompt on stdin and parses the JSONL events", function()
      local a = beat.agent.codex { bin = fake("codex"), model = "gpt-5-codex",
                                   env = { FAKE_RECORD = record, FAKE_WRITE = "c.txt" } }
      local r = a:run { prompt = "make it faster", cwd = dir }
      assert.is_true(r.ok, r.error)
      local rec = recorded(record)
      assert.same({ "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check",
                    "--model", "gpt-5-codex", "-" }, rec.argv)
      assert.equal("make it faster", rec.stdin)
      assert.equal("Changed the file.", r.text)
      assert.same({ input = 24763, output = 122, cache_read = 24448 }, r.tokens)
      assert.equal(1, r.turns)
      assert.is_nil(r.cost_usd)
      assert.equal("0199a213-81c0-7800-8aa1-bbab2a035a53", r.session_id)
      assert.equal("written by fake codex\n", H.read(dir .. "/c.txt"))
    end)

    it("computes a cost from opts.price when the CLI reports none", function()
      local r = beat.agent.codex { bin = fake("codex"), price = { input = 1.25, output = 10 } }
        :run { prompt = "p", cwd = dir }
      assert.is_true(math.abs(r.cost_usd - (24763 * 1.25 + 122 * 10) / 1e6) < 1e-12)
    end)

    it("recognises a usage limit from turn.failed", function()
      local r = beat.agent.codex { bin = fake("codex"), env = { FAKE_MODE = "rate_limit" } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.is_true(r.rate_limited)
      assert.equal(7200, r.retry_after)
      assert.equal("You've hit your usage limit. Try again in 2 hours.", r.error)
    end)

    it("with continue_context resumes the thread with codex exec resume", function()
      local a = beat.agent.codex { bin = fake("codex"), continue_context = true,
                                   env = { FAKE_RECORD = record } }
      a:run { prompt = "one", cwd = dir }
      a:run { prompt = "two", cwd = dir }
      local rec = recorded(record)
      assert.same({ "exec", "resume", "--json", "--skip-git-repo-check", "-c",
                    'sandbox_mode="workspace-write"', "0199a213-81c0-7800-8aa1-bbab2a035a53", "-" },
        rec.argv)
      assert.equal("two", rec.stdin)
    end)
  end)

  describe("gemini", function()
    it("runs gemini headless with stream-json, the prompt on stdin, and parses the events", function()
      local a = beat.agent.gemini { bin = fake("gemini"), model = "gemini-2.5-pro",
                                    env = { FAKE_RECORD = record } }
      local r = a:run { prompt = "add tests\nplease", cwd = dir }
      assert.is_true(r.ok, r.error)
      local rec = recorded(record)
      assert.same({ "--output-format", "stream-json", "--approval-mode", "yolo", "--skip-trust",
                    "--model", "gemini-2.5-pro" }, rec.argv)
      assert.equal("add tests\nplease", rec.stdin)
      assert.equal("Done editing.", r.text)
      assert.equal(1200, r.tokens.input)
      assert.equal(300, r.tokens.output)
      assert.equal(2, r.turns)
      assert.equal("g-123", r.session_id)
    end)

    it("recognises a quota error as a rate limit", function()
      local r = beat.agent.gemini { bin = fake("gemini"), env = { FAKE_MODE = "rate_limit" } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.is_true(r.rate_limited)
      assert.equal(30, r.retry_after)
    end)

    it("explains exit code 53 as the turn limit", function()
      local r = beat.agent.gemini { bin = fake("gemini"), env = { FAKE_MODE = "max_turns" } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.equal(53, r.code)
      assert.matches("turn limit", r.error)
    end)
  end)

  describe("aider", function()
    it("gives the prompt in a message file, removes it after, and parses tokens and cost", function()
      local a = beat.agent.aider { bin = fake("aider"), model = "sonnet", files = { "src/a.c" },
                                   env = { FAKE_RECORD = record } }
      local r = a:run { prompt = "refactor\n'this' $(x)", cwd = dir }
      assert.is_true(r.ok, r.error)
      local rec = recorded(record)
      assert.equal("--message-file", rec.argv[1])
      local file = rec.argv[2]
      assert.same({ "--yes-always", "--no-auto-commits", "--no-stream", "--no-pretty",
                    "--no-check-update", "--model", "sonnet", "src/a.c" },
        { table.unpack(rec.argv, 3) })
      assert.equal("refactor\n'this' $(x)", rec.message_file)
      assert.is_nil(beat.fs.stat(file))
      assert.same({ input = 2400, output = 150 }, r.tokens)
      assert.equal(0.0125, r.cost_usd)
      assert.matches("I changed the file as asked.", r.text)
    end)

    it("recognises litellm's rate limit error", function()
      local r = beat.agent.aider { bin = fake("aider"), env = { FAKE_MODE = "rate_limit" } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.is_true(r.rate_limited)
      assert.equal(20, r.retry_after)
    end)
  end)

  describe("command", function()
    it("puts the prompt in argv in place of {prompt}, with no shell", function()
      local a = beat.agent.command { argv = { fake("cmd"), "--task={prompt}", "{prompt}" },
                                     env = { FAKE_RECORD = record } }
      local p = "a; rm -rf / $(id) `x` 100%"
      local r = a:run { prompt = p, cwd = dir }
      assert.is_true(r.ok, r.error)
      assert.same({ "--task=" .. p, p }, recorded(record).argv)
      assert.equal("", recorded(record).stdin)
      assert.matches("got: ", r.text)
    end)

    it("gives the prompt on stdin, or in a temp file it removes afterwards", function()
      local r = beat.agent.command { argv = { fake("cmd") }, env = { FAKE_RECORD = record } }
        :run { prompt = "via stdin", cwd = dir }
      assert.is_true(r.ok)
      assert.equal("via stdin", recorded(record).stdin)
      assert.matches("got: via stdin", r.text)

      r = beat.agent.command { argv = { fake("cmd"), "--prompt-file", "{prompt_file}" },
                               env = { FAKE_RECORD = record } }
        :run { prompt = "via file", cwd = dir }
      assert.is_true(r.ok)
      local rec = recorded(record)
      assert.equal("via file", rec.prompt_file_content)
      assert.is_nil(beat.fs.stat(rec.argv[2]))
    end)

    it("reports a non-zero exit as a failure and runs in cwd", function()
      local r = beat.agent.command { argv = { fake("cmd") }, env = { FAKE_EXIT = "5", FAKE_RECORD = record } }
        :run { prompt = "p", cwd = dir }
      assert.is_false(r.ok)
      assert.equal(5, r.code)
      assert.equal("exited with code 5", r.error)
      assert.equal(beat.fs.realpath(dir), recorded(record).cwd)
    end)

    it("with jsonl reads cost and tokens from a result line", function()
      local r = beat.agent.command { argv = { fake("cmd") }, jsonl = true, env = {
        FAKE_RESULT = '{"type":"result","cost_usd":0.5,"tokens":{"input":10,"output":2},"text":"fine"}' } }
        :run { prompt = "p", cwd = dir }
      assert.is_true(r.ok)
      assert.equal(0.5, r.cost_usd)
      assert.same({ input = 10, output = 2 }, r.tokens)
      assert.equal("fine", r.text)
    end)

    it("with continue_context prepends a summary of the previous iteration", function()
      local a = beat.agent.command { argv = { fake("cmd") }, continue_context = true,
                                     env = { FAKE_RECORD = record } }
      a:run { prompt = "first task", cwd = dir, iteration = 1 }
      a:run { prompt = "second task", cwd = dir, iteration = 2 }
      local stdin = recorded(record).stdin
      assert.matches("previous attempt %(iteration 1%)", stdin)
      assert.matches("first task", stdin)
      assert.matches("got: first task", stdin)
      assert.matches("second task$", stdin)
    end)
  end)

  describe("fn", function()
    it("runs a Lua function with the request as ctx and takes its table as the result", function()
      local seen
      local a = beat.agent.fn(function(ctx)
        seen = ctx
        local r = beat.exec({ "sh", "-c", "echo hi > f.txt" }, { cwd = ctx.cwd })
        return { text = "wrote f.txt", cost_usd = 0.25, ok = r.code == 0 }
      end)
      local r = a:run { prompt = "p", cwd = dir, iteration = 3, history = { { score = 1 } } }
      assert.is_true(r.ok)
      assert.equal("wrote f.txt", r.text)
      assert.equal(0.25, r.cost_usd)
      assert.equal(3, seen.iteration)
      assert.equal(1, seen.history[1].score)
      assert.equal("hi\n", H.read(dir .. "/f.txt"))
    end)

    it("reports a raised error or a false return as ok=false with the reason", function()
      local r = beat.agent.fn(function() error("no idea") end):run { prompt = "p" }
      assert.is_false(r.ok)
      assert.matches("no idea", r.error)
      r = beat.agent.fn(function() return false, "nothing to try" end):run { prompt = "p" }
      assert.is_false(r.ok)
      assert.equal("nothing to try", r.error)
    end)

    it("cancels the function and its processes at the timeout", function()
      local m = H.marker()
      local r = beat.agent.fn(function()
        beat.exec({ "sleep", m })
        return true
      end):run { prompt = "p", timeout = 0.3 }
      assert.is_false(r.ok)
      assert.is_true(r.timed_out)
      assert.equal(124, r.code)
      assert.same({}, H.wait_gone(m, 8))
    end)
  end)

  describe("pass-through options", function()
    local BASE = { "-p", "--output-format", "stream-json", "--verbose" }
    local function with_base(...)
      local out = { table.unpack(BASE) }
      for _, a in ipairs { ... } do out[#out + 1] = a end
      return out
    end

    it("claude: permission mode, tools, system prompt, model and args become its flags", function()
      local a = beat.agent.claude {
        bin = fake("claude"), permission_mode = "dontAsk", allowed_tools = { "Bash(make *)", "Edit" },
        disallowed_tools = { "WebFetch", "Bash(rm *)" }, system_prompt = "Run make test first.\nThen stop.",
        model = "claude-sonnet-4-5", args = { "--effort", "low" }, env = { FAKE_RECORD = record },
      }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      assert.same(with_base("--permission-mode", "dontAsk", "--model", "claude-sonnet-4-5",
        "--append-system-prompt", "Run make test first.\nThen stop.",
        "--allowedTools", "Bash(make *),Edit", "--disallowedTools", "WebFetch,Bash(rm *)",
        "--effort", "low"), recorded(record).argv)
    end)

    it("keeps the older names extra_args and append_system_prompt, and refuses both names at once", function()
      local a = beat.agent.claude { bin = fake("claude"), extra_args = { "--x" },
                                    append_system_prompt = "S", env = { FAKE_RECORD = record } }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      assert.same(with_base("--permission-mode", "acceptEdits", "--append-system-prompt", "S", "--x"),
        recorded(record).argv)
      assert.has_error(function() beat.agent.claude { args = { "a" }, extra_args = { "b" } } end,
        "beat.agent.claude: give opts.args or opts.extra_args (its older name), not both")
      assert.has_error(function() beat.agent.claude { system_prompt = "a", append_system_prompt = "b" } end,
        "beat.agent.claude: give opts.system_prompt or opts.append_system_prompt (its older name), not both")
    end)

    it("claude: puts the resume flag before the user's args", function()
      local a = beat.agent.claude { bin = fake("claude"), continue_context = true, args = { "--effort", "low" },
                                    env = { FAKE_RECORD = record } }
      a:run { prompt = "one", cwd = dir }
      a:run { prompt = "two", cwd = dir }
      assert.same(with_base("--permission-mode", "acceptEdits", "--resume", "sess-0001", "--effort", "low"),
        recorded(record).argv)
    end)

    it("refuses a system prompt over 100000 bytes", function()
      beat.agent.claude { system_prompt = ("x"):rep(100000) }
      assert.has_error(function() beat.agent.codex { system_prompt = ("x"):rep(100001) } end,
        "beat.agent.codex: opts.system_prompt is 100001 bytes, more than the 100000 allowed")
    end)

    it("codex: permission mode is the sandbox, the system prompt a TOML string for developer_instructions", function()
      local text = 'Line "one"\nC:\\path\ttab\1 ünï'
      local a = beat.agent.codex { bin = fake("codex"), permission_mode = "danger-full-access",
                                   system_prompt = text, model = "gpt-5-codex", args = { "--oss" },
                                   env = { FAKE_RECORD = record } }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      assert.same({ "exec", "--json", "--sandbox", "danger-full-access", "--skip-git-repo-check",
                    "-c", 'developer_instructions="Line \\"one\\"\\nC:\\\\path\\ttab\\u0001 ünï"',
                    "--model", "gpt-5-codex", "--oss", "-" }, recorded(record).argv)
    end)

    it("codex: keeps the system prompt and sandbox when it resumes a thread", function()
      local a = beat.agent.codex { bin = fake("codex"), sandbox = "read-only", system_prompt = "S",
                                   continue_context = true, env = { FAKE_RECORD = record } }
      a:run { prompt = "one", cwd = dir }
      a:run { prompt = "two", cwd = dir }
      assert.same({ "exec", "resume", "--json", "--skip-git-repo-check", "-c", 'sandbox_mode="read-only"',
                    "-c", 'developer_instructions="S"', "0199a213-81c0-7800-8aa1-bbab2a035a53", "-" },
        recorded(record).argv)
      assert.has_error(function() beat.agent.codex { sandbox = "read-only", permission_mode = "read-only" } end,
        "beat.agent.codex: give opts.permission_mode or opts.sandbox (its older name), not both")
      assert.has_error(function() beat.agent.codex { system_prompt = "bad \255 utf-8" } end)
    end)

    it("gemini: tools become a policy file, the system prompt a GEMINI.md context file, both removed after", function()
      local a = beat.agent.gemini { bin = fake("gemini"), permission_mode = "auto_edit",
        allowed_tools = { "run_shell_command" }, disallowed_tools = { "web_fetch", "google_web_search" },
        system_prompt = "Always run the tests.", model = "gemini-2.5-pro", args = { "--debug" },
        env = { FAKE_RECORD = record } }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      local rec = recorded(record)
      local argv = rec.argv
      assert.same({ "--output-format", "stream-json", "--approval-mode", "auto_edit", "--skip-trust",
                    "--model", "gemini-2.5-pro", "--policy" }, { table.unpack(argv, 1, 8) })
      assert.equal("--include-directories", argv[10])
      assert.equal("--debug", argv[12])
      assert.equal(12, #argv)
      assert.equal(argv[9]:match("^(.*)/policy%.toml$"), argv[11]:match("^(.*)/context$"))
      assert.equal("Always run the tests.", rec.attached["--include-directories"])
      local policy = rec.attached["--policy"]
      assert.matches('%[%[rule%]%]\ntoolName = "run_shell_command"\ndecision = "allow"\npriority = 900', policy)
      assert.matches('%[%[rule%]%]\ntoolName = "web_fetch"\ndecision = "deny"\npriority = 999', policy)
      assert.matches('toolName = "google_web_search"\ndecision = "deny"', policy)
      assert.is_nil(beat.fs.stat(argv[9]))
      assert.is_nil(beat.fs.stat(argv[11]))
      assert.is_nil(beat.fs.stat((argv[9]:match("^(.*)/policy%.toml$"))))
    end)

    it("gemini: no temp files without tools or a system prompt; approval_mode is the older name", function()
      local a = beat.agent.gemini { bin = fake("gemini"), approval_mode = "plan", env = { FAKE_RECORD = record } }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      assert.same({ "--output-format", "stream-json", "--approval-mode", "plan", "--skip-trust" },
        recorded(record).argv)
      assert.has_error(function() beat.agent.gemini { allowed_tools = { 'x"]' } } end,
        'beat.agent.gemini: opts.allowed_tools must be a list of Gemini tool names such as run_shell_command, got {"x\\"]"}')
    end)

    it("aider: the system prompt is a read-only file (--read), removed after the run", function()
      local a = beat.agent.aider { bin = fake("aider"), system_prompt = "Keep the API stable.",
                                   args = { "--map-tokens", "0" }, files = { "a.c" },
                                   env = { FAKE_RECORD = record } }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      local rec = recorded(record)
      assert.equal("--read", rec.argv[8])
      assert.same({ "--map-tokens", "0", "a.c" }, { table.unpack(rec.argv, 10) })
      assert.equal("Keep the API stable.", rec.attached["--read"])
      assert.is_nil(beat.fs.stat(rec.argv[9]))
      assert.has_error(function() beat.agent.aider { permission_mode = "yolo" } end,
        "beat.agent.aider: unknown option opts.permission_mode")
    end)

    it("command: args are appended to argv", function()
      local a = beat.agent.command { argv = { fake("cmd"), "--task", "{prompt}" }, args = { "--fast" },
                                     env = { FAKE_RECORD = record } }
      assert.is_true(a:run { prompt = "p", cwd = dir }.ok)
      assert.same({ "--task", "p", "--fast" }, recorded(record).argv)
    end)

    it("agent:command shows the command line and leaves no temp file behind", function()
      local cmd = beat.agent.aider { system_prompt = "S" }:command { prompt = "p" }
      assert.equal("aider", cmd.argv[1])
      assert.equal("--message-file", cmd.argv[2])
      assert.is_nil(beat.fs.stat(cmd.argv[3]))
      assert.is_nil(beat.fs.stat((cmd.argv[3]:match("^(.*)/[^/]+$"))))
    end)
  end)

  describe("named", function()
    it("splits a command line like a shell, without expanding anything", function()
      local split = beat.agent.split_words
      assert.same({ "claude", "--append-system-prompt", "be brief", "a'b", 'say "hi"', "$HOME", "~", "" },
        split([[claude --append-system-prompt 'be brief' "a'b" "say \"hi\"" $HOME ~ '']]))
      assert.same({ "a b", "c\\d" }, split([[a\ b "c\\d"]]))
      local words, err = split("claude 'oops")
      assert.is_nil(words)
      assert.equal("unterminated ' quote", err)
      assert.same({ "Bash(git *)", "Edit", "Read" }, beat.agent.split_list("Bash(git *), Edit Read"))
    end)

    it("takes a known agent name followed by arguments as that agent with those arguments", function()
      assert.same({ name = "claude", args = { "--effort", "low", "two words" } },
        beat.agent.parse_spec("claude --effort low 'two words'"))
      assert.same({ name = "command", argv = { "./my agent", "--x" } }, beat.agent.parse_spec("'./my agent' --x"))
      local a = beat.agent.named("claude --effort low", { args = { "--verbose-x" }, permission_mode = "plan",
        allowed_tools = "Bash(make *), Edit", model = "opus", system_prompt = "S" })
      assert.equal("claude", a.name)
      assert.same({ "claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "plan",
                    "--model", "opus", "--append-system-prompt", "S", "--allowedTools", "Bash(make *),Edit",
                    "--effort", "low", "--verbose-x" }, a:command { prompt = "p" }.argv)
    end)

    it("runs any other command line as a command agent, with the prompt last and args before it", function()
      local a = beat.agent.named(fake("cmd") .. " --x 'y z'", { args = { "--w" }, env = { FAKE_RECORD = record } })
      assert.equal("command", a.name)
      assert.is_true(a:run { prompt = "the task", cwd = dir }.ok)
      assert.same({ "--x", "y z", "--w", "the task" }, recorded(record).argv)
    end)

    it("raises one-line usage errors for options an agent does not take and for bad values", function()
      local function usage_of(fn)
        local ok, err = pcall(fn)
        assert.is_false(ok)
        assert.is_table(err)
        return err.usage
      end
      assert.equal("agent aider does not take permission_mode (--permission-mode): claude, codex and gemini do",
        usage_of(function() beat.agent.named("aider", { permission_mode = "yolo" }) end))
      assert.equal("agent codex does not take allowed_tools (--allowed-tools): claude and gemini do",
        usage_of(function() beat.agent.named("codex", { allowed_tools = { "Bash" } }) end))
      assert.equal("the command agent my-agent does not take model (-m/--model): claude, codex, gemini and aider do",
        usage_of(function() beat.agent.named("my-agent", { model = "x" }) end))
      assert.equal('beat.agent.claude: opts.permission_mode must be "acceptEdits", "bypassPermissions", "auto", '
        .. '"dontAsk", "plan", "manual" or "default", got "yolo"',
        usage_of(function() beat.agent.named("claude", { permission_mode = "yolo" }) end))
      assert.equal([[beat.agent.named: cannot split the agent command line "claude \"x": unterminated " quote]],
        usage_of(function() beat.agent.named('claude "x') end))
      assert.matches("^beat.agent.named: the agent must be a name",
        usage_of(function() beat.agent.named("  ") end))
    end)

    it("beat loop -a 'claude ARGS' runs Claude Code's adapter with those arguments", function()
      local work = H.git_repo { ["README"] = "x\n" }
      local r = H.loop(work, { "make out.txt", "--until", "test -f out.txt", "-a", "claude --effort 'very low'",
                               "--max-iterations", "1" },
        { PATH = FAKES .. ":" .. os.getenv("PATH"), FAKE_RECORD = record, FAKE_WRITE = "out.txt" })
      assert.equal(0, r.code, r.stderr)
      local rec = recorded(record)
      assert.same({ "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits",
                    "--effort", "very low" }, rec.argv)
      assert.matches("make out.txt", rec.stdin)
      beat.fs.rm_rf(work)
    end)

    it("a bad -a value is a usage error: exit 2, one line, nothing written", function()
      local work = H.git_repo { ["README"] = "x\n" }
      local r = H.loop(work, { "p", "--until", "true", "-a", "claude --x 'unclosed" })
      assert.equal(2, r.code)
      assert.equal([[beat: loop: --agent cannot split the agent command line "claude --x 'unclosed": unterminated ' quote]] .. "\n",
        r.stderr)
      assert.is_nil(beat.fs.stat(work .. "/.beat"))
      beat.fs.rm_rf(work)
    end)
  end)

  describe("can_run_commands", function()
    local function is_root()
      return (H.read("/proc/self/status") or ""):match("\nUid:%s+(%d+)") == "0"
    end

    it("claude: acceptEdits cannot run the check unless a Bash rule allows it", function()
      local ok, why = beat.agent.claude {}:can_run_commands { command = "make test", cwd = dir }
      assert.is_false(ok)
      assert.matches("^permission mode acceptEdits asks before running `make test`", why)
      assert.matches("%-%-allowed%-tools Bash", why)
      assert.is_true((beat.agent.claude { allowed_tools = { "Bash" } }:can_run_commands { command = "make test" }))
      assert.is_true((beat.agent.claude { allowed_tools = { "Bash(make *)" } }:can_run_commands { command = "make test" }))
      assert.is_true((beat.agent.claude { allowed_tools = { "Bash(make:*)" } }:can_run_commands { command = "make test" }))
      assert.is_false((beat.agent.claude { allowed_tools = { "Bash(npm *)" } }:can_run_commands { command = "make test" }))
      assert.is_true((beat.agent.claude { args = { "--allowedTools", "Edit,Bash" } }:can_run_commands { command = "x" }))
      ok, why = beat.agent.claude { permission_mode = "plan", allowed_tools = { "Bash" } }:can_run_commands {}
      assert.is_false(ok)
      assert.matches("plan is read%-only", why)
      ok, why = beat.agent.claude { permission_mode = "bypassPermissions", disallowed_tools = { "Bash" },
                                    env = { IS_SANDBOX = "1" } }:can_run_commands { command = "make" }
      assert.is_false(ok)
      assert.equal("Bash is denied (disallowed tools)", why)
    end)

    it("claude: reads allow rules from the project's settings files", function()
      put(dir .. "/.claude/settings.local.json", '{"permissions":{"allow":["Bash(make test)"]}}')
      local ok, why = beat.agent.claude { env = { HOME = dir .. "/home" } }
        :can_run_commands { command = "make test", cwd = dir }
      assert.is_true(ok)
      assert.equal("permission mode acceptEdits, and .claude/settings.local.json allows `make test`",
        (why:gsub(dir:gsub("%p", "%%%0") .. "/", "")))
    end)

    it("claude: bypassPermissions runs commands, but as root only with IS_SANDBOX=1", function()
      local ok, why = beat.agent.claude { permission_mode = "bypassPermissions", env = { IS_SANDBOX = false } }
        :can_run_commands { command = "make test" }
      if is_root() then
        assert.is_false(ok)
        assert.matches("as root Claude Code refuses to start in bypassPermissions mode unless IS_SANDBOX=1", why)
      else
        assert.is_true(ok)
      end
      assert.is_true((beat.agent.claude { args = { "--dangerously-skip-permissions" }, env = { IS_SANDBOX = "1" } }
        :can_run_commands { command = "make test" }))
    end)

    it("codex, gemini, aider and command agents say what they can", function()
      assert.is_true((beat.agent.codex {}:can_run_commands {}))
      local ok, why = beat.agent.codex { permission_mode = "read-only" }:can_run_commands {}
      assert.is_false(ok)
      assert.matches("cannot write files", why)
      assert.is_true((beat.agent.gemini {}:can_run_commands {}))
      ok, why = beat.agent.gemini { permission_mode = "auto_edit" }:can_run_commands {}
      assert.is_false(ok)
      assert.matches("%-%-allowed%-tools run_shell_command", why)
      assert.is_true((beat.agent.gemini { permission_mode = "default", allowed_tools = { "run_shell_command" } }
        :can_run_commands {}))
      assert.is_false((beat.agent.gemini { disallowed_tools = { "run_shell_command" } }:can_run_commands {}))
      assert.is_nil((beat.agent.aider {}:can_run_commands {}))
      assert.is_nil((beat.agent.command { argv = { "x" } }:can_run_commands {}))
    end)
  end)

  describe("credentials", function()
    local NONE = { ANTHROPIC_API_KEY = false, ANTHROPIC_AUTH_TOKEN = false, CLAUDE_CODE_OAUTH_TOKEN = false,
                   CLAUDE_CONFIG_DIR = false, CLAUDE_CODE_USE_BEDROCK = false, CLAUDE_CODE_USE_VERTEX = false,
                   CLAUDE_CODE_USE_FOUNDRY = false, OPENAI_API_KEY = false, CODEX_HOME = false,
                   GEMINI_API_KEY = false, GOOGLE_API_KEY = false, GOOGLE_GENAI_USE_VERTEXAI = false,
                   GOOGLE_GENAI_USE_GCA = false }
    local function env(extra)
      local e = { HOME = dir }
      for k, v in pairs(NONE) do e[k] = v end
      for k, v in pairs(extra or {}) do e[k] = v end
      return e
    end

    it("finds an API key variable or a login file, and says how to log in when there is neither", function()
      local src, hint = beat.agent.claude { env = env() }:credentials()
      assert.is_nil(src)
      assert.matches("claude setup%-token", hint)
      assert.equal("ANTHROPIC_API_KEY", beat.agent.claude { env = env { ANTHROPIC_API_KEY = "k" } }:credentials())
      put(dir .. "/.claude/.credentials.json", "{}")
      assert.equal("~/.claude/.credentials.json", beat.agent.claude { env = env() }:credentials())

      assert.is_nil((beat.agent.codex { env = env() }:credentials()))
      put(dir .. "/.codex/auth.json", "{}")
      assert.equal("~/.codex/auth.json", beat.agent.codex { env = env() }:credentials())

      assert.is_nil((beat.agent.gemini { env = env() }:credentials()))
      assert.equal("GEMINI_API_KEY", beat.agent.gemini { env = env { GEMINI_API_KEY = "k" } }:credentials())
      put(dir .. "/.gemini/oauth_creds.json", "{}")
      src, hint = beat.agent.gemini { env = env() }:credentials()
      assert.is_nil(src)
      assert.matches("selectedType", hint)
      put(dir .. "/.gemini/settings.json", '{"security":{"auth":{"selectedType":"oauth-personal"}}}')
      assert.equal("~/.gemini/oauth_creds.json", beat.agent.gemini { env = env() }:credentials())

      assert.equal("not needed", beat.agent.command { argv = { "x" } }:credentials())
    end)
  end)

  describe("list", function()
    it("lists every adapter, whether its CLI is on PATH, and its version", function()
      local list = require "beat.agent.list"
      local rows = list.list { path = FAKES .. ":/usr/bin:/bin" }
      local by = {}
      for _, row in ipairs(rows) do by[row.name] = row end
      for _, name in ipairs { "claude", "codex", "gemini", "aider", "command", "fn", "tune" } do
        assert.is_table(by[name], name)
      end
      assert.is_true(by.claude.installed)
      assert.equal(FAKES .. "/claude", by.claude.path)
      assert.equal("2.1.332 (Claude Code)", by.claude.version)
      assert.equal("codex-cli 0.171.0", by.codex.version)

      rows = list.list { path = "/usr/bin:/bin", bins = { claude = "beat-absent-claude" } }
      assert.is_false(rows[1].installed)
      assert.is_nil(rows[1].version)
      assert.matches("claude%s+no%s+install: npm @anthropic%-ai/claude%-code", list.format(rows))
    end)
  end)
  describe("beat agents check", function()
    -- beat with only the fake CLIs and the system's tools on PATH, HOME in dir,
    -- and none of the credentials the machine running the tests may have.
    local function check(args, extra)
      local env = { PATH = FAKES .. ":/usr/bin:/bin", HOME = dir .. "/home", IS_SANDBOX = false }
      for _, v in ipairs { "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                           "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
                           "CLAUDE_CODE_USE_FOUNDRY", "OPENAI_API_KEY", "CODEX_HOME", "GEMINI_API_KEY",
                           "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA",
                           "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY",
                           "XAI_API_KEY", "COHERE_API_KEY", "AZURE_API_KEY", "AWS_ACCESS_KEY_ID",
                           "OLLAMA_API_BASE" } do
        env[v] = false
      end
      for k, v in pairs(extra or {}) do env[k] = v end
      local argv = { "agents", "check" }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      beat.fs.mkdir_p(dir .. "/home")
      return H.beat(argv, { env = env, cwd = dir })
    end
    local function line_of(out, name)
      for l in out:gmatch("[^\n]+") do
        if l:sub(1, #name + 1) == name .. " " then return l end
      end
    end

    it("prints one line per installed CLI: version, credentials, whether it may run commands", function()
      put(dir .. "/home/.codex/auth.json", "{}")
      local r = check({}, { ANTHROPIC_API_KEY = "k" })
      assert.equal(1, r.code, r.stderr)  -- gemini has no credentials
      assert.equal(4, select(2, r.stdout:gsub("\n", "")))
      local claude = line_of(r.stdout, "claude")
      assert.matches("^claude%s+ready%s+2%.1%.332 %(Claude Code%); auth: ANTHROPIC_API_KEY; commands: no %(permission mode acceptEdits asks", claude)
      assert.matches("^codex%s+ready%s+codex%-cli 0%.171%.0; auth: ~/%.codex/auth%.json; commands: yes$", line_of(r.stdout, "codex"))
      assert.matches("^gemini%s+not ready%s+0%.61%.0; auth: none %(no GEMINI_API_KEY", line_of(r.stdout, "gemini"))
      -- aider (through litellm) takes the Anthropic key too
      assert.matches("^aider%s+ready%s+aider 0%.86%.1; auth: ANTHROPIC_API_KEY; commands: aider runs a shell command only when",
        line_of(r.stdout, "aider"))
      -- the status column starts at the same place on every line
      local col
      for l in r.stdout:gmatch("[^\n]+") do
        local at = l:find("%s%S", 7) + 1
        col = col or at
        assert.equal(col, at, l)
      end
    end)

    it("checks the agents named, with loop's flags, and exits 0 when every one is ready", function()
      put(dir .. "/.claude/settings.json", '{"permissions":{"allow":["Bash(make *)"]}}')
      local r = check({ "claude", "--command", "make test" }, { ANTHROPIC_API_KEY = "k" })
      assert.equal(0, r.code, r.stderr)
      assert.matches("^claude%s+ready%s+2%.1%.332 %(Claude Code%); auth: ANTHROPIC_API_KEY; commands: yes\n$", r.stdout)
      r = check({ "gemini", "--permission-mode", "default", "--allowed-tools", "run_shell_command" },
                { GEMINI_API_KEY = "k" })
      assert.equal(0, r.code, r.stderr)
      assert.matches("commands: yes", r.stdout)
    end)

    it("says Claude will not start in bypassPermissions as root without IS_SANDBOX=1", function()
      if (H.read("/proc/self/status") or ""):match("\nUid:%s+(%d+)") ~= "0" then
        return pending("needs root")
      end
      local r = check({ "claude --permission-mode bypassPermissions" }, { ANTHROPIC_API_KEY = "k" })
      assert.equal(1, r.code)
      assert.matches("not ready.*will not start: as root Claude Code refuses", r.stdout)
      r = check({ "claude --permission-mode bypassPermissions" }, { ANTHROPIC_API_KEY = "k", IS_SANDBOX = "1" })
      assert.equal(0, r.code, r.stdout)
    end)

    it("without names skips the CLIs that do not take the options given", function()
      local r = check({ "--permission-mode", "yolo" }, { GEMINI_API_KEY = "k" })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("^gemini%s+ready", r.stdout)
      assert.equal(1, select(2, r.stdout:gsub("\n", "")))
    end)

    it("reports a CLI that is not installed, and rejects bad input with exit 2", function()
      local r = check({ "codex" }, { PATH = "/usr/bin:/bin" })
      assert.equal(1, r.code)
      assert.matches("^codex%s+not ready%s+not installed %(npm @openai/codex%)\n$", r.stdout)
      r = check({ "aider", "--permission-mode", "yolo" })
      assert.equal(2, r.code)
      assert.equal("beat: agent aider does not take permission_mode (--permission-mode): claude, codex and gemini do\n",
        r.stderr)
      assert.equal("", r.stdout)
      r = check({ "--bogus" })
      assert.equal(2, r.code)
      assert.matches("^beat: agents check: unknown option '%-%-bogus'", r.stderr)
    end)
  end)

  describe("beat agents", function()
    it("aligns its columns whatever the length of an install hint", function()
      local list = require "beat.agent.list"
      local text = list.format(list.list { path = "/nonexistent" })
      local col
      for l in text:gmatch("[^\n]+") do
        local at = l:find("Claude Code:", 1, true) or l:find("OpenAI Codex", 1, true) or l:find("RUNS", 1, true)
                   or l:find("any program", 1, true) or l:find("a Lua function", 1, true)
        if at then
          col = col or at
          assert.equal(col, at, l)
        end
      end
      assert.matches("install: npm @anthropic%-ai/claude%-code  Claude Code", text)
    end)
  end)
end)
