--- beat.git — snapshots of a work tree in git, without ever losing the user's work.
---
--- A snapshot is a commit of the whole work tree as it is (modified, deleted and
--- untracked-but-not-ignored files, exec bits, symlinks) stored under refs/beat/,
--- each file as the bytes it holds on disk: no eol conversion or other git
--- filter, either way, so a restore gives back every byte.
--- Taking one never moves HEAD, never writes the index file, never changes a
--- branch and never writes the work tree. Restoring one rewrites only paths that
--- are not ignored. See docs/api/git.md.
---
--- The C half (engine/git/, module beat._git) does the git work over libgit2;
--- this file holds the policy: option checking, default parents, the author
--- used when git has none, the refs/beat/ namespace, what is excluded, lock
--- messages.
---
--- Programmer mistakes (a wrong option type, a ref outside refs/beat/) raise;
--- failures of the world (not a repository, unknown revision, I/O errors) return
--- `nil, "what: why"`.
local C = require "beat._git"
local fs = require "beat.fs"

local M = {}

--- libgit2's version, e.g. "1.5.1".
M.libgit2_version = C.libgit2_version

--- The author and committer of snapshots when git has no user.name/user.email.
M.fallback_name, M.fallback_email = "beat", "beat@localhost"

---@class beat.git.Repo
---@field private _c userdata the C repository (beat.git.repo)
---@field private _watch boolean
local Repo = {}
Repo.__index = Repo

--- A work tree's lock (repo:lock).
---@class beat.git.Lock
---@field private _k userdata the beat.fs lock
local Lock = {}
Lock.__index = Lock

-- What the lock file says: "<pid> <id>".
local function holder(id)
  return ("%d %s\n"):format(require("beat._runtime").pid(), id)
end

local function check_id(fname, id, level)
  if type(id) ~= "string" then
    error(string.format("%s: opts.id must be string, got %s", fname, type(id)), level + 1)
  end
  if id == "" or id:find("[\n\r]") then
    error(fname .. ": opts.id must be a non-empty single line", level + 1)
  end
end

--- Let go of the lock (idempotent; also on `<close>`, garbage collection and
--- the end of the process).
function Lock:release() self._k:release() end

--- Whether this object still holds the lock.
---@return boolean
function Lock:held() return self._k:held() end

--- Change the id whoever is refused is told (the lock stays held): a run
--- takes the lock before its id is reserved.
---@param id string
---@return true|nil ok
---@return string? err
function Lock:relabel(id)
  check_id("lock:relabel", id, 2)
  if not self._k:held() then error("lock:relabel: the lock was released", 2) end
  return self._k:record(holder(id))
end

Lock.__close = Lock.release

--- What a repo excludes unless told otherwise: the runs directory.
M.default_exclude = { ".beat" }

--- Files larger than this many bytes are not snapshotted unless a repo is
--- told otherwise (1 GiB).
M.default_max_file_size = 1024 * 1024 * 1024

-- Option handling ----------------------------------------------------------

--- Accepts `f(x, extra)` and `f{key = x, ...}`: returns a fresh options table.
local function options(fname, arg, key, extra)
  local opts = {}
  if type(arg) == "table" then
    for k, v in pairs(arg) do opts[k] = v end
  else
    opts[key] = arg
  end
  if type(extra) == "table" then
    for k, v in pairs(extra) do
      if opts[k] == nil then opts[k] = v end
    end
  elseif extra ~= nil then
    error(string.format("%s: options must be a table, got %s", fname, type(extra)), 3)
  end
  return opts
end

local function check(fname, opts, name, kinds, required)
  local v = opts[name]
  if v == nil then
    if required then
      error(string.format("%s: opts.%s is required", fname, name), 3)
    end
    return
  end
  local t = type(v)
  for kind in kinds:gmatch("[^|]+") do
    if t == kind then return end
  end
  error(string.format("%s: opts.%s must be %s, got %s%s", fname, name, kinds, t,
    t == "string" and (" %q"):format(v) or ""), 3)
end

