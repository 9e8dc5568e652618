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
local lines = require "beat.ui.lines"
local status = require "beat.ui.status"

local new_state, track = lines.new_state, lines.track
local event_lines, summary_lines = lines.event_lines, lines.summary_lines


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

-- The words (beat.ui.lines) and the status line (beat.ui.status), for the CLI.
M.paint, M.cut, M.secs, M.plural = lines.paint, lines.cut, lines.secs, lines.plural
M.iteration_label, M.telling_lines, M.summary_lines = lines.iteration_label, lines.telling_lines, lines.summary_lines
M.suspend = status.suspend

-- Listeners ------------------------------------------------------------------------------------

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
  return status.listener { quiet = quiet, color = color }
end

return M
