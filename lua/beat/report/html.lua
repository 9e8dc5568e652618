--- beat.report.html: a self-contained HTML page of a run.
local chart = require "beat.report.chart"
local svg = require "beat.report.svg"

local esc, svg_body = svg.esc, svg.body
local front_text, summary_lines = chart.front_text, chart.summary_lines
local fmt = require("beat.numfmt").format
local floor = math.floor

local M = {}

local HTML_STYLE = [[
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px}
.summary{color:#444;margin:2px 0}
.meta{color:#666;font-size:13px}
.meta code{font-size:12px}
.charts svg{display:block;max-width:100%;height:auto;margin:12px 0}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.keep td.decision,tr.pass td.decision{color:#1d7a3b;font-weight:600}
tr.crash td.decision,tr.fail td.decision{color:#b03a2e;font-weight:600}
tr.discard td.decision{color:#777}
tr.baseline td.decision{color:#1f4fb4;font-weight:600}
.front{color:#8a6510}
.warning{color:#b03a2e}
]]

local function dur(s)
  if not s then return "" end
  return require("beat.duration").format(s)
end

--- A self-contained HTML page: the summary, the charts as inline SVG, the
--- iteration table. Nothing is fetched (inline CSS, no scripts, a
--- Content-Security-Policy that forbids loading anything).
---@param model table
---@return string
function M.html(model)
  local out = {}
  local function add(s) out[#out + 1] = s end
  local title = "beat run " .. tostring(model.id)
  add("<!DOCTYPE html>")
  add('<html lang="en"><head><meta charset="utf-8">')
  add([[<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">]])
  add('<meta name="viewport" content="width=device-width, initial-scale=1">')
  add(("<title>%s</title>"):format(esc(title)))
  add("<style>\n" .. HTML_STYLE .. svg.STYLE .. "</style></head><body>")
  add(("<h1>%s</h1>"):format(esc(title)))
  for _, l in ipairs(summary_lines(model)) do add(('<p class="summary">%s</p>'):format(esc(l))) end
  local meta = {}
  if model.cwd then meta[#meta + 1] = ("work tree <code>%s</code>"):format(esc(model.cwd)) end
  if model.journal then meta[#meta + 1] = ("journal <code>%s</code>"):format(esc(model.journal)) end
  if model.started then meta[#meta + 1] = ("started %s"):format(esc(os.date("%Y-%m-%d %H:%M:%S", floor(model.started)))) end
  if #meta > 0 then add(('<p class="meta">%s</p>'):format(table.concat(meta, " · "))) end
  add('<section class="charts">')
  local body, h = svg_body(model)
  add(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">')
    :format(svg.WIDTH, h, svg.WIDTH, h, esc("scores of " .. title)))
  add(body)
  add("</svg></section>")
  local ft = front_text(model)
  if ft then add(('<p class="front">%s</p>'):format(esc(ft))) end
  add("<h2>Iterations</h2>")
  add('<table class="iterations"><thead><tr><th>iteration</th><th>decision</th><th>score</th><th>best</th>'
    .. '<th>duration</th><th>cost</th><th>reason</th></tr></thead><tbody>')
  for _, it in ipairs(model.iterations) do
    local score = it.score_text or (it.score and fmt(it.score)) or ""
    add(('<tr class="%s"><td class="num">%s</td><td class="decision">%s%s</td><td>%s</td><td>%s</td><td class="num">%s</td><td class="num">%s</td><td>%s</td></tr>')
      :format(esc(it.status), it.iteration, esc(it.baseline and "baseline" or it.status),
        it.front and " ★" or "", esc(score), esc(it.best_text or ""), esc(dur(it.duration_s)),
        it.cost_usd and it.cost_usd > 0 and ("$%.2f"):format(it.cost_usd) or "", esc(it.summary or "")))
  end
  add("</tbody></table>")
  for _, w in ipairs(model.warnings) do add(('<p class="warning">warning: %s</p>'):format(esc(w))) end
  add("</body></html>")
  return table.concat(out, "\n") .. "\n"
end
return M
