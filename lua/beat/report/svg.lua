--- beat.report.svg: the charts as SVG, standalone or for the HTML page.
local chart = require "beat.report.chart"

local LEGEND, frac, nice_step, ulen = chart.LEGEND, chart.frac, chart.nice_step, chart.ulen
local charts_of, clip_text = chart.charts_of, chart.clip_text
local fmt = require("beat.numfmt").format
local floor, ceil = math.floor, math.ceil

local M = {}

local function esc(s)
  s = require("beat.journal").utf8_clean(tostring(s))
  -- characters XML 1.0 does not allow
  s = s:gsub("[%z\1-\8\11\12\14-\31]", "")
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function num(x) return ("%.1f"):format(x) end

local SVG_STYLE = [[
.chart text{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:12px;fill:#333}
.chart .title{font-size:14px;font-weight:600}
.chart .grid{stroke:#e4e4e4;stroke-width:1}
.chart .axis{stroke:#888;stroke-width:1}
.chart .best{fill:none;stroke:#1f77b4;stroke-width:2;stroke-linejoin:round}
.chart .point{stroke-width:1.5}
.chart .kept{fill:#2a9d4b;stroke:#1d6e35}
.chart .discarded{fill:#fff;stroke:#999}
.chart .baseline{fill:#1f4fb4;stroke:#12306e}
.chart .front{fill:#d6a21e;stroke:#8a6510}
.chart .clipped{stroke-dasharray:2 1}
.chart .crash{stroke:#c0392b;stroke-width:2}
.chart .noscore,.chart .infeasible{stroke:#b7950b;stroke-width:2}
.chart .pass{stroke:#2a9d4b;stroke-width:2}
.chart .note{fill:#8a6510}
]]

local SVG_W, SVG_H = 760, 340
local M_L, M_R, M_T, M_B = 72, 24, 34, 66

-- A marker shape for a point at (x, y).
local function marker(kind, x, y, r)
  if kind == "baseline" then
    return ('<path d="M%s %sl%s %sl%s %sl%s %sz"'):format(num(x), num(y - r - 1), num(r + 1), num(r + 1),
      num(-(r + 1)), num(r + 1), num(-(r + 1)), num(-(r + 1)))
  elseif kind == "front" then
    local pts = {}
    for i = 0, 9 do
      local a = -math.pi / 2 + i * math.pi / 5
      local rr = i % 2 == 0 and r + 2 or (r + 2) * 0.45
      pts[#pts + 1] = num(x + rr * math.cos(a)) .. "," .. num(y + rr * math.sin(a))
    end
    return ('<polygon points="%s"'):format(table.concat(pts, " "))
  elseif kind == "above" then
    return ('<path d="M%s %sl%s %sl%s 0z"'):format(num(x), num(y - 1), num(r + 1), num(2 * r + 1), num(-2 * (r + 1)))
  elseif kind == "below" then
    return ('<path d="M%s %sl%s %sl%s 0z"'):format(num(x), num(y + 1), num(r + 1), num(-(2 * r + 1)), num(-2 * (r + 1)))
  end
  return ('<circle cx="%s" cy="%s" r="%s"'):format(num(x), num(y), num(r))
end

local function svg_chart(c, y0)
  local out = {}
  local W, H = SVG_W, SVG_H
  local pw, ph = W - M_L - M_R, H - M_T - M_B
  local function X(x)
    local f
    if c.kind == "iterations" then f = (x - c.xs.lo) / (c.xs.hi - c.xs.lo) else f = frac(c.xs, x) end
    return M_L + 8 + f * (pw - 16)
  end
  local function Y(f) return M_T + 6 + (1 - f) * (ph - 12) end
  local function add(s) out[#out + 1] = s end
  local clipnotes = c.clipped and clip_text(c, c.ys) or {}
  local notes = #clipnotes + (c.hidden and #c.hidden > 0 and 1 or 0)
  add(('<g class="chart %s" transform="translate(0 %d)" data-metric="%s">'):format(
    c.kind, y0, esc(c.name or c.yname or "")))
  add(('<text class="title" x="%d" y="20">%s</text>'):format(M_L, esc(c.title .. (c.ys.log and " (log scale)" or ""))))
  -- y grid and labels
  for i, t in ipairs(c.ys.ticks) do
    local y = Y(frac(c.ys, t))
    add(('<line class="grid" x1="%d" y1="%s" x2="%d" y2="%s"/>'):format(M_L, num(y), W - M_R, num(y)))
    add(('<text class="ylabel" x="%d" y="%s" text-anchor="end" dominant-baseline="middle">%s</text>')
      :format(M_L - 6, num(y), esc(c.ys.labels[i])))
  end
  -- x ticks
  local xticks, xlabels = {}, {}
  if c.kind == "iterations" then
    local span = c.xs.hi - c.xs.lo
    local step = nice_step(span, math.min(span, 12))
    if step < 1 then step = 1 end
    step = floor(step + 0.5)
    for x = ceil(c.xs.lo / step) * step, c.xs.hi, step do
      xticks[#xticks + 1], xlabels[#xlabels + 1] = x, tostring(x)
    end
  else
    xticks, xlabels = c.xs.ticks, c.xs.labels
  end
  local base = M_T + ph
  for i, x in ipairs(xticks) do
    local px = X(x)
    add(('<line class="axis" x1="%s" y1="%d" x2="%s" y2="%d"/>'):format(num(px), base, num(px), base + 5))
    add(('<text class="xlabel" x="%s" y="%d" text-anchor="middle">%s</text>'):format(num(px), base + 18, esc(xlabels[i])))
  end
  add(('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>'):format(M_L, M_T, M_L, base))
  add(('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>'):format(M_L, base, W - M_R, base))
  add(('<text class="xname" x="%s" y="%d" text-anchor="middle">%s</text>'):format(num(M_L + pw / 2), base + 34,
    esc(c.kind == "iterations" and "iteration" or c.xlabel)))
  if c.kind == "pareto" then
    add(('<text class="yname" transform="translate(14 %s) rotate(-90)" text-anchor="middle">%s</text>')
      :format(num(M_T + ph / 2), esc(c.ylabel)))
  end
  -- best so far: a step line
  if c.best and #c.best > 0 then
    local pts = {}
    for i, b in ipairs(c.best) do
      local f = math.max(0, math.min(1, b.fy or 0))
      local y = Y(f)
      if i > 1 then pts[#pts + 1] = num(X(b.x)) .. "," .. num(Y(math.max(0, math.min(1, c.best[i - 1].fy or 0)))) end
      pts[#pts + 1] = num(X(b.x)) .. "," .. num(y)
    end
    local lastb = c.best[#c.best]
    pts[#pts + 1] = num(X(c.xs.hi)) .. "," .. num(Y(math.max(0, math.min(1, lastb.fy or 0))))
    add(('<polyline class="best" points="%s"><title>best so far</title></polyline>'):format(table.concat(pts, " ")))
  end
  -- iterations without a score, on the x axis
  for _, m in ipairs(c.marks or {}) do
    local x = X(m.x)
    local d
    if m.kind == "pass" then
      d = ("M%s %dl3 4l6 -8"):format(num(x - 5), base)
    else
      d = ("M%s %dl8 8m0 -8l-8 8"):format(num(x - 4), base - 4)
    end
    add(('<path class="mark %s" d="%s"><title>%s</title></path>'):format(m.kind, d, esc(m.tip)))
  end
  -- points
  for _, p in ipairs(c.points) do
    local fy = p.fy or frac(c.ys, p.y)
    local shape = p.front and "front" or p.kind
    -- "point": an iteration's score; "pair": a Pareto chart's (metric, metric) point
    local cls = (c.kind == "iterations" and "point " or "pair ") .. p.kind .. (p.front and " front" or "")
    local y, tip = Y(math.max(0, math.min(1, fy))), p.tip
    if p.clip then
      shape = p.clip
      cls = cls .. " clipped"
      tip = tip .. (" (off the scale: %s)"):format(fmt(p.y))
    end
    local tag = (shape == "kept" or shape == "discarded") and "circle" or shape == "front" and "polygon" or "path"
    add(('%s class="%s" data-iteration="%s"><title>%s</title></%s>'):format(marker(shape, X(p.x), y, 4), cls,
      p.it.iteration, esc(tip), tag))
  end
  -- legend and notes
  local present = {}
  for _, p in ipairs(c.points) do present[p.front and "front" or p.kind] = true end
  for _, m in ipairs(c.marks or {}) do present[m.kind] = true end
  if c.best and #c.best > 0 then present.best = true end
  for _, p in ipairs(c.clipped or {}) do present[p.clip] = true end
  local lx, ly = M_L, H - 8
  for _, k in ipairs { "kept", "discarded", "baseline", "front", "best", "crash", "pass", "noscore", "infeasible",
                       "above", "below" } do
    if present[k] then
      if k == "best" then
        add(('<line class="best" x1="%d" y1="%d" x2="%d" y2="%d"/>'):format(lx, ly - 4, lx + 14, ly - 4))
      elseif k == "crash" or k == "noscore" or k == "infeasible" then
        add(('<path class="%s" d="M%d %dl8 8m0 -8l-8 8"/>'):format(k, lx + 3, ly - 8))
      elseif k == "pass" then
        add(('<path class="pass" d="M%d %dl3 4l6 -8"/>'):format(lx + 2, ly - 4))
      else
        add(marker(k, lx + 7, ly - 4, 4) .. (' class="legend %s"/>'):format((k == "above" or k == "below") and "discarded clipped" or k))
      end
      local label = LEGEND[k]
      add(('<text x="%d" y="%d">%s</text>'):format(lx + 20, ly, esc(label)))
      lx = lx + 28 + 7 * ulen(label)
    end
  end
  for i, t in ipairs(clipnotes) do
    add(('<text class="note" x="%d" y="%d">%s</text>'):format(M_L, H + 14 * i, esc(t)))
  end
  if c.hidden and #c.hidden > 0 then
    add(('<text class="note" x="%d" y="%d">%s</text>'):format(M_L, H + 14 * (#clipnotes + 1),
      esc(("%d point%s off the scale not shown"):format(#c.hidden, #c.hidden == 1 and "" or "s"))))
  end
  add("</g>")
  return table.concat(out, "\n"), H + 14 * notes + 10
end

local function svg_body(model)
  local charts = charts_of(model, 7)
  local parts, y = {}, 0
  for _, c in ipairs(charts) do
    local s, h = svg_chart(c, y)
    parts[#parts + 1] = s
    y = y + h
  end
  if #charts == 0 then
    parts[#parts + 1] = ('<g class="chart empty"><text x="%d" y="30">%s</text></g>'):format(M_L,
      esc(#model.iterations == 0 and "no iterations recorded yet" or "no scores to chart"))
    y = 50
  end
  return table.concat(parts, "\n"), math.max(y, 50)
end

--- The charts as a standalone SVG document (one chart per metric, stacked):
--- one element of class "point" per scored iteration with a <title>
--- tooltip, a "best" polyline, "mark" elements on the x axis for
--- iterations without a score.
---@param model table
---@return string
function M.svg(model)
  local body, h = svg_body(model)
  return table.concat({
    '<?xml version="1.0" encoding="UTF-8"?>',
    ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'):format(SVG_W, h, SVG_W, h),
    ("<title>%s</title>"):format(esc("beat run " .. tostring(model.id))),
    "<style>", SVG_STYLE, "</style>",
    ('<rect width="100%" height="100%" fill="#fff"/>'),
    body,
    "</svg>", "" }, "\n")
end
M.esc, M.body, M.STYLE, M.WIDTH = esc, svg_body, SVG_STYLE, SVG_W

return M
