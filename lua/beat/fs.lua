--- beat.fs: small file helpers. Failures return nil, "path: why".
local core = require "beat._fs"

local M = {}

--- Reads a whole file.
---@param path string
---@return string|nil data, string? err
function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  return data
end

--- Replaces a file atomically (temp file, fsync, rename, fsync of the
--- directory). With durable = false, without the fsyncs: still all old or
--- all new, but a machine crash may lose the new content.
---@param path string
---@param data string
---@param durable? boolean
---@return true|nil ok, string? err
M.write = core.write

--- Appends data; with durable=true it is on disk when this returns; with
--- durable="later" its fsync runs on a thread of beat's while the caller
--- goes on (see fs.settle). A durable append (either kind) first waits for
--- the fsync running behind, and fails, writing nothing, when that one
--- failed. With mark=true, the file's mtime is set as fs.stamp(path, true)
--- sets it and its stamp and size after the write are returned.
---@param path string
---@param data string
---@param durable? boolean|"later"
---@param mark? boolean
---@return true|string|nil ok_or_stamp, string|integer|nil err_or_size
M.append = core.append

--- Waits for the fsync of a durable="later" append still running, if any:
--- true, or nil, "path: why" when it failed (reported once: by this or by
--- the next durable append). beat's exit waits for it too.
---@return true|nil ok, string? err
M.settle = core.settle

--- A file's state as an opaque string (device, inode, size, mtime: for
--- comparing) and its size: any write or replacement changes it. With
--- mark=true the mtime is first set to a whole second one second ago, a
--- time no later write can give the file, so that even a write of the same
--- size within the same clock tick changes the stamp. nil, err when the
--- file is not there.
---@param path string
---@param mark? boolean
---@return string|nil stamp, integer|string size_or_err
M.stamp = core.stamp

--- An unnamed read-write file (an io library file) whose data lives in
--- memory outside the Lua heap (memfd_create), not on any disk; where that
--- is refused, an io.tmpfile(). Nothing outside this process can reach it.
---@return file*|nil file, string? err
M.memfile = core.memfile

--- Creates one directory; fails with errno.EEXIST if it exists (nil, err, errno).
M.mkdir = core.mkdir

--- Creates a directory and its missing parents.
M.mkdir_p = core.mkdir_p

--- lstat: {type="file"|"directory"|"link"|"other", size, mode, mtime} or nil, err.
M.stat = core.stat

--- Whether path exists (a dangling link counts).
---@param path string
---@return boolean
function M.exists(path)
  return core.stat(path) ~= nil
end

---@param path string
---@return boolean
function M.is_dir(path)
  local st = core.stat(path)
  if st and st.type == "link" then
    local real = core.realpath(path)
    st = real and core.stat(real)
  end
  return st ~= nil and st.type == "directory"
end

--- access(2): mode "r", "w" or "x".
M.access = core.access
--- A new private directory under $TMPDIR (or /tmp), named prefix-XXXXXX.
M.tmpdir = core.tmpdir
--- Removes a file or a whole tree; links are not followed.
M.rm_rf = core.rm_rf
--- Sorted names in a directory (without "." and "..").
M.list = core.list
M.realpath = core.realpath
M.cwd = core.cwd
M.chdir = core.chdir

--- An flock(2) on path (created if missing, never removed), which the kernel
--- drops when the holder exits however it exits; the file then holds text.
--- Returns the lock (`:release()`, `:held()`; also released on `<close>` and
--- garbage collection) or nil, "path: why", errno — `errno.EWOULDBLOCK` when
--- another holder has it. Child processes do not inherit it.
---@param path string
---@param text string
M.lock = core.lock

--- The errno values callers tell apart: EEXIST, ENOENT, EWOULDBLOCK.
M.errno = core.errno

return M
