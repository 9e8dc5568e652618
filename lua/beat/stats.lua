--- beat.stats — small, plain-Lua statistics for noisy measurements.
---
--- Descriptive statistics (mean, median, stddev, MAD), outlier flags by the modified
--- z-score (Iglewicz & Hoaglin), and two two-sample tests: Mann–Whitney U (exact
--- permutation distribution for small samples, normal approximation with tie and
--- continuity correction above that) and Welch's t (Student t CDF through the
--- regularized incomplete beta function). Everything is plain Lua; the special
--- functions are computed from their series and continued fractions.
---
--- Every function takes a list of finite numbers and raises on anything else: callers
--- (beat.measure, beat.objective) check their inputs before they get here.

local check = require "beat.check"

local M = {}

local sqrt, exp, log, abs, huge = math.sqrt, math.exp, math.log, math.abs, math.huge

---@param where string
---@param xs any
---@param min_n integer
local function check_list(where, xs, min_n)
  where = "beat.stats." .. where
  check.value(where, "xs", xs, { "table", required = true, what = "a list of numbers" }, 3)
  local n = #xs
  if n < min_n then
    check.error(where, ("needs at least %d value%s, got %d"):format(min_n, min_n == 1 and "" or "s", n), 3)
  end
  for i = 1, n do
    local v = xs[i]
    if type(v) ~= "number" or v ~= v or v == huge or v == -huge then
      check.fail(where, "value " .. i, "a finite number", v, 3)
    end
  end
  return n
end

local POSITIVE = { "number", required = true, range = "(0, inf]", what = "a positive number" }

---@param xs number[]
---@return number[]
local function sorted_copy(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  return s
end

--- Median of an already sorted list.
local function median_sorted(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

--- Sum with Neumaier compensation, so means of many similar values stay exact.
---@param xs number[]
---@return number
function M.sum(xs)
  local n = check_list("sum", xs, 0)
  local s, c = 0.0, 0.0
  for i = 1, n do
    local v = xs[i]
    local t = s + v
    if abs(s) >= abs(v) then c = c + ((s - t) + v) else c = c + ((v - t) + s) end
    s = t
  end
  return s + c
end

---@param xs number[]
---@return number
function M.mean(xs)
  local n = check_list("mean", xs, 1)
  return M.sum(xs) / n
end

---@param xs number[]
---@return number
function M.median(xs)
  check_list("median", xs, 1)
  return median_sorted(sorted_copy(xs))
end

---@param xs number[]
---@return number
function M.min(xs)
  local n = check_list("min", xs, 1)
  local m = xs[1]
  for i = 2, n do if xs[i] < m then m = xs[i] end end
  return m
end

---@param xs number[]
---@return number
function M.max(xs)
  local n = check_list("max", xs, 1)
  local m = xs[1]
  for i = 2, n do if xs[i] > m then m = xs[i] end end
  return m
end

--- Sample variance (divides by n − 1); 0 for a single value.
---@param xs number[]
---@return number
function M.variance(xs)
  local n = check_list("variance", xs, 1)
  if n < 2 then return 0.0 end
  local m = M.sum(xs) / n
  local d = {}
  for i = 1, n do d[i] = (xs[i] - m) ^ 2 end
  return M.sum(d) / (n - 1)
end

--- Sample standard deviation (n − 1); 0 for a single value.
---@param xs number[]
---@return number
function M.stddev(xs)
  check_list("stddev", xs, 1)
  return sqrt(M.variance(xs))
end

--- Median absolute deviation from the median, unscaled (multiply by 1.4826 to estimate σ
--- of normal data).
---@param xs number[]
---@return number
function M.mad(xs)
  local n = check_list("mad", xs, 1)
  local med = M.median(xs)
  local d = {}
  for i = 1, n do d[i] = abs(xs[i] - med) end
  return M.median(d)
end

--- Modified z-scores (Iglewicz & Hoaglin): 0.6745·(x − median)/MAD. When more than half
--- the values are equal (MAD = 0) the mean absolute deviation stands in:
--- (x − median)/(1.253314·meanAD). All zeros when every value is the same.
---@param xs number[]
---@return number[]
function M.modified_z(xs)
  local n = check_list("modified_z", xs, 1)
  local med = M.median(xs)
  local mad = M.mad(xs)
  local z = {}
  if mad > 0 then
    for i = 1, n do z[i] = 0.6745 * (xs[i] - med) / mad end
    return z
  end
  local d = {}
  for i = 1, n do d[i] = abs(xs[i] - med) end
  local mean_ad = M.sum(d) / n
  for i = 1, n do
    z[i] = mean_ad > 0 and (xs[i] - med) / (1.253314 * mean_ad) or 0.0
  end
  return z
end

--- Indices of the values whose modified z-score exceeds `threshold` in absolute value
--- (3.5 by default, the usual cut-off). Flags only; nothing is removed.
---@param xs number[]
---@param threshold? number
---@return integer[]
function M.outliers(xs, threshold)
  check_list("outliers", xs, 1)
  threshold = threshold or 3.5
  check.value("beat.stats.outliers", "threshold", threshold, POSITIVE)
  local out = {}
  for i, z in ipairs(M.modified_z(xs)) do
    if abs(z) > threshold then out[#out + 1] = i end
  end
  return out
end

---@class beat.Summary
---@field n integer
---@field mean number
---@field median number
---@field stddev number
---@field min number
---@field max number
---@field mad number
---@field outliers integer[]

--- Every descriptive statistic at once.
---@param xs number[]
---@return beat.Summary
function M.summary(xs)
  local n = check_list("summary", xs, 1)
  return {
    n = n,
    mean = M.mean(xs),
    median = M.median(xs),
    stddev = M.stddev(xs),
    min = M.min(xs),
    max = M.max(xs),
    mad = M.mad(xs),
    outliers = M.outliers(xs),
  }
end

-- Special functions -----------------------------------------------------------------

local SQRT_PI = sqrt(math.pi)

--- Complementary error function, accurate to about 1e-12 relative: Maclaurin series of
--- erf for |x| < 2.5, Laplace's continued fraction (modified Lentz) beyond.
---@param x number
---@return number
function M.erfc(x)
  if x ~= x then return x end
  if x < 0 then return 2 - M.erfc(-x) end
  if x < 2.5 then
    -- erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
    local x2, term, sum = x * x, x, x
    for n = 1, 200 do
      term = -term * x2 / n
      local add = term / (2 * n + 1)
      sum = sum + add
      if abs(add) < 1e-17 * abs(sum) then break end
    end
    return 1 - 2 / SQRT_PI * sum
  end
  if x > 27 then return 0.0 end
  -- erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …))))
  local tiny = 1e-300
  local f = x
  local c, d = x, 0.0
  for k = 1, 500 do
    local a = k / 2
    d = x + a * d
    if d == 0 then d = tiny end
    c = x + a / c
    if c == 0 then c = tiny end
    d = 1 / d
    local delta = c * d
    f = f * delta
    if abs(delta - 1) < 1e-16 then break end
  end
  return exp(-x * x) / SQRT_PI / f
