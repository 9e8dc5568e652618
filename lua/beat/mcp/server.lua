--- beat.mcp.server: the Model Context Protocol over stdio — JSON-RPC 2.0,
--- one message per line.
---
--- Server.new{...} is the protocol alone: handle_line(line) takes what the
--- client sent, send(text) is called with every line to write. M.serve
--- wires it to the process: standard input read by a task (beat.stdio),
--- standard output kept for protocol messages (anything else printed goes
--- to stderr), signals, and the end of input.
---
--- Each tools/call runs in a task of its own, so a call that waits does not
--- hold up the others; notifications/cancelled cancels it (no answer is
--- sent for it then). Nothing here holds loop state: loops are runs on
--- disk, so the server can stop or restart at any time.
local beat = require "beat"
local task = require "beat.task"
local json = require "beat.mcp.json"
local tools = require "beat.mcp.tools"

local M = {}

--- The protocol versions beat speaks, newest first: every version the
--- official TypeScript SDK (1.32) offers.
M.VERSIONS = { "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", "2024-10-07" }
M.LATEST = M.VERSIONS[1]
local SUPPORTED = {}
for _, v in ipairs(M.VERSIONS) do SUPPORTED[v] = true end

--- JSON-RPC error codes.
M.PARSE_ERROR, M.INVALID_REQUEST, M.METHOD_NOT_FOUND = -32700, -32600, -32601
M.INVALID_PARAMS, M.INTERNAL_ERROR = -32602, -32603
M.NOT_INITIALIZED = -32002   -- a request other than initialize or ping came first

--- Log levels (RFC 5424 severities, as MCP names them), least severe first.
M.LEVELS = { "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency" }
local SEVERITY = {}
for i, l in ipairs(M.LEVELS) do SEVERITY[l] = i end

