--- `beat show RUN`: what a run did — its iterations, the diff of a
--- snapshot, an iteration's logs. Runs are found as cli/runs.lua finds them.
local runs = require "beat.cli.runs"

local M = {}

local iteration_name = runs.iteration_name

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

local function color_choice(o)
  if o.color ~= nil then return o.color end
  local ui = require "beat.ui"
  return ui.stdout_tty() and ui.color_allowed()
end

local function term_width()
  local rt = require "beat._runtime"
  if not rt.isatty(1) then return nil end
  local cols = rt.winsize(1)
  return cols or 80
end

-- The table of `beat show`: rows of cells, aligned; the last column is cut
-- to the terminal's width (on a terminal).
local function table_lines(header, rows, color, width)
  local w = {}
  local function ulen(s) return utf8.len(s) or #s end
  for _, row in ipairs({ header, table.unpack(rows) }) do
    for c, cell in ipairs(row) do
      if c < #header then w[c] = math.max(w[c] or 0, ulen(cell.text or cell)) end
    end
  end
  local out = {}
  for r, row in ipairs({ header, table.unpack(rows) }) do
    local parts = {}
    for c, cell in ipairs(row) do
      local text = cell.text or cell
      local pad = c < #header and (" "):rep(w[c] - ulen(text)) or ""
      if cell.right then text = pad .. text pad = "" end
      local shown = (cell.cls and color) and require("beat.ui").paint(text, cell.cls, true) or text
      if r == 1 and color then shown = require("beat.ui").paint(text, "bold", true) end
      parts[#parts + 1] = shown .. pad
    end
    local line = table.concat(parts, "  "):gsub("%s+$", "")
    if width then line = require("beat.ui").cut(line, width - 1) end
    out[#out + 1] = line
  end
  return out
end

-- Sorts iteration names "2" < "3" < "3.1" < "3.2" < "3.10".
local function iteration_before(a, b)
  local ar, ak = a:match("^(%d+)%.?(%d*)$")
  local br, bk = b:match("^(%d+)%.?(%d*)$")
  if tonumber(ar) ~= tonumber(br) then return tonumber(ar) < tonumber(br) end
  return (tonumber(ak) or 0) < (tonumber(bk) or 0)
end

-- The iteration logs present in a run directory: {{n, {"agent", "eval"}}, ...}, by iteration
-- (n: "3", or "3.2" for a parallel run's candidate).
local function logs_of(dir)
  local fs = require "beat.fs"
  local list = {}
  for _, name in ipairs(fs.list(dir) or {}) do
    local n = iteration_name(name:match("^iter%-(.+)$"))
    if n then
      local kinds = {}
      for _, f in ipairs(fs.list(dir .. "/" .. name) or {}) do
        local k = f:match("^(.-)%.log$")
        if k then kinds[#kinds + 1] = k end
      end
      table.sort(kinds)
      list[#list + 1] = { n = n, kinds = kinds }
    end
  end
  table.sort(list, function(a, b) return iteration_before(a.n, b.n) end)
  return list
end

-- A run's snapshot by name (refs/beat/<id>/<which>; a best not written
-- yet from the journal in dir): its commit or nil.
local function snapshot(repo, id, which, dir)
  if not repo then return nil end
  return require("beat.runs.snapshot").find(repo:refs(("refs/beat/%s/"):format(id)) or {}, id, which, dir)
end

local DIFF_COLOR = { { "^diff %-%-git", "1" }, { "^index ", "1" }, { "^%-%-%- ", "1" }, { "^%+%+%+ ", "1" },
  { "^@@", "36" }, { "^%+", "32" }, { "^%-", "31" }, { "^old mode", "1" }, { "^new mode", "1" },
  { "^new file", "1" }, { "^deleted file", "1" }, { "^Binary files", "1" } }

--- A patch coloured as git diff colours it (headers bold, hunks cyan, + green, - red).
---@param patch string
---@return string
function M.color_patch(patch)
  local out = {}
  for line in patch:gmatch("([^\n]*)\n") do
    local code
    for _, p in ipairs(DIFF_COLOR) do
      if line:match(p[1]) then code = p[2] break end
    end
    out[#out + 1] = code and ("\27[%sm%s\27[0m"):format(code, line) or line
  end
  local rest = patch:match("[^\n]+$")
  if rest then out[#out + 1] = rest end
  return table.concat(out, "\n") .. (patch:sub(-1) == "\n" and "\n" or "")
end

-- `beat show RUN --diff WHICH`.
local function show_diff(cli, repo, info, which, color)
  if not repo then cli.usage_error("show: --diff needs the run's git repository") end
  if not (which == "best" or which == "base" or which == "last" or iteration_name(which:match("^iter%-(.+)$"))) then
    cli.usage_error("show: --diff takes best, base, last, iter-N or iter-R.K, got '%s'", which)
  end
  local id = info.id
  local from, to, what
  if which == "best" then
    from, to = snapshot(repo, id, "base"), snapshot(repo, id, "best", info.dir) or snapshot(repo, id, "base")
    what = "the best result against the base (what the run kept)"
  elseif which == "base" then
    to = snapshot(repo, id, "base")
    from = info.start and info.start.head
    what = "the base against HEAD when the run started (your uncommitted work it started from)"
    if to and not from then
      io.stderr:write(("beat: show: run %s started in a repository without commits: nothing to diff the base against\n"):format(id))
      return 1
    end
  else
    to = snapshot(repo, id, which)
    if to then
      local parent = repo._c:resolve(to .. "^")
      from = parent or snapshot(repo, id, "base")
    end
    what = ("%s against the snapshot it started from (its own change)"):format(which)
  end
  if not to then cli.usage_error("show: run %s has no snapshot '%s' (see 'beat show %s')", id, which, id) end
  local d, err = repo:diff { from = from, to = to }
  if not d then
    io.stderr:write("beat: show: ", tostring(err), "\n")
    return 1
  end
  if d.files_changed == 0 then
    io.stderr:write(("beat: show: no changes: %s is empty\n"):format(what))
    return 0
  end
  io.write(color and M.color_patch(d.patch) or d.patch)
  return 0
end

-- `beat show RUN --log N [KIND]`.
local function show_log(cli, info, n, kind, o, color)
  local fs = require "beat.fs"
  local it = iteration_name(n)
  if not it then
    cli.usage_error("show: --log needs an iteration number (or R.K, a candidate of a parallel run), got '%s'", tostring(n))
  end
  it = it:gsub("^0+(%d)", "%1")
  local dir = ("%s/iter-%s"):format(info.dir, it)
  local have = {}
  for _, f in ipairs(fs.list(dir) or {}) do
    local k = f:match("^(.-)%.log$")
    if k then have[#have + 1] = k end
  end
  table.sort(have)
  if #have == 0 then
    cli.usage_error("show: run %s has no logs for iteration %s (see 'beat show %s')", info.id, it, info.id)
  end
  if not kind then
    for _, k in ipairs { "agent", "eval", "check" } do
      if fs.exists(("%s/%s.log"):format(dir, k)) then kind = k break end
    end
    kind = kind or have[1]
  end
  if kind == "guard" then kind = "guard-1" end
  local path = ("%s/%s.log"):format(dir, kind)
  local text = fs.read(path)
  if not text then
    cli.usage_error("show: iteration %s of run %s has no %s log (it has: %s)", it, info.id, kind,
      table.concat(have, ", "))
  end
  if kind == "agent" and not o.raw then
    text = require("beat.transcript").render(text, { color = color })
  end
  io.write(text)
  if text ~= "" and text:sub(-1) ~= "\n" then io.write("\n") end
  if require("beat._runtime").isatty(1) then
    io.stderr:write(("(%s%s)\n"):format(path, kind == "agent" and not o.raw and "; --raw for the file as it is" or ""))
  end
  return 0
end

-- `beat show RUN`: the table and the summary.
local function show_run(repo, info, color, as_json)
  local report = require "beat.report"
  local duration = require "beat.duration"
  local ui = require "beat.ui"
  local model = report.model(info.records, { id = info.id, dir = info.dir, journal = info.journal,
    warning = info.warning })
  local base = snapshot(repo, info.id, "base") or (info.last and info.last.base) or (info.start and info.start.base)
  local best = snapshot(repo, info.id, "best", info.dir) or base
  local diff
  if repo and base and best then
    local d = repo:diff { from = base, to = best, patch = false }
    if d then
      diff = { files_changed = d.files_changed, insertions = d.insertions, deletions = d.deletions, files = {} }
      for i, f in ipairs(d.files) do diff.files[i] = { path = f.path, status = f.status,
        insertions = f.insertions, deletions = f.deletions } end
    end
  end
  local logs = logs_of(info.dir)
  if as_json then
    local m = {}
    for k, v in pairs(model) do m[k] = v end
    m.status, m.running = info.status, info.status == "running"
    m.iteration_count, m.unfinished_iteration = info.iterations, info.unfinished_iteration
    m.pid = info.pid
    m.diff = diff
    m.logs = {}
    for _, l in ipairs(logs) do
      local paths = {}
      for _, k in ipairs(l.kinds) do paths[k] = ("%s/iter-%s/%s.log"):format(info.dir, l.n, k) end
      m.logs[l.n] = paths
    end
    io.write(report.json(m):gsub("\\/", "/"), "\n")
    return 0
  end

  local strategy = model.strategy or "?"
  print(("run %s (%s) in %s"):format(info.id, strategy, model.cwd or "?"))
  if info.started then
    print(("started %s%s"):format(os.date("%Y-%m-%d %H:%M:%S", math.floor(info.started)),
      info.status == "running" and (", running (pid %s)"):format(tostring(info.pid)) or ""))
  end
  print("")
  local any_score, any_cost = false, false
  for _, it in ipairs(model.iterations) do
    if it.score_text or it.best_text then any_score = true end
    if it.cost_usd and it.cost_usd > 0 then any_cost = true end
  end
  local header = { "iter", "decision" }
  if any_score then header[#header + 1] = "score" header[#header + 1] = "best" end
  header[#header + 1] = "time"
  if any_cost then header[#header + 1] = "cost" end
  header[#header + 1] = "reason"
  local rows = {}
  for _, it in ipairs(model.iterations) do
    local label = it.iteration == 0 and (it.status == "baseline" and "base" or
      (strategy == "retry" or it.status == "pass" or it.status == "fail") and "init" or "0") or tostring(it.iteration)
    local row = { { text = label, right = true }, { text = it.status, cls = it.status } }
    if any_score then
      row[#row + 1] = { text = it.score_text or "", cls = it.kept and "score" or nil }
      row[#row + 1] = it.best_text or ""
    end
    row[#row + 1] = { text = it.duration_s and duration.format(it.duration_s) or "", right = true }
    if any_cost then row[#row + 1] = { text = it.cost_usd and it.cost_usd > 0 and ("$%.2f"):format(it.cost_usd) or "", right = true } end
    row[#row + 1] = tostring(it.summary or ""):match("^[^\n]*")   -- one line: a traceback stays in the journal
    rows[#rows + 1] = row
  end
  if #rows == 0 then
    print("no iteration was decided yet")
  else
    for _, l in ipairs(table_lines(header, rows, color, term_width())) do print(l) end
    if rows[1] and rows[1][1].text == "init" then print("(init: the check before any change)") end
  end
  print("")
  local status = info.status
  if status == "running" then
    print(("%s: iteration %s going (pid %s)"):format(ui.paint("running", "bold", color),
      tostring(info.unfinished_iteration or (info.iterations + 1)), tostring(info.pid)))
  elseif status == "paused" then
    print(("%s before iteration %s (pid %s): beat loop resume %s"):format(ui.paint("paused", "bold", color),
      tostring((info.iterations or 0) + 1), tostring(info.pid), info.id))
  elseif status == "crashed" then
    print(("crashed: the run's process is gone without an end record (killed or crashed): beat loop resume %s")
      :format(info.id))
  else
    print(("%s: %s"):format(ui.paint(status, status, color), tostring(info.reason or "")))
  end
  if model.best_text and model.baseline_text then
    print(("best: %s (baseline: %s)"):format(model.best_text, model.baseline_text))
  end
  local line = ("%s in %s"):format(plural(info.iterations, "iteration"),
    duration.format(tonumber(model.elapsed) or 0))
  if model.cost_usd and model.cost_usd > 0 then line = line .. ("; agent cost $%.2f"):format(model.cost_usd) end
  if info.unfinished_iteration and status ~= "running" then
    line = line .. ("; iteration %d did not finish"):format(info.unfinished_iteration)
  end
  print(line)
  if diff then
    if diff.files_changed == 0 then
      print("best vs base: no change kept")
    else
      print(("best vs base: %s, +%d -%d"):format(plural(diff.files_changed, "file"), diff.insertions, diff.deletions))
      for i, f in ipairs(diff.files) do
        if i > 10 then print(("  ... and %d more"):format(#diff.files - 10)) break end
        print(("  %-9s %s (+%d -%d)"):format(f.status, f.path, f.insertions, f.deletions))
      end
    end
  end
  for _, n in ipairs(type(info.last) == "table" and type(info.last.notes) == "table" and info.last.notes or {}) do
    print("note: " .. tostring(n))
  end
  if #logs > 0 then
    local kinds, seen = {}, {}
    for _, l in ipairs(logs) do
      for _, k in ipairs(l.kinds) do if not seen[k] then seen[k], kinds[#kinds + 1] = true, k end end
    end
    print(("logs: %s/iter-N/{%s}.log, iterations %s-%s"):format(info.dir, table.concat(kinds, ","),
      logs[1].n, logs[#logs].n))
  end
  print(("journal: %s"):format(info.journal))
  print(("more: beat show %s --diff [best|base|iter-N], --log N [agent|eval|check]; beat report %s")
    :format(info.id, info.id))
  for _, w in ipairs(model.warnings) do print("warning: " .. w) end
  return 0
end

local SHOW_HELP = [[
Shows run RUN (an id, a unique prefix of one, or "last", the default): a
table of its iterations — iteration (base: the baseline, init: the check
before any change), decision, score, best so far, the iteration's own
duration, its agent cost, the reason — then why it stopped, best vs
baseline, how many iterations, the diff stat of the best result against
the base, and where the logs are. A parallel run (--candidates) lists each
candidate as R.K: candidate K of round R.

  --diff [WHICH]  print a patch instead (coloured on a terminal): best (the
                  default) is what the run kept, against the base; base is
                  your uncommitted work the run started from, against HEAD;
                  iter-N (iter-R.K) and last are that iteration's own change
  --log N [KIND]  print iteration N's (or R.K's) log: agent (the default when there is
                  one), eval, check or guard-K. Claude, Codex and Gemini
                  transcripts print as the conversation (text, → tool calls,
                  ← results, the result); --raw prints the file as it is
  --json          print the run as one JSON document (docs/json.md)
  --color, --no-color
                  colour on a terminal unless NO_COLOR is set, by default
  -w DIR          the work tree whose .beat/runs holds RUN (default: here)

Exit status: 0; 1 when a log or the diff cannot be read; 2 for bad input.]]

function M.register(cli)
  cli.command("show", {
    usage = "beat show [RUN|last] [--diff [best|base|last|iter-N] | --log N [agent|eval|check|guard-K] [--raw]] [--json] [-w DIR]",
    help = SHOW_HELP,
    run = function(args)
      local pos, o = runs.parse_flags(cli, "show", args, {
        ["--diff"] = "optional", ["--log"] = "value", ["--raw"] = "bool", ["--json"] = "bool",
        ["--color"] = "bool", ["--no-color"] = { "bool", "no_color" }, ["-w"] = { "value", "dir" },
        ["--working-directory"] = { "value", "dir" } })
      if o.color and o.no_color then cli.usage_error("show: give --color or --no-color, not both") end
      local color = color_choice { color = o.color or (o.no_color and false) or nil }
      if o.diff and o.log then cli.usage_error("show: give --diff or --log, not both") end
      if o.json and (o.diff or o.log) then cli.usage_error("show: --json prints the run; not with --diff or --log") end
      if o.raw and not o.log then cli.usage_error("show: --raw goes with --log") end
      local kind
      local run_arg = pos[1]
      if o.log then
        kind = pos[2]
        if pos[3] then cli.usage_error("show: unexpected argument '%s'", pos[3]) end
        if kind and not (kind == "agent" or kind == "eval" or kind == "check" or kind == "guard" or kind:match("^guard%-%d+$")) then
          cli.usage_error("show: --log N takes agent, eval, check or guard-K, got '%s'", kind)
        end
      elseif pos[2] then
        cli.usage_error("show: unexpected argument '%s'", pos[2])
      end
      if o.dir and not require("beat.fs").is_dir(o.dir) then
        cli.usage_error("show: working directory %s does not exist", o.dir)
      end
      local repo, root = runs.work_tree(cli, o.dir)
      local r = runs.find_run(cli, root, run_arg, repo)
      local info = runs.info(r)
      if o.diff then return show_diff(cli, repo, info, o.diff == true and "best" or o.diff, color) end
      if info.journal_gone then
        if o.log then cli.usage_error("show: run %s has no logs left (its .beat/runs directory is gone)", r.id) end
        print(("run %s: its journal is gone; its snapshots are in refs/beat/%s/ ('beat restore %s base' still works)")
          :format(r.id, r.id, r.id))
        return 0
      end
      if o.log then return show_log(cli, info, o.log, kind, o, color) end
      return show_run(repo, info, color, o.json)
    end,
  })

end

return M
