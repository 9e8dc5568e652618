-- What a loop keeps safe in git, end to end through build/beat: the runs
-- directory wherever it is, run ids and restores across linked work trees,
-- files too large to snapshot.
local beat = require "beat"
local H = require "tests.helpers"

local function journal_at(dir)
  local journal = require "beat.journal"
  local runs = journal.list(dir)
  local run = assert(runs[#runs], "no run in " .. dir)
  return assert(journal.open(run.dir)), run.id
end

describe("the loop in git", function()
  it("never snapshots nor restores a runs directory moved inside the work tree", function()
    local dir, git = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.tmpdir() .. "/recipe.lua"
    H.write(recipe, ([[
      local beat = require "beat"
      return beat.strategy("retry") {
        agent = beat.agent.command { argv = { "sh", "-c", "echo fixed > bug.txt" } },
        prompt = "fix", check = "grep -q fixed bug.txt", runs_dir = %q, quiet = true,
      }
    ]]):format(dir .. "/out/runs"))
    local r = H.beat({ "run", recipe }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local j, id = journal_at(dir .. "/out/runs")
    local files = git("ls-tree", "-r", "--name-only", "refs/beat/" .. id .. "/base")
    assert.is_nil(files:find("out/", 1, true), files)
    local before = H.read(j.path)
    r = H.beat({ "restore", id, "base" }, { cwd = dir })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("broken\n", H.read(dir .. "/bug.txt"))
    assert.equal(before, H.read(j.path))       -- the journal is not the run's work
    assert.truthy(before:find('"run_end"', 1, true))
  end)
end)
