-- Nothing lost, whatever the agent does while a run goes on: an agent
-- that deletes .beat/.
local beat = require "beat"
local H = require "tests.helpers"

describe("an agent that tampers with .beat/", function()
  local TAMPER = "sh " .. H.root .. "/tests/fixtures/loop/tamper.sh"

  for _, c in ipairs {
    { "delete", "the run directory was deleted" },
    { "file", "a file in its place was moved to .*%.beat%.tampered%-%d+" },
    { "edit", "journal%.jsonl was changed" },
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
end)
