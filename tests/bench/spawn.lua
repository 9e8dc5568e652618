-- How much beat adds to each command it runs. Prints per-spawn times for:
--   shell    a /bin/sh loop running /bin/true (fork + exec, the floor)
--   shim     the same loop running /bin/true under `beat __shim` (the shim's own cost)
--   exec     beat.exec{"/bin/true"} in a loop (everything beat does per command)
-- and the ratios against the shell floor, all measured in this run.
local beat = require "beat"
local runtime = require "beat._runtime"

local N = tonumber(os.getenv("BENCH_N") or "300")
local bin = runtime.exepath()

local function per_spawn(cmd)
  local r = assert(beat.exec(cmd))
  assert(r.code == 0, r.stderr)
  return r.duration / N
end

local loop = "i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done"
local shell = per_spawn(loop:format(N, "/bin/true"))
local shim = per_spawn(loop:format(N, ("%s __shim 0 $$ /bin/true true 3>/dev/null"):format(bin)))
local t0 = beat.clock()
for _ = 1, N do assert(beat.exec { "/bin/true" }.code == 0) end
local exec = (beat.clock() - t0) / N

local function ms(s) return ("%.3f ms"):format(s * 1000) end
print(("spawns per case: %d"):format(N))
print(("shell  fork+exec of /bin/true        %s"):format(ms(shell)))
print(("shim   /bin/true under beat __shim   %s  (%.2fx shell; shim cost %s)"):format(
  ms(shim), shim / shell, ms(shim - shell)))
print(("exec   beat.exec{\"/bin/true\"}        %s  (%.2fx shell)"):format(ms(exec), exec / shell))
