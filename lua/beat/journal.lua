--- beat.journal: the record of a run on disk, `.beat/runs/<id>/`.
---
---   journal.jsonl  one JSON object per event, fsync'd before the call returns
---                  (an iteration's progress records with its decision) — the
---                  source of truth for `beat show` and reports
---   results.tsv    one row per iteration, for people
---   iter-N/        agent.log, eval.log (written by the strategies)
---
--- Secrets never reach the journal or results.tsv: every text goes through
--- beat.redact (secret values, key formats, `--token=X` arguments), the
--- string value of a field named like a credential (api_key, password) and
--- every value of an `env` table become "[redacted]". Field names that only
--- contain such a word (tokens, author) are kept as they are.
local fs = require "beat.fs"
local json = require "cjson"
local redact = require "beat.redact"

local M = {}

local TSV_COLUMNS = { "iteration", "snapshot", "score", "status", "delta", "cost_usd",
  "duration_s", "summary" }

-- Valid UTF-8: invalid bytes (binary output, a character cut in half)
-- become U+FFFD, so every line of the journal is valid JSON text.
local function utf8_clean(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    if pcall(utf8.codepoint, s, i) then
      local c = s:byte(i)
      local size = c < 0x80 and 1 or c < 0xE0 and 2 or c < 0xF0 and 3 or 4
      out[#out + 1] = s:sub(i, i + size - 1)
      i = i + size
    else
      out[#out + 1] = "\u{FFFD}"
      i = i + 1
    end
  end
  return table.concat(out)
end
M.utf8_clean = utf8_clean

local function is_agent(v)
  local agent = package.loaded["beat.agent"]   -- no agent without beat.agent loaded
  return agent ~= nil and getmetatable(v) == agent.Agent and type(v.describe) == "function"
end

local function is_string_list(v)
  local n = #v
  if n == 0 then return false end
  local count = 0
  for k, x in pairs(v) do
    count = count + 1
    if math.type(k) ~= "integer" or type(x) ~= "string" then return false end
  end
  return count == n
end

--- A copy of v safe to write: functions become "<function>", an agent is
--- recorded by its `describe()`, secrets are redacted (see the module
--- comment), cycles are cut, text is made valid UTF-8.
---@param v any
---@return any
function M.sanitize(v, seen, in_env)
  local t = type(v)
  if t == "string" then
    if in_env then return "[redacted]" end
    return redact.text(utf8_clean(v))
  end
  if t == "function" then return "<function>" end
  if t == "userdata" or t == "thread" then return "<" .. t .. ">" end
  if t == "number" and (v ~= v or v == math.huge or v == -math.huge) then return tostring(v) end
  if t ~= "table" then
    if in_env then return "[redacted]" end
    return v
  end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  if is_agent(v) then
    local ok, d = pcall(v.describe, v)
    if ok and type(d) == "table" then v = d end
  end
  if not in_env and is_string_list(v) then v = redact.argv(v) end
  seen[v] = true
  local out = {}
  local mt = getmetatable(v)
  if mt and mt.__name then out.type = mt.__name end
  local n = #v
  for k, x in pairs(v) do
    -- list indexes stay numbers; other keys ({[1e6] = "diverged"}) become strings (JSON keys)
    local key = math.type(k) == "integer" and k >= 1 and k <= n and k or tostring(k)
    if not in_env and k == "env" and type(x) == "table" then
      -- an environment given to a command: its secret-named values are
      -- redacted wherever they show up later (a log echoing them)
      for name, value in pairs(x) do
        if redact.is_secret_name(name) then redact.add(value) end
      end
    end
    if type(k) == "string" and type(x) == "string" and x ~= "" and redact.is_secret_name(k) then
      out[key] = "[redacted]"
    else
      out[key] = M.sanitize(x, seen, in_env or k == "env")
    end
  end
  seen[v] = nil
  return out
end

local B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

--- A short id that sorts by time: 8 base-36 digits of milliseconds since
--- the epoch (fixed width until 2059).
---@param now number seconds since the epoch
function M.new_id(now)
  local n = math.floor(now * 1000)
  local digits = {}
  for i = 8, 1, -1 do
    local d = n % 36
    digits[i] = B36:sub(d + 1, d + 1)
    n = n // 36
  end
  return table.concat(digits)
end

---@class beat.Journal
---@field id string
---@field dir string
local Journal = {}
Journal.__index = Journal

local function tsv_field(v)
  if v == nil then return "" end
  if type(v) == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return ("%.6g"):format(v)
  end
  return (redact.text(utf8_clean(tostring(v))):gsub("[\t\r\n]+", " "))
end

---@class beat.JournalCreateOptions
---@field id? string use this id (reserved earlier, e.g. by `beat loop --detach`): its directory may exist already, empty of records
---@field reserve? fun(id: string): (boolean|nil, string?) claims the id wherever else ids must be unique (the repository's refs/beat/, the per-user index), atomically: true (and maybe a warning, kept in journal.reserve_error) when it is this run's now, false when it is taken (the next id is tried), nil and why when it cannot be claimed

--- Creates a new run directory under `root` (usually `<work tree>/.beat/runs`)
--- with an id no other run has — free under `root` (the directory is made
--- with a must-not-exist mkdir) and claimed by `opts.reserve` — an empty
--- journal and the header of results.tsv.
---@param root string
---@param now number
---@param opts? beat.JournalCreateOptions
---@return beat.Journal|nil, string?
function M.create(root, now, opts)
  local ok, err = fs.mkdir_p(root)
  if not ok then return nil, err end
  local t = now
  for _ = 1, 1000 do
    local id = opts and opts.id or M.new_id(t)
    local dir = root .. "/" .. id
    local made, merr, code = fs.mkdir(dir)
    if not made and opts and opts.id then
      -- the reserved directory: fine while nothing was journaled in it
      if code ~= fs.errno.EEXIST then return nil, merr end
      local st = fs.stat(dir .. "/journal.jsonl")
      if st and st.size > 0 then return nil, ("run %s exists already in %s"):format(id, root) end
      made = true
    end
    if made then
      local taken, why = true, nil
      if opts and opts.reserve then taken, why = opts.reserve(id) end
      if taken then
        local j = setmetatable({ id = id, dir = dir, path = dir .. "/journal.jsonl",
                                 tsv = dir .. "/results.tsv", reserve_error = why }, Journal)
        -- not fsync'd: results.tsv is a view, and the run's first record
        -- (fsync'd) puts the journal on disk
        ok, err = fs.write(j.tsv, table.concat(TSV_COLUMNS, "\t") .. "\n", false)
        if ok then ok, err = fs.append(j.path, "") end
        if not ok then return nil, err end
        return j
      end
      if not opts.id then fs.rm_rf(dir) end
      if taken == nil then return nil, why end
      if opts.id then return nil, ("run id %s is taken in this repository"):format(id) end
    elseif code ~= fs.errno.EEXIST then
      return nil, merr
    end
    t = t + 0.001
  end
  return nil, "cannot find a free run id under " .. root
end

--- Opens an existing run directory for reading or appending.
---@param dir string
---@return beat.Journal|nil, string?
function M.open(dir)
  if not fs.exists(dir .. "/journal.jsonl") then
    return nil, ("no run journal in %s"):format(dir)
  end
  return setmetatable({ id = dir:match("([^/]+)/*$"), dir = dir, path = dir .. "/journal.jsonl",
                        tsv = dir .. "/results.tsv" }, Journal)
end

-- The run's own copy of what it wrote to journal.jsonl and results.tsv
-- (file → {file, size, absent, stamp}), taken from the files at first use,
-- so they can be written back when something deletes or changes them. The
-- copy is an unnamed file in memory outside the Lua heap (fs.memfile): a
-- run's heap does not grow with its journal, nothing outside beat can reach
-- the copy, and no disk is touched (an io.tmpfile on ext4 cost two inode
-- allocations at start and, at exit, freeing its blocks: up to 13 ms).
-- `stamp` is the file's fs.stamp after beat's last write to it (marked: a
-- write by anything else changes it, whatever its size or timing).
local function copy(self)
  if self.copy then return self.copy end
  self.copy, self.tampered = {}, {}
  for _, which in ipairs { "path", "tsv" } do
    local data = fs.read(self[which])
    local f, err = fs.memfile()
    if not f then error(("cannot keep a copy of %s: %s"):format(self[which], tostring(err)), 0) end
    if data then f:write(data) end
    self.copy[which] = { file = f, size = data and #data or 0, absent = data == nil,
                         stamp = data and fs.stamp(self[which], true) or nil }
  end
  return self.copy
end

-- The whole copy of one file, as beat wrote it.
local function copied(m)
  m.file:seek("set")
  local data = m.file:read("a")
  m.file:seek("end")
  return data
end

-- The finding of a file moved aside, followed by where it went.
local MOVED = "a file in its place was moved to "

-- Makes room for the run directory when something that is not a directory
-- took the place of it or of a parent under the work tree (`.beat` made a
-- file): moves the intruder aside, never deletes it. Returns what it moved.
local function make_dir(dir)
  if fs.mkdir_p(dir) then return {} end
  local moved = {}
  local at = dir
  local parents = {}
  while at:find("/", 2, true) do
    parents[#parents + 1] = at
    if at:match("/%.beat$") then break end
    at = at:match("^(.*)/[^/]*$")
  end
  for i = #parents, 1, -1 do
    local st = fs.stat(parents[i])
    if st and st.type ~= "directory" then
      -- a name nothing has: rename(2) would replace a file moved aside before
      local ms = math.floor(require("beat._runtime").now() * 1000)
      local aside = ("%s.tampered-%d"):format(parents[i], ms)
      while fs.exists(aside) do
        ms = ms + 1
        aside = ("%s.tampered-%d"):format(parents[i], ms)
      end
      if os.rename(parents[i], aside) then moved[#moved + 1] = aside end
      break
    end
  end
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, err end
  return moved
end

--- Checks that the run directory, journal.jsonl and results.tsv still hold
--- what this journal wrote: each file's stamp (device, inode, size, mtime —
--- see fs.stamp) is what beat's own last write left, so no file is read.
--- Whatever was deleted or changed — an agent ran `rm -rf .beat`, a command
--- edited the journal — is written back from the run's own copy, a
--- `tampered` record says what was found, and the finding is added to
--- `journal.tampered`. Raises when the files cannot be written back.
---@return string[]|nil found what was wrong, nil when nothing
function Journal:check()
  local c = copy(self)
  if fs.stamp(self.path) == c.path.stamp and fs.stamp(self.tsv) == c.tsv.stamp then return nil end
  local found = {}
  local dir_gone = not fs.is_dir(self.dir)
  if dir_gone then
    found[1] = "the run directory was deleted (earlier iterations' logs are lost)"
    local moved, err = make_dir(self.dir)
    if not moved then error(("cannot recreate the run directory %s: %s"):format(self.dir, tostring(err)), 0) end
    for _, m in ipairs(moved) do found[#found + 1] = MOVED .. m end
  end
  for _, which in ipairs { "path", "tsv" } do
    local m = c[which]
    local st = fs.stat(self[which])
    local name = self[which]:match("[^/]+$")
    local bad
    if not st then
      bad = not m.absent and (dir_gone and "" or name .. " was deleted")
    elseif fs.stamp(self[which]) ~= m.stamp then
      bad = name .. " was changed"
    end
    if bad then
      if bad ~= "" then found[#found + 1] = bad end
      local ok, err = fs.write(self[which], copied(m))
      if ok then ok, err = fs.stamp(self[which], true) end
      if not ok then error(("cannot write back %s: %s"):format(self[which], tostring(err)), 0) end
      m.stamp = ok
    end
  end
  if #found == 0 then return nil end
  local line = json.encode { event = "tampered", time = require("beat._runtime").now(), found = found,
    note = "written back from the run's own copy" }
  self:_append("path", line .. "\n")
  for _, f in ipairs(found) do self.tampered[#self.tampered + 1] = f end
  return found
end

--- What the checks of this run found (`journal.tampered`), for a summary:
--- every kind of finding once, in the order first found, with how many
--- times when more than once; the files moved aside are one kind, with
--- where they went (the first two and the last when more than three). No
--- kind is left out however many there are: they are few (the directory,
--- a file in its place, each file deleted or changed), and which ones a
--- run sees depends on when its checks ran — a check also runs while an
--- agent runs (the `process` record of each command beat starts), so it
--- can see an `rm -rf .beat` half done. nil when nothing was found.
---@return string[]|nil
function Journal:tampering()
  if not self.tampered or #self.tampered == 0 then return nil end
  local kinds, count, moved = {}, {}, {}
  for _, f in ipairs(self.tampered) do
    local to = f:sub(1, #MOVED) == MOVED and f:sub(#MOVED + 1)
    local kind = to and MOVED or f
    if not count[kind] then kinds[#kinds + 1], count[kind] = kind, 0 end
    count[kind] = count[kind] + 1
    if to then moved[#moved + 1] = to end
  end
  local out = {}
  for i, kind in ipairs(kinds) do
    local text = kind
    if kind == MOVED then
      text = MOVED .. (#moved <= 3 and table.concat(moved, ", ")
        or ("%s, %s, ..., %s"):format(moved[1], moved[2], moved[#moved]))
    end
    out[i] = count[kind] > 1 and ("%s (%d times)"):format(text, count[kind]) or text
  end
  return out
end

-- Appends data to one of the run's files (which: "path" or "tsv") and to
-- the run's copy of it; on disk when this returns (durable: nil or true),
-- soon after (durable = "later": see M.BEHIND) or when the kernel writes
-- it back (false). The stamp after the
-- write is the copy's when the file grew by exactly data (else something
-- else wrote meanwhile, and the next check writes the copy back).
function Journal:_append(which, data, durable)
  local m = copy(self)[which]
  local stamp, size = fs.append(self[which], data, durable == nil or durable, true)
  if not stamp then error(("cannot write %s: %s"):format(self[which], tostring(size)), 0) end
  local ok, werr = m.file:write(data)
  if not ok then error(("cannot keep a copy of %s: %s"):format(self[which], tostring(werr)), 0) end
  m.absent = false
  m.stamp = size == m.size + #data and stamp or nil
  m.size = m.size + #data
end

-- Records of an iteration's progress, appended without an fsync of their
-- own: the fsync of the iteration's decision record (every other event is
-- fsync'd unless opts.sync is false) puts them on disk with it, so an
-- iteration costs one fsync, and once its decision is on disk a crash loses
-- nothing decided.
M.PROGRESS = { agent = true, check = true, eval = true, guard = true, rate_limited = true }

-- Records whose fsync runs behind beat (fs.append's "later"): the decision
-- is written at once and the disk takes it, ~0.4 ms, while the next
-- iteration gets ready and its agent starts, instead of before. The next
-- fsync'd record (the next decision, run_end), fs.settle and beat's exit
-- wait for it, and one that failed stops the run there. A machine crash in
-- that moment loses the decision, as one a moment before it would: the
-- resumed run takes up that iteration again (what its agent had changed is
-- set aside as a pre-restore snapshot); nothing decided before is lost.
M.BEHIND = { decision = true }

--- Appends one event and returns the record as written (sanitized, with
--- `event` and `time`); it is on disk when this returns, unless it is a
--- decision (M.BEHIND: on disk a moment later), a
--- progress record (M.PROGRESS: on disk with the next record that is) or
--- `opts.sync` is false (cheap records such as phase changes: written, not
--- fsync'd — they survive beat being killed, not the machine crashing). A
--- deleted or changed run directory is put back first (see Journal:check),
--- unless `opts.repair` is false: for a record written while a command
--- runs (the `process` record of each command beat starts), which must not
--- race what the command does to .beat/ — putting files back in the middle
--- of an agent's `rm -rf .beat` makes the rm fail half done, and the check
--- after the command then finds whatever was half done, not what the agent
--- did. Such a record goes to journal.jsonl when beat's last write is still
--- there as it left it, else to the run's copy only, and the check after
--- the command writes it back with the rest.
---@param event string
---@param fields? table
---@param opts? {sync?: boolean, repair?: boolean}
---@return table record
function Journal:write(event, fields, opts)
  local rec = M.sanitize(fields or {})
  rec.event = event
  rec.time = require("beat._runtime").now()
  local line = json.encode(rec) .. "\n"
  local durable = not (M.PROGRESS[event] or (opts and opts.sync == false))
  if durable and M.BEHIND[event] then durable = "later" end
  if opts and opts.repair == false then
    local m = copy(self).path
    -- (the append fails when the directory went meanwhile)
    if fs.stamp(self.path) == m.stamp and pcall(self._append, self, "path", line, durable) then return rec end
    -- m.stamp stays that of beat's last write: the next check sees the change
    local ok, err = m.file:write(line)
    if not ok then error(("cannot keep a copy of %s: %s"):format(self.path, tostring(err)), 0) end
    m.absent, m.size = false, m.size + #line
    return rec
  end
  self:check()
  self:_append("path", line, durable)
  return rec
end

--- Appends a row to results.tsv: {iteration, snapshot, score, status, delta,
--- cost_usd, duration_s, summary}.
---@param row table
function Journal:row(row)
  local cells = {}
  for i, col in ipairs(TSV_COLUMNS) do cells[i] = tsv_field(row[col]) end
  self:check()
  -- not fsync'd: a view for people, the journal is the record
  self:_append("tsv", table.concat(cells, "\t") .. "\n", false)
end

--- The directory for iteration n's logs (created; the run directory is
--- put back first if it was deleted): iter-3, or iter-3.2 for candidate 2
--- of round 3 of a parallel run.
---@param n integer|string
function Journal:iter_dir(n)
  local dir = ("%s/iter-%s"):format(self.dir, math.tointeger(n) or n)
  self:check()
  local ok, _, code = fs.mkdir(dir)
  if not ok and code ~= fs.errno.EEXIST then fs.mkdir_p(dir) end -- one mkdir when it is there
  return dir
end

--- Makes a journal written by a process that died fit to be continued:
--- a torn last line (the process was killed in the middle of a write) is
--- cut off, and results.tsv is written anew from `rows` (the decisions the
--- journal holds), so a row written just before the death without its
--- decision record does not stay twice. Call it before any write. Returns
--- the torn text that was cut (nil when none).
---@param rows table[] rows for results.tsv, as Journal:row takes them
---@return string|nil torn
function Journal:repair(rows)
  assert(self.copy == nil, "journal:repair must come before any write")
  local data = fs.read(self.path) or ""
  local torn
  if data ~= "" and data:sub(-1) ~= "\n" then
    local keep = data:match("^(.*\n)") or ""
    torn = data:sub(#keep + 1)
    local ok, err = fs.write(self.path, keep)
    if not ok then error(("cannot repair %s: %s"):format(self.path, tostring(err)), 0) end
  end
  local lines = { table.concat(TSV_COLUMNS, "\t") }
  for _, row in ipairs(rows) do
    local cells = {}
    for i, col in ipairs(TSV_COLUMNS) do cells[i] = tsv_field(row[col]) end
    lines[#lines + 1] = table.concat(cells, "\t")
  end
  local ok, err = fs.write(self.tsv, table.concat(lines, "\n") .. "\n")
  if not ok then error(("cannot rewrite %s: %s"):format(self.tsv, tostring(err)), 0) end
  return torn
end

--- Every record, in order. A torn last line (beat killed mid-write) is
--- skipped and reported as the second result.
---@return table[] records, string? warning
function Journal:records()
  local data = fs.read(self.path) or ""
  local out, warning = {}, nil
  local n = 0
  for line in data:gmatch("[^\n]+") do
    n = n + 1
    local ok, rec = pcall(json.decode, line)
    if ok and type(rec) == "table" then
      out[#out + 1] = rec
    else
      warning = ("line %d of %s is not valid JSON"):format(n, self.path)
    end
  end
  return out, warning
end

--- Lists runs under root, oldest first: {id, dir}.
---@param root string
function M.list(root)
  local runs = {}
  for _, name in ipairs(fs.list(root) or {}) do
    if fs.exists(root .. "/" .. name .. "/journal.jsonl") then
      runs[#runs + 1] = { id = name, dir = root .. "/" .. name }
    end
  end
  table.sort(runs, function(a, b) return a.id < b.id end)
  return runs
end

return M
