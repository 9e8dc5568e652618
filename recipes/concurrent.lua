-- concurrent.lua: several commands at once, each in its own task.
-- Shows beat.go/beat.all, streaming output line by line, timeouts and
-- cancellation. Run: beat run recipes/concurrent.lua
local beat = require "beat"

local function job(name, cmd, opts)
  return beat.go(function()
    opts = opts or {}
    opts.stdout = function(line) print(("[%-6s] %s"):format(name, line)) end
    local r = assert(beat.exec(cmd, opts))
    return ("%-6s exit %3d in %.2fs%s"):format(name, r.code, r.duration,
      r.timed_out and " (timed out)" or "")
  end)
end

local t0 = beat.clock()
local jobs = {
  job("count", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"),
  job("kernel", { "uname", "-sr" }),
  job("slow", "echo 'this one takes too long'; sleep 30", { timeout = "700ms", grace = "200ms" }),
  job("primes", "seq 2 60 | factor | awk 'NF == 2 { printf \"%s \", $2 } END { print \"\" }'"),
}
for _, summary in ipairs(beat.all(jobs)) do print(summary) end
print(("four commands, %.2fs wall time"):format(beat.clock() - t0))
