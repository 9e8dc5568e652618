--- beat.protect: files the agent may not change.
---
--- An optimize agent can improve its score by editing the eval script, and a
--- retry agent can pass by editing the tests: the best-known failure of
--- autoresearch-style loops. A protected path is a glob (`protect = {...}`,
--- `--protect GLOB`); an iteration whose snapshot changes one (added,
--- modified or deleted, compared with the best snapshot) is rejected with
--- status `tampered`: its changes are discarded, the journal gets a
--- `protected` record naming the files, and the next prompt says which file
--- the agent may not change. Every prompt lists the protected globs.
---
--- By default (`default_protect = true`, `--no-default-protect` to turn it
--- off) the evaluator is protected: the files the check, eval and guard
--- command lines *run* inside the work tree — a script given to an
--- interpreter (`node scripts/measure-bundle.js`, `sh eval.sh`,
--- `python3 bench.py`), a program named by its path (`./eval.sh`) — and,
--- when a command runs a test runner beat recognises (npm test, jest,
--- vitest, mocha, pytest, tox, go test, cargo test, busted, rspec,
--- make test/check, ctest, deno test, phpunit, mvn/gradle test, dotnet
--- test, mix test), that runner's test directories that exist (`tests/**`,
--- `spec/**`, ...) and test file names (`**/*_test.go`, `**/test_*.py`, ...).
--- Files a command only reads or measures (`cat value.txt`,
--- `wc -c dist/app.js`) are not protected: they are usually what the agent
--- is asked to change.
---
--- Globs: `*` matches within one path segment, `**` any number of segments,
--- `?` one character, `[...]` a class. A glob without `/` matches a name at
--- any depth (`eval.sh` is also `sub/eval.sh`); one with `/` is relative to
--- the working directory; a trailing `/`, or a glob naming an existing
--- directory, protects everything below it.
local fs = require "beat.fs"

local commands_of = require "beat.protect.commands"

local M = {}

-- what a command line runs, from beat.protect.commands (protect/commands.lua)
M.simple_commands, M.command_files = commands_of.simple_commands, commands_of.command_files
local inside = commands_of.inside

--------------------------------------------------------------------------------
-- Globs

