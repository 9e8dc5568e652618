-- beat.objective: noise-aware, multi-metric judgement of "better".
local objective = require "beat.objective"
local stats = require "beat.stats"
local new = objective.new

-- xorshift64 PRNG, so results never depend on math.random's implementation.
local function prng(seed)
  local x = seed ~ 0x9E3779B97F4A7C15
  if x == 0 then x = 1 end
  local r = {}
  function r.uniform()
    x = x ~ (x << 13); x = x ~ (x >> 7); x = x ~ (x << 17)
    return ((x >> 11) + 0.5) * 2.0 ^ -53
  end
  function r.int(lo, hi) return lo + math.floor(r.uniform() * (hi - lo + 1)) end
  function r.normal(mu, sd)
    local u1, u2 = r.uniform(), r.uniform()
    return mu + sd * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
  end
  return r
end

--- A measurement-shaped candidate: n samples of N(mu, sd), median as the value.
local function measured(g, n, mu, sd)
  local xs = {}
  for i = 1, n do xs[i] = g.normal(mu, sd) end
  return { value = stats.median(xs), values = xs }
end

describe("beat.objective, one metric", function()
  local size = new { direction = "minimize", metric = "size", unit = "KB" }

  it("says better with a readable reason when the value improves", function()
    local verdict, reason = size:compare(120.4, 131.0)
    assert.equal("better", verdict)
    assert.equal("size 120.4 KB < 131.0 KB (\226\136\1468.1%)", reason)
  end)

  it("says worse when the value gets worse", function()
    local verdict, reason = size:compare({ size = 140 }, { size = 131 })
    assert.equal("worse", verdict)
    assert.equal("size 140 KB > 131 KB (+6.9%)", reason)
  end)

  it("never calls an equal value better: ties do not replace the best", function()
    assert.equal("tie", (size:compare({ size = 131 }, { size = 131.0 })))
  end)

  it("maximizes when asked", function()
    local acc = new { direction = "maximize" }
    assert.equal("better", (acc:compare(0.91, 0.9)))
    assert.equal("worse", (acc:compare(0.89, 0.9)))
  end)

  it("calls the first feasible result better", function()
    local verdict, reason = size:compare({ size = 120 }, nil)
    assert.equal("better", verdict)
    assert.equal("first result: size 120 KB", reason)
  end)

  it("treats a missing, NaN or infinite metric as infeasible", function()
    local verdict, reason = size:compare({ other = 1 }, 100)
    assert.equal("infeasible", verdict)
    assert.equal("size missing", reason)
    verdict, reason = size:compare({ size = 0 / 0 }, 100)
    assert.equal("infeasible", verdict)
    assert.equal("size is NaN", reason)
    verdict, reason = size:compare({ size = math.huge }, 100)
    assert.equal("infeasible", verdict)
    assert.equal("size is infinite", reason)
  end)

  it("treats differences within min_delta or min_rel_delta as ties", function()
    local o = new { direction = "minimize", min_delta = 0.5 }
    assert.equal("tie", (o:compare(99.6, 100)))
    assert.equal("better", (o:compare(99.4, 100)))
    local r = new { direction = "minimize", metric = "size", unit = "KB", min_rel_delta = 0.01 }
    local verdict, reason = r:compare({ size = 130.5 }, { size = 131 })
    assert.equal("tie", verdict)
    assert.equal("size 130.5 KB \226\137\136 131.0 KB (\226\136\1460.4%, within min_rel_delta 1%)", reason)
    assert.equal("better", (r:compare({ size = 129 }, { size = 131 })))
    assert.equal("worse", (r:compare({ size = 133 }, { size = 131 })))
  end)

  it("reads measurements from beat.measure and tests their samples", function()
    local o = new { direction = "minimize", unit = "ms" }
    local verdict, reason, info = o:compare(
      { value = 95, values = { 95.2, 94.8, 95.1, 95.0, 94.9 } },
      { value = 100, values = { 100.1, 99.9, 100.3, 100, 99.8 } })
    assert.equal("better", verdict)
    assert.equal("value 95 ms < 100 ms (\226\136\1465.0%, p=0.004)", reason)
    assert.equal("mann-whitney", info.test)
    assert.is_true(info.p < 0.005)
  end)

  it("calls a difference inside the noise a tie and says why", function()
    local o = new { direction = "minimize", unit = "ms" }
    local verdict, reason = o:compare(
      { value = 99.5, values = { 99.2, 100.8, 99.1, 99.5, 101 } },
      { value = 100, values = { 100.1, 99.9, 100.3, 100, 99.8 } })
    assert.equal("tie", verdict)
    assert.is_truthy(reason:find("not significant at 0.05", 1, true), reason)
  end)

  it("skips the test when only one side has samples", function()
    local o = new { direction = "minimize" }
    assert.equal("better", (o:compare({ value = 99.5, values = { 99, 100, 99.5 } }, 100)))
  end)

  it("can use Welch's t test and another level", function()
    local o = new { direction = "maximize", test = "welch", significance = 0.01 }
    local _, _, info = o:compare({ value = 11, values = { 11, 11.1, 10.9, 11.05 } },
      { value = 10, values = { 10, 10.1, 9.9, 10.05 } })
    assert.equal("welch", info.test)
    local verdict = o:compare({ value = 10.1, values = { 10.5, 9.8, 10.1, 10.2 } },
      { value = 10, values = { 10, 10.4, 9.6, 10.05 } })
    assert.equal("tie", verdict)
  end)

  it("can switch the significance test off", function()
    local o = new { direction = "minimize", significance = false }
    assert.equal("better", (o:compare({ value = 99.5, values = { 99.2, 100.8, 99.1, 99.5, 101 } },
      { value = 100, values = { 100.1, 99.9, 100.3, 100, 99.8 } })))
  end)

  it("reports target_reached in the objective's direction", function()
    local o = new { direction = "minimize", metric = "val_bpb", target = 0.99 }
    assert.is_true((o:target_reached { val_bpb = 0.98 }))
    assert.is_true((o:target_reached { val_bpb = 0.99 }))
    local ok, why = o:target_reached { val_bpb = 1.01 }
    assert.is_false(ok)
    assert.equal("val_bpb 1.01 has not reached target 0.99", why)
    local up = new { direction = "maximize", target = 0.9 }
    assert.is_true((up:target_reached(0.95)))
    assert.is_false((up:target_reached(0.85)))
    assert.is_false((new { direction = "maximize" }:target_reached(1e9)))
  end)

  it("raises on a plain-number candidate that lacks a metric name", function()
    local o = new { direction = "minimize" }
    assert.has_error(function() o:compare({ size = 1 }, 2) end,
      "beat.objective: candidate is a table without a numeric `value`; set opts.metric to say which metric to compare")
    assert.has_error(function() o:compare(nil, 2) end)
  end)
end)

