-- beat.judge: an agent as the check or the eval (`--eval-mode agent`),
-- driven through `beat loop` with a fake judge agent (tests/fixtures/loop/judge.sh).
local beat = require "beat"
local H = require "tests.helpers"

local JUDGE = "sh " .. H.root .. "/tests/fixtures/loop/judge.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"

local function prompts(path)
  local out = {}
  for p in (H.read(path) or ""):gmatch("(.-)\n===\n") do out[#out + 1] = p end
  return out
end

local function statuses(dir)
  local out = {}
  for _, d in ipairs(H.events(H.last_run(dir), "decision")) do out[#out + 1] = d.status end
  return out
end

describe("an agent as the evaluator (--eval-mode agent)", function()
  it("retry: passes when the judge says pass, and the judge sees the diff, the check's output and the criteria", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local tmp = H.tmpdir()
    local r = H.loop(dir, { "fix the bug", "--until", "cat bug.txt", "-a", FIX, "--eval-mode", "agent",
      "--judge-agent", JUDGE, "--eval-prompt", "bug.txt must say fixed" },
      { JUDGE_STATE = tmp .. "/n", JUDGE_LOG = tmp .. "/judge", FIX_AT = "2",
        VERDICTS = '{"pass": false, "reason": "nothing done yet"}|{"pass": false, "reason": "still broken"}|'
          .. '{"pass": true, "reason": "bug.txt says fixed"}' })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("passed: the check passed on iteration 2", r.stdout)
    assert.same({ "fail", "fail", "pass" }, statuses(dir))
    assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
    -- what the judge wrote is undone
    assert.is_nil(beat.fs.stat(dir .. "/judge-was-here.txt"))
    local p = prompts(tmp .. "/judge")
    assert.equal(3, #p)
    assert.matches("You are in a fresh session", p[1])
    assert.matches("The agent's task:\nfix the bug", p[1])
    assert.matches("What to judge:\nbug.txt must say fixed", p[1])
    assert.matches("No change yet", p[1])
    assert.matches("The command `cat bug.txt` exited 0; the end of its output:\n```\nbroken", p[1])
    assert.matches('{"pass": true or false, "reason"', p[1])
    -- iteration 2: the diff since the run started, both attempts' files
    assert.matches("The change since the run started %(everything the agent changed so far%): 2 files", p[3])
    assert.matches("%+fixed", p[3])
    assert.matches("%+attempt 2", p[3])
    local recs, rundir = H.last_run(dir)
    local judged = H.events(recs, "judge")
    assert.equal(3, #judged)
    assert.same({ false, false, true }, { judged[1].pass, judged[2].pass, judged[3].pass })
    assert.equal("bug.txt says fixed", judged[3].reason)
    assert.matches("judge %(command%): pass\nbug.txt says fixed", H.read(rundir .. "/iter-2/check.log"))
    assert.matches("I read the diff", H.read(rundir .. "/iter-2/judge.log"))
    -- the next prompt carried the judge's reason
    local agent_rec = H.events(recs, "agent")
    assert.equal(2, #agent_rec)
  end)

  it("counts a verdict that does not parse as an evaluation error, retries it once, and never passes on it", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local tmp = H.tmpdir()
    local r = H.loop(dir, { "fix the bug", "--strategy", "retry", "-a", FIX, "--eval-mode", "agent",
      "--judge-agent", JUDGE, "--max-iterations", "2", "--max-failures", "5" },
      { JUDGE_STATE = tmp .. "/n", FIX_AT = "1",
        -- iteration 0: fail; 1: garbage twice; 2: a wrong type, then a real verdict
        VERDICTS = '{"pass": false, "reason": "no"}|garbage|{"pass": "yes", "reason": "looks fine"}|'
          .. '{"pass": "yes"}|{"pass": true, "reason": "done"}' })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local recs, rundir = H.last_run(dir)
    local d = H.events(recs, "decision")
    assert.same({ "fail", "fail", "pass" }, { d[1].status, d[2].status, d[3].status })
    assert.matches("check error: the judge gave no verdict %(2 attempts%)", d[2].summary)
    local judged = H.events(recs, "judge")
    assert.equal(5, #judged)
    assert.same({ 0, 1, 1, 2, 2 }, { judged[1].iteration, judged[2].iteration, judged[3].iteration,
      judged[4].iteration, judged[5].iteration })
    assert.same({ 1, 1, 2, 1, 2 }, { judged[1].attempt, judged[2].attempt, judged[3].attempt,
      judged[4].attempt, judged[5].attempt })
    assert.matches("no JSON verdict", judged[2].error)
    assert.matches('"pass" must be true or false, got "yes"', judged[3].error)
    assert.is_true(judged[5].pass)
    assert.is_truthy(beat.fs.stat(rundir .. "/iter-1/judge-2.log"))
    assert.matches("evaluation error, 2 attempts", H.read(rundir .. "/iter-1/check.log"))
  end)

  it("never passes when the judge crashes twice", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local tmp = H.tmpdir()
    local r = H.loop(dir, { "fix the bug", "--strategy", "retry", "-a", FIX, "--eval-mode", "agent",
      "--judge-agent", JUDGE, "--max-iterations", "1" }, { JUDGE_STATE = tmp .. "/n", VERDICTS = "crash" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local d = H.events(H.last_run(dir), "decision")
    assert.same({ "fail", "fail" }, { d[1].status, d[2].status })
    assert.matches("the judge agent failed: exited with code 3", d[2].summary)
  end)

  it("optimize: keeps what the judge scores higher, and tells it the best score so far", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local tmp = H.tmpdir()
    local r = H.loop(dir, { "make it nicer", "--strategy", "optimize", "-a", SET, "--eval-mode", "agent",
      "--judge-agent", JUDGE, "--max-iterations", "2" },
      { JUDGE_STATE = tmp .. "/n", JUDGE_LOG = tmp .. "/judge", VALUES = "90 80",
        VERDICTS = '{"score": 10, "reason": "baseline"}|{"score": 20.5, "reason": "better"}|'
          .. '{"score": 15, "reason": "worse"}' })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.same({ "baseline", "keep", "discard" }, statuses(dir))
    assert.matches("best: score 20%.5 %(baseline: score 10%)", r.stdout)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
    local p = prompts(tmp .. "/judge")
    assert.matches("Higher scores are better", p[1])
    assert.matches('{"score": <a number>', p[1])
    assert.matches("The change since the best version so far %(score 20%.5%): 1 file, %+1 %-1", p[3])
    assert.matches("%-90\n%+80", p[3])
  end)

  it("refuses judge flags that do not fit, with exit 2", function()
    local dir = H.git_repo {}
    for _, c in ipairs {
      { { "x", "--eval-mode", "agent", "-a", FIX }, "%-%-eval%-mode agent needs %-%-strategy retry|optimize" },
      { { "x", "--until", "true", "--eval-prompt", "p", "-a", FIX }, "%-%-eval%-prompt needs %-%-eval%-mode agent" },
      { { "x", "--until", "true", "--judge-agent", "sh", "-a", FIX }, "%-%-judge%-agent needs %-%-eval%-mode agent" },
      { { "x", "--until", "true", "--eval-mode", "vibes", "-a", FIX }, "%-%-eval%-mode must be command or agent, got 'vibes'" },
      { { "x", "--strategy", "optimize", "--eval-mode", "agent", "--runs", "3", "-a", FIX }, "%-%-runs needs a command eval" },
      { { "x", "--strategy", "retry", "--eval-mode", "agent", "--direction", "maximize", "-a", FIX },
        "%-%-direction needs %-%-strategy optimize" },
      { { "x", "--strategy", "retry", "--eval-mode", "agent", "--judge-agent", "claude 'x", "-a", FIX },
        "%-%-judge%-agent cannot split the agent command line" },
    } do
      local r = H.loop(dir, c[1])
      assert.equal(2, r.code, table.concat(c[1], " ") .. ": " .. r.stderr)
      assert.matches("^beat: loop: " .. c[2], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
    end
  end)
end)

describe("beat.judge", function()
  local judge = require "beat.judge"

  it("finds the verdict: structured output, the whole answer, a json block, or the last object", function()
    assert.same({ pass = true, reason = "x" }, (judge.parse({ structured_output = { pass = true, reason = "x" } }, "pass")))
    assert.same({ pass = false }, (judge.parse({ text = ' {"pass": false} ' }, "pass")))
    assert.same({ score = 7 }, (judge.parse({ text = 'so:\n```json\n{"score": 7}\n```\nbye' }, "score")))
    assert.same({ score = 3, reason = "b" },
      (judge.parse({ text = 'first {"score": 1} then {"note": {"x": "}"}} and {"score": 3, "reason": "b"}' }, "score")))
    local v, why = judge.parse({ text = '{"score": "high"}' }, "score")
    assert.is_nil(v)
    assert.matches('"score" must be a finite number, got "high"', why)
    v, why = judge.parse({ text = "looks good to me" }, "pass")
    assert.is_nil(v)
    assert.equal("the answer holds no JSON verdict", why)
    v, why = judge.parse({ structured_output = { pass = 1 } }, "pass")
    assert.is_nil(v)
    assert.matches("structured output is not a verdict", why)
  end)

  it("gives Claude Code the verdict's JSON schema with --json-schema, once per mode", function()
    local j = judge { agent = beat.agent.claude { model = "sonnet", args = { "--effort", "low" } } }
    local a = j:_agent("pass")
    local argv = a:command { prompt = "p" }.argv
    local at
    for i, x in ipairs(argv) do if x == "--json-schema" then at = i end end
    assert.is_number(at)
    assert.same({ type = "object", additionalProperties = false, required = { "pass", "reason" },
      properties = { pass = { type = "boolean" }, reason = { type = "string" } } }, beat.json.decode(argv[at + 1]))
    assert.equal("--effort", argv[at - 2])
    assert.equal(a, j:_agent("pass"))
    assert.matches('"score"', j:_agent("score"):command { prompt = "p" }.argv[at + 1])
    -- other agents are asked in the prompt, as they are
    local c = beat.agent.command { argv = { "x" } }
    assert.equal(c, judge { agent = c }:_agent("pass"))
  end)

  it("raises on bad options, naming them", function()
    assert.has_error(function() judge {} end, "beat.judge: opts.agent must be an agent (beat.agent.claude{}, ...), got nil")
    assert.has_error(function() judge { agent = beat.agent.command { argv = { "x" } }, mode = "grade" } end)
    assert.has_error(function() judge { agent = beat.agent.command { argv = { "x" } }, command = "" } end,
      'beat.judge: opts.command must be a command, got ""')
  end)
end)
