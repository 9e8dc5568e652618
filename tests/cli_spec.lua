-- End to end: build/beat driven as a user would.
local beat = require "beat"
local H = require "tests.helpers"

local function wait_file(path, limit)
  local deadline = beat.clock() + (limit or 5)
  while beat.clock() < deadline do
    local data = H.read(path)
    if data and data ~= "" then return data end
    beat.sleep(0.05)
  end
end

describe("beat CLI", function()
  it("prints help and version, and exits 2 on an unknown command or flag", function()
    local r = H.beat { "help" }
    assert.equal(0, r.code)
    assert.matches("Usage: beat <command>", r.stdout)
    assert.matches("run%s+run a Lua recipe", r.stdout)
    r = H.beat { "run", "--help" }
    assert.equal(0, r.code)
    assert.matches("Usage: beat run %[%-%-json|%-%-plain%] %[%-q%] FILE", r.stdout)
    r = H.beat { "version" }
    assert.matches("^beat %d+%.%d+%.%d+", r.stdout)
    r = H.beat { "frobnicate" }
    assert.equal(2, r.code)
    assert.equal("beat: unknown command 'frobnicate' (see 'beat help')\n", r.stderr)
    r = H.beat { "--bogus" }
    assert.equal(2, r.code)
    assert.matches("unknown option '%-%-bogus'", r.stderr)
    r = H.beat { "run" }
    assert.equal(2, r.code)
    assert.matches("missing FILE", r.stderr)
    r = H.beat { "run", "/nonexistent/recipe.lua" }
    assert.equal(2, r.code)
    assert.matches("cannot read recipe /nonexistent/recipe.lua", r.stderr)
  end)

  it("answers --help for every command, and help for an unknown one with exit 2", function()
    for _, cmd in ipairs { "run", "loop", "repl", "runs", "show", "restore", "agents", "version", "help" } do
      local r = H.beat { cmd, "--help" }
      assert.equal(0, r.code, cmd)
      assert.matches("^Usage: beat " .. cmd, r.stdout)
      assert.equal(r.stdout, H.beat({ "help", cmd }).stdout)
    end
    local r = H.beat { "help", "nope" }
    assert.equal(2, r.code)
    assert.equal("beat: unknown command 'nope' (see 'beat help')\n", r.stderr)
  end)

  it("lists the agent adapters and finds an installed CLI with its version", function()
    local r = H.beat({ "agents" }, { env = { PATH = H.root .. "/tests/fixtures/agents:" .. os.getenv("PATH") } })
    assert.equal(0, r.code, r.stderr)
    assert.matches("claude%s+yes%s+2%.1%.332", r.stdout)
    assert.matches("tune%s+yes%s+built in", r.stdout)
    r = H.beat { "agents", "extra" }
    assert.equal(2, r.code)
  end)

  it("rejects a malformed --set with exit 2 before running anything", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, 'io.open("' .. dir .. '/ran", "w"):close()')
    for _, bad in ipairs { { "--set" }, { "--set", "novalue" }, { "--set", "=1" } } do
      local args = { "run", recipe }
      for _, a in ipairs(bad) do args[#args + 1] = a end
      local r = H.beat(args)
      assert.equal(2, r.code, table.concat(bad, " "))
      assert.matches("^beat: run: %-%-set needs key=value", r.stderr)
    end
    assert.is_false(beat.fs.exists(dir .. "/ran"))
  end)

  it("installs the binary and the man page under PREFIX", function()
    local prefix = H.tmpdir()
    local r = assert(beat.exec({ "make", "-s", "install", "PREFIX=" .. prefix, "BUILD=" .. H.bin:match("^(.*)/beat$") },
      { cwd = H.root }))
    assert.equal(0, r.code, r.stderr)
    assert.is_true(beat.fs.access(prefix .. "/bin/beat", "x"))
    assert.is_true(beat.fs.exists(prefix .. "/share/man/man1/beat.1"))
    assert.matches("^beat ", assert(beat.exec { prefix .. "/bin/beat", "version" }).stdout)
  end)

  it("runs a recipe with arguments and uses its integer result as exit status", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      local a, b = ...
      print(a, b, arg[0]:match("recipe.lua$"), #arg)
      print(beat.exec({"echo", "from exec"}).stdout)
      return 5
    ]])
    local r = H.beat { "run", recipe, "x", "y z" }
    assert.equal(5, r.code)
    assert.equal("x\ty z\trecipe.lua\t2\nfrom exec\n\n", r.stdout)
  end)

  it("prints file:line: message and a traceback for an uncaught error, exit 1", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, "local x = 1\nerror('recipe broke')\n")
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code)
    assert.matches("recipe.lua:2: recipe broke", r.stderr)
    assert.matches("stack traceback", r.stderr)
  end)

  it("reports an error in a background task and exits 1", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      beat.go(function() beat.sleep(0.01); error("background failure") end)
    ]])
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code)
    assert.matches("recipe.lua:2: background failure", r.stderr)
  end)

  it("works as a lone binary copied elsewhere", function()
    local dir = H.tmpdir()
    assert(beat.exec { "cp", H.bin, dir .. "/beat" })
    H.write(dir .. "/r.lua", 'print(require("beat").exec({"echo","alone"}).stdout)')
    local r = assert(beat.exec({ dir .. "/beat", "run", "r.lua" }, { cwd = dir, env = { BEAT_LUA_PATH = false } }))
    assert.equal(0, r.code, r.stderr)
    assert.equal("alone\n\n", r.stdout)
  end)

  it("loads Lua from the tree named by BEAT_LUA_PATH", function()
    local dir = H.tmpdir()
    assert(beat.exec { "cp", "-r", H.root .. "/lua", dir .. "/lua" })
    local init = H.read(dir .. "/lua/beat/init.lua")
    H.write(dir .. "/lua/beat/init.lua", (init:gsub('M.version = "[^"]*"', 'M.version = "9.9.9-dev"')))
    local r = H.beat({ "version" }, { env = { BEAT_LUA_PATH = dir } })
    assert.matches("^beat 9.9.9%-dev", r.stdout)
  end)

  for _, case in ipairs { { sig = "INT", code = 130 }, { sig = "TERM", code = 143 } } do
    it(("on SIG%s cancels every task, ends every child and exits %d"):format(case.sig, case.code), function()
      local dir = H.tmpdir()
      local m1, m2 = H.marker(), H.marker()
      local recipe = H.recipe(dir, ([[
        local beat = require "beat"
        local t = beat.go(function() beat.exec("trap '' TERM; sleep %s & wait", {grace = 0.3}) end)
        local f = io.open("%s/pid", "w"); f:write(require("beat._runtime").pid()); f:close()
        local ok, err = pcall(beat.exec, "setsid sleep %s & sleep 100")
        io.open("%s/unwound", "w"):write(tostring(beat.is_cancelled(err))):close()
      ]]):format(m1, dir, m2, dir))
      local p = assert(beat.spawn { H.bin, "run", recipe })
      local pid = wait_file(dir .. "/pid")
      assert.is_true(H.wait_started(m1) and H.wait_started(m2))
      beat.exec { "kill", "-" .. case.sig, pid }
      local r = p:wait()
      assert.equal(case.code, r.code, r.stderr)
      assert.equal("true", H.read(dir .. "/unwound"))
      assert.same({}, H.wait_gone(m1, 2))
      assert.same({}, H.wait_gone(m2, 2))
    end)
  end

  it("exits at once on a second Ctrl-C while cleanup is still running", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      local f = io.open("%s/pid", "w"); f:write(require("beat._runtime").pid()); f:close()
      pcall(beat.sleep, 100)
      io.open("%s/cleanup", "w"):write("started"):close()
      beat.shield(function() beat.exec("sleep %s") end)   -- a cleanup that hangs
    ]]):format(dir, dir, m))
    local p = assert(beat.spawn { H.bin, "run", recipe })
    local pid = wait_file(dir .. "/pid")
    beat.exec { "kill", "-INT", pid }
    assert.equal("started", wait_file(dir .. "/cleanup"))
    assert.is_true(H.wait_started(m))
    beat.exec { "kill", "-INT", pid }
    local r = assert(p:wait(10))
    assert.equal(130, r.code)
    assert.matches("interrupted again, exiting now", r.stderr)
    assert.same({}, H.wait_gone(m, 2))
  end)

  it("leaves no process behind when killed with SIGKILL", function()
    local dir = H.tmpdir()
    local m1, m2 = H.marker(), H.marker()
    local recipe = H.recipe(dir, ([[
      local beat = require "beat"
      beat.go(function() beat.exec("trap '' TERM; sleep %s & wait") end)
      local f = io.open("%s/pid", "w"); f:write(require("beat._runtime").pid()); f:close()
      beat.exec("setsid sleep %s & sleep 100")
    ]]):format(m1, dir, m2))
    local p = assert(beat.spawn { H.bin, "run", recipe })
    local pid = wait_file(dir .. "/pid")
    assert.is_true(H.wait_started(m1) and H.wait_started(m2))
    beat.exec { "kill", "-KILL", pid }
    assert.equal(137, p:wait().code)
    assert.same({}, H.wait_gone(m1, 1))
    assert.same({}, H.wait_gone(m2, 1))
  end)
