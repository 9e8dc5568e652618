-- The examples in README.md and docs/ that are marked runnable really run,
-- so the docs cannot drift from beat again.
--
-- The marker is an HTML comment on the line before a fence (invisible when
-- the Markdown is rendered):
--
--   <!-- runnable -->           the block runs and exits 0
--   <!-- runnable: output -->   ... and prints what its `--> text` comments say
--                               (in order; whitespace runs compare as one space)
--   <!-- runnable: in-tree --> ... run from the source tree instead of a temp dir
--
-- ```lua blocks run as a recipe (`beat run`), ```sh blocks with `sh -e`; both
-- in a fresh temp dir with build/ first on PATH (so `beat` is this build) and
-- no network. Expected output is a `--> text` comment (in sh: `# --> text`),
-- on its own line or after the code.
local beat = require "beat"
local H = require "tests.helpers"

local function md_files()
  local files = { "README.md" }
  local function walk(dir)
    local names = beat.fs.list(H.root .. "/" .. dir) or {}
    table.sort(names)
    for _, name in ipairs(names) do
      local rel = dir .. "/" .. name
      if name:match("%.md$") then files[#files + 1] = rel
      elseif beat.fs.is_dir(H.root .. "/" .. rel) then walk(rel) end
    end
  end
  walk("docs")
  return files
end

-- The runnable blocks of a Markdown file: {file, line, lang, code, opts}.
local function runnable_blocks(file)
  local text = assert(H.read(H.root .. "/" .. file))
  local blocks, marker, cur, inside, n = {}, nil, nil, false, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if inside then
      if line:match("^```%s*$") then
        inside = false
        if cur then blocks[#blocks + 1] = cur cur = nil end
      elseif cur then
        cur.code[#cur.code + 1] = line
      end
    elseif line:match("^```") then
      inside = true
      if marker then
        cur = { file = file, line = n, lang = line:match("^```(%a*)"), code = {}, opts = marker }
      end
      marker = nil
    else
      local m = line:match("^<!%-%- runnable(.-)%-%->%s*$")
      if m then
        marker = { output = m:find("output", 1, true) ~= nil, in_tree = m:find("in-tree", 1, true) ~= nil }
      elseif line:match("%S") then
        marker = nil
      end
    end
  end
  return blocks
end

local function normalize(s)
  return (s:gsub("%s+", " "))
end

local ALL = {}
for _, f in ipairs(md_files()) do
  for _, b in ipairs(runnable_blocks(f)) do ALL[#ALL + 1] = b end
end

describe("the docs' runnable examples", function()
  it("are found: the marker is in use in README.md and docs/", function()
    local per = {}
    for _, b in ipairs(ALL) do per[b.file] = (per[b.file] or 0) + 1 end
    assert.is_true(#ALL >= 8, ("only %d runnable blocks"):format(#ALL))
    for _, f in ipairs { "README.md", "docs/json.md", "docs/api/objective.md", "docs/api/tasks.md",
      "docs/building.md" } do
      assert.truthy(per[f], f .. " has no runnable block")
    end
  end)

  for _, b in ipairs(ALL) do
    it(("%s:%d (%s) runs%s"):format(b.file, b.line, b.lang, b.opts.output and " and prints what it says" or ""), function()
      local dir = H.tmpdir()
      local code = table.concat(b.code, "\n") .. "\n"
      local env = { PATH = H.root .. "/build:" .. os.getenv("PATH"), NO_COLOR = "1" }
      local cwd = b.opts.in_tree and H.root or dir
      local r
      if b.lang == "lua" then
        local path = dir .. "/example.lua"
        H.write(path, code)
        r = assert(beat.exec({ H.bin, "run", path }, { cwd = cwd, env = env, timeout = 120 }))
      elseif b.lang == "sh" then
        r = assert(beat.exec({ "sh", "-e", "-c", code }, { cwd = cwd, env = env, timeout = 120 }))
      else
        error(("%s:%d: a runnable block must be lua or sh, got %s"):format(b.file, b.line, b.lang))
      end
      assert.equal(0, r.code, ("%s:%d exited %d\n%s\n--- stdout\n%s\n--- stderr\n%s"):format(
        b.file, b.line, r.code, code, r.stdout, r.stderr))
      if b.opts.output then
        local out, at, expected = normalize(r.stdout), 1, 0
        for _, line in ipairs(b.code) do
          local want = line:match("%-%-> (.-)%s*$")
          if want then
            expected = expected + 1
            -- the text as a whole: bounded by spaces (or the ends), not inside a longer word
            local w, s, e = normalize(want), nil, nil
            local from = at
            repeat
              s, e = out:find(w, from, true)
              if s and (s == 1 or out:sub(s - 1, s - 1) == " ") and (e == #out or out:sub(e + 1, e + 1) == " ") then break end
              from = s and s + 1
            until not s
            assert.truthy(s, ("%s:%d: the output lacks %q (after what came before)\n--- stdout\n%s"):format(
              b.file, b.line, want, r.stdout))
            at = e + 1
          end
        end
        assert.is_true(expected > 0, ("%s:%d is marked output but has no --> lines"):format(b.file, b.line))
      end
    end)
  end
end)

describe("the help texts and the man page", function()
  it("beat help loop prints its usage whole and says what {prompt} is", function()
    local r = H.beat { "help", "loop" }
    assert.equal(0, r.code)
    local usage = r.stdout:match("^Usage: ([^\n]*)\n")
    assert.equal("beat loop PROMPT (--until CMD | --eval CMD [--direction minimize|maximize]) [options] [--detach]", usage)
    local _, opens = usage:gsub("%[", "")
    local _, closes = usage:gsub("%]", "")
    assert.equal(opens, closes)
    assert.matches("{prompt}", r.stdout)
  end)

  it("every flag of beat loop --help is in the man page and in docs/cli.md", function()
    local help = H.beat({ "loop", "--help" }).stdout
    local man = H.read(H.root .. "/docs/beat.1"):gsub("\\%-", "-")
    local cli = H.read(H.root .. "/docs/cli.md")
    local flags = {}
    -- the flags each option line of the help starts with ("  -a, --agent NAME  ...")
    for line in help:gmatch("[^\n]+") do
      local a, b = line:match("^  (%-%-?%a[%w%-]*),? ?(%-?%-?%a?[%w%-]*)")
      if a then flags[a] = true end
      if b and b:match("^%-%-%a") then flags[b] = true end
    end
    for f in help:gmatch("also (%-%-%a[%w%-]*)") do flags[f] = true end
    for f in help:gmatch(", (%-%-%a[%w%-]*)\n") do flags[f] = true end
    for _, f in ipairs { "--direction", "--minimize", "--maximize", "--quiet", "--json", "--plain" } do
      assert.truthy(flags[f], f .. " is not in beat loop --help")
    end
    for flag in pairs(flags) do
      assert.truthy(man:find(flag, 1, true), flag .. " is missing from docs/beat.1")
      assert.truthy(cli:find("`" .. flag, 1, true), flag .. " is missing from docs/cli.md")
    end
  end)

  it("every command is in beat help, has --help, and is in the man page and docs/cli.md", function()
    local list = H.beat({ "help" }).stdout
    local man = H.read(H.root .. "/docs/beat.1")
    local cli = H.read(H.root .. "/docs/cli.md")
    for _, cmd in ipairs { "run", "loop", "repl", "runs", "show", "clean", "restore", "report", "agents" } do
      assert.matches("\n  " .. cmd .. " ", list)
      local r = H.beat { cmd, "--help" }
      assert.equal(0, r.code, cmd)
      assert.matches("^Usage: beat " .. cmd, r.stdout)
      assert.truthy(man:find(".B beat " .. cmd, 1, true), cmd .. " is missing from docs/beat.1")
      assert.truthy(cli:find("`beat " .. cmd, 1, true), cmd .. " is missing from docs/cli.md")
    end
  end)
end)