describe("beat.objective constraints", function()
  local o = new { direction = "minimize", metric = "val_bpb",
    constraints = { { metric = "memory_gb", max = 40 }, { metric = "tests", min = 1 } } }

  it("makes a candidate that violates one infeasible, whatever its score", function()
    local verdict, reason = o:compare({ val_bpb = 0.5, memory_gb = 42.1, tests = true }, { val_bpb = 1, memory_gb = 30, tests = true })
    assert.equal("infeasible", verdict)
    assert.equal("memory_gb 42.1 > max 40.0", reason)
    verdict, reason = o:compare({ val_bpb = 0.5, memory_gb = 1, tests = false }, { val_bpb = 1, memory_gb = 30, tests = true })
    assert.equal("infeasible", verdict)
    assert.equal("tests 0 < min 1", reason)
  end)

  it("treats a constrained metric that is missing as infeasible", function()
    local verdict, reason = o:compare({ val_bpb = 0.5, tests = 1 }, nil)
    assert.equal("infeasible", verdict)
    assert.equal("memory_gb missing", reason)
  end)

  it("lets a feasible candidate replace an infeasible best", function()
    local verdict, reason = o:compare({ val_bpb = 2, memory_gb = 1, tests = 1 }, { val_bpb = 1, memory_gb = 50, tests = 1 })
    assert.equal("better", verdict)
    assert.is_truthy(reason:find("best was infeasible (memory_gb 50 > max 40)", 1, true), reason)
  end)

  it("never reports an infeasible candidate as reaching the target", function()
    local t = new { direction = "minimize", metric = "x", target = 10, constraints = { { metric = "y", max = 1 } } }
    assert.is_false((t:target_reached { x = 1, y = 2 }))
    assert.is_true((t:target_reached { x = 1, y = 0 }))
  end)
end)

