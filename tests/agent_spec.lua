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
end)
