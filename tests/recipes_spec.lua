-- Every recipe in recipes/ runs: the offline ones as they are, the ones
-- that need an agent CLI with a fake agent named by BEAT_AGENT.
local beat = require "beat"
local H = require "tests.helpers"

local R = H.root .. "/recipes/"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"

local function run(args, opts)
  local r = H.beat(args, opts)
  return r, r.stdout .. r.stderr
end

describe("recipes", function()
  it("tune-demo.lua improves the sample project's validation loss offline and prints the diff", function()
    local r, out = run { "run", R .. "tune-demo.lua", "12" }
    assert.equal(0, r.code, out)
    local best, base = out:match("best: val_loss ([%d.e-]+) %(baseline: val_loss ([%d.e-]+)%)")
    assert.is_true(tonumber(best) < tonumber(base) * 0.8, out)
    assert.matches("%+learning_rate = ", out)
    assert.matches("iter 12 ", out)
  end)

  it("multi-metric.lua runs a lexicographic objective with a constraint", function()
    local r, out = run { "run", R .. "multi-metric.lua", "6" }
    assert.equal(0, r.code, out)
    assert.matches("baseline", out)
    assert.matches("val_loss", out)
  end)

  it("custom-strategy.lua runs its own best-of-N loop on beat.loop", function()
    local r, out = run { "run", R .. "custom-strategy.lua", "2", "2" }
    assert.equal(0, r.code, out)
    assert.matches("completed: 2 rounds of 2 candidates", out)
  end)

  it("fix-failing-test.lua retries the agent until the check passes", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r, out = run({ "run", R .. "fix-failing-test.lua", "grep -q fixed bug.txt" },
      { cwd = dir, env = { BEAT_AGENT = FIX } })
    assert.equal(0, r.code, out)
    assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
  end)

  it("reduce-bundle-size.lua keeps only smaller sizes that pass the tests", function()
    local dir = H.git_repo { ["value.txt"] = "131.0 KB\n" }
    local r, out = run({ "run", R .. "reduce-bundle-size.lua", "cat value.txt", "! grep -q 99 value.txt" },
      { cwd = dir, env = { BEAT_AGENT = SET, VALUES = "120.4KB 99KB 140KB" } })
    assert.equal(0, r.code, out)
    assert.equal("120.4KB\n", H.read(dir .. "/value.txt"))
    assert.matches("crash", out)
  end)

  it("autoresearch.lua rejects a candidate over the memory budget", function()
    local dir = H.git_repo { ["metrics.txt"] = "val_bpb: 1.00\npeak_vram_mb: 100\n" }
    local agent = H.tmpdir() .. "/researcher.sh"
    H.write(agent, [[
case "$BEAT_ITERATION" in
  1) printf 'val_bpb: 0.90\npeak_vram_mb: 900\n' > metrics.txt ;;
  2) printf 'val_bpb: 0.95\npeak_vram_mb: 200\n' > metrics.txt ;;
esac
]])
    local r, out = run({ "run", R .. "autoresearch.lua", "cat metrics.txt", "500", "--set", "max_iterations=2" },
      { cwd = dir, env = { BEAT_AGENT = "sh " .. agent } })
    assert.equal(0, r.code, out)
    assert.equal("val_bpb: 0.95\npeak_vram_mb: 200\n", H.read(dir .. "/metrics.txt"))
    assert.matches("infeasible", out)
  end)

  it("concurrent.lua runs its commands at once", function()
    local r, out = run { "run", R .. "concurrent.lua" }
    assert.equal(0, r.code, out)
    assert.matches("slow   exit 124", out)
  end)
end)