-- A segment of a glob as a Lua pattern: * → [^/]*, ? → [^/], [..] kept.
local function segment_pattern(seg)
  local out, i = { "^" }, 1
  while i <= #seg do
    local c = seg:sub(i, i)
    if c == "*" then out[#out + 1] = "[^/]*"
    elseif c == "?" then out[#out + 1] = "[^/]"
    elseif c == "[" and seg:find("]", i + 2, true) then
      local j = seg:find("]", i + 2, true)
      local body = seg:sub(i + 1, j - 1):gsub("^!", "^"):gsub("%%", "%%%%")
      out[#out + 1] = "[" .. body .. "]"
      i = j
    elseif c:match("[%^%$%(%)%%%.%[%]%+%-]") then out[#out + 1] = "%" .. c
    else out[#out + 1] = c end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

local function split(path)
  local parts = {}
  for p in path:gmatch("[^/]+") do parts[#parts + 1] = p end
  return parts
end

--- Compiles a root-relative glob into a matcher function(path) → boolean.
---@param glob string
---@return fun(path: string): boolean
function M.compile(glob)
  local segs = {}
  for i, s in ipairs(split(glob)) do segs[i] = s == "**" and true or segment_pattern(s) end
  return function(path)
    local parts = split(path)
    local memo = {}
    local function match(i, j)
      local key = i * 65536 + j
      if memo[key] ~= nil then return memo[key] end
      local r
      if i > #segs then r = j > #parts
      elseif segs[i] == true then
        r = match(i + 1, j) or (j <= #parts and match(i, j + 1))
      else
        r = j <= #parts and parts[j]:match(segs[i]) ~= nil and match(i + 1, j + 1)
      end
      memo[key] = r
      return r
    end
    return match(1, 1)
  end
end

--- Whether a root-relative path matches a root-relative glob.
---@param glob string
---@param path string
---@return boolean
function M.match(glob, path)
  return M.compile(glob)(path)
end


--------------------------------------------------------------------------------
-- Options and the run

--- Why the protect options are wrong, or nil (beat.loop.options raises with it).
---@param o table strategy options
---@return string|nil
function M.check_option(o)
  local p = o.protect
  if p ~= nil then
    local list = type(p) == "string" and { p } or p
    for i, g in ipairs(list) do
      if type(g) ~= "string" or not g:match("%S") then
        return ("protect%s must be a non-empty glob, got %s"):format(type(p) == "table" and ("[%d]"):format(i) or "",
          require("beat.check").show(g))
      end
    end
    for k in pairs(list) do
      if math.type(k) ~= "integer" then return "protect must be a glob or a list of globs" end
    end
    if o.git == false and #list > 0 then
      return "protect needs git: beat finds changed files by comparing snapshots (drop git = false / --no-git)"
    end
  end
  return nil
end

-- A user's glob as relative to root.
local function user_glob(g, cwd, root)
  local prefix = cwd == root and "" or (cwd:sub(#root + 2) .. "/")
  g = g:gsub("^%./", "")
  if g:sub(1, 1) == "/" then
    local rel = inside(root, g)
    if rel then g, prefix = rel, "" else g = g:sub(2) end
  end
  local dir = g:sub(-1) == "/"
  g = g:gsub("/+$", "")
  if not dir and not g:find("[%*%?%[]") and fs.is_dir(cwd .. "/" .. g) then dir = true end
  if not g:find("/", 1, true) and not dir then return prefix .. "**/" .. g end
  return prefix .. g .. (dir and "/**" or "")
end

-- Each check, eval and guard command of the options, with its name.
local function commands(o)
  local list = {}
  local function add(cmd, what)
    if type(cmd) == "table" and require("beat.loop").callable(cmd) then cmd = cmd.command end
    if type(cmd) == "string" or (type(cmd) == "table" and type(cmd[1]) == "string") then
      list[#list + 1] = { cmd = cmd, what = what }
    end
  end
  add(o.check, "the check")
  add(o.eval, "the eval")
  local guards = type(o.guard) == "string" and { o.guard } or (type(o.guard) == "table" and o.guard) or {}
  for i, g in ipairs(guards) do add(g, #guards == 1 and "the guard" or ("guard %d"):format(i)) end
  return list
end

--- The protected globs for a run's options: {glob, why} relative to root.
---@param o table strategy options
---@param cwd string
---@param root string
---@return {glob: string, why: string}[]
function M.rules(o, cwd, root)
  local rules, seen = {}, {}
  local function add(r)
    if not seen[r.glob] then
      seen[r.glob] = true
      rules[#rules + 1] = r
    end
  end
  local user = type(o.protect) == "string" and { o.protect } or o.protect or {}
  for _, g in ipairs(user) do add { glob = user_glob(g, cwd, root), why = "asked" } end
  if o.default_protect ~= false then
    for _, c in ipairs(commands(o)) do
      for _, r in ipairs(M.command_files(c.cmd, c.what, cwd, root)) do add(r) end
    end
  end
  return rules
end

local function globs(rules, max)
  local parts = {}
  for i, r in ipairs(rules) do
    if max and i > max then parts[#parts + 1] = ("... %d more"):format(#rules - max) break end
    parts[#parts + 1] = r.glob
  end
  return table.concat(parts, ", ")
end

--- Works out what the run protects and journals it (a `protect` record,
--- which the console shows). Never raises.
---@param run beat.Run
function M.setup(run)
  if not run.repo then return end
  local ok, rules = pcall(function()
    local root = run.repo:path()
    return M.rules(run.opts, run.cwd, root)
  end)
  if not ok or #rules == 0 then
    run.protect = { rules = {} }
    return
  end
  for _, r in ipairs(rules) do r.match = M.compile(r.glob) end
  run.protect = { rules = rules }
  local list = {}
  for _, r in ipairs(rules) do list[#list + 1] = { glob = r.glob, why = r.why } end
  run:write("protect", { globs = list })   -- the console says it (beat.ui)
end

--- Which protected files the iteration's snapshot changed, compared with
--- the best: nil when none, else a reason for the decision ("it changed
--- eval.sh, which it may not change (run by the eval)"). Journals a
--- `protected` record naming each file, its status and the glob.
---@param run beat.Run
---@param n integer
---@param snap string
---@return string|nil reason
function M.check(run, n, snap)
  local p = run.protect
  if not p or #p.rules == 0 or not run.repo or not run.best then return nil end
  local d, err = run.repo:diff { from = run.best, to = snap, patch = false }
  if not d then
    run.journal:write("note", { iteration = n, note = "cannot compare with the best snapshot to find protected files: "
      .. tostring(err) })
    return nil
  end
  local hits = {}
  for _, f in ipairs(d.files) do
    for _, r in ipairs(p.rules) do
      if r.match(f.path) then
        hits[#hits + 1] = { path = f.path, status = f.status, glob = r.glob, why = r.why }
        break
      end
    end
  end
  if #hits == 0 then return nil end
  run.journal:write("protected", { iteration = n, files = hits })
  local names, whys, seen = {}, {}, {}
  for i, h in ipairs(hits) do
    if i <= 5 then names[#names + 1] = h.path end
    if not seen[h.why] then seen[h.why], whys[#whys + 1] = true, h.why end
  end
  if #hits > 5 then names[#names + 1] = ("and %d more"):format(#hits - 5) end
  p.last = { iteration = n, paths = names }
  return ("it changed %s, which it may not change (protected: %s)"):format(table.concat(names, ", "),
    table.concat(whys, "; "))
end

--- The prompt with what the agent may not change: the protected globs, and
--- after a tampered iteration, the files it changed.
---@param run beat.Run
---@param n integer
---@param prompt string
---@return string
function M.prompt(run, n, prompt)
  local p = run.protect
  if not p or #p.rules == 0 then return prompt end
  local lines = { prompt, "",
    ("Do not change these files (they check your work; an attempt that changes one is undone): %s.")
      :format(globs(p.rules, 12)) }
  if p.last and p.last.iteration == n - 1 then
    lines[#lines + 1] = ("Your previous attempt (iteration %d) changed %s, which you may not change: it was undone.")
      :format(p.last.iteration, table.concat(p.last.paths, ", "))
  end
  return table.concat(lines, "\n")
end

return M