describe("beat.objective weighted sums", function()
  local o = new {
    weights = { size = 1, time = 10 },
    metrics = { size = { direction = "minimize", unit = "KB" }, time = { direction = "minimize", unit = "s" } },
  }

  it("weighs metrics by their direction and weight", function()
    local verdict, reason = o:compare({ size = 120, time = 1.2 }, { size = 131, time = 1.1 })
    assert.equal("better", verdict) -- −132 > −142
    assert.equal("weighted score \226\136\146132 > \226\136\146142: size 120 KB < 131 KB (\226\136\1468.4%), time 1.2 s > 1.1 s (+9.1%)", reason)
    assert.equal("worse", (o:compare({ size = 120, time = 2.5 }, { size = 131, time = 1.1 })))
  end)

  it("tests per-run weighted scores when the metrics carry samples", function()
    local w = new { weights = { a = 1, b = 2 }, metrics = { a = "minimize", b = "minimize" } }
    local best = { a = { value = 10.2, values = { 10.2, 9.1, 11, 10.4, 9.8 } }, b = { value = 5, values = { 5, 5, 5, 5, 5 } } }
    local noisy = { a = { value = 10, values = { 10, 11, 9, 10.5, 9.5 } }, b = { value = 5, values = { 5, 5, 5, 5, 5 } } }
    local verdict, reason = w:compare(noisy, best)
    assert.equal("tie", verdict)
    assert.is_truthy(reason:find("not significant", 1, true), reason)
    local real = { a = { value = 8, values = { 8, 8.1, 7.9, 8.05, 7.95 } }, b = { value = 5, values = { 5, 5, 5, 5, 5 } } }
    local _, _, info = w:compare(real, best)
    assert.equal("better", (w:compare(real, best)))
    assert.is_true(info.p < 0.05)
  end)

  it("returns the weighted score as the scalar", function()
    assert.equal(-132, o:scalar { size = 120, time = 1.2 })
  end)
end)

describe("beat.objective lexicographic order", function()
  local o = new {
    order = { { "tests", direction = "maximize" }, { "size", tolerance = 1 }, "time" },
    metrics = { size = { direction = "minimize", unit = "KB" }, time = "minimize" },
  }

  it("decides on the first metric that differs", function()
    local verdict, reason = o:compare({ tests = 12, size = 120, time = 9 }, { tests = 12, size = 131, time = 1 })
    assert.equal("better", verdict)
    assert.equal("tests 12 = 12; size 120 KB < 131 KB (\226\136\1468.4%)", reason)
    assert.equal("worse", (o:compare({ tests = 11, size = 1, time = 1 }, { tests = 12, size = 131, time = 9 })))
  end)

  it("moves on to the next metric within a level's tolerance", function()
    local verdict, reason = o:compare({ tests = 12, size = 130.5, time = 1 }, { tests = 12, size = 131, time = 2 })
    assert.equal("better", verdict)
    assert.is_truthy(reason:find("within min_delta 1 KB", 1, true), reason)
    assert.equal("tie", (o:compare({ tests = 12, size = 130.5, time = 2 }, { tests = 12, size = 131, time = 2 })))
  end)
end)

