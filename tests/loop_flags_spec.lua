-- `beat loop`'s flags for real agents and Backbeat's loop options
-- (lua/beat/cli/loop_flags.lua): pass-through flags, --strategy,
-- --git-branch, -m, --eval-timeout, the can-it-run-the-check warning.
local beat = require "beat"
local H = require "tests.helpers"
local cjson = require "cjson"

local FAKES = H.root .. "/tests/fixtures/agents"
local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local CHECK = "grep -q fixed bug.txt"

local function claude_env(extra)
  local env = { PATH = FAKES .. ":" .. os.getenv("PATH"), HOME = H.tmpdir() }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function warnings(stderr)
  local out = {}
  for line in stderr:gmatch("[^\n]+") do
    if line:match("^beat: warning:") then out[#out + 1] = line end
  end
  return out
end

describe("beat loop's agent flags", function()
  it("hands -m, --agent-arg, --permission-mode, the tool lists and --system-prompt to the agent's CLI", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local record = H.tmpdir() .. "/record.json"
    local r = H.loop(dir, { "fix the bug", "--until", CHECK, "-a", "claude --effort low", "-m", "sonnet",
      "--agent-arg", "--x", "--agent-arg=--y", "--permission-mode", "dontAsk",
      "--allowed-tools", "Bash(make *),Edit", "--disallowed-tools", "WebFetch", "--system-prompt", "be brief",
      "--max-iterations", "1" }, claude_env { FAKE_RECORD = record })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local rec = cjson.decode(H.read(record))
    assert.same({ "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "dontAsk",
      "--model", "sonnet", "--append-system-prompt", "be brief", "--allowedTools", "Bash(make *),Edit",
      "--disallowedTools", "WebFetch", "--effort", "low", "--x", "--y" }, rec.argv)
    assert.matches("^fix the bug", rec.stdin)
  end)

  it("warns once at start when the agent's permission mode will not let it run the check", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix the bug", "--until", CHECK, "-a", "claude", "--max-iterations", "1" }, claude_env())
    local w = warnings(r.stderr)
    assert.equal(1, #w, r.stderr)
    assert.matches("^beat: warning: the agent may not run `grep %-q fixed bug%.txt` itself: permission mode "
      .. "acceptEdits asks before running `grep %-q fixed bug%.txt`", w[1])
    assert.matches("%-%-allowed%-tools Bash", w[1])
    r = H.loop(dir, { "fix the bug", "--until", CHECK, "-a", "claude", "--allowed-tools", "Bash",
      "--max-iterations", "1" }, claude_env())
    assert.same({}, warnings(r.stderr))
    -- a command agent: beat cannot tell, and says nothing
    r = H.loop(dir, { "fix the bug", "--until", CHECK, "-a", FIX, "--max-iterations", "1" })
    assert.same({}, warnings(r.stderr))
  end)

  it("refuses a pass-through flag the agent does not take, with exit 2", function()
    local dir = H.git_repo {}
    local r = H.loop(dir, { "x", "--until", "true", "-a", FIX, "--permission-mode", "plan" })
    assert.equal(2, r.code)
    assert.equal("beat: loop: --agent the command agent sh does not take permission_mode (--permission-mode): "
      .. "claude, codex and gemini do\n", r.stderr)
  end)
end)

describe("beat loop --strategy", function()
  it("takes the strategy explicitly when it agrees with --until / --eval, and refuses a conflict", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "lower it", "--strategy", "optimize", "--eval", "cat value.txt", "-a", SET,
      "--max-iterations", "1" }, { VALUES = "90" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("optimize in", r.stdout)
    for _, c in ipairs {
      { { "x", "--strategy", "retry", "--eval", "cat value.txt" }, "%-%-strategy retry conflicts with %-%-eval, which means optimize" },
      { { "x", "--strategy", "optimize", "--until", "true" }, "%-%-strategy optimize conflicts with %-%-until, which means retry" },
      { { "x", "--strategy", "best-of-n", "--until", "true" }, "%-%-strategy must be retry or optimize, got 'best%-of%-n'" },
      { { "x", "--strategy", "retry" }, "%-%-strategy retry needs %-%-until CMD %(or %-%-eval%-mode agent%)" },
    } do
      local args = { table.unpack(c[1]) }
      args[#args + 1], args[#args + 2] = "-a", SET
      local before = #(beat.fs.list(dir .. "/.beat/runs") or {})
      r = H.loop(dir, args)
      assert.equal(2, r.code, table.concat(args, " "))
      assert.matches("^beat: loop: " .. c[2] .. "\n$", r.stderr)
      assert.equal(before, #(beat.fs.list(dir .. "/.beat/runs") or {}))
    end
    assert.is_string(git("rev-parse", "HEAD"))
  end)
end)

describe("beat loop --git-branch", function()
  it("commits the kept result on a new branch made from HEAD, leaving HEAD and the work tree as --commit-to does", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local head = git("rev-parse", "HEAD")
    local r = H.loop(dir, { "lower it", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2",
      "--git-branch", "beat/result" }, { VALUES = "90 95" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("note: best result committed to branch beat/result", r.stdout)
    assert.equal("90\n", git("show", "beat/result:value.txt"))
    assert.equal(head, git("rev-parse", "beat/result^"))
    assert.equal(head, git("rev-parse", "HEAD"))
    assert.equal("refs/heads/main\n", git("symbolic-ref", "HEAD"))
    assert.equal(" M value.txt\n", git("status", "--porcelain", "--untracked-files=no"))
    assert.equal("90\n", H.read(dir .. "/value.txt"))
  end)

  it("refuses a bad branch name, and a --commit-to that names another branch", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "x", "--eval", "cat value.txt", "-a", SET, "--git-branch", "a..b" })
    assert.equal(2, r.code)
    assert.matches("^beat: loop: %-%-git%-branch must be a valid git branch name %(no '%.%.'%)", r.stderr)
    r = H.loop(dir, { "x", "--eval", "cat value.txt", "-a", SET, "--git-branch", "a", "--commit-to", "b" })
    assert.equal(2, r.code)
    assert.matches("^beat: loop: %-%-git%-branch and %-%-commit%-to name the same branch", r.stderr)
    assert.equal("", git("branch", "--list", "a", "b"))
  end)
end)

describe("beat loop --eval-timeout", function()
  it("defaults to 60 seconds, and 0 means none", function()
    local dir = H.git_repo { ["bug.txt"] = "fixed\n" }
    local r = H.loop(dir, { "x", "--until", CHECK, "-a", FIX })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(60, H.last_run(dir)[1].config.check_timeout)
    r = H.loop(dir, { "x", "--until", CHECK, "-a", FIX, "--eval-timeout", "0" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.is_nil(H.last_run(dir)[1].config.check_timeout)
    local v = H.git_repo { ["value.txt"] = "100\n" }
    r = H.loop(v, { "x", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "1" }, { VALUES = "90" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(60, H.last_run(v)[1].config.eval_timeout)
  end)

  it("ends a check that runs longer", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "x", "--until", "sleep 30", "-a", FIX, "--eval-timeout", "300ms", "--max-iterations", "1" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("iter 1   fail[^\n]*check timed out", r.stdout)
  end)
end)
