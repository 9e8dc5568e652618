-- Torture: a loop killed with kill -9 at a random moment, then resumed,
-- ends exactly as the same loop never interrupted. Run with `make torture`
-- (tag #torture). BEAT_TORTURE_N sets the trials per case (default 10: 20
-- kill points in all); each case prints `NAME: X/Y ok` and names the seed
-- of every failed trial (BEAT_TORTURE_SEED replays one).
local beat = require "beat"
local H = require "tests.helpers"
local json = require "cjson"

local T = require "tests.torture.trials"
local trials, files = T.trials, T.files
local AGENT = H.root .. "/tests/fixtures/control/agent.sh"

local function user_repo()
  local dir = H.git_repo { ["value.txt"] = "100\n", ["src/a.txt"] = "a\n", ["log.txt"] = "" }
  H.write(dir .. "/src/a.txt", "uncommitted \0 edit\n")
  H.write(dir .. "/untracked.bin", "\255\254 untracked\n")
  return dir
end

local function decisions(dir, id)
  local out = {}
  for line in H.read(("%s/.beat/runs/%s/results.tsv"):format(dir, id)):gmatch("[^\n]+") do
    local f = {}
    for cell in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = cell end
    out[#out + 1] = table.concat({ f[1], f[3], f[4], f[8] }, "|")
  end
  return out
end

-- the tree of the best snapshot (the base when nothing was kept)
local function best_tree(dir, id)
  for _, which in ipairs { "best", "base" } do
    local r = assert(beat.exec({ "git", "rev-parse", "--verify", "-q", ("refs/beat/%s/%s^{tree}"):format(id, which) },
      { cwd = dir }))
    if r.code == 0 then return r.stdout end
  end
end

local function outcome(dir, id)
  return { decisions = decisions(dir, id), best = best_tree(dir, id), files = files(dir) }
end

local function same(want, got, what)
  local a, b = json.encode(want), json.encode(got)
  assert(a == b, ("%s differs:\n  want %s\n  got  %s"):format(what, a, b))
end

-- One trial: the reference run, then the same run killed at a random
-- moment (while it runs) and resumed.
local function kill_and_resume(args, values, code)
  local xdg = H.tmpdir()
  local marker = ("0.03%d%d"):format(math.random(1000, 9999), require("beat._runtime").pid())
  local env = { XDG_STATE_HOME = xdg, VALUES = values, PAUSE = marker }
  local function bt(argv, cwd, extra)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(extra or {}) do e[k] = v end
    return H.beat(argv, { cwd = cwd, env = e })
  end
  local ref = user_repo()
  local t0 = beat.clock()
  local r = bt(args, ref)
  local took = beat.clock() - t0
  assert(r.code == code, "reference run: " .. r.stdout .. r.stderr)
  local _, _, ref_id = H.last_run(ref)
  local want = outcome(ref, ref_id)

  local procs = require "beat.runs.proc"
  local delay = math.random() * took * 0.9
  for _ = 1, 6 do
    local repo = user_repo()
    local original = files(repo)
    local dargs = { table.unpack(args) }
    dargs[#dargs + 1] = "--detach"
    r = bt(dargs, repo)
    assert(r.code == 0, r.stderr)
    local id = r.stdout:match("^(%w+)\n$")
    local st
    local deadline = beat.clock() + 60
    repeat
      st = json.decode(bt({ "loop", "status", id, "--json" }, repo).stdout)
      if st.state ~= "starting" then break end
      beat.sleep(0.005)
    until beat.clock() > deadline
    assert(st.state == "running", "never ran: " .. st.state)
    beat.sleep(delay)
    local pid = math.tointeger(st.pid)
    procs.kill(pid, 9)
    while procs.alive { pid = pid } do beat.sleep(0.01) end
    st = json.decode(bt({ "loop", "status", id, "--json" }, repo).stdout)
    if st.state == "crashed" then
      local list = bt({ "loop", "list" }, repo).stdout
      assert(list:find(id .. "%s+crashed"), "beat loop list does not say crashed:\n" .. list)
      local left = H.wait_gone(marker, 5)
      assert(#left == 0, ("%d processes of the killed run survive"):format(#left))
      r = bt({ "loop", "resume", id, "--foreground" }, "/")
      assert(r.code == code, "resume: " .. r.stdout .. r.stderr .. bt({ "loop", "status", id }, repo).stdout)
      local got = outcome(repo, id)
      same(want.decisions, got.decisions, "results.tsv")
      same(want.best, got.best, "the best snapshot's tree")
      same(want.files, got.files, "the final work tree")
      r = bt({ "restore", id, "base" }, repo)
      assert(r.code == 0, r.stderr)
      same(original, files(repo), "the work tree restored to base")
      return
    end
    -- it ended before the kill: try again sooner
    delay = delay / 2
  end
  error("the run always ended before it could be killed")
end

describe("resume after kill -9 #torture", function()
  it("a retry run killed at a random moment and resumed ends as if never interrupted", function()
    trials("kill-resume-retry", function()
      local fix = math.random(2, 4)
      kill_and_resume({ "loop", "fix", "--until", ("grep -q 'iteration %d' log.txt"):format(fix),
        "-a", AGENT, "--max-iterations", "5", "--cooldown", "20ms", "-q" }, "", 0)
    end)
  end)

  it("an optimize run killed at a random moment and resumed ends as if never interrupted", function()
    trials("kill-resume-optimize", function()
      local values = {}
      for i = 1, 5 do
        local x = math.random(1, 10)
        values[i] = x == 1 and "same" or x == 2 and "crash" or tostring(math.random(50, 150))
      end
      kill_and_resume({ "loop", "lower", "--eval", "cat value.txt", "-a", AGENT, "--max-iterations", "5",
        "--max-failures", "9", "--cooldown", "20ms", "-q" }, table.concat(values, " "), 0)
    end)
  end)
end)
