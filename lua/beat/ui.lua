--- beat.ui: what a run shows while it goes — a listener of beat.loop's events.
---
--- Every run made with beat.loop (`beat loop`, `beat run` of a strategy, a
--- recipe) gets one listener from `ui.listener`, which renders the run's
--- events (its journal records and phase changes, see Run:emit) as:
---
---   tty    on a terminal: log lines (the run, each decision, rate limits,
---          the summary) scroll above ONE status line redrawn in place —
---          iteration i/N, the phase with a spinner and its elapsed time,
---          best vs baseline, the last decision, cost so far, total elapsed.
---          Fits the terminal's width (redrawn on SIGWINCH); erased when
---          the run ends or is interrupted. Colour unless NO_COLOR is set
---          or TERM=dumb.
---   plain  stdout is not a terminal, or --plain: one line per event
---          (phase changes included), no colour, no redraws.
---   json   --json: one JSON object per line per event and nothing else on
---          stdout (docs/json.md; `version` says the schema's version).
---   none   nothing (ui.configure{mode = "none"}).
---
--- quiet (`-q`, the loop option quiet) drops the per-event lines; the
--- summary (with the run id, the undo command and the journal) still
--- prints, and the status line still shows on a terminal.
local runtime = require "beat._runtime"
local duration = require "beat.duration"

local M = {}

--- The version of the `--json` event schema (docs/json.md).
M.VERSION = 1

local settings = { mode = "auto", quiet = false, color = nil }

---@class beat.UiSettings
---@field mode? "auto"|"tty"|"plain"|"json"|"none" how runs show (default auto: tty on a terminal, else plain)
---@field quiet? boolean only the summary (and, on a terminal, the status line)
---@field color? boolean force colour on or off (default: tty mode without NO_COLOR)

--- Sets how the runs this process starts from now on are shown (the CLI's
--- --json, --plain, -q). Raises on a bad value.
---@param opts beat.UiSettings
function M.configure(opts)
  if type(opts) ~= "table" then error("beat.ui.configure: opts must be a table, got " .. type(opts), 2) end
  local modes = { auto = true, tty = true, plain = true, json = true, none = true }
  if opts.mode ~= nil and not modes[opts.mode] then
    error(("beat.ui.configure: opts.mode must be auto, tty, plain, json or none, got %s"):format(tostring(opts.mode)), 2)
  end
  for _, k in ipairs { "quiet", "color" } do
    if opts[k] ~= nil and type(opts[k]) ~= "boolean" then
      error(("beat.ui.configure: opts.%s must be a boolean, got %s"):format(k, type(opts[k])), 2)
    end
  end
  for k, v in pairs(opts) do settings[k] = v end
end

--- The settings as they are now (a copy).
function M.settings()
  local s = {}
  for k, v in pairs(settings) do s[k] = v end
  return s
end

local function env_set(name)
  local v = os.getenv(name)
  return v ~= nil and v ~= ""
end

--- Whether output to a terminal should be coloured: not with NO_COLOR set
--- (to anything but ""), nor TERM=dumb.
function M.color_allowed()
  return not env_set("NO_COLOR") and os.getenv("TERM") ~= "dumb"
end

--- Whether stdout is a terminal beat may redraw on.
function M.stdout_tty()
  return runtime.isatty(1) and os.getenv("TERM") ~= "dumb"
end

-- Colours -----------------------------------------------------------------------------------

local SGR = {
  keep = "32", pass = "32", baseline = "34", discard = "33", crash = "31", fail = "31",
  interrupted = "33", failed = "31", passed = "32", completed = "32", stopped = "33",
  bold = "1", dim = "2", score = "1", best = "1;32",
}

--- s wrapped in the colour for cls ("keep", "crash", "bold", ...) when color is on.
---@param s string
---@param cls string
---@param color boolean
function M.paint(s, cls, color)
  if not color or not SGR[cls] or s == "" then return s end
  return ("\27[%sm%s\27[0m"):format(SGR[cls], s)
end
local paint = M.paint

-- Text helpers ------------------------------------------------------------------------------

local function ulen(s)
  return utf8.len(s) or #s
end

-- The display width of s without its escape sequences.
local function width_of(s)
  return ulen((s:gsub("\27%[[%d;]*m", "")))
end

-- Cuts s (which may hold colour escapes) to at most w columns, "…" marking the cut.
local function cut(s, w)
  if width_of(s) <= w then return s end
  local out, n, i = {}, 0, 1
  while i <= #s and n < w - 1 do
    local esc = s:match("^\27%[[%d;]*m", i)
    if esc then
      out[#out + 1] = esc
      i = i + #esc
    else
      local c = s:match("^[%z\1-\127\194-\244][\128-\191]*", i) or s:sub(i, i)
      out[#out + 1] = c
      n = n + 1
      i = i + #c
    end
  end
  return table.concat(out) .. "…" .. (s:find("\27[", 1, true) and "\27[0m" or "")
end
M.cut = cut

local function utf8_locale()
  local v = os.getenv("LC_ALL")
  if v == nil or v == "" then v = os.getenv("LC_CTYPE") end
  if v == nil or v == "" then v = os.getenv("LANG") end
  v = (v or ""):lower()
  return v:find("utf%-?8") ~= nil
end

-- Whole seconds, short: "7s", "2m05s", "1h03m".
local function secs(s)
  s = math.max(0, math.floor(s))
  if s < 60 then return ("%ds"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%dh%02dm"):format(s // 3600, s % 3600 // 60)
end
M.secs = secs

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end
M.plural = plural

local function money(c)
  return ("$%.2f"):format(c)
end

-- An iteration as records name it: n, or "R.K" (candidate K of round R of
-- a parallel run) as it is; anything else is 0.
local function iteration_of(v)
  if type(v) == "string" and v:match("^%d+%.%d+$") then return v end
  return math.tointeger(v) or 0
end

-- "iter 3", "iter 3.2", "baseline", "initial check": the name of an iteration of a run.
local function iteration_label(n, strategy, status)
  if n == 0 then
    if status == "baseline" or strategy == "optimize" or strategy == "parallel" then return "baseline" end
    return "initial check"
  end
  return ("iter %s"):format(n)
end
M.iteration_label = iteration_label

local PHASE_TEXT = {
  agent = "agent", guard = "guard", eval = "eval", check = "check", cooldown = "cooldown",
  paused = "paused", idle = "idle",
}

-- The lines of one event, as text (colour when color); nil for none.
-- st is the run's state (see track()).
local function event_lines(st, event, rec, color, plain)
  if event == "run_start" then
    return { ("beat run %s: %s in %s%s"):format(tostring(rec.id), tostring(rec.strategy), tostring(rec.cwd),
      rec.git ~= false and rec.base and ("; base snapshot %s"):format(tostring(rec.base):sub(1, 10))
        or " (no git: no snapshots)") }
  elseif event == "decision" then
    local n = iteration_of(rec.iteration)
    local status = tostring(rec.status or "?")
    local parts
    if n == 0 then
      local label = iteration_label(0, st.strategy, status)
      parts = { status == "baseline" and paint(label, "baseline", color)
        or ("%s  %s"):format(label, paint(status, status, color)) }
    else
      parts = { ("iter %-3s %s%s"):format(n, paint(status, status, color), (" "):rep(math.max(0, 8 - #status))) }
    end
    if rec.score_text then
      parts[#parts + 1] = paint(tostring(rec.score_text), (status == "keep" or status == "baseline") and "score" or "", color)
    end
    if rec.best_text and n ~= 0 then parts[#parts + 1] = ("(best %s)"):format(tostring(rec.best_text)) end
    local d = tonumber(rec.duration_s)
    if d then parts[#parts + 1] = duration.format(d) end
    local c = tonumber(rec.cost_usd)
    if c and c > 0 then parts[#parts + 1] = money(c) end
    if rec.summary and rec.summary ~= "" then parts[#parts + 1] = "— " .. tostring(rec.summary) end
    return { table.concat(parts, "  ") }
  elseif event == "message" then
    return { tostring(rec.text) }
  elseif event == "protect" and type(rec.globs) == "table" then
    local parts = {}
    for i, g in ipairs(rec.globs) do
      if i > 8 then parts[#parts + 1] = ("... %d more (journal)"):format(#rec.globs - 8) break end
      parts[#parts + 1] = ("%s (%s)"):format(tostring(g.glob), tostring(g.why))
    end
    return { ("protected: %s; an iteration that changes one is rejected"):format(table.concat(parts, ", ")) }
  elseif event == "rate_limited" then
    return { ("%s rate limited; waiting %s"):format(iteration_label(iteration_of(rec.iteration), st.strategy),
      duration.format(tonumber(rec.wait) or 0)) }
  elseif event == "phase" and plain then
    if rec.phase == "idle" then return nil end
    local n = iteration_of(rec.iteration)
    local label = iteration_label(n, st.strategy)
    local line = (rec.phase == "paused" or rec.phase == "cooldown") and ("%s: %s"):format(label, rec.phase)
      or ("%s: %s running"):format(label, rec.phase)
    if line == st.last_phase_line then return nil end   -- parallel candidates enter a phase together
    st.last_phase_line = line
    return { line }
  end
  return nil
end

--- The few most telling lines of a command's log (iter-N/eval.log as
--- beat.loop writes it): the first error-looking line and the last lines
--- of its stderr (or stdout when stderr is empty). Returns a list (maybe
--- empty).
---@param text string
---@param tail? integer lines of the tail (default 3)
---@return string[]
function M.telling_lines(text, tail)
  tail = tail or 3
  local out_s = text:match("\n%-%-%- stdout\n(.-)\n%-%-%- stderr\n") or ""
  local err_s = text:match("\n%-%-%- stderr\n(.*)$") or text
  local body = err_s:match("%S") and err_s or out_s
  local lines = {}
  for l in body:gmatch("[^\n]+") do
    if l:match("%S") then lines[#lines + 1] = (cut(l:gsub("%s+$", ""), 200)) end
  end
  local picked = {}
  local first = require("beat.score").error_line(body)
  local from = math.max(1, #lines - tail + 1)
  if first then
    local at
    for i, l in ipairs(lines) do if l:find(first, 1, true) then at = i break end end
    if at and at < from then
      picked[#picked + 1] = lines[at]
      if at < from - 1 then picked[#picked + 1] = "…" end
    end
  end
  for i = from, #lines do picked[#picked + 1] = lines[i] end
  return picked
end

-- The log of a failed iteration 0 (the baseline eval, a guard): its path
-- and its telling lines, for the summary.
local function failed_start_lines(st)
  if not st.dir or not st.start_failed then return {} end
  local fs = require "beat.fs"
  for _, name in ipairs { "eval", "check", "guard-1" } do
    local path = ("%s/iter-0/%s.log"):format(st.dir, name)
    local text = fs.read(path)
    if text then
      local lines = { ("the %s's output (%s):"):format(name == "eval" and "baseline eval" or name, path) }
      for _, l in ipairs(M.telling_lines(text)) do lines[#lines + 1] = "  " .. l end
      return lines
    end
  end
  return {}
end

-- The summary of a finished run (from its run_end or interrupted record).
local function summary_lines(st, rec, color)
  local lines = { "" }
  local status = tostring(rec.status or "?")
  lines[#lines + 1] = ("%s: %s"):format(paint(status, status, color), tostring(rec.reason or ""))
  for _, l in ipairs(failed_start_lines(st)) do lines[#lines + 1] = l end
  if rec.best_score and rec.baseline_score then
    lines[#lines + 1] = ("best: %s (baseline: %s)"):format(paint(tostring(rec.best_score), "score", color),
      tostring(rec.baseline_score))
  end
  local n = math.tointeger(rec.iterations) or 0
  local line = ("%s in %s"):format(plural(n, "iteration"), duration.format(tonumber(rec.elapsed) or 0))
  local cost = tonumber(rec.cost_usd)
  if cost and cost > 0 then line = line .. "; agent cost " .. money(cost) end
  local unfinished = math.tointeger(rec.unfinished_iteration)
  if unfinished then line = line .. ("; iteration %d did not finish"):format(unfinished) end
  lines[#lines + 1] = line
  local id = st.id or rec.dir and tostring(rec.dir):match("([^/]+)/*$") or "?"
  local diff = type(rec.diff) == "table" and rec.diff or nil
  if diff then
    local fc = math.tointeger(diff.files_changed) or 0
    if fc == 0 then
      lines[#lines + 1] = "the work tree is as it was before the run"
    else
      lines[#lines + 1] = ("changes kept (uncommitted): %s, +%d -%d"):format(plural(fc, "file"),
        math.tointeger(diff.insertions) or 0, math.tointeger(diff.deletions) or 0)
      for _, f in ipairs(type(diff.files) == "table" and diff.files or {}) do
        lines[#lines + 1] = ("  %-9s %s (+%d -%d)"):format(tostring(f.status), tostring(f.path),
          math.tointeger(f.insertions) or 0, math.tointeger(f.deletions) or 0)
      end
      if math.tointeger(diff.more_files) then
        lines[#lines + 1] = ("  ... and %d more"):format(diff.more_files)
      end
      lines[#lines + 1] = ("review: git diff    undo: beat restore %s base"):format(id)
    end
  elseif rec.git == false or st.git == false then
    lines[#lines + 1] = "no snapshots were taken (git disabled): the work tree holds the last iteration"
  end
  for _, note in ipairs(type(rec.notes) == "table" and rec.notes or {}) do
    lines[#lines + 1] = "note: " .. tostring(note)
  end
  if rec.resumable then lines[#lines + 1] = ("continue it: beat loop resume %s"):format(id) end
  lines[#lines + 1] = ("journal: %s"):format(tostring(rec.dir or st.dir or "?"))
  lines[#lines + 1] = ("details: beat show %s"):format(id)
  return lines
end
M.summary_lines = summary_lines

-- The screen: one status line under the scrolling log (tty mode) --------------------------

local SPIN_UTF8 = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" }
local SPIN_ASCII = { "|", "/", "-", "\\" }

local screen = {
  out = io.stdout, runs = {}, drawn = false, frame = 0, timer = nil, width = nil,
  winch = false, current = nil,
}

local function term_width()
  local cols = runtime.winsize(1)
  if not cols then cols = math.tointeger(tonumber(os.getenv("COLUMNS") or "")) end
  if not cols or cols < 20 then cols = 80 end
  return cols
end

-- The status line of run st, at most w columns.
local function status_text(st, w, color)
  local now = runtime.clock()
  local spin = st.spinner[(screen.frame % #st.spinner) + 1]
  local head
  local n = st.iteration or 0
  local label = n == 0 and iteration_label(0, st.strategy)
    or (st.max and ("iter %d/%d"):format(n, st.max) or ("iter %d"):format(n))
  local phase = st.phase and PHASE_TEXT[st.phase] or "starting"
  local pe = st.phase_clock and secs(now - st.phase_clock) or ""
  head = ("%s %s %s %s"):format(spin, label, paint(phase, "bold", color), pe)
  local segs = {}
  if screen.multi then table.insert(segs, 1, { st.id, 6 }) end
  if st.best_text then
    local b = "best " .. st.best_text
    if st.baseline_text and st.baseline_text ~= st.best_text then b = b .. " (base " .. st.baseline_text .. ")" end
    segs[#segs + 1] = { b, 3, plain = true }
  end
  if st.last_status then
    segs[#segs + 1] = { "last " .. paint(st.last_status, st.last_status, color), 2 }
  end
  if st.cost > 0 then segs[#segs + 1] = { money(st.cost), 4 } end
  segs[#segs + 1] = { secs(now - st.clock), 5 }
  -- drop the least important segments until the line fits, then cut
  local function build()
    local parts = { head }
    for _, s in ipairs(segs) do if not s.dropped then parts[#parts + 1] = s[1] end end
    return table.concat(parts, " · ")
  end
  local line = build()
  for prio = 1, 6 do
    if width_of(line) <= w then break end
    for _, s in ipairs(segs) do if s[2] == prio then s.dropped = true end end
    line = build()
  end
  return cut(line, w)
end

local function write(s)
  screen.out:write(s)
end

-- Erases the status line (the cursor is left at the start of that line).
-- After the terminal got narrower, a terminal that reflows its lines (tmux,
-- VTE, kitty, iTerm2) has wrapped the line drawn at the old width onto
-- several rows, the cursor on the last: those rows are erased too.
local function clear_status()
  if screen.drawn then
    local rows = 1
    if screen.drawn_width and screen.width and screen.drawn_width > screen.width then
      rows = math.ceil(screen.drawn_width / screen.width)
    end
    write(rows > 1 and ("\r\27[%dA\27[J"):format(rows - 1) or "\r\27[K")
    screen.drawn = false
  end
end

local function draw_status()
  local st = screen.current
  if not st or not st.active then
    clear_status()
    screen.out:flush()
    return
  end
  if screen.winch or not screen.width then
    screen.width, screen.winch = term_width(), false
  end
  local text = status_text(st, screen.width - 1, st.color)
  write("\r" .. text .. "\27[K")
  screen.drawn, screen.drawn_width = true, width_of(text)
  screen.out:flush()
end

local function any_active()
  for _, st in ipairs(screen.runs) do if st.active then return st end end
  return nil
end

local function stop_timer()
  if screen.timer then
    screen.timer:close()
    screen.timer = nil
  end
end

local function tick()
  if not any_active() then
    stop_timer()
    return
  end
  screen.frame = screen.frame + 1
  draw_status()
  screen.timer:start(200, tick)
end

local function start_timer()
  if screen.timer then return end
  screen.timer = runtime.timer()
  screen.timer:unref()   -- the spinner never keeps beat running by itself
  screen.timer:start(200, tick)
end

local winch_installed = false
local function watch_winch()
  if winch_installed then return end
  winch_installed = true
  runtime.on_signal(runtime.signals.SIGWINCH, function()
    screen.width, screen.winch = term_width(), false
    if screen.drawn then
      clear_status()
      draw_status()
    end
  end)
end

--- Erases the status line if one is drawn, so a message can be written to
--- the terminal (the CLI calls this before its "interrupted" line); the
--- line comes back with the next update. Returns whether one was erased.
---@return boolean
function M.suspend()
  if not screen.drawn then return false end
  clear_status()
  screen.out:flush()
  return true
end

-- Writes log lines above the status line.
local function log(lines)
  clear_status()
  for _, l in ipairs(lines) do write(l .. "\n") end
  draw_status()
end

-- Listeners ------------------------------------------------------------------------------------

-- A run's state as its events tell it.
local function new_state(o)
  return { quiet = o.quiet, color = o.color, iteration = 0, cost = 0, active = true,
    clock = runtime.clock(), spinner = utf8_locale() and SPIN_UTF8 or SPIN_ASCII }
end

-- Updates st from one event.
local function track(st, event, rec)
  if event == "run_start" then
    st.id, st.strategy, st.dir, st.git = rec.id, rec.strategy, rec.dir, rec.git
    local cfg = type(rec.config) == "table" and rec.config or {}
    st.max = math.tointeger(cfg.max_iterations)
  elseif event == "phase" then
    st.phase, st.phase_clock = rec.phase, runtime.clock()
    st.iteration = math.tointeger(rec.iteration) or st.iteration
  elseif event == "agent" then
    local c = tonumber(rec.cost_usd)
    if c and c >= 0 and c < math.huge then st.cost = st.cost + c end
  elseif event == "decision" then
    local n = iteration_of(rec.iteration)
    st.last_status = rec.status and tostring(rec.status)
    if n == 0 and rec.status == "baseline" and rec.score_text then st.baseline_text = tostring(rec.score_text) end
    st.start_failed = n == 0 and rec.status == "crash" or nil
    if rec.best_text then st.best_text = tostring(rec.best_text)
    elseif n == 0 and rec.status == "baseline" and rec.score_text then st.best_text = tostring(rec.score_text) end
  end
end

local function tty_listener(o)
  local st = new_state(o)
  screen.runs[#screen.runs + 1] = st
  screen.current = st
  watch_winch()
  return function(event, rec)
    if event == "closed" then
      st.active = false
      for i, x in ipairs(screen.runs) do if x == st then table.remove(screen.runs, i) break end end
      screen.current, screen.multi = any_active(), false
      if not screen.current then clear_status() stop_timer() else draw_status() end
      screen.out:flush()
      return
    end
    if not st.active then return end
    track(st, event, rec)
    local live = 0
    for _, x in ipairs(screen.runs) do if x.active then live = live + 1 end end
    screen.multi = live > 1
    screen.current = st
    if event == "run_end" or event == "interrupted" then
      st.active = false
      clear_status()
      log(summary_lines(st, rec, o.color))
      screen.current = any_active()
      if not screen.current then stop_timer() end
      return
    end
    if event == "run_start" or event == "resume" then start_timer() end
    local lines = not o.quiet and event_lines(st, event, rec, o.color, false) or nil
    if lines then log(lines) else draw_status() end
  end
end

local function plain_listener(o)
  local st = new_state(o)
  local out = io.stdout
  return function(event, rec)
    if event == "closed" then return end
    track(st, event, rec)
    local lines
    if event == "run_end" or event == "interrupted" then
      lines = summary_lines(st, rec, false)
    elseif not o.quiet then
      lines = event_lines(st, event, rec, false, true)
      if lines and event ~= "phase" then st.last_phase_line = nil end
    end
    if lines then
      for _, l in ipairs(lines) do out:write(l, "\n") end
      out:flush()
    end
  end
end

local function json_listener()
  local cjson = require "cjson"
  local id
  return function(event, rec)
    if event == "closed" or event == "message" then return end   -- the console's own
    if event == "run_start" then id = rec.id end
    local line = { version = M.VERSION, run = id }
    for k, v in pairs(rec) do line[k] = v end
    line.event = event
    local ok, text = pcall(cjson.encode, line)
    if not ok then
      text = cjson.encode(require("beat.journal").sanitize(line))
    end
    io.stdout:write(text, "\n")
    io.stdout:flush()
  end
end

---@class beat.UiListenerOptions
---@field quiet? boolean only the summary
---@field mode? string override the configured mode
---@field color? boolean override the colour choice

--- A listener for one run (for beat.loop; see the module comment), or nil
--- in mode "none".
---@param opts? beat.UiListenerOptions
---@return fun(event: string, rec: table)|nil
function M.listener(opts)
  opts = opts or {}
  local mode = opts.mode or settings.mode
  if mode == "none" then return nil end
  if mode == "json" then return json_listener() end
  if mode == "auto" then mode = M.stdout_tty() and "tty" or "plain" end
  local quiet = settings.quiet or opts.quiet or false
  if mode == "plain" then return plain_listener { quiet = quiet } end
  local color = opts.color
  if color == nil then color = settings.color end
  if color == nil then color = M.color_allowed() end
  return tty_listener { quiet = quiet, color = color }
end

return M
