-- Torture: nothing is lost, whatever the user or the agent does, over many
-- randomized trials. Run with `make torture` (tag #torture; `make test`
-- leaves these out). BEAT_TORTURE_N sets the trials per case (default 10);
-- each case prints `NAME: X/Y ok` and names the seed of every failed trial
-- (BEAT_TORTURE_SEED replays one).
local beat = require "beat"
local H = require "tests.helpers"

local T = require "tests.torture.trials"
local trials, files, random_bytes, user_repo = T.trials, T.files, T.random_bytes, T.user_repo
local FIX = H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local SET = H.root .. "/tests/fixtures/loop/set-value.sh"
local HANDOVER = H.root .. "/tests/fixtures/loop/handover.sh"
local WRECK = H.root .. "/tests/fixtures/loop/wreck.sh"
local TAMPER = H.root .. "/tests/fixtures/loop/tamper.sh"

local function git_in(dir)
  return function(...)
    local r = assert(beat.exec({ "git", ... }, { cwd = dir, max_output = 64 * 1024 * 1024 }))
    assert(r.code == 0, r.stderr)
    return r.stdout
  end
end

local function run_beat(dir, args, env, handovers, on_handover)
  local argv = { H.bin, "loop" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = assert(beat.spawn(argv, { cwd = dir, env = env }))
  for k = 1, handovers or 0 do
    -- the timeouts only keep a broken beat from hanging the suite
    local r = assert(beat.exec({ "cat", env.SYNC .. "/started" }, { timeout = 60 }))
    assert(r.stdout == "started\n", "the command never started")
    on_handover(k)
    r = assert(beat.exec({ "sh", "-c", 'echo edited > "$1"', "_", env.SYNC .. "/edited" }, { timeout = 60 }))
    assert(r.code == 0, "the command never waited for the edit")
  end
  return assert(p:wait(300))
end

-- The user's k-th edit while a command runs: change, add, or delete files.
local function user_edit(dir, k)
  local kind = math.random(1, 3)
  if kind == 1 then
    H.write(dir .. "/notes.txt", ("notes, edit %d: %s"):format(k, random_bytes(math.random(0, 300))))
  elseif kind == 2 then
    beat.fs.mkdir_p(dir .. "/new")
    H.write(("%s/new/user-%d.bin"):format(dir, k), random_bytes(math.random(0, 5000)))
  else
    os.remove(dir .. "/src/a.txt")
  end
  return files(dir)
end

describe("nothing lost #torture", function()
  it("edits made while evals run are recoverable from pre-restore snapshots", function()
    trials("edits-during-evals", function()
      local dir = user_repo { ["value.txt"] = "100\n" }
      local sync = H.tmpdir()
      assert(beat.exec { "mkfifo", sync .. "/started", sync .. "/edited" }.code == 0)
      local iters = math.random(1, 4)
      -- distinct values, none 100: every iteration changes the tree, so every one is evaluated
      local values, used = {}, { [100] = true }
      for i = 1, iters do
        local v
        repeat v = math.random(50, 150) until not used[v]
        used[v], values[i] = true, tostring(v)
      end
      local states = {}
      local r = run_beat(dir, { "lower", "--eval", "sh " .. HANDOVER .. " cat value.txt", "-a", "sh " .. SET,
        "--max-iterations", tostring(iters), "-q" }, { SYNC = sync, VALUES = table.concat(values, " ") },
        iters + 1, function(k) states[k] = user_edit(dir, k) end)
      assert(r.code == 0, r.stdout .. r.stderr)
      local _, _, id = H.last_run(dir)
      for k, want in ipairs(states) do
        local name = ("pre-restore-%d"):format(k)
        local rr = H.beat({ "restore", id, name }, { cwd = dir })
        assert(rr.code == 0, name .. ": " .. rr.stdout .. rr.stderr)
        local got = files(dir)
        for path, bytes in pairs(want) do
          if path ~= "value.txt" then assert(got[path] == bytes, ("%s: %s differs"):format(name, path)) end
        end
        for path in pairs(got) do assert(want[path], ("%s: %s should not be there"):format(name, path)) end
      end
    end)
  end)

  it("edits made while checks run are recoverable from pre-restore snapshots", function()
    trials("edits-during-checks", function()
      local dir = user_repo { ["bug.txt"] = "broken\n" }
      local sync = H.tmpdir()
      assert(beat.exec { "mkfifo", sync .. "/started", sync .. "/edited" }.code == 0)
      local fix_at = math.random(1, 4)
      local iters = math.random(1, 4)
      local checks = 1 + math.min(fix_at, iters)
      local states = {}
      local r = run_beat(dir, { "fix", "--until", "sh " .. HANDOVER .. " grep -q fixed bug.txt", "-a", "sh " .. FIX,
        "--max-iterations", tostring(iters), "-q" }, { SYNC = sync, FIX_AT = tostring(fix_at) },
        checks, function(k) states[k] = user_edit(dir, k) end)
      assert(r.code == (fix_at <= iters and 0 or 1), r.stdout .. r.stderr)
      local _, _, id = H.last_run(dir)
      for k, want in ipairs(states) do
        local name = ("pre-restore-%d"):format(k)
        assert(H.beat({ "restore", id, name }, { cwd = dir }).code == 0, name)
        local got = files(dir)
        for path, bytes in pairs(want) do assert(got[path] == bytes, ("%s: %s differs"):format(name, path)) end
        for path in pairs(got) do assert(want[path], ("%s: %s should not be there"):format(name, path)) end
      end
    end)
  end)

  it("files written at any moment of a run are in the work tree or in one of its snapshots", function()
    trials("writes-at-random-points", function()
      local dir = user_repo { ["value.txt"] = "100\n" }
      local stop = H.tmpdir() .. "/stop"
      -- a writer that adds a new file every few milliseconds until told to stop
      -- (the pause paces it; nothing is synchronised on it)
      local writer = assert(beat.spawn({ "sh", "-c", [[
        i=0; while [ ! -e "$1" ]; do i=$((i+1)); echo "user file $i" > "user-$i.txt"; sleep 0.01; done; echo $i
      ]], "_", stop }, { cwd = dir }))
      local values = {}
      for i = 1, 4 do values[i] = tostring(math.random(50, 150)) end
      local r = run_beat(dir, { "lower", "--eval", "date +%N > bench.txt; cat value.txt", "-a", "sh " .. SET,
        "--max-iterations", "4", "-q" }, { VALUES = table.concat(values, " ") })
      H.write(stop, "")
      local count = tonumber(assert(writer:wait(60)).stdout)
      assert(r.code == 0, r.stdout .. r.stderr)
      local _, _, id = H.last_run(dir)
      local git = git_in(dir)
      -- every blob of every snapshot of the run, path → set of blob ids
      local have = {}
      for ref in git("for-each-ref", "--format=%(refname)", "refs/beat/" .. id .. "/"):gmatch("[^\n]+") do
        for sha, path in git("ls-tree", "-r", ref):gmatch("blob (%x+)\t([^\n]+)") do
          have[path] = have[path] or {}
          have[path][sha] = true
        end
      end
      local now = files(dir)
      local lost = {}
      for i = 1, count do
        local path, want = ("user-%d.txt"):format(i), ("user file %d\n"):format(i)
        if now[path] ~= want then
          local hr = assert(beat.exec({ "git", "hash-object", "--stdin" }, { cwd = dir, stdin = want }))
          if not (have[path] and have[path][hr.stdout:gsub("%s+$", "")]) then lost[#lost + 1] = path end
        end
      end
      assert(count > 0, "the writer wrote nothing")
      assert(#lost == 0, ("%d of %d files lost: %s"):format(#lost, count, table.concat(lost, " ", 1, math.min(#lost, 10))))
    end)
  end)

  it("an agent that runs rm -rf * leaves the user's work exactly as it was", function()
    trials("hostile-rm-rf", function()
      local dir = user_repo { ["bug.txt"] = "broken\n" }
      local before = files(dir)
      local r = run_beat(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", "sh " .. WRECK,
        "--max-iterations", tostring(math.random(1, 4)), "-q" },
        { WRECK_EXIT = tostring(math.random(0, 1) * 3), WRECK_BEAT = tostring(math.random(0, 1)) })
      assert(r.code == 1, r.stdout .. r.stderr)
      local after = files(dir)
      for path, bytes in pairs(before) do assert(after[path] == bytes, path .. " differs after the run") end
      for path in pairs(after) do assert(before[path], path .. " was left behind") end
      local _, _, id = H.last_run(dir)
      assert(H.beat({ "restore", id, "last" }, { cwd = dir }).code == 0)
      assert(H.read(dir .. "/half.txt"), "the last attempt is not in snapshot last")
    end)
  end)

  it("an agent that deletes, replaces or edits .beat/ does not stop the run", function()
    trials("hostile-dot-beat", function()
      local dir = user_repo { ["bug.txt"] = "broken\n" }
      local how = ({ "delete", "file", "edit" })[math.random(1, 3)]
      local fix_at = math.random(1, 3)
      local r = run_beat(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", "sh " .. TAMPER },
        { TAMPER = how, FIX_AT = tostring(fix_at) })
      assert(r.code == 0, how .. ": " .. r.stdout .. r.stderr)
      assert(r.stdout:find("(tampering)", 1, true), how .. ": no tampering note")
      local recs = H.last_run(dir)
      assert(recs[1].event == "run_start", how .. ": journal lost its start")
      assert(recs[#recs].event == "run_end" and recs[#recs].status == "passed", how .. ": journal lost its end")
      assert(#H.events(recs, "agent") == fix_at, how .. ": agent records missing")
      assert(#H.events(recs, "run_end") == 1, how .. ": a forged record survived")
    end)
  end)
end)
