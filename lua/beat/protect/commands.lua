--- beat.protect.commands: what a check, eval or guard command line runs
--- inside the work tree — the scripts given to an interpreter, programs
--- named by their path — and the test runners beat recognises, with their
--- test directories and file names: what beat.protect protects by default.
local fs = require "beat.fs"

local M = {}

-- Splits a shell command line into simple commands (lists of words): quotes
-- and backslashes as sh reads them, `; & | && || ( )` and newlines between
-- commands; the target of a redirection (`> out`, `2>>log`, `<in`) is dropped.
-- Nothing is expanded.
local function simple_commands(s)
  local cmds, words, cur = {}, {}, nil
  local skip_next = false
  local function word_end()
    if cur then
      if skip_next then skip_next = false else words[#words + 1] = cur end
      cur = nil
    end
  end
  local function cmd_end()
    word_end()
    if #words > 0 then cmds[#cmds + 1] = words end
    words = {}
  end
  local i, n = 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c == "'" then
      local j = s:find("'", i + 1, true) or n + 1
      cur = (cur or "") .. s:sub(i + 1, j - 1)
      i = j + 1
    elseif c == '"' then
      local buf = {}
      i = i + 1
      while i <= n and s:sub(i, i) ~= '"' do
        local d = s:sub(i, i)
        if d == "\\" and i < n then buf[#buf + 1] = s:sub(i + 1, i + 1); i = i + 2
        else buf[#buf + 1] = d; i = i + 1 end
      end
      cur = (cur or "") .. table.concat(buf)
      i = i + 1
    elseif c == "\\" then
      cur = (cur or "") .. s:sub(i + 1, i + 1)
      i = i + 2
    elseif c:match("[;&|()\n]") then
      cmd_end()
      i = i + 1
    elseif c == ">" or c == "<" then
      -- a redirection: "2>" was read as the word "2"; its target is not run
      if cur and cur:match("^%d+$") then cur = nil end
      word_end()
      i = i + 1
      local dup = false
      while i <= n and s:sub(i, i):match("[>&|]") do
        if s:sub(i, i) == "&" then dup = true end
        i = i + 1
      end
      if dup and s:sub(i, i):match("[%d%-]") then
        -- >&2, 2>&1, >&-: a file descriptor, no target word
        while i <= n and s:sub(i, i):match("[%d%-]") do i = i + 1 end
      else
        skip_next = true
      end
    elseif c:match("%s") then
      word_end()
      i = i + 1
    else
      cur = (cur or "") .. c
      i = i + 1
    end
  end
  cmd_end()
  return cmds
end
M.simple_commands = simple_commands

local INTERPRETERS = {
  sh = true, bash = true, zsh = true, dash = true, ksh = true, node = true, nodejs = true,
  python = true, python2 = true, python3 = true, pypy = true, pypy3 = true, ruby = true,
  perl = true, php = true, lua = true, ["lua5.1"] = true, ["lua5.2"] = true, ["lua5.3"] = true,
  ["lua5.4"] = true, luajit = true, Rscript = true, julia = true, tsx = true, ["ts-node"] = true,
  pwsh = true, deno = true, bun = true, awk = true, gawk = true, make = true, tclsh = true,
}
-- Words that run the rest of the line as a command.
local WRAPPERS = { env = true, time = true, exec = true, nice = true, nohup = true, command = true,
  timeout = true, npx = true, bunx = true, xvfb_run = true, ["xvfb-run"] = true, stdbuf = true }

-- Test runner families: directories (relative to the working directory,
-- protected when they exist) and file globs.
local FAMILIES = {
  python = { dirs = { "tests", "test" }, files = { "**/test_*.py", "**/*_test.py", "**/conftest.py" } },
  js = { dirs = { "test", "tests", "__tests__", "spec" }, files = { "**/*.test.*", "**/*.spec.*", "**/__tests__/**" } },
  go = { files = { "**/*_test.go", "**/testdata/**" } },
  rust = { dirs = { "tests" } },
  lua = { dirs = { "spec", "tests", "test" }, files = { "**/*_spec.lua" } },
  ruby = { dirs = { "spec", "test" }, files = { "**/*_spec.rb", "**/*_test.rb" } },
  make = { dirs = { "test", "tests" } },
  deno = { files = { "**/*_test.*", "**/*.test.*" } },
  php = { dirs = { "tests" } },
  jvm = { dirs = { "src/test" } },
  dotnet = { dirs = { "tests", "test" } },
  elixir = { dirs = { "test" } },
}

-- The runner family a simple command (program basename, words) runs, and its name.
local function runner(prog, w)
  local a1, a2 = w[2], w[3]
  if prog == "pytest" or prog == "py.test" or prog == "tox" or prog == "nox" then return "python", prog end
  if prog:match("^python") and a1 == "-m" and (a2 == "pytest" or a2 == "unittest") then return "python", a2 end
  if prog == "jest" or prog == "vitest" or prog == "mocha" or prog == "ava" or prog == "tap"
    or prog == "karma" or prog == "jasmine" then return "js", prog end
  if (prog == "npm" or prog == "yarn" or prog == "pnpm") and (a1 == "test" or a1 == "t"
    or (a1 == "run" and a2 and a2:match("^test"))) then return "js", prog .. " test" end
  if prog == "bun" and a1 == "test" then return "js", "bun test" end
  if (prog == "node" or prog == "nodejs") and a1 == "--test" then return "js", "node --test" end
  if prog == "go" and a1 == "test" then return "go", "go test" end
  if prog == "cargo" and (a1 == "test" or a1 == "nextest") then return "rust", "cargo " .. a1 end
  if prog == "busted" then return "lua", "busted" end
  if prog == "rspec" or ((prog == "rake" or prog == "rails") and (a1 == "test" or a1 == "spec")) then return "ruby", prog end
  if prog == "bundle" and a1 == "exec" and a2 == "rspec" then return "ruby", "rspec" end
  if (prog == "make" or prog == "gmake") then
    for i = 2, #w do
      if w[i] == "test" or w[i] == "tests" or w[i] == "check" then return "make", "make " .. w[i] end
    end
  end
  if prog == "ctest" then return "make", "ctest" end
  if prog == "deno" and a1 == "test" then return "deno", "deno test" end
  if prog == "phpunit" or prog == "pest" then return "php", prog end
  if (prog == "mvn" or prog == "mvnw" or prog == "gradle" or prog == "gradlew") then
    for i = 2, #w do if w[i] == "test" or w[i] == "check" or w[i] == "verify" then return "jvm", prog .. " " .. w[i] end end
  end
  if prog == "dotnet" and a1 == "test" then return "dotnet", "dotnet test" end
  if prog == "mix" and a1 == "test" then return "elixir", "mix test" end
  return nil
end

-- A path as relative to root (nil when outside it or inside .git/.beat).
local function inside(root, abs)
  abs = abs:gsub("/%./", "/"):gsub("/+", "/"):gsub("/%.$", "")
  -- resolve ".." lexically
  local parts = {}
  for p in abs:gmatch("[^/]+") do
    if p == ".." then parts[#parts] = nil elseif p ~= "." then parts[#parts + 1] = p end
  end
  abs = "/" .. table.concat(parts, "/")
  if abs:sub(1, #root + 1) ~= root .. "/" then return nil end
  local rel = abs:sub(#root + 2)
  local top = rel:match("^[^/]+")
  if top == ".git" or top == ".beat" then return nil end
  return rel
end

--- The files a command line runs inside the work tree, and the globs of the
--- test runners it runs: a list of {glob, why} relative to root.
---@param cmd string|string[]
---@param what string "the check", "the eval", "guard 1"
---@param cwd string absolute working directory of the command
---@param root string absolute work tree root
---@return {glob: string, why: string}[]
function M.command_files(cmd, what, cwd, root)
  local out = {}
  local prefix = cwd == root and "" or (cwd:sub(#root + 2) .. "/")
  local function add_file(word, why)
    if word == "" or word:sub(1, 1) == "-" then return end
    local abs = word:sub(1, 1) == "/" and word or (cwd .. "/" .. word)
    local rel = inside(root, abs)
    if rel and fs.exists(root .. "/" .. rel) and not fs.is_dir(root .. "/" .. rel) then
      out[#out + 1] = { glob = rel, why = why }
    end
  end
  -- make reads the first of these it finds
  local function add_makefile()
    for _, mf in ipairs { "GNUmakefile", "makefile", "Makefile" } do
      if fs.exists(cwd .. "/" .. mf) then add_file(mf, "run by " .. what); break end
    end
  end
  local cmds
  if type(cmd) == "table" then cmds = { cmd } else cmds = simple_commands(cmd) end
  local depth = 0
  local function scan(w)
    -- leading assignments and wrappers (env, time, timeout 30, npx ...)
    local i = 1
    while w[i] do
      local base = w[i]:match("([^/]+)$") or w[i]
      if w[i]:match("^[%a_][%w_]*=") then i = i + 1
      elseif WRAPPERS[base] then
        i = i + 1
        while w[i] and (w[i]:sub(1, 1) == "-" or (base == "timeout" and w[i]:match("^[%d.]+%a?$"))
          or (base == "env" and w[i]:match("^[%a_][%w_]*="))) do i = i + 1 end
      else break end
    end
    if not w[i] then return end
    local words = { table.unpack(w, i) }
    local prog = words[1]
    local base = prog:match("([^/]+)$") or prog
    -- a program named by its path
    if prog:find("/", 1, true) then add_file(prog, "run by " .. what) end
    local family, name = runner(base, words)
    if family then
      local f = FAMILIES[family]
      for _, d in ipairs(f.dirs or {}) do
        local rel = inside(root, cwd .. "/" .. d)
        if rel and fs.is_dir(root .. "/" .. rel) then
          out[#out + 1] = { glob = rel .. "/**", why = ("%s runs %s"):format(what, name) }
        end
      end
      for _, g in ipairs(f.files or {}) do
        out[#out + 1] = { glob = prefix .. g, why = ("%s runs %s"):format(what, name) }
      end
      for k = 2, #words do add_file(words[k], ("named by %s"):format(what)) end
      if base == "make" or base == "gmake" then add_makefile() end
      return
    end
    if INTERPRETERS[base] then
      local k = 2
      if base == "deno" or base == "bun" then
        if words[2] == "run" then k = 3 end
      end
      while words[k] do
        local a = words[k]
        if (base:match("sh$") or base == "bash") and a == "-c" then
          if words[k + 1] and depth < 3 then
            depth = depth + 1
            for _, c in ipairs(simple_commands(words[k + 1])) do scan(c) end
            depth = depth - 1
          end
          return
        elseif base:match("^python") and a == "-m" and words[k + 1] then
          local mod = words[k + 1]:gsub("%.", "/")
          add_file(mod .. ".py", "run by " .. what)
          add_file(mod .. "/__main__.py", "run by " .. what)
          return
        elseif (base == "make" or base:match("awk$")) and a == "-f" and words[k + 1] then
          add_file(words[k + 1], "run by " .. what)
          return
        elseif a == "-c" or a == "-e" or a == "--eval" then
          return    -- inline code
        elseif a:sub(1, 1) ~= "-" then
          if base == "make" then add_makefile() else add_file(a, "run by " .. what) end
          return
        end
        k = k + 1
      end
      if base == "make" then add_makefile() end
    end
  end
  for _, w in ipairs(cmds) do scan(w) end
  return out
end

M.inside = inside

return M
