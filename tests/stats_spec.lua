-- beat.stats: descriptive statistics, special functions and two-sample tests.
local stats = require "beat.stats"

-- xorshift64 PRNG, so results never depend on math.random's implementation.
local function prng(seed)
  local x = seed ~ 0x9E3779B97F4A7C15
  if x == 0 then x = 1 end
  local r = {}
  function r.uniform()
    x = x ~ (x << 13); x = x ~ (x >> 7); x = x ~ (x << 17)
    return ((x >> 11) + 0.5) * 2.0 ^ -53
  end
  function r.normal(mu, sd)
    local u1, u2 = r.uniform(), r.uniform()
    return mu + sd * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
  end
  return r
end

local function near(expected, actual, tol)
  assert.is_true(math.abs(expected - actual) <= tol,
    ("expected %.17g, got %.17g (tolerance %g)"):format(expected, actual, tol))
end

describe("beat.stats descriptive statistics", function()
  it("computes median, mean, sample stddev, min, max and MAD", function()
    local s = stats.summary { 4, 1, 3, 2, 100 }
    assert.equal(3, s.median)
    near(22, s.mean, 1e-12)
    near(math.sqrt(((4 - 22) ^ 2 + (1 - 22) ^ 2 + (3 - 22) ^ 2 + (2 - 22) ^ 2 + (100 - 22) ^ 2) / 4), s.stddev, 1e-9)
    assert.equal(1, s.min)
    assert.equal(100, s.max)
    assert.equal(1, s.mad)
    assert.equal(5, s.n)
  end)

  it("takes the middle two values' mean as the median of an even count", function()
    assert.equal(2.5, stats.median { 4, 1, 3, 2 })
  end)

  it("reports zero spread for a single value", function()
    local s = stats.summary { 7 }
    assert.equal(0, s.stddev)
    assert.equal(0, s.mad)
    assert.same({}, s.outliers)
  end)

  it("keeps the mean exact for many nearly equal values", function()
    local xs = {}
    for i = 1, 1000 do xs[i] = 1e8 + (i % 2) * 1e-7 end
    near(1e8 + 0.5e-7, stats.mean(xs), 1e-8)
  end)

  it("flags a value whose modified z-score exceeds 3.5 without removing anything", function()
    local xs = { 10.0, 10.1, 9.9, 10.05, 9.95, 30 }
    assert.same({ 6 }, stats.outliers(xs))
    assert.equal(6, #xs)
  end)

  it("flags nothing in well-behaved data", function()
    assert.same({}, stats.outliers { 10.0, 10.1, 9.9, 10.05, 9.95 })
  end)

  it("still flags an outlier when more than half the values are equal (MAD = 0)", function()
    assert.same({ 5 }, stats.outliers { 10, 10, 10, 10, 50 })
    assert.same({}, stats.outliers { 10, 10, 10, 10, 10 })
  end)

  it("raises on NaN, infinity and non-numbers, naming the position", function()
    assert.has_error(function() stats.mean { 1, 0 / 0 } end,
      "beat.stats.mean: value 2 must be a finite number, got nan")
    assert.has_error(function() stats.median { 1, math.huge } end)
    assert.has_error(function() stats.median {} end, "beat.stats.median: needs at least 1 value, got 0")
    assert.has_error(function() stats.stddev "x" end)
  end)
end)

describe("beat.stats special functions", function()
  it("computes erfc to about 1e-12 relative across its range", function()
    near(0.157299207050285, stats.erfc(1), 1e-15)
    near(1.84270079294971, stats.erfc(-1), 1e-14)
    near(2.20904969985854e-05, stats.erfc(3), 1e-18)
    near(4.677734981047266e-03, stats.erfc(2), 1e-15)
    near(1.53745979442803e-12, stats.erfc(5), 1e-25)
    assert.equal(1, stats.erfc(0))
  end)

  it("gives the familiar normal quantiles", function()
    near(0.975002104851780, stats.normal_cdf(1.96), 1e-13)
    near(0.5, stats.normal_cdf(0), 1e-15)
    near(0.00134989803163009, stats.normal_cdf(-3), 1e-15)
  end)

  it("computes log-gamma", function()
    near(math.log(math.sqrt(math.pi)), stats.lgamma(0.5), 1e-12)
    near(math.log(120), stats.lgamma(6), 1e-12)
    near(359.134205369575, stats.lgamma(100), 1e-9)
  end)

  it("matches the closed forms of Student's t for 1 and 2 degrees of freedom", function()
    for _, t in ipairs { -5, -1.3, -0.2, 0, 0.7, 2, 9 } do
      near(0.5 + math.atan(t) / math.pi, stats.t_cdf(t, 1), 1e-12)
      near(0.5 + t / (2 * math.sqrt(2 + t * t)), stats.t_cdf(t, 2), 1e-12)
    end
  end)

  it("approaches the normal distribution for many degrees of freedom", function()
    near(stats.normal_cdf(1.5), stats.t_cdf(1.5, 1e6), 1e-6)
    near(0.963305982614630, stats.t_cdf(2, 10), 1e-12)
  end)

  it("keeps the incomplete beta function's symmetry I_x(a,b) = 1 − I_(1−x)(b,a)", function()
    for _, c in ipairs { { 0.3, 2, 5 }, { 0.9, 0.5, 7.5 }, { 0.01, 3, 0.5 } } do
      near(1 - stats.betainc(1 - c[1], c[3], c[2]), stats.betainc(c[1], c[2], c[3]), 1e-12)
    end
    near(0.3, stats.betainc(0.3, 1, 1), 1e-14)
  end)
end)

describe("beat.stats.mann_whitney", function()
  it("gives the exact one-sided p of complete separation, 1/C(10,5)", function()
    local r = stats.mann_whitney({ 1, 2, 3, 4, 5 }, { 6, 7, 8, 9, 10 }, { alternative = "less" })
    near(1 / 252, r.p, 1e-15)
    assert.equal(0, r.statistic)
    assert.equal("exact", r.method)
    near(2 / 252, stats.mann_whitney({ 1, 2, 3, 4, 5 }, { 6, 7, 8, 9, 10 }).p, 1e-15)
  end)

  it("gives the exact tail P(U <= 4) = 12/252 for five against five", function()
    -- x = {1,2,3,5,9}, y = {4,6,7,8,10}: U_x = 0+0+0+1+4 = 5 → P(U<=5)=19/252; shift one
    local r = stats.mann_whitney({ 1, 2, 3, 4, 9 }, { 5, 6, 7, 8, 10 }, { alternative = "less" })
    assert.equal(4, r.statistic)
    near(12 / 252, r.p, 1e-15)
  end)

  it("is symmetric: 'greater' for (x, y) equals 'less' for (y, x)", function()
    local x, y = { 3.1, 4.5, 2.2, 8.0, 5.5, 6.1 }, { 1.0, 2.5, 3.0, 0.5 }
    near(stats.mann_whitney(y, x, { alternative = "less" }).p,
      stats.mann_whitney(x, y, { alternative = "greater" }).p, 1e-15)
  end)

  it("handles ties exactly with midranks", function()
    -- all values equal: nothing is significant
    local r = stats.mann_whitney({ 5, 5, 5 }, { 5, 5, 5 }, { alternative = "less" })
    assert.equal(1, r.p)
    -- x = {1,1,2}, y = {2,3,3}: one-sided p by enumeration is 2/20 (sums ≤ observed)
    r = stats.mann_whitney({ 1, 1, 2 }, { 2, 3, 3 }, { alternative = "less" })
    near(2 / 20, r.p, 1e-15)
  end)

  it("agrees with its normal approximation for larger samples", function()
    local g = prng(7)
    local x, y = {}, {}
    for i = 1, 18 do x[i] = g.normal(0, 1) end
    for i = 1, 20 do y[i] = g.normal(0.6, 1) end
    local exact = stats.mann_whitney(x, y, { alternative = "less", exact = true })
    local normal = stats.mann_whitney(x, y, { alternative = "less", exact = false })
    assert.equal("exact", exact.method)
    assert.equal("normal", normal.method)
    near(exact.p, normal.p, 0.01)
  end)

  it("switches to the normal approximation above 40 values", function()
    local x, y = {}, {}
    for i = 1, 30 do x[i] = i; y[i] = i + 0.5 end
    assert.equal("normal", stats.mann_whitney(x, y).method)
  end)

  it("rejects an unknown alternative, naming the option", function()
    assert.has_error(function() stats.mann_whitney({ 1 }, { 2 }, { alternative = "lesser" }) end,
      'beat.stats.mann_whitney: opts.alternative must be "less", "greater" or "two-sided", got "lesser"')
  end)
end)

describe("beat.stats.welch", function()
  it("matches a textbook Welch test", function()
    -- t = −2.6112, df ≈ 6.98, one-sided p ≈ 0.01747
    local r = stats.welch({ 1, 2, 3, 4 }, { 3, 4, 5, 6, 7 }, { alternative = "less" })
    near(-2.5 / math.sqrt(5 / 12 + 0.5), r.statistic, 1e-12)
    near((5 / 12 + 0.5) ^ 2 / ((5 / 12) ^ 2 / 3 + 0.25 / 4), r.df, 1e-12)
    near(0.017469391, r.p, 1e-6)
  end)

  it("treats a difference between two constant samples as certain", function()
    assert.equal(0, stats.welch({ 1, 1 }, { 2, 2 }, { alternative = "less" }).p)
    assert.equal(1, stats.welch({ 1, 1 }, { 2, 2 }, { alternative = "greater" }).p)
    assert.equal(1, stats.welch({ 2, 2 }, { 2, 2 }).p)
  end)

  it("needs two values on each side", function()
    assert.has_error(function() stats.welch({ 1 }, { 2, 3 }) end,
      "beat.stats.welch: needs at least 2 values, got 1")
  end)

  it("holds its level: about 5% of same-distribution pairs reach p <= 0.05", function()
    local g = prng(2024)
    local hits, trials = 0, 4000
    for _ = 1, trials do
      local x, y = {}, {}
      for i = 1, 8 do x[i] = g.normal(10, 2); y[i] = g.normal(10, 2) end
      if stats.welch(x, y, { alternative = "less" }).p <= 0.05 then hits = hits + 1 end
    end
    local rate = hits / trials
    assert.is_true(rate > 0.035 and rate < 0.065, "rate " .. rate)
  end)
end)
