--- beat.mcp.loops: the handlers of the tools that read loops — LoopStatus,
--- ListLoops, LoopDiff, LoopReport. They read loops through beat.runs (the
--- run index, the journals, the processes) and git snapshots; they never
--- change a loop or a work tree (LoopReport may write its chart into the
--- run directory).
local beat = require "beat"
local fs = require "beat.fs"
local json = require "beat.mcp.json"
local runs = require "beat.mcp.runs"
local brun = require "beat.runs"

local M = {}

-- The work tree named by args.workingDirectory (relative to the server's
-- directory), default the server's: its root, or nil and why.
local function work_tree(args, ctx)
  local dir = args.workingDirectory
  if dir and dir:sub(1, 1) ~= "/" then dir = (ctx.cwd or fs.cwd()) .. "/" .. dir end
  return runs.root(dir or ctx.cwd)
end
M.work_tree = work_tree

-- The status of the loop named by args.loopId (found in the index from
-- anywhere; "last" is the newest of the work tree), or nil and why.
local function status(args, ctx, opts)
  local root, err = work_tree(args, ctx)
  if not root then return nil, err end
  opts = opts or {}
  opts.root = root
  local st, why = brun.status(args.loopId, opts)
  if not st then return nil, runs.message(why) end
  return st, root
end

local function score_text(v)
  if v == nil or v == json.null then return nil end
  return ("%.6g"):format(v)
end