local function check_size(fname, opts, name)
  local v = opts[name]
  if v == nil then return nil end
  local n = math.tointeger(v)
  if not n or n < 0 then
    error(string.format("%s: opts.%s must be a size in bytes (an integer >= 0), got %s", fname, name,
      type(v) == "string" and ("%q"):format(v) or tostring(v)), 3)
  end
  return n
end

local function only(fname, opts, allowed)
  for k in pairs(opts) do
    if not allowed[k] then
      error(string.format("%s: unknown option %q", fname, tostring(k)), 3)
    end
  end
end

--- refs/beat/<x> or <x> → refs/beat/<x>; anything else under refs/ raises.
local function beat_ref(fname, name, what)
  if name:sub(1, 5) == "refs/" then
    if name:sub(1, 10) ~= "refs/beat/" then
      error(string.format("%s: %s must be under refs/beat/ (beat never writes other refs), got %q",
        fname, what, name), 3)
    end
    return name
  end
  return "refs/beat/" .. name
end

local function strip_slash(p)
  if #p > 1 and p:sub(-1) == "/" then return p:sub(1, -2) end
  return p
end

--- Resolve a revision to {commit = id or nil (for a tree), tree = id}.
local function resolve(self, fname, rev)
  local commit, tree = self._c:resolve(rev)
  if commit == nil then return nil, fname .. ": " .. tree end
  return { commit = commit or nil, tree = tree }
end

--- Resolve a revision that must name a commit.
local function resolve_commit(self, fname, rev)
  local r, err = resolve(self, fname, rev)
  if not r then return nil, err end
  if not r.commit then return nil, fname .. ": not a commit: " .. rev end
  return r
end

local function signature(self)
  local name, email = self._c:signature()
  if not name then return M.fallback_name, M.fallback_email end
  return name, email
end

