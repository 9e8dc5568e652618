--- beat.ui.status: the tty mode of beat.ui — log lines scroll above ONE
--- status line redrawn in place (a spinner every 200 ms, refitted to the
--- terminal's width on SIGWINCH), shared by every run of the process.
local runtime = require "beat._runtime"
local lines = require "beat.ui.lines"

local paint, cut, secs, iteration_label = lines.paint, lines.cut, lines.secs, lines.iteration_label
local width_of, money, PHASE_TEXT = lines.width_of, lines.money, lines.PHASE_TEXT
local event_lines, summary_lines = lines.event_lines, lines.summary_lines
local new_state, track = lines.new_state, lines.track

local M = {}

-- Whether the locale is UTF-8 (the braille spinner, else an ASCII one).
local function utf8_locale()
  local v = os.getenv("LC_ALL")
  if v == nil or v == "" then v = os.getenv("LC_CTYPE") end
  if v == nil or v == "" then v = os.getenv("LANG") end
  v = (v or ""):lower()
  return v:find("utf%-?8") ~= nil
end

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

-- Listener -------------------------------------------------------------------------------------

--- The tty listener of one run: its lines scroll above the status line.
function M.listener(o)
  local st = new_state(o)
  st.spinner = utf8_locale() and SPIN_UTF8 or SPIN_ASCII
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

return M
