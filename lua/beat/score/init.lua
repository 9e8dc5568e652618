--- beat.score — turn the result of a command into a score, or a reason it has none.
---
--- How an eval's output becomes a score, for every extractor alike (`extractor` below):
---   1. the run is checked (`check_run`): a timeout, a death by signal, or an exit code
---      other than 0 (or those in opts.exit_codes) is a failure with its reason;
---   2. the text is picked: stdout, stderr or both (opts.stream);
---   3. the extractor reads its value from the text: the last number of the last line,
---      a `name: value` pair, a JSON key, a pattern's capture, or a Lua function's answer.
---      Numbers are read by beat.score.number, JSON objects found by beat.score.json.
---
--- An *extractor* is a function `extractor(result, ctx) → value | nil, reason`:
---   result  the table beat.exec returns: {code, signal, stdout, stderr, duration,
---           timed_out, truncated}
---   ctx     optional: {label = "eval", cwd = "...", timeout = 60}. `label` names the
---           command in reasons ("eval exited 1"), `cwd` anchors relative file paths
---           (json{file=...}), `timeout` (seconds) is quoted when the run timed out.
---   value   a finite number (integral values come back as Lua integers), `true` for
---           beat.score.exit, or a table of metrics for metrics()/json()/fn.
---   reason  one line a person can read: "eval exited 1", "eval timed out after 60s",
---           "eval printed no number on its last line (\"done\")", "value is NaN".
---
--- `exit`, `duration` and `last_number` are extractors themselves; the others are
--- constructors that return one: `metric("val_bpb")`, `metrics()`, `json("a.b")`,
--- `regex("(%d+) passed")`, `fn(f)`. Bad options raise when the extractor is made.

local check = require "beat.check"
local number = require "beat.score.number"
local json = require "beat.score.json"
local signals = require "beat.signals"

local M = {}

local find, sub, format = string.find, string.sub, string.format
local snippet = number.snippet

---@class beat.ScoreContext
---@field label? string   names the command in reasons (default "eval")
---@field cwd? string     directory relative file paths are resolved against
---@field timeout? number seconds; quoted when the run timed out

---@class beat.ExtractorOptions
---@field stream? "stdout"|"stderr"|"both" where to read (default "stdout"; "both" is stdout then stderr)
---@field exit_codes? integer[]|"any" exit codes that count as success (default {0})

local function is_int_list(v)
  if v == "any" then return true end
  if #v == 0 then return false end
  for _, c in ipairs(v) do if math.type(c) ~= "integer" then return false end end
  return true
end

-- Options every constructor takes.
local COMMON = {
  stream = { enum = { "stdout", "stderr", "both" } },
  exit_codes = { "table", enum = { "any" }, test = is_int_list, what = 'a list of integers or "any"' },
}

--- Formats seconds for a reason: 0.2 → "0.2s", 60.02 → "60s", 90 → "1m30s".
local function fmt_seconds(s)
  if type(s) ~= "number" or s ~= s then return "?" end
  if s < 10 then
    local t = format("%.1f", s):gsub("%.0$", "")
    if t == "0" then t = format("%.2g", s) end
    return t .. "s"
  end
  s = math.floor(s + 0.5)
  if s < 100 then return s .. "s" end
  if s < 3600 then
    local m, r = s // 60, s % 60
    return r == 0 and (m .. "m") or format("%dm%ds", m, r)
  end
  local h, m = s // 3600, (s % 3600) // 60
  return m == 0 and (h .. "h") or format("%dh%dm", h, m)
end

-- Checking a run ---------------------------------------------------------------------------

local ERROR_WORDS = { "error", "cannot", "can't", "could not", "not found", "no such", "fatal",
  "failed", "failure", "exception", "panic", "denied", "segmentation fault", "assert" }

