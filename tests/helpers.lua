-- Shared by the specs: the binary under test, temp dirs, process probes.
local beat = require "beat"

local H = {}

H.root = beat.fs.cwd()
H.bin = os.getenv("BEAT_BIN") or (H.root .. "/build/beat")

--- A fresh temp dir, removed when the busted file finishes (via finally in callers if wanted).
function H.tmpdir()
  return assert(beat.fs.tmpdir("beat-test"))
end

function H.write(path, data, mode)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  if mode then os.execute(("chmod %o '%s'"):format(mode, path)) end
end

function H.read(path)
  return beat.fs.read(path)
end

--- pids of live (non-zombie) processes whose command line contains marker.
function H.pids_with(marker)
  local pids = {}
  local p = io.popen("ls /proc")
  for name in p:lines() do
    if name:match("^%d+$") then
      local f = io.open("/proc/" .. name .. "/cmdline", "rb")
      local cmd = f and f:read("a") or ""
      if f then f:close() end
      local st = io.open("/proc/" .. name .. "/stat")
      local stat = st and st:read("a") or ""
      if st then st:close() end
      local state = stat:match("%) (%a)")
      if cmd:gsub("%z", " "):find(marker, 1, true) and state ~= "Z" then
        pids[#pids + 1] = tonumber(name)
      end
    end
  end
  p:close()
  return pids
end

--- Waits up to `limit` seconds for no process to carry marker; returns the
--- pids still alive (empty when all are gone).
function H.wait_gone(marker, limit)
  local deadline = beat.clock() + (limit or 3)
  local left = H.pids_with(marker)
  while #left > 0 and beat.clock() < deadline do
    beat.sleep(0.05)
    left = H.pids_with(marker)
  end
  return left
end

--- Waits up to `limit` seconds until a process carries marker.
function H.wait_started(marker, limit)
  local deadline = beat.clock() + (limit or 5)
  while beat.clock() < deadline do
    if #H.pids_with(marker) > 0 then return true end
    beat.sleep(0.05)
  end
  return false
end

--- A unique string usable as a `sleep` argument, to find processes later.
local counter = 0
function H.marker()
  counter = counter + 1
  return ("4%04d.%d%d"):format(math.random(0, 9999), require("beat._runtime").pid(), counter)
end

--- Runs the beat binary with args (argv list); opts as beat.exec.
function H.beat(args, opts)
  local argv = { H.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(beat.exec(argv, opts))
end

--- Runs argv (beat.exec's opts) under `strace -f -e trace=CALLS`: the trace
--- and the result; nil and why when strace is not installed or cannot trace
--- here (LeakSanitizer, for one, refuses to run under ptrace).
function H.strace(calls, argv, opts)
  if not require("beat.exec").which("strace") then return nil, "strace is not installed" end
  local out = H.tmpdir() .. "/trace"
  local cmd = { "strace", "-f", "-qq", "-e", "trace=" .. calls, "-o", out }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local r = assert(beat.exec(cmd, opts))
  if r.code ~= 0 and (r.stderr:find("strace", 1, true) or r.stderr:find("ptrace", 1, true)) then
    return nil, "strace cannot trace here: " .. r.stderr
  end
  return H.read(out) or "", r
end

--- Runs `beat loop ARGS...` in dir with extra environment.
function H.loop(dir, args, env)
  local argv = { "loop" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return H.beat(argv, { cwd = dir, env = env })
end

--- Writes a recipe file and returns its path.
function H.recipe(dir, src)
  local path = dir .. "/recipe.lua"
  H.write(path, src)
  return path
end

--- A git repository in a temp dir with files {path = content} committed,
--- and a user configured. Returns its path.
function H.git_repo(files)
  local dir = H.tmpdir()
  local function git(...)
    local r = assert(beat.exec({ "git", ... }, { cwd = dir }))
    assert(r.code == 0, r.stderr)
    return r.stdout
  end
  git("init", "-q", "-b", "main")
  git("config", "user.name", "Test")
  git("config", "user.email", "test@example.com")
  for path, content in pairs(files or {}) do
    local sub = path:match("^(.*)/[^/]*$")
    if sub then beat.fs.mkdir_p(dir .. "/" .. sub) end
    H.write(dir .. "/" .. path, content)
  end
  git("add", "-A")
  git("commit", "-q", "--allow-empty", "-m", "initial")
  return dir, git
end

--- Builds tests/fixtures/proc/main_thread_exits.c (once per spec file) and
--- returns its path: `PROG PIDFILE` writes its pid, then its main thread ends
--- while another thread runs on (its leader a zombie with 2 threads).
local main_thread_exits
function H.main_thread_exits()
  if not main_thread_exits then
    local dir = H.tmpdir()
    local r = assert(beat.exec({ "cc", "-pthread", "-o", dir .. "/main_thread_exits",
      H.root .. "/tests/fixtures/proc/main_thread_exits.c" }))
    assert(r.code == 0, r.stderr)
    main_thread_exits = dir .. "/main_thread_exits"
  end
  return main_thread_exits
end

--- Waits until the program of H.main_thread_exits has written its pid to
--- pidfile and its main thread has ended; returns its pid and its /proc stat.
function H.await_main_thread_exit(pidfile)
  local procs = require "beat.runs.proc"
  local deadline = beat.clock() + 30
  while not (beat.fs.read(pidfile) or ""):match("\n$") do
    assert(beat.clock() < deadline, "no pid in " .. pidfile)
    beat.sleep(0.02)
  end
  local pid = math.tointeger(tonumber(beat.fs.read(pidfile)))
  local st = procs.stat(pid)
  while st and st.state ~= "Z" and beat.clock() < deadline do beat.sleep(0.02); st = procs.stat(pid) end
  return pid, st
end

--- The records of the newest run's journal in dir, and the run's directory.
function H.last_run(dir)
  local journal = require "beat.journal"
  local runs = journal.list(dir .. "/.beat/runs")
  local run = assert(runs[#runs], "no run in " .. dir)
  local j = assert(journal.open(run.dir))
  return j:records(), run.dir, run.id
end

--- Records of one event type.
function H.events(records, name)
  local out = {}
  for _, r in ipairs(records) do if r.event == name then out[#out + 1] = r end end
  return out
end

return H
