--- beat.score — turn the result of a command into a score, or a reason it has none.
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
--- Every built-in extractor first checks that the run succeeded: a timeout, a death by
--- signal, or an exit code other than 0 (or those listed in opts.exit_codes) is a failure
--- with its reason. `exit` and `last_number` are extractors themselves; the others are
--- constructors that return one: `metric("val_bpb")`, `metrics()`, `json("a.b")`,
--- `regex("(%d+) passed")`, `fn(f)`.
---
--- Numbers are read the same way everywhere (see docs/api/score.md for the full table):
--- `123`, `-1.5e-3`, `.5`, `+7`, `−3` (Unicode minus), `1,234.5` (comma-grouped
--- thousands, groups of exactly three digits) → 1234.5; a unit may follow ("123 KB",
--- "12ms"); digits inside words ("v2", "abc123", "x86_64", "1.2.3", "0x1F") are not
--- numbers; `-0` is 0; NaN and ±inf are recognised and rejected; a number of more than
--- 400 characters is rejected as out of range.

local M = {}

local byte, find, sub, match, format = string.byte, string.find, string.sub, string.match, string.format

local MAX_NUMBER_LEN = 400     -- longer numeric tokens are rejected, never parsed
local LINE_WINDOW = 64 * 1024  -- only the last 64 KiB of the last line is examined
local MAX_JSON_DEPTH = 1000
local MAX_JSON_TRIES = 50

