-- Benchmark: the engine's own cost (issue 11), next to a bare shell doing
-- the same work, in the same run.
--
--   build/beat run tests/bench/loop.lua          (make bench runs it)
--   BENCH_REPS=9 build/beat run tests/bench/loop.lua
--
-- The loop: `beat loop` with the retry strategy, 20 iterations of an instant
-- fake agent (it adds 1 to the file n) and the check `test $(cat n) -ge 20`,
-- in generated repositories of 1,000 and 20,000 files; next to it a bare
-- `sh` loop running exactly the same commands (the check once before, then
-- agent + check per iteration). Repetitions are interleaved (bare, beat,
-- bare, beat, ...) and every figure is a median, as the machine is noisy.
--
-- Prints one line per target: the figure, the target, PASS or MISS; exits 1
-- on a MISS. Not part of `make test`, never run by CI.
local beat = require "beat"

local REPS = tonumber(os.getenv("BENCH_REPS") or "5")
local SIZES = { 1000, 20000 }
local ITERATIONS = 20
local SPAWNS = 200
local PER_DIR = 100
local BIN = beat.exepath()
local LUA = require("beat.exec").which("lua5.4")

local CHECK = ("test $(cat n) -ge %d"):format(ITERATIONS)
local PROMPT = "add one to n"

local env = {
  GIT_CONFIG_NOSYSTEM = "1", GIT_OPTIONAL_LOCKS = "0",
  GIT_AUTHOR_NAME = "bench", GIT_AUTHOR_EMAIL = "bench@localhost",
  GIT_COMMITTER_NAME = "bench", GIT_COMMITTER_EMAIL = "bench@localhost",
}

local function run(cmd, opts)
  opts = opts or {}
  local r = assert(beat.exec(cmd, opts))
  if r.code ~= 0 then
    error(("%s: exit %d: %s%s"):format(type(cmd) == "table" and table.concat(cmd, " ") or cmd,
      r.code, r.stdout or "", r.stderr or ""), 0)
  end
  return r
end

local median = require("beat.stats").median

local function ms(s) return ("%.2f ms"):format(s * 1000) end

local root = assert(beat.fs.tmpdir("beat-bench-loop"))
local agent = root .. "/agent.sh"
beat.fs.write(agent, "n=$(cat n); echo $((n + 1)) > n\n")

