--- beat.redact: keeps secrets out of every file beat writes (the journal,
--- results.tsv, iter-N/*.log). A secret is replaced by "[redacted]".
---
--- What is a secret:
---   - the value (8 characters or more) of a variable of beat's environment
---     whose name says it holds one (see `is_secret_name`: ANTHROPIC_API_KEY,
---     GITHUB_TOKEN, DB_PASSWORD, ...), and values added with `add`;
---   - well-known key formats: sk-… (Anthropic, OpenAI), ghp_/gho_/ghu_/ghs_/
---     ghr_…, github_pat_…, AKIA…/ASIA…, xox[bpars]-…, AIza…, glpat-…,
---     PEM private key blocks, `Bearer` tokens and `Authorization:` headers;
---   - the value of a secret-named option or assignment: `--token=X`,
---     `--password X`, `API_KEY=X`, `"api_key": "X"` (8 characters or more for
---     assignments, 4 for options).
--- Text is scanned, not understood: a secret in another shape (split over
--- lines, encoded, or under an innocent name) is not found.
local M = {}

M.PLACEHOLDER = "[redacted]"

local MIN_VALUE = 8          -- shorter values of secret-named variables are not redacted
local MIN_OPTION = 4         -- nor shorter values of --password style options
local MAX_PEM = 16 * 1024    -- a PEM block is redacted up to its END line, or this far
local CHUNK = 256 * 1024     -- file: read this much at a time
local KEEP = 32 * 1024       -- file: the tail kept for the next chunk (longest secret)

-- Words that make a name secret when they are one of its segments
-- (API_KEY, apiKey, api-key, x.auth) ...
local WORDS = {
  key = true, apikey = true, token = true, secret = true, secrets = true,
  password = true, passwd = true, pass = true, pwd = true, passphrase = true,
  credential = true, credentials = true, creds = true, auth = true,
  authorization = true, privatekey = true,
}
-- ... or the end of one (PGPASSWORD, NPMTOKEN, clientsecret).
local SUFFIXES = { "password", "passwd", "token", "secret", "apikey" }
-- Names that hold one of these words but no secret.
local NOT_SECRET = { PWD = true, OLDPWD = true, pwd = true, key = true, KEY = true }

-- Whether a name says its value is a secret (see M.is_secret_name).
local function name_is_secret(name)
  if NOT_SECRET[name] then return false end
  local spaced = name:gsub("(%l)(%u)", "%1 %2")
  for seg in spaced:gmatch("[%w]+") do
    seg = seg:lower()
    if WORDS[seg] then return true end
    for _, suffix in ipairs(SUFFIXES) do
      if #seg > #suffix and seg:sub(-#suffix) == suffix then return true end
    end
  end
  return false
end

-- Names are few (fields, variables, options) and asked about again and
-- again: the answers are kept, up to a bound.
local secret_name_cache, cache_size = {}, 0

--- Whether a variable, option or field name says its value is a secret:
--- one of its segments (split at `_ - . /`, spaces and camelCase humps) is
--- key, token, secret, password, passwd, pass, pwd, passphrase, credential(s),
--- creds, auth, authorization, or ends with password, token, secret or apikey.
--- `tokens`, `author`, `max_tokens`, `keyboard` and a bare `key` are not.
---@param name string
---@return boolean
function M.is_secret_name(name)
  if type(name) ~= "string" then return false end
  local v = secret_name_cache[name]
  if v == nil then
    if cache_size > 4096 then secret_name_cache, cache_size = {}, 0 end
    v = name_is_secret(name)
    secret_name_cache[name] = v
    cache_size = cache_size + 1
  end
  return v
end

--------------------------------------------------------------------------------
-- Known secret values

local values, values_list = {}, nil   -- set of values, and the same sorted longest first
local text_cache, text_count, text_bytes = {}, 0, 0  -- text → redacted text (see M.text); emptied by M.add
local env_loaded = false

local function json_escaped(v)
  return (v:gsub('[\\"]', "\\%0"))
end

--- Redacts `value` wherever it appears from now on (values shorter than 8
--- characters are ignored: they would match too much).
---@param value string
function M.add(value)
  if type(value) ~= "string" or #value < MIN_VALUE or values[value] then return end
  values[value] = true
  -- as it appears inside JSON text (stream-json transcripts, the journal)
  local esc = json_escaped(value)
  values[esc] = true
  values[(esc:gsub("/", "\\/"))] = true
  values_list, text_cache, text_count, text_bytes = nil, {}, 0, 0
end

local function load_env()
  if env_loaded then return end
  env_loaded = true
  local ok, env = pcall(function() return require("beat.exec").environ() end)
  if not ok or type(env) ~= "table" then return end
  for name, v in pairs(env) do
    if M.is_secret_name(name) then M.add(v) end
  end
end

local function known_values()
  load_env()
  if not values_list then
    values_list = {}
    for v in pairs(values) do values_list[#values_list + 1] = v end
    table.sort(values_list, function(a, b) return #a > #b or (#a == #b and a < b) end)
  end
  return values_list
end

--------------------------------------------------------------------------------
-- Finding secrets: each finder adds spans {first, last} of s to redact.

local function has_digit_and_letter(v)
  return v:find("%d") ~= nil and v:find("%a") ~= nil
end

-- Key formats. Each is found from a plain anchor (fast, even in megabytes
-- of log), then matched at the anchor by `pat`; its position captures frame
-- the secret: (first, after) or only (after), the secret starting at the
-- anchor. `word`: the anchor must not follow a letter or digit. `lower`:
-- the anchor is searched case-insensitively.
local FORMATS = {
  { anchors = { "sk-" }, pat = "^sk%-[%w_%-]+()", min = 23, ok = has_digit_and_letter, word = true },
  { anchors = { "ghp_", "gho_", "ghu_", "ghs_", "ghr_" }, pat = "^gh[pousr]_%w+()", min = 40, word = true },
  { anchors = { "github_pat_" }, pat = "^github_pat_[%w_]+()", min = 40, word = true },
  { anchors = { "AKIA", "ASIA" }, pat = "^A[KS]IA[%u%d]+()", min = 20, word = true,
    ok = function(v) return #v == 20 end },
  { anchors = { "xoxb-", "xoxp-", "xoxo-", "xoxa-", "xoxr-", "xoxs-" }, pat = "^xox[bpars]%-[%w%-]+()",
    min = 15, word = true },
  { anchors = { "AIza" }, pat = "^AIza[%w_%-]+()", min = 39, word = true },
  { anchors = { "glpat-" }, pat = "^glpat%-[%w_%-]+()", min = 26, word = true },
  { anchors = { "bearer" }, lower = true, word = true, min = 8, ok = has_digit_and_letter,
    pat = "^[Bb][Ee][Aa][Rr][Ee][Rr]%s+()[%w%-%._~%+/]+=*()" },
  { anchors = { "authorization" }, lower = true, word = true, min = 8,
    pat = "^[Aa]uthorization[\"']?%s*[:=]%s*[\"']?%a+%s+()[^%s\"']+()" },
}

-- Lower-case pieces of every secret name (see WORDS and SUFFIXES): where one
-- occurs, the name around it is read and checked.
local NAME_WORDS = { "key", "token", "secret", "pass", "pwd", "cred", "auth" }

-- the bytes of a name: letters, digits, _ - .
local NAME_BYTE = {}
for c = 0, 255 do
  if string.char(c):find("[%w_%-%.]") then NAME_BYTE[c] = true end
end

local function after_word(s, a)
  return a > 1 and s:find("^[%w]", a - 1) ~= nil
end

local function find_formats(s, lower, spans)
  for _, f in ipairs(FORMATS) do
    local text = f.lower and lower or s
    for _, anchor in ipairs(f.anchors) do
      local init = 1
      while true do
        local a = text:find(anchor, init, true)
        if not a then break end
        init = a + 1
        if not (f.word and after_word(s, a)) then
          local p1, p2 = select(3, s:find(f.pat, a))
          if p1 then
            if not p2 then p1, p2 = a, p1 end
            local v = s:sub(p1, p2 - 1)
            if #v >= f.min and (not f.ok or f.ok(v)) then
              spans[#spans + 1] = { p1, p2 - 1 }
              init = p2
            end
          end
        end
      end
    end
  end
end

-- `--token=X`, `--password X` (the option's name is secret), `API_KEY=X`,
-- `password: X`, `"api_key": "X"` (the name before = or : is secret).
local function find_named(s, lower, spans)
  for _, word in ipairs(NAME_WORDS) do
    local init = 1
    while true do
      local w = lower:find(word, init, true)
      if not w then break end
      local first = w
      while first > 1 and first > w - 64 and NAME_BYTE[s:byte(first - 1)] do first = first - 1 end
      local last = select(2, s:find("^[%w_%-%.]*", w))
      init = last + 1
      local name = s:sub(first, last)
      local dashes = name:match("^%-*")
      if #dashes > 0 and #dashes <= 2 and not after_word(s, first) then
        local opt = name:sub(#dashes + 1)
        local p1, p2 = select(3, s:find("^[= ]+[\"']?()[^%s\"']+()", last + 1))
        if p1 and p2 - p1 >= MIN_OPTION and s:byte(p1) ~= 45 and M.is_secret_name(opt) then
          spans[#spans + 1] = { p1, p2 - 1 }
        end
      elseif #dashes == 0 then
        local p1, p2 = select(3, s:find("^[\"']?%s*[=:]%s*[\"']?()[^%s\"',;}%]]+()", last + 1))
        if p1 and p2 - p1 >= MIN_VALUE and M.is_secret_name(name) then
          local v = s:sub(p1, p2 - 1)
          if not v:find("^[%u%d_]+$") and not v:find("^[%d.]+$") then
            spans[#spans + 1] = { p1, p2 - 1 }
          end
        end
      end
    end
  end
end

local function find_pem(s, spans)
  local init = 1
  while true do
    local b, e = s:find("-----BEGIN ", init, true)
    if not b then return end
    init = e + 1
    local _, head = s:find("^[%u ]*PRIVATE KEY%-%-%-%-%-", e + 1)
    if head then
      local stop = s:find("-----END", head + 1, true)
      if stop and stop - head > MAX_PEM then stop = nil end
      local last = stop and stop - 1 or math.min(#s, head + MAX_PEM)
      if last > head then spans[#spans + 1] = { head + 1, last } end
      init = last + 1
    end
  end
end

local function find_spans(s)
  local spans = {}
  for _, v in ipairs(known_values()) do
    local init = 1
    while true do
      local b, e = s:find(v, init, true)
      if not b then break end
      spans[#spans + 1] = { b, e }
      init = e + 1
    end
  end
  local lower = s:lower()
  find_formats(s, lower, spans)
  find_named(s, lower, spans)
  find_pem(s, spans)
  if #spans < 2 then return spans end
  table.sort(spans, function(a, b) return a[1] < b[1] end)
  local merged = { spans[1] }
  for i = 2, #spans do
    local last, sp = merged[#merged], spans[i]
    if sp[1] <= last[2] + 1 then
      if sp[2] > last[2] then last[2] = sp[2] end
    else
      merged[#merged + 1] = sp
    end
  end
  return merged
end

-- s with the spans (sorted, disjoint) that lie within 1..limit replaced.
local function apply(s, spans, limit)
  local out, pos = {}, 1
  for _, sp in ipairs(spans) do
    if sp[2] > limit then break end
    out[#out + 1] = s:sub(pos, sp[1] - 1)
    out[#out + 1] = M.PLACEHOLDER
    pos = sp[2] + 1
  end
  out[#out + 1] = s:sub(pos, limit)
  return table.concat(out)
end

--------------------------------------------------------------------------------
-- The API

-- No text shorter than this holds a secret (a known value: 8 bytes or
-- more; the shortest option, `-pass=XXXX`: 10).
local SHORTEST = 8
-- The same texts come back again and again (snapshot ids, commands, a
-- check's output in the log, the next prompt and the decision's state):
-- results are kept for up to TEXT_CACHE texts of TEXT_BYTES in all.
local TEXT_CACHE, TEXT_BYTES = 512, 1024 * 1024

--- s with every secret replaced by "[redacted]".
---@param s string
---@return string
function M.text(s)
  if type(s) ~= "string" or #s < SHORTEST then return s end
  local done = text_cache[s]
  if done then return done end
  local spans = find_spans(s)
  if #spans > 0 then done = apply(s, spans, #s) else done = s end
  if #s <= TEXT_BYTES then
    if text_count >= TEXT_CACHE or text_bytes + #s > TEXT_BYTES then text_cache, text_count, text_bytes = {}, 0, 0 end
    text_cache[s], text_count, text_bytes = done, text_count + 1, text_bytes + #s
  end
  return done
end

--- A copy of an argument list with secrets redacted: in each element (as
--- `text`), and the element after a secret-named option (`--password X`).
---@param argv string[]
---@return string[]
function M.argv(argv)
  local out = {}
  for i, a in ipairs(argv) do
    local prev = argv[i - 1]
    local opt = type(prev) == "string" and prev:match("^%-%-?([%a][%w_%-]*)$")
    if opt and M.is_secret_name(opt) and type(a) == "string" and a:sub(1, 1) ~= "-" then
      out[i] = M.PLACEHOLDER
    else
      out[i] = type(a) == "string" and M.text(a) or a
    end
  end
  return out
end

--- Redacts a file in place, reading it in chunks (memory stays bounded
--- whatever its size; a secret across two chunks is still found). The file
--- is rewritten (through a temporary file renamed over it) only when a
--- secret was found. Returns how many were found, or nil and an error.
---@param path string
---@return integer|nil count, string? err
function M.file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local tmp = path .. ".redacting"
  local out            -- opened at the first secret
  local consumed = 0   -- bytes of the file before buf
  local found = 0
  local buf = ""

  local function open_out()
    local o, oerr = io.open(tmp, "wb")
    if not o then return nil, oerr end
    -- what came before the first secret is copied as it is
    local src = assert(io.open(path, "rb"))
    local left = consumed
    while left > 0 do
      local part = src:read(math.min(left, CHUNK))
      if not part then break end
      o:write(part)
      left = left - #part
    end
    src:close()
    return o
  end

  local function emit(limit, spans)
    local n = 0
    for _, sp in ipairs(spans) do if sp[2] <= limit then n = n + 1 end end
    if n > 0 and not out then
      local o, oerr = open_out()
      if not o then return nil, oerr end
      out = o
    end
    found = found + n
    if out then out:write(n > 0 and apply(buf, spans, limit) or buf:sub(1, limit)) end
    consumed = consumed + limit
    buf = buf:sub(limit + 1)
    return true
  end

  while true do
    local data = f:read(CHUNK)
    if data then buf = buf .. data end
    if not data then
      local ok, eerr = emit(#buf, find_spans(buf))
      if not ok then f:close(); return nil, eerr end
      break
    end
    if #buf > KEEP then
      local spans = find_spans(buf)
      local cut = #buf - KEEP
      for _, sp in ipairs(spans) do   -- a secret across the cut waits for the next round
        if sp[1] <= cut and sp[2] > cut then
          -- no secret is this long: redact up to the cut so buf stays bounded
          if sp[2] - sp[1] >= KEEP then sp[2] = cut else cut = sp[1] - 1 end
          break
        end
      end
      local ok, eerr = emit(cut, spans)
      if not ok then f:close(); return nil, eerr end
    end
  end
  f:close()
  if not out then return 0 end
  local ok, cerr = out:close()
  if not ok then os.remove(tmp); return nil, cerr end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then os.remove(tmp); return nil, rerr end
  return found
end

return M
