-- strategies/retry.lua, driven through `beat loop --until` and recipes.
local beat = require "beat"
local H = require "tests.helpers"

local FIX = H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local CHECK = "grep -q fixed bug.txt"

local loop = H.loop

describe("retry", function()
  it("passes when the agent fixes the check on iteration 3, building on each attempt", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local log = H.tmpdir() .. "/prompts"
    local r = loop(dir, { "fix the bug", "--until", CHECK, "-a", "sh " .. FIX }, { PROMPT_LOG = log })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("passed: the check passed on iteration 3", r.stdout)
    assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
    assert.equal("attempt 3\n", H.read(dir .. "/attempt.txt"))
    local recs = H.last_run(dir)
    assert.equal(3, #H.events(recs, "agent"))
    assert.equal("run_end", recs[#recs].event)
    assert.equal("passed", recs[#recs].status)
    -- the failing check's output reached the next prompt
    local prompts = H.read(log)
    assert.matches("Previous attempt", prompts)
    assert.matches("exited 1", prompts)
  end)

  it("does not run the agent when the check already passes", function()
    local dir = H.git_repo { ["bug.txt"] = "fixed\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh " .. FIX })
    assert.equal(0, r.code)
    assert.matches("already passes", r.stdout)
    assert.equal(0, #H.events(H.last_run(dir), "agent"))
  end)

  it("stops after exactly 10 iterations by default", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh " .. FIX }, { FIX_AT = "99" })
    assert.equal(1, r.code)
    assert.matches("still fails after 10 iterations", r.stdout)
    assert.equal(10, #H.events(H.last_run(dir), "agent"))
  end)

  it("stops after exactly 3 consecutive failures by default", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh -c 'exit 3'" })
    assert.equal(1, r.code)
    assert.matches("failed: 3 consecutive failures", r.stdout)
    local recs = H.last_run(dir)
    assert.equal(3, #H.events(recs, "agent"))
    for _, d in ipairs(H.events(recs, "decision")) do
      if d.iteration > 0 then assert.equal("crash", d.status) end
    end
  end)

  it("stops when the agent makes no progress", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "true", "--max-failures", "9" })
    assert.equal(1, r.code)
    assert.matches("no progress: the agent changed nothing 3 times in a row", r.stdout)
  end)

  it("honours the cooldown between iterations", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh " .. FIX, "--cooldown", "400ms" })
    assert.equal(0, r.code)
    local agents = H.events(H.last_run(dir), "agent")
    local checks = H.events(H.last_run(dir), "check")
    -- the agent of iteration n+1 starts at least a cooldown after the check of n ends
    for n = 1, 2 do
      local check_end = checks[n + 1].time            -- checks[1] is iteration 0
      local next_agent_end = agents[n + 1].time - agents[n + 1].duration
      assert.is_true(next_agent_end - check_end >= 0.39, ("gap %.3f"):format(next_agent_end - check_end))
    end
  end)

  it("restores the base after a failed attempt with --reset-on-failure", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh " .. FIX, "--reset-on-failure",
      "--max-iterations", "2" }, { FIX_AT = "99" })
    assert.equal(1, r.code)
    assert.is_nil(H.read(dir .. "/attempt.txt"))
  end)

  it("waits out a rate limit instead of counting a failure, and stops before an iteration would cross max_cost_usd", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      local calls = 0
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = %q, max_consecutive_failures = 1,
        rate_limit_cooldown = 0.05, max_cost_usd = 1.0,
        agent = beat.agent.fn(function(ctx)
          calls = calls + 1
          if calls == 1 then return { rate_limited = true, ok = false, error = "429" } end
          local f = io.open(ctx.cwd .. "/attempt.txt", "w"); f:write(calls); f:close()
          return { cost_usd = 0.4 }
        end),
      })
    ]]):format(dir, CHECK))
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code, r.stderr)
    assert.matches("rate limited; waiting", r.stdout)
    assert.matches("cost budget of %$1%.00: %$0%.80 spent, and the next iteration would cost about %$0%.40", r.stdout)
    local recs = H.last_run(dir)
    assert.equal(1, #H.events(recs, "rate_limited"))
    assert.equal(2, #H.events(recs, "decision") - 1)
  end)

  it("stops on Ctrl-C even when a hook swallows the cancellation with pcall", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local m = H.marker()
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = %q, max_iterations = 5,
        agent = beat.agent.command { argv = { "sh", %q, "{prompt}" } },
        on_iteration = function() pcall(beat.exec, "sleep %s") end,
      })
    ]]):format(dir, CHECK, FIX, m))
    local p = assert(beat.spawn({ H.bin, "run", recipe }, { env = { FIX_AT = "99" } }))
    assert.is_true(H.wait_started(m, 10))
    local pid = H.last_run(dir)[1].pid
    beat.exec { "kill", "-INT", ("%d"):format(pid) }
    local r = assert(p:wait(30))
    assert.equal(130, r.code)
    local recs = H.last_run(dir)
    assert.equal("interrupted", recs[#recs].event)
    assert.equal(0, #H.events(recs, "agent"))
  end)

  it("keeps every command inside max_duration, a hanging check included", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local t0 = beat.clock()
    local r = loop(dir, { "fix", "--until", "sleep 60; false", "-a", "sh " .. FIX, "--max-duration", "2s",
      "--cooldown", "60s" })
    assert.is_true(beat.clock() - t0 < 30)
    assert.equal(1, r.code)
    assert.matches("time budget of 2%.0s used", r.stdout)
  end)

  it("stops with a clear error when the prompt hook returns nothing", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("retry") {
        cwd = %q, check = %q, agent = beat.agent.command { argv = { "true" } },
        prompt = function(ctx) local forgot_return = "fix it" end,
      })
    ]]):format(dir, CHECK))
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code)
    assert.matches("hook prompt failed: must return a string, returned nil", r.stdout)
  end)

  it("puts what the feedback hook returns into the next prompt", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local log = H.tmpdir() .. "/prompts"
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = %q,
        agent = beat.agent.command { argv = { "sh", %q, "{prompt}" } },
        feedback = function(r) return "CUSTOM FEEDBACK exit=" .. r.code end,
      })
    ]]):format(dir, CHECK, FIX))
    local r = H.beat({ "run", recipe }, { env = { PROMPT_LOG = log } })
    assert.equal(0, r.code, r.stdout)
    assert.matches("CUSTOM FEEDBACK exit=1", H.read(log))
  end)

  it("stops with the hook's name when a hook raises, leaving the best snapshot with keep_last", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = %q, keep_last = true,
        agent = beat.agent.command { argv = { "sh", %q, "{prompt}" } },
        on_iteration = function(ctx) if ctx.iteration == 2 then error("hook exploded") end end,
      })
    ]]):format(dir, CHECK, FIX))
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code)
    assert.matches("hook on_iteration failed: .*hook exploded", r.stdout)
    assert.equal("attempt 1\n", H.read(dir .. "/attempt.txt"))
  end)

  it("ends a failed run with the work tree as before it, the last attempt kept as snapshot last", function()
    local dir, git = H.git_repo { ["bug.txt"] = "broken\n", ["src/a.txt"] = "a\n" }
    H.write(dir .. "/src/a.txt", "the user's uncommitted edit\n")
    H.write(dir .. "/notes.txt", "untracked notes\n")
    -- each attempt deletes everything, writes half an edit, and crashes
    local agent = "sh " .. H.root .. "/tests/fixtures/loop/wreck.sh"
    local r = loop(dir, { "fix", "--until", CHECK, "-a", agent })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("failed: 3 consecutive failures", r.stdout)
    local _, _, id = H.last_run(dir)
    assert.matches("the work tree is as it was before the run", r.stdout)
    assert.matches("note: the run failed, so the work tree is back as it was before the run; the last attempt is kept: beat restore "
      .. id .. " last\n", r.stdout)
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal("the user's uncommitted edit\n", H.read(dir .. "/src/a.txt"))
    assert.equal("untracked notes\n", H.read(dir .. "/notes.txt"))
    assert.is_false(beat.fs.exists(dir .. "/half.txt"))
    assert.equal("half edit 3\n", git("show", ("refs/beat/%s/last:half.txt"):format(id)))
    r = H.beat({ "restore", id, "last" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.equal("half edit 3\n", H.read(dir .. "/half.txt"))
    assert.is_false(beat.fs.exists(dir .. "/bug.txt"))
    r = H.beat({ "restore", id, "base" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.equal("the user's uncommitted edit\n", H.read(dir .. "/src/a.txt"))
  end)

  it("with --keep-last leaves the last attempt of a failed run in the work tree", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh " .. FIX, "--max-iterations", "2", "--keep-last" },
      { FIX_AT = "99" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.equal("attempt 2\n", H.read(dir .. "/attempt.txt"))
    assert.matches("changes kept %(uncommitted%): 1 file", r.stdout)
    assert.is_nil(r.stdout:find("the last attempt is kept", 1, true))
  end)

  it("ends a passing run on the passing attempt, whatever keep_last says", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = loop(dir, { "fix", "--until", CHECK, "-a", "sh " .. FIX })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
    local _, _, id = H.last_run(dir)
    assert.equal(0, H.beat({ "restore", id, "last" }, { cwd = dir }).code)
    assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
  end)
end)
