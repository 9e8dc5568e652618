-- How much beat adds to each command it runs. Prints per-spawn times for:
--   shell     a /bin/sh loop running /bin/true (fork + exec, the floor)
--   shim      the same loop running /bin/true under the embedded shim
--             (build/beat-shim, the bytes beat carries and runs from a memfd)
--   __shim    the same loop under `beat __shim`, the fallback (beat's own binary)
--   exec      beat.exec{"/bin/true"} in a loop (everything beat does per command)
-- and the ratios against the shell floor, all measured in this run.
local beat = require "beat"

local N = tonumber(os.getenv("BENCH_N") or "300")
local bin = beat.exepath()
local helper = bin:gsub("[^/]*$", "") .. "beat-shim"

local function per_spawn(cmd)
  local r = assert(beat.exec(cmd))
  assert(r.code == 0, r.stderr)
  return r.duration / N
end

local loop = "i=0; while [ $i -lt %d ]; do %s; i=$((i+1)); done"
local shell = per_spawn(loop:format(N, "/bin/true"))
local shim = beat.fs.exists(helper)
  and per_spawn(loop:format(N, ("%s 0 $$ /bin/true true 3>/dev/null"):format(helper)))
local fallback = per_spawn(loop:format(N, ("%s __shim 0 $$ /bin/true true 3>/dev/null"):format(bin)))
local t0 = beat.clock()
for _ = 1, N do assert(beat.exec { "/bin/true" }.code == 0) end
local exec = (beat.clock() - t0) / N

local function ms(s) return ("%.3f ms"):format(s * 1000) end
print(("spawns per case: %d"):format(N))
print(("shell   fork+exec of /bin/true         %s"):format(ms(shell)))
if shim then
  print(("shim    /bin/true under the shim       %s  (%.2fx shell; shim cost %s)"):format(
    ms(shim), shim / shell, ms(shim - shell)))
end
print(("__shim  /bin/true under beat __shim    %s  (%.2fx shell; fallback cost %s)"):format(
  ms(fallback), fallback / shell, ms(fallback - shell)))
print(("exec    beat.exec{\"/bin/true\"}         %s  (%.2fx shell)"):format(ms(exec), exec / shell))
