local beat = require "beat"
local H = require "tests.helpers"

describe("tasks", function()
  it("run concurrently and return their results through wait", function()
    local order = {}
    local a = beat.go(function(x) beat.sleep(0.2); order[#order + 1] = "a"; return x * 2, "more" end, 21)
    local b = beat.go(function() beat.sleep(0.05); order[#order + 1] = "b"; return "b" end)
    local x, more = a:wait()
    assert.equal(42, x)
    assert.equal("more", more)
    assert.equal("b", b:wait())
    assert.same({ "b", "a" }, order)
  end)

  it("re-raise a task's error in wait with the task's traceback", function()
    local t = beat.go(function()
      beat.sleep(0.01)
      error("boom in task")
    end)
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.matches("task_spec.lua:%d+: boom in task", err)
    assert.matches("stack traceback", err)
  end)

  it("wait for several with beat.all", function()
    local ts = {}
    for i = 1, 5 do ts[i] = beat.go(function() beat.sleep(0.01 * (6 - i)); return i end) end
    assert.same({ 1, 2, 3, 4, 5 }, beat.all(ts))
  end)

  it("cancel ends the task's process before the task moves on, and runs its <close> variables", function()
    local m = H.marker()
    local closed = false
    local t = beat.go(function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end })
      beat.exec(("sleep %s"):format(m), { grace = 0.2 })
      error("not reached")
    end)
    assert.is_true(H.wait_started(m))
    t:cancel()
    t:join()          -- the blocking call returns once the process is gone
    assert.equal("cancelled", t.status)
    assert.is_true(closed)
    assert.same({}, H.pids_with(m))
    local ok, err = pcall(t.wait, t)
    assert.is_false(ok)
    assert.is_true(beat.is_cancelled(err))
  end)

  it("lets a cancelled task catch the cancellation and clean up inside beat.shield", function()
    local log = {}
    local t = beat.go(function()
      local ok, err = pcall(beat.sleep, 10)
      log[#log + 1] = beat.is_cancelled(err) and "cancelled" or tostring(ok)
      beat.shield(function()
        beat.sleep(0.01) -- cleanup that waits
        log[#log + 1] = "cleaned"
      end)
      return "finished"
    end)
    t:cancel()
    assert.equal("finished", t:wait())
    assert.same({ "cancelled", "cleaned" }, log)
  end)

  it("keeps a cancellation that a pcall swallowed: the next blocking call raises again", function()
    local reached = false
    local t = beat.go(function()
      pcall(beat.sleep, 10)
      pcall(beat.sleep, 10)     -- raises at once, does not wait 10 s
      beat.sleep(10)
      reached = true
    end)
    t:cancel()
    assert.equal("cancelled", t.status)
    assert.is_false(reached)
  end)

  it("treats a bare coroutine.yield() in a task as giving other tasks a turn", function()
    local order = {}
    local a = beat.go(function() order[#order + 1] = "a1"; coroutine.yield(); order[#order + 1] = "a2" end)
    local b = beat.go(function() order[#order + 1] = "b" end)
    a:wait()
    b:wait()
    assert.same({ "a1", "b", "a2" }, order)
  end)

  it("does not report a failed task that is waited for later", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      local t = beat.go(function() error("handled later") end)
      assert(not pcall(t.wait, t))
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code)
    assert.equal("", r.stderr)
  end)

  it("end the processes a task spawned when the task finishes", function()
    local m = H.marker()
    local t = beat.go(function()
      beat.spawn(("sleep %s"):format(m), { grace = 0.1 })
      beat.sleep(0.2)
    end)
    t:wait()
    assert.same({}, H.wait_gone(m, 2))
  end)

  it("raise a clear error when a blocking call runs outside a task", function()
    local co = coroutine.create(function() return beat.sleep(0) end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("beat.sleep must be called inside a task", err)
  end)

  it("validate durations", function()
    assert.equal(90, beat.duration("1m30s"))
    assert.equal(0.5, beat.duration("500ms"))
    assert.equal(7200, beat.duration("2h"))
    assert.equal(3, beat.duration(3))
    for _, bad in ipairs { "abc", "-1s", "5x", "", "1e400s" } do
      local ok, err = pcall(beat.duration, bad)
      assert.is_false(ok, bad)
      assert.matches("beat.duration: duration", err)
    end
    assert.has_error(function() beat.duration(-1) end)
    assert.has_error(function() beat.sleep("soon") end)
  end)

  it("give wall and monotonic clocks", function()
    assert.is_true(math.abs(beat.now() - os.time()) < 2)
    local a = beat.clock()
    beat.sleep(0.05)
    assert.is_true(beat.clock() - a >= 0.04)
  end)

  it("cancel_all called inside a task cancels the other tasks first, then raises in that one", function()
    -- in a beat of its own: cancel_all cancels every task, the test's too
    local dir = H.tmpdir()
    local r = H.beat { "run", H.recipe(dir, [[
      local beat = require "beat"
      local task = require "beat.task"
      local other = beat.go(function()
        local ok, err = pcall(beat.sleep, 10)
        print("other: " .. tostring(err))
      end)
      local me = beat.go(function()
        beat.sleep(0)
        local ok, err = pcall(task.cancel_all)
        print("me: " .. tostring(err))
      end)
      me:join()
    ]]) }
    assert.equal("other: task cancelled\nme: task cancelled\n", r.stdout, r.stderr)
  end)

  it("keep coroutine.resume and coroutine.wrap working as the library's", function()
    local co = coroutine.create(function(a) local b = coroutine.yield(a + 1); error({ b }) end)
    assert.same({ true, 2 }, { coroutine.resume(co, 1) })
    local ok, err = coroutine.resume(co, "x")
    assert.is_false(ok)
    assert.same({ "x" }, err)
    assert.same({ false, "cannot resume dead coroutine" }, { coroutine.resume(co) })
    assert.has_error(function() coroutine.resume(42) end)
    local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
    assert.same({ 1, 2, 3 }, { gen(), gen(), gen() })
    local bad = coroutine.wrap(function() error("inside") end)
    local ok2, err2 = pcall(bad)
    assert.is_false(ok2)
    assert.matches("task_spec.lua:%d+: inside", err2)
    assert.has_error(function() coroutine.wrap(42) end)
  end)
end)

describe("beat.cpus", function()
  it("counts the CPUs beat may run on, as nproc does", function()
    local nproc = assert(beat.exec { "nproc" })
    assert.equal(tonumber(nproc.stdout), beat.cpus())
    local recipe = H.recipe(H.tmpdir(), 'io.write(require("beat").cpus())')
    local one = assert(beat.exec { "taskset", "-c", "0", H.bin, "run", recipe })
    assert.equal("1", one.stdout, one.stderr)
  end)
end)
