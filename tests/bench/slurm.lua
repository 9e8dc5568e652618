-- Throughput and per-command overhead of beat.slurm on the single-node test
-- cluster (tests/fixtures/slurm): numbers for docs/scale.md. Not part of
-- `make test`; run with `build/beat run tests/bench/slurm.lua` (or `make bench`).
--
--   startup   the cluster from nothing until `srun hostname` works
--   srun      a shell loop of `srun true`: Slurm's own latency per command
--   exec      ex:exec{"true"} in a loop: the same through beat (srun + beat's
--             guard, output relay, bookkeeping); the difference is beat's share
--   sweep     N commands of `sleep 1`, PAR at a time (the node declares PAR CPUs
--             on this 2-core machine), through ex:exec, then through beat.exec
--             locally, then as one `sbatch --array` for comparison
-- Environment: BENCH_N (200), BENCH_PAR (8), BENCH_CPUS (the node's CPUs,
-- default BENCH_PAR), BENCH_LAT (50 latency samples).
local beat = require "beat"
package.path = beat.fs.cwd() .. "/?.lua;" .. package.path
local cluster = require "tests.fixtures.slurm.cluster"

local N = tonumber(os.getenv("BENCH_N") or "200")
local PAR = tonumber(os.getenv("BENCH_PAR") or "8")
local LAT = tonumber(os.getenv("BENCH_LAT") or "50")
local CPUS = tonumber(os.getenv("BENCH_CPUS") or tostring(PAR))

local ok, why = cluster.available()
if not ok then
  print("skipped: " .. why)
  return
end

local c = assert(cluster.start { cpus = CPUS })
local ex = beat.slurm { conf = c.conf }

local function ms(s) return ("%.1f ms"):format(s * 1000) end

local median = require("beat.stats").median

