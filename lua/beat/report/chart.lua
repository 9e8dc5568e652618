--- beat.report.chart: axes and charts, shared by the terminal and SVG
--- renderers: one chart per metric (and a Pareto run's trade-off), each a
--- plain table of points in [0, 1] coordinates, plus the summary and front
--- lines every renderer prints.
local NO_SCORE_MARK = require("beat.report.model").NO_SCORE_MARK

local abs, floor, ceil, log = math.abs, math.floor, math.ceil, math.log
local numfmt = require "beat.numfmt"
local fmt = numfmt.format

-- Scales --------------------------------------------------------------------------------------

local function quantile(sorted, q)
  local pos = 1 + (#sorted - 1) * q
  local lo = floor(pos)
  local frac = pos - lo
  if lo >= #sorted then return sorted[#sorted] end
  return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac
end

local function log10(x) return log(x, 10) end

-- 1-2-5 steps: the nice step near span/n.
local function nice_step(span, n)
  local raw = span / n
  local p = 10 ^ floor(log10(raw))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if raw <= m * p * 1.0000001 then return m * p end
  end
  return 10 * p
end

-- Tick values on a log axis from lo to hi (both > 0): powers of ten and
-- their 2 and 5 multiples, thinned to at most `max`; bounds widened to ticks.
local function log_ticks(lo, hi, max)
  local cands = {}
  for e = floor(log10(lo)) - 1, ceil(log10(hi)) + 1 do
    for _, m in ipairs { 1, 2, 5 } do cands[#cands + 1] = m * 10 ^ e end
  end
  local function fix(x) return tonumber(("%.12g"):format(x)) end
  local tlo, thi = lo, hi
  for _, c in ipairs(cands) do
    if c <= lo * (1 + 1e-9) then tlo = fix(c) end
  end
  for i = #cands, 1, -1 do
    if cands[i] >= hi * (1 - 1e-9) then thi = fix(cands[i]) end
  end
  for _, sub in ipairs { { 1, 2, 5 }, { 1 }, "thin" } do
    local ticks = {}
    for e = floor(log10(tlo)) - 1, ceil(log10(thi)) + 1 do
      for _, m in ipairs(type(sub) == "table" and sub or { 1 }) do
        local v = fix(m * 10 ^ e)
        if v >= tlo * (1 - 1e-9) and v <= thi * (1 + 1e-9) then ticks[#ticks + 1] = v end
      end
    end
    if sub == "thin" then
      local every = ceil(#ticks / max)
      local out = {}
      for i = 1, #ticks, every do out[#out + 1] = ticks[i] end
      ticks = out
    end
    if #ticks <= max then
      if #ticks < 2 then ticks = { tlo, thi } end
      return tlo, thi, ticks
    end
  end
end

--- An axis for values: {lo, hi, log, ticks, labels, clipped_above, clipped_below}.
--- Values far outside the rest (beyond 3 interquartile ranges of the
--- quartiles, on a log scale for positive data) and non-finite ones are left
--- outside [lo, hi]. opts: max_ticks, log (true/false/nil = automatic),
--- no_clip.
local function make_scale(vals, opts)
  opts = opts or {}
  local finite = {}
  for _, v in ipairs(vals) do
    if v == v and v ~= math.huge and v ~= -math.huge then finite[#finite + 1] = v end
  end
  table.sort(finite)
  local positive = #finite > 0 and finite[1] > 0
  local keep = finite
  if #finite >= 4 and not opts.no_clip then
    local tf = positive and log10 or function(x) return x end
    local t = {}
    for i, v in ipairs(finite) do t[i] = tf(v) end
    local q1, q3 = quantile(t, 0.25), quantile(t, 0.75)
    local spread = q3 - q1
    if positive and spread < 0.5 then spread = 0.5 end
    if spread > 0 then
      keep = {}
      for i, v in ipairs(finite) do
        if t[i] >= q1 - 3 * spread and t[i] <= q3 + 3 * spread then keep[#keep + 1] = v end
      end
    end
  end
  local lo, hi
  if #keep == 0 then lo, hi = 0, 1 else lo, hi = keep[1], keep[#keep] end
  local max_ticks = opts.max_ticks or 6
  local use_log = opts.log
  if use_log == nil then use_log = lo > 0 and hi / lo >= 10 end
  if use_log and not (lo > 0) then use_log = false end
  local ticks
  if use_log then
    lo, hi, ticks = log_ticks(lo, hi, max_ticks)
  else
    if lo == hi then
      local pad = lo ~= 0 and abs(lo) * 0.1 or 1
      lo, hi = lo - pad, hi + pad
    end
    local step = nice_step(hi - lo, max_ticks - 1)
    lo, hi = floor(lo / step + 1e-9) * step, ceil(hi / step - 1e-9) * step
    ticks = {}
    local n = floor((hi - lo) / step + 0.5)
    for i = 0, n do
      local v = tonumber(("%.12g"):format(lo + i * step))
      ticks[#ticks + 1] = v
    end
  end
  return { lo = lo, hi = hi, log = use_log, ticks = ticks, labels = numfmt.distinct(ticks) }
end

-- Position of v on scale s in [0, 1] (outside when clipped; nil for NaN).
local function frac(s, v)
  if v ~= v then return nil end
  if v == math.huge then return 2 end
  if v == -math.huge then return -1 end
  if s.log then
    if v <= 0 then return -1 end
    return (log10(v) - log10(s.lo)) / (log10(s.hi) - log10(s.lo))
  end
  return (v - s.lo) / (s.hi - s.lo)
end

local EPS = 1e-9

-- The legend words of the glyphs (terminal) and marker shapes (SVG).
local LEGEND = {
  kept = "kept", discarded = "discarded", baseline = "baseline", front = "on the Pareto front",
  best = "best so far", crash = "crash/fail (no score)", pass = "pass", noscore = "no score",
  infeasible = "infeasible (no score)",
  above = "off the scale (top)", below = "off the scale (bottom)",
}

local function ulen(s) return utf8.len(s) or #s end


-- Charts (shared by the terminal and SVG renderers) ---------------------------------------------

local function metric_direction(model, name)
  for _, m in ipairs(model.objective.metrics) do
    if m.name == name then return m.direction end
  end
  if model.objective.kind ~= "pareto" and model.objective.metrics[1] and #model.metrics == 1 then
    return model.objective.metrics[1].direction
  end
end

local function iter_label(it)
  return it.baseline and "baseline" or ("iteration " .. it.iteration)
end

-- The tooltip/description of one iteration.
local function describe_iter(it, name)
  local v = name and it.values[name]
  local parts = { ("%s: %s"):format(iter_label(it), it.status) }
  if it.score_text then parts[#parts + 1] = it.score_text
  elseif v then parts[#parts + 1] = ("%s %s"):format(name, fmt(v)) end
  if it.front then parts[#parts + 1] = "on the Pareto front" end
  local s = table.concat(parts, ", ")
  if it.summary and it.summary ~= "" and it.summary ~= it.score_text then s = s .. " — " .. it.summary end
  return s
end

-- One chart per metric: points, best-so-far steps, marks for iterations without a score.
local function metric_chart(model, name, max_ticks)
  local iters = model.iterations
  local pareto = model.objective.kind == "pareto"
  local vals = {}
  for _, it in ipairs(iters) do
    if it.values[name] ~= nil then vals[#vals + 1] = it.values[name] end
  end
  local ys = make_scale(vals, { max_ticks = max_ticks })
  local xmin, xmax = iters[1] and iters[1].round or 0, iters[#iters] and iters[#iters].round or 1
  if xmax <= xmin then xmax = xmin + 1 end
  local xs = { lo = xmin, hi = xmax, integer = true }
  local points, marks, best, clipped = {}, {}, {}, {}
  local cur
  for _, it in ipairs(iters) do
    local v = it.values[name]
    if v ~= nil then
      local f = frac(ys, v)
      local clip = f > 1 + EPS and "above" or (f < -EPS and "below") or nil
      local kind = it.baseline and "baseline" or (it.kept and "kept" or "discarded")
      local p = { x = it.round, y = v, fy = f, kind = kind, clip = clip, front = it.front,
        it = it, tip = describe_iter(it, name) }
      points[#points + 1] = p
      if clip then clipped[#clipped + 1] = p end
      if (it.kept or it.baseline) and not pareto then cur = v end
    else
      marks[#marks + 1] = { x = it.round, it = it,
        kind = NO_SCORE_MARK[it.status] or (it.infeasible and "infeasible") or "noscore",
        tip = describe_iter(it, name) }
    end
    if cur ~= nil then best[#best + 1] = { x = it.round, y = cur, fy = frac(ys, cur) } end
  end
  local dir = metric_direction(model, name)
  return {
    kind = "iterations", name = name, direction = dir, pareto = pareto,
    title = ("%s per iteration%s"):format(name, dir == "minimize" and ", lower is better"
      or dir == "maximize" and ", higher is better" or ""),
    xs = xs, ys = ys, points = points, marks = marks, best = best, clipped = clipped,
  }
end

-- A Pareto run's trade-off: the second metric against the first.
local function pareto_chart(model, max_ticks)
  local a, b = model.metrics[1], model.metrics[2]
  local pts, xv, yv = {}, {}, {}
  for _, it in ipairs(model.iterations) do
    local x, y = it.values[a], it.values[b]
    if x and y then
      pts[#pts + 1] = { x = x, y = y, it = it }
      xv[#xv + 1], yv[#yv + 1] = x, y
    end
  end
  local xs = make_scale(xv, { max_ticks = max_ticks })
  local ys = make_scale(yv, { max_ticks = max_ticks })
  local points, hidden = {}, {}
  for _, p in ipairs(pts) do
    local fx, fy = frac(xs, p.x), frac(ys, p.y)
    if fx < -EPS or fx > 1 + EPS or fy < -EPS or fy > 1 + EPS then
      hidden[#hidden + 1] = p
    else
      local it = p.it
      points[#points + 1] = { x = p.x, y = p.y, fx = fx, fy = fy, front = it.front,
        kind = it.baseline and "baseline" or (it.kept and "kept" or "discarded"), it = it,
        tip = describe_iter(it) }
    end
  end
  local function word(name)
    local d = metric_direction(model, name)
    return d == "minimize" and (name .. ", lower is better") or d == "maximize" and (name .. ", higher is better") or name
  end
  local function paren(name)
    local d = metric_direction(model, name)
    return d and ("%s (%s is better)"):format(name, d == "minimize" and "lower" or "higher") or name
  end
  return { kind = "pareto", title = ("Pareto front: %s against %s"):format(paren(b), paren(a)), xname = a, yname = b,
    xlabel = word(a), ylabel = word(b), xs = xs, ys = ys, points = points, hidden = hidden }
end

local function charts_of(model, max_ticks)
  local charts = {}
  for _, name in ipairs(model.metrics) do charts[#charts + 1] = metric_chart(model, name, max_ticks) end
  if model.objective.kind == "pareto" and #model.metrics >= 2 then
    charts[#charts + 1] = pareto_chart(model, max_ticks)
  end
  return charts
end

local function front_text(model)
  if not model.front then return nil end
  local by = {}
  for _, it in ipairs(model.iterations) do by[it.iteration] = it end
  local parts = {}
  for _, n in ipairs(model.front) do
    local it = by[n]
    parts[#parts + 1] = ("%s (%s)"):format(it and iter_label(it) or ("iteration " .. n), it and it.score_text or "?")
  end
  return ("Pareto front (%d): %s"):format(#model.front, table.concat(parts, "; "))
end

local function clip_text(c, ys)
  local above, below = {}, {}
  for _, p in ipairs(c.clipped) do
    local t = p.clip == "above" and above or below
    t[#t + 1] = ("%s = %s"):format(p.it and p.it.iteration or p.x, fmt(p.y))
  end
  local out = {}
  local function list(t)
    if #t > 6 then
      local n = #t
      t = { table.unpack(t, 1, 6) }
      t[#t + 1] = ("and %d more"):format(n - 6)
    end
    return table.concat(t, ", ")
  end
  if #above > 0 then
    out[#out + 1] = ("▲ off the scale above %s (drawn at the top edge): iteration %s"):format(fmt(ys.hi), list(above))
  end
  if #below > 0 then
    out[#out + 1] = ("▼ off the scale below %s (drawn at the bottom edge): iteration %s"):format(fmt(ys.lo), list(below))
  end
  return out
end

local function summary_lines(model)
  local lines = {}
  local head = ("run %s"):format(model.id or "?")
  if model.strategy then head = head .. (" (%s)"):format(model.strategy) end
  head = head .. ": " .. model.status .. (model.reason and (" — " .. model.reason) or "")
  lines[1] = head
  local parts = {}
  if model.best_text then
    parts[#parts + 1] = ("best %s"):format(model.best_text)
      .. (model.baseline_text and (" (baseline %s)"):format(model.baseline_text) or "")
  end
  local n, rounds, cands = 0, {}, 0
  for _, it in ipairs(model.iterations) do
    if not (it.baseline or it.iteration == 0) then
      if not rounds[it.round] then rounds[it.round], n = true, n + 1 end
      if it.candidate then cands = cands + 1 end
    end
  end
  parts[#parts + 1] = ("%d iteration%s"):format(n, n == 1 and "" or "s")
    .. (cands > 0 and (" (%d candidate%s)"):format(cands, cands == 1 and "" or "s") or "")
  if model.elapsed then parts[#parts + 1] = require("beat.duration").format(model.elapsed) end
  if model.cost_usd and model.cost_usd > 0 then parts[#parts + 1] = ("$%.2f"):format(model.cost_usd) end
  lines[2] = table.concat(parts, "; ")
  return lines
end
return {
  EPS = EPS, LEGEND = LEGEND, ulen = ulen, frac = frac, nice_step = nice_step, charts_of = charts_of, front_text = front_text, clip_text = clip_text,
  summary_lines = summary_lines,
}