end

--- Standard normal CDF Φ(z).
---@param z number
---@return number
function M.normal_cdf(z)
  return 0.5 * M.erfc(-z / sqrt(2))
end

--- log Γ(x) for x > 0: Stirling's series after shifting x above 12 with the recurrence.
---@param x number
---@return number
function M.lgamma(x)
  check.value("beat.stats.lgamma", "x", x, POSITIVE)
  local shift = 0.0
  while x < 12 do
    shift = shift + log(x)
    x = x + 1
  end
  local x2 = x * x
  local x3 = x * x2
  local series = 1 / (12 * x) - 1 / (360 * x3) + 1 / (1260 * x3 * x2)
    - 1 / (1680 * x3 * x2 * x2) + 1 / (1188 * x3 * x3 * x3)
  return (x - 0.5) * log(x) - x + 0.5 * log(2 * math.pi) + series - shift
end

-- Continued fraction for the incomplete beta function (DLMF 8.17.22), modified Lentz.
local function betacf(x, a, b)
  local tiny = 1e-300
  local c, d = 1.0, 1 - (a + b) * x / (a + 1)
  if abs(d) < tiny then d = tiny end
  d = 1 / d
  local h = d
  for m = 1, 1000 do
    local m2 = 2 * m
    local num = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
    d = 1 + num * d; if abs(d) < tiny then d = tiny end
    c = 1 + num / c; if abs(c) < tiny then c = tiny end
    d = 1 / d
    h = h * d * c
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
    d = 1 + num * d; if abs(d) < tiny then d = tiny end
    c = 1 + num / c; if abs(c) < tiny then c = tiny end
    d = 1 / d
    local delta = d * c
    h = h * delta
    if abs(delta - 1) < 1e-15 then break end
  end
  return h
