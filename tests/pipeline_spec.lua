-- beat.agent.pipeline and `beat loop --pipeline --step ...`: each iteration
-- runs the steps in order, each a fresh agent run, then the check or eval once.
local beat = require "beat"
local H = require "tests.helpers"

local STEP = "sh " .. H.root .. "/tests/fixtures/loop/step.sh"
local FAKES = H.root .. "/tests/fixtures/agents"

local function prompts(path)
  local out = {}
  for p in (H.read(path) or ""):gmatch("(.-)\n===\n") do out[#out + 1] = p end
  return out
end

describe("pipelines", function()
  it("runs the steps in order, each seeing the steps before it, then the check once; journals each step", function()
    local dir = H.git_repo { ["README"] = "x\n" }
    local log = H.tmpdir() .. "/prompts"
    local r = H.loop(dir, { "--pipeline", "--step", "first: write a test", "--step", "second: make it pass",
      "--until", "grep -q second work.txt", "-a", STEP }, { PROMPT_LOG = log })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("passed: the check passed on iteration 1", r.stdout)
    assert.equal("iteration 1: first: write a test\niteration 1: second: make it pass\n", H.read(dir .. "/work.txt"))
    local recs, rundir = H.last_run(dir)
    assert.equal(1, #H.events(recs, "agent"))
    assert.equal(2, #H.events(recs, "check"))       -- before any change, and once after the steps
    local steps = H.events(recs, "agent_step")
    assert.equal(2, #steps)
    assert.same({ 1, 2 }, { steps[1].step, steps[2].step })
    assert.same({ 2, 2 }, { steps[1].of, steps[2].of })
    assert.same({ 1, 1 }, { steps[1].iteration, steps[2].iteration })
    assert.same({ true, true }, { steps[1].ok, steps[2].ok })
    assert.equal("agent-step-2.log", steps[2].transcript)
    -- step 2's transcript shows the work tree step 1 left
    assert.matches("work.txt before this step:\niteration 1: first: write a test\n",
      H.read(rundir .. "/iter-1/agent-step-2.log"))
    assert.matches("step 1 of 2: ok", H.read(rundir .. "/iter-1/agent.log"))
    local p = prompts(log)
    assert.equal(2, #p)
    assert.matches("^first: write a test\n\n%(This is step 1 of 2 of one iteration%.", p[1])
    assert.matches("^second: make it pass\n\n%(This is step 2 of 2", p[2])
    assert.matches("Each iteration runs these steps in order:\n1%. first: write a test\n2%. second: make it pass", p[2])
    local cfg = recs[1].config
    assert.equal("pipeline", cfg.agent.name)
    assert.same({ "first: write a test", "second: make it pass" }, cfg.agent.steps)
    assert.equal("command", cfg.agent.agent.name)
  end)

  it("gives every step the task and the failing check's output of the previous iteration", function()
    local dir = H.git_repo { ["README"] = "x\n" }
    local log = H.tmpdir() .. "/prompts"
    local r = H.loop(dir, { "build the feature", "--pipeline", "--step", "plan", "--step", "code",
      "--until", "grep -q 'iteration 2: code' work.txt", "-a", STEP }, { PROMPT_LOG = log })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local p = prompts(log)
    assert.equal(4, #p)
    for i = 1, 4 do assert.matches("The iteration's task and context:\nbuild the feature", p[i]) end
    assert.matches("Previous attempt %(iteration 1 of 10%): The check exited 1", p[3])
    assert.matches("Previous attempt %(iteration 1 of 10%): The check exited 1", p[4])
  end)

  it("sums the steps' cost into the iteration's, which --max-cost counts", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix it", "--pipeline", "--step", "a", "--step", "b", "--until", "grep -q fixed bug.txt",
      "-a", "claude", "--max-cost", "1.2", "--max-failures", "9" },
      { PATH = FAKES .. ":" .. os.getenv("PATH"), HOME = H.tmpdir(), FAKE_COST = "0.25", FAKE_WRITE = "attempt.txt" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("cost budget of %$1%.20: %$1%.00 spent, and the next iteration would cost about %$0%.50", r.stdout)
    local recs = H.last_run(dir)
    local agents = H.events(recs, "agent")
    assert.equal(2, #agents)
    for _, a in ipairs(agents) do assert.is_true(math.abs(a.cost_usd - 0.5) < 1e-9) end
    local steps = H.events(recs, "agent_step")
    assert.equal(4, #steps)
    for _, s in ipairs(steps) do assert.equal(0.25, s.cost_usd) end
  end)

  it("resumes a rate-limited iteration at the step that was limited, not from the first step", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local out = H.tmpdir() .. "/calls"
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      local limited = false
      local inner = beat.agent.fn(function(ctx)
        local step = ctx.prompt:match("^(%%S+)")
        local f = io.open(%q, "a"); f:write(step, "\n"); f:close()
        if step == "two" and not limited then
          limited = true
          return { ok = false, rate_limited = true, retry_after = 0.05, error = "429" }
        end
        local g = io.open(ctx.cwd .. "/bug.txt", "a"); g:write(step, "\n"); g:close()
        return { cost_usd = 0.01 }
      end)
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = "grep -q three bug.txt", max_iterations = 1,
        agent = beat.agent.pipeline { agent = inner, steps = { "one", "two", "three" } },
      })
    ]]):format(out, dir))
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("one\ntwo\ntwo\nthree\n", H.read(out))
    assert.equal("broken\none\ntwo\nthree\n", H.read(dir .. "/bug.txt"))
    local recs = H.last_run(dir)
    assert.equal(1, #H.events(recs, "rate_limited"))
    local steps = H.events(recs, "agent_step")
    assert.same({ 1, 2, 2, 3 }, { steps[1].step, steps[2].step, steps[3].step, steps[4].step })
    assert.is_true(steps[2].rate_limited)
  end)

  it("ends the iteration at a failing step: the steps after it do not run", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      local ran = {}
      local inner = beat.agent.fn(function(ctx)
        local step = ctx.prompt:match("^(%%S+)")
        ran[#ran + 1] = step
        if step == "one" then return false, "cannot plan" end
        return true
      end)
      local code = beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = "false", max_iterations = 1,
        agent = beat.agent.pipeline { agent = inner, steps = { "one", "two" } },
      }
      if #ran ~= 1 or ran[1] ~= "one" then print("ran: " .. table.concat(ran, ",")); return 42 end
      return code
    ]]):format(dir))
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local d = H.events(H.last_run(dir), "decision")
    assert.equal("crash", d[2].status)
    assert.matches("agent failed: step 1 of 2: cannot plan", d[2].summary)
  end)

  it("refuses pipeline flags that do not fit, with exit 2", function()
    local dir = H.git_repo {}
    for _, c in ipairs {
      { { "x", "--until", "true", "--step", "a", "-a", STEP }, "%-%-step needs %-%-pipeline" },
      { { "--pipeline", "--until", "true", "-a", STEP }, "%-%-pipeline needs at least one %-%-step PROMPT" },
      { { "--pipeline", "--step", "a", "--until", "true", "--continue-context", "-a", STEP },
        "%-%-continue%-context does not go with %-%-pipeline" },
      { { "--until", "true", "-a", STEP }, "missing PROMPT" },
    } do
      local r = H.loop(dir, c[1])
      assert.equal(2, r.code, table.concat(c[1], " ") .. ": " .. r.stderr)
      assert.matches("^beat: loop: " .. c[2], r.stderr)
      assert.is_nil(r.stderr:find("\n.", 1))
    end
  end)

  it("is an agent like any other: it checks its options and passes on what its agent reports", function()
    local a = beat.agent
    assert.has_error(function() a.pipeline { agent = a.command { argv = { "x" } }, steps = {} } end,
      "beat.agent.pipeline: opts.steps must list at least one step prompt")
    assert.has_error(function() a.pipeline { steps = { "a" } } end)
    local p = a.pipeline { agent = a.command { argv = { "x" } }, steps = { "s" } }
    assert.is_false(p:reports_cost())
    assert.equal("not needed", p:credentials())
    assert.is_true(a.pipeline { agent = a.claude {}, steps = { "s" } }:reports_cost())
    local can, why = a.pipeline { agent = a.claude { permission_mode = "plan" }, steps = { "s" } }
      :can_run_commands { command = "make test" }
    assert.is_false(can)
    assert.matches("plan is read%-only", why)
  end)
end)
