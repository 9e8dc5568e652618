--- beat.score.number — reading numbers out of a command's output.
---
--- One tokenizer serves every extractor, so a number reads the same everywhere (see
--- docs/api/score.md for the full table): `123`, `-1.5e-3`, `.5`, `+7`, `−3` (Unicode
--- minus), `1,234.5` (comma-grouped thousands, groups of exactly three digits) → 1234.5; a
--- unit may follow ("123 KB", "12ms"); digits inside words ("v2", "abc123", "x86_64",
--- "1.2.3", "0x1F") are not numbers; `-0` is 0; NaN and ±inf are recognised and rejected; a
--- number of more than 400 characters is rejected as out of range. Every function is
--- linear in the size of the text. Pure Lua: no beat runtime needed.
local M = {}

local byte, find, sub, match, format = string.byte, string.find, string.sub, string.match, string.format

local MAX_NUMBER_LEN = 400     -- longer numeric tokens are rejected, never parsed
local LINE_WINDOW = 64 * 1024  -- only the last 64 KiB of the last line is examined

-- Character classes on bytes ----------------------------------------------------------

local function is_word(b) -- [%w_]
  return b and ((b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b == 95)
end
local function is_digit(b) return b and b >= 48 and b <= 57 end
local function name_char(b) -- characters a metric name may contain besides [%w_]
  return b == 46 or b == 45 or b == 47 -- . - /
end

--- Makes a piece of output safe and short for a one-line reason: invalid UTF-8 and
--- control characters become "?" / " ", and the text is cut to `max` characters.
---@param s string
---@param max? integer
---@return string
function M.snippet(s, max)
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
local snippet = M.snippet

-- Tokens -----------------------------------------------------------------------------------

---@class beat.NumberToken
---@field kind "number"|"nan"|"inf"|"long"|"skip"
---@field value? number
---@field text string
---@field first integer
---@field last integer
---@field len? integer

--- A decoded number as a score: integral values within ±2^53 become integers, -0 becomes 0.
---@param v number
---@return number
function M.normalize(v)
  if v ~= v or v == math.huge or v == -math.huge then return v end
  if v == 0 then return 0 end
  local i = math.tointeger(v)
  if i and i >= -9007199254740992 and i <= 9007199254740992 then return i end
  return v + 0.0
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

-- A token that is not a number, covering the rest of the word it starts.
local function skip(s, first, from, class)
  local run = match(s, class, from)
  return { kind = "skip", text = "", first = first, last = from - 1 + #run }
end

--- Parses one numeric token at position i of s (a sign, digits, NaN or inf), without
--- looking at what precedes it. Returns a token, or nil when there is none at i.
---@param s string
---@param i integer
---@return beat.NumberToken|nil
function M.token_at(s, i)
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
  if nb == 46 and is_digit(byte(s, last + 2)) then return skip(s, first, last + 1, "^[%d%.]*") end
  if nb == 95 then return skip(s, first, last + 1, "^[%w_]*") end
  if text == "0" and (nb == 120 or nb == 88 or nb == 98 or nb == 66) and match(s, "^%w", last + 2) then
    return skip(s, first, last + 1, "^[%w_]*")
  end
  if #text > MAX_NUMBER_LEN then
    return { kind = "long", text = sub(text, 1, 12), first = first, last = last, len = #text }
  end
  local v = tonumber(sign .. text)
  if v == nil then return nil end
  v = M.normalize(v)
  if v ~= v then return { kind = "nan", text = sign .. text, first = first, last = last, value = v } end
  if v == math.huge or v == -math.huge then
    return { kind = "inf", text = sign .. text, first = first, last = last, value = v }
  end
  return { kind = "number", value = v, text = sign .. text, first = first, last = last }
end
local token_at = M.token_at

--- All numeric tokens of s[from..], in order. A token counts only at a word boundary:
--- not preceded by a letter, digit, "_" or "." ("v2", "abc123", "x.5" are not numbers).
--- A sign belongs to the number only when nothing word-like precedes it ("a-5" is 5,
--- "a=-5" is -5). Units may follow ("12ms").
---@param s string
---@param from? integer
---@return beat.NumberToken[]
function M.tokens(s, from)
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
    local c = byte(s, i)
    local tok
    if (c == 43 or c == 45) and (prev == 45 or prev == 43) then
      pos = i + 1 -- "--5": not a sign
    else
      if not (is_word(prev) or prev == 46) then tok = token_at(s, i) end
      if tok then
        if tok.kind ~= "skip" then out[#out + 1] = tok end
        pos = tok.last + 1
      else
        -- inside a word, after a dot, or no number here: skip the rest of this word
        local run = match(s, "^[%w_]*", i)
        pos = i + math.max(#run, 1)
      end
    end
  end
  return out
end

--- Reason for a token that is not a usable number, or nil when it is one.
---@param tok beat.NumberToken
---@param what string how to name the value ("value", "metric loss")
---@return string|nil
function M.problem(tok, what)
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
local problem = M.problem

-- Whole strings and last lines -------------------------------------------------------------

--- Parses a whole string as one number ("  12.5 ms " → 12.5); nil, reason otherwise.
--- Accepts what the extractors accept, including a trailing unit.
---@param s string
---@return number|nil, string?
function M.parse(s)
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
  local why = problem(tok, "value")
  if why then return nil, why end
  return tok.value
end

--- The last non-empty line of text, or nil when there is none (whitespace only).
---@param text string
---@return string|nil
function M.last_line(text)
  local stop = match(text, "^.*()%S")
  if not stop then return nil end
  local head = sub(text, 1, stop)
  local start = match(head, "^.*\n()") or 1
  return sub(text, start, stop)
end

--- The last number on the last non-empty line of text; nil and `empty` when there is no
--- such line, nil and `none` ("… (\"the line\")") when it holds no number.
---@param text string
---@param empty string
---@param none string
---@return number|nil, string?
function M.on_last_line(text, empty, none)
  local line = M.last_line(text)
  if not line then return nil, empty end
  local from = #line > LINE_WINDOW and (#line - LINE_WINDOW + 1) or 1
  local toks = M.tokens(line, from)
  local tok = toks[#toks]
  if not tok then return nil, format("%s (%q)", none, snippet(line)) end
  local why = problem(tok, "value")
  if why then return nil, why end
  return tok.value
end

-- name: value pairs ------------------------------------------------------------------------

--- The numeric token after a "name:" / "name=" separator ending at p (exclusive), or nil.
local function value_after(s, p)
  local q = match(s, "^[\"']?()", p)
  return token_at(s, q)
end

local function escape_pattern(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

--- Whether `name` can be a metric name: `[%w_][%w_.-/]*`.
---@param name any
---@return boolean
function M.is_metric_name(name)
  return type(name) == "string" and match(name, "^[%w_][%w_%.%-/]*$") ~= nil
end

--- The value of `name: value` or `name=value` in text (spaces around the separator and
--- quotes around the name allowed): the last occurrence with a numeric value. "val/loss"
--- and "eval.loss" are other metrics than "loss". nil, reason when there is none.
---@param text string
---@param name string a metric name (see is_metric_name)
---@param what string how to name the text in reasons ("eval's stdout")
---@return number|nil, string?
function M.metric(text, name, what)
  local pat = (is_word(byte(name, 1)) and "%f[%w_]" or "") .. "()" .. escape_pattern(name)
    .. "[\"']?[ \t]*[:=][ \t]*()"
  local found, seen
  for start, p in text:gmatch(pat) do
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
  local why = problem(found, "metric " .. name)
  if why then return nil, why end
  return found.value
end

--- Every `name: value` / `name=value` pair with a finite numeric value, as {name = value}
--- (last occurrence wins). Names start with a letter or "_" and may contain letters,
--- digits, "_", ".", "-", "/". nil, reason when there is no pair at all.
---@param text string
---@param what string how to name the text in reasons
---@return table<string, number>|nil, string?
function M.metrics(text, what)
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

return M
