-- Nothing lost, whatever the user or the agent does while a run goes on:
-- edits made while a check or an eval runs, an agent that deletes .beat/.
local beat = require "beat"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"
local HANDOVER = H.root .. "/tests/fixtures/loop/handover.sh"

-- Two fifos to take turns with a check or eval (tests/fixtures/loop/handover.sh).
local function fifos()
  local sync = H.tmpdir()
  assert.equal(0, assert(beat.exec { "mkfifo", sync .. "/started", sync .. "/edited" }).code)
  return sync
end

-- The timeouts only keep a broken beat from hanging the suite; nothing is timed.
local function wait_started(sync)
  local r = assert(beat.exec({ "cat", sync .. "/started" }, { timeout = 60 }))
  assert.equal("started\n", r.stdout, "the command never started")
end

local function done_editing(sync)
  local r = assert(beat.exec({ "sh", "-c", 'echo edited > "$1"', "_", sync .. "/edited" }, { timeout = 60 }))
  assert.equal(0, r.code, "the command never waited for the edit")
end

-- The user's k-th edit: a changed tracked file, a new file, bytes of every value.
local function edit(dir, k)
  local bytes = {}
  for b = 0, 255 do bytes[#bytes + 1] = string.char((b + k) % 256) end
  H.write(dir .. "/notes.txt", ("notes, edit %d\n"):format(k))
  H.write(("%s/user-%d.bin"):format(dir, k), table.concat(bytes))
  return table.concat(bytes)
end

-- Runs `beat loop ARGS` in dir; for each of `n` commands that hand over,
-- makes the user's edit k while it runs. Returns the result and the edits.
local function loop_with_edits(dir, args, env, n)
  local sync = fifos()
  env.SYNC = sync
  local argv = { H.bin, "loop" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = assert(beat.spawn(argv, { cwd = dir, env = env }))
  local edits = {}
  for k = 1, n do
    wait_started(sync)
    edits[k] = edit(dir, k)
    done_editing(sync)
  end
  return assert(p:wait(120)), edits
end

-- Each edit k is in snapshot pre-restore-k, and `beat restore` brings it
-- back byte for byte.
local function assert_recoverable(dir, id, edits, out)
  for k, bytes in ipairs(edits) do
    local name = ("pre-restore-%d"):format(k)
    local r = H.beat({ "restore", id, name }, { cwd = dir })
    assert.equal(0, r.code, name .. ": " .. r.stdout .. r.stderr)
    assert.equal(bytes, H.read(("%s/user-%d.bin"):format(dir, k)), name)
    assert.equal(("notes, edit %d\n"):format(k), H.read(dir .. "/notes.txt"), name)
  end
  assert.matches("beat restore " .. id .. " pre%-restore%-" .. #edits .. "\n", out)
end

describe("edits made while a command runs", function()
  it("are saved as pre-restore snapshots in optimize: baseline, kept and discarded candidates", function()
    local dir = H.git_repo { ["value.txt"] = "100\n", ["notes.txt"] = "notes\n" }
    local r, edits = loop_with_edits(dir, { "lower it", "--eval", "sh " .. HANDOVER .. " cat value.txt",
      "-a", SET, "--max-iterations", "2" }, { VALUES = "90 95" }, 3)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local recs, _, id = H.last_run(dir)
    local statuses = {}
    for _, d in ipairs(H.events(recs, "decision")) do statuses[#statuses + 1] = d.status end
    assert.same({ "baseline", "keep", "discard" }, statuses)
    assert.equal(3, #H.events(recs, "pre_restore"))
    assert.matches("note: files changed while the baseline eval ran %(by it or by you%) were saved as snapshot pre%-restore%-1: beat restore "
      .. id .. " pre%-restore%-1", r.stdout)
    assert.matches("note: files changed while the eval ran %(by it or by you%) were saved 2 times, as snapshots pre%-restore%-2, pre%-restore%-3: beat restore "
      .. id .. " pre%-restore%-3", r.stdout)
    -- the run ended on its best, without the user's edits: they are in the snapshots
    assert.equal("90\n", H.read(dir .. "/value.txt"))
    assert.equal("notes\n", H.read(dir .. "/notes.txt"))
    assert_recoverable(dir, id, edits, r.stdout)
  end)

  it("are saved as pre-restore snapshots in optimize with repeated measurements", function()
    local dir = H.git_repo { ["value.txt"] = "100\n", ["notes.txt"] = "notes\n" }
    -- --runs 2: each eval runs twice; the user edits during the first run of each
    local r, edits = loop_with_edits(dir, { "lower it", "--eval", "sh " .. HANDOVER .. " cat value.txt",
      "-a", SET, "--max-iterations", "1", "--runs", "2" }, { VALUES = "50" }, 4)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local _, _, id = H.last_run(dir)
    -- edits 1-2 fell into the baseline's two runs, 3-4 into the candidate's
    assert.matches("pre%-restore%-2", r.stdout)
    assert.is_nil(r.stdout:find("pre-restore-3", 1, true))
    assert.equal(0, H.beat({ "restore", id, "pre-restore-1" }, { cwd = dir }).code)
    assert.equal(edits[1], H.read(dir .. "/user-1.bin"))
    assert.equal(edits[2], H.read(dir .. "/user-2.bin"))
    assert.equal("notes, edit 2\n", H.read(dir .. "/notes.txt"))
    assert.is_false(beat.fs.exists(dir .. "/user-3.bin"))
    assert.equal(0, H.beat({ "restore", id, "pre-restore-2" }, { cwd = dir }).code)
    assert.equal(edits[3], H.read(dir .. "/user-3.bin"))
    assert.equal(edits[4], H.read(dir .. "/user-4.bin"))
    assert.equal("notes, edit 4\n", H.read(dir .. "/notes.txt"))
    assert.is_false(beat.fs.exists(dir .. "/user-1.bin"))
  end)

  it("are saved as pre-restore snapshots in retry: failing and passing checks", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n", ["notes.txt"] = "notes\n" }
    -- check before any change (fails), iteration 1 (fails), iteration 2 (passes)
    local r, edits = loop_with_edits(dir, { "fix", "--until", "sh " .. HANDOVER .. " grep -q fixed bug.txt",
      "-a", FIX }, { FIX_AT = "2" }, 3)
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("passed: the check passed on iteration 2", r.stdout)
    local _, _, id = H.last_run(dir)
    assert.matches("note: files changed while the check ran %(by it or by you%) were saved 3 times, as snapshots "
      .. "pre%-restore%-1, pre%-restore%-2, pre%-restore%-3: beat restore " .. id .. " pre%-restore%-3", r.stdout)
    assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
    assert_recoverable(dir, id, edits, r.stdout)
  end)

  it("are saved when a failed retry goes back to base", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n", ["notes.txt"] = "notes\n" }
    local r, edits = loop_with_edits(dir, { "fix", "--until", "sh " .. HANDOVER .. " grep -q fixed bug.txt",
      "-a", FIX, "--max-iterations", "1" }, { FIX_AT = "9" }, 2)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    local _, _, id = H.last_run(dir)
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal("notes\n", H.read(dir .. "/notes.txt"))
    assert.is_false(beat.fs.exists(dir .. "/attempt.txt"))
    assert.matches("the last attempt is kept: beat restore " .. id .. " last", r.stdout)
    assert_recoverable(dir, id, edits, r.stdout)
  end)

  it("says nothing and saves nothing when the commands write nothing", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local r = H.loop(dir, { "lower it", "--eval", "cat value.txt", "-a", SET, "--max-iterations", "2" },
      { VALUES = "90 95" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.is_nil(r.stdout:find("pre-restore", 1, true))
    local _, _, id = H.last_run(dir)
    local refs = assert(beat.exec({ "git", "for-each-ref", "--format=%(refname)", "refs/beat/" .. id }, { cwd = dir })).stdout
    assert.is_nil(refs:find("pre-restore", 1, true))
  end)
end)

describe("an agent that tampers with .beat/", function()
  local TAMPER = "sh " .. H.root .. "/tests/fixtures/loop/tamper.sh"

  for _, c in ipairs {
    { "delete", "the run directory was deleted" },
    { "file", "a file in its place was moved to .*%.beat%.tampered%-%d+" },
    { "edit", "journal%.jsonl was changed" },
    { "overwrite", "journal%.jsonl was changed" },
  } do
    it(("does not stop the run (%s): the journal is written back whole and the summary says so"):format(c[1]), function()
      local dir = H.git_repo { ["bug.txt"] = "broken\n" }
      local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", TAMPER }, { TAMPER = c[1] })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.equal("", r.stderr)
      assert.matches("passed: the check passed on iteration 3", r.stdout)
      local recs, rundir, id = H.last_run(dir)
      assert.matches("review: git diff    undo: beat restore " .. id .. " base", r.stdout)
      assert.matches("note: %.beat/ was changed during the run, by the agent or a command %(tampering%): [^\n]*" .. c[2], r.stdout)
      assert.equal("run_start", recs[1].event)
      assert.equal("run_end", recs[#recs].event)
      assert.equal("passed", recs[#recs].status)
      assert.equal(3, #H.events(recs, "agent"))
      assert.equal(4, #H.events(recs, "decision"))
      assert.is_true(#H.events(recs, "tampered") >= 1)
      -- no forged record survives
      local ends = H.events(recs, "run_end")
      assert.equal(1, #ends)
      local tsv = H.read(rundir .. "/results.tsv")
      assert.matches("^iteration\t", tsv)
      assert.equal(5, select(2, tsv:gsub("\n", "")))
      assert.equal("fixed\n", H.read(dir .. "/bug.txt"))
      assert.equal(0, H.beat({ "restore", id, "base" }, { cwd = dir }).code)
      assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    end)
  end

  it("the summary names every kind of tampering found, however many, and where each file put in .beat's place went", function()
    -- one kind of tampering per iteration, each done once beat journaled the
    -- agent's process (so what beat finds does not depend on timing): more
    -- kinds than the note used to show, the files moved aside last
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix", "--until", "grep -q fixed bug.txt", "-a", TAMPER },
      { TAMPER = "edit delete-tsv delete-journal file file", FIX_AT = "5" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("", r.stderr)
    assert.matches("passed: the check passed on iteration 5", r.stdout)
    local moved = {}
    for _, name in ipairs(beat.fs.list(dir)) do
      if name:match("^%.beat%.tampered%-%d+$") then moved[#moved + 1] = name end
    end
    table.sort(moved)
    assert.equal(2, #moved)
    for _, name in ipairs(moved) do assert.equal("not beat's\n", H.read(dir .. "/" .. name)) end
    local note = r.stdout:match("note: %.beat/ was changed during the run[^\n]*")
    assert.equal((".beat/ was changed during the run, by the agent or a command (tampering): "
      .. "journal.jsonl was changed; results.tsv was deleted; journal.jsonl was deleted; "
      .. "the run directory was deleted (earlier iterations' logs are lost) (2 times); "
      .. "a file in its place was moved to %s/%s, %s/%s (2 times); "
      .. "the journal was written back from beat's own copy"):format(dir, moved[1], dir, moved[2]),
      note and note:sub(#"note: " + 1))
    local recs, rundir = H.last_run(dir)
    assert.equal(5, #H.events(recs, "tampered"))
    assert.equal(5, #H.events(recs, "agent"))
    assert.equal(6, #H.events(recs, "decision"))
    assert.equal(1, #H.events(recs, "run_end"))
    assert.equal(7, select(2, H.read(rundir .. "/results.tsv"):gsub("\n", "")))
  end)

  it("a record written while a command runs does not put .beat/ back in the middle of the command's rm; the check after it does, with the record", function()
    -- the `process` record of each command beat starts is written while the
    -- command runs: putting files back then made an agent's `rm -rf .beat`
    -- fail half done, and what the check after it found depended on timing
    local journal = require "beat.journal"
    local dir = H.tmpdir()
    local j = assert(journal.create(dir .. "/.beat/runs", require("beat._runtime").now()))
    j:write("run_start", {})
    j:row { iteration = 0, status = "baseline" }
    assert(os.remove(j.tsv))   -- the command's rm, half done
    j:write("process", { pid = 1 }, { sync = false, repair = false })
    assert.is_nil(beat.fs.stat(j.tsv))
    assert(os.remove(j.path))
    assert(beat.fs.rm_rf(dir .. "/.beat"))
    j:write("process", { pid = 2 }, { sync = false, repair = false })
    assert.is_false(beat.fs.exists(dir .. "/.beat"))
    H.write(dir .. "/.beat", "not beat's\n")   -- the rest of the command: rm -rf .beat; echo > .beat
    local found = j:check()
    assert.equal("the run directory was deleted (earlier iterations' logs are lost)", found[1])
    assert.matches("^a file in its place was moved to " .. dir:gsub("%p", "%%%0") .. "/%.beat%.tampered%-%d+$", found[2])
    assert.equal(2, #found)
    local events = {}
    for _, rec in ipairs(j:records()) do events[#events + 1] = rec.event .. (rec.pid and math.tointeger(rec.pid) or "") end
    assert.equal("run_start process1 process2 tampered", table.concat(events, " "))
    assert.matches("\n0\t[^\n]*baseline", H.read(j.tsv))
    j:write("process", { pid = 3 }, { sync = false, repair = false })   -- nothing wrong: written at once
    assert.equal("process", j:records()[5].event)
    assert.is_nil(j:check())
  end)

  it("a file put in .beat's place is moved aside under a name no earlier one has, even within one millisecond", function()
    local journal = require "beat.journal"
    local rt = require "beat._runtime"
    local dir = H.tmpdir()
    local j = assert(journal.create(dir .. "/.beat/runs", rt.now()))
    j:write("run_start", {})
    local now = rt.now
    rt.now = function() return 1700000000.5 end   -- every check within the same millisecond
    local ok, err = pcall(function()
      for i = 1, 3 do
        assert(beat.fs.rm_rf(dir .. "/.beat"))
        H.write(dir .. "/.beat", "intruder " .. i .. "\n")
        assert.is_not_nil(j:check())
      end
    end)
    rt.now = now
    assert(ok, err)
    for i, ms in ipairs { 1700000000500, 1700000000501, 1700000000502 } do
      assert.equal("intruder " .. i .. "\n", H.read(("%s/.beat.tampered-%d"):format(dir, ms)))
    end
    assert.equal("run_start", j:records()[1].event)
    assert.equal(dir .. "/.beat.tampered-1700000000502", j.tampered[#j.tampered]:match("moved to (.+)$"))
  end)
end)
