--- The command line: `beat <command> [args]`. main(arg) returns the exit
--- status. Commands are plain Lua; each has a summary, a usage text and a
--- function taking the remaining arguments.
---
--- Exit status: 0 success, 1 failure (an error, a failed run), 2 usage error,
--- 130 interrupted (SIGINT), 143 terminated (SIGTERM).
local runtime = require "beat._runtime"

local M = {}

local SIG = runtime.signals
M.EXIT_OK, M.EXIT_FAIL, M.EXIT_USAGE, M.EXIT_INT, M.EXIT_TERM = 0, 1, 2, 130, 143

local function say(fmt, ...)
  io.stderr:write(("beat: " .. fmt .. "\n"):format(...))
end

--- A usage error: one line naming the input, exit status 2.
---@param fmt string
function M.usage_error(fmt, ...)
  error(setmetatable({ usage = (fmt):format(...) }, {
    __tostring = function(e) return e.usage end,
  }), 0)
end

-- Signals: the first SIGINT/SIGTERM calls the current handler (cancel what
-- runs); a second SIGINT leaves at once, ending every child process.
local interrupt_handler
local interrupted
local function install_signals()
  if interrupted ~= nil then return end
  interrupted = false
  local function on_signal(sig)
    local code = sig == SIG.SIGTERM and M.EXIT_TERM or M.EXIT_INT
    if interrupt_handler then
      local handled = interrupt_handler(code)
      if handled then return end
    end
    -- a status line on the terminal is erased first, so the message stands alone
    local ui = package.loaded["beat.ui"]
    local erased = ui and ui.suspend()
    if interrupted then
      io.stderr:write(erased and "" or "\n", "beat: interrupted again, exiting now\n")
      runtime.exit(code)
    end
    interrupted = code
    io.stderr:write(erased and "" or "\n", ("beat: %s, stopping (Ctrl-C again to exit now)\n")
      :format(sig == SIG.SIGTERM and "terminated" or "interrupted"))
    require("beat.task").cancel_all()
  end
  -- called from the loop, or from inside busy Lua code (a debug hook), where
  -- cancelling the running task raises its cancellation at that point
  runtime.on_interrupt(on_signal)
end

--- Runs fn(...) as the main task and drives the loop until it and every
--- task it started have finished. Returns the exit status: fn's integer
--- result, 1 on an error (printed with its traceback), 130/143 when
--- interrupted.
---@param fn function
function M.drive(fn, ...)
  install_signals()
  local task = require "beat.task"
  local main = task.start(true, fn, ...)
  while main.status == "running" do
    if not runtime.run("once") and main.status == "running" then
      say("the main task is waiting for something that can never happen")
      return M.EXIT_FAIL
    end
  end
  runtime.run("default")   -- tasks started by the main one finish too
  -- a Ctrl-C that also ended the command the main task waited for may not
  -- have reached the handler before the task finished: it counts all the same
  runtime.take_interrupt()
  if interrupted then return interrupted end
  local _, failed = task.stats()
  if main.status == "failed" then
    local err = main.error
    if type(err) == "table" and err.usage then
      say("%s", err.usage)
      return M.EXIT_USAGE
    end
    io.stderr:write(main.traceback, "\n")
    return M.EXIT_FAIL
  elseif main.status == "cancelled" then
    return M.EXIT_INT
  end
  local code = main.results[1]
  if math.type(code) == "integer" and code >= 0 and code <= 255 then
    return failed and code == 0 and M.EXIT_FAIL or code
  end
  if type(code) == "number" then
    -- 256 would wrap to 0 and -1 to 255: a status that is not one is a failure
    say("the recipe returned %s, which is not an exit status (an integer 0-255); exiting 1", tostring(code))
    return M.EXIT_FAIL
  end
  return failed and M.EXIT_FAIL or M.EXIT_OK
end

--- Sets what the first Ctrl-C does while fn runs; handler(code) returns
--- true when it handled the signal.
function M.on_interrupt(handler)
  install_signals()
  interrupt_handler = handler
end

local commands = {}
local order = {}

-- Commands in modules of their own, in `beat help`'s order, with the summary
-- `beat help` lists (written only here). A module loads when its command
-- runs or its help is shown, and its register(cli) adds the command: `beat
-- version`, `beat help` and a mistyped command load none of them.
local MODULES = {
  { "loop", "beat.cli.loop", "run an agent until a check passes or a score stops improving; manage runs" },
  { "runs", "beat.cli.runs", "list the runs of this work tree" },
  { "show", "beat.cli.show", "show what a run did: its iterations, diff and logs" },
  { "restore", "beat.cli.restore", "put the work tree back as it was at a point of a run" },
  { "logs", "beat.cli.control", "print a detached run's output (-f: follow it)" },
  { "clean", "beat.cli.clean", "remove finished runs and their snapshots" },
  { "agents", "beat.cli.agents", "list agent adapters; check whether their CLIs can run headless here" },
  { "report", "beat.cli.report", "chart a run's scores (terminal, SVG, HTML, JSON)" },
  { "mcp", "beat.cli.mcp", "serve beat's loop tools to coding agents over MCP" },
}