--- The first line of text that looks like an error ("Error: Cannot find module
--- 'x'", "ModuleNotFoundError: ...", "fatal: ..."), or nil. A Python
--- traceback's header does not count: the line naming the error does.
---@param text string
---@return string|nil
function M.error_line(text)
  if type(text) ~= "string" then return nil end
  for line in text:sub(1, 65536):gmatch("[^\n]+") do
    local l = line:lower()
    if not l:match("^%s*traceback %(most recent call last%)") then
      for _, w in ipairs(ERROR_WORDS) do
        if l:find(w, 1, true) then return (line:gsub("^%s+", ""):gsub("%s+$", "")) end
      end
    end
  end
  return nil
end

-- The most telling line of a failed run's stderr: the first that looks like
-- an error (the cause, where Node.js ends with its version and Python with
-- a blank line), else the last.
local function telling_stderr_line(result)
  local e = result.stderr
  if type(e) ~= "string" or e == "" then return nil end
  local line = M.error_line(e)
  if not line then
    local tail = #e > 4096 and sub(e, -4096) or e
    line = number.last_line(tail)
  end
  return line and snippet(line, 100) or nil
end

--- Checks that a run succeeded. Returns true, or nil and the reason it did not.
---@param result beat.ExecResult
---@param ctx? beat.ScoreContext
---@param exit_codes? integer[]|"any"
---@return true|nil, string?
function M.check_run(result, ctx, exit_codes)
  check.value("beat.score", "result", result, { "table", required = true,
    what = "an exec result table (pass the extractor itself, e.g. score = beat.score.last_number)" }, 3)
  ctx = check.value("beat.score", "ctx", ctx, "table", 3) or {}
  local label = ctx.label or "eval"
  if result.timed_out then
    local t = ctx.timeout or result.duration
    return nil, label .. " timed out" .. (t and (" after " .. fmt_seconds(t)) or "")
  end
  local sig = result.signal
  if type(sig) == "number" and sig ~= 0 then
    local name = signals.name(sig)
    return nil, format("%s was killed by signal %d%s", label, sig, name and (" (" .. name .. ")") or "")
  end
  local code = result.code
  if type(code) == "number" then code = math.tointeger(code) end
  if not code then check.fail("beat.score", "result.code", "an integer", result.code, 3) end
  local ok = code == 0
  if exit_codes == "any" then
    ok = true
  elseif exit_codes then
    ok = false
    for _, c in ipairs(exit_codes) do if c == code then ok = true end end
  end
  if not ok then
    local err = telling_stderr_line(result)
    return nil, format("%s exited %d%s", label, code, err and (" (stderr: " .. err .. ")") or "")
  end
  return true
end

--- The text an extractor reads, or nil and a reason.
local function stream_text(result, label, stream)
  if stream == "both" then
    local o, e = result.stdout, result.stderr
    if type(o) ~= "string" and type(e) ~= "string" then
      return nil, label .. "'s output was not captured"
    end
    return (type(o) == "string" and o or "") .. "\n" .. (type(e) == "string" and e or ""), label .. "'s output"
  end
  local t = result[stream]
  if t == nil then return nil, format("%s's %s was not captured", label, stream) end
  if type(t) ~= "string" then check.fail("beat.score", "result." .. stream, "a string", t, 3) end
  return t, label .. "'s " .. stream
end

-- The one extractor ------------------------------------------------------------------------

--- Makes an extractor: check the run, pick the text, then `read(text, what, ctx, result)`
--- → value | nil, reason (`what` names the text in reasons: "eval's stdout"). With
--- opts.stream = false the text is not picked (read gets nil). A raise inside `read` at
--- level 3 blames the extractor's caller.
---@param opts {stream?: string|false, exit_codes?: integer[]|"any"}
---@param read fun(text: string|nil, what: string|nil, ctx: beat.ScoreContext, result: beat.ExecResult): any, string?
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): any, string?
local function extractor(opts, read)
  local stream, exit_codes = opts.stream, opts.exit_codes
  if stream == nil then stream = "stdout" end
  return function(result, ctx)
    local ok, why = M.check_run(result, ctx, exit_codes)
    if not ok then return nil, why end
    ctx = ctx or {}
    local text, what
    if stream then
      text, what = stream_text(result, ctx.label or "eval", stream)
      if not text then return nil, what end
    end
    local v, reason = read(text, what, ctx, result)
    return v, reason
  end
end

-- A constructor's argument: the short form (a name, a pattern, a function) or a table.
local function options(where, arg, short, short_kind, schema, expected)
  if type(arg) == short_kind then arg = { [short] = arg } end
  if arg ~= nil and type(arg) ~= "table" then check.fail(where, "opts", expected, arg, 3) end
  local o = check.options(where, arg, schema, { level = 3 })
  return o
end

local function with_common(schema)
  for k, v in pairs(COMMON) do schema[k] = v end
  return schema
end

-- The extractors ---------------------------------------------------------------------------

--- Pass/fail from the exit code: `true` when the run exited 0; a timeout, a signal or
--- another exit code fails with its reason.
---@type fun(result: beat.ExecResult, ctx?: beat.ScoreContext): true|nil, string?
M.exit = extractor({ stream = false }, function() return true end)

