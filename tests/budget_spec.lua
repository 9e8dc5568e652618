-- beat.budget: --max-cost never lets a run start an iteration expected to
-- cross the budget, says so, and refuses agents it cannot count.
local beat = require "beat"
local H = require "tests.helpers"

local FAKES = H.root .. "/tests/fixtures/agents"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local CHECK = "grep -q fixed bug.txt"

-- The fake claude on PATH, in a HOME of its own (no settings files).
local function claude_env(extra)
  local env = { PATH = FAKES .. ":" .. os.getenv("PATH"), HOME = H.tmpdir() }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function nothing_written(dir, git)
  assert.same({}, beat.fs.list(dir .. "/.beat/runs") or {})
  assert.equal("", git("for-each-ref", "refs/beat/"))
end

describe("cost budgets", function()
  it("stops before the iteration that would cross --max-cost: $0.40 an iteration, $1 budget, 2 iterations", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix the bug", "--until", CHECK, "-a", "claude", "--max-cost", "1",
      "--max-iterations", "10", "--max-failures", "10" },
      claude_env { FAKE_COST = "0.40", FAKE_WRITE = "attempt.txt" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("failed: cost budget of %$1%.00: %$0%.80 spent, and the next iteration would cost about %$0%.40 %(the mean so far%), past the budget", r.stdout)
    assert.matches("2 iterations in [^\n]*; agent cost %$0%.80", r.stdout)
    assert.is_nil(r.stdout:find("note: the cost budget", 1, true))
    local recs = H.last_run(dir)
    assert.equal(2, #H.events(recs, "agent"))
    local last = recs[#recs]
    assert.is_true(math.abs(last.cost_usd - 0.8) < 1e-9)
    assert.is_true(last.cost_usd <= 1)
  end)

  it("reports an overshoot honestly when one iteration costs more than the mean", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      local costs = { 0.2, 0.2, 0.9, 0.1 }
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = %q, max_cost_usd = 1.0, max_iterations = 6,
        max_consecutive_failures = 9,
        agent = beat.agent.fn(function(ctx)
          local f = io.open(ctx.cwd .. "/attempt.txt", "w"); f:write(ctx.iteration); f:close()
          return { cost_usd = costs[ctx.iteration] }
        end),
      })
    ]]):format(dir, CHECK))
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("failed: cost budget of %$1%.00 reached %(%$1%.30 spent%)", r.stdout)
    assert.matches("note: the cost budget of %$1%.00 was crossed: %$1%.30 spent, %$0%.30 over %(an iteration cost more than expected%)", r.stdout)
    assert.equal(3, #H.events(H.last_run(dir), "agent"))
  end)

  it("refuses --max-cost for an agent that reports no cost: exit 2, one line, nothing written", function()
    local dir, git = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", CHECK, "-a", FIX, "--max-cost", "1" })
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.equal("", r.stdout)
    assert.equal("beat: loop: --max-cost: the agent (command sh) reports no cost, so the budget could not be counted: "
      .. "give what an iteration costs (--cost-per-iteration USD; Lua: cost_per_iteration)\n", r.stderr)
    nothing_written(dir, git)
    -- codex reports tokens only: the same, unless it is given prices
    r = H.loop(dir, { "fix", "--until", CHECK, "-a", "codex", "--max-cost", "1" }, claude_env())
    assert.equal(2, r.code, r.stdout .. r.stderr)
    assert.matches("the agent %(codex%) reports no cost", r.stderr)
    nothing_written(dir, git)
  end)

  it("counts --cost-per-iteration for an agent that reports no cost, and says the cost is an estimate", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", CHECK, "-a", FIX, "--max-cost", "1", "--cost-per-iteration", "0.3",
      "--max-iterations", "10" }, { FIX_AT = "99" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("cost budget of %$1%.00: %$0%.90 spent, and the next iteration would cost about %$0%.30", r.stdout)
    assert.matches("note: 3 agent runs reported no cost: each was counted as %$0%.30 %(cost_per_iteration, an estimate%)", r.stdout)
    assert.equal(3, #H.events(H.last_run(dir), "agent"))
  end)

  it("does not start the first iteration when --cost-per-iteration alone would cross the budget", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", CHECK, "-a", FIX, "--max-cost", "1", "--cost-per-iteration", "2" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("cost budget of %$1%.00: %$0%.00 spent, and the next iteration would cost about %$2%.00 %(cost_per_iteration%)", r.stdout)
    assert.equal(0, #H.events(H.last_run(dir), "agent"))
  end)

  it("knows which agents report their cost", function()
    local a = beat.agent
    assert.is_true(a.claude {}:reports_cost())
    assert.is_true(a.aider {}:reports_cost())
    assert.is_false(a.codex {}:reports_cost())
    assert.is_true(a.codex { price = { input = 1, output = 2 } }:reports_cost())
    assert.is_false(a.gemini {}:reports_cost())
    assert.is_false(a.command { argv = { "x" } }:reports_cost())
    assert.is_nil(a.command { argv = { "x" }, jsonl = true }:reports_cost())
    assert.is_nil(a.fn(function() end):reports_cost())
  end)
end)
