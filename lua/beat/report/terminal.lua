--- beat.report.terminal: the run as text for a terminal (a summary, one
--- text chart per metric, a Pareto run's front).
local chart = require "beat.report.chart"
local NO_SCORE_MARK = require("beat.report.model").NO_SCORE_MARK

local EPS, LEGEND, frac, nice_step, ulen = chart.EPS, chart.LEGEND, chart.frac, chart.nice_step, chart.ulen
local charts_of, clip_text, front_text, summary_lines = chart.charts_of, chart.clip_text, chart.front_text, chart.summary_lines
local floor, ceil = math.floor, math.ceil

local M = {}

local GLYPH = {
  kept = "●", discarded = "○", baseline = "◆", front = "★", above = "▲", below = "▼",
  best = "─", crash = "×", pass = "✓", noscore = "∅", infeasible = "∅",
}
local COLOR = {
  kept = "32;1", discarded = "2", baseline = "34;1", front = "35;1", above = "33;1", below = "33;1",
  best = "36", crash = "31;1", pass = "32;1", noscore = "33", infeasible = "33", axis = "2", title = "1",
}
local function paint(s, cls, color)
  if not color or not cls or not COLOR[cls] then return s end
  return ("\27[%sm%s\27[0m"):format(COLOR[cls], s)
end

-- Words joined with sep, wrapped at width.
local function wrap(words, width, sep, indent)
  local lines, cur, curlen = {}, "", 0
  indent = indent or ""
  for _, w in ipairs(words) do
    local wl = ulen(w.plain or w)
    if curlen > 0 and curlen + ulen(sep) + wl > width then
      lines[#lines + 1] = cur
      cur, curlen = indent, ulen(indent)
    elseif curlen > 0 then
      cur, curlen = cur .. sep, curlen + ulen(sep)
    end
    cur, curlen = cur .. (w.text or w), curlen + wl
  end
  if curlen > 0 then lines[#lines + 1] = cur end
  return lines
end

-- Cuts a plain string to width characters.
local function cut(s, width)
  if ulen(s) <= width then return s end
  local out, n = {}, 0
  for _, c in utf8.codes(s) do
    n = n + 1
    if n > width - 1 then break end
    out[#out + 1] = utf8.char(c)
  end
  return table.concat(out) .. "…"
end

-- Text wrapped at width (continuation lines indented); a word longer than a line is cut.
local function wrap_text(s, width)
  local words = {}
  for w in s:gmatch("%S+") do words[#words + 1] = w end
  local out = wrap(words, width, " ", "  ")
  for i, l in ipairs(out) do out[i] = cut(l, width) end
  return out
end

local function render_terminal_chart(c, width, height, color)
  local lines = {}
  local ys = c.ys
  local labw = 0
  for _, l in ipairs(ys.labels) do if ulen(l) > labw then labw = ulen(l) end end
  -- x ticks
  local xlabels, xticks
  if c.kind == "iterations" then
    xticks = {}
  else
    xticks, xlabels = c.xs.ticks, c.xs.labels
  end
  local rmargin = 3
  if xlabels then for _, l in ipairs(xlabels) do rmargin = math.max(rmargin, ulen(l)) end end
  local plotw = width - labw - 2 - rmargin
  if plotw < 10 then plotw = 10 end
  local H = height
  local function col(x)
    local f
    if c.kind == "iterations" then f = (x - c.xs.lo) / (c.xs.hi - c.xs.lo) else f = frac(c.xs, x) end
    return 1 + floor(f * (plotw - 2) + 0.5)
  end
  local function row(f) return floor((1 - f) * (H - 1) + 0.5) end
  if c.kind == "iterations" then
    local span = c.xs.hi - c.xs.lo
    local maxl = #tostring(c.xs.hi) + 2
    local fit = math.max(1, floor(plotw / maxl))
    local step = nice_step(span, math.min(fit, 10))
    if step < 1 then step = 1 end
    step = floor(step + 0.5)
    xticks, xlabels = {}, {}
    local first = ceil(c.xs.lo / step) * step
    for x = first, c.xs.hi, step do
      xticks[#xticks + 1] = x
      xlabels[#xlabels + 1] = tostring(x)
    end
  end
  -- the grid
  local grid = {}
  for r = 0, H - 1 do
    grid[r] = {}
    for k = 0, plotw - 1 do grid[r][k] = { " " } end
  end
  local used = {}
  if c.best then
    for i, b in ipairs(c.best) do
      local to = c.best[i + 1] and col(c.best[i + 1].x) - 1 or col(c.xs.hi)
      if b.fy and b.fy >= -EPS and b.fy <= 1 + EPS then
        local r = row(b.fy)
        for k = col(b.x), math.min(to, plotw - 1) do grid[r][k] = { GLYPH.best, "best" } end
      end
    end
  end
  local rank = { discarded = 1, baseline = 2, kept = 3, front = 4 }
  for _, p in ipairs(c.points) do
    local k = col(p.x)
    local fy = p.fy or frac(c.ys, p.y)
    local r, g, cls
    local kind = p.front and "front" or p.kind
    if fy > 1 + EPS then r, g, cls = 0, GLYPH.above, "above"
    elseif fy < -EPS then r, g, cls = H - 1, GLYPH.below, "below"
    else r, g, cls = row(fy), GLYPH[kind], kind end
    local key = r * 100000 + k
    if not used[key] or (rank[kind] or 0) > used[key] then
      used[key] = rank[kind] or 0
      grid[r][k] = { g, cls }
    end
  end
  -- rows with y labels
  local tickrow = {}
  for i, t in ipairs(ys.ticks) do
    local r = row(frac(ys, t))
    if r >= 0 and r < H and not tickrow[r] then tickrow[r] = ys.labels[i] end
  end
  lines[#lines + 1] = paint(cut(c.title .. (ys.log and " (log scale)" or ""), width), "title", color)
  for r = 0, H - 1 do
    local lab = tickrow[r]
    local prefix = lab and (string.rep(" ", labw - ulen(lab)) .. lab .. " ┤")
      or (string.rep(" ", labw) .. " │")
    local cells = {}
    for k = 0, plotw - 1 do cells[#cells + 1] = paint(grid[r][k][1], grid[r][k][2], color) end
    lines[#lines + 1] = paint(prefix, lab and "label" or "axis", color) .. table.concat(cells):gsub("%s+$", "")
    if not color then lines[#lines] = lines[#lines]:gsub("%s+$", "") end
  end
  -- x axis: ticks, and iterations without a score marked on it
  local axis = {}
  for k = 0, plotw - 1 do axis[k] = { "─" } end
  for _, x in ipairs(xticks) do
    local k = col(x)
    if k >= 0 and k < plotw then axis[k] = { "┬" } end
  end
  for _, m in ipairs(c.marks or {}) do
    local k = col(m.x)
    if k >= 0 and k < plotw then axis[k] = { GLYPH[m.kind], m.kind } end
  end
  local acells = {}
  for k = 0, plotw - 1 do acells[#acells + 1] = paint(axis[k][1], axis[k][2], color) end
  lines[#lines + 1] = string.rep(" ", labw) .. " └" .. table.concat(acells)
  local lab = {}
  local total = labw + 2 + plotw + rmargin
  for k = 1, total do lab[k] = " " end
  local last_end = 0
  for i, x in ipairs(xticks) do
    local s = xlabels[i]
    local start = labw + 2 + col(x) - floor((ulen(s) - 1) / 2) + 1
    if start > last_end + 1 and start + ulen(s) - 1 <= total then
      for j = 1, #s do lab[start + j - 1] = s:sub(j, j) end
      last_end = start + #s - 1
    end
  end
  lines[#lines + 1] = (table.concat(lab):gsub("%s+$", ""))
  if c.kind == "iterations" then
    lines[#lines + 1] = string.rep(" ", labw + 2) .. "iteration"
  else
    lines[#lines + 1] = cut(string.rep(" ", labw + 2) .. "x: " .. c.xlabel, width)
  end
  -- legend: only what the chart shows
  local present = {}
  for _, p in ipairs(c.points) do
    present[p.front and "front" or p.kind] = true
    if p.clip then present[p.clip] = true end
  end
  for _, m in ipairs(c.marks or {}) do present[m.kind] = true end
  if c.best and #c.best > 0 then present.best = true end
  local words = {}
  for _, k in ipairs { "kept", "discarded", "baseline", "front", "best", "crash", "pass", "noscore", "infeasible",
                       "above", "below" } do
    if present[k] then
      local g = GLYPH[k]
      words[#words + 1] = { text = paint(g, k, color) .. " " .. LEGEND[k], plain = g .. " " .. LEGEND[k] }
    end
  end
  for _, l in ipairs(wrap(words, width, "  ")) do lines[#lines + 1] = l end
  if c.clipped then
    for _, t in ipairs(clip_text(c, ys)) do
      for _, l in ipairs(wrap_text(t, width)) do lines[#lines + 1] = l end
    end
  end
  if c.hidden and #c.hidden > 0 then
    lines[#lines + 1] = cut(("%d point%s off the scale not shown"):format(#c.hidden, #c.hidden == 1 and "" or "s"), width)
  end
  return lines
end

--- The run as text for a terminal: a summary, then one chart per metric
--- (and a Pareto run's front). Every line fits `width` columns.
---@param model table from load/model
---@param opts? {width?: integer, height?: integer, color?: boolean}
---@return string
function M.terminal(model, opts)
  opts = opts or {}
  local width = opts.width or 80
  if math.type(width) ~= "integer" or width < 40 then
    error("beat.report.terminal: opts.width must be an integer >= 40, got " .. tostring(opts.width), 2)
  end
  local height = opts.height or 14
  if math.type(height) ~= "integer" or height < 5 then
    error("beat.report.terminal: opts.height must be an integer >= 5, got " .. tostring(opts.height), 2)
  end
  local lines = {}
  for _, l in ipairs(summary_lines(model)) do
    for _, w in ipairs(wrap_text(l, width)) do lines[#lines + 1] = w end
  end
  local charts = charts_of(model, height >= 10 and 6 or 4)
  if #charts == 0 then
    lines[#lines + 1] = ""
    local marks = {}
    for _, it in ipairs(model.iterations) do
      local k = NO_SCORE_MARK[it.status] or "noscore"
      marks[#marks + 1] = { text = paint(GLYPH[k], k, opts.color) .. tostring(it.iteration), plain = GLYPH[k] .. it.iteration }
    end
    if #marks == 0 then
      lines[#lines + 1] = "no iterations recorded yet"
    else
      lines[#lines + 1] = "no scores to chart; iterations: (× crash/fail, ✓ pass, ∅ other)"
      for _, l in ipairs(wrap(marks, width, " ")) do lines[#lines + 1] = l end
    end
  end
  for _, c in ipairs(charts) do
    lines[#lines + 1] = ""
    for _, l in ipairs(render_terminal_chart(c, width, height, opts.color)) do lines[#lines + 1] = l end
  end
  local ft = front_text(model)
  if ft then
    lines[#lines + 1] = ""
    for _, w in ipairs(wrap_text(ft, width)) do lines[#lines + 1] = w end
  end
  for _, w in ipairs(model.warnings) do
    for _, l in ipairs(wrap_text("warning: " .. w, width)) do lines[#lines + 1] = l end
  end
  return table.concat(lines, "\n") .. "\n"
end
return M