end)

describe("beat repl, not on a terminal", function()
  it("reads lines from a file or /dev/null", function()
    local dir = H.tmpdir()
    H.write(dir .. "/in.lua", '=1+1\nfor i = 1, 2 do\nprint("n", i) end\n=beat.exec{"echo","hi"}.stdout\n')
    local r = assert(beat.exec(("%s repl < %s/in.lua"):format(H.bin, dir)))
    assert.equal(0, r.code, r.stderr)
    assert.matches('\n2\nn\t1\nn\t2\n"hi\\n"\n', r.stdout)
    r = assert(beat.exec(("%s repl < /dev/null"):format(H.bin)))
    assert.equal(0, r.code)
  end)

  it("leaves with 143 on SIGTERM, cancelling the running line", function()
    local m = H.marker()
    local p = assert(beat.spawn({ H.bin, "repl" }, { stdin = true, grace = 3 }))
    p:write(('beat.exec("sleep %s")\n'):format(m))
    assert.is_true(H.wait_started(m))
    p:kill("TERM")     -- beat repl itself receives SIGTERM
    local r = assert(p:wait(10))
    assert.equal(143, r.code, r.stderr)
    assert.same({}, H.wait_gone(m, 2))
  end)

  it("a nested beat sees one SIGINT as one interrupt, not two", function()
    local dir = H.tmpdir()
    local m = H.marker()
    local recipe = H.recipe(dir, ('require("beat").exec("sleep %s")'):format(m))
    local p = assert(beat.spawn({ H.bin, "run", recipe }, { grace = 3 }))
    assert.is_true(H.wait_started(m))
    p:kill("INT")
    local r = assert(p:wait(10))
    assert.equal(130, r.code)
    assert.matches("interrupted, stopping", r.stderr)
    assert.is_nil(r.stderr:find("interrupted again", 1, true), r.stderr)
  end)
end)

