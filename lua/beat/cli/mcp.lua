--- `beat mcp start|config|test`: beat as an MCP server for coding agents
--- (Claude Code, Cursor, Codex, ...). See docs/mcp.md.
local M = {}

local USAGE = "beat mcp start [--max-line SIZE] [--max-concurrent N] [-v] | beat mcp config [--codex] | beat mcp test"

local HELP = [[
beat as a Model Context Protocol server: an agent gets beat's loop tools
(CreateLoop, LoopStatus, ListLoops, PauseLoop, ResumeLoop, CancelLoop,
RunRecipe, LoopReport, LoopDiff — Backbeat's names and arguments) through
its MCP configuration.

  beat mcp start     serve MCP on standard input and output (JSON-RPC, one
                     message per line); the client starts this command
      --max-line SIZE        longest message accepted (default 16M; K, M, G
                             suffixes); a longer one is answered with an error
      --max-concurrent N     tool calls served at once (default 32); more wait
      -v, --verbose          diagnostics down to debug level on stderr
  beat mcp config    print the mcpServers JSON for this binary (absolute path)
      --codex                print the TOML for ~/.codex/config.toml instead
  beat mcp test      start the server, initialize, list the tools, call
                     ListLoops, and exit 0: a self-check after installing

The server prints nothing but protocol messages on stdout (diagnostics go to
stderr). It exits 0 when its input closes (calls in flight get 10 s to
answer) or on SIGTERM/SIGINT. The loops it starts are detached runs (as
'beat loop --detach'), not part of the server: they go on when it stops, and
any beat finds them through the run index.]]

local function parse_size(cli, flag, v)
  local n, unit = tostring(v):match("^(%d+)([KkMmGg]?)[iI]?[bB]?$")
  local mult = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }
  local size = n and math.tointeger(tonumber(n) * mult[unit:lower()])
  local limit = require("beat.stdio").MAX_LINE_LIMIT
  if not size or size < 1024 or size > limit then
    cli.usage_error("mcp start: %s must be a size from 1K to 1G (e.g. 16M), got '%s'", flag, tostring(v))
  end
  return size
end

local function start(cli, args)
  local opts = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    flag = flag or a
    local function value()
      if inline then return inline end
      i = i + 1
      if args[i] == nil then cli.usage_error("mcp start: %s needs a value", flag) end
      return args[i]
    end
    if flag == "--max-line" then
      opts.max_line = parse_size(cli, flag, value())
    elseif flag == "--max-concurrent" then
      local v = value()
      local n = math.tointeger(tonumber(v))
      if not n or n < 1 or n > 1024 then
        cli.usage_error("mcp start: --max-concurrent must be an integer from 1 to 1024, got '%s'", v)
      end
      opts.max_concurrent = n
    elseif (flag == "-v" or flag == "--verbose") and not inline then
      opts.verbose = true
    else
      cli.usage_error("mcp start: unknown option '%s' (see 'beat mcp --help')", a)
    end
    i = i + 1
  end
  opts.on_stop = cli.on_interrupt
  return cli.drive(function() return require("beat.mcp.server").serve(opts) end)
end

local function config(cli, args)
  local codex = false
  for _, a in ipairs(args) do
    if a == "--codex" then codex = true else cli.usage_error("mcp config: unknown argument '%s'", a) end
  end
  local json = require "beat.mcp.json"
  local bin = require("beat").exepath()
  if codex then
    print(("[mcp_servers.beat]\ncommand = %s\nargs = [\"mcp\", \"start\"]"):format(json.encode(bin)))
  else
    print(json.encode({ mcpServers = { beat = json.ordered({ command = bin, args = { "mcp", "start" } }, { "command", "args" }) } },
      { indent = "  " }))
  end
  return 0
end

-- A minimal MCP client over a child process: send requests, wait for the
-- answer to each.
local function self_test(cli, args)
  if args[1] then cli.usage_error("mcp test: unexpected argument '%s'", args[1]) end
  local beat = require "beat"
  local json = require "beat.mcp.json"
  local task = require "beat.task"
  local server = require "beat.mcp.server"
  return cli.drive(function()
    local answers, wake, stderr = {}, nil, {}
    local proc, err = beat.spawn({ beat.exepath(), "mcp", "start" }, {
      stdin = true, max_output = 16 * 1024 * 1024,
      stdout = function(line)
        local msg = json.decode(line)
        if type(msg) == "table" and msg.id ~= nil then
          answers[msg.id] = msg
          if wake then wake() end
        end
      end,
      stderr = function(line) stderr[#stderr + 1] = line end,
    })
    if not proc then
      io.stderr:write("beat mcp test: cannot start the server: ", tostring(err), "\n")
      return 1
    end
    local function fail(fmt, ...)
      io.stderr:write(("beat mcp test: FAILED: " .. fmt .. "\n"):format(...))
      for _, l in ipairs(stderr) do io.stderr:write("  server: ", l, "\n") end
      proc:kill("KILL")
      pcall(proc.wait, proc)
      return 1
    end
    local function request(id, method, params)
      proc:write(json.encode { jsonrpc = "2.0", id = id, method = method, params = params } .. "\n")
      local deadline = beat.clock() + 10
      while not answers[id] and beat.clock() < deadline and not proc:done() do
        local timer = require("beat._runtime").timer()
        pcall(task.await, "mcp test", function(w)
          wake = w
          timer:start(100, w)
        end)
        timer:close()
        wake = nil
      end
      return answers[id]
    end
    local init = request(1, "initialize", { protocolVersion = server.LATEST, capabilities = {},
      clientInfo = { name = "beat-mcp-test", version = beat.version } })
    if not init or not init.result then return fail("no answer to initialize: %s", json.encode(init)) end
    if init.result.protocolVersion ~= server.LATEST then
      return fail("protocol %s negotiated, expected %s", tostring(init.result.protocolVersion), server.LATEST)
    end
    proc:write(json.encode { jsonrpc = "2.0", method = "notifications/initialized" } .. "\n")
    local list = request(2, "tools/list", {})
    if not list or not list.result or type(list.result.tools) ~= "table" then
      return fail("no tool list: %s", json.encode(list))
    end
    local names = {}
    for _, t in ipairs(list.result.tools) do names[#names + 1] = t.name end
    local call = request(3, "tools/call", { name = "ListLoops", arguments = { limit = 1 } })
    if not call or not call.result then return fail("ListLoops got no result: %s", json.encode(call)) end
    if call.result.isError then
      io.stdout:write("note: ListLoops here: ", tostring(call.result.content[1].text), "\n")
    end
    proc:close_stdin()
    local res = proc:wait(5)
    if not res then return fail("the server did not exit within 5 s of its input closing") end
    if res.code ~= 0 then return fail("the server exited with status %d", res.code) end
    print(("ok: %s %s speaks MCP %s; %d tools: %s"):format(init.result.serverInfo.name,
      init.result.serverInfo.version, init.result.protocolVersion, #names, table.concat(names, ", ")))
    return 0
  end)
end

function M.register(cli)
  cli.command("mcp", {
    usage = USAGE,
    help = HELP,
    run = function(args)
      local sub = table.remove(args, 1)
      if sub == "start" then return start(cli, args) end
      if sub == "config" then return config(cli, args) end
      if sub == "test" then return self_test(cli, args) end
      if sub == nil then cli.usage_error("mcp: missing subcommand: start, config or test (see 'beat mcp --help')") end
      cli.usage_error("mcp: unknown subcommand '%s': start, config or test", sub)
    end,
  })
end

return M
