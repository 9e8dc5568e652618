-- The parallel strategy end to end, here and on the single-node Slurm test
-- cluster (tests/fixtures/slurm): numbers for docs/scale.md. Not part of
-- `make test`; run with `build/beat run tests/bench/parallel.lua` (or `make bench`).
--
-- ROUNDS rounds of PAR candidates (BENCH_N candidates in all): each agent is
-- a process writing one number, each eval `sleep 1; cat value.txt`. Once with
-- every command here (max_evals = PAR), once with the evals as Slurm jobs.
-- Per candidate: its wall time beyond the eval's 1 s (beat's bookkeeping:
-- worktree checkout, agent process, snapshot, journal, worktree removal),
-- and per round the wait for its slowest candidate.
-- Environment: BENCH_N (200), BENCH_PAR (8), BENCH_FILES (300 files in the
-- repository), BENCH_LOCAL_ONLY (set: no Slurm part).
local beat = require "beat"
package.path = beat.fs.cwd() .. "/?.lua;" .. package.path
local cluster = require "tests.fixtures.slurm.cluster"

local N = tonumber(os.getenv("BENCH_N") or "200")
local PAR = tonumber(os.getenv("BENCH_PAR") or "8")
local ROUNDS = math.max(1, N // PAR)

local function ms(s) return ("%.1f ms"):format(s * 1000) end

local function stats(xs)
  local t = { table.unpack(xs) }
  table.sort(t)
  local sum = 0
  for _, x in ipairs(t) do sum = sum + x end
  local function p(q) return t[math.max(1, math.ceil(#t * q))] end
  return ("mean %s, median %s, p90 %s, max %s"):format(ms(sum / #t), ms(p(0.5)), ms(p(0.9)), ms(t[#t]))
end

-- A throwaway repository with a few hundred files, so checkouts cost something.
local function repo()
  local dir = assert(beat.fs.tmpdir("beat-bench-par"))
  local function git(...) assert(beat.exec({ "git", ... }, { cwd = dir }).code == 0) end
  git("init", "-q", "-b", "main")
  git("config", "user.name", "bench")
  git("config", "user.email", "bench@localhost")
  for i = 1, tonumber(os.getenv("BENCH_FILES") or "300") do
    beat.fs.mkdir_p(("%s/src/m%d"):format(dir, i % 10))
    assert(beat.fs.write(("%s/src/m%d/f%d.txt"):format(dir, i % 10, i), ("line %d\n"):format(i):rep(20)))
  end
  assert(beat.fs.write(dir .. "/value.txt", "1000000\n"))
  git("add", "-A")
  git("commit", "-q", "-m", "bench")
  return dir
end

local function bench(label, executor)
  local dir = repo()
  local t0 = beat.clock()
  local code, run = beat.strategy("parallel") {
    cwd = dir, quiet = true, prompt = "lower it",
    agent = beat.agent.command { argv = { "sh", "-c", "echo $$ > value.txt" } },
    eval = "sleep 1; cat value.txt", candidates = PAR, max_evals = PAR, max_iterations = ROUNDS,
    max_no_progress = ROUNDS, max_consecutive_failures = ROUNDS, eval_executor = executor,
  }
  local wall = beat.clock() - t0
  assert(code == 0, "the run failed: " .. tostring(run.reason))
  local recs = assert(require("beat.journal").open(run.journal.dir)):records()
  local evals, beyond, rounds = {}, {}, {}
  for _, r in ipairs(recs) do
    if r.event == "eval" and r.iteration ~= 0 then evals[r.iteration] = r end
  end
  local n, infra = 0, 0
  for _, r in ipairs(recs) do
    if r.event == "decision" and r.iteration ~= 0 then
      n = n + 1
      if r.status == "infra" then infra = infra + 1 end
      local e = evals[r.iteration]
      if e then beyond[#beyond + 1] = r.duration_s - 1 end
      local round = r.round
      rounds[round] = rounds[round] or { first = math.huge, last = 0, slowest = 0 }
      local x = rounds[round]
      x.last = math.max(x.last, r.time)
      x.slowest = math.max(x.slowest, r.duration_s)
    end
  end
  local waits = {}
  for _, x in pairs(rounds) do waits[#waits + 1] = x.slowest end
  print(("%-8s %d candidates in %d rounds of %d: %.1f s, %.0f candidates/min (ideal %.1f s, %.0f/min)%s")
    :format(label, n, ROUNDS, PAR, wall, n / wall * 60, ROUNDS * 1.0, PAR * 60,
      infra > 0 and (", %d infra"):format(infra) or ""))
  print(("  per candidate beyond its eval's 1 s: %s"):format(stats(beyond)))
  print(("  per round, its slowest candidate: %s"):format(stats(waits)))
  print(("  per round in all (wall / rounds): %s"):format(ms(wall / ROUNDS)))
  beat.fs.rm_rf(dir)
end

bench("local", nil)
if os.getenv("BENCH_LOCAL_ONLY") then return end

local ok, why = cluster.available()
if not ok then
  print("slurm: skipped: " .. why)
  return
end
local c = assert(cluster.start { cpus = PAR })
local okr, err = pcall(bench, "slurm", beat.slurm { conf = c.conf })
c:stop()
if not okr then error(err, 0) end