--- A list of work-tree paths ("dir", "dir/sub"), checked and normalized
--- (no trailing slash); raises on anything else.
local function exclude_list(fname, list)
  if list == nil then return M.default_exclude end
  if type(list) ~= "table" then
    error(string.format("%s: opts.exclude must be a list of work-tree paths, got %s", fname, type(list)), 3)
  end
  local out = {}
  for i, p in ipairs(list) do
    local ok = type(p) == "string"
    if ok then
      p = p:gsub("/+$", "")
      ok = p ~= "" and p:sub(1, 1) ~= "/" and not p:find("\0")
      for part in p:gmatch("[^/]+") do
        if part == "." or part == ".." then ok = false end
      end
    end
    if not ok then
      error(string.format("%s: opts.exclude[%d] must be a relative path inside the work tree, got %s",
        fname, i, type(p) == "string" and ("%q"):format(p) or type(p)), 3)
    end
    out[#out + 1] = p
  end
  return out
end

-- A path on one line of a commit message: "\" and newlines escaped.
local function escape_line(p)
  return (p:gsub("\\", "\\\\"):gsub("\n", "\\n"))
end

local function unescape_line(p)
  return (p:gsub("\\(.)", { n = "\n", ["\\"] = "\\" }))
end

local function with_newline(msg)
  if msg:sub(-1) ~= "\n" then return msg .. "\n" end
  return msg
end

-- Module functions ---------------------------------------------------------

---@class beat.git.OpenOptions
---@field dir string a directory inside the work tree (any subdirectory works)
---@field watch? boolean watch the work tree with inotify so a snapshot costs what changed (default true); false: full scan every time
---@field exclude? string[] work-tree paths never snapshotted nor restored (default `{".beat"}`, the runs directory)
---@field max_file_size? integer files larger than this many bytes are left out of snapshots (default 1 GiB)

--- Open the repository whose work tree holds `dir`.
---@param opts string|beat.git.OpenOptions the directory, or options
---@return beat.git.Repo|nil repo
---@return string? err `"not a git repository: <dir>"`
function M.open(opts)
  local fname = "beat.git.open"
  opts = options(fname, opts, "dir")
  only(fname, opts, { dir = true, watch = true, exclude = true, max_file_size = true })
  check(fname, opts, "dir", "string", true)
  check(fname, opts, "watch", "boolean")
  local max = check_size(fname, opts, "max_file_size") or M.default_max_file_size
  local exclude = exclude_list(fname, opts.exclude)
  local c, err = C.open(opts.dir, opts.watch ~= false, exclude, max)
  if not c then return nil, err end
  return setmetatable({ _c = c, _watch = opts.watch ~= false, _exclude = exclude, _max = max }, Repo)
end

--- Create a repository in `dir` (created if missing; for tests, and for users
--- who want one) and open it.
---@param opts string|beat.git.OpenOptions the directory, or options
---@return beat.git.Repo|nil repo
---@return string? err
function M.init(opts)
  local fname = "beat.git.init"
  opts = options(fname, opts, "dir")
  only(fname, opts, { dir = true, watch = true, exclude = true, max_file_size = true })
  check(fname, opts, "dir", "string", true)
  check(fname, opts, "watch", "boolean")
  local ok, err = C.init(opts.dir)
  if not ok then return nil, err end
  return M.open(opts)
end

-- Repository methods -------------------------------------------------------

--- The work tree's root and this work tree's git directory (absolute, no trailing slash).
---@return string workdir
---@return string gitdir
function Repo:path()
  local wd, gd = self._c:paths()
  return strip_slash(wd), strip_slash(gd)
end

--- The commit HEAD points at (nil when there are no commits yet) and the
--- branch it is on (a full ref name such as "refs/heads/main"; nil when detached).
---@return string|nil commit
---@return string|nil branch
function Repo:head()
  return self._c:head()
end

---@class beat.git.Skipped
---@field path string a file left out of the snapshot: larger than max_file_size
---@field size integer its size in bytes

---@class beat.git.TreeInfo
---@field tree string the tree id
---@field scan "watch"|"full" how the changed files were found
---@field hashed integer files read and hashed (their bytes as they are, unfiltered)
---@field watch string state of the watch ("watching", "first scan", "index changed", ...)
---@field skipped beat.git.Skipped[] files too large to snapshot, left out (empty when none)

--- The tree id of the work tree as it is now: the tree a snapshot would get.
---@param opts? {full?: boolean, max_file_size?: integer}
---@return string|nil tree
---@return beat.git.TreeInfo|string info, or the error
function Repo:tree(opts)
  local fname = "repo:tree"
  opts = options(fname, opts or {}, "full")
  only(fname, opts, { full = true, max_file_size = true })
  check(fname, opts, "full", "boolean")
  local max = check_size(fname, opts, "max_file_size")
  local tree, info = self._c:tree(opts.full == true, max)
  if not tree then return nil, info end
  info.tree = tree
  return tree, info
end

---@class beat.git.SnapshotOptions
---@field ref? string where to store it: "refs/beat/<x>" or "<x>" (made refs/beat/<x>); overwritten if present
---@field message? string commit message (default "beat snapshot")
---@field parent? string|string[]|false parent revision(s) (default HEAD's commit, none when there is none; false for none)
---@field full? boolean scan the whole work tree instead of trusting the watch
---@field max_file_size? integer leave out files larger than this many bytes (default: the repo's, 1 GiB)

--- Commit the whole work tree as it is, without touching HEAD, the index,
--- any branch or any file. The commit message ends with a
--- `Beat-Worktree: <work tree>` trailer (see repo:worktree_of). A file larger
--- than max_file_size is not stored: it is listed in `info.skipped` and named
--- in the message (`Beat-Too-Large: <path> (<size> bytes)`).
---@param opts? beat.git.SnapshotOptions
---@return string|nil commit the snapshot's commit id
---@return beat.git.TreeInfo|string info, or the error
function Repo:snapshot(opts)
  local fname = "repo:snapshot"
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(fname .. ": options must be a table, got " .. type(opts), 2)
  end
  only(fname, opts, { ref = true, message = true, parent = true, full = true, max_file_size = true })
  check(fname, opts, "ref", "string")
  check(fname, opts, "message", "string")
  check(fname, opts, "parent", "string|table|boolean")
  check(fname, opts, "full", "boolean")
  local max = check_size(fname, opts, "max_file_size")
  if opts.parent == true then
    error(fname .. ": opts.parent must be a revision, a list of revisions or false, got true", 2)
  end
  local ref = opts.ref and beat_ref(fname, opts.ref, "opts.ref")
  local parents = {}
  if opts.parent == nil then
    parents[1] = self._c:head()
  elseif opts.parent then
    local list = type(opts.parent) == "table" and opts.parent or { opts.parent }
    for i, p in ipairs(list) do
      if type(p) ~= "string" then
        error(string.format("%s: opts.parent[%d] must be a string, got %s", fname, i, type(p)), 2)
      end
      local r, err = resolve_commit(self, "snapshot", p)
      if not r then return nil, err end
      parents[#parents + 1] = r.commit
    end
  end
  local tree, info = self:tree { full = opts.full, max_file_size = max }
  if not tree then return nil, info end
  local name, email = signature(self)
  -- trailers: the work tree it was taken in, the files left out
  local lines = { ("Beat-Worktree: %s"):format(escape_line((self:path()))) }
  for _, f in ipairs(info.skipped) do
    lines[#lines + 1] = ("Beat-Too-Large: %s (%d bytes)"):format(escape_line(f.path), f.size)
  end
  local message = with_newline(opts.message or "beat snapshot") .. "\n" .. table.concat(lines, "\n") .. "\n"
  local id, err = self._c:commit(tree, parents, message, name, email)
  if not id then return nil, err end
  if ref then
    local ok, rerr = self._c:set_ref(ref, id, "beat: snapshot")
    if not ok then return nil, "snapshot: " .. rerr end
  end
  return id, info
end

---@class beat.git.RestoreOptions
---@field commit string the snapshot (commit id, ref or any revision) to bring back
---@field backup? string first snapshot the work tree to this ref (under refs/beat/)

---@class beat.git.RestoreResult
---@field written integer files written (or whose exec bit changed)
---@field removed integer files removed
---@field kept beat.git.Skipped[] files too large to snapshot, left as they are (no snapshot could give them back)
---@field conflicts string[] paths changed after the restore looked at them (after the backup read them), left as they are: the work tree differs from the snapshot there (empty when none)

--- Make the work tree equal to a snapshot for every path that is not ignored:
--- changed files rewritten with the snapshot's bytes (no checkout filter),
--- added files removed, deleted files back, modes back, directories emptied by
--- the removals removed. Ignored paths, excluded paths (`.beat/`), files too
--- large to snapshot, HEAD, the index and branches are not touched.
---
--- With `backup`, the work tree is snapshotted first and the restore goes
--- from exactly what that snapshot holds: a file is rewritten or removed only
--- while it still holds the backup's bytes (checked as it is replaced, not
--- by its stat data), so a file changed after the backup read it — an
--- editor saving, a process still writing — is left as it is and listed in
--- `conflicts`. So a restore never destroys a byte that is not in a snapshot.
---@param opts string|beat.git.RestoreOptions the snapshot, or options
---@return beat.git.RestoreResult|nil result
---@return string? err
function Repo:restore(opts)
  local fname = "repo:restore"
  opts = options(fname, opts, "commit")
  only(fname, opts, { commit = true, backup = true })
  check(fname, opts, "commit", "string", true)
  check(fname, opts, "backup", "string")
  local backup = opts.backup and beat_ref(fname, opts.backup, "opts.backup")
  local r, rerr = resolve(self, "restore", opts.commit)
  if not r then return nil, rerr end
  local current, info
  if backup then
    local id
    id, info = self:snapshot { ref = backup, message = "beat: work tree before restore" }
    if not id then return nil, info end
    current = info.tree
  else
    current, info = self._c:tree(false)
    if not current then return nil, info end
  end
  if current == r.tree then return { written = 0, removed = 0, kept = info.skipped, conflicts = {} } end
  local keep = {}
  for i, f in ipairs(info.skipped) do keep[i] = f.path end
  local written, removed, conflicts = self._c:restore_tree(current, r.tree, keep)
  if not written then return nil, removed end
  return { written = written, removed = removed, kept = info.skipped, conflicts = conflicts }
end

---@class beat.git.DiffOptions
---@field from string a snapshot or any revision, or "worktree"
---@field to? string another one, or "worktree" (the default) for the work tree as it is now
---@field patch? boolean include the patch text (default true)

---@class beat.git.DiffFile
---@field path string
---@field status "added"|"deleted"|"modified"|"typechange"
---@field insertions integer
---@field deletions integer
---@field binary boolean

---@class beat.git.Diff
---@field files_changed integer
---@field insertions integer
---@field deletions integer
---@field files beat.git.DiffFile[]
---@field patch? string unified diff (absent with patch = false)

--- What changed between two snapshots, or a snapshot and the work tree.
--- Call as repo:diff(a, b) or repo:diff{from = a, to = b, patch = false}.
---@param a string|beat.git.DiffOptions the old side, or options
---@param b? string the new side, or "worktree" (default)
---@return beat.git.Diff|nil diff
---@return string? err
function Repo:diff(a, b)
  local fname = "repo:diff"
  local opts = options(fname, a, "from")
  if type(a) ~= "table" then opts.to = b end
  only(fname, opts, { from = true, to = true, patch = true })
  check(fname, opts, "from", "string", true)
  check(fname, opts, "to", "string")
  check(fname, opts, "patch", "boolean")
  local function tree_of(rev)
    if rev == "worktree" then return self._c:tree(false) end
    local r, err = resolve(self, "diff", rev)
    if not r then return nil, err end
    return r.tree
  end
  local ta, err = tree_of(opts.from)
  if not ta then return nil, err end
  local tb, err2 = tree_of(opts.to or "worktree")
  if not tb then return nil, err2 end
  return self._c:diff_trees(ta, tb, opts.patch ~= false)
end

--- Whether the work tree differs from a snapshot (cheap while the watch runs).
---@param opts string|{commit: string} the snapshot, or options
---@return boolean|nil changed
---@return string? err
function Repo:changed(opts)
  local fname = "repo:changed"
  opts = options(fname, opts, "commit")
  only(fname, opts, { commit = true })
  check(fname, opts, "commit", "string", true)
  local r, rerr = resolve(self, "changed", opts.commit)
  if not r then return nil, rerr end
  local now, err = self._c:tree(false)
  if not now then return nil, err end
  return now ~= r.tree
end

---@class beat.git.Ref
---@field name string full ref name
---@field id string the commit it points at

--- The refs whose names start with a prefix, sorted by name.
---@param opts? string|{prefix?: string} default "refs/beat/"
---@return beat.git.Ref[]|nil refs
---@return string? err
function Repo:refs(opts)
  local fname = "repo:refs"
  opts = options(fname, opts, "prefix")
  only(fname, opts, { prefix = true })
  check(fname, opts, "prefix", "string")
  local list, err = self._c:refs(opts.prefix or "refs/beat/")
  if not list then return nil, err end
  table.sort(list, function(x, y) return x.name < y.name end)
  return list
end

--- Point a ref under refs/beat/ at an existing commit (a snapshot): how a
--- strategy names its best result without taking another snapshot. With
--- `create = true` the ref must not exist yet: of several processes
--- creating one name at once, exactly one gets the id and the others
--- `false, "set_ref: <ref> exists"` — how a run reserves its id in a
--- repository whose work trees share refs/beat/.
---@param opts {ref: string, commit: string, create?: boolean} ref "refs/beat/<x>" or "<x>"; commit a revision
---@return string|false|nil id the commit id; false when create and the ref exists
---@return string? err
function Repo:set_ref(opts)
  local fname = "repo:set_ref"
  if type(opts) ~= "table" then error(fname .. ": options must be a table, got " .. type(opts), 2) end
  only(fname, opts, { ref = true, commit = true, create = true })
  check(fname, opts, "ref", "string", true)
  check(fname, opts, "commit", "string", true)
  check(fname, opts, "create", "boolean")
  local ref = beat_ref(fname, opts.ref, "opts.ref")
  local r, rerr = resolve_commit(self, "set_ref", opts.commit)
  if not r then return nil, rerr end
  local ok, err = self._c:set_ref(ref, r.commit, "beat: set ref", opts.create == true)
  if ok == false then return false, "set_ref: " .. ref .. " exists" end
  if not ok then return nil, "set_ref: " .. err end
  return r.commit
end

--- The work tree a snapshot was taken in (its `Beat-Worktree:` trailer), or
--- false when the commit does not say (a snapshot from before beat recorded
--- it, or any other commit).
---@param rev string a snapshot or any revision naming a commit
---@return string|false|nil path
---@return string? err
function Repo:worktree_of(rev)
  local fname = "repo:worktree_of"
  if type(rev) ~= "string" then error(fname .. ": rev must be a string, got " .. type(rev), 2) end
  local r, rerr = resolve_commit(self, "worktree_of", rev)
  if not r then return nil, rerr end
  local msg, err = self._c:message(r.commit)
  if not msg then return nil, err end
  local path
  for line in msg:gmatch("[^\n]+") do
    path = line:match("^Beat%-Worktree: (.+)$") or path
  end
  return path and unescape_line(path) or false
end

--- Delete the refs under refs/beat/ whose names start with a prefix.
---@param opts string|{prefix: string} "refs/beat/<x>" or "<x>"
---@return integer|nil deleted how many were deleted
---@return string? err
function Repo:delete_refs(opts)
  local fname = "repo:delete_refs"
  opts = options(fname, opts, "prefix")
  only(fname, opts, { prefix = true })
  check(fname, opts, "prefix", "string", true)
  local prefix = beat_ref(fname, opts.prefix, "opts.prefix")
  local list, err = self._c:refs(prefix)
  if not list then return nil, err end
  local n = 0
  for _, r in ipairs(list) do
    local ok, derr = self._c:delete_ref(r.name)
    if not ok then return nil, derr end
    n = n + 1
  end
  return n
end

---@class beat.git.WorktreeOptions
---@field path string where to create it (a missing or empty directory)
---@field commit string the snapshot to check out there
---@field watch? boolean as for open (default: as this repo)

--- A separate checkout of a snapshot (detached HEAD, no branch created, as
--- `git worktree add --detach`) for a parallel candidate; its snapshots land in
--- the same repository. Returns the new work tree, opened.
--- Call as repo:worktree(path, commit) or repo:worktree{path = ..., commit = ...}.
---@param path string|beat.git.WorktreeOptions
---@param commit? string
---@return beat.git.Repo|nil repo
---@return string? err
function Repo:worktree(path, commit)
  local fname = "repo:worktree"
  local opts = options(fname, path, "path")
  if type(path) ~= "table" then opts.commit = commit end
  only(fname, opts, { path = true, commit = true, watch = true })
  check(fname, opts, "path", "string", true)
  check(fname, opts, "commit", "string", true)
  check(fname, opts, "watch", "boolean")
  local r, rerr = resolve_commit(self, "worktree", opts.commit)
  if not r then return nil, rerr end
  local name = (strip_slash(opts.path):match("([^/]+)$") or "wt"):gsub("[^%w%-_.]", "_")
  local parent = strip_slash(opts.path):match("^(.+)/[^/]+$")
  if parent then
    local mok, merr = fs.mkdir_p(parent)
    if not mok then return nil, "worktree: " .. merr end
  end
  local ok, err = self._c:worktree_add(opts.path, r.commit, name)
  if not ok then return nil, err end
  local watch = opts.watch
  if watch == nil then watch = self._watch end
  return M.open { dir = opts.path, watch = watch, exclude = self._exclude }
end

--- Delete a work tree made by repo:worktree: its directory and git's record
--- of it. A linked work tree the user made, or a path that is not a linked
--- work tree of this repository, is refused with `nil, "worktree: ..."`.
---@param opts string|{path: string}
---@return true|nil ok
---@return string? err
function Repo:remove_worktree(opts)
  local fname = "repo:remove_worktree"
  opts = options(fname, opts, "path")
  only(fname, opts, { path = true })
  check(fname, opts, "path", "string", true)
  return self._c:worktree_remove(opts.path)
end

---@class beat.git.LockOptions
---@field id string who holds it (the run id), shown to whoever is refused
---@field name? string the lock's name (default "run": one run per work tree)

--- Take the work tree's lock. Released by `lock:release()`, `<close>`, garbage
--- collection, or the end of the process however it ends (it is an flock(2) on
--- a file in the git directory, so a lock left by a killed process is simply
--- taken over).
---@param opts string|beat.git.LockOptions the holder's id, or options
---@return beat.git.Lock|nil lock
---@return string? err `"work tree is in use by run <id> (pid N)"`
function Repo:lock(opts)
  local fname = "repo:lock"
  opts = options(fname, opts, "id")
  only(fname, opts, { id = true, name = true })
  check(fname, opts, "id", "string", true)
  check(fname, opts, "name", "string")
  check_id(fname, opts.id, 2)
  local name = opts.name or "run"
  if not name:match("^[%w%-_.]+$") then
    error(string.format("%s: opts.name must be a plain file name, got %q", fname, name), 2)
  end
  local _, gitdir = self:path()
  local dir = gitdir .. "/beat"
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, "lock: " .. err end
  local path = dir .. "/" .. name .. ".lock"
  local k, lerr, code = fs.lock(path, holder(opts.id))
  if k then return setmetatable({ _k = k }, Lock) end
  if code ~= fs.errno.EWOULDBLOCK then return nil, "lock: " .. lerr end
  -- the holder recorded "<pid> <id>" (it may not have yet)
  local pid, id = (fs.read(path) or ""):match("^(%d+) ([^\n]+)")
  if pid then
    return nil, string.format("work tree is in use by run %s (pid %s)", id, pid)
  end
  return nil, "work tree is in use by another run"
end

---@class beat.git.PromoteOptions
---@field commit string the snapshot
---@field branch string branch name ("x" or "refs/heads/x")
---@field message? string commit the snapshot's tree anew on top of the branch (or of HEAD for a new branch) with this message

--- Create or fast-forward a branch to a snapshot, for users who ask for it.
--- The work tree is not touched. If the branch is the one checked out here,
--- the index is set to the new commit too (as after `git commit -a`); a branch
--- checked out in another work tree is refused, and so is a move that is not
--- a fast-forward (pass `message` to commit on top instead).
---@param commit string|beat.git.PromoteOptions the snapshot, or options
---@param opts? {branch: string, message?: string}
---@return string|nil commit the branch's new commit
---@return string? err
function Repo:promote(commit, opts)
  local fname = "repo:promote"
  opts = options(fname, commit, "commit", opts)
  only(fname, opts, { commit = true, branch = true, message = true })
  check(fname, opts, "commit", "string", true)
  check(fname, opts, "branch", "string", true)
  check(fname, opts, "message", "string")
  local ref = opts.branch
  if ref:sub(1, 11) ~= "refs/heads/" then
    if ref:sub(1, 5) == "refs/" then
      error(string.format("%s: opts.branch must be a branch, got %q", fname, ref), 2)
    end
    ref = "refs/heads/" .. ref
  end
  local r, rerr = resolve_commit(self, "promote", opts.commit)
  if not r then return nil, rerr end
  local id = r.commit
  local tip = self._c:get_ref(ref)
  local head, head_branch = self._c:head()
  local here = head_branch == ref
  if tip and not here and self._c:checked_out(ref) then
    return nil, "promote: " .. ref .. " is checked out in another work tree"
  end
  if opts.message then
    local name, email = signature(self)
    local err
    id, err = self._c:commit(r.tree, { tip or head }, with_newline(opts.message), name, email)
    if not id then return nil, err end
  elseif tip then
    local ok, err = self._c:descendant(id, tip)
    if ok == nil then return nil, err end
    if not ok then
      return nil, "promote: " .. ref .. " has commits the snapshot lacks (not a fast-forward); pass message to commit on top"
    end
  end
  local ok, err = self._c:set_ref(ref, id, "beat: promote snapshot")
  if not ok then return nil, "promote: " .. err end
  if here then
    local iok, ierr = self._c:reset_index(r.tree)
    if not iok then return nil, "promote: " .. ierr end
  end
  return id
end

--- Close the repository and stop its watch. Idempotent; also on `<close>`
--- and garbage collection.
function Repo:close()
  self._c:close()
end

Repo.__close = Repo.close
Repo.__gc = Repo.close

return M
