-- Torture (make torture, not make test): many runs started at the same
-- instant in the linked work trees of one repository, and many processes
-- racing to reserve one ref. Each case prints "NAME: X/Y ok".
local beat = require "beat"
local H = require "tests.helpers"

local function spin_recipe(body)
  local path = H.tmpdir() .. "/at.lua"
  H.write(path, [[
    local beat = require "beat"
    local start = tonumber(os.getenv("START"))
    while beat.now() < start do end
  ]] .. body)
  return path
end

describe("runs across linked work trees #torture", function()
  it("gives every run started at once in 4 linked work trees its own id and its own tree", function()
    local main, git = H.git_repo { ["bug.txt"] = "broken\n" }
    local trees = { main }
    for i = 1, 3 do
      trees[i + 1] = H.tmpdir() .. "/linked-" .. i
      git("worktree", "add", "-q", "--detach", trees[i + 1])
    end
    local recipe = spin_recipe [[
      return beat.strategy("retry") {
        agent = beat.agent.command { argv = { "true" } }, prompt = "x", check = "true", quiet = true,
      }
    ]]
    local journal = require "beat.journal"
    local rounds, ok = 25, 0
    local seen = {}
    for round = 1, rounds do
      local start = ("%.3f"):format(beat.now() + 0.5)
      local procs = {}
      for i, t in ipairs(trees) do
        procs[i] = assert(beat.spawn({ H.bin, "run", recipe }, { cwd = t, env = { START = start } }))
      end
      local good = true
      for i, p in ipairs(procs) do
        local r = p:wait()
        if r.code ~= 0 or r.stderr:find("traceback", 1, true) then
          good = false
          print(("round %d, tree %d: exit %d %s"):format(round, i, r.code, r.stderr))
        end
      end
      for _, t in ipairs(trees) do
        local runs = journal.list(t .. "/.beat/runs")
        local id = runs[#runs] and runs[#runs].id
        local base = id and git("log", "-1", "--format=%(trailers:key=Beat-Worktree,valueonly)",
          ("refs/beat/%s/base"):format(id)):gsub("%s+$", "")
        if not id or #runs ~= round or seen[id] or base ~= beat.fs.realpath(t) then
          good = false
          print(("round %d: tree %s: id %s, base taken in %s"):format(round, t, tostring(id), tostring(base)))
        end
        if id then seen[id] = true end
      end
      if good then ok = ok + 1 end
    end
    print(("concurrent starts across linked work trees: %d/%d ok"):format(ok, rounds))
    assert.equal(rounds, ok)
  end)

  it("creates a reserved ref for exactly one of 4 processes racing for it", function()
    local dir, git = H.git_repo { ["a.txt"] = "a\n" }
    local head = git("rev-parse", "HEAD"):gsub("%s+$", "")
    local rounds = 200
    local script = spin_recipe(([[
      local repo = assert(require("beat.git").open(%q))
      for i = 1, %d do
        while beat.now() < start + i * 0.02 do end
        local ok, err = repo:set_ref { ref = ("race-%%d/base"):format(i), commit = %q, create = true }
        io.write(ok and "W" or ok == false and "L" or "E")
      end
    ]]):format(dir, rounds, head))
    local start = ("%.3f"):format(beat.now() + 0.5)
    local outs = {}
    local procs = {}
    for i = 1, 4 do procs[i] = assert(beat.spawn({ H.bin, "run", script }, { env = { START = start } })) end
    for i, p in ipairs(procs) do outs[i] = p:wait().stdout end
    local ok = 0
    for round = 1, rounds do
      local wins, errors = 0, 0
      for i = 1, 4 do
        local c = outs[i]:sub(round, round)
        if c == "W" then wins = wins + 1 elseif c ~= "L" then errors = errors + 1 end
      end
      if wins == 1 and errors == 0 then ok = ok + 1 end
    end
    print(("ref reservation races: %d/%d ok"):format(ok, rounds))
    assert.equal(rounds, ok)
  end)
end)