--- Adds a command: spec = {summary=, usage=, help=, run=function(args) -> status}.
--- A command of MODULES takes its summary from there.
function M.command(name, spec)
  local known = commands[name]
  if not known then order[#order + 1] = name end
  if known and known.module and spec.summary == nil then spec.summary = known.summary end
  commands[name] = spec
end

-- The command called name, its module loaded if need be; nil if none.
local function command(name)
  local c = commands[name]
  if c and c.module then
    require(c.module).register(M)
    assert(not commands[name].module, ("%s did not register the command '%s'"):format(c.module, name))
    c = commands[name]
  end
  return c
end

local function has_help_flag(args)
  for _, a in ipairs(args) do
    if a == "--" then return false end
    if a == "-h" or a == "--help" then return true end
  end
  return false
end

local function print_help(name)
  if name == nil then
    local lines = {
      "beat — run coding agents in a loop: propose, check, score, keep or discard.",
      "",
      "Usage: beat <command> [options]",
      "",
      "Commands:",
    }
    for _, n in ipairs(order) do
      lines[#lines + 1] = ("  %-10s %s"):format(n, commands[n].summary)
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Run 'beat help <command>' or 'beat <command> --help' for details."
    lines[#lines + 1] = "Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted."
    print(table.concat(lines, "\n"))
    return M.EXIT_OK
  end
  local c = command(name)
  if not c then
    say("unknown command '%s' (see 'beat help')", name)
    return M.EXIT_USAGE
  end
  print(("Usage: %s\n\n%s"):format(c.usage, c.help or c.summary))
  return M.EXIT_OK
end

M.command("run", {
  summary = "run a Lua recipe",
  usage = "beat run [--json|--plain] [-q] FILE [ARGS...] [--set KEY=VALUE]...\n       beat run --detach FILE [ARGS...] [--set KEY=VALUE]...",
  help = [[
Runs FILE as a Lua chunk inside a task, so beat.exec, beat.sleep and the
rest of the API block only that task. ARGS reach the recipe as `...` and
in the global table `arg` (arg[0] is FILE). Modules next to FILE can be
required. The run ends when the recipe and every task it started are done.
--set KEY=VALUE overrides an option of every loop strategy the recipe runs
(max_iterations=3, agent_timeout=5m, quiet=true); numbers and true/false
are converted.

How the recipe's loops show (flags before FILE): on a terminal a status
line under the log lines; --plain one plain line per event; --json one
JSON event per line on stdout (docs/json.md; what the recipe prints
itself still goes to stdout); -q only each run's summary.

--detach (before FILE) runs the recipe in the background, in a session of
its own: the id of its first loop's run is printed at once, its output goes
to .beat/runs/ID/output.log ('beat loop attach ID' follows it). A recipe
run can be resumed after a crash ('beat loop resume ID'): the recipe runs
again with the same arguments, and its first loop of that strategy in that
work tree continues the run.

Exit status: the recipe's integer return value (0-255) if any, else 0; 1
when it returns another number (256, -1, 1.5) or raises an error (printed as file:line: message with a traceback); 2 for a
bad command line; 130 on Ctrl-C (a second Ctrl-C exits at once); 143 on
SIGTERM. Child processes never outlive beat.]],
  run = function(args)
    -- beat's own flags come before FILE; after it, everything is the recipe's
    local view = {}
    local detach, run_id, detached_run, pre_set = false, nil, false, {}
    while args[1] == "--json" or args[1] == "--plain" or args[1] == "-q" or args[1] == "--quiet"
        or args[1] == "--detach" or args[1] == "--run-id" or args[1] == "--detached-run" or args[1] == "--set" do
      local flag = table.remove(args, 1)
      if flag == "--json" or flag == "--plain" then
        if view.mode then M.usage_error("run: give --json or --plain, not both") end
        view.mode = flag:sub(3)
      elseif flag == "-q" or flag == "--quiet" then view.quiet = true
      elseif flag == "--detach" then detach = true
      elseif flag == "--detached-run" then detached_run = true
      elseif flag == "--set" then pre_set[#pre_set + 1] = table.remove(args, 1) or ""
      else run_id = table.remove(args, 1) or M.usage_error("run: --run-id needs a value") end
    end
    local file = args[1]
    if file == nil then M.usage_error("run: missing FILE (usage: beat run FILE [ARGS...])") end
    if file:sub(1, 1) == "-" and file ~= "-" then
      M.usage_error("run: unknown option '%s'", file)
    end
    local fs = require "beat.fs"
    if file ~= "-" and fs.is_dir(file) then
      M.usage_error("run: %s is a directory, not a recipe file", file)
    end
    local chunk, err = loadfile(file)
    if not chunk then
      if err:find("cannot open", 1, true) or err:find("cannot read", 1, true) then
        M.usage_error("run: cannot read recipe %s: %s", file,
          (err:match(": ([^:]+)$") or err):lower())
      end
      say("%s", err)
      return M.EXIT_FAIL
    end
    local script_args = { [0] = file }
    local overrides = {}
    for _, kv in ipairs(pre_set) do table.insert(args, 2, "--set"); table.insert(args, 3, kv) end
    local i = 2
    while i <= #args do
      local a = args[i]
      local kv = a == "--set" and args[i + 1] or a:match("^%-%-set=(.*)$")
      if a == "--set" or kv then
        if not kv or not kv:match("^[%a_][%w_]*=") then
          M.usage_error("run: --set needs key=value, got '%s'", tostring(kv))
        end
        local k, v = kv:match("^([^=]+)=(.*)$")
        overrides[k] = v
        i = i + (a == "--set" and 2 or 1)
      else
        script_args[#script_args + 1] = a
        i = i + 1
      end
    end
    if detach then
      if run_id or detached_run then M.usage_error("run: --detach cannot be combined with --run-id") end
      if file == "-" then M.usage_error("run: --detach needs a recipe file, not standard input") end
      return M.drive(function()
        local id, info, code = require("beat.runs.control").start_detached { recipe = file,
          recipe_args = { table.unpack(script_args, 1) }, set = overrides }
        if not id then
          if code == 2 then M.usage_error("run: %s", info) end
          say("run: %s", tostring(info))
          return M.EXIT_FAIL
        end
        print(id)
        say("run %s started in the background (pid %d); follow it: beat loop attach %s", id, info.pid, id)
        return M.EXIT_OK
      end)
    end
    if view.mode or view.quiet then require("beat.ui").configure(view) end
    -- what `beat run` hands to the runs the recipe starts
    require("beat.loop").session {
      overrides = next(overrides) and overrides or nil,
      origin = file ~= "-" and { kind = "recipe", file = fs.realpath(file), args = { table.unpack(script_args, 1) },
        set = next(overrides) and overrides or nil, dir = fs.cwd() } or nil,
      detached = detached_run,
      pending = run_id and { id = run_id } or nil,
    }
    _G.arg = script_args
    local dir = file:match("^(.*)/[^/]*$") or "."
    package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
    local code = M.drive(function() return chunk(table.unpack(script_args, 1)) end)
    if run_id then require("beat.cli.control").close_reserved(run_id, code) end
    return code
  end,
})

M.command("repl", {
  summary = "interactive Lua prompt with the beat API",
  usage = "beat repl",
  help = [[
An interactive prompt. Each line runs in its own task, so blocking calls
work: `beat.exec{"ls"}`. `=expr` or a bare expression prints its value;
errors print and the prompt goes on. Ctrl-C cancels the running line (or
clears the line being typed), Ctrl-D exits. History is kept in
~/.beat_history. The global `beat` is the API.]],
  run = function(args)
    if args[1] then M.usage_error("repl: unexpected argument '%s'", args[1]) end
    return require("beat.cli.repl").run(M)
  end,
})

M.command("version", {
  summary = "print beat's version",
  usage = "beat version",
  run = function(args)
    if args[1] then M.usage_error("version: unexpected argument '%s'", args[1]) end
    print(("beat %s (%s, libuv %s)"):format(require("beat").version, _VERSION,
      require("beat._runtime").uv_version or "?"))
    return M.EXIT_OK
  end,
})

M.command("help", {
  summary = "show help for beat or a command",
  usage = "beat help [COMMAND]",
  run = function(args) return print_help(args[1]) end,
})

for _, m in ipairs(MODULES) do
  order[#order + 1] = m[1]
  commands[m[1]] = { module = m[2], summary = m[3] }
end

--- Entry point: arg is the process's argument table (arg[0] is beat).
---@param arg table
---@return integer status
function M.main(arg)
  local args = { table.unpack(arg, 1) }
  local name = table.remove(args, 1)
  if name == nil then return print_help() end
  if name == "-h" or name == "--help" then return print_help(args[1]) end
  if name == "--version" or name == "-V" then name = "version" end
  local c = command(name)
  if not c then
    if name:sub(1, 1) == "-" then
      say("unknown option '%s' (see 'beat help')", name)
    else
      say("unknown command '%s' (see 'beat help')", name)
    end
    return M.EXIT_USAGE
  end
  if name ~= "run" and has_help_flag(args) or (name == "run" and (args[1] == "-h" or args[1] == "--help")) then
    return print_help(name)
  end
  local ok, res = pcall(c.run, args)
  if not ok then
    if type(res) == "table" and res.usage then
      say("%s", res.usage)
      return M.EXIT_USAGE
    end
    error(res, 0)
  end
  return res
end

return M
