-- beat.stdio: lines of a descriptor read from a task, whole writes, claim.
-- Each case runs a recipe in build/beat with real pipes, files and signals.
local beat = require "beat"
local H = require "tests.helpers"

-- A recipe that reads its stdin with beat.stdio and reports each line.
local READER = [[
local beat = require "beat"
local stdio = require "beat.stdio"
local max = tonumber(arg[1])
local input = assert(stdio.lines { max_line = max and math.tointeger(max) or nil })
local ticks = 0
local ticker = beat.go(function()            -- another task, running while we wait
  while true do beat.sleep(0.01) ticks = ticks + 1 end
end)
local n = 0
while true do
  local line, why, size, head = input:read()
  if line then
    n = n + 1
    assert(stdio.write(1, ("line %d %d %s\n"):format(n, #line, line:sub(1, 10))))
    if line == "ticks?" then assert(stdio.write(1, ("ticks %d\n"):format(ticks))) end
  elseif why == "too long" then
    assert(stdio.write(1, ("too-long %d %d %s\n"):format(size, #head, head:sub(1, 5))))
  else
    assert(stdio.write(1, "end " .. why .. "\n"))
    break
  end
end
ticker:cancel()
input:close()
]]

local function reader(dir)
  return H.recipe(dir, READER)
end

describe("beat.stdio", function()
  it("reads lines as they are written while other tasks keep running", function()
    local dir = H.tmpdir()
    local got = {}
    local proc = assert(beat.spawn({ H.bin, "run", reader(dir) }, {
      stdin = true, stdout = function(l) got[#got + 1] = l end }))
    proc:write("first\n")
    local deadline = beat.clock() + 10
    while #got < 1 and beat.clock() < deadline do beat.sleep(0.02) end
    assert.same({ "line 1 5 first" }, got)   -- answered before the input ended
    beat.sleep(0.3)
    proc:write("ticks?\nlast without newline")
    proc:close_stdin()
    local r = proc:wait()
    assert.equal(0, r.code, r.stderr)
    assert.equal("line 2 6 ticks?", got[2])
    local ticks = tonumber(got[3]:match("^ticks (%d+)$"))
    assert.is_true(ticks > 5, got[3])   -- the ticker ran while read() waited
    assert.same({ "line 3 20 last witho", "end eof" }, { got[4], got[5] })
  end)

  it("drops a line longer than max_line, reports its size and first bytes, and goes on", function()
    local dir = H.tmpdir()
    local input = "ok\n" .. ("x"):rep(5000) .. "\nafter\n" .. ("y"):rep(3000)
    local r = H.beat({ "run", reader(dir), "1000" }, { stdin = input })
    assert.equal(0, r.code, r.stderr)
    assert.equal("line 1 2 ok\ntoo-long 5000 1024 xxxxx\nline 2 5 after\ntoo-long 3000 1024 yyyyy\nend eof\n", r.stdout)
  end)

  it("reads a regular file and /dev/null as well as a pipe", function()
    local dir = H.tmpdir()
    H.write(dir .. "/in.txt", "a\n\nbcd\n")
    local r = assert(beat.exec(("%s run %s < %s/in.txt"):format(H.bin, reader(dir), dir)))
    assert.equal(0, r.code, r.stderr)
    assert.equal("line 1 1 a\nline 2 0 \nline 3 3 bcd\nend eof\n", r.stdout)
    r = assert(beat.exec(("%s run %s < /dev/null"):format(H.bin, reader(dir))))
    assert.equal("end eof\n", r.stdout)
  end)

  it("keeps every line, in order, when the writer is much faster than the reader", function()
    local dir = H.tmpdir()
    local r = assert(beat.exec(("seq 1 200000 | %s run %s"):format(H.bin, reader(dir)), { max_output = 64 * 1024 * 1024 }))
    assert.equal(0, r.code, r.stderr)
    local n, ok = 0, true
    for line in r.stdout:gmatch("[^\n]+") do
      n = n + 1
      if n <= 200000 and line ~= ("line %d %d %d"):format(n, #tostring(n), n) then ok = false end
    end
    assert.is_true(ok)
    assert.equal(200001, n)
  end)

  it("writes whole messages, returns a broken pipe as an error, and claims stdout", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local stdio = require "beat.stdio"
      local out = assert(stdio.claim(1, 2))
      print("printed")                        -- fd 1 is stderr now
      assert(stdio.write(out, ("m"):rep(300000) .. "\n"))
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    assert.equal(("m"):rep(300000) .. "\n", r.stdout)
    assert.equal("printed\n", r.stderr)

    recipe = H.recipe(dir, [[
      local beat = require "beat"
      local stdio = require "beat.stdio"
      beat.sleep(0.3)                          -- the reader is gone by now
      local ok, err = stdio.write(1, ("z"):rep(100000))
      io.stderr:write(tostring(ok), " ", tostring(err), "\n")
    ]])
    r = assert(beat.exec(("%s run %s | true"):format(H.bin, recipe)))
    assert.matches("^nil write: Broken pipe", r.stderr)
  end)

  it("raises on bad options and returns nil, reason for a descriptor it cannot read", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local stdio = require "beat.stdio"
      local function err(f, ...) local ok, e = pcall(f, ...) assert(not ok) return (tostring(e):gsub("^.-:%d+: ", "")) end
      print(err(stdio.lines, { fd = -1 }))
      print(err(stdio.lines, { max_line = 0 }))
      print(err(stdio.lines, { bogus = 1 }))
      print(err(stdio.write, 1, 5))
      print(select(2, stdio.lines { fd = 97 }))
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    assert.equal(table.concat({
      "beat.stdio.lines: opts.fd must be a file descriptor (an integer >= 0), got -1",
      "beat.stdio.lines: opts.max_line must be an integer from 1 to 1073741824 (1 GiB), got 0",
      "beat.stdio.lines: unknown option opts.bogus",
      "beat.stdio.write: data must be a string, got number",
      "fd 97: not a pipe, socket, terminal or file",
    }, "\n") .. "\n", r.stdout)
  end)
end)