local function status_text(s)
  local lines = {}
  local iter = s.maxIterations > 0 and ("%d/%d"):format(s.currentIteration, s.maxIterations)
    or tostring(s.currentIteration)
  local head = ("loop %s (%s): %s, iteration %s"):format(s.id, s.strategy, s.status, iter)
  if s.alive and s.phase ~= s.status then head = head .. ", " .. s.phase end
  if s.pauseRequested then head = head .. " (pausing after this iteration's decision)" end
  lines[1] = head
  local best = s.bestScoreText ~= json.null and s.bestScoreText or score_text(s.bestScore)
  if best then
    local base = s.baselineScoreText ~= json.null and s.baselineScoreText or score_text(s.baselineScore)
    lines[#lines + 1] = ("best: %s%s"):format(best, base and (" (baseline: " .. base .. ")") or "")
  end
  lines[#lines + 1] = ("elapsed %s%s"):format(require("beat.duration").format(s.elapsedMs / 1000),
    s.costUsd > 0 and ("; agent cost $%.2f"):format(s.costUsd) or "")
  if s.reason ~= json.null then lines[#lines + 1] = "reason: " .. s.reason end
  if s.diffStat ~= json.null then
    local d = s.diffStat
    lines[#lines + 1] = d.filesChanged == 0 and "best vs base: no change"
      or ("best vs base: %d file%s, +%d -%d"):format(d.filesChanged, d.filesChanged == 1 and "" or "s",
        d.insertions, d.deletions)
  end
  for _, d in ipairs(s.lastDecisions) do
    lines[#lines + 1] = ("  iter %s %s%s%s"):format(d.candidate and ("%d.%d"):format(d.iteration, d.candidate) or d.iteration, d.status,
      d.score ~= json.null and (" " .. score_text(d.score)) or "",
      d.summary ~= json.null and (" — " .. d.summary) or "")
  end
  if s.resumable and not s.alive then
    lines[#lines + 1] = ("ResumeLoop continues it; `beat restore %s base` undoes it"):format(s.id)
  end
  return table.concat(lines, "\n")
end

local function live(st) return st.alive and (st.state == "running" or st.state == "starting" or st.state == "paused") end

-- Waits while the loop's process lives, until it ends (or, with waitFor
-- "iteration", until a new decision), waitMs passes, or the server closes;
-- sends progress notifications on every change and every second.
local function wait(st, args, ctx)
  local limit = args.waitMs / 1000
  local t0 = beat.clock()
  local size = (fs.stat(st.journal) or {}).size
  if not live(st) then return end
  local last_decided = #st.decisions > 0 and st.decisions[#st.decisions].iteration or -1
  local last_note = -1
  while true do
    local elapsed = beat.clock() - t0
    if elapsed >= limit then return end
    if elapsed - last_note >= 1 then
      last_note = elapsed
      ctx:progress(math.floor(elapsed * 1000), args.waitMs,
        ("loop %s: %s, iteration %d, %s"):format(st.id, st.state, st.iteration, st.phase or st.state))
    end
    if not ctx:sleep(math.min(0.2, limit - elapsed)) then return end   -- the server is closing
    local js = fs.stat(st.journal)
    if (js and js.size) ~= size or math.floor(beat.clock() - t0) > math.floor(elapsed) then
      size = js and js.size
      local now = brun.status(st.id, { root = st.root })
      if not now then return end
      st = now
      if not live(st) then return end
      local d = #st.decisions > 0 and st.decisions[#st.decisions].iteration or -1
      if args.waitFor == "iteration" and d ~= last_decided then return end
    end
  end
end

--- LoopStatus{loopId, includeHistory, historyLimit, workingDirectory, waitMs, waitFor}
function M.LoopStatus(args, ctx)
  local st, err = status(args, ctx)
  if not st then return nil, err end
  if args.waitMs > 0 then wait(st, args, ctx) end
  st = assert(brun.status(st.id, { root = st.root, diff = true }))
  if st.warning then ctx:log("warning", st.warning) end
  local s, iterations = runs.summary(st, { history = args.includeHistory and args.historyLimit or nil })
  local out = { success = true, loop = s }
  if iterations then out.iterations = iterations end
  return out, status_text(s)
end

local LIST_FIELDS = { "id", "strategy", "status", "currentIteration", "maxIterations", "promptPreview",
  "createdAt", "updatedAt", "workingDirectory", "bestScore", "reason", "isPipeline", "phase" }

--- ListLoops{status, limit, workingDirectory}: every loop of the index
--- (and of the server's work tree), newest first; with workingDirectory,
--- that work tree's only.
function M.ListLoops(args, ctx)
  local root, err = work_tree(args, ctx)
  if not root then return nil, err end
  local one = args.workingDirectory ~= nil
  local opts = { root = root, all = not one }
  if not runs.aliased(args.status) then opts.status, opts.limit = args.status, args.limit end
  local loops = json.array()
  local lines = {}
  for _, st in ipairs(brun.list(opts)) do
    if runs.matches(st.state, args.status) then
      local s = runs.summary(st)
      local item = {}
      for _, k in ipairs(LIST_FIELDS) do item[k] = s[k] end
      loops[#loops + 1] = item
      local iter = s.maxIterations > 0 and ("%d/%d"):format(s.currentIteration, s.maxIterations) or tostring(s.currentIteration)
      lines[#lines + 1] = ("%s  %-9s %-11s iter %-7s %s%s"):format(s.id, s.strategy, s.status, iter,
        one and "" or (s.workingDirectory .. "  "), s.promptPreview ~= json.null and s.promptPreview or "")
      if #loops >= args.limit then break end
    end
  end
  local where = one and (" in " .. root) or ""
  local head = #loops == 0 and ("no loops%s%s"):format(args.status and (" with status " .. args.status) or "", where)
    or ("%d loop%s%s (newest first):"):format(#loops, #loops == 1 and "" or "s", where)
  table.insert(lines, 1, head)
  local out = { success = true, loops = loops, count = #loops }
  if one then out.workingDirectory = root end
  return out, table.concat(lines, "\n")
end

-- Cuts text at a line boundary at most max bytes long, keeping valid UTF-8.
local function cut(text, max)
  if #text <= max then return text, false end
  local s = text:sub(1, max)
  local nl = s:match("^.*()\n")
  if nl and nl > max // 2 then s = s:sub(1, nl) end
  return json.utf8_clean(s), true
end

-- LoopDiff with the loop's repository open.
local function diff(run, repo, args)
  local prefix = ("refs/beat/%s/"):format(run.id)
  local list, refs = repo:refs(prefix) or {}, {}
  for _, r in ipairs(list) do refs[r.name:sub(#prefix + 1)] = r.id end
  if not refs.base then return nil, ("loop %s has no base snapshot (it ran without git)"):format(run.id) end
  -- a running loop's best has no ref yet: its journal says
  local to, target = "best", require("beat.runs.snapshot").find(list, run.id, "best", run.dir) or refs.base
  if args.iteration then
    to = ("iter-%d"):format(args.iteration)
    target = refs[to]
    if not target then
      local have = {}
      for name in pairs(refs) do
        local n = tonumber(name:match("^iter%-(%d+)$"))
        if n then have[#have + 1] = n end
      end
      table.sort(have)
      return nil, ("loop %s has no snapshot of iteration %d (it has %s)"):format(run.id, args.iteration,
        #have > 0 and ("iterations " .. table.concat(have, ", ")) or "none yet")
    end
  end
  local d, err = repo:diff { from = refs.base, to = target, patch = args.patch }
  if not d then return nil, ("loop %s: %s"):format(run.id, tostring(err)) end
  local files = json.array()
  local lines = {}
  for i, f in ipairs(d.files) do
    files[i] = { path = f.path, status = f.status, insertions = f.insertions, deletions = f.deletions, binary = f.binary == true }
    if i <= 20 then lines[#lines + 1] = ("  %-9s %s (+%d -%d)"):format(f.status, f.path, f.insertions, f.deletions) end
  end
  if #d.files > 20 then lines[#lines + 1] = ("  ... and %d more"):format(#d.files - 20) end
  local patch, truncated = json.null, false
  if args.patch then patch, truncated = cut(d.patch or "", args.maxBytes) end
  table.insert(lines, 1, d.files_changed == 0 and ("loop %s: %s is the same as base"):format(run.id, to)
    or ("loop %s: %s vs base: %d file%s, +%d -%d%s"):format(run.id, to, d.files_changed,
      d.files_changed == 1 and "" or "s", d.insertions, d.deletions,
      truncated and (" (patch cut at %d bytes)"):format(args.maxBytes) or ""))
  return {
    success = true, loopId = run.id, from = "base", to = to, fromCommit = refs.base, toCommit = target,
    filesChanged = d.files_changed, insertions = d.insertions, deletions = d.deletions, files = files,
    patch = patch, truncated = truncated, patchBytes = #(d.patch or ""),
  }, table.concat(lines, "\n")
end

--- LoopDiff{loopId, iteration, patch, maxBytes, workingDirectory}
function M.LoopDiff(args, ctx)
  local root, err = work_tree(args, ctx)
  if not root then return nil, err end
  local run, why = brun.find(args.loopId, { root = root })
  if not run then return nil, runs.message(why) end
  local tree = run.root or root
  local repo <close> = beat.git.open { dir = tree, watch = false }
  if not repo then return nil, ("loop %s: %s is not a git work tree, so the loop has no snapshots"):format(run.id, tree) end
  return diff(run, repo, args)
end

-- results.tsv as rows and as an aligned table.
local function results(run)
  local data = fs.read(run.dir .. "/results.tsv") or ""
  local header, rows, cells = nil, json.array(), {}
  for line in data:gmatch("[^\n]+") do
    local fields = {}
    for f in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = f end
    if not header then
      header = fields
    else
      local row = {}
      for i, name in ipairs(header) do
        local v = fields[i] or ""
        row[name] = v == "" and json.null or (math.tointeger(tonumber(v)) or tonumber(v) or v)
      end
      rows[#rows + 1] = row
    end
    cells[#cells + 1] = fields
  end
  local widths = {}
  for _, r in ipairs(cells) do
    for i, f in ipairs(r) do
      local w = utf8.len(f) or #f
      if i < #r and w > (widths[i] or 0) then widths[i] = math.min(w, 40) end
    end
  end
  local out = {}
  for _, r in ipairs(cells) do
    local parts = {}
    for i, f in ipairs(r) do
      parts[i] = i < #r and (f .. (" "):rep(math.max(0, (widths[i] or 0) - (utf8.len(f) or #f)))) or f
    end
    out[#out + 1] = table.concat(parts, "  ")
  end
  return rows, table.concat(out, "\n")
end

--- LoopReport{loopId, format, workingDirectory}: beat.report's text chart
--- and the results table; with format svg or html, the chart written into
--- the run directory (report.svg, report.html) and its path.
function M.LoopReport(args, ctx)
  local st, err = status(args, ctx)
  if not st then return nil, err end
  local report = require "beat.report"
  local model, merr = report.load(st.dir)
  if not model then return nil, ("loop %s: %s"):format(st.id, tostring(merr)) end
  local rows, tsv = results(st)
  local paths = { svg = st.dir .. "/report.svg", html = st.dir .. "/report.html" }
  if args.format ~= "text" then
    local ok, werr = fs.write(paths[args.format], report[args.format](model))
    if not ok then return nil, ("loop %s: cannot write %s: %s"):format(st.id, paths[args.format], tostring(werr)) end
  end
  local out = {
    success = true, loopId = st.id, status = st.state, rows = rows,
    svgPath = fs.exists(paths.svg) and paths.svg or json.null,
    htmlPath = fs.exists(paths.html) and paths.html or json.null,
  }
  out.text = report.terminal(model, { width = 80, color = false }):gsub("\n+$", "") .. (tsv ~= "" and ("\n\n" .. tsv) or "")
  local text = out.text
  if args.format ~= "text" then text = ("%s\n\n%s: %s"):format(text, args.format, paths[args.format]) end
  return out, text
end

return M
