--- `beat runs`: list the runs of a work tree; and the run lookup the other
--- commands share (`beat show` is in cli/show.lua, `beat restore` in
--- cli/restore.lua, `beat clean` in cli/clean.lua, `beat report` in
--- cli/report.lua). Runs live in <work tree>/.beat/runs/<id>/.
local M = {}

local function work_tree(cli, dir)
  local beat = require "beat"
  local repo, err = beat.git.open(dir or ".")
  if repo then return repo, repo:path() end
  if dir and not beat.fs.is_dir(dir) then cli.usage_error("working directory %s does not exist", dir) end
  return nil, beat.fs.realpath(dir or "."), err
end


--- Parses args by spec (flag → "bool" | "value" | "optional" (a value when
--- the next argument is not a flag)); returns the positional arguments and
--- the flags' values (by their long name). Raises usage errors naming cmd.
---@param cli table
---@param cmd string
---@param args string[]
---@param spec table<string, string|table>
function M.parse_flags(cli, cmd, args, spec)
  local pos, o = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    flag = flag or a
    local kind = spec[flag]
    local name = type(kind) == "table" and kind[2] or flag:gsub("^%-+", "")
    kind = type(kind) == "table" and kind[1] or kind
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif kind == "bool" then
      if inline then cli.usage_error("%s: %s takes no value", cmd, flag) end
      o[name] = true
      i = i + 1
    elseif kind == "value" then
      local v = inline
      if v == nil then
        v = args[i + 1]
        if v == nil then cli.usage_error("%s: %s needs a value", cmd, flag) end
        i = i + 1
      end
      if not v:match("%S") then cli.usage_error("%s: %s needs a value, got an empty string", cmd, flag) end
      o[name] = v
      i = i + 1
    elseif kind == "optional" then
      local v = inline
      if v == nil and args[i + 1] and args[i + 1]:sub(1, 1) ~= "-" then
        v = args[i + 1]
        i = i + 1
      end
      o[name] = v or true
      i = i + 1
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      cli.usage_error("%s: unknown option '%s' (see 'beat %s --help')", cmd, a, cmd)
    else
      pos[#pos + 1] = a
      i = i + 1
    end
  end
  return pos, o
end

local B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

--- The start time a run id encodes (seconds since the epoch), or nil.
---@param id string
---@return number|nil
function M.id_time(id)
  if type(id) ~= "string" or not id:match("^[0-9a-z]+$") or #id ~= 8 then return nil end
  local n = 0
  for i = 1, #id do n = n * 36 + (B36:find(id:sub(i, i), 1, true) - 1) end
  return n / 1000
end

-- Runs known to the work tree: journals in .beat/runs, plus runs whose
-- snapshots are still in git when the journal is gone (an agent or a
-- `git clean -x` removed .beat/). refs/beat/ is shared by every linked work
-- tree of the repository: a run whose base snapshot says it was taken in
-- another work tree is marked `other = <that path>`.
local function known_runs(root, repo)
  local journal = require "beat.journal"
  local runs = journal.list(root .. "/.beat/runs")
  if repo then
    local seen = {}
    for _, r in ipairs(runs) do seen[r.id] = true end
    -- the run ids under refs/beat/ (reading no ref), then the refs of those without a journal
    for _, id in ipairs(repo:ref_children("refs/beat/")) do
      if not seen[id] and #(repo:refs(("refs/beat/%s/"):format(id)) or {}) > 0 then
        seen[id] = true
        local from = repo:worktree_of(("refs/beat/%s/base"):format(id))
        runs[#runs + 1] = { id = id, dir = root .. "/.beat/runs/" .. id, journal_gone = true,
          other = from and from ~= root and from or nil }
      end
    end
    table.sort(runs, function(a, b) return a.id < b.id end)
  end
  return runs
end

local function find_run(cli, root, id, repo)
  local runs = known_runs(root, repo)
  if #runs == 0 then cli.usage_error("no runs in %s/.beat/runs", root) end
  if id == nil or id == "last" or id == "latest" then
    for i = #runs, 1, -1 do
      if not runs[i].other then return runs[i] end
    end
    cli.usage_error("no runs in %s/.beat/runs", root)
  end
  local found
  for _, r in ipairs(runs) do
    if r.id:sub(1, #id) == id then
      if found then cli.usage_error("run id '%s' is ambiguous", id) end
      found = r
    end
  end
  if not found then cli.usage_error("no run '%s' in %s/.beat/runs (see 'beat runs')", id, root) end
  return found
end

--- Whether process pid is alive (and not a zombie).
---@param pid any
---@return boolean
function M.pid_alive(pid)
  pid = math.tointeger(tonumber(pid))
  if not pid or pid <= 0 then return false end
  local stat = require("beat.fs").read(("/proc/%d/stat"):format(pid))
  if not stat then return false end
  return stat:match("%) (%a)") ~= "Z"
end

--- What the journal of run r says: {id, dir, journal_gone, start, last,
--- status ("passed", ..., "running" or "paused" while its process lives,
--- "crashed" when it died without an end record, "journal gone"), reason,
--- iterations (the run's count: iterations that reached a decision),
--- unfinished_iteration, started, ended, pid, records, warning}.
---@param r {id: string, dir: string, journal_gone?: boolean}
---@return table
function M.info(r)
  local journal = require "beat.journal"
  local info = { id = r.id, dir = r.dir, journal_gone = r.journal_gone, other = r.other, iterations = 0,
    started = M.id_time(r.id) }
  local j = not r.journal_gone and journal.open(r.dir)
  if not j then
    info.journal_gone, info.status = true, "journal gone"
    return info
  end
  local recs, warning = j:records()
  info.journal, info.records, info.warning = j.path, recs, warning
  local start, last = recs[1] or {}, recs[#recs] or {}
  info.start, info.last = start, last
  info.strategy, info.pid = start.strategy, start.pid
  info.started = tonumber(start.time) or info.started
  local decided, count, last_phase = {}, 0, nil
  for _, rec in ipairs(recs) do
    local n = require("beat.loop").round_of(rec.iteration)   -- a parallel run's "3.2" counts for round 3
    if rec.event == "decision" and n and n > 0 and not decided[n] then
      decided[n], count = true, count + 1
    elseif rec.event == "phase" and n then
      last_phase = n
    end
  end
  -- running, paused, crashed (its process gone without an end record), or how it ended
  local st = require("beat.runs.status").inspect(j.dir)
  local ended
  for i = #recs, 1, -1 do
    local e = recs[i].event
    if e == "run_end" or e == "interrupted" then ended = recs[i] break end
    if e == "resume" then break end
  end
  if ended and not st.alive then
    info.status, info.reason, info.ended = tostring(ended.status), ended.reason, tonumber(ended.time)
    info.iterations = math.tointeger(ended.iterations) or count
    info.unfinished_iteration = math.tointeger(ended.unfinished_iteration)
  else
    info.iterations = count
    info.ended = tonumber(last.time)
    info.status, info.reason = st.state, st.reason
    if st.pid then info.pid = st.pid end
    if last_phase and last_phase > 0 and not decided[last_phase] then info.unfinished_iteration = last_phase end
  end
  return info
end

--- A JSON document as beat prints them (`/` not escaped).
function M.json(v)
  return (require("cjson").encode(v):gsub("\\/", "/"))
end

-- "3" or "3.2" (candidate 2 of round 3 of a parallel run): an iteration
-- as its logs and snapshots are named, or nil.
function M.iteration_name(s)
  if type(s) ~= "string" then return nil end
  return s:match("^%d+$") or s:match("^%d+%.%d+$")
end

function M.register(cli)
  cli.command("runs", {
    usage = "beat runs [--json] [-w DIR]",
    help = [[
Lists the runs of the work tree, oldest first: id, start time, strategy,
status (passed, completed, stopped, failed, cancelled, interrupted; running
or paused while its process lives; crashed when it died without an end
record), the number
of iterations, and the reason it stopped. Runs whose .beat/ directory was
deleted are listed from their snapshots in refs/beat/.

  --json   one JSON document {"version": 1, "runs": [...]} (docs/json.md)
  -w DIR   another work tree]],
    run = function(args)
      local rest, o = M.parse_flags(cli, "runs", args, { ["--json"] = "bool", ["-w"] = { "value", "dir" },
        ["--working-directory"] = { "value", "dir" } })
      if rest[1] then cli.usage_error("runs: unexpected argument '%s'", rest[1]) end
      local repo, root = work_tree(cli, o.dir)
      local runs = known_runs(root, repo)
      local list = {}
      for _, r in ipairs(runs) do list[#list + 1] = M.info(r) end
      if o.json then
        local out = {}
        for i, x in ipairs(list) do
          out[i] = { id = x.id, dir = x.dir, strategy = x.strategy, status = x.status, reason = x.reason,
            iterations = x.iterations, unfinished_iteration = x.unfinished_iteration, started = x.started,
            ended = x.ended, pid = x.pid, running = x.status == "running", journal_gone = x.journal_gone or false,
            other_work_tree = x.other }
        end
        local doc = M.json { version = 1, root = root, runs = out }
        if #out == 0 then doc = doc:gsub('"runs":{}', '"runs":[]') end
        io.write(doc, "\n")
        return 0
      end
      if #list == 0 then print("no runs yet") return 0 end
      for _, x in ipairs(list) do
        if x.other then
          print(("%s  (a run of the work tree %s)"):format(x.id, x.other))
        elseif x.journal_gone then
          print(("%s  (journal gone; snapshots kept in refs/beat/%s/)"):format(x.id, x.id))
        else
          print(("%s  %s  %-9s  %-11s %3d iter  %s"):format(x.id,
            os.date("%Y-%m-%d %H:%M", math.floor(x.started or 0)), x.strategy or "?", x.status,
            x.iterations, x.reason and tostring(x.reason):match("^[^\n]*")
              or (x.status == "running" and ("pid " .. tostring(x.pid))) or ""))
        end
      end
      return 0
    end,
  })

end

-- for `beat show`, `beat restore`, `beat report` and `beat clean`: the same work tree and run lookup
M.work_tree, M.find_run, M.known_runs = work_tree, find_run, known_runs

return M
