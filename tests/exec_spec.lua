local beat = require "beat"
local H = require "tests.helpers"

describe("beat.exec", function()
  it("runs an argv table directly, without a shell", function()
    local r = assert(beat.exec { "printf", "%s|", "a b", "$HOME", "*" })
    assert.equal("a b|$HOME|*|", r.stdout)
    assert.equal(0, r.code)
    assert.equal(0, r.signal)
  end)

  it("runs a string through /bin/sh -c", function()
    local r = assert(beat.exec("echo one; echo two >&2; exit 7"))
    assert.equal("one\n", r.stdout)
    assert.equal("two\n", r.stderr)
    assert.equal(7, r.code)
  end)

  it("merges env into the inherited environment and removes false entries", function()
    local r = assert(beat.exec("echo \"$BEAT_T1|$HOME|${PATH:+path}\"",
      { env = { BEAT_T1 = "x y", HOME = false } }))
    assert.equal("x y||path\n", r.stdout)
  end)

  it("starts from an empty environment with clear_env", function()
    local r = assert(beat.exec({ "/usr/bin/env" }, { clear_env = true, env = { ONLY = "1" } }))
    assert.equal("ONLY=1\n", r.stdout)
  end)

  it("runs in cwd", function()
    local dir = H.tmpdir()
    local r = assert(beat.exec({ "pwd" }, { cwd = dir }))
    assert.equal(dir .. "\n", r.stdout)
  end)

  it("writes stdin then closes it, and gives /dev/null by default", function()
    assert.equal("fed\nlines\n", beat.exec({ "cat" }, { stdin = "fed\nlines\n" }).stdout)
    local r = beat.exec({ "cat" }, { timeout = 5 })
    assert.equal("", r.stdout)
    assert.is_false(r.timed_out)
  end)

  it("reports a signal death as 128+sig, never as success", function()
    local r = assert(beat.exec("kill -KILL $$"))
    assert.equal(137, r.code)
    assert.equal(9, r.signal)
    r = assert(beat.exec("kill -SEGV $$"))
    assert.equal(139, r.code)
  end)

  it("gives code 124 on timeout, and ends a command that ignores SIGTERM", function()
    local m = H.marker()
    local r = assert(beat.exec(("trap '' TERM; sleep %s & wait"):format(m),
      { timeout = 0.3, grace = 0.3 }))
    assert.equal(124, r.code)
    assert.is_true(r.timed_out)
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("ends a grandchild that left the process group with setsid", function()
    local m = H.marker()
    local r = assert(beat.exec(("setsid sleep %s & sleep 30"):format(m), { timeout = 0.5, grace = 0.2 }))
    assert.equal(124, r.code)
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("ends background leftovers when the command itself exits", function()
    local m = H.marker()
    local r = assert(beat.exec(("(setsid sleep %s >/dev/null 2>&1 &); echo started"):format(m),
      { grace = 0.2 }))
    assert.equal(0, r.code)
    assert.same({}, H.wait_gone(m, 3))
  end)

  it("ends a leftover whose main thread has ended while another thread runs on", function()
    -- /proc shows such a process as a zombie (its leader's state), with 2
    -- threads: it is not dead, and the sweep does not pass it over
    local dir = H.tmpdir()
    local pidfile = dir .. "/pid"
    local r = assert(beat.exec({ "sh", "-c", [[
      (setsid "$1" "$2" >/dev/null 2>&1 &)
      while [ ! -s "$2" ]; do sleep 0.01; done
      while ! grep -q ") Z " "/proc/$(cat "$2")/stat"; do sleep 0.01; done]],
      "_", H.main_thread_exits(), pidfile }, { grace = 0.2, timeout = 30 }))
    assert.equal(0, r.code, r.stderr)
    local procs = require "beat.runs.proc"
    local pid = math.tointeger(tonumber(H.read(pidfile)))
    finally(function() procs.kill(pid, 9) end)
    local deadline = beat.clock() + 3
    while procs.identity(pid) and beat.clock() < deadline do beat.sleep(0.05) end
    assert.is_nil(procs.identity(pid))
  end)

  it("returns nil and a reason for a missing binary or a bad cwd", function()
    local r, err = beat.exec { "beat-no-such-binary-x" }
    assert.is_nil(r)
    assert.equal("exec: beat-no-such-binary-x: command not found", err)
    r, err = beat.exec({ "true" }, { cwd = "/nonexistent/dir" })
    assert.is_nil(r)
    assert.matches("^exec: true: cwd /nonexistent/dir", err)
    r, err = beat.exec { "/etc/passwd" }
    assert.is_nil(r)
    assert.equal("exec: /etc/passwd: permission denied", err)
  end)

  it("returns nil and the reason for a file the kernel cannot execute, from exec and from wait", function()
    local dir = H.tmpdir()
    H.write(dir .. "/script", "echo no interpreter line\n")
    assert.equal(0, beat.exec({ "chmod", "+x", dir .. "/script" }).code)
    local r, err = beat.exec { dir .. "/script" }
    assert.is_nil(r)
    assert.equal(("exec: %s/script: Exec format error"):format(dir), err)
    local p = assert(beat.spawn { dir .. "/script" })
    r, err = p:wait()
    assert.is_nil(r)
    assert.equal(("exec: %s/script: Exec format error"):format(dir), err)
  end)

  it("raises for programmer mistakes, naming the option", function()
    assert.has_error(function() beat.exec({ "true" }, { timeout = "abc" }) end)
    local ok, err = pcall(beat.exec, { "true" }, { timeout = "abc" })
    assert.is_false(ok)
    assert.matches("beat.exec: opts.timeout must be a duration", err)
    ok, err = pcall(beat.exec, { "true" }, { bogus = 1 })
    assert.matches("unknown option opts.bogus", err)
    ok, err = pcall(beat.exec, {})
    assert.matches("beat.exec: cmd must be a non%-empty argv list, got {}", err)
    -- the message blames the line that called beat.exec, not beat's own code
    ok, err = pcall(function() return beat.exec({ "true" }, { timeout = "abc" }), nil end)
    assert.matches("exec_spec.lua:%d+: beat.exec: opts.timeout", err)
    ok, err = pcall(function() return beat.spawn({ "true" }, { cwd = 1 }), nil end)
    assert.matches("exec_spec.lua:%d+: beat.spawn: opts.cwd", err)
  end)

  it("keeps binary and non-UTF-8 output byte for byte", function()
    local r = assert(beat.exec("printf 'a\\000b\\377\\376\\n'"))
    assert.equal("a\0b\255\254\n", r.stdout)
  end)

  it("caps captured output, keeping the head and the tail", function()
    local r = assert(beat.exec("seq 1 100000", { max_output = 1000 }))
    assert.is_true(r.truncated)
    assert.equal("1\n2\n3\n", r.stdout:sub(1, 6))
    assert.equal("99999\n100000\n", r.stdout:sub(-13))
    assert.matches("bytes truncated", r.stdout)
    assert.is_true(#r.stdout < 1100)
  end)

  it("streams output to a file or to a per-line function", function()
    local dir = H.tmpdir()
    local r = assert(beat.exec("seq 1 3; echo err >&2", { stdout = dir .. "/out.txt", stderr = false }))
    assert.is_nil(r.stdout)
    assert.equal("1\n2\n3\n", H.read(dir .. "/out.txt"))
    local lines = {}
    beat.exec("printf 'x\\r\\ny\\n\\nlast'", { stdout = function(l) lines[#lines + 1] = l end })
    assert.same({ "x", "y", "", "last" }, lines)
  end)

  it("runs 8 one-second sleeps concurrently in well under 8 seconds", function()
    local t0 = beat.clock()
    local tasks = {}
    for i = 1, 8 do tasks[i] = beat.go(function() return beat.exec({ "sleep", "1" }).code end) end
    assert.same({ 0, 0, 0, 0, 0, 0, 0, 0 }, beat.all(tasks))
    assert.is_true(beat.clock() - t0 < 3)
  end)

  it("keeps beat's memory bounded while a command prints 200 MB", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      local r = beat.exec("head -c 200000000 /dev/zero")
      assert(r.truncated and r.stdout_bytes == 200000000)
      for line in io.lines("/proc/self/status") do
        local kb = line:match("^VmHWM:%s*(%d+)")
        if kb then print(kb) end
      end
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    local kb = tonumber(r.stdout)
    assert.is_true(kb < 30 * 1024, ("peak RSS %d kB"):format(kb))
  end)
end)

describe("beat.spawn", function()
  it("gives a proc with pid, write, close_stdin and wait", function()
    local p = assert(beat.spawn({ "cat" }, { stdin = true }))
    assert.is_true(p.pid > 0)
    p:write("hello ")
    p:write("world")
    p:close_stdin()
    local r = p:wait()
    assert.equal("hello world", r.stdout)
    assert.equal(0, r.code)
  end)

  it("waits with a limit without killing, and kill ends the tree", function()
    local m = H.marker()
    local p = assert(beat.spawn(("sleep %s"):format(m), { grace = 0.2 }))
    local r, err = p:wait(0.1)
    assert.is_nil(r)
    assert.equal("timeout", err)
    assert.is_true(H.wait_started(m))
    assert.is_true(p:kill())
    r = p:wait()
    assert.equal(143, r.code)
    assert.equal(15, r.signal)
    assert.same({}, H.wait_gone(m, 2))
    assert.is_false(p:kill())
  end)

  it("stops and ends a command: SIGSTOP reaches the command, and a stopped command still ends", function()
    local p = assert(beat.spawn("while :; do echo tick; sleep 0.05; done", { grace = 0.3 }))
    beat.sleep(0.2)
    assert.is_true(p:kill("STOP"))
    beat.sleep(0.2)
    assert.is_true(p:kill())
    local r = assert(p:wait(10))
    assert.equal(143, r.code)
  end)

  it("refuses a max_output beyond 1 GiB", function()
    local ok, err = pcall(beat.exec, { "true" }, { max_output = 1 << 62 })
    assert.is_false(ok)
    assert.matches("opts.max_output must be an integer from 2 to", err)
  end)

  it("delivers other signals to the command's process group", function()
    local ready = H.tmpdir() .. "/trap-set"
    local p = assert(beat.spawn({ "sh", "-c", "trap 'echo got-usr1; exit 3' USR1; : > \"$1\"; while :; do sleep 0.05; done",
      "_", ready }))
    -- the trap is set once the file exists; the bound only stops a broken shell hanging the suite
    local deadline = beat.clock() + 30
    while not beat.fs.exists(ready) and beat.clock() < deadline do beat.sleep(0.02) end
    p:kill("USR1")
    local r = p:wait()
    assert.equal(3, r.code)
    assert.equal("got-usr1\n", r.stdout)
  end)
end)

describe("the shim every command starts through", function()
  -- The recipe runs a command with a timeout whose grandchild escapes with
  -- setsid, then starts one more such tree and waits to be killed with -9.
  local function kill9_recipe(dir, m1, m2, m3, m4)
    return H.recipe(dir, ([[
      local beat = require "beat"
      local p = assert(beat.spawn({ "sleep", "%s" }))
      local f = io.popen("readlink /proc/" .. p.pid .. "/exe")
      local exe = f:read("l")
      f:close()
      local comm   -- the shim names itself once started: give it 2 s
      for _ = 1, 40 do
        f = io.open("/proc/" .. p.pid .. "/comm")
        comm = f:read("l")
        f:close()
        if comm == "beat-shim" then break end
        beat.sleep(0.05)
      end
      p:kill("KILL")
      local r = beat.exec("setsid sleep %s & sleep 30", { timeout = 0.3, grace = 0.2 })
      f = io.open("%s/first", "w")
      f:write(exe, "\n", comm, "\n", r.code, "\n")
      f:close()
      beat.go(function() beat.exec("trap '' TERM; sleep %s & wait") end)
      beat.exec("setsid sleep %s & sleep 100")
    ]]):format(m1, m2, dir, m3, m4))
  end

  local function wait_file(path)
    for _ = 1, 200 do
      local data = beat.fs.read(path)
      if data and data:sub(-1) == "\n" then return data end
      beat.sleep(0.05)
    end
    error("no " .. path)
  end

  for _, case in ipairs {
    { name = "the copy embedded in beat, run from memory", env = nil,
      exe = "^/memfd:beat%-shim" },
    { name = "beat's own binary (BEAT_SHIM=binary, the fallback)", env = { BEAT_SHIM = "binary" } },
    -- the kernel refuses the memfd (as with vm.memfd_noexec=2 or a security
    -- policy): the first command is started again from beat's binary
    { name = "beat's own binary when the kernel refuses to execute the embedded copy",
      env = { BEAT_SHIM = "unexecutable" } },
  } do
    it(("is %s, and ends escaped descendants on timeout and when beat is killed with SIGKILL")
      :format(case.name), function()
      local dir = H.tmpdir()
      local m1, m2, m3, m4 = H.marker(), H.marker(), H.marker(), H.marker()
      local p = assert(beat.spawn({ H.bin, "run", kill9_recipe(dir, m1, m2, m3, m4) }, { env = case.env }))
      local exe, comm, code = wait_file(dir .. "/first"):match("^(.-)\n(.-)\n(%d+)\n$")
      if case.exe then
        assert.matches(case.exe, exe)
      else
        assert.equal(beat.fs.realpath(H.bin), exe)
      end
      assert.equal("beat-shim", comm)
      assert.equal("124", code)
      assert.same({}, H.wait_gone(m1, 2))
      assert.same({}, H.wait_gone(m2, 2))
      assert.is_true(H.wait_started(m3) and H.wait_started(m4))
      local recs = beat.exec({ "sh", "-c", "cat /proc/" .. p.pid .. "/task/*/children" }).stdout
      local beat_pid = assert(recs:match("%d+"), "beat's pid")
      beat.exec { "kill", "-KILL", beat_pid }
      assert.equal(137, p:wait().code)
      assert.same({}, H.wait_gone(m3, 1))
      assert.same({}, H.wait_gone(m4, 1))
    end)
  end

  -- coreutils' env sets up beat with signals blocked and ignored, as nohup, a
  -- shell's background job or a service manager may
  local function env_can_ignore()
    local r = beat.exec({ "env", "--ignore-signal=HUP", "true" }, { stderr = false })
    return r and r.code == 0
  end

  for _, case in ipairs {
    { name = "the embedded shim" },
    { name = "the fallback, beat __shim", env = { BEAT_SHIM = "binary" } },
  } do
    it(("starts a command with no signal blocked or ignored, though beat was started with some (%s)")
      :format(case.name), function()
      if not env_can_ignore() then
        pending("env --ignore-signal needs coreutils 8.31")
        return
      end
      local dir = H.tmpdir()
      local recipe = H.recipe(dir, [[
        local beat = require "beat"
        io.write(assert(beat.exec { "cat", "/proc/self/status" }).stdout)
      ]])
      local r = assert(beat.exec({ "env", "--block-signal=USR2,HUP",
        "--ignore-signal=HUP,QUIT,USR1,PIPE,TERM", H.bin, "run", recipe }, { env = case.env }))
      assert.equal(0, r.code, r.stderr)
      assert.matches("\nSigBlk:%s+0+\n", r.stdout)
      -- but for 32 and 33, glibc's own, which no libc lets a program change:
      -- beat passes them on as it got them (from make, they come ignored)
      local ignored = tonumber(assert(r.stdout:match("\nSigIgn:%s+(%x+)\n")), 16)
      assert.equal(0, ignored & ~(3 << 31))
    end)
  end

  it("reaps each command as it ends while another runs, though beat was started with SIGCHLD ignored", function()
    if not env_can_ignore() then
      pending("env --ignore-signal needs coreutils 8.31")
      return
    end
    local dir = H.tmpdir()
    local m = H.marker()
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      local long = assert(beat.spawn { "sleep", "%s" })
      for i = 1, 3 do io.write(assert(beat.exec { "sh", "-c", "exit " .. i }).code, " ") end
      assert(long:kill())
      io.write(long:wait().code)
    ]]):format(m))
    -- the timeout only keeps a beat that waits for the sleep from hanging the suite
    local r = assert(beat.exec({ "env", "--ignore-signal=CHLD", H.bin, "run", recipe }, { timeout = 60 }))
    assert.equal("1 2 3 143", r.stdout)
    assert.equal(0, r.code, r.stderr)
    assert.same({}, H.wait_gone(m, 2))
  end)

  -- the processes whose command line is "beat-shim warm PID": shims of beat PID that run commands it sends
  local WAITING = [[
    local function waiting(pid)
      local out = {}
      for _, name in ipairs(require("beat").fs.list("/proc") or {}) do
        local f = name:match("^%d+$") and io.open("/proc/" .. name .. "/cmdline", "rb")
        if f then
          if f:read("a") == ("beat-shim\0warm\0%d\0"):format(pid) then out[#out + 1] = tonumber(name) end
          f:close()
        end
      end
      table.sort(out)
      return out
    end
  ]]

  it("runs command after command in the same waiting shim, copes when one is killed, and lets them go at exit", function()
    local waiting = load(WAITING .. " return waiting")()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, WAITING .. [[
      local beat = require "beat"
      local procs = require "beat.runs.proc"
      local me = beat.pid()
      io.write(me, " ")
      -- one shim, then the same one again: done with a command, it waits for the next
      local first = assert(beat.spawn { "true" })
      assert(first:wait().code == 0)
      local again = assert(beat.spawn { "sh", "-c", "exit 3" })
      io.write(again:wait().code, " ", tostring(again.pid == first.pid), " ")
      -- it holds nothing of the command's while it waits: no directory, no descriptor but its own
      local shim = "/proc/" .. first.pid
      local fds = {}
      for fd = 0, 3 do fds[#fds + 1] = beat.fs.realpath(("%s/fd/%d"):format(shim, fd)) or "-" end
      io.write(beat.fs.realpath(shim .. "/cwd"), " ", table.concat(fds, ","), " ")
      -- killed while it waits (not by a command: its shim would be that one); so is every other
      for _, pid in ipairs(waiting(me)) do procs.kill(pid, 9) end
      for _ = 1, 500 do   -- until they are zombies (beat, their parent, reaps them)
        local left = 0
        for _, pid in ipairs(waiting(me)) do
          if (procs.stat(pid) or {}).state ~= "Z" then left = left + 1 end
        end
        if left == 0 then break end
        beat.sleep(0.01)
      end
      local r = assert(beat.exec({ "sh", "-c", "pwd; echo $X; exit 7" }, { cwd = "/", env = { X = "from the env" } }))
      io.write(r.code, " ", (r.stdout:gsub("\n", "|")), " ")
      -- and the next in its own directory and environment
      r = assert(beat.exec({ "sh", "-c", "pwd; echo $X; exit 5" }, { cwd = "/usr", env = { X = "again" } }))
      io.write(r.code, " ", (r.stdout:gsub("\n", "|")), " ")
      -- with no directory given, in beat's as it is now, not as it was when that shim started
      assert(beat.fs.chdir("/etc"))
      r = assert(beat.exec { "pwd" })
      io.write(r.stdout:gsub("\n", "|"), #waiting(me) > 0 and "waiting" or "none", "\n")
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    local pid, rest = r.stdout:match("^(%d+) (.*)$")
    -- while it waits its 0-2 are /dev/null and it has no fd 3 (the command's report pipe)
    assert.equal("3 true / /dev/null,/dev/null,/dev/null,- 7 /|from the env| 5 /usr|again| /etc|waiting\n", rest)
    assert.same({}, waiting(tonumber(pid)))   -- none is left once beat has exited
  end)

  it("starts the first command's shim ahead of need when asked (exec.ready_shim), and that command takes it", function()
    local dir = H.tmpdir()
    -- beat's children, from the kernel's lists: a child is in them once started, where its
    -- command line may still be empty for a moment after its exec
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      local exec = require "beat.exec"
      local function children()
        local out = {}
        for _, task in ipairs(beat.fs.list("/proc/self/task") or {}) do
          local f = io.open("/proc/self/task/" .. task .. "/children", "rb")
          for pid in (f and f:read("a") or ""):gmatch("%d+") do out[#out + 1] = tonumber(pid) end
          if f then f:close() end
        end
        return out
      end
      io.write(#children(), " ")
      exec.ready_shim()
      local ready = children()
      exec.ready_shim()   -- one waits already: no second
      io.write(#ready, " ", #children(), " ")
      local p = assert(beat.spawn { "sh", "-c", "exit 4" })
      io.write(p:wait().code, " ", tostring(ready[1] ~= nil and p.pid == ready[1]), "\n")
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    assert.equal("0 1 1 4 true\n", r.stdout)
    -- where shims start from beat's own binary, there is nothing to start ahead
    r = H.beat({ "run", recipe }, { env = { BEAT_SHIM = "binary" } })
    assert.equal(0, r.code, r.stderr)
    assert.equal("0 0 0 4 false\n", r.stdout)
  end)

  it("gives a waiting shim's next command nothing of signals that came while it waited", function()
    -- a kill meant for a command that had just ended reaches its shim once
    -- it waits for the next: the next must not take it
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      local procs = require "beat.runs.proc"
      local sig = require("beat._runtime").signals
      local p = assert(beat.spawn { "true" })
      assert(p:wait().code == 0)
      for _, s in ipairs { sig.SIGTERM, sig.SIGINT, sig.SIGHUP, sig.SIGUSR1, 35 } do procs.kill(p.pid, s) end
      beat.sleep(0.05)
      local q = assert(beat.spawn { "sh", "-c", "sleep 0.2; echo alive" })
      local r = q:wait()
      io.write(tostring(q.pid == p.pid), " ", r.code, " ", r.stdout)
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    assert.equal("true 0 alive\n", r.stdout)
  end)

  it("ends with beat killed by SIGKILL while it waits for a command", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      assert(beat.exec { "true" }.code == 0)
      beat.fs.write("%s/ran", "")
      beat.sleep(60)
    ]]):format(dir))
    local p = assert(beat.spawn { H.bin, "run", recipe })
    for _ = 1, 600 do
      if beat.fs.exists(dir .. "/ran") then break end
      beat.sleep(0.05)
    end
    local recs = beat.exec({ "sh", "-c", "cat /proc/" .. p.pid .. "/task/*/children" }).stdout
    local beat_pid = assert(recs:match("%d+"), "beat's pid")
    local cmdline = ("beat-shim warm %s"):format(beat_pid)
    assert.is_true(#H.pids_with(cmdline) > 0)
    beat.exec { "kill", "-KILL", beat_pid }
    assert.equal(137, p:wait().code)
    assert.same({}, H.wait_gone(cmdline, 5))
  end)

  it("reaps a detached run handed up to beat once it has ended, at the next command's end", function()
    -- a shim leaves a detached beat run (its argv says --detached-run) alive and hands it
    -- up to beat, the subreaper; ended, it is beat's zombie child until beat reaps it
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      local procs = require "beat.runs.proc"
      local stray = "%s/stray"
      assert(beat.exec({ "sh", "-c", "(sh -c 'echo $$ > \"$STRAY\"; sleep 0.3' --detached-run &)" },
        { env = { STRAY = stray } }).code == 0)
      local deadline = beat.clock() + 30
      while not (beat.fs.read(stray) or ""):match("\n$") and beat.clock() < deadline do beat.sleep(0.02) end
      local pid = math.tointeger(tonumber(beat.fs.read(stray)))
      local st = procs.stat(pid)
      while st and st.state ~= "Z" and beat.clock() < deadline do beat.sleep(0.02); st = procs.stat(pid) end
      io.write(st and st.state or "-", " ", st and tostring(st.ppid == beat.pid()) or "-", " ")
      assert(beat.exec { "true" }.code == 0)
      st = procs.stat(pid)
      io.write(st and st.state or "reaped", "\n")
    ]]):format(dir))
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    assert.equal("Z true reaped\n", r.stdout)
  end)

  it("passes no descriptor of beat's to the command", function()
    local r = assert(beat.exec({ "sh", "-c", "ls -l /proc/$$/fd" }))
    assert.not_matches("memfd", r.stdout)
    assert.not_matches("beat%-shim", r.stdout)
  end)
end)

describe("beat at exit", function()
  it("reads no other process's /proc entry when it never started a process", function()
    local trace, r = H.strace("openat", { H.bin, "version" })
    if not trace then return pending(r) end
    assert.equal(0, r.code, r.stderr)
    assert.matches("openat", trace)
    assert.not_matches("/proc/%d+/stat", trace)
  end)

  -- Closing the last descriptor of an inotify instance waits for the kernel
  -- (an SRCU grace period: up to tens of ms on a loaded machine). A watch
  -- beat is done with while it goes on is closed; one still open as beat
  -- ends is sent into a socket that only the kernel's collector frees.
  it("hands the watches still open to the kernel to free, and closes the others itself", function()
    local dir = H.git_repo { ["src/a.c"] = "int a;\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local git = require "beat.git"
      local done = assert(git.open { dir = %q })
      assert(done:tree())
      done:close()
      local _, info = assert(assert(git.open { dir = %q }):tree())
      print(info.watch)
    ]]):format(dir, dir))
    local trace, r = H.strace("inotify_init1,sendmsg,close", { H.bin, "run", recipe })
    if not trace then return pending(r) end
    assert.equal(0, r.code, r.stderr)
    assert.equal("first scan\n", r.stdout)
    -- each watch's descriptor, in the order made, and what became of it
    local fates, watch = {}, {}
    for line in trace:gmatch("[^\n]+") do
      local made = line:match("inotify_init1%(.-%)%s*=%s*(%d+)")
      local sent = line:match("SCM_RIGHTS, cmsg_data=%[(%d+)")
      local closed = line:match("close%((%d+)%)")
      if made then
        fates[#fates + 1] = "open"
        watch[made] = #fates
      elseif sent and watch[sent] then
        fates[watch[sent]] = "sent"
      elseif closed and watch[closed] then
        fates[watch[closed]] = fates[watch[closed]] == "sent" and "sent, then closed" or "closed"
        watch[closed] = nil
      end
    end
    assert.same({ "closed", "sent, then closed" }, fates)
  end)

  it("and the kernel frees them: more runs in a row than a user may hold watches each watch", function()
    local limit = tonumber((H.read("/proc/sys/fs/inotify/max_user_instances") or ""):match("%d+"))
    if not limit or limit > 1000 then
      return pending("fs.inotify.max_user_instances is not a limit a few hundred runs reach")
    end
    local dir = H.git_repo { ["src/a.c"] = "int a;\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local _, info = assert(assert(require("beat.git").open { dir = %q }):tree())
      print(info.watch)
    ]]):format(dir))
    local runs = limit + 20
    local r = assert(beat.exec { "sh", "-c",
      'i=0; while [ $i -lt "$1" ]; do "$2" run "$3" || exit 1; i=$((i + 1)); done',
      "sh", tostring(runs), H.bin, recipe })
    assert.equal(0, r.code, r.stderr)
    local seen = {}
    for line in r.stdout:gmatch("[^\n]+") do seen[line] = (seen[line] or 0) + 1 end
    assert.same({ ["first scan"] = runs }, seen)
  end)

  it("still ends a process that escaped to beat itself", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local recipe = H.recipe(dir, ([[
      os.execute("setsid sleep %s >/dev/null 2>&1 &")
    ]]):format(m))
    local r = H.beat { "run", recipe }
    assert.equal(0, r.code, r.stderr)
    assert.same({}, H.wait_gone(m, 2))
  end)
end)

describe("beat at start", function()
  it("carries libgit2 and its TLS, SSH and zlib inside beat: no shared object of theirs is ever mapped", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local THEIRS = { "libgit2", "libmbed", "libssh2", "libcrypto", "libz%.", "libpcre2", "libhttp_parser", "beat%-git" }
      local function mapped()
        local found = {}
        for line in io.lines("/proc/self/maps") do
          for _, lib in ipairs(THEIRS) do
            if line:find("/" .. lib) or line:find("memfd:" .. lib) then found[#found + 1] = line:match("%S+$") end
          end
        end
        return #found == 0 and "none" or table.concat(found, ",")
      end
      local beat = require "beat"
      print(mapped())
      local repo = assert(beat.git.open(...))
      assert(repo:snapshot {})
      print(mapped())
    ]])
    local repo = H.git_repo { ["a.txt"] = "a\n" }
    local r = H.beat { "run", recipe, repo }
    assert.equal(0, r.code, r.stderr)
    assert.equal("none\nnone\n", r.stdout)
  end)
end)
