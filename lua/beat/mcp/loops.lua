--- beat.mcp.loops: the handlers of the tools that read loops — LoopStatus,
--- ListLoops, LoopDiff, LoopReport. They read run directories and git
--- snapshots; they never change a run or a work tree.
local beat = require "beat"
local fs = require "beat.fs"
local json = require "beat.mcp.json"
local runs = require "beat.mcp.runs"

local M = {}

local function work_tree(args, ctx)
  local dir = args.workingDirectory
  if dir and dir:sub(1, 1) ~= "/" then dir = (ctx.cwd or fs.cwd()) .. "/" .. dir end
  return runs.root(dir or ctx.cwd)
end

-- The run named by args.loopId, its work tree root and repository.
local function find(args, ctx)
  local root, err, repo = work_tree(args, ctx)
  if not root then return nil, err end
  local run, ferr = runs.find(root, args.loopId)
  if not run then return nil, ferr end
  return run, root, repo
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
  if s.status == "running" then head = head .. ", " .. s.phase end
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
  if s.status == "crashed" then
    lines[#lines + 1] = "its process is gone without an end record; `beat restore " .. s.id .. " best` or `base` restores a snapshot"
  end
  return table.concat(lines, "\n")
end

-- Waits while the run is running, until it ends (or, with waitFor
-- "iteration", until a new decision), waitMs passes, or the server closes;
-- sends progress notifications on every change and every second.
local function wait(run, args, ctx)
  local journal = run.dir .. "/journal.jsonl"
  local limit = args.waitMs / 1000
  local t0 = beat.clock()
  local size = (fs.stat(journal) or {}).size
  local s = runs.summary(run)
  if s.status ~= "running" and s.status ~= "starting" then return end
  local decisions = #s.lastDecisions > 0 and s.lastDecisions[#s.lastDecisions].iteration or -1
  local last_note = -1
  while true do
    local elapsed = beat.clock() - t0
    if elapsed >= limit then return end
    if elapsed - last_note >= 1 then
      last_note = elapsed
      ctx:progress(math.floor(elapsed * 1000), args.waitMs,
        ("loop %s: %s, iteration %d, %s"):format(s.id, s.status, s.currentIteration, s.phase))
    end
    if not ctx:sleep(math.min(0.2, limit - elapsed)) then return end   -- the server is closing
    local st = fs.stat(journal)
    if (st and st.size) ~= size or math.floor(beat.clock() - t0) > math.floor(elapsed) then
      size = st and st.size
      s = runs.summary(run)
      if s.status ~= "running" and s.status ~= "starting" then return end
      local d = #s.lastDecisions > 0 and s.lastDecisions[#s.lastDecisions].iteration or -1
      if args.waitFor == "iteration" and d ~= decisions then return end
    end
  end
end

--- LoopStatus{loopId, includeHistory, historyLimit, workingDirectory, waitMs, waitFor}
function M.LoopStatus(args, ctx)
  local run, root, repo = find(args, ctx)
  if not run then return nil, root end
  if args.waitMs > 0 then wait(run, args, ctx) end
  local s, iterations, warning = runs.summary(run, {
    history = args.includeHistory and args.historyLimit or nil, repo = repo, diff = true,
  })
  if warning then ctx:log("warning", warning) end
  local out = { success = true, loop = s }
  if iterations then out.iterations = iterations end
  return out, status_text(s)
end

local LIST_FIELDS = { "id", "strategy", "status", "currentIteration", "maxIterations", "promptPreview",
  "createdAt", "updatedAt", "workingDirectory", "bestScore", "reason", "isPipeline" }

--- ListLoops{status, limit, workingDirectory}
function M.ListLoops(args, ctx)
  local root, err = work_tree(args, ctx)
  if not root then return nil, err end
  local loops = json.array()
  local lines = {}
  for _, r in ipairs(runs.list(root)) do
    local ok, s = pcall(runs.summary, r)
    if not ok then
      ctx:log("warning", ("cannot read run %s: %s"):format(r.id, tostring(s)))
    elseif runs.matches(s.status, args.status) then
      local item = {}
      for _, k in ipairs(LIST_FIELDS) do item[k] = s[k] end
      loops[#loops + 1] = item
      lines[#lines + 1] = ("%s  %-9s %-11s iter %-7s %s"):format(s.id, s.strategy, s.status,
        s.maxIterations > 0 and ("%d/%d"):format(s.currentIteration, s.maxIterations) or tostring(s.currentIteration),
        s.promptPreview ~= json.null and s.promptPreview or "")
      if #loops >= args.limit then break end
    end
  end
  local head = #loops == 0 and ("no loops%s in %s"):format(args.status and (" with status " .. args.status) or "", root)
    or ("%d loop%s in %s (newest first):"):format(#loops, #loops == 1 and "" or "s", root)
  table.insert(lines, 1, head)
  return { success = true, loops = loops, count = #loops, workingDirectory = root }, table.concat(lines, "\n")
end

-- Cuts text at a line boundary at most max bytes long, keeping valid UTF-8.
local function cut(text, max)
  if #text <= max then return text, false end
  local s = text:sub(1, max)
  local nl = s:match("^.*()\n")
  if nl and nl > max // 2 then s = s:sub(1, nl) end
  return json.utf8_clean(s), true
end

--- LoopDiff{loopId, iteration, patch, maxBytes, workingDirectory}
function M.LoopDiff(args, ctx)
  local run, root, repo = find(args, ctx)
  if not run then return nil, root end
  if not repo then return nil, ("loop %s: %s is not a git work tree, so the loop has no snapshots"):format(run.id, root) end
  local prefix = ("refs/beat/%s/"):format(run.id)
  local refs = {}
  for _, r in ipairs(repo:refs(prefix) or {}) do refs[r.name:sub(#prefix + 1)] = r.id end
  if not refs.base then return nil, ("loop %s has no base snapshot (it ran without git)"):format(run.id) end
  local to, target = "best", refs.best or refs.base
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

--- LoopReport{loopId, format, workingDirectory}
function M.LoopReport(args, ctx)
  local run, root = find(args, ctx)
  if not run then return nil, root end
  local s = runs.summary(run)
  local rows, tsv = results(run)
  local svg = run.dir .. "/report.svg"
  local html = run.dir .. "/report.html"
  local out = {
    success = true, loopId = run.id, status = s.status, rows = rows,
    svgPath = fs.exists(svg) and svg or json.null, htmlPath = fs.exists(html) and html or json.null,
  }
  if args.format ~= "text" and out[args.format .. "Path"] == json.null then
    return nil, ("loop %s has no report.%s in %s"):format(run.id, args.format, run.dir)
  end
  out.text = status_text(s) .. "\n\n" .. tsv
  local text = out.text
  if args.format ~= "text" then text = ("%s\n\n%s chart: %s"):format(text, args.format, out[args.format .. "Path"]) end
  return out, text
end

return M