describe("beat.objective Pareto front", function()
  local o = new { pareto = true, metrics = { latency = { direction = "minimize", unit = "ms" }, accuracy = "maximize" } }

  it("calls a dominating candidate better and a trade-off a tie", function()
    assert.equal("better", (o:compare({ latency = 10, accuracy = 0.91 }, { latency = 12, accuracy = 0.91 })))
    local verdict, reason = o:compare({ latency = 10, accuracy = 0.85 }, { latency = 12, accuracy = 0.91 })
    assert.equal("tie", verdict)
    assert.is_truthy(reason:find("^trade%-off: "), reason)
  end)

  it("keeps non-dominated candidates and reports what a newcomer dominated", function()
    local front = o:front()
    assert.is_true((front:add({ latency = 10, accuracy = 0.85 }, "a")))
    assert.is_true((front:add({ latency = 12, accuracy = 0.91 }, "b")))
    local entered, dominated, reason = front:add({ latency = 11, accuracy = 0.80 }, "c")
    assert.is_false(entered)
    assert.same({}, dominated)
    assert.is_truthy(reason:find("^dominated by front member 1"), reason)
    entered, dominated = front:add({ latency = 9, accuracy = 0.92 }, "d")
    assert.is_true(entered)
    local gone = {}
    for _, e in ipairs(dominated) do gone[#gone + 1] = e.data end
    table.sort(gone)
    assert.same({ "a", "b" }, gone)
    assert.equal(1, front:size())
    assert.equal("d", front:members()[1].data)
  end)

  it("does not let an equal candidate into the front", function()
    local front = o:front()
    front:add({ latency = 10, accuracy = 0.9 })
    local entered, _, reason = front:add({ latency = 10, accuracy = 0.9 })
    assert.is_false(entered)
    assert.is_truthy(reason:find("^ties front member 1"), reason)
    assert.equal("tie", (o:compare({ latency = 10, accuracy = 0.9 }, front)))
  end)

  it("keeps infeasible candidates out", function()
    local c = new { pareto = true, metrics = { a = "minimize", b = "minimize" }, constraints = { { metric = "a", max = 5 } } }
    local front = c:front()
    local entered, _, reason = front:add({ a = 6, b = 0 })
    assert.is_false(entered)
    assert.equal("infeasible: a 6 > max 5", reason)
  end)
end)

describe("beat.objective options", function()
  it("names the offending option", function()
    assert.has_error(function() new { direction = "minimise" } end,
      'beat.objective: opts.direction must be "minimize" or "maximize", got "minimise"')
    assert.has_error(function() new {} end,
      'beat.objective: opts.direction must be "minimize" or "maximize" (or give opts.weights, opts.order or opts.pareto), got nil')
    assert.has_error(function() new { weights = { a = 1 } } end,
      'beat.objective: opts.weights: metric a needs a direction (opts.metrics.a = "minimize" or "maximize", or opts.direction)')
    assert.has_error(function() new { direction = "minimize", weights = { a = -1 } } end,
      "beat.objective: opts.weights.a must be a positive number, got -1")
    assert.has_error(function() new { direction = "minimize", min_rel_delta = 5 } end,
      "beat.objective: opts.min_rel_delta must be a fraction in [0, 1) (0.01 = 1%), got 5")
    assert.has_error(function() new { direction = "minimize", significance = 1 } end,
      "beat.objective: opts.significance must be a level in (0, 0.5) such as 0.05, or false, got 1")
    assert.has_error(function() new { direction = "minimize", test = "t" } end,
      'beat.objective: opts.test must be "mann-whitney" or "welch", got "t"')
    assert.has_error(function() new { direction = "minimize", order = { "a" }, pareto = true } end,
      "beat.objective: choose one of opts.weights, opts.order and opts.pareto, got order and pareto")
    assert.has_error(function() new { direction = "minimize", constraints = { { metric = "m" } } } end,
      "beat.objective: opts.constraints[1] needs min or max")
    assert.has_error(function() new { direction = "minimize", tolerance = 1 } end,
      "beat.objective: unknown option opts.tolerance")
  end)
end)

describe("beat.objective properties (seeded)", function()
  local dirs = { a = "minimize", b = "maximize", c = "minimize" }
  local names = { "a", "b", "c" }

  local function random_point(g, lo, hi)
    return { a = g.int(lo, hi), b = g.int(lo, hi), c = g.int(lo, hi) }
  end

  it("Pareto dominance is irreflexive, asymmetric and transitive", function()
    local o = new { pareto = true, metrics = dirs }
    local g = prng(11)
    local pts = {}
    for i = 1, 40 do pts[i] = random_point(g, 0, 3) end
    local dom = {}
    for i = 1, #pts do
      dom[i] = {}
      for j = 1, #pts do dom[i][j] = o:dominates(pts[i], pts[j]) end
    end
    local pairs_seen = 0
    for i = 1, #pts do
      assert.is_false(dom[i][i], "a point dominates itself")
      for j = 1, #pts do
        if dom[i][j] then
          pairs_seen = pairs_seen + 1
          assert.is_false(dom[j][i], "dominance is not asymmetric")
          for k = 1, #pts do
            if dom[j][k] then assert.is_true(dom[i][k], "dominance is not transitive") end
          end
        end
      end
    end
    assert.is_true(pairs_seen > 50, "too few dominance pairs to test anything")
  end)

  it("a Pareto front holds only non-dominated points, covers every point and ignores insertion order", function()
    local o = new { pareto = true, metrics = dirs }
    for seed = 1, 20 do
      local g = prng(seed)
      local pts = {}
      for i = 1, 60 do pts[i] = random_point(g, 0, 6) end
      local front = o:front()
      for i, p in ipairs(pts) do front:add(p, i) end
      local members = front:members()
      for i = 1, #members do
        for j = 1, #members do
          if i ~= j then
            assert.is_false(o:dominates(members[i].candidate, members[j].candidate), "front member dominated")
          end
        end
      end
      -- every point is on the front, dominated by a member, or equal to one
      for _, p in ipairs(pts) do
        local covered = false
        for _, m in ipairs(members) do
          local q = m.candidate
          if o:dominates(q, p) or (q.a == p.a and q.b == p.b and q.c == p.c) then covered = true end
        end
        assert.is_true(covered, "a point is neither on the front nor dominated by it")
      end
      -- the same set of values whatever the order of insertion
      local function key_set(ms)
        local ks = {}
        for _, m in ipairs(ms) do ks[#ks + 1] = ("%d,%d,%d"):format(m.candidate.a, m.candidate.b, m.candidate.c) end
        table.sort(ks)
        return ks
      end
      local reversed = o:front()
      for i = #pts, 1, -1 do reversed:add(pts[i], i) end
      assert.same(key_set(members), key_set(reversed:members()))
    end
  end)

  it("lexicographic order matches a reference, is antisymmetric and transitive", function()
    local o = new { order = names, metrics = dirs }
    local g = prng(5)
    local pts = {}
    for i = 1, 50 do pts[i] = random_point(g, 0, 2) end
    local function reference(p, q)
      for _, n in ipairs(names) do
        if p[n] ~= q[n] then
          local better = (dirs[n] == "minimize") == (p[n] < q[n])
          return better and "better" or "worse"
        end
      end
      return "tie"
    end
    local flip = { better = "worse", worse = "better", tie = "tie" }
    local v = {}
    for i = 1, #pts do
      v[i] = {}
      for j = 1, #pts do
        v[i][j] = o:compare(pts[i], pts[j])
        assert.equal(reference(pts[i], pts[j]), v[i][j])
      end
    end
    for i = 1, #pts do
      for j = 1, #pts do
        assert.equal(flip[v[i][j]], v[j][i])
        if v[i][j] == "better" then
          for k = 1, #pts do
            if v[j][k] == "better" then assert.equal("better", v[i][k]) end
          end
        end
      end
    end
  end)

  it("lexicographic order with tolerances stays antisymmetric", function()
    local o = new { order = { { "a", tolerance = 1 }, { "b", rel_tolerance = 0.2 }, "c" }, metrics = dirs }
    local g = prng(9)
    local flip = { better = "worse", worse = "better", tie = "tie" }
    for _ = 1, 500 do
      local p, q = random_point(g, 1, 5), random_point(g, 1, 5)
      assert.equal(flip[(o:compare(p, q))], (o:compare(q, p)))
    end
  end)

  it("weighted sums with mixed directions follow the sign of Σ w·(±Δ)", function()
    local weights = { a = 2, b = 0.5, c = 1.25 }
    local o = new { weights = weights, metrics = dirs }
    local g = prng(3)
    local flip = { better = "worse", worse = "better", tie = "tie" }
    local counts = { better = 0, worse = 0 }
    for _ = 1, 1000 do
      local p = { a = g.uniform() * 10, b = g.uniform() * 10, c = g.uniform() * 10 }
      local q = { a = g.uniform() * 10, b = g.uniform() * 10, c = g.uniform() * 10 }
      local s = 0
      for n, w in pairs(weights) do
        s = s + w * (dirs[n] == "maximize" and 1 or -1) * (p[n] - q[n])
      end
      local verdict = o:compare(p, q)
      if math.abs(s) > 1e-9 then
        assert.equal(s > 0 and "better" or "worse", verdict)
        counts[verdict] = counts[verdict] + 1
      end
      assert.equal(flip[verdict], (o:compare(q, p)))
      -- improving one metric in its direction never makes the result worse
      local n = names[g.int(1, 3)]
      local p2 = { a = p.a, b = p.b, c = p.c }
      p2[n] = p2[n] + (dirs[n] == "maximize" and 1 or -1) * g.uniform()
      assert.equal("better", (o:compare(p2, p)))
    end
    assert.is_true(counts.better > 300 and counts.worse > 300)
  end)
end)

describe("beat.objective noise (seeded trials)", function()
  -- The documented false-positive rate: with Mann–Whitney at level 0.05, two measurements
  -- of the same thing compare as "better" in at most 5% of trials (4.76% for 5 vs 5 runs,
  -- the largest attainable exact level), and as "better" or "worse" in at most 10%.
  local TRIALS = 2000
  local function bound(level) return level + 3 * math.sqrt(level * (1 - level) / TRIALS) end

  local function trial_rates(o, n, seed, sd)
    local g = prng(seed)
    local count = { better = 0, worse = 0, tie = 0 }
    for _ = 1, TRIALS do
      local best = measured(g, n, 100, sd)
      local cand = measured(g, n, 100, sd)
      local verdict = o:compare(cand, best)
      count[verdict] = count[verdict] + 1
    end
    return count.better / TRIALS, count.worse / TRIALS, count.tie / TRIALS
  end

  it("calls same-distribution pairs tie, and better at most at the level (Mann–Whitney, 5 runs)", function()
    local o = new { direction = "minimize" }
    local better, worse, tie = trial_rates(o, 5, 42, 1)
    assert.is_true(better <= bound(0.05), ("better rate %.4f"):format(better))
    assert.is_true(better >= 0.02, ("better rate %.4f: the test has no power at all"):format(better))
    assert.is_true(worse <= bound(0.05), ("worse rate %.4f"):format(worse))
    assert.is_true(tie >= 0.9 - 0.02, ("tie rate %.4f"):format(tie))
  end)

  it("holds a stricter level too (Mann–Whitney, 10 runs, 0.01)", function()
    local o = new { direction = "maximize", significance = 0.01 }
    local better = trial_rates(o, 10, 7, 2)
    assert.is_true(better <= bound(0.01), ("better rate %.4f"):format(better))
  end)

  it("holds the level with Welch's t test", function()
    local o = new { direction = "minimize", test = "welch" }
    local better = trial_rates(o, 5, 99, 1)
    assert.is_true(better <= bound(0.05), ("better rate %.4f"):format(better))
  end)

  it("calls a real 5% improvement with 5 runs and 1% noise better", function()
    local o = new { direction = "minimize" }
    local g = prng(123)
    local better = 0
    for _ = 1, 200 do
      local best = measured(g, 5, 100, 1)
      local cand = measured(g, 5, 95, 0.95)
      if o:compare(cand, best) == "better" then better = better + 1 end
    end
    assert.is_true(better >= 198, ("only %d of 200 trials found the improvement"):format(better))
  end)

  it("calls a real 5% regression worse, never better", function()
    local o = new { direction = "maximize" }
    local g = prng(321)
    for _ = 1, 200 do
      local best = measured(g, 5, 100, 1)
      local cand = measured(g, 5, 95, 0.95)
      assert.is_not.equal("better", (o:compare(cand, best)))
    end
  end)
end)

describe("numbers in reasons (issue 12)", function()
  local M = "\226\136\146"   -- U+2212, the minus sign of reasons

  it("keep each number's magnitude: the best is never shown as 0 next to a huge value", function()
    local o = new { direction = "minimize", metric = "val_loss" }
    local _, reason = o:compare(1000000, 0.011964)
    assert.equal("val_loss 1000000 > 0.01196 (+8.36e+09%)", reason)
    _, reason = o:compare(0.1684, 0.011964)
    assert.equal("val_loss 0.1684 > 0.01196 (+1308%)", reason)
    -- same magnitude: same decimals, as before
    _, reason = new { direction = "minimize", metric = "size", unit = "KB" }:compare(120.4, 131)
    assert.equal("size 120.4 KB < 131.0 KB (" .. M .. "8.1%)", reason)
  end)

  it("name sentinels, with no percentage next to them", function()
    local o = new { direction = "minimize", metric = "val_loss", sentinels = { [1e6] = "diverged" } }
    local verdict, reason = o:compare(1e6, 0.011964)
    assert.equal("worse", verdict)
    assert.equal("val_loss diverged > 0.01196", reason)
    assert.equal("val_loss diverged", o:describe(1e6))
  end)

  it("show a constraint's limit as it is: 0.1, not 0, and its sentinel by name", function()
    local o = new { order = { { "val_loss", direction = "minimize" } },
      constraints = { { metric = "train_loss", max = 0.1 } } }
    assert.equal("infeasible", (o:compare({ val_loss = 1, train_loss = 1000000 }, { val_loss = 2, train_loss = 0 })))
    assert.equal("infeasible: train_loss 1000000 > max 0.1", o:describe { val_loss = 1, train_loss = 1000000 })
    local named = new { order = { { "val_loss", direction = "minimize" } },
      constraints = { { metric = "train_loss", max = 0.1 } }, sentinels = { [1e6] = "diverged" } }
    assert.equal("infeasible: train_loss diverged > max 0.1", named:describe { val_loss = 1, train_loss = 1e6 })
  end)

  it("refuse a sentinels table that is not {[number] = name}", function()
    assert.has_error(function() new { direction = "minimize", sentinels = { diverged = 1e6 } } end)
    assert.has_error(function() new { direction = "minimize", metrics = { x = { sentinels = 5 } } } end)
  end)
end)
