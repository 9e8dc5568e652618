-- beat.measure: run an eval several times, summarise the noise, fail on a failing run.
-- Runs real commands with beat.exec, so it needs the runtime (make test).
local beat = require "beat"
local measure = require("beat.measure").measure
local score = require "beat.score"

local dirs = {}
local function tmpdir()
  local d = assert(beat.fs.tmpdir("beat-measure"))
  dirs[#dirs + 1] = d
  return d
end

-- A command that prints 1, 2, 3, ... on successive runs (a counter file in cwd).
local COUNTER = 'n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo "run $n"; echo $n'

local function near(expected, actual, tol)
  assert.is_true(math.abs(expected - actual) <= tol,
    ("expected %.17g, got %.17g"):format(expected, actual))
end

describe("beat.measure", function()
  teardown(function()
    for _, d in ipairs(dirs) do beat.fs.rm_rf(d) end
  end)

  it("runs a command five times and summarises the scores", function()
    local dir = tmpdir()
    local m = assert(measure(COUNTER, { cwd = dir }))
    assert.same({ 1, 2, 3, 4, 5 }, m.values)
    assert.equal(3, m.value)
    assert.equal(3, m.median)
    assert.equal(3, m.mean)
    near(math.sqrt(2.5), m.stddev, 1e-12)
    assert.equal(1, m.min)
    assert.equal(5, m.max)
    assert.equal(1, m.mad)
    assert.same({}, m.outliers)
    assert.equal(5, m.runs)
    assert.equal("median", m.aggregate)
    assert.equal(5, #m.durations)
  end)

  it("does not score warmup runs", function()
    local dir = tmpdir()
    local m = assert(measure(COUNTER, { cwd = dir, runs = 3, warmup = 2 }))
    assert.same({ 3, 4, 5 }, m.values)
  end)

  it("aggregates by mean, min or max when asked", function()
    assert.equal(1, assert(measure(COUNTER, { cwd = tmpdir(), runs = 4, aggregate = "min" })).value)
    assert.equal(4, assert(measure(COUNTER, { cwd = tmpdir(), runs = 4, aggregate = "max" })).value)
    assert.equal(2.5, assert(measure(COUNTER, { cwd = tmpdir(), runs = 4, aggregate = "mean" })).value)
  end)

  it("runs an argv table and passes env through", function()
    local m = assert(measure({ "sh", "-c", 'echo "$BEAT_MEASURE_X"' },
      { runs = 2, env = { BEAT_MEASURE_X = "7.5" } }))
    assert.same({ 7.5, 7.5 }, m.values)
    assert.equal(0, m.stddev)
  end)

  it("uses the given extractor", function()
    local m = assert(measure("echo 'val_bpb: 0.9979'; echo done", {
      runs = 2, score = score.metric "val_bpb" }))
    assert.equal(0.9979, m.value)
  end)

  it("fails the whole measurement when one run fails, naming the run", function()
    local dir = tmpdir()
    local m, why, result = measure(COUNTER .. '; [ "$n" -ne 3 ]', { cwd = dir })
    assert.is_nil(m)
    assert.equal("run 3 of 5: eval exited 1", why)
    assert.equal(1, result.code)
  end)

  it("fails on a run that prints no number", function()
    local m, why = measure("echo hello", { runs = 2, label = "bench" })
    assert.is_nil(m)
    assert.equal('run 1 of 2: bench printed no number on its last line ("hello")', why)
  end)

  it("fails on a failing warmup run too", function()
    local m, why = measure("exit 3", { runs = 2, warmup = 1 })
    assert.is_nil(m)
    assert.equal("warmup run 1 of 1: eval exited 3", why)
  end)

  it("reports a timed-out run with the timeout", function()
    local m, why = measure("sleep 5; echo 1", { runs = 2, timeout = 0.3, grace = 0.2 })
    assert.is_nil(m)
    assert.equal("run 1 of 2: eval timed out after 0.3s", why)
  end)

  it("reads a metrics file relative to cwd", function()
    local dir = tmpdir()
    local m = assert(measure([[echo '{"score": 2}' > metrics.json]], {
      cwd = dir, runs = 2, score = score.json { file = "metrics.json", key = "score" } }))
    assert.same({ 2, 2 }, m.values)
  end)

  it("measures every metric of a table-valued score", function()
    local dir = tmpdir()
    local m = assert(measure(COUNTER .. '; echo "size=$((100 + n)) tests=12"', {
      cwd = dir, runs = 3, score = score.metrics() }))
    assert.same({ 101, 102, 103 }, m.metrics.size.values)
    assert.equal(102, m.value.size)
    assert.equal(12, m.value.tests)
    assert.equal(0, m.metrics.tests.stddev)
    assert.equal(3, #m.values)
  end)

  it("times a command with score = beat.score.duration", function()
    local m = assert(measure("sleep 0.05", { runs = 2, score = score.duration }))
    assert.is_true(m.min >= 0.04)
  end)

  it("flags outliers without dropping them", function()
    local values = { 10, 10.1, 9.9, 10, 30 }
    local m = assert(measure(function(i)
      return { code = 0, signal = 0, stdout = tostring(values[i]) .. "\n", duration = 0 }
    end, {}))
    assert.same(values, m.values)
    assert.same({ 5 }, m.outliers)
    assert.equal(10, m.median)
  end)

  it("calls on_run after each measured run", function()
    local seen = {}
    assert(measure("echo 4", { runs = 3, warmup = 1, on_run = function(i, v) seen[#seen + 1] = { i, v } end }))
    assert.same({ { 1, 4 }, { 2, 4 }, { 3, 4 } }, seen)
  end)

  it("feeds beat.objective: a measured 5% speed-up compares as better", function()
    local objective = require("beat.objective").new { direction = "minimize", unit = "ms" }
    local function fixed(list)
      return function(i) return { code = 0, signal = 0, stdout = tostring(list[i]), duration = 0 } end
    end
    local best = assert(measure(fixed { 100.2, 99.7, 100.9, 99.4, 100.1 }, {}))
    local cand = assert(measure(fixed { 95.3, 94.6, 95.8, 95.1, 94.9 }, {}))
    assert.equal("better", (objective:compare(cand, best)))
  end)

  it("rejects malformed options, naming them", function()
    assert.has_error(function() measure("true", { runs = "x" }) end,
      'beat.measure: opts.runs must be a positive integer, got "x"')
    assert.has_error(function() measure("true", { runs = 0 }) end,
      "beat.measure: opts.runs must be a positive integer, got 0")
    assert.has_error(function() measure("true", { warmup = -1 }) end,
      "beat.measure: opts.warmup must be a non-negative integer, got -1")
    assert.has_error(function() measure("true", { aggregate = "avg" }) end,
      'beat.measure: opts.aggregate must be "median", "mean", "min" or "max", got "avg"')
    assert.has_error(function() measure("true", { score = "last_number" }) end,
      'beat.measure: opts.score must be an extractor function such as beat.score.last_number, got "last_number"')
    assert.has_error(function() measure("true", { timeout = "soon" }) end,
      'beat.measure: opts.timeout must be a duration like "90s" or a number of seconds, got "soon"')
    assert.has_error(function() measure("true", { run = 3 }) end, "beat.measure: unknown option opts.run")
    assert.has_error(function() measure(42) end,
      "beat.measure: cmd must be an argv table, a shell string or a function, got 42")
  end)

  it("raises when the score returns something that cannot be aggregated", function()
    assert.has_error(function() measure("true", { runs = 1, score = score.exit }) end)
  end)

  it("is reachable as beat.measure, next to beat.score and beat.objective", function()
    assert.equal(measure, beat.measure)
    assert.equal(score, beat.score)
    assert.equal(require("beat.objective").new, beat.objective)
  end)
end)
