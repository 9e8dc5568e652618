-- `beat report`: charts of real runs (the tune demo, the multi-metric recipe,
-- fake-agent optimize loops) in the terminal, as SVG checked by xmllint, and
-- as an HTML page opened in headless Chromium.
local beat = require "beat"
local json = require "cjson"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local MARKERS = { "●", "○", "◆", "★", "▲", "▼" }

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

local function lines(s)
  local out = {}
  for l in (s .. "\n"):gmatch("(.-)\n") do out[#out + 1] = l end
  if out[#out] == "" then out[#out] = nil end
  return out
end

local function widest(s)
  local w = 0
  for _, l in ipairs(lines(s)) do
    local n = utf8.len(l)
    assert(n, "not UTF-8: " .. l)
    w = math.max(w, n)
  end
  return w
end

-- The terminal charts of `beat report` output: {name, rows = {plot rows}, axis = x axis line}.
local function term_charts(text)
  local out, cur = {}, nil
  for _, l in ipairs(lines(text)) do
    local name = l:match("^(.-) per iteration")
    if name then
      cur = { name = name, rows = {} }
      out[#out + 1] = cur
    elseif cur and not cur.axis then
      if l:find("└", 1, true) then cur.axis = l else cur.rows[#cur.rows + 1] = l end
    end
  end
  return out
end

-- The plot part of a chart row (after the y axis).
local function plot_of(row)
  local i = row:find("┤", 1, true) or row:find("│", 1, true)
  return i and row:sub(i + #"┤") or ""
end

local function markers(rows)
  local n = 0
  for _, r in ipairs(rows) do
    local plot = plot_of(r)
    for _, m in ipairs(MARKERS) do n = n + count(plot, m) end
  end
  return n
end

-- Decisions of a run's journal, and how many have a score / were kept.
local function decisions(run_dir)
  local j = assert(require("beat.journal").open(run_dir))
  local d = H.events((j:records()), "decision")
  local scored, kept = 0, 0
  for _, r in ipairs(d) do
    if r.score ~= nil or (r.score_text and not r.score_text:match("^infeasible")) then scored = scored + 1 end
    if r.status == "keep" then kept = kept + 1 end
  end
  return d, scored, kept
end

local function run_recipe(path, ...)
  local r = H.beat { "run", path, ... }
  assert.equal(0, r.code, r.stdout .. r.stderr)
  local dir = assert(r.stdout:match("journal: ([^\n]+)"), r.stdout)
  return dir, (dir:gsub("/%.beat/runs/[^/]+$", ""))
end

local function report(args, opts)
  local argv = { "report" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return H.beat(argv, opts)
end

-- Runs made once, shared by the cases that only read them.
local cache = {}
local function demo()   -- 25 iterations of the tune demo; iteration 6 diverges (val_loss 1000000)
  if not cache.demo then cache.demo = { run_recipe(H.root .. "/recipes/tune-demo.lua", "25", "7") } end
  return table.unpack(cache.demo)
end
local function multi()  -- val_loss then params, a train_loss constraint
  if not cache.multi then cache.multi = { run_recipe(H.root .. "/recipes/multi-metric.lua", "15") } end
  return table.unpack(cache.multi)
end

local function chromium()
  local r = assert(beat.exec { "sh", H.root .. "/tests/fixtures/install-chromium.sh" })
  assert(r.code == 0, "this spec needs Chromium (tests/fixtures/install-chromium.sh): " .. r.stderr)
  return (r.stdout:match("[^\n]+"))
end

-- Opens a page in headless Chromium; returns the result, the console lines
-- (with --enable-logging=stderr every console message and uncaught error is
-- logged as ...:CONSOLE...) and the DOM after load.
local function open_page(path, png)
  local bin = chromium()
  local common = { bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0" }
  local function run(extra)
    local argv = { table.unpack(common) }
    argv[#argv + 1] = "--user-data-dir=" .. H.tmpdir()   -- a fresh profile each time
    for _, a in ipairs(extra) do argv[#argv + 1] = a end
    argv[#argv + 1] = "file://" .. path
    -- a loose bound: Chromium starts in ~1 s, much more on a busy machine
    return assert(beat.exec(argv, { timeout = 180 }))
  end
  local shot = run { "--window-size=1200,1600", "--screenshot=" .. png }
  local dom = run { "--dump-dom" }
  local console = {}
  for _, r in ipairs { shot, dom } do
    for l in r.stderr:gmatch("[^\n]+") do
      if l:find(":CONSOLE", 1, true) then console[#console + 1] = l end
    end
  end
  return shot, console, dom.stdout
end

describe("beat report", function()
  it("charts the demo's scores in 80 columns: one marker per scored iteration, kept ones marked", function()
    local run_dir, tree = demo()
    local d, scored, kept = decisions(run_dir)
    assert.equal(26, #d)
    local r = report({ "last" }, { cwd = tree })
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    assert.is_true(widest(r.stdout) <= 80, r.stdout)
    local charts = term_charts(r.stdout)
    assert.equal(1, #charts)
    assert.equal("val_loss", charts[1].name)
    assert.equal(scored, markers(charts[1].rows), r.stdout)
    local plot = table.concat(charts[1].rows, "\n")
    assert.equal(kept, count(plot, "●"), r.stdout)
    assert.equal(1, count(plot, "◆"))          -- the baseline
    assert.matches("─ best so far", r.stdout)
    assert.matches("● kept", r.stdout)
    assert.is_nil(r.stdout:find("\27[", 1, true))   -- a pipe: no colour
    -- the axis is labelled with numbers in their magnitude, never a bare 0
    for _, row in ipairs(charts[1].rows) do
      local label = row:match("^%s*(%S+) ┤")
      if label then assert.is_true(tonumber(label) > 0, row) end
    end
  end)

  it("clips the axis to the other scores when one diverges to 1000000, and says so", function()
    local run_dir, tree = demo()
    local d = decisions(run_dir)
    assert.equal(1000000, d[7].score)          -- iteration 6 diverged
    local r = report({}, { cwd = tree })
    assert.equal(0, r.code, r.stderr)
    local chart = term_charts(r.stdout)[1]
    -- the top of the axis is near the other scores (all below 0.2), not at 1e+06
    local labels = {}
    for _, row in ipairs(chart.rows) do labels[#labels + 1] = tonumber(row:match("^%s*(%S+) ┤")) end
    assert.is_true(#labels >= 3)
    for _, v in ipairs(labels) do assert.is_true(v < 1, "axis label " .. v) end
    assert.equal(1, count(chart.rows[1], "▲"))       -- drawn at the top edge
    assert.matches("off the scale above 0%.2 %(drawn at the top edge%): iteration 6 = 1e%+06", r.stdout)
    -- and the others spread over the chart instead of being squashed on one row
    local used = 0
    for _, row in ipairs(chart.rows) do
      local plot = plot_of(row)
      if plot:find("●") or plot:find("○") then used = used + 1 end
    end
    assert.is_true(used >= 6, r.stdout)
  end)

  it("fits a given width and colours only when asked or on a terminal without NO_COLOR", function()
    local _, tree = demo()
    local wide = report({ "--width", "120" }, { cwd = tree })
    assert.equal(0, wide.code, wide.stderr)
    assert.is_true(widest(wide.stdout) <= 120 and widest(wide.stdout) > 80)
    local narrow = report({ "--width=50", "--height", "8" }, { cwd = tree })
    assert.is_true(widest(narrow.stdout) <= 50, narrow.stdout)
    assert.equal(8, #term_charts(narrow.stdout)[1].rows)
    local forced = report({ "--color" }, { cwd = tree })
    assert.truthy(forced.stdout:find("\27[32;1m●", 1, true))
    -- on a terminal (script(1) gives the command a pty): colour, unless NO_COLOR is set
    local cmd = ("%s report -w %s"):format(H.bin, tree)
    local tty = assert(beat.exec({ "script", "-qec", cmd, "/dev/null" }, { env = { TERM = "xterm", NO_COLOR = "" } }))
    assert.truthy(tty.stdout:find("\27[", 1, true))
    local nc = assert(beat.exec({ "script", "-qec", cmd, "/dev/null" }, { env = { TERM = "xterm", NO_COLOR = "1" } }))
    assert.matches("val_loss per iteration", nc.stdout)
    assert.is_nil(nc.stdout:find("\27[", 1, true))
  end)

  it("writes a well-formed SVG with one point per scored iteration, tooltips, axes and the best line", function()
    local run_dir, tree = demo()
    local _, scored, kept = decisions(run_dir)
    local out = H.tmpdir() .. "/chart.svg"
    local r = report({ "-o", out }, { cwd = tree })
    assert.equal(0, r.code, r.stderr)
    assert.matches("^wrote " .. out:gsub("%p", "%%%0"), r.stdout)
    local lint = assert(beat.exec { "xmllint", "--noout", out })
    assert.equal(0, lint.code, lint.stderr)
    assert.equal("", lint.stderr)
    local svg = H.read(out)
    assert.equal(scored, count(svg, 'class="point '))
    assert.equal(scored, count(svg, 'class="point [^"]*" data%-iteration="%d+"><title>'))
    assert.equal(kept, count(svg, 'class="point kept'))
    assert.equal(1, count(svg, 'class="point discarded clipped" data%-iteration="6"'))
    assert.equal(1, count(svg, '<polyline class="best"'))
    assert.truthy(svg:find('class="ylabel"', 1, true))
    assert.matches(">iteration</text>", svg)
    assert.matches("<title>iteration 5: keep, val_loss 0%.01196", svg)
    assert.matches("iteration 6 = 1e%+06", svg)
  end)

  it("writes an HTML page that opens in headless Chromium with no console errors and nothing fetched", function()
    local run_dir, tree = demo()
    local d, scored = decisions(run_dir)
    local dir = H.tmpdir()
    local page, png = dir .. "/run.html", dir .. "/run.png"
    local r = report({ "-o", page }, { cwd = tree })
    assert.equal(0, r.code, r.stderr)
    local html = H.read(page)
    -- self-contained: no scripts, no links, nothing loaded from anywhere
    for _, bad in ipairs { "<script", "src=", "href=", "url%(", "@import", "<link" } do
      assert.is_nil(html:find(bad), bad)
    end
    assert.matches("Content%-Security%-Policy\" content=\"default%-src 'none'", html)
    local shot, console, dom = open_page(page, png)
    assert.equal(0, shot.code, shot.stderr)
    assert.same({}, console)
    local data = assert(H.read(png))
    assert.equal("\137PNG", data:sub(1, 4))
    assert.equal(1200, string.unpack(">I4", data, 17))     -- IHDR width
    assert.is_true(#data > 30000, "a blank page is ~5 KB, got " .. #data)
    -- the browser's DOM holds every point and one table row per iteration
    assert.equal(scored, count(dom, 'class="point '))
    assert.equal(#d, count(dom, "<tr class="))
    assert.matches("<th>duration</th><th>cost</th><th>reason</th>", dom)
  end)

  it("sees console errors through the same Chromium check (so the check above can fail)", function()
    local dir = H.tmpdir()
    H.write(dir .. "/bad.html", "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>x</title></head>"
      .. "<body><p>x</p><script>no_such_function()</script></body></html>")
    local _, console = open_page(dir .. "/bad.html", dir .. "/bad.png")
    assert.is_true(#console >= 1)   -- once per Chromium run (screenshot, DOM)
    for _, l in ipairs(console) do assert.matches("no_such_function is not defined", l) end
  end)

  it("charts each metric of a multi-metric run and marks infeasible iterations on the x axis", function()
    local run_dir, tree = multi()
    local d = decisions(run_dir)
    local per, infeasible = 0, 0
    for _, x in ipairs(d) do
      if x.score_text:match("^infeasible") then infeasible = infeasible + 1 else per = per + 1 end
    end
    assert.is_true(infeasible > 0 and per > 0)
    local r = report({}, { cwd = tree })
    assert.equal(0, r.code, r.stderr)
    assert.is_true(widest(r.stdout) <= 80)
    local charts = term_charts(r.stdout)
    assert.equal(2, #charts)
    assert.equal("val_loss", charts[1].name)
    assert.equal("params", charts[2].name)
    for _, c in ipairs(charts) do
      assert.equal(per, markers(c.rows), r.stdout)
      assert.equal(infeasible, count(c.axis, "∅"))
    end
    assert.matches("∅ infeasible %(no score%)", r.stdout)
    local out = H.tmpdir() .. "/multi.svg"
    assert.equal(0, report({ "-o", out }, { cwd = tree }).code)
    assert.equal(0, assert(beat.exec { "xmllint", "--noout", out }).code)
    local svg = H.read(out)
    local n = 0
    for metric, body in svg:gmatch('<g class="chart iterations"[^>]*data%-metric="([^"]+)">(.-)</g>') do
      n = n + 1
      assert.equal(n == 1 and "val_loss" or "params", metric)
      assert.equal(per, count(body, 'class="point '))
      assert.equal(infeasible, count(body, 'class="mark infeasible"'))
    end
    assert.equal(2, n)
  end)

  it("marks a Pareto run's front in every chart and lists it", function()
    local dir = H.git_repo { ["value.txt"] = "size: 10\nspeed: 10\n" }
    local agent = H.tmpdir() .. "/pareto.sh"
    H.write(agent, [[
case "$BEAT_ITERATION" in
  1) printf 'size: 5\nspeed: 12\n' > value.txt ;;
  2) printf 'size: 8\nspeed: 8\n' > value.txt ;;
  3) printf 'size: 6\nspeed: 13\n' > value.txt ;;
  4) printf 'size: 3\nspeed: 14\n' > value.txt ;;
  5) printf 'size: 9\nspeed: 20\n' > value.txt ;;
esac
]])
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("optimize") {
        cwd = %q, prompt = "smaller and faster", max_iterations = 5,
        agent = beat.agent.command { argv = { "sh", %q } },
        eval = "cat value.txt", score = beat.score.metrics(),
        objective = beat.objective { pareto = true, metrics = { size = "minimize", speed = "maximize" } },
      })
    ]]):format(dir, agent))
    local run = H.beat { "run", recipe }
    assert.equal(0, run.code, run.stdout .. run.stderr)
    local j = report({ "--json" }, { cwd = dir })
    assert.equal(0, j.code, j.stderr)
    local model = json.decode(j.stdout)
    -- 4 dominates 1 and 3; 5 is a new trade-off; 2 never entered
    assert.same({ 4, 5 }, model.front)
    assert.equal("pareto", model.objective.kind)
    local r = report({}, { cwd = dir })
    local charts = term_charts(r.stdout)
    assert.equal(2, #charts)
    for _, c in ipairs(charts) do assert.equal(2, count(table.concat(c.rows), "★")) end
    assert.matches("Pareto front: speed %(higher is better%) against size %(lower is better%)", r.stdout)
    assert.matches("Pareto front %(2%): iteration 4 %(size 3, speed 14%); iteration 5", r.stdout)
    local out = H.tmpdir() .. "/pareto.svg"
    assert.equal(0, report({ "-o", out }, { cwd = dir }).code)
    assert.equal(0, assert(beat.exec { "xmllint", "--noout", out }).code)
    local svg = H.read(out)
    assert.equal(4, count(svg, 'class="point [^"]* front"'))   -- 2 members × 2 metric charts
    assert.equal(12, count(svg, 'class="point '))               -- 6 scored iterations × 2 metric charts
    assert.equal(2, count(svg, 'class="pair [^"]* front"'))    -- and the trade-off chart
  end)

  it("prints the run model as one JSON document with per-iteration durations and crashes unscored", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "lower it", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "5" },
      { VALUES = "90 95 crash 80 same" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local j = report({ "--json" }, { cwd = dir })
    assert.equal(0, j.code, j.stderr)
    assert.equal(1, #lines(j.stdout))
    local m = json.decode(j.stdout)
    assert.equal(1, m.version)
    assert.equal("optimize", m.strategy)
    assert.equal("completed", m.status)
    local st, vals = {}, {}
    for i, it in ipairs(m.iterations) do
      st[i] = it.status
      vals[i] = it.values.score or false
      assert.is_true(it.duration_s >= 0 and it.duration_s < m.elapsed, "iteration " .. it.iteration)
    end
    assert.same({ "baseline", "keep", "discard", "crash", "keep", "discard" }, st)
    assert.same({ 100, 90, 95, false, 80, false }, vals)
    -- durations are each iteration's own, not the time since the start
    local records = H.events((H.last_run(dir)), "decision")
    assert.equal(records[6].duration_s, m.iterations[6].duration_s)
    -- the terminal chart marks the crash and the unchanged tree on the x axis
    local t = report({}, { cwd = dir })
    local c = term_charts(t.stdout)[1]
    assert.equal(1, count(c.axis, "×"))
    assert.equal(1, count(c.axis, "∅"))
    assert.equal(4, markers(c.rows))
    assert.matches("× crash/fail %(no score%)", t.stdout)
  end)

  it("finds runs by id, unique prefix, last, or run directory", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local ids = {}
    for i = 1, 2 do
      local r = H.loop(dir, { "lower it", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "1" },
        { VALUES = tostring(90 - i) })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      ids[i] = select(3, H.last_run(dir))
    end
    local function id_of(args)
      local r = report(args, { cwd = dir })
      assert.equal(0, r.code, r.stderr)
      return json.decode(r.stdout).id
    end
    assert.equal(ids[2], id_of { "--json" })
    assert.equal(ids[2], id_of { "last", "--json" })
    assert.equal(ids[1], id_of { ids[1], "--json" })
    assert.equal(ids[1], id_of { dir .. "/.beat/runs/" .. ids[1], "--json" })
    -- the shortest prefix that tells them apart
    local n = 1
    while ids[1]:sub(1, n) == ids[2]:sub(1, n) do n = n + 1 end
    assert.equal(ids[1], id_of { ids[1]:sub(1, n), "--json" })
    local amb = report({ ids[1]:sub(1, n - 1) }, { cwd = dir })
    assert.equal(2, amb.code)
    assert.matches("ambiguous", amb.stderr)
    local other = report({ "-w", dir, ids[2], "--json" }, { cwd = H.tmpdir() })
    assert.equal(ids[2], json.decode(other.stdout).id)
  end)

  it("still fits 80 columns with more iterations than columns, an inf score and a torn last line", function()
    -- a journal written here (as beat writes them) to reach sizes a real run in a test cannot
    local dir = H.tmpdir()
    local run = dir .. "/.beat/runs/mx00test"
    assert(beat.fs.mkdir_p(run))
    local recs = { json.encode { event = "run_start", id = "mx00test", strategy = "optimize", time = 1000,
      config = { metric = "ms", direction = "minimize", eval = "bench" } } }
    for n = 0, 299 do
      local rec = { event = "decision", iteration = n, time = 1000 + n, duration_s = 1,
        status = n == 0 and "baseline" or (n % 50 == 0 and "keep" or "discard"), summary = "x" }
      if n == 120 then rec.score = "inf" elseif n % 37 ~= 5 then rec.score = 500 - n + (n % 7) * 3 end
      if n % 37 == 5 then rec.status = "crash" end
      recs[#recs + 1] = json.encode(rec)
    end
    H.write(run .. "/journal.jsonl", table.concat(recs, "\n") .. '\n{"event":"decision","iter')
    local r = report({ "--width", "80" }, { cwd = dir })
    assert.equal(0, r.code, r.stderr)
    assert.is_true(widest(r.stdout) <= 80, r.stdout)
    assert.matches("ms per iteration, lower is better", r.stdout)
    assert.matches("off the scale above %d+ %(drawn at the top edge%): iteration 120 = inf", r.stdout)
    assert.matches("warning: line 302 of %S+ is not valid JSON", (r.stdout:gsub("%s+", " ")))
    local m = json.decode(report({ "--json" }, { cwd = dir }).stdout)
    assert.equal(300, #m.iterations)
    assert.equal("inf", m.iterations[121].values.ms)
  end)

  it("answers --help, and rejects bad input with one line and exit 2, writing nothing", function()
    local help = report { "--help" }
    assert.equal(0, help.code)
    assert.matches("^Usage: beat report %[RUN|last|DIR%]", help.stdout)
    assert.equal(help.stdout, H.beat({ "help", "report" }).stdout)
    assert.matches("report%s+chart a run's scores", H.beat({ "help" }).stdout)

    local _, tree = demo()
    local out = H.tmpdir()
    local cases = {
      { { "--width", "abc" }, "beat: report: %-%-width needs a whole number from 40 to 1000, got 'abc'" },
      { { "--width", "10" }, "beat: report: %-%-width needs a whole number from 40 to 1000, got '10'" },
      { { "--height" }, "beat: report: %-%-height needs a value" },
      { { "-o", out .. "/x.txt" }, "beat: report: %-o needs a file ending in %.svg or %.html, got '.-/x%.txt'" },
      { { "-o", out .. "/no/such/dir/x.svg" }, "beat: report: cannot write .-/no/such/dir/x%.svg: " },
      { { "--frobnicate" }, "beat: report: unknown option '%-%-frobnicate'" },
      { { "--json=yes" }, "beat: report: unknown option '%-%-json=yes'" },
      { { "last", "again" }, "beat: report: unexpected argument 'again'" },
      { { "zzzz" }, "beat: no run 'zzzz' in .- %(see 'beat runs'%)" },
      { { out .. "/nothing" }, "beat: report: .-/nothing is not a run directory" },
      { { "-w", out .. "/missing" }, "beat: report: working directory .-/missing does not exist" },
    }
    for _, c in ipairs(cases) do
      local r = report(c[1], { cwd = tree })
      assert.equal(2, r.code, table.concat(c[1], " ") .. ": " .. r.stderr)
      assert.equal("", r.stdout)
      assert.equal(1, #lines(r.stderr), r.stderr)
      assert.matches("^" .. c[2], r.stderr)
    end
    assert.same({}, beat.fs.list(out))
    local none = report({}, { cwd = H.git_repo {} })
    assert.equal(2, none.code)
    assert.matches("^beat: no runs in .-/%.beat/runs\n$", none.stderr)
  end)
end)