--- Wall-clock seconds the run took (result.duration), when it succeeded. Handy as the
--- score of beat.measure for benchmarks.
---@type fun(result: beat.ExecResult, ctx?: beat.ScoreContext): number|nil, string?
M.duration = extractor({ stream = false }, function(_, _, _, result)
  check.value("beat.score.duration", "result.duration", result.duration, { "number", required = true }, 3)
  return result.duration
end)

--- The number on the last non-empty line of stdout (Backbeat-compatible): "123",
--- "-1.5e-3", "123 KB" → 123, "score: 0.5 (best)" → 0.5; "abc", "NaN", "inf" fail.
---@type fun(result: beat.ExecResult, ctx?: beat.ScoreContext): number|nil, string?
M.last_number = extractor({}, function(text, _, ctx)
  local label = ctx.label or "eval"
  return number.on_last_line(text, label .. " printed nothing on stdout",
    label .. " printed no number on its last line")
end)

--- The number on the last non-empty line of any text, for use inside `fn`.
---@param text string
---@param what? string how to name the text in reasons (default "text")
---@return number|nil, string?
function M.last_number_in(text, what)
  check.value("beat.score.last_number_in", "text", text, { "string", required = true })
  what = what or "text"
  local v, why = number.on_last_line(text, what .. " is empty", what .. " has no number on its last line")
  return v, why
end

--- Parses a whole string as one number ("  12.5 ms " → 12.5); nil, reason otherwise.
--- Accepts what the extractors accept, including a trailing unit.
---@param s string
---@return number|nil, string?
function M.parse_number(s)
  check.value("beat.score.parse_number", "s", s, { "string", required = true })
  local v, why = number.parse(s)
  return v, why
end

---@class beat.MetricOptions: beat.ExtractorOptions
---@field name string the metric's name, as printed

local METRIC = with_common { name = { "string", required = true, test = number.is_metric_name,
  what = 'a metric name like "val_bpb"' } }

--- Extractor for `name: value` or `name=value` (spaces allowed around the separator,
--- quotes around the name allowed, so `"name": 1` works too), anywhere in the output;
--- the last occurrence with a numeric value wins. "val/loss" is a different metric from
--- "loss". metric("val_bpb") or metric{name="val_bpb", stream=..., exit_codes=...}.
---@param opts string|beat.MetricOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): number|nil, string?
function M.metric(opts)
  local o = options("beat.score.metric", opts, "name", "string", METRIC, "a metric name or an options table")
  local name = o.name
  return extractor(o, function(text, what) return number.metric(text, name, what) end)
end

local METRICS = with_common {}

--- Extractor returning every `name: value` / `name=value` pair with a finite numeric
--- value as a table {name = value} (last occurrence wins; NaN and ±inf are left out).
--- Names start with a letter or "_" and may contain letters, digits, "_", ".", "-", "/".
--- metrics() or metrics{stream=..., exit_codes=...}. Fails when there is no pair at all.
---@param opts? beat.ExtractorOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): table<string, number>|nil, string?
function M.metrics(opts)
  local o = options("beat.score.metrics", opts, nil, nil, METRICS, "an options table or nil")
  return extractor(o, number.metrics)
end

---@class beat.JsonOptions: beat.ExtractorOptions
---@field key? string|string[] dotted path ("metrics.val_bpb", "runs.1.score") or a list of keys
---@field file? string read this file (relative to ctx.cwd) instead of the output

local JSON = with_common {
  key = { "nonempty|strings", test = function(k) return type(k) == "string" or #k > 0 end,
    what = 'a dotted path like "metrics.loss" or a list of keys' },
  file = { "nonempty", what = "a file path" },
}

-- The decoded contents of the file the eval wrote, or nil and a reason.
local function read_json_file(file, ctx, source)
  local path = file
  if sub(path, 1, 1) ~= "/" and ctx.cwd then path = ctx.cwd .. "/" .. path end
  local f, err = io.open(path, "rb")
  if not f then return nil, format("%s: cannot read: %s", source, err) end
  local data = f:read("a")
  f:close()
  local ok, v = pcall(require("cjson").decode, data)
  if not ok then return nil, format("%s is not valid JSON (%s)", source, snippet(tostring(v), 80)) end
  return v
end

