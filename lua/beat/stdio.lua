--- beat.stdio: standard streams for servers written on beat (`beat mcp
--- start`): read the lines of a file descriptor from a task while other
--- tasks run, and write messages whole.
---
---   local stdio = require "beat.stdio"
---   local input = assert(stdio.lines { fd = 0 })
---   while true do
---     local line, why = input:read()      -- blocks this task only
---     if not line then break end
---     assert(stdio.write(1, handle(line) .. "\n"))
---   end
---
--- The C half is engine/stdio.c (module beat._stdio).
local C = require "beat._stdio"
local task = require "beat.task"

local M = {}

M.DEFAULT_MAX_LINE = 16 * 1024 * 1024
M.MAX_LINE_LIMIT = 1 << 30
local HIGH_WATER = 256   -- queued lines before reading pauses (memory stays bounded)

---@class beat.stdio.Lines
local Lines = {}
Lines.__index = Lines

---@class beat.stdio.LinesOptions
---@field fd? integer the descriptor to read (default 0, standard input)
---@field max_line? integer longest line kept, in bytes (default 16 MiB); longer ones are dropped and reported

--- Starts reading the lines of a descriptor: a pipe, a socket, a terminal or
--- a file. Raises on bad options; returns nil, reason when fd cannot be read.
---@param opts? beat.stdio.LinesOptions
---@return beat.stdio.Lines|nil lines
---@return string? err
function M.lines(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error(("beat.stdio.lines: opts must be a table, got %s"):format(type(opts)), 2) end
  for k in pairs(opts) do
    if k ~= "fd" and k ~= "max_line" then error(("beat.stdio.lines: unknown option opts.%s"):format(tostring(k)), 2) end
  end
  local fd = opts.fd == nil and 0 or opts.fd
  if math.type(fd) ~= "integer" or fd < 0 then
    error(("beat.stdio.lines: opts.fd must be a file descriptor (an integer >= 0), got %s"):format(tostring(fd)), 2)
  end
  local max = opts.max_line == nil and M.DEFAULT_MAX_LINE or opts.max_line
  if math.type(max) ~= "integer" or max < 1 or max > M.MAX_LINE_LIMIT then
    error(("beat.stdio.lines: opts.max_line must be an integer from 1 to %d (1 GiB), got %s")
      :format(M.MAX_LINE_LIMIT, tostring(max)), 2)
  end
  local self = setmetatable({ queue = {}, first = 1, last = 0 }, Lines)
  local reader, err = C.reader(fd, max, function(line, why, size, head)
    self:_push(line or { why = why or "eof", size = size, head = head })
  end)
  if not reader then return nil, err end
  self.reader = reader
  return self
end

function Lines:_push(item)
  self.last = self.last + 1
  self.queue[self.last] = item
  if not self.paused and self.last - self.first + 1 >= HIGH_WATER then
    self.paused = true
    self.reader:stop()
  end
  local wake = self.wake
  if wake then
    self.wake = nil
    wake()
  end
end

--- The next line (without "\n"), waiting for it. At the end returns nil
--- and why: "eof", "closed" (after close) or "read: <error>". A line longer
--- than max_line returns nil, "too long", its size in bytes and its first
--- bytes (up to 1 KiB); reading goes on after it.
---@return string|nil line
---@return string? why
---@return integer? size
---@return string? head
function Lines:read()
  if self.first > self.last then
    if self.closed then return nil, "closed" end
    task.await("lines:read", function(wake)
      self.wake = wake
      return function() self.wake = nil end
    end)
    if self.first > self.last then return nil, "closed" end
  end
  local item = self.queue[self.first]
  if type(item) ~= "string" and item.why ~= "too long" then
    return nil, item.why   -- the end stays in the queue: every later read sees it
  end
  self.queue[self.first] = nil
  self.first = self.first + 1
  if self.paused and self.last - self.first < HIGH_WATER // 4 and not self.closed then
    self.paused = false
    local ok, err = self.reader:start()
    if not ok then self:_push({ why = err }) end
  end
  if type(item) == "string" then return item end
  return nil, item.why, item.size, item.head
end

--- Stops reading; a task waiting in read() gets nil, "closed". Idempotent.
function Lines:close()
  if self.closed then return end
  self.closed = true
  self.reader:close()
  local wake = self.wake
  if wake then
    self.wake = nil
    wake()
  end
end
Lines.__close = Lines.close

--- Writes all of data to fd before returning (waiting if the reader is
--- slow), so one call is one uncut message. Returns true, or nil and
--- "write: <why>" (the reader is gone: "Broken pipe").
---@param fd integer
---@param data string
---@return true|nil ok
---@return string? err
function M.write(fd, data)
  if math.type(fd) ~= "integer" or fd < 0 then
    error(("beat.stdio.write: fd must be a file descriptor, got %s"):format(tostring(fd)), 2)
  end
  if type(data) ~= "string" then error(("beat.stdio.write: data must be a string, got %s"):format(type(data)), 2) end
  local ok, err = C.write(fd, data)
  if not ok then return nil, err end
  return true
end

--- Takes fd for this process alone: returns a new descriptor for what fd
--- was, and makes fd refer to what `with` refers to. `claim(1, 2)` gives a
--- server a private standard output; anything else printed goes to stderr.
---@param fd integer
---@param with integer
---@return integer|nil newfd
---@return string? err
function M.claim(fd, with)
  for _, v in ipairs { fd, with } do
    if math.type(v) ~= "integer" or v < 0 then
      error(("beat.stdio.claim: descriptors must be integers >= 0, got %s"):format(tostring(v)), 2)
    end
  end
  local newfd, err = C.claim(fd, with)
  if not newfd then return nil, err end
  return newfd
end

return M