local function pct(xs, p)
  local t = { table.unpack(xs) }
  table.sort(t)
  return t[math.max(1, math.ceil(#t * p))]
end

local function run(fn)
  local okr, err = pcall(fn)
  if not okr then
    c:stop()
    error(err, 0)
  end
end

run(function()
  print(("cluster: 1 node, %d CPUs declared on %s cores; started in %.2f s"):format(
    CPUS, assert(beat.exec { "nproc" }).stdout:match("%d+"), c.startup))

  -- Slurm's own latency: srun from a shell, no beat in the loop (each
  -- sample timed by the shell; two `date` forks add ~2 ms)
  local loop = ("i=0; while [ $i -lt %d ]; do t0=$(date +%%s%%N); srun true || exit 1; " ..
    "t1=$(date +%%s%%N); echo $((t1-t0)); i=$((i+1)); done"):format(LAT)
  local r = assert(beat.exec(loop, { env = c.env }))
  assert(r.code == 0, r.stderr)
  local sruns = {}
  for ns in r.stdout:gmatch("%d+") do sruns[#sruns + 1] = tonumber(ns) / 1e9 end
  local srun = median(sruns)

  -- srun through beat.exec and the same command through the executor,
  -- interleaved so that the machine's load drifts equally on both
  local plain, durs, locs = {}, {}, {}
  for i = 1, LAT do
    local x = assert(beat.exec({ "srun", "true" }, { env = c.env }))
    assert(x.code == 0, x.stderr)
    plain[i] = x.duration
    local t1 = beat.clock()
    x = assert(ex:exec({ "true" }, { run_id = "lat", iteration = i }))
    assert(x.code == 0 and not x.infra_error, x.stderr)
    durs[i] = beat.clock() - t1
    locs[i] = assert(beat.exec { "true" }).duration
  end
  local exec, viaexec, loc = median(durs), median(plain), median(locs)
  print(("latency of one command (median of %d, one at a time):"):format(LAT))
  print(("  srun true from a shell              %s"):format(ms(srun)))
  print(("  beat.exec{\"srun\", \"true\"}          %s"):format(ms(viaexec)))
  print(("  ex:exec{\"true\"} (beat.slurm)        %s  (the executor's own share: %s)")
    :format(ms(exec), ms(exec - viaexec)))
  print(("  beat.exec{\"true\"} locally           %s  (beat.exec's own share)"):format(ms(loc)))

  -- the sweep: N one-second commands, PAR at a time
  local function sweep(label, one)
    local next_i, results = 0, {}
    local t_start = beat.clock()
    local workers = {}
    for w = 1, PAR do
      workers[w] = beat.go(function()
        while true do
          next_i = next_i + 1
          local i = next_i
          if i > N then return end
          results[i] = one(i)
        end
      end)
    end
    beat.all(workers)
    local wall = beat.clock() - t_start
    local ideal = math.ceil(N / PAR) * 1.0
    local over, mean = {}, 0
    for i = 1, N do
      over[i] = results[i] - 1.0
      mean = mean + over[i] / N
    end
    print(("  %-20s %6.1f s  %4.0f commands/min  (ideal %.0f s, %.0f/min)"):format(
      label, wall, N / wall * 60, ideal, N / ideal * 60))
    print(("    per command beyond its 1 s: mean %s, median %s, p90 %s, max %s"):format(
      ms(mean), ms(median(over)), ms(pct(over, 0.9)), ms(pct(over, 1))))
    return wall
  end

  -- what one srun costs the machine beat runs on, sampled mid-sweep
  local function srun_footprint()
    local rss, threads, n = 0, 0, 0
    local p = io.popen("pgrep -x srun")
    for pid in p:lines() do
      local f = io.open("/proc/" .. pid .. "/status")
      if f then
        local st = f:read("a")
        f:close()
        rss = rss + (tonumber(st:match("VmRSS:%s*(%d+)")) or 0)
        threads = threads + (tonumber(st:match("Threads:%s*(%d+)")) or 0)
        n = n + 1
      end
    end
    p:close()
    return n, rss, threads
  end

  print(("sweep: %d commands of `sleep 1`, %d at a time:"):format(N, PAR))
  local queued = {}
  local sample = beat.go(function()
    beat.sleep(3)
    return { srun_footprint() }
  end)
  sweep("beat.slurm", function(i)
    local x = assert(ex:exec({ "sleep", "1" }, { run_id = "sweep", iteration = i }))
    assert(x.code == 0 and not x.infra_error, x.infra_error or x.stderr)
    queued[#queued + 1] = x.queued
    return x.duration
  end)
  local waited = 0
  for _, q in ipairs(queued) do if q > 0.5 then waited = waited + 1 end end
  print(("    of which submission to start on the node: median %s, p90 %s, max %s; " ..
    "%d of %d waited > 0.5 s for a CPU"):format(ms(median(queued)), ms(pct(queued, 0.9)),
    ms(pct(queued, 1)), waited, N))
  local fp = sample:wait()
  if fp[1] > 0 then
    -- srun forks a helper per job, so there are about 2 processes a command
    print(("    on beat's machine: %d srun processes for %d running commands, %.1f MB RSS " ..
      "and %.0f threads per command"):format(fp[1], PAR, fp[2] / 1024 / PAR, fp[3] / PAR))
  end
  sweep("beat.exec (local)", function()
    local x = assert(beat.exec { "sleep", "1" })
    assert(x.code == 0)
    return x.duration
  end)

  -- dispatch rate: commands that do nothing, PAR at a time
  local t_d = beat.clock()
  local next_d = 0
  local ws = {}
  for w = 1, PAR do
    ws[w] = beat.go(function()
      while true do
        next_d = next_d + 1
        if next_d > N then return end
        local x = assert(ex:exec({ "true" }, { run_id = "dispatch", iteration = next_d }))
        assert(x.code == 0 and not x.infra_error, x.infra_error or x.stderr)
      end
    end)
  end
  beat.all(ws)
  local wall_d = beat.clock() - t_d
  print(("  %-20s %6.1f s  %4.0f commands/min: the most this node, controller and beat " ..
    "dispatch here"):format("the same with `true`", wall_d, N / wall_d * 60))

  -- one job array of N tasks, %PAR at a time, for comparison
  local dir = assert(beat.fs.tmpdir("beat-bench-array"))
  local t_arr = beat.clock()
  local sb = assert(beat.exec({ "sbatch", "--parsable", "--job-name=beat-bench-array",
    ("--array=1-%d%%%d"):format(N, PAR), "--output=/dev/null", "--chdir=" .. dir,
    "--wrap=sleep 1" }, { env = c.env }))
  assert(sb.code == 0, sb.stderr)
  local submit = beat.clock() - t_arr
  local n
  repeat
    beat.sleep(0.2)
    n = #c:queue()
  until n == 0
  local wall = beat.clock() - t_arr
  print(("  %-20s %6.1f s  %4.0f commands/min  (submitting the whole array: %s; no output " ..
    "streamed, no per-command result)"):format("sbatch --array", wall, N / wall * 60, ms(submit)))
  beat.fs.rm_rf(dir)
end)

c:stop()
