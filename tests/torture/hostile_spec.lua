-- Torture: hostile agents and a killed beat. Run with `make torture` (tag
-- #torture); BEAT_TORTURE_N sets the trials per case (default 10), and each
-- case prints `NAME: X/Y ok` with the seed of every failed trial
-- (BEAT_TORTURE_SEED replays one).
local beat = require "beat"
local H = require "tests.helpers"

local N = tonumber(os.getenv("BEAT_TORTURE_N")) or 10
local SEED = tonumber(os.getenv("BEAT_TORTURE_SEED"))
local ESCAPE = H.root .. "/tests/fixtures/loop/escape.sh"
local HUGE = H.root .. "/tests/fixtures/loop/huge-file.sh"
local SLOW = H.root .. "/tests/fixtures/loop/slow-edit.sh"

local function trials(name, trial)
  local ok, failures, seeds = 0, {}, {}
  for t = 1, SEED and 1 or N do seeds[t] = SEED or (os.time() * 1000 + t) % 2147483647 end
  for _, seed in ipairs(seeds) do
    math.randomseed(seed)
    local pass, err = pcall(trial, seed)
    if pass then ok = ok + 1 else failures[#failures + 1] = ("seed %d: %s"):format(seed, tostring(err)) end
  end
  io.stdout:write(("\n%s: %d/%d ok\n"):format(name, ok, #seeds))
  for _, f in ipairs(failures) do print("  " .. f:gsub("\n", "\n    ")) end
  assert.equal(#seeds, ok, name .. " failed:\n" .. table.concat(failures, "\n"))
end

-- every file of the work tree except .git and .beat, path → bytes
local function files(dir)
  local out = {}
  local r = assert(beat.exec({ "find", ".", "-path", "./.git", "-prune", "-o", "-path", "./.beat",
    "-prune", "-o", "-type", "f", "-print" }, { cwd = dir }))
  for path in r.stdout:gmatch("[^\n]+") do out[path:sub(3)] = H.read(dir .. "/" .. path) end
  return out
end

local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- A user's work in progress: committed files, uncommitted edits, untracked files.
local function user_repo(extra)
  local spec = { ["src/a.txt"] = "a\n", ["src/b.bin"] = random_bytes(64), ["notes.txt"] = "notes\n",
                 ["keep.txt"] = "keep\n", ["bug.txt"] = "bug\n" }
  for k, v in pairs(extra or {}) do spec[k] = v end
  local dir = H.git_repo(spec)
  H.write(dir .. "/src/a.txt", "uncommitted " .. random_bytes(32))
  H.write(dir .. "/untracked.bin", random_bytes(math.random(1, 4096)))
  return dir
end

local function same_files(want, got, what)
  for path, bytes in pairs(want) do
    assert(got[path] == bytes, ("%s: %s differs or is missing"):format(what, path))
  end
  for path in pairs(got) do assert(want[path], ("%s: %s should not be there"):format(what, path)) end
end

describe("hostile agents #torture", function()
  it("leave no process behind however they escape", function()
    local kinds = { "setsid", "double-fork", "nohup", "env-i", "group" }
    trials("escaping-processes", function(seed)
      local dir = user_repo()
      local marker = ("beat-escape-%d"):format(seed)
      local kind = kinds[math.random(#kinds)]
      local r = H.loop(dir, { "p", "--until", "test -s escaped.txt && false", "-a", "sh " .. ESCAPE,
        "--max-iterations", tostring(math.random(1, 3)), "-q" }, { MARKER = marker, ESCAPE = kind })
      assert(r.code == 1, kind .. ": " .. r.stdout .. r.stderr)
      local left = H.wait_gone(marker, 5)
      if #left > 0 then os.execute("kill -9 " .. table.concat(left, " ")) end
      assert(#left == 0, ("%s: %d process(es) survived the run"):format(kind, #left))
      beat.fs.rm_rf(dir)
    end)
  end)

  it("a file larger than memory is rejected, set aside, and nothing else is lost", function()
    trials("huge-files", function()
      local dir = user_repo()
      local before = files(dir)
      local r = H.loop(dir, { "p", "--until", "false", "-a", "sh " .. HUGE, "--max-iterations",
        tostring(math.random(1, 3)), "--keep-last", "-q" }, { FILE_SIZE = ("%dG"):format(math.random(2, 40)) })
      assert(r.code == 1, r.stdout .. r.stderr)
      assert(not beat.fs.stat(dir .. "/huge.bin"), "the huge file is still in the work tree")
      local _, _, id = H.last_run(dir)
      local rr = H.beat({ "restore", id, "base" }, { cwd = dir })
      assert(rr.code == 0, rr.stdout .. rr.stderr)
      same_files(before, files(dir), "after restore base")
      beat.fs.rm_rf(dir)
    end)
  end)

  it("kill -9 of beat at any point: no process survives and restore base gives the tree back", function()
    trials("kill-9-anywhere", function(seed)
      local dir = user_repo()
      local before = files(dir)
      local marker = ("beat-kill9-%d"):format(seed)
      local p = assert(beat.spawn({ H.bin, "loop", "p", "--until", "false", "-a", "sh " .. SLOW,
        "--max-iterations", "30", "--max-failures", "30", "-q" }, { cwd = dir, env = { MARKER = marker } }))
      beat.sleep(math.random() * 1.5)
      p:kill(9)
      p:wait(30)
      local left = H.wait_gone(marker, 5)
      if #left > 0 then os.execute("kill -9 " .. table.concat(left, " ")) end
      assert(#left == 0, ("%d agent process(es) outlived beat"):format(#left))
      local runs = require("beat.journal").list(dir .. "/.beat/runs")
      if #runs > 0 then
        local rr = H.beat({ "restore", runs[#runs].id, "base" }, { cwd = dir })
        -- killed before the base snapshot was recorded: the tree was never touched
        if not (rr.code == 2 and rr.stderr:find("base", 1, true)) then
          assert(rr.code == 0, rr.stdout .. rr.stderr)
        end
      end
      same_files(before, files(dir), "after restore base")
      beat.fs.rm_rf(dir)
    end)
  end)
end)