local SIGNAMES = {
  [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL", [5] = "SIGTRAP",
  [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL", [10] = "SIGUSR1",
  [11] = "SIGSEGV", [12] = "SIGUSR2", [13] = "SIGPIPE", [14] = "SIGALRM", [15] = "SIGTERM",
  [24] = "SIGXCPU", [25] = "SIGXFSZ",
}

-- Character classes on bytes ----------------------------------------------------------

local function is_word(b) -- [%w_]
  return b and ((b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b == 95)
end
local function is_digit(b) return b and b >= 48 and b <= 57 end

-- Text helpers -----------------------------------------------------------------------

--- Makes a piece of output safe and short for a one-line reason: invalid UTF-8 and
--- control characters become "?" / " ", and the text is cut to `max` characters.
---@param s string
---@param max? integer
---@return string
local function snippet(s, max)
  max = max or 60
  if #s > max * 4 then s = sub(s, 1, max * 4) end
  s = s:gsub("[%c]", " ")
  if not utf8.len(s) then
    -- drop a sequence cut at the end, then replace whatever is still invalid
    local out = {}
    local i = 1
    while i <= #s do
      local ok, c = pcall(utf8.codepoint, s, i)
      if ok and c then
        local ch = utf8.char(c)
        out[#out + 1] = ch
        i = i + #ch
      else
        out[#out + 1] = "?"
        i = i + 1
      end
    end
    s = table.concat(out)
  end
  s = s:match("^%s*(.-)%s*$")
  if utf8.len(s) > max then
    s = sub(s, 1, utf8.offset(s, max + 1) - 1) .. "…"
  end
  return s
end

--- Formats seconds for a reason: 0.2 → "0.2s", 60.02 → "60s", 90 → "1m30s".
---@param s number
---@return string
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

-- Numbers --------------------------------------------------------------------------------

---@class beat.NumberToken
---@field kind "number"|"nan"|"inf"|"long"
---@field value? number
---@field text string
---@field first integer
---@field last integer

--- Converts a cleaned numeric text to a Lua number: integral values within ±2^53 become
--- integers, -0 becomes 0.
local function normalize(v)
  if v ~= v or v == math.huge or v == -math.huge then return v end
  if v == 0 then return 0 end
  local i = math.tointeger(v)
  if i and i >= -9007199254740992 and i <= 9007199254740992 then return i end
  return v + 0.0
end

local function to_number(text)
  local v = tonumber(text)
  if not v then return nil end
  return normalize(v)
end

-- Reads the number body (no sign) starting at i: digits with optional comma grouping,
-- fraction, exponent. Returns the cleaned text and the index of its last byte, or nil.
local function read_body(s, i)
  local int = match(s, "^%d+", i)
  local j -- next index after what was consumed
  local text
  if int then
    j = i + #int
    -- thousands grouping: 1-3 digits, then one or more ",ddd", not followed by ",d" or a digit
    if #int <= 3 and match(s, "^,%d%d%d", j) then
      local k = j
      local grouped = { int }
      while match(s, "^,%d%d%d", k) do
        grouped[#grouped + 1] = sub(s, k + 1, k + 3)
        k = k + 4
      end
      -- "1,2345" or "1,234,5" is not grouping: the commas separate numbers then
      if not (is_digit(byte(s, k)) or match(s, "^,%d", k)) then
        int, j = table.concat(grouped), k
      end
    end
    text = int
    local frac = match(s, "^%.%d*", j)
    if frac then
      text = text .. frac
      j = j + #frac
    end
  else
    local frac = match(s, "^%.%d+", i)
    if not frac then return nil end
    text = "0" .. frac
    j = i + #frac
  end
  local exp = match(s, "^[eE][%+%-]?%d+", j)
  if exp then
    text = text .. exp
    j = j + #exp
  end
  return text, j - 1
end

--- Parses one numeric token at position i of s (a sign, digits, NaN or inf), without
--- looking at what precedes it. Returns a token, or nil when there is none at i.
---@return beat.NumberToken|nil
local function token_at(s, i)
  local first = i
  local sign = ""
  local b = byte(s, i)
  if b == 45 or b == 43 then -- - +
    sign = b == 45 and "-" or ""
    i = i + 1
  elseif b == 0xE2 and sub(s, i, i + 2) == "\226\136\146" then -- U+2212 minus
    sign = "-"
    i = i + 3
  end
  b = byte(s, i)
  if b == 110 or b == 78 or b == 105 or b == 73 then -- n N i I
    local word = match(s, "^[%a]+", i)
    local lw = word and word:lower()
    if (lw == "nan" or lw == "inf" or lw == "infinity") and not is_word(byte(s, i + #word)) then
      return { kind = lw == "nan" and "nan" or "inf", text = sign .. word, first = first,
               last = i + #word - 1, value = lw == "nan" and 0 / 0 or (sign == "-" and -math.huge or math.huge) }
    end
    return nil
  end
  if not (is_digit(b) or (b == 46 and is_digit(byte(s, i + 1)))) then return nil end
  local text, last = read_body(s, i)
  if not text then return nil end
  local nb = byte(s, last + 1)
  -- "1.2.3" is a version, "0x1F" a hex literal, "1_000" a word: not numbers
  if nb == 46 and is_digit(byte(s, last + 2)) then
    local run = match(s, "^[%d%.]*", last + 1)
    return { kind = "skip", text = "", first = first, last = last + #run }
  end
  if nb == 95 then
    local run = match(s, "^[%w_]*", last + 1)
    return { kind = "skip", text = "", first = first, last = last + #run }
  end
  if text == "0" and (nb == 120 or nb == 88 or nb == 98 or nb == 66) and match(s, "^%w", last + 2) then
    local run = match(s, "^[%w_]*", last + 1)
    return { kind = "skip", text = "", first = first, last = last + #run }
  end
  if #text > MAX_NUMBER_LEN then
    return { kind = "long", text = sub(text, 1, 12), first = first, last = last, len = #text }
  end
  local v = to_number(sign .. text)
  if v == nil then return nil end
  if v ~= v then return { kind = "nan", text = sign .. text, first = first, last = last, value = v } end
  if v == math.huge or v == -math.huge then
    return { kind = "inf", text = sign .. text, first = first, last = last, value = v }
  end
  return { kind = "number", value = v, text = sign .. text, first = first, last = last }
end

--- All numeric tokens of s[from..], in order. A token counts only at a word boundary:
--- not preceded by a letter, digit, "_" or "." ("v2", "abc123", "x.5" are not numbers).
--- A sign belongs to the number only when nothing word-like precedes it ("a-5" is 5,
--- "a=-5" is -5). Units may follow ("12ms").
---@param s string
---@param from? integer
---@return beat.NumberToken[]
local function tokens(s, from)
  local out = {}
  local pos = from or 1
  local n = #s
  if pos > 1 and is_digit(byte(s, pos - 1)) then
    -- the window starts inside a number: that number is longer than the window
    local run = match(s, "^[%d,%.]*", pos)
    out[1] = { kind = "long", text = sub(s, pos, pos + 11), first = pos, last = pos + #run - 1 }
    pos = pos + #run
  end
  while pos <= n do
    local i = find(s, "[%d%.%+%-NnIi\226]", pos)
    if not i then break end
    local prev = byte(s, i - 1)
    local tok
    local c = byte(s, i)
    if is_word(prev) or prev == 46 then
      -- inside a word or after a dot: skip the rest of this word
      local run = match(s, "^[%w_]*", i)
      pos = i + math.max(#run, 1)
    elseif (c == 43 or c == 45) and (prev == 45 or prev == 43) then
      pos = i + 1 -- "--5": not a sign
    else
      tok = token_at(s, i)
      if tok then
        if tok.kind ~= "skip" then out[#out + 1] = tok end
        pos = tok.last + 1
      else
        local run = match(s, "^[%w_]*", i)
        pos = i + math.max(#run, 1)
      end
    end
  end
  return out
end

--- Reason for a token that is not a usable number, or nil when it is one.
local function token_problem(tok, what)
  if tok.kind == "nan" then return what .. " is NaN" end
  if tok.kind == "inf" then
    return format("%s is infinite (%s)", what, snippet(tok.text, 20))
  end
  if tok.kind == "long" then
    if not tok.len then
      return format("%s is a number of more than %d characters (…%s…), out of range",
        what, LINE_WINDOW, tok.text)
    end
    return format("%s is a number of %d characters (%s…), out of range", what, tok.len, tok.text)
  end
  return nil
end

--- Parses a whole string as one number ("  12.5 ms " → 12.5); nil, reason otherwise.
--- Accepts what the extractors accept, including a trailing unit.
---@param s string
---@return number|nil, string?
function M.parse_number(s)
  if type(s) ~= "string" then
    error("beat.score.parse_number: expected a string, got " .. type(s), 2)
  end
  local i = find(s, "%S")
  if not i then return nil, "value is empty" end
  local tok = token_at(s, i)
  if not tok or tok.kind == "skip" then
    return nil, format("value %q is not a number", snippet(s, 40))
  end
  local rest = sub(s, tok.last + 1)
  if not (match(rest, "^%s*$") or match(rest, "^%s*[^%s%d%.%+%-,][^%s]*%s*$")) then
    return nil, format("value %q is not a number", snippet(s, 40))
  end
  local problem = token_problem(tok, "value")
  if problem then return nil, problem end
  return tok.value
end

--- The last non-empty line of text, or nil when there is none (whitespace only).
local function last_line(text)
  local stop = match(text, "^.*()%S")
  if not stop then return nil end
  local head = sub(text, 1, stop)
  local start = match(head, "^.*\n()") or 1
  return sub(text, start, stop)
end

--- The number on the last non-empty line of text: the last number on that line.
---@param text string
---@param what? string how to name the text in reasons (default "text")
---@return number|nil, string?
local function line_number(text, empty, none)
  local line = last_line(text)
  if not line then return nil, empty end
  local from = #line > LINE_WINDOW and (#line - LINE_WINDOW + 1) or 1
  local toks = tokens(line, from)
  local tok = toks[#toks]
  if not tok then return nil, format("%s (%q)", none, snippet(line)) end
  local problem = token_problem(tok, "value")
  if problem then return nil, problem end
  return tok.value
end

function M.last_number_in(text, what)
  if type(text) ~= "string" then
    error("beat.score.last_number_in: expected a string, got " .. type(text), 2)
  end
  what = what or "text"
  return line_number(text, what .. " is empty", what .. " has no number on its last line")
end

-- Checking a run ---------------------------------------------------------------------------

local STREAMS = { stdout = true, stderr = true, both = true }

---@class beat.ScoreContext
---@field label? string   names the command in reasons (default "eval")
---@field cwd? string     directory relative file paths are resolved against
---@field timeout? number seconds; quoted when the run timed out

---@class beat.ExtractorOptions
---@field stream? "stdout"|"stderr"|"both" where to read (default "stdout"; "both" is stdout then stderr)
---@field exit_codes? integer[]|"any" exit codes that count as success (default {0})

local function check_ctx(ctx)
  if ctx == nil then return {} end
  if type(ctx) ~= "table" then
    error("beat.score: ctx must be a table or nil, got " .. type(ctx), 3)
  end
  return ctx
end

local function last_stderr_line(result)
  local e = result.stderr
  if type(e) ~= "string" or e == "" then return nil end
  local tail = #e > 4096 and sub(e, -4096) or e
  local line = last_line(tail)
  return line and snippet(line, 100) or nil
end

--- Checks that a run succeeded. Returns true, or nil and the reason it did not.
---@param result beat.ExecResult
---@param ctx? beat.ScoreContext
---@param exit_codes? integer[]|"any"
---@return true|nil, string?
function M.check_run(result, ctx, exit_codes)
  if type(result) ~= "table" then
    error("beat.score: expected an exec result table, got " .. type(result)
      .. " (pass the extractor itself, e.g. score = beat.score.last_number)", 3)
  end
  ctx = check_ctx(ctx)
  local label = ctx.label or "eval"
  if result.timed_out then
    local t = ctx.timeout or result.duration
    return nil, label .. " timed out" .. (t and (" after " .. fmt_seconds(t)) or "")
  end
  local sig = result.signal
  if type(sig) == "number" and sig ~= 0 then
    local name = SIGNAMES[sig]
    return nil, format("%s was killed by signal %d%s", label, sig, name and (" (" .. name .. ")") or "")
  end
  local code = result.code
  if math.type(code) ~= "integer" then
    if type(code) == "number" and math.tointeger(code) then
      code = math.tointeger(code)
    else
      error("beat.score: result.code must be an integer, got " .. tostring(code), 3)
    end
  end
  local ok = code == 0
  if exit_codes == "any" then
    ok = true
  elseif exit_codes then
    ok = false
    for _, c in ipairs(exit_codes) do if c == code then ok = true end end
  end
  if not ok then
    local err = last_stderr_line(result)
    return nil, format("%s exited %d%s", label, code, err and (" (stderr: " .. err .. ")") or "")
  end
  return true
end

local function check_extractor_opts(where, opts)
  if opts.stream ~= nil and not STREAMS[opts.stream] then
    error(format('%s: opts.stream must be "stdout", "stderr" or "both", got %q',
      where, tostring(opts.stream)), 3)
  end
  local ec = opts.exit_codes
  if ec ~= nil and ec ~= "any" then
    local bad = type(ec) ~= "table" or #ec == 0
    if not bad then
      for _, c in ipairs(ec) do if math.type(c) ~= "integer" then bad = true end end
    end
    if bad then
      error(format('%s: opts.exit_codes must be a list of integers or "any", got %s',
        where, type(ec) == "table" and "an invalid list" or tostring(ec)), 3)
    end
  end
end

local function check_known(where, opts, known)
  for k in pairs(opts) do
    if not known[k] and k ~= 1 then
      error(format("%s: unknown option %s", where, tostring(k)), 3)
    end
  end
end

--- The text an extractor reads, or nil and a reason.
local function stream_text(result, ctx, stream)
  local label = ctx.label or "eval"
  stream = stream or "stdout"
  if stream == "both" then
    local o, e = result.stdout, result.stderr
    if type(o) ~= "string" and type(e) ~= "string" then
      return nil, label .. "'s output was not captured"
    end
    return (type(o) == "string" and o or "") .. "\n" .. (type(e) == "string" and e or ""), label .. "'s output"
  end
  local t = result[stream]
  if t == nil then return nil, format("%s's %s was not captured", label, stream) end
  if type(t) ~= "string" then
    error(format("beat.score: result.%s must be a string, got %s", stream, type(t)), 3)
  end
  return t, label .. "'s " .. stream
end

-- Extractors ---------------------------------------------------------------------------------

--- Pass/fail from the exit code: `true` when the run exited 0; a timeout, a signal or
--- another exit code fails with its reason.
---@param result beat.ExecResult
---@param ctx? beat.ScoreContext
---@return true|nil, string?
function M.exit(result, ctx)
  local ok, why = M.check_run(result, ctx)
  if not ok then return nil, why end
  return true
end

--- Wall-clock seconds the run took (result.duration), when it succeeded. Handy as the
--- score of beat.measure for benchmarks.
---@param result beat.ExecResult
---@param ctx? beat.ScoreContext
---@return number|nil, string?
function M.duration(result, ctx)
  local ok, why = M.check_run(result, ctx)
  if not ok then return nil, why end
  if type(result.duration) ~= "number" then
    error("beat.score.duration: result.duration must be a number, got " .. type(result.duration), 2)
  end
  return result.duration
end

--- The number on the last non-empty line of stdout (Backbeat-compatible): "123",
--- "-1.5e-3", "123 KB" → 123, "score: 0.5 (best)" → 0.5; "abc", "NaN", "inf" fail.
---@param result beat.ExecResult
---@param ctx? beat.ScoreContext
---@return number|nil, string?
function M.last_number(result, ctx)
  ctx = check_ctx(ctx)
  local ok, why = M.check_run(result, ctx)
  if not ok then return nil, why end
  local label = ctx.label or "eval"
  local text, what = stream_text(result, ctx, "stdout")
  if not text then return nil, what end
  return line_number(text, label .. " printed nothing on stdout",
    label .. " printed no number on its last line")
end

local function escape_pattern(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

local function name_char(b) -- characters a metric name may contain besides [%w_]
  return b == 46 or b == 45 or b == 47 -- . - /
end

--- Value token after a "name:" / "name=" separator ending at position p (exclusive).
local function value_after(s, p)
  local q = match(s, "^[\"']?()", p)
  return token_at(s, q)
end

---@class beat.MetricOptions: beat.ExtractorOptions
---@field name string the metric's name, as printed

--- Extractor for `name: value` or `name=value` (spaces allowed around the separator,
--- quotes around the name allowed, so `"name": 1` works too), anywhere in the output;
--- the last occurrence with a numeric value wins. "val/loss" is a different metric from
--- "loss". metric("val_bpb") or metric{name="val_bpb", stream=..., exit_codes=...}.
---@param opts string|beat.MetricOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): number|nil, string?
function M.metric(opts)
  local where = "beat.score.metric"
  if type(opts) == "string" then opts = { name = opts } end
  if type(opts) ~= "table" then
    error(where .. ": expected a metric name or an options table, got " .. type(opts), 2)
  end
  check_known(where, opts, { name = true, stream = true, exit_codes = true })
  local name = opts.name
  if type(name) ~= "string" or not match(name, "^[%w_][%w_%.%-/]*$") then
    error(format("%s: opts.name must be a metric name like \"val_bpb\", got %s", where,
      type(name) == "string" and format("%q", name) or tostring(name)), 2)
  end
  check_extractor_opts(where, opts)
  local stream, exit_codes = opts.stream, opts.exit_codes
  local pat = (is_word(byte(name, 1)) and "%f[%w_]" or "") .. "()" .. escape_pattern(name)
    .. "[\"']?[ \t]*[:=][ \t]*()"
  return function(result, ctx)
    ctx = check_ctx(ctx)
    local ok, why = M.check_run(result, ctx, exit_codes)
    if not ok then return nil, why end
    local text, what = stream_text(result, ctx, stream)
    if not text then return nil, what end
    local found, seen
    for start, p in text:gmatch(pat) do
      -- "val/loss" and "eval.loss" are other metrics than "loss"
      if not (name_char(byte(text, start - 1)) and is_word(byte(text, start - 2))) then
        seen = true
        local tok = value_after(text, p)
        if tok and tok.kind ~= "skip" then found = tok end
      end
    end
    if not found then
      if seen then return nil, format("metric %s has no numeric value in %s", name, what) end
      return nil, format("metric %s not found in %s", name, what)
    end
    local problem = token_problem(found, "metric " .. name)
    if problem then return nil, problem end
    return found.value
  end
end

--- Extractor returning every `name: value` / `name=value` pair with a finite numeric
--- value as a table {name = value} (last occurrence wins; NaN and ±inf are left out).
--- Names start with a letter or "_" and may contain letters, digits, "_", ".", "-", "/".
--- metrics() or metrics{stream=..., exit_codes=...}. Fails when there is no pair at all.
---@param opts? beat.ExtractorOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): table<string, number>|nil, string?
function M.metrics(opts)
  local where = "beat.score.metrics"
  opts = opts or {}
  if type(opts) ~= "table" then
    error(where .. ": opts must be a table or nil, got " .. type(opts), 2)
  end
  check_known(where, opts, { stream = true, exit_codes = true })
  check_extractor_opts(where, opts)
  local stream, exit_codes = opts.stream, opts.exit_codes
  return function(result, ctx)
    ctx = check_ctx(ctx)
    local ok, why = M.check_run(result, ctx, exit_codes)
    if not ok then return nil, why end
    local text, what = stream_text(result, ctx, stream)
    if not text then return nil, what end
    local out, count = {}, 0
    for start, word, p in text:gmatch("%f[%w_]()([%a_][%w_]*)[\"']?[ \t]*[:=][ \t]*()") do
      -- extend the name backwards over ".", "-", "/" joined words: "val/loss", "eval.acc"
      local first = start
      while name_char(byte(text, first - 1)) and is_word(byte(text, first - 2)) do
        local w = match(sub(text, math.max(1, first - 66), first - 2), "([%w_]+)$")
        if not w then break end
        first = first - 1 - #w
      end
      local name = first == start and word or sub(text, first, start - 1) .. word
      if match(name, "^[%a_]") and #name <= 128 then
        local tok = value_after(text, p)
        if tok and tok.kind == "number" then
          if out[name] == nil then count = count + 1 end
          out[name] = tok.value
        end
      end
    end
    if count == 0 then return nil, format("%s has no name: value or name=value metrics", what) end
    return out
  end
end

-- JSON -------------------------------------------------------------------------------------

--- Candidate {…} blocks of text as {open, close} pairs, in order of their closing brace.
--- Strings are tracked only inside a block and never span a line, so stray quotes and
--- braces in log lines do not derail the scan; nesting beyond MAX_JSON_DEPTH is ignored.
local function json_blocks(text)
  local blocks = {}
  local stack, sp, extra = {}, 0, 0
  local in_str = false
  local pos = 1
  while true do
    local i = find(text, in_str and "[\"\\\n]" or "[{}\"\n]", pos)
    if not i then break end
    local c = byte(text, i)
    pos = i + 1
    if in_str then
      if c == 92 then pos = i + 2
      elseif c == 34 then in_str = false
      else in_str = false end -- a newline ends a bogus string
    elseif c == 123 then
      if sp < MAX_JSON_DEPTH then sp = sp + 1; stack[sp] = i else extra = extra + 1 end
    elseif c == 125 then
      if extra > 0 then
        extra = extra - 1
      elseif sp > 0 then
        blocks[#blocks + 1] = stack[sp]
        blocks[#blocks + 1] = i
        stack[sp] = nil
        sp = sp - 1
        if #blocks > 4 * MAX_JSON_TRIES * 20 then
          table.move(blocks, #blocks - 4 * MAX_JSON_TRIES + 1, #blocks, 1)
          for k = #blocks, 4 * MAX_JSON_TRIES + 1, -1 do blocks[k] = nil end
        end
      end
    elseif c == 34 then
      if sp > 0 then in_str = true end
    end
  end
  return blocks
end

--- The last top-level JSON object in text, or nil.
local function last_json_object(text)
  local cjson = require "cjson"
  local blocks = json_blocks(text)
  local failed_open, failed_close
  local tries = 0
  for k = #blocks - 1, 1, -2 do
    local open, close = blocks[k], blocks[k + 1]
    if not (failed_open and open > failed_open and close < failed_close) then
      tries = tries + 1
      if tries > MAX_JSON_TRIES then return nil end
      local ok, v = pcall(cjson.decode, sub(text, open, close))
      if ok and type(v) == "table" then return v end
      failed_open, failed_close = open, close
    end
  end
  return nil
end

local function split_key(key)
  if type(key) == "table" then return key end
  local parts = {}
  for part in (key .. "."):gmatch("([^%.]*)%.") do parts[#parts + 1] = part end
  return parts
end

local function key_string(parts)
  return table.concat(parts, ".")
end

--- Looks up a dotted path in a decoded JSON value.
local function lookup(v, parts)
  for i, part in ipairs(parts) do
    if type(v) ~= "table" then return nil, i end
    local nxt = v[part]
    if nxt == nil and match(part, "^%d+$") then nxt = v[tonumber(part)] end
    if nxt == nil then return nil, i end
    v = nxt
  end
  return v
end

---@class beat.JsonOptions: beat.ExtractorOptions
---@field key? string|string[] dotted path ("metrics.val_bpb", "runs.1.score") or a list of keys
---@field file? string read this file (relative to ctx.cwd) instead of the output

--- Extractor for JSON: by default the last top-level JSON object printed on stdout
--- (trailing text after it is fine); with `file`, a file the eval writes (metrics.json).
--- With `key`, the value at that dotted path (a number must be finite; booleans and
--- tables are returned as they are; strings and null fail); without, the whole object.
--- json(), json("metrics.val_bpb"), json{file="metrics.json", key="val_bpb"}.
---@param opts? string|beat.JsonOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): any, string?
function M.json(opts)
  local where = "beat.score.json"
  if type(opts) == "string" then opts = { key = opts } end
  opts = opts or {}
  if type(opts) ~= "table" then
    error(where .. ": expected a key, an options table or nothing, got " .. type(opts), 2)
  end
  check_known(where, opts, { key = true, file = true, stream = true, exit_codes = true })
  check_extractor_opts(where, opts)
  local key = opts.key
  if key ~= nil then
    local ok = (type(key) == "string" and key ~= "")
    if type(key) == "table" then
      ok = #key > 0
      for _, k in ipairs(key) do if type(k) ~= "string" then ok = false end end
    end
    if not ok then
      error(format("%s: opts.key must be a dotted path like \"metrics.loss\" or a list of keys, got %s",
        where, type(key) == "string" and '""' or tostring(key)), 2)
    end
  end
  local file = opts.file
  if file ~= nil and (type(file) ~= "string" or file == "") then
    error(format("%s: opts.file must be a file path, got %s", where, tostring(file)), 2)
  end
  local parts = key and split_key(key)
  local stream, exit_codes = opts.stream, opts.exit_codes
  return function(result, ctx)
    ctx = check_ctx(ctx)
    local ok, why = M.check_run(result, ctx, exit_codes)
    if not ok then return nil, why end
    local label = ctx.label or "eval"
    local obj, source
    if file then
      local path = file
      if sub(path, 1, 1) ~= "/" and ctx.cwd then path = ctx.cwd .. "/" .. path end
      source = label .. "'s " .. file
      local f, err = io.open(path, "rb")
      if not f then return nil, format("%s: cannot read: %s", source, err) end
      local data = f:read("a")
      f:close()
      local cjson = require "cjson"
      local okd, v = pcall(cjson.decode, data)
      if not okd then
        return nil, format("%s is not valid JSON (%s)", source, snippet(tostring(v), 80))
      end
      obj = v
    else
      local text, what = stream_text(result, ctx, stream)
      if not text then return nil, what end
      source = what
      obj = last_json_object(text)
      if obj == nil then
        return nil, format("%s printed no JSON object on %s", label, stream or "stdout")
      end
    end
    if not parts then
      if type(obj) ~= "table" then
        return nil, format("%s holds %s, not a JSON object", source, type(obj))
      end
      return obj
    end
    local v, at = lookup(obj, parts)
    local kname = key_string(parts)
    if v == nil then
      local hint = ""
      if not file and match(kname, "%.json$") then
        hint = format(' (to read a file, use beat.score.json{file = %q})', kname)
      end
      if at and at < #parts then
        return nil, format("json key %s not found in %s (no %s)", kname, source,
          key_string({ table.unpack(parts, 1, at) })) .. hint
      end
      return nil, format("json key %s not found in %s", kname, source) .. hint
    end
    local cjson = require "cjson"
    if v == cjson.null then return nil, format("json key %s is null", kname) end
    if type(v) == "number" then
      if v ~= v then return nil, format("json key %s is NaN", kname) end
      if v == math.huge or v == -math.huge then return nil, format("json key %s is infinite", kname) end
      return normalize(v)
    end
    if type(v) == "string" then
      return nil, format("json key %s is a string (%q), not a number", kname, snippet(v, 30))
    end
    return v
  end
end

-- Regex -------------------------------------------------------------------------------------

---@class beat.RegexOptions: beat.ExtractorOptions
---@field pattern string a Lua pattern; its first capture (or the whole match) is the number

--- Extractor for a Lua pattern (not PCRE: `%d`, `%s`, `%.`): the first capture of the
--- *last* match in the output, read as a number. regex("(%d+) passed") or
--- regex{pattern=..., stream=..., exit_codes=...}.
---@param opts string|beat.RegexOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): number|nil, string?
function M.regex(opts)
  local where = "beat.score.regex"
  if type(opts) == "string" then opts = { pattern = opts } end
  if type(opts) ~= "table" then
    error(where .. ": expected a Lua pattern or an options table, got " .. type(opts), 2)
  end
  check_known(where, opts, { pattern = true, stream = true, exit_codes = true })
  local pattern = opts.pattern
  if type(pattern) ~= "string" or pattern == "" then
    error(format("%s: opts.pattern must be a non-empty Lua pattern, got %s", where,
      type(pattern) == "string" and '""' or tostring(pattern)), 2)
  end
  local okp, perr = pcall(find, "", pattern)
  if not okp then
    error(format("%s: opts.pattern %q is not a valid Lua pattern: %s", where, pattern,
      tostring(perr):gsub("^.-:%d+: ", "")), 2)
  end
  check_extractor_opts(where, opts)
  local stream, exit_codes = opts.stream, opts.exit_codes
  return function(result, ctx)
    ctx = check_ctx(ctx)
    local ok, why = M.check_run(result, ctx, exit_codes)
    if not ok then return nil, why end
    local text, what = stream_text(result, ctx, stream)
    if not text then return nil, what end
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
    if not okm then
      error(format("%s: pattern %q failed: %s", where, pattern, tostring(err):gsub("^.-:%d+: ", "")), 2)
    end
    if last == nil then return nil, format("pattern %q did not match %s", pattern, what) end
    if type(last) == "number" then return last end
    local v, reason = M.parse_number(last)
    if v == nil then
      return nil, format("pattern %q matched %q, not a number", pattern, snippet(last, 30))
        .. (reason:match("NaN") and " (NaN)" or "")
    end
    return v
  end
end

-- Functions ---------------------------------------------------------------------------------

---@class beat.FnOptions
---@field fn fun(result: beat.ExecResult, ctx: beat.ScoreContext): (number|boolean|table|nil), string?
---@field exit_codes? integer[]|"any"

--- Wraps a Lua function as an extractor. The run is checked first (timeout, signal, exit
--- code unless opts.exit_codes says otherwise); then f(result, ctx) returns a number, a
--- boolean, a table of metrics, or nil and a reason. A NaN or infinite number fails;
--- returning nothing without a reason fails with "score function returned nothing".
---@param opts fun(result: beat.ExecResult, ctx: beat.ScoreContext)|beat.FnOptions
---@return fun(result: beat.ExecResult, ctx?: beat.ScoreContext): any, string?
function M.fn(opts)
  local where = "beat.score.fn"
  if type(opts) == "function" then opts = { fn = opts } end
  if type(opts) ~= "table" then
    error(where .. ": expected a function or an options table, got " .. type(opts), 2)
  end
  check_known(where, opts, { fn = true, exit_codes = true })
  local f = opts.fn
  if type(f) ~= "function" then
    error(where .. ": opts.fn must be a function, got " .. type(f), 2)
  end
  check_extractor_opts(where, opts)
  local exit_codes = opts.exit_codes
  return function(result, ctx)
    ctx = check_ctx(ctx)
    local ok, why = M.check_run(result, ctx, exit_codes)
    if not ok then return nil, why end
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
    error(format("%s: the function returned a %s; it must return a number, a boolean, a table, or nil and a reason",
      where, t), 2)
  end
end

return M
