-- How much beat adds to each command it runs, piece by piece. Per spawn,
-- wall and CPU time (user + system of everything involved, from the shell's
-- `times`), medians of interleaved repetitions:
--   shell     a /bin/sh loop running /bin/true (fork + exec, the floor)
--   shim      the same loop running /bin/true under the embedded shim
--             (build/beat-shim, the bytes beat carries and runs from a memfd)
--   exec      beat.exec{"/bin/true"} in a loop in `beat run` (everything beat
--             does per command; its CPU is that of the run less a run doing
--             nothing), and how much of that CPU is beat's own process
--   __shim    the shell loop under `beat __shim`, the fallback (beat's own
--             binary; fewer spawns, it is slow)
-- The target (one spawn <= +0.3 ms over the shell) is checked by loop.lua;
-- this one says where the time goes. BENCH_N spawns per case (300),
-- BENCH_REPS repetitions (5).
local beat = require "beat"

local N = tonumber(os.getenv("BENCH_N") or "300")
local REPS = tonumber(os.getenv("BENCH_REPS") or "5")
local bin = beat.exepath()
local helper = bin:gsub("[^/]*$", "") .. "beat-shim"

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local timed = require("lib.timing").timed

local median = require("beat.stats").median

local root = assert(beat.fs.tmpdir("beat-bench-spawn"))
local script = root .. "/spawns.lua"
beat.fs.write(script, [[
  local beat = require "beat"
  local n = tonumber(arg[1])
  local function own() -- beat's own CPU time so far, in clock ticks
    local f = assert(io.open("/proc/self/stat"))
    local stat = f:read("a")
    f:close()
    local ut, st = stat:match("^%d+ %b() %S+" .. (" %S+"):rep(10) .. " (%d+) (%d+)")
    return tonumber(ut) + tonumber(st)
  end
  local t0, c0 = beat.clock(), own()
  for _ = 1, n do assert(beat.exec { "/bin/true" }.code == 0) end
  print(beat.clock() - t0, own() - c0)
]])
local TICK = 0.01 -- clock ticks per second: 100 on Linux

local loop = "i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done"
local cases = {
  { name = "shell", what = "fork+exec of /bin/true", n = N, script = loop:format(N, "/bin/true") },
}
if beat.fs.exists(helper) then
  cases[#cases + 1] = { name = "shim", what = "/bin/true under the shim", n = N,
    script = loop:format(N, ("%s 0 $$ /bin/true true 3>/dev/null"):format(quote(helper))) }
end
cases[#cases + 1] = { name = "exec", what = 'beat.exec{"/bin/true"}', n = N, exec = true }
local FALLBACK_N = math.max(1, N // 10)
cases[#cases + 1] = { name = "__shim", what = "/bin/true under beat __shim", n = FALLBACK_N,
  script = loop:format(FALLBACK_N, ("%s __shim 0 $$ /bin/true true 3>/dev/null"):format(quote(bin))) }

for _, c in ipairs(cases) do c.wall, c.cpu, c.own = {}, {}, {} end
for rep = 1, REPS do
  for i = 1, #cases do
    local c = cases[rep % 2 == 1 and i or #cases + 1 - i] -- interleaved, alternating order
    if c.exec then
      local _, cpu0 = timed(("%s run %s 0"):format(quote(bin), quote(script)))
      local _, cpu1, r = timed(("%s run %s %d"):format(quote(bin), quote(script), c.n))
      local wall, ticks = r.stdout:match("^%s*(%S+)%s+(%S+)")
      c.wall[rep], c.cpu[rep] = tonumber(wall) / c.n, (cpu1 - cpu0) / c.n
      c.own[rep] = tonumber(ticks) * TICK / c.n
    else
      local wall, cpu = timed(c.script)
      c.wall[rep], c.cpu[rep] = wall / c.n, cpu / c.n
    end
  end
end

local function ms(s) return ("%.3f ms"):format(s * 1000) end
local shell = cases[1]
local sw, sc = median(shell.wall), median(shell.cpu)
print(("per spawn, medians of %d interleaved repetitions of %d spawns (__shim: %d)"):format(REPS, N, FALLBACK_N))
print(("%-7s %-30s %-10s %-10s %s"):format("case", "what", "wall", "CPU", "over the shell (wall, CPU)"))
for _, c in ipairs(cases) do
  local w, cpu = median(c.wall), median(c.cpu)
  local over = c == shell and "" or ("%+.3f ms, %+.3f ms"):format((w - sw) * 1000, (cpu - sc) * 1000)
  print(("%-7s %-30s %-10s %-10s %s"):format(c.name, c.what, ms(w), ms(cpu), over))
  if c.exec then
    print(("        of which beat's own process: %s of CPU"):format(ms(median(c.own))))
  end
end
beat.fs.rm_rf(root)
