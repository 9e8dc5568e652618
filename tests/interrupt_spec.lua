-- Ctrl-C and SIGTERM reach Lua code that never returns to the loop: a busy
-- recipe, stop_when hook or score function is interrupted (debug hook set
-- from the signal handler), and the run's cleanup still happens.
local beat = require "beat"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"

-- Starts `beat run recipe` in dir; returns the proc once the recipe wrote
-- the file `ready` (it is about to spin).
local function start(dir, src, env)
  local recipe = H.recipe(dir, src)
  local p = assert(beat.spawn({ H.bin, "run", recipe }, { cwd = dir, env = env, grace = 5 }))
  local deadline = beat.clock() + 30 -- loose: a loaded machine runs the first iterations slowly
  while not beat.fs.exists(dir .. "/ready") and beat.clock() < deadline do beat.sleep(0.05) end
  assert(beat.fs.exists(dir .. "/ready"), "the recipe never got busy")
  return p
end

-- Lua that marks the recipe busy from now on, then spins forever.
local SPIN = [[io.open("ready", "w"):close(); while true do end]]

describe("a busy Lua loop", function()
  it("in a recipe, ends with 130 on SIGINT, running its <close> variables", function()
    local dir = H.tmpdir()
    local p = start(dir, [[
      local closed <close> = setmetatable({}, { __close = function() io.stderr:write("cleanup ran\n") end })
      ]] .. SPIN)
    p:kill("INT")
    local r = assert(p:wait(20))
    assert.equal(130, r.code, r.stderr)
    assert.matches("interrupted, stopping", r.stderr)
    assert.matches("cleanup ran", r.stderr)
    assert.is_nil(r.stderr:find("interrupted again", 1, true), r.stderr)
  end)

  it("in a recipe, ends with 143 on SIGTERM", function()
    local dir = H.tmpdir()
    local p = start(dir, SPIN)
    p:kill("TERM")
    local r = assert(p:wait(20))
    assert.equal(143, r.code, r.stderr)
    assert.matches("terminated, stopping", r.stderr)
  end)

  it("inside a coroutine the recipe resumes itself is interrupted too", function()
    local dir = H.tmpdir()
    local p = start(dir, [[
      local gen = coroutine.wrap(function() coroutine.yield(1); ]] .. SPIN .. [[ end)
      gen()
      local ok, err = coroutine.resume(coroutine.create(function() gen() end))
      io.stderr:write("resume returned: ", tostring(err), "\n")
      require("beat").sleep(0)]])
    p:kill("INT")
    local r = assert(p:wait(20))
    assert.equal(130, r.code, r.stderr)
    assert.matches("resume returned: task cancelled", r.stderr)
  end)

  it("that catches the cancellation is ended by a second signal at once", function()
    local dir = H.tmpdir()
    local p = start(dir, [[
      require("beat").shield(function() ]] .. SPIN .. [[ end)]])
    p:kill("INT")
    beat.sleep(0.5)
    p:kill("INT")
    local r = assert(p:wait(20))
    assert.equal(130, r.code, r.stderr)
    assert.matches("interrupted again, exiting now", r.stderr)
  end)

  it("inside a long C call is ended by a second signal, with every child process", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local p = start(dir, ([[
      local beat = require "beat"
      beat.spawn("sleep %s")
      io.open("ready", "w"):close()
      local s = ("a"):rep(100000)
      s:find(".-.-.-b")    -- backtracks for hours, inside one C function
    ]]):format(m))
    assert.is_true(H.wait_started(m))
    p:kill("INT")
    beat.sleep(0.3)
    p:kill("INT")
    local r = assert(p:wait(20))
    assert.equal(130, r.code, r.stderr)
    assert.matches("interrupted again, exiting now", r.stderr)
    assert.same({}, H.wait_gone(m, 5))
  end)

  it("in a stop_when hook is interrupted: work tree back at the best, interrupted record, summary", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local p = start(dir, ([[
      local beat = require "beat"
      return (beat.strategy("optimize") {
        agent = beat.agent.named(%q), prompt = "lower it", eval = "cat value.txt",
        max_iterations = 5,
        stop_when = function(s)
          if s.iteration >= 1 then
            io.open("value.txt", "w"):write("half-done\n"):close()
            %s
          end
        end,
      })]]):format(SET, SPIN), { VALUES = "90 80" })
    p:kill("INT")
    local r = assert(p:wait(30))
    assert.equal(130, r.code, r.stdout .. r.stderr)
    assert.equal("90\n", H.read(dir .. "/value.txt"))
    local recs = H.last_run(dir)
    assert.equal("interrupted", recs[#recs].event)
    assert.matches("interrupted: interrupted by a signal", r.stdout)
    assert.matches("journal: ", r.stdout)
  end)

  it("in a score function is interrupted on SIGTERM: the candidate is undone", function()
    local dir = H.git_repo { ["value.txt"] = "100\n" }
    local p = start(dir, ([[
      local beat = require "beat"
      return (beat.strategy("optimize") {
        agent = beat.agent.named(%q), prompt = "lower it", eval = "cat value.txt",
        max_iterations = 5,
        score = function(r, ctx)
          if r.stdout == "90\n" then %s end
          return beat.score.last_number(r, ctx)
        end,
      })]]):format(SET, SPIN), { VALUES = "90" })
    p:kill("TERM")
    local r = assert(p:wait(30))
    assert.equal(143, r.code, r.stdout .. r.stderr)
    assert.equal("100\n", H.read(dir .. "/value.txt"))
    local recs = H.last_run(dir)
    assert.equal("interrupted", recs[#recs].event)
    assert.matches("the work tree is as it was before the run", r.stdout)
  end)
end)

describe("a busy REPL line", function()
  it("is cancelled by Ctrl-C and the REPL goes on", function()
    local dir = H.tmpdir()
    local p = assert(beat.spawn({ H.bin, "repl" }, { cwd = dir, stdin = true, grace = 3,
      env = { HOME = dir } }))
    p:write('io.open("ready", "w"):close(); while true do end\n')
    local deadline = beat.clock() + 10
    while not beat.fs.exists(dir .. "/ready") and beat.clock() < deadline do beat.sleep(0.05) end
    p:kill("INT")
    p:write('print("still " .. "here")\n')
    p:close_stdin() -- end of input: the REPL leaves
    local r = assert(p:wait(20))
    assert.equal(0, r.code, r.stderr)
    assert.matches("cancelled\n.*still here", r.stdout)
  end)
end)

describe("an idle loop", function()
  it("still takes Ctrl-C between events, not inside a task's code", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local p = start(dir, ([[
      local beat = require "beat"
      local f = io.open("pid", "w"); f:write(require("beat._runtime").pid()); f:close()
      io.open("ready", "w"):close()
      local ok, err = pcall(beat.exec, "sleep %s")
      io.stderr:write("exec returned: ", tostring(err), "\n")
    ]]):format(m))
    assert.is_true(H.wait_started(m))
    -- to beat alone, as Ctrl-C (its commands run in sessions of their own):
    -- p:kill would signal the whole tree, and the sleep ending on its own
    -- SIGINT would race beat's cancel of the exec
    assert.equal(0, beat.exec({ "kill", "-INT", H.read(dir .. "/pid") }).code)
    local r = assert(p:wait(20))
    assert.equal(130, r.code, r.stderr)
    assert.matches("exec returned: task cancelled", r.stderr)
    assert.same({}, H.wait_gone(m, 2))
  end)
end)