M.INSTRUCTIONS = [[
beat runs coding agents in loops on a git work tree: retry until a check passes, or optimize a score, keeping only what improves, with every iteration snapshotted in git.
CreateLoop starts a loop that runs on its own, as a process of its own: it goes on when this server or its client goes away, and any beat finds it again. PauseLoop, ResumeLoop and CancelLoop steer it; ListLoops lists every loop (workingDirectory: one work tree's); LoopStatus shows one (waitMs waits for it to end); LoopDiff shows what it changed; LoopReport charts its scores.
workingDirectory defaults to the directory the server started in. One loop per work tree at a time. A loop's best result is left in the work tree as an uncommitted diff; `beat restore <loopId> base` undoes a loop.]]

---@class beat.mcp.Server
local Server = {}
Server.__index = Server

---@class beat.mcp.ServerOptions
---@field send fun(line: string) writes one message (a line, newline included)
---@field registry beat.mcp.Registry the tools
---@field cwd? string default work tree of the tools
---@field name? string
---@field version? string
---@field stderr_level? string diagnostics at or above this level go to stderr (default "warning")
---@field max_concurrent? integer tools/call running at once (default 32)

---@param opts beat.mcp.ServerOptions
---@return beat.mcp.Server
function M.new(opts)
  return setmetatable({
    send_line = opts.send, registry = opts.registry, cwd = opts.cwd or beat.fs.cwd(),
    name = opts.name or "beat", version = opts.version or beat.version,
    stderr_level = SEVERITY[opts.stderr_level or "warning"],
    max_concurrent = opts.max_concurrent or 32,
    protocol = nil,          -- the negotiated version, once initialize is answered
    client_ready = false,    -- notifications/initialized received
    client_level = nil,      -- logging/setLevel
    inflight = {}, ninflight = 0,
    sleepers = {},           -- wake functions of handlers sleeping (woken when closing)
    slot_waiters = {},
    closing = false,
  }, Server)
end

-- Sending --------------------------------------------------------------------

local MSG_ORDER = { "jsonrpc", "id", "method", "params", "result", "error" }

function Server:send(msg)
  if getmetatable(msg) == nil then json.ordered(msg, MSG_ORDER) end
  local ok, text = pcall(json.encode, msg)
  if not ok then
    self:log("error", "cannot encode a message: " .. tostring(text))
    if msg.id ~= nil then
      text = json.encode { jsonrpc = "2.0", id = msg.id,
        error = { code = M.INTERNAL_ERROR, message = "Internal error: the answer could not be encoded" } }
    else
      return
    end
  end
  self.send_line(text .. "\n")
end

-- An error answer to request id (nil: the request could not be identified).
local function error_msg(id, code, message)
  return { jsonrpc = "2.0", id = id == nil and json.null or id, error = { code = code, message = message } }
end

function Server:fail(id, code, message)
  self:send(error_msg(id, code, message))
end

--- A diagnostic: to stderr at or above the stderr level, and to the client
--- as notifications/message at or above the level it set.
---@param level string
---@param message string
function Server:log(level, message)
  local sev = SEVERITY[level] or SEVERITY.info
  if sev >= self.stderr_level then
    io.stderr:write(("beat mcp: %s: %s\n"):format(level, message))
  end
  if self.client_level and sev >= self.client_level and self.protocol then
    self:send { jsonrpc = "2.0", method = "notifications/message",
      params = { level = level, logger = "beat", data = message } }
  end
end

-- Ids ------------------------------------------------------------------------

local function id_key(id)
  if type(id) == "string" then return "s:" .. id end
  return "n:" .. json.encode(id)
end

local function valid_id(id)
  return type(id) == "string" or (type(id) == "number" and id == id and id ~= math.huge and id ~= -math.huge)
end

-- Methods --------------------------------------------------------------------
-- Each gets (server, r, params): r.id, r.key, and r:reply(result) /
-- r:fail(code, message), which answer where the request came from (the
-- client, or the batch it was part of).

local Request = {}
Request.__index = Request

function Request:reply(result)
  self.answer { jsonrpc = "2.0", id = self.id, result = result }
end

function Request:fail(code, message)
  self.answer(error_msg(self.id, code, message))
end

local methods = {}

function methods.initialize(self, r, params)
  if self.protocol then
    return r:fail(M.INVALID_REQUEST, "Invalid Request: the session is already initialized")
  end
  if type(params.protocolVersion) ~= "string" then
    return r:fail(M.INVALID_PARAMS, "Invalid params: protocolVersion must be a string")
  end
  if params.capabilities ~= nil and not json.is_object(params.capabilities) then
    return r:fail(M.INVALID_PARAMS, "Invalid params: capabilities must be an object")
  end
  if not json.is_object(params.clientInfo) or type(params.clientInfo.name) ~= "string" then
    return r:fail(M.INVALID_PARAMS, "Invalid params: clientInfo must be an object with a name")
  end
  local asked = params.protocolVersion
  self.protocol = SUPPORTED[asked] and asked or M.LATEST
  self.client = params.clientInfo
  if self.protocol ~= asked then
    self:log("notice", ("client %s asked for protocol %s; answering with %s"):format(
      tostring(params.clientInfo.name), asked, self.protocol))
  end
  local info = { name = self.name, version = self.version }
  if self.protocol >= "2025-06-18" then info.title = "beat" end
  r:reply {
    protocolVersion = self.protocol,
    capabilities = { tools = { listChanged = false }, logging = {} },
    serverInfo = info,
    instructions = M.INSTRUCTIONS,
  }
end

function methods.ping(_, r)
  r:reply {}
end

methods["tools/list"] = function(self, r, params)
  if params.cursor ~= nil then
    return r:fail(M.INVALID_PARAMS, "Invalid params: unknown cursor (every tool is on the first page)")
  end
  r:reply { tools = self.registry:list(self.protocol) }
end

methods["logging/setLevel"] = function(self, r, params)
  if not SEVERITY[params.level] then
    return r:fail(M.INVALID_PARAMS, ("Invalid params: level must be one of %s"):format(table.concat(M.LEVELS, ", ")))
  end
  self.client_level = SEVERITY[params.level]
  r:reply {}
end

methods["tools/call"] = function(self, r, params)
  if type(params.name) ~= "string" then
    return r:fail(M.INVALID_PARAMS, "Invalid params: name must be a string (see tools/list)")
  end
  if not self.registry:get(params.name) then
    return r:fail(M.INVALID_PARAMS, ("Invalid params: unknown tool %s (see tools/list)"):format(params.name))
  end
  if params.arguments ~= nil and not json.is_object(params.arguments) then
    return r:fail(M.INVALID_PARAMS, "Invalid params: arguments must be an object")
  end
  local meta = params._meta
  local token = json.is_object(meta) and meta.progressToken or nil
  if token ~= nil and not valid_id(token) then token = nil end
  local entry = { id = r.id, name = params.name, token = token, progress = -math.huge }
  self.inflight[r.key] = entry
  self.ninflight = self.ninflight + 1
  local ctx = self:_context(entry)
  local started = beat.clock()
  entry.task = task.start(true, function()
    local ok, res = pcall(self.registry.call, self.registry, params.name, params.arguments, ctx)
    self.inflight[r.key] = nil
    if entry.cancelled then
      self:log("debug", ("%s (request %s) cancelled"):format(params.name, json.encode(r.id)))
    elseif not ok and task.is_cancelled(res) then
      -- the server is stopping: no answer
    else
      if not ok then
        self:log("error", ("%s failed: %s"):format(params.name, tostring(res)))
        res = tools.error_result(("%s: internal error: %s"):format(params.name, tostring(res)))
      end
      self:log("debug", ("%s answered in %.0f ms%s"):format(params.name, (beat.clock() - started) * 1000,
        res.isError and " (tool error)" or ""))
      r:reply(res)
    end
    -- the slot is free once the answer is out (waking the reader may run it
    -- at once, and what it answers must come after this)
    self.ninflight = self.ninflight - 1
    self:_slot_freed()
  end)
  return entry.task
end

-- What a tool handler gets besides its arguments.
function Server:_context(entry)
  local server = self
  local ctx = { cwd = self.cwd, version = self.protocol, request_id = entry.id }
  --- Reports progress to the client when it asked for it (a progressToken);
  --- values that do not increase are dropped, as the protocol requires.
  function ctx.progress(_, progress, total, message)
    if entry.token == nil or entry.cancelled or type(progress) ~= "number" or progress <= entry.progress then return end
    entry.progress = progress
    local p = { progressToken = entry.token, progress = progress, total = total }
    if message and server.protocol >= "2025-03-26" then p.message = message end
    server:send { jsonrpc = "2.0", method = "notifications/progress", params = p }
  end
  function ctx.log(_, level, message) server:log(level, message) end
  --- Sleeps; returns false at once (or early) when the server is closing.
  function ctx.sleep(_, seconds)
    if server.closing then return false end
    local timer = require("beat._runtime").timer()
    local woke_early = false
    local ok, err = pcall(task.await, "ctx:sleep", function(wake)
      local key = {}
      server.sleepers[key] = function() woke_early = true wake() end
      timer:start(math.max(0, seconds) * 1000, function()
        server.sleepers[key] = nil
        wake()
      end)
      return function() server.sleepers[key] = nil end
    end)
    timer:close()
    if not ok then error(err, 0) end
    return not woke_early and not server.closing
  end
  function ctx.closing() return server.closing end
  return ctx
end

-- Notifications ----------------------------------------------------------------

local notifications = {}

notifications["notifications/initialized"] = function(self)
  self.client_ready = true
end

notifications["notifications/cancelled"] = function(self, params)
  local rid = params.requestId
  if not valid_id(rid) then return end
  local entry = self.inflight[id_key(rid)]
  if not entry then return end   -- finished already, or never seen: nothing to do
  entry.cancelled = true
  self:log("debug", ("cancelling %s (request %s)%s"):format(entry.name, json.encode(rid),
    type(params.reason) == "string" and (": " .. params.reason) or ""))
  entry.task:cancel()
end

-- Dispatch ---------------------------------------------------------------------

-- Handles one message (not a batch), answering through answer(msg);
-- returns the task serving it, if one was started.
function Server:dispatch(msg, answer)
  local id = msg.id
  local has_id = id ~= nil and id ~= json.null
  local function fail(code, message)
    answer(error_msg(has_id and valid_id(id) and id or nil, code, message))
  end
  if msg.jsonrpc ~= "2.0" then return fail(M.INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"") end
  if msg.method == nil then
    if has_id and (msg.result ~= nil or msg.error ~= nil) then
      self:log("debug", ("ignoring a response to request %s: beat sends no requests"):format(json.encode(id)))
      return
    end
    return fail(M.INVALID_REQUEST, "Invalid Request: no method")
  end
  if type(msg.method) ~= "string" then return fail(M.INVALID_REQUEST, "Invalid Request: method must be a string") end
  if id ~= nil and not valid_id(id) then
    return fail(M.INVALID_REQUEST, "Invalid Request: id must be a string or a number")
  end
  local params = msg.params
  if params ~= nil and not json.is_object(params) then
    if id == nil then return end
    return fail(M.INVALID_PARAMS, "Invalid params: params must be an object")
  end
  params = params or {}

  if id == nil then   -- a notification: never answered
    local fn = notifications[msg.method]
    if fn and (self.protocol or msg.method == "notifications/cancelled") then
      fn(self, params)
    else
      self:log("debug", ("ignoring notification %s"):format(msg.method))
    end
    return
  end

  if not self.protocol and msg.method ~= "initialize" and msg.method ~= "ping" then
    return fail(M.NOT_INITIALIZED, ("Server not initialized: send initialize before %s"):format(msg.method))
  end
  local fn = methods[msg.method]
  if not fn then return fail(M.METHOD_NOT_FOUND, ("Method not found: %s"):format(msg.method)) end
  local key = id_key(id)
  if self.inflight[key] then
    return fail(M.INVALID_REQUEST, ("Invalid Request: request id %s is already in use"):format(json.encode(id)))
  end
  return fn(self, setmetatable({ id = id, key = key, answer = answer }, Request), params)
end

--- Handles one line from the client: a message, or (protocol 2025-03-26
--- only) a batch of them.
---@param line string
function Server:handle_line(line)
  if line:sub(-1) == "\r" then line = line:sub(1, -2) end
  if not line:find("%S") then return end
  local msg, err = json.decode(line)
  if msg == nil then
    return self:fail(nil, M.PARSE_ERROR, "Parse error: " .. err)
  end
  if type(msg) ~= "table" then
    return self:fail(nil, M.INVALID_REQUEST, "Invalid Request: a message must be a JSON object or a batch")
  end
  if line:match("^%s*%[") then return self:batch(msg) end
  self:dispatch(msg, function(m) self:send(m) end)
end

-- JSON-RPC batches exist in protocol 2025-03-26 only (added then, removed
-- in 2025-06-18). The answers go out as one array once every call in the
-- batch is done; notifications (progress, log) go out as they come.
function Server:batch(list)
  if not self.protocol then
    return self:fail(nil, M.INVALID_REQUEST, "Invalid Request: a JSON-RPC batch before initialize (send initialize alone)")
  elseif self.protocol ~= "2025-03-26" then
    return self:fail(nil, M.INVALID_REQUEST, ("Invalid Request: JSON-RPC batches are not supported in protocol version %s (only in 2025-03-26)")
      :format(self.protocol))
  end
  if next(list) == nil then return self:fail(nil, M.INVALID_REQUEST, "Invalid Request: an empty batch") end
  local answers = json.array()
  local function answer(m) answers[#answers + 1] = m end
  local running = {}
  for _, m in ipairs(list) do
    if not json.is_object(m) or next(m) == nil then
      answer(error_msg(nil, M.INVALID_REQUEST, "Invalid Request: a batch holds message objects"))
    elseif m.method == "initialize" then
      answer(error_msg(valid_id(m.id) and m.id or nil, M.INVALID_REQUEST, "Invalid Request: initialize cannot be in a batch"))
    else
      local t = self:dispatch(m, answer)
      if task.is_task(t) then running[#running + 1] = t end
    end
  end
  local function flush()
    if #answers > 0 then self:send(answers) end
  end
  if #running == 0 then return flush() end
  task.start(true, function()
    for _, t in ipairs(running) do t:join() end
    flush()
  end)
end

-- Concurrency and shutdown -------------------------------------------------------

function Server:_slot_freed()
  local waiters = self.slot_waiters
  self.slot_waiters = {}
  for _, wake in ipairs(waiters) do wake() end
end

--- Waits until fewer than max_concurrent calls run (or the server closes).
function Server:wait_slot()
  while self.ninflight >= self.max_concurrent and not self.stopping do
    task.await("server:wait_slot", function(wake)
      table.insert(self.slot_waiters, wake)
    end)
  end
end

--- Stops at once (SIGTERM): every running call is cancelled, none is
--- answered.
function Server:stop()
  self.closing, self.stopping = true, true
  for _, entry in pairs(self.inflight) do
    entry.cancelled = true
    -- a signal delivered inside a call's own code (busy Lua) cancels that
    -- call where it runs: it raises there, at its next wait, not here
    pcall(entry.task.cancel, entry.task)
  end
  self:_wake_sleepers()
  self:_slot_freed()
end

function Server:_wake_sleepers()
  local s = self.sleepers
  self.sleepers = {}
  for _, wake in pairs(s) do wake() end
end

--- The client closed its end: waits cut short, running calls get up to
--- `drain` seconds to answer, then are cancelled. Returns when none runs.
---@param drain number seconds
function Server:close(drain)
  self.closing = true
  self:_wake_sleepers()
  local deadline = beat.clock() + drain
  while self.ninflight > 0 and beat.clock() < deadline do
    beat.sleep(0.02)
  end
  if self.ninflight > 0 then
    self:log("warning", ("cancelling %d call%s still running after the input closed"):format(
      self.ninflight, self.ninflight == 1 and "" or "s"))
    self:stop()
    while self.ninflight > 0 do beat.sleep(0.02) end
  end
end

-- The process --------------------------------------------------------------------

---@class beat.mcp.ServeOptions
---@field max_line? integer bytes of the longest message accepted (default 16 MiB)
---@field max_concurrent? integer
---@field drain? number seconds running calls get to answer after the input closes (default 10)
---@field verbose? boolean diagnostics down to debug on stderr
---@field on_stop fun(handler: fun(): boolean) how to hear SIGTERM/SIGINT (cli.on_interrupt)

-- The id of an over-long request, if its first bytes show one at the top
-- level: the client then gets an error for its request instead of waiting.
local function id_from_head(head)
  if type(head) ~= "string" then return nil end
  local body = head:match("^%s*{(.*)$")
  if not body then return nil end
  local pos = 1
  while true do
    local s, e = body:find('"id"%s*:%s*', pos)
    if not s then return nil end
    local before = body:sub(1, s - 1)
    if not before:find("[{%[]") then
      local rest = body:sub(e + 1)
      local num = rest:match("^(%-?%d+)[%s,}]")
      if num then return math.tointeger(tonumber(num)) end
      local str = rest:match('^"([^"\\]*)"')
      if str then return str end
      return nil
    end
    pos = e + 1
  end
end
M.id_from_head = id_from_head

--- Serves MCP on standard input and output until the input ends or a
--- SIGTERM/SIGINT arrives; returns the exit status (0). Runs in a task.
---@param opts beat.mcp.ServeOptions
---@return integer
function M.serve(opts)
  local stdio = require "beat.stdio"
  local out, err = stdio.claim(1, 2)
  if not out then
    io.stderr:write("beat mcp: cannot take standard output: ", tostring(err), "\n")
    return 1
  end
  local broken = false
  local server = M.new {
    registry = require("beat.mcp.catalog").registry(),
    stderr_level = opts.verbose and "debug" or "warning",
    max_concurrent = opts.max_concurrent,
    send = function(text)
      if broken then return end
      local ok, werr = stdio.write(out, text)
      if not ok then
        broken = true
        io.stderr:write("beat mcp: the client stopped reading (", tostring(werr), ")\n")
      end
    end,
  }
  local max_line = opts.max_line or stdio.DEFAULT_MAX_LINE
  local input, ierr = stdio.lines { fd = 0, max_line = max_line }
  if not input then
    io.stderr:write("beat mcp: cannot read standard input: ", tostring(ierr), "\n")
    return 1
  end
  opts.on_stop(function()
    if server.stopping then
      require("beat._runtime").exit(0)   -- asked twice: leave now
    end
    server:log("info", "stopping on a signal")
    server:stop()   -- never raises: the input is closed below whatever it meets
    input:close()
    return true
  end)
  server:log("debug", ("serving MCP on stdio (protocols %s)"):format(table.concat(M.VERSIONS, ", ")))
  while not server.stopping do
    server:wait_slot()
    if server.stopping then break end
    local line, why, size, head = input:read()
    if line then
      server:handle_line(line)
    elseif why == "too long" then
      server:fail(id_from_head(head), M.INVALID_REQUEST,
        ("Invalid Request: the message is %d bytes, more than the limit of %d (beat mcp start --max-line)"):format(size, max_line))
    else
      if why ~= "eof" and why ~= "closed" then server:log("error", "standard input: " .. tostring(why)) end
      break
    end
  end
  input:close()
  if server.stopping then
    while server.ninflight > 0 do beat.sleep(0.02) end
  else
    server:close(opts.drain or 10)
  end
  return 0
end

return M
