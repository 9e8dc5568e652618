--- `beat loop list|status|pause|resume|cancel|attach` and `beat logs`: runs
--- as managed objects, from any directory (beat.runs.control does the work;
--- this is the command line and the printing).
local M = {}

local function parse(cli, sub, args, spec)
  local o, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    flag = flag or a
    local kind = spec[flag]
    if a == "--" then
      for j = i + 1, #args do rest[#rest + 1] = args[j] end
      break
    elseif kind then
      local key = flag:gsub("^%-+", ""):gsub("%-", "_")
      if kind == "bool" then
        if inline then cli.usage_error("%s: %s takes no value", sub, flag) end
        o[key] = true
      else
        local v = inline
        if v == nil then
          i = i + 1
          v = args[i]
        end
        if v == nil or v == "" then cli.usage_error("%s: %s needs a value", sub, flag) end
        if kind == "int" then
          local n = math.tointeger(tonumber(v))
          if not n or n < 1 then cli.usage_error("%s: %s must be a positive integer, got '%s'", sub, flag, v) end
          v = n
        elseif type(kind) == "table" and not kind[v] then
          local names = {}
          for k in pairs(kind) do names[#names + 1] = k end
          table.sort(names)
          cli.usage_error("%s: %s must be one of %s, got '%s'", sub, flag, table.concat(names, ", "), v)
        end
        o[key] = v
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      cli.usage_error("%s: unknown option '%s' (see 'beat loop --help')", sub, a)
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return o, rest
end

local function one_id(cli, sub, rest, extra_ok)
  if not rest[1] then cli.usage_error("%s: missing the run id (see 'beat loop list')", sub) end
  if rest[2] and not extra_ok then cli.usage_error("%s: unexpected argument '%s'", sub, rest[2]) end
  return rest[1]
end

-- A control function's `nil, message, code` as the command's outcome.
local function check(cli, res, why, code)
  if res == nil then
    if code == 2 then cli.usage_error("%s", why) end
    io.stderr:write("beat: ", tostring(why), "\n")
    return nil
  end
  return res
end

local function fmt_time(t)
  return t and os.date("%Y-%m-%d %H:%M", math.floor(t)) or "?"
end

local function iteration_text(st)
  local max = st.max_iterations
  return ("%d/%s"):format(st.iteration, (max == nil and "?") or (max == 0 and "∞") or tostring(max))
end

local function best_text(st)
  if st.best_text and st.baseline_text then
    return ("%s (baseline %s)"):format(st.best_text, st.baseline_text)
  end
  return st.best_text or ""
end

local function json_out(doc)
  local journal = require "beat.journal"
  io.stdout:write(require("cjson").encode(journal.sanitize(doc)), "\n")
end

-- The status document for --json (what MCP's LoopStatus mirrors).
local function status_doc(st)
  local d = {}
  for k, v in pairs(st) do d[k] = v end
  d.version = 1
  if #st.decisions == 0 then d.decisions = setmetatable({}, require("cjson").array_mt) end
  return d
end

local STATES = {}
for _, s in ipairs(require("beat.runs.status").STATES) do STATES[s] = true end

local handlers = {}

function handlers.list(cli, args)
  local o, rest = parse(cli, "loop list", args, { ["--status"] = STATES, ["--all"] = "bool", ["--json"] = "bool",
    ["-w"] = "string", ["--working-directory"] = "string", ["--limit"] = "int" })
  if rest[1] then cli.usage_error("loop list: unexpected argument '%s'", rest[1]) end
  local dir = o.w or o.working_directory
  local root
  if dir then
    local beat = require "beat"
    if not beat.fs.is_dir(dir) then cli.usage_error("loop list: working directory %s does not exist", dir) end
    local repo = beat.git.open(dir)
    root = repo and repo:path() or beat.fs.realpath(dir)
  end
  local runs = require("beat.runs.control").list { status = o.status, all = o.all, root = root, limit = o.limit }
  if o.json then
    local docs = {}
    for i, st in ipairs(runs) do docs[i] = status_doc(st) end
    if #docs == 0 then docs = setmetatable({}, require("cjson").array_mt) end
    json_out { version = 1, runs = docs }
    return 0
  end
  if #runs == 0 then
    print(o.status and ("no %s runs"):format(o.status) or (o.all and "no runs yet" or "no runs in this work tree (--all: every work tree's)"))
    return 0
  end
  local rows = { { "ID", "STATE", "STRATEGY", "ITER", "PHASE", "STARTED", "BEST" } }
  if o.all then rows[1][#rows[1] + 1] = "WORK TREE" end
  for _, st in ipairs(runs) do
    local state = st.state .. (st.pause_requested and "*" or "")
    local row = { st.id, state, st.strategy or "?", iteration_text(st), st.alive and st.phase or "-",
      fmt_time(st.started), best_text(st) }
    if o.all then row[#row + 1] = st.root or "?" end
    rows[#rows + 1] = row
  end
  local widths = {}
  for _, row in ipairs(rows) do
    for i, c in ipairs(row) do widths[i] = math.max(widths[i] or 0, utf8.len(c) or #c) end
  end
  local pending = false
  for _, row in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(row) do
      cells[i] = i == #row and c or c .. (" "):rep(widths[i] - (utf8.len(c) or #c))
    end
    if row[2]:sub(-1) == "*" then pending = true end
    print((table.concat(cells, "  "):gsub("%s+$", "")))
  end
  if pending then print("* a pause is pending: the run pauses after this iteration's decision") end
  return 0
end

local function print_status(st)
  local duration = require "beat.duration"
  print(("run %s: %s in %s"):format(st.id, st.strategy or "?", st.root or "?"))
  local who = {}
  if st.alive and st.pid then who[#who + 1] = "pid " .. st.pid end
  if st.detached then who[#who + 1] = "detached" end
  if st.resumes > 0 then who[#who + 1] = ("resumed %d time%s"):format(st.resumes, st.resumes == 1 and "" or "s") end
  print(("state:      %s%s"):format(st.state, #who > 0 and (" (" .. table.concat(who, ", ") .. ")") or ""))
  if st.reason then print(("reason:     %s"):format(st.reason)) end
  if st.pause_requested then print("            a pause is pending: it pauses after this iteration's decision") end
  local it = ("iteration:  %s"):format(iteration_text(st))
  if st.alive and st.phase then
    it = it .. (", %s for %s"):format(st.phase, duration.format(math.max(0, require("beat").now() - (st.phase_since or 0))))
  end
  print(it)
  if st.best_text then print(("best:       %s"):format(best_text(st))) end
  if st.diff then
    print(("changes:    %s"):format(st.diff.files_changed == 0 and "none (the best is the base)"
      or ("%d file%s, +%d -%d (best vs base)"):format(st.diff.files_changed, st.diff.files_changed == 1 and "" or "s",
        st.diff.insertions, st.diff.deletions)))
  end
  print(("elapsed:    %s, agent cost $%.2f, started %s"):format(duration.format(st.elapsed), st.cost_usd, fmt_time(st.started)))
  if #st.decisions > 0 then
    print("decisions:")
    for _, d in ipairs(st.decisions) do
      local line = ("  iter %-3d %-8s %s%s"):format(d.iteration or 0, d.status or "?", d.score_text or "",
        d.summary and d.summary ~= "" and ("  — " .. d.summary) or "")
      print((line:gsub("%s+$", "")))
    end
  end
  if st.resumable then print(("continue it: beat loop resume %s"):format(st.id)) end
  if st.output then print(("output:     %s"):format(st.output)) end
  print(("journal:    %s"):format(st.journal))
  if st.warning then print("warning: " .. st.warning) end
end

function handlers.status(cli, args)
  local o, rest = parse(cli, "loop status", args, { ["--history"] = "bool", ["--history-limit"] = "int", ["--json"] = "bool" })
  local id = one_id(cli, "loop status", rest)
  local st = check(cli, require("beat.runs.control").status(id,
    { history = o.history or o.history_limit ~= nil, history_limit = o.history_limit, diff = true }))
  if not st then return 1 end
  if o.json then json_out(status_doc(st)) else print_status(st) end
  return 0
end

-- Waits until the run reaches one of `states` (or ends); returns its status.
local function wait_for(id, states, limit)
  local control = require "beat.runs.control"
  local beat = require "beat"
  local deadline = beat.clock() + (limit or math.huge)
  while true do
    local st = control.status(id)
    if not st or states[st.state] or st.final or not st.alive or beat.clock() > deadline then return st end
    beat.sleep(0.1)
  end
end

function handlers.pause(cli, args)
  local o, rest = parse(cli, "loop pause", args, { ["--force"] = "bool", ["--wait"] = "bool" })
  local id = one_id(cli, "loop pause", rest)
  local st = check(cli, require("beat.runs.control").pause(id, { force = o.force }))
  if not st then return 1 end
  if o.force then
    print(("pausing run %s now: its current iteration is ended and run again on 'beat loop resume %s'"):format(st.id, st.id))
  else
    print(("pausing run %s after iteration %d's decision; nothing of it runs while paused; 'beat loop resume %s' continues it")
      :format(st.id, st.iteration, st.id))
  end
  if o.wait then
    st = wait_for(st.id, { paused = true })
    print(("run %s is %s"):format(st.id, st.state))
    return st.state == "paused" and 0 or 1
  end
  return 0
end

function handlers.resume(cli, args)
  local o, rest = parse(cli, "loop resume", args, { ["--detach"] = "bool", ["--foreground"] = "bool",
    ["--detached-run"] = "bool" })
  local id = one_id(cli, "loop resume", rest)
  if o.detach and o.foreground then cli.usage_error("loop resume: give --detach or --foreground, not both") end
  local control = require "beat.runs.control"
  if o.detached_run then require("beat.loop").session { detached = true } end
  -- a run continues the way it was started (detached or in a terminal) unless told
  local detach = o.detach or nil
  if o.foreground or o.detached_run then detach = false end
  if detach == nil then
    local st = control.status(id)
    detach = st ~= nil and st.detached and not st.alive
  end
  local res, why, code = control.resume(id, { detach = detach })
  res = check(cli, res, why, code)
  if res == nil then return 1 end
  if type(res) == "number" then return res end   -- resumed here and ended
  if res.resumed_by == "request" then
    print(("run %s resumed"):format(res.id))
  else
    print(res.id)
    io.stderr:write(("beat: run %s resumed in the background (pid %d); follow it: beat loop attach %s\n")
      :format(res.id, res.pid, res.id))
  end
  return 0
end

function handlers.cancel(cli, args)
  local o, rest = parse(cli, "loop cancel", args, { ["--no-wait"] = "bool" })
  local id = one_id(cli, "loop cancel", rest, true)
  local reason = #rest > 1 and table.concat(rest, " ", 2) or nil
  local control = require "beat.runs.control"
  local st = check(cli, control.cancel(id, reason, { quiet = false }))
  if not st then return 1 end
  if st.alive and not o.no_wait then
    io.stderr:write(("beat: cancelling run %s...\n"):format(st.id))
    st = wait_for(st.id, {})
  end
  if st.final or not st.alive then
    print(("run %s %s%s"):format(st.id, st.state, st.reason and (": " .. st.reason) or ""))
  else
    print(("cancelling run %s"):format(st.id))
  end
  return 0
end

-- Prints the run's output.log; with follow, keeps printing what is
-- appended until the run's process is gone. Ctrl-C leaves (status 0).
local function follow(cli, id, keep_following)
  local control = require "beat.runs.control"
  local beat = require "beat"
  local st = check(cli, control.status(id))
  if not st then return 1 end
  if not st.output then
    cli.usage_error("run %s has no output log (it ran in the foreground, its output went to its terminal): 'beat show %s' prints what it did",
      st.id, st.id)
  end
  cli.on_interrupt(function()
    io.stderr:write(("\nbeat: detached from run %s; it goes on (beat loop status %s)\n"):format(st.id, st.id))
    io.stdout:flush()
    require("beat._runtime").exit(0)
  end)
  local f = assert(io.open(st.output, "rb"))
  local function pump()
    local data = f:read(64 * 1024)
    while data do
      io.stdout:write(data)
      data = f:read(64 * 1024)
    end
    io.stdout:flush()
  end
  pump()
  if keep_following then
    while true do
      local now = control.status(st.id)
      beat.sleep(0.2)
      pump()
      if not now or not now.alive then break end
    end
    pump()
  end
  f:close()
  return 0
end

function handlers.attach(cli, args)
  local _, rest = parse(cli, "loop attach", args, {})
  return follow(cli, one_id(cli, "loop attach", rest), true)
end

--- Runs `beat loop SUB ARGS`.
function M.run(cli, sub, args)
  return cli.drive(function() return handlers[sub](cli, args) end)
end

--- After a process started with --run-id ends: a run that never wrote
--- run_start (the process failed before it could) gets a run_end saying
--- so, so it shows as failed, not crashed, with the reason.
---@param id string
---@param code integer the process's exit status
function M.close_reserved(id, code)
  local entry = require("beat.runs.index").get(id)
  local journal = require "beat.journal"
  local j = entry and entry.dir and journal.open(entry.dir)
  if not j then return end
  for _, r in ipairs((j:records())) do
    if r.event == "run_start" or r.event == "run_end" then return end
  end
  pcall(j.write, j, "run_end", { status = "failed", id = id,
    reason = ("beat exited with status %d before the run started (see %s)"):format(code, entry.output or (entry.dir .. "/output.log")) })
  pcall(require("beat.runs.index").put, { id = id, status = "failed" })
end

function M.register(cli)
  cli.command("logs", {
    usage = "beat logs RUN [-f]",
    help = [[
Prints the output of a run started with --detach (.beat/runs/RUN/output.log);
RUN is a run id, a unique prefix of one, or last, from any directory. -f
keeps printing what the run writes until it ends; Ctrl-C stops following,
not the run.]],
    run = function(args)
      local o, rest = parse(cli, "logs", args, { ["-f"] = "bool", ["--follow"] = "bool" })
      local id = one_id(cli, "logs", rest)
      return cli.drive(function() return follow(cli, id, o.f or o.follow) end)
    end,
  })
end

return M
