-- Torture: hostile agents and a killed beat. Run with `make torture` (tag
-- #torture); BEAT_TORTURE_N sets the trials per case (default 10), and each
-- case prints `NAME: X/Y ok` with the seed of every failed trial
-- (BEAT_TORTURE_SEED replays one).
local beat = require "beat"
local H = require "tests.helpers"

local ESCAPE = H.root .. "/tests/fixtures/loop/escape.sh"
local HUGE = H.root .. "/tests/fixtures/loop/huge-file.sh"
local SLOW = H.root .. "/tests/fixtures/loop/slow-edit.sh"

local T = require "tests.torture.trials"
local trials, files = T.trials, T.files

-- A user's work in progress, with the files the fake agents touch.
local function user_repo()
  return T.user_repo { ["keep.txt"] = "keep\n", ["bug.txt"] = "bug\n" }
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