-- A repository of `files` small source-like files, with n = 0, committed.
local function make_repo(files)
  local dir = ("%s/repo-%d"):format(root, files)
  assert(beat.fs.mkdir_p(dir))
  run({ "git", "init", "-q", "-b", "main" }, { cwd = dir, env = env })
  for i = 0, files - 1 do
    local d = ("%s/src/m%03d"):format(dir, i // PER_DIR)
    if i % PER_DIR == 0 then assert(beat.fs.mkdir_p(d)) end
    local f = assert(io.open(("%s/f%05d.c"):format(d, i), "wb"))
    f:write(("/* file %d */\nint f%d(int x) { return x * %d + 1; }\n"):format(i, i, i))
    f:close()
  end
  beat.fs.write(dir .. "/n", "0\n")
  run({ "git", "add", "-A" }, { cwd = dir, env = env })
  run({ "git", "commit", "-q", "-m", "generated" }, { cwd = dir, env = env })
  return dir
end

-- Puts the repository back as generated: n = 0. The runs before stay (their
-- run directories, refs and objects), as in a repository beat has run in
-- before. Nothing is deleted while the bench runs: on ext4 without a journal
-- (this VM's) every file created soon after deletions pays a scan past the
-- recently deleted inodes (find_inode_bit -> recently_deleted), and beat
-- creates files where the bare loop creates none, so deleting the last
-- run's ~70 files before each repetition measured the bench's own deletions.
local function reset(dir)
  beat.fs.write(dir .. "/n", "0\n")
end

local function counted(dir)
  return tonumber(beat.fs.read(dir .. "/n"))
end

local BARE = ([[
sh -c '%s' && exit 0
i=1
while [ $i -le %d ]; do
  sh %s '%s'
  sh -c '%s' && exit 0
  i=$((i + 1))
done
exit 1
]]):format(CHECK, ITERATIONS, agent, PROMPT, CHECK)

local timed = require("lib.timing").timed

local function bare_loop(dir)
  reset(dir)
  local wall, cpu = timed(("(\n%s\n)"):format(BARE), dir)
  assert(counted(dir) == ITERATIONS, "the bare loop did not count to 20")
  return wall, cpu
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function beat_loop(dir)
  reset(dir)
  local wall, cpu, r = timed(("%s loop %s --until %s -a %s --max-iterations %d -q"):format(
    quote(BIN), quote(PROMPT), quote(CHECK), quote("sh " .. agent), ITERATIONS), dir)
  assert(counted(dir) == ITERATIONS, "beat loop did not count to 20: " .. r.stdout .. r.stderr)
  return wall, cpu
end

local results, misses = {}, 0
local function line(what, figure, target, pass)
  if not pass then misses = misses + 1 end
  print(("%-58s %-22s %-14s %s"):format(what, figure, target, pass and "PASS" or "MISS"))
end

local ok, err = pcall(function()
  io.write(("generating repositories of %s files ... "):format(table.concat(SIZES, " and "))) io.flush()
  local repos = {}
  for _, n in ipairs(SIZES) do repos[n] = make_repo(n) end
  beat.sleep(1.1) -- so that no index entry is racily clean
  io.write("done\n")
  -- context, not a target: beat creates ~8 files per iteration (logs, git
  -- objects, ref locks) where the bare loop creates none, so a file system
  -- slow to create files (ext4 without a journal scanning past inodes
  -- deleted in the last ~30 s) shows in the loop's figures. The files made
  -- to time it are deleted at the end, not now (see reset).
  local probe = root .. "/create"
  assert(beat.fs.mkdir_p(probe))
  local t0 = beat.clock()
  for i = 1, 200 do
    local f = assert(io.open(("%s/%d"):format(probe, i), "wb"))
    f:close()
  end
  local create = (beat.clock() - t0) / 200
  print(("creating a file in %s: %.3f ms"):format(root, create * 1000))

  -- the loop, both sizes, interleaved
  for _, n in ipairs(SIZES) do
    results[n] = { bare = {}, beat = {}, bare_cpu = {}, beat_cpu = {} }
    bare_loop(repos[n]) -- warm the page cache and git's index
    beat_loop(repos[n])
  end
  for rep = 1, REPS do
    for _, n in ipairs(SIZES) do
      local res = results[n]
      if rep % 2 == 1 then
        res.bare[rep], res.bare_cpu[rep] = bare_loop(repos[n])
        res.beat[rep], res.beat_cpu[rep] = beat_loop(repos[n])
      else
        res.beat[rep], res.beat_cpu[rep] = beat_loop(repos[n])
        res.bare[rep], res.bare_cpu[rep] = bare_loop(repos[n])
      end
    end
  end

  -- one spawn: beat.exec{"/bin/true"} against a shell's fork+exec of it; the
  -- CPU time of beat's loop is that of a `beat run` doing it, less one doing
  -- nothing
  local spawn_shell, spawn_beat, cpu_shell, cpu_beat = {}, {}, {}, {}
  local shell_loop = ("i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); done"):format(SPAWNS)
  local spawns = root .. "/spawns.lua"
  beat.fs.write(spawns, [[
    local beat = require "beat"
    local t0 = beat.clock()
    for _ = 1, tonumber(arg[1]) do assert(beat.exec { "/bin/true" }.code == 0) end
    print(beat.clock() - t0)
  ]])
  for rep = 1, REPS do
    local wall, cpu = timed(shell_loop)
    spawn_shell[rep], cpu_shell[rep] = wall / SPAWNS, cpu / SPAWNS
    local _, cpu0 = timed(("%s run %s 0"):format(quote(BIN), quote(spawns)))
    local _, cpu1, r = timed(("%s run %s %d"):format(quote(BIN), quote(spawns), SPAWNS))
    spawn_beat[rep] = tonumber(r.stdout:match("^%s*([%d.e-]+)")) / SPAWNS
    cpu_beat[rep] = (cpu1 - cpu0) / SPAWNS
  end

  -- start-up: `beat version` against `lua5.4 -e ''`, 20 runs from a shell loop
  local start_beat, start_lua = {}, {}
  local runs = 20
  local start_loop = "i=0; while [ $i -lt %d ]; do %s >/dev/null; i=$((i+1)); done"
  for rep = 1, REPS do
    start_beat[rep] = run(start_loop:format(runs, BIN .. " version")).duration / runs
    if LUA then start_lua[rep] = run(start_loop:format(runs, LUA .. " -e ''")).duration / runs end
  end

  -- peak RSS of a loop after 10 and after 200 iterations (the check passes on the last)
  local function peak_rss(iterations)
    local recipe = root .. "/rss.lua"
    beat.fs.write(recipe, ([[
      local beat = require "beat"
      local code = beat.strategy("retry") {
        agent = beat.agent.command { argv = { "sh", %q, "{prompt}" } },
        prompt = "add one to n", check = "test $(cat n) -ge %d", max_iterations = %d, quiet = true,
      }
      for line in io.lines("/proc/self/status") do
        local kb = line:match("^VmHWM:%%s*(%%d+)")
        if kb then print(kb) end
      end
      return code
    ]]):format(agent, iterations, iterations))
    reset(repos[SIZES[1]])
    local r = run({ BIN, "run", recipe }, { cwd = repos[SIZES[1]] })
    assert(counted(repos[SIZES[1]]) == iterations, "the RSS loop did not run every iteration")
    return tonumber(r.stdout:match("(%d+)%s*$"))
  end
  local rss10, rss200 = peak_rss(10), peak_rss(200)

  print(("\nmedians of %d interleaved repetitions; %d iterations per loop"):format(REPS, ITERATIONS))
  print(("%-58s %-22s %-14s %s"):format("what", "measured", "target", ""))
  for _, n in ipairs(SIZES) do
    local bare, bt = median(results[n].bare), median(results[n].beat)
    local bare_cpu, beat_cpu = median(results[n].bare_cpu), median(results[n].beat_cpu)
    print(("%d files: a loop of %d iterations takes %s under beat, %s as bare sh;")
      :format(n, ITERATIONS, ms(bt), ms(bare)))
    print(("  CPU time (beat and everything it ran) %s against %s: %s per iteration")
      :format(ms(beat_cpu), ms(bare_cpu), ms((beat_cpu - bare_cpu) / ITERATIONS)))
    line(("%d files: engine overhead per iteration (beat-bare)/%d"):format(n, ITERATIONS),
      ms((bt - bare) / ITERATIONS), "<= 3 ms", (bt - bare) / ITERATIONS <= 0.003)
    line(("%d files: beat / bare"):format(n), ("%.2fx"):format(bt / bare), "<= 1.3x", bt / bare <= 1.3)
    -- the spread the medians come from: on a noisy host a figure near its target
    -- can land on either side of it
    local ratios = {}
    for rep = 1, REPS do ratios[rep] = ("%.2fx"):format(results[n].beat[rep] / results[n].bare[rep]) end
    print(("  beat / bare in each repetition: %s"):format(table.concat(ratios, " ")))
  end
  local sh, sb = median(spawn_shell), median(spawn_beat)
  line(("one spawn: beat.exec %s, shell fork+exec %s"):format(ms(sb), ms(sh)),
    ("%+.2f ms"):format((sb - sh) * 1000), "<= +0.3 ms", sb - sh <= 0.0003)
  print(("  CPU time per spawn: beat.exec %s, shell %s (%+.2f ms)"):format(
    ms(median(cpu_beat)), ms(median(cpu_shell)), (median(cpu_beat) - median(cpu_shell)) * 1000))
  if LUA then
    local vb, vl = median(start_beat), median(start_lua)
    line(("start: beat version %s, lua5.4 -e '' %s"):format(ms(vb), ms(vl)),
      ("%.2fx"):format(vb / vl), "<= 2x", vb / vl <= 2)
  else
    line("start: beat version vs lua5.4 -e '' (lua5.4 not installed)", "-", "<= 2x", false)
  end
  line(("peak RSS: after 10 iterations %d kB, after 200 %d kB"):format(rss10, rss200),
    ("%+d kB"):format(rss200 - rss10), "within 1 MB", math.abs(rss200 - rss10) <= 1024)
end)
beat.fs.rm_rf(root)
if not ok then error(err, 0) end
if misses > 0 then
  print(("%d target%s missed"):format(misses, misses == 1 and "" or "s"))
  return 1
end
return 0
