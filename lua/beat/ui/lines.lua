--- beat.ui.lines: the words of beat.ui — a run's state as its events tell
--- it, the lines of each event and of the summary, and the text helpers
--- (colours, widths, durations) the status line and `beat runs` share.
local runtime = require "beat._runtime"
local duration = require "beat.duration"

local M = {}

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

-- The run's state ------------------------------------------------------------------------------

-- A run's state as its events tell it.
function M.new_state(o)
  return { quiet = o.quiet, color = o.color, iteration = 0, cost = 0, active = true,
    clock = runtime.clock() }
end

-- Updates st from one event.
function M.track(st, event, rec)
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

M.event_lines, M.width_of, M.money, M.PHASE_TEXT = event_lines, width_of, money, PHASE_TEXT

return M