describe("beat repl", function()
  local sock = "beat-test-" .. require("beat._runtime").pid()
  local function tmux(...)
    return assert(beat.exec { "tmux", "-L", sock, ... })
  end
  local function screen_until(pattern, limit)
    local deadline = beat.clock() + (limit or 5)
    local text
    repeat
      text = tmux("capture-pane", "-p", "-t", "repl").stdout
      if text:find(pattern) then return text end
      beat.sleep(0.05)
    until beat.clock() > deadline
    error(("screen never showed %q:\n%s"):format(pattern, text))
  end

  it("runs lines in tasks, prints values, survives errors, cancels on Ctrl-C, exits on Ctrl-D", function()
    local home = H.tmpdir()
    local m = H.marker()
    -- a daemonizing command's leftovers are ended when it exits, so the tmux
    -- server runs in the foreground under beat.spawn for the whole test
    local server = assert(beat.spawn({ "tmux", "-L", sock, "-D" }, { grace = 0.2 }))
    finally(function() server:kill() end)
    local deadline = beat.clock() + 5
    while not beat.exec({ "tmux", "-L", sock, "list-sessions" }).stderr:find("no sessions")
      and beat.clock() < deadline do beat.sleep(0.05) end
    tmux("new-session", "-d", "-s", "repl", "-x", "150", "-y", "40",
      ("env HOME=%s %s repl; echo REPL-EXITED-$?; sleep 30"):format(home, H.bin))
    finally(function() beat.exec { "tmux", "-L", sock, "kill-server" } end)
    screen_until("beat>")
    tmux("send-keys", "-t", "repl", 'x = beat.exec{"echo", "from-repl"}.stdout', "Enter")
    tmux("send-keys", "-t", "repl", "=x:upper()", "Enter")
    screen_until('"FROM%-REPL\\n"')
    tmux("send-keys", "-t", "repl", "1 + 41", "Enter")
    screen_until("\n42")
    tmux("send-keys", "-t", "repl", "error('oops')", "Enter")
    screen_until("repl:1: oops")
    tmux("send-keys", "-t", "repl", "for i = 1, 2 do", "Enter")
    screen_until(">>")
    tmux("send-keys", "-t", "repl", "print('loop', i) end", "Enter")
    screen_until("loop%s+2")
    tmux("send-keys", "-t", "repl", ('beat.exec("sleep %s")'):format(m), "Enter")
    assert.is_true(H.wait_started(m))
    tmux("send-keys", "-t", "repl", "C-c")
    screen_until("cancelled")
    assert.same({}, H.wait_gone(m, 3))
    tmux("send-keys", "-t", "repl", "C-d")
    screen_until("REPL%-EXITED%-0")
    assert.matches("from%-repl", H.read(home .. "/.beat_history"))
  end)
end)
