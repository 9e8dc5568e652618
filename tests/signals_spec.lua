-- beat.signals: one table of signal names and numbers, this machine's.
local beat = require "beat"
local signals = require "beat.signals"

--- What the shell's `kill -l N` says the signals 1..31 are called here.
local shell_numbers
local function shell_number(name)
  if not shell_numbers then
    shell_numbers = {}
    local r = assert(beat.exec({ "sh", "-c", 'for n in $(seq 1 31); do echo "$n $(kill -l $n)"; done' }))
    for n, nm in r.stdout:gmatch("(%d+) (%u+%d*)\n") do shell_numbers[nm] = tonumber(n) end
  end
  return shell_numbers[name]
end

describe("beat.signals", function()
  it("gives this machine's numbers and names, both ways", function()
    for _, name in ipairs { "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1",
      "SEGV", "USR2", "PIPE", "ALRM", "TERM", "XCPU", "XFSZ", "CONT", "STOP" } do
      local n = shell_number(name)
      assert.equal(n, signals.number(name), name)
      assert.equal(n, signals.number("SIG" .. name), name)
      assert.equal(n, signals.number(name:lower()), name)
      assert.equal("SIG" .. name, signals.name(n), name)
    end
    assert.equal(15, signals.number(15))
    assert.is_nil(signals.number("NOSUCH"))
    assert.is_nil(signals.number({}))
    assert.is_nil(signals.name(0))
  end)

  it("names the signal that killed an eval in its score, from the same table", function()
    local bus = shell_number("BUS")
    local r = assert(beat.exec({ "sh", "-c", "kill -BUS $$" }))
    assert.equal(bus, r.signal)
    local _, why = beat.score.exit(r)
    assert.equal(("eval was killed by signal %d (SIGBUS)"):format(bus), why)
  end)
end)