end

--- Regularized incomplete beta function I_x(a, b), for 0 ≤ x ≤ 1 and a, b > 0.
---@param x number
---@param a number
---@param b number
---@return number
function M.betainc(x, a, b)
  check.value("beat.stats.betainc", "x", x, { "number", required = true, range = "[0, 1]" })
  if x == 0 then return 0.0 end
  if x == 1 then return 1.0 end
  local lfront = M.lgamma(a + b) - M.lgamma(a) - M.lgamma(b) + a * log(x) + b * log(1 - x)
  if x < (a + 1) / (a + b + 2) then
    return exp(lfront) * betacf(x, a, b) / a
  end
  return 1 - exp(lfront) * betacf(1 - x, b, a) / b
end

--- Student t CDF P(T ≤ t) with `df` degrees of freedom (df may be fractional, as
--- Welch's test needs).
---@param t number
---@param df number
---@return number
function M.t_cdf(t, df)
  check.value("beat.stats.t_cdf", "df", df, POSITIVE)
  if t == huge then return 1.0 end
  if t == -huge then return 0.0 end
  local tail = 0.5 * M.betainc(df / (df + t * t), df / 2, 0.5) -- P(T > |t|)
  if t > 0 then return 1 - tail end
  return tail
end

-- Two-sample tests --------------------------------------------------------------------

local TEST_OPTS = { alternative = { enum = { "less", "greater", "two-sided" } }, exact = "boolean" }

local function check_alternative(where, opts)
  opts = check.options("beat.stats." .. where, opts, TEST_OPTS, { level = 3 })
  return opts.alternative or "two-sided"
end

local function clamp01(p)
  if p < 0 then return 0.0 end
  if p > 1 then return 1.0 end
  return p
end

--- Midranks of the pooled sample. Returns the doubled ranks of x (integers, so exact
--- sums stay exact), the doubled ranks of everything, and Σ(t³ − t) over tie groups.
local function pooled_ranks(x, y)
  local items = {}
  for i = 1, #x do items[#items + 1] = { v = x[i], g = 1 } end
  for i = 1, #y do items[#items + 1] = { v = y[i], g = 2 } end
  table.sort(items, function(p, q) return p.v < q.v end)
  local N = #items
  local all2, x2 = {}, {}
  local ties = 0
  local i = 1
  while i <= N do
    local j = i
    while j < N and items[j + 1].v == items[i].v do j = j + 1 end
    local r2 = i + j -- doubled midrank of positions i..j
    local t = j - i + 1
    if t > 1 then ties = ties + t * t * t - t end
    for k = i, j do
      all2[k] = r2
      if items[k].g == 1 then x2[#x2 + 1] = r2 end
    end
    i = j + 1
  end
  return x2, all2, ties
end

--- Exact permutation distribution of the sum of `n` doubled ranks drawn from `all2`.
--- Returns counts[s] (as floats) and the total number of subsets.
local function rank_sum_distribution(all2, n)
  local N = #all2
  local maxS = 0
  do
    local s = sorted_copy(all2)
    for k = N - n + 1, N do maxS = maxS + s[k] end
  end
  local width = maxS + 1
  local ways = {}
  for k = 0, n do
    local base = k * width
    for s = 0, maxS do ways[base + s] = 0.0 end
  end
  ways[0] = 1.0
  for i = 1, N do
    local r = all2[i]
    for k = (i < n and i or n), 1, -1 do
      local base, prev = k * width, (k - 1) * width
      for s = maxS, r, -1 do
        local w = ways[prev + s - r]
        if w ~= 0 then ways[base + s] = ways[base + s] + w end
      end
    end
  end
  local counts, total = {}, 0.0
  local base = n * width
  for s = 0, maxS do
    counts[s] = ways[base + s]
    total = total + counts[s]
  end
  return counts, total, maxS
end

---@class beat.TestResult
---@field p number           p-value for the requested alternative
---@field statistic number   U of the first sample (Mann–Whitney) or t (Welch)
---@field method string      "exact", "normal" or "welch"
---@field df? number         Welch–Satterthwaite degrees of freedom (Welch only)

---@class beat.TestOptions
---@field alternative? "less"|"greater"|"two-sided"  H1 about x relative to y (default two-sided)
---@field exact? boolean     Mann–Whitney: force (true) or forbid (false) the exact distribution

--- Mann–Whitney U test (Wilcoxon rank-sum) of x against y. "less" means the alternative
--- that x tends to be smaller than y. Exact (ties included, by enumerating the
--- permutation distribution of midranks) when the pooled size is at most 40; otherwise the
--- normal approximation with tie-corrected variance and continuity correction.
---@param x number[]
---@param y number[]
---@param opts? beat.TestOptions
---@return beat.TestResult
function M.mann_whitney(x, y, opts)
  local n = check_list("mann_whitney", x, 1)
  local m = check_list("mann_whitney", y, 1)
  local alt = check_alternative("mann_whitney", opts)
  local N = n + m
  local x2, all2, ties = pooled_ranks(x, y)
  local R2 = 0
  for i = 1, n do R2 = R2 + x2[i] end
  local U = R2 / 2 - n * (n + 1) / 2

  local exact = opts and opts.exact
  if exact == nil then exact = N <= 40 end
  if exact then
    -- distribution of the smaller group's rank sum; translate for x when needed
    local counts, total, maxS
    local lo, hi -- P(2R_x ≤ R2), P(2R_x ≥ R2)
    if n <= m then
      counts, total, maxS = rank_sum_distribution(all2, n)
      local le, ge = 0.0, 0.0
      for s = 0, maxS do
        if s <= R2 then le = le + counts[s] end
        if s >= R2 then ge = ge + counts[s] end
      end
      lo, hi = le / total, ge / total
    else
      counts, total, maxS = rank_sum_distribution(all2, m)
      local T2 = N * (N + 1)
      local Ry2 = T2 - R2
      local le, ge = 0.0, 0.0
      for s = 0, maxS do
        if s >= Ry2 then le = le + counts[s] end -- small R_x ⇔ large R_y
        if s <= Ry2 then ge = ge + counts[s] end
      end
      lo, hi = le / total, ge / total
    end
    local p
    if alt == "less" then p = lo
    elseif alt == "greater" then p = hi
    else p = 2 * (lo < hi and lo or hi) end
    return { p = clamp01(p), statistic = U, method = "exact" }
  end

  local mu = n * m / 2
  local var = n * m / 12 * ((N + 1) - ties / (N * (N - 1)))
  local p
  if var <= 0 then
    p = 1.0
  else
    local sd = sqrt(var)
    local p_less = M.normal_cdf((U - mu + 0.5) / sd)
    local p_greater = M.normal_cdf(-(U - mu - 0.5) / sd)
    if alt == "less" then p = p_less
    elseif alt == "greater" then p = p_greater
    else p = 2 * (p_less < p_greater and p_less or p_greater) end
  end
  return { p = clamp01(p), statistic = U, method = "normal" }
end

--- Welch's unequal-variances t test of mean(x) against mean(y). "less" means the
--- alternative that x's mean is smaller. Both samples need at least 2 values. When both
--- variances are zero the difference of means is taken as certain (p = 0 or 1).
---@param x number[]
---@param y number[]
---@param opts? beat.TestOptions
---@return beat.TestResult
function M.welch(x, y, opts)
  local n = check_list("welch", x, 2)
  local m = check_list("welch", y, 2)
  local alt = check_alternative("welch", opts)
  local mx, my = M.mean(x), M.mean(y)
  local vx, vy = M.variance(x) / n, M.variance(y) / m
  local se2 = vx + vy
  if se2 <= 0 then
    local d = mx - my
    local p
    if alt == "less" then p = d < 0 and 0.0 or 1.0
    elseif alt == "greater" then p = d > 0 and 0.0 or 1.0
    else p = d ~= 0 and 0.0 or 1.0 end
    local inf = d > 0 and huge or (d < 0 and -huge or 0.0)
    return { p = p, statistic = inf, method = "welch", df = n + m - 2 }
  end
  local t = (mx - my) / sqrt(se2)
  local df = se2 * se2 / (vx * vx / (n - 1) + vy * vy / (m - 1))
  local p
  if alt == "less" then p = M.t_cdf(t, df)
  elseif alt == "greater" then p = M.t_cdf(-t, df)
  else p = 2 * M.t_cdf(-abs(t), df) end
  return { p = clamp01(p), statistic = t, method = "welch", df = df }
end

return M