--- Extractor for JSON: by default the last top-level JSON object printed on stdout
--- (trailing text after it is fine); with `file`, a file the eval writes (metrics.json).
--- With `key`, the value at that dotted path (a number must be finite; booleans and
--- tables are returned as they are; strings and null fail); without, the whole object.
--- json(), json("metrics.val_bpb"), json{file="metrics.json", key="val_bpb"}.
---@param opts? string|beat.JsonOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): any, string?
function M.json(opts)
  local o = options("beat.score.json", opts, "key", "string", JSON, "a key, an options table or nil")
  local file, stream = o.file, o.stream or "stdout"
  local parts = o.key and json.split_key(o.key)
  local pick = extractor({ stream = not file and stream, exit_codes = o.exit_codes }, function(text, what, ctx)
    local label = ctx.label or "eval"
    local obj, source
    if file then
      source = label .. "'s " .. file
      local why
      obj, why = read_json_file(file, ctx, source)
      if obj == nil then return nil, why end
    else
      source = what
      obj = json.last_object(text)
      if obj == nil then return nil, format("%s printed no JSON object on %s", label, stream) end
    end
    if parts then return json.pick(obj, parts, source, file ~= nil) end
    if type(obj) ~= "table" then return nil, format("%s holds %s, not a JSON object", source, type(obj)) end
    return obj
  end)
  return pick
end

---@class beat.RegexOptions: beat.ExtractorOptions
---@field pattern string a Lua pattern; its first capture (or the whole match) is the number

local REGEX = with_common { pattern = { "nonempty", required = true, what = "a non-empty Lua pattern" } }

-- An error message without the "file:line: " Lua puts before it.
local function bare(err) return (tostring(err):gsub("^.-:%d+: ", "")) end

--- Extractor for a Lua pattern (not PCRE: `%d`, `%s`, `%.`): the first capture of the
--- *last* match in the output, read as a number. regex("(%d+) passed") or
--- regex{pattern=..., stream=..., exit_codes=...}.
---@param opts string|beat.RegexOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): number|nil, string?
function M.regex(opts)
  local where = "beat.score.regex"
  local o = options(where, opts, "pattern", "string", REGEX, "a Lua pattern or an options table")
  local pattern = o.pattern
  local okp, perr = pcall(find, "", pattern)
  if not okp then check.fail(where, "opts.pattern", "a valid Lua pattern (" .. bare(perr) .. ")", pattern) end
  return extractor(o, function(text, what)
    local last
    local okm, err = pcall(function()
      local pos = 1
      while pos <= #text + 1 do
        local s, e, cap = find(text, pattern, pos)
        if not s then break end
        last = cap ~= nil and cap or sub(text, s, e)
        pos = e >= s and e + 1 or s + 1
      end
    end)
    if not okm then check.error(where, format("pattern %q failed: %s", pattern, bare(err)), 3) end
    if last == nil then return nil, format("pattern %q did not match %s", pattern, what) end
    if type(last) == "number" then return last end
    local v, reason = number.parse(last)
    if v == nil then
      return nil, format("pattern %q matched %q, not a number", pattern, snippet(last, 30))
        .. (reason:match("NaN") and " (NaN)" or "")
    end
    return v
  end)
end

---@class beat.FnOptions
---@field fn fun(result: beat.ExecResult, ctx: beat.ScoreContext): (number|boolean|table|nil), string?
---@field exit_codes? integer[]|"any"

local FN = { fn = { "function", required = true }, exit_codes = COMMON.exit_codes }

--- Wraps a Lua function as an extractor. The run is checked first (timeout, signal, exit
--- code unless opts.exit_codes says otherwise); then f(result, ctx) returns a number, a
--- boolean, a table of metrics, or nil and a reason. A NaN or infinite number fails;
--- returning nothing without a reason fails with "score function returned nothing".
---@param opts fun(result: beat.ExecResult, ctx: beat.ScoreContext)|beat.FnOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): any, string?
function M.fn(opts)
  local where = "beat.score.fn"
  local o = options(where, opts, "fn", "function", FN, "a function or an options table")
  local f = o.fn
  return extractor({ stream = false, exit_codes = o.exit_codes }, function(_, _, ctx, result)
    local v, reason = f(result, ctx)
    if v == nil then
      if reason == nil then return nil, "score function returned nothing" end
      return nil, tostring(reason)
    end
    local t = type(v)
    if t == "number" then
      if v ~= v then return nil, "value is NaN" end
      if v == math.huge or v == -math.huge then return nil, "value is infinite" end
      if v == 0 then return 0 end
      return v
    end
    if t == "boolean" then
      if v == false then return nil, reason and tostring(reason) or "score function returned false" end
      return v
    end
    if t == "table" then return v end
    check.fail(where, "the function's result", "a number, a boolean, a table, or nil and a reason", v, 3)
  end)
end

return M
