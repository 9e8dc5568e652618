--- beat.git — snapshots of a work tree in git, without ever losing the user's work.
---
--- A snapshot is a commit of the whole work tree as it is (modified, deleted and
--- untracked-but-not-ignored files, exec bits, symlinks) stored under refs/beat/,
--- each file as the bytes it holds on disk: no eol conversion or other git
--- filter, either way, so a restore gives back every byte.
--- Taking one never moves HEAD, never writes the index file, never changes a
--- branch and never writes the work tree. Restoring one rewrites only paths that
--- are not ignored, and only while they hold what the restore read. See
--- docs/api/git.md.
---
--- The C half (engine/git/, module beat._git) does the git work over libgit2;
--- the Lua half holds the policy: option checking, default parents, the
--- author used when git has none, the refs/beat/ namespace, what is excluded,
--- lock messages. This file: opening, snapshots, restores, diffs. Beside it:
--- options.lua (how arguments are taken), refs.lua (refs, revisions,
--- promote), worktree.lua (linked work trees), lock.lua (one run per work tree).
---
--- Errors, everywhere in beat.git:
---  - a programmer's mistake — a wrong option or argument, a ref outside
---    refs/beat/, a closed repository — raises, blaming the caller, with one
---    message shape: `repo:snapshot: opts.ref must be a string, got 42`;
---  - a failure of the world — not a repository, an unknown revision, a
---    work tree in use, an I/O error — returns `nil, "what: why"`
---    (`restore: unknown revision: x`). repo:set_ref{create = true} also
---    returns `false, why` when the ref exists (someone else won).
local C = require "beat._git"
local check = require "beat.check"
local O = require "beat.git.options"
local refs = require "beat.git.refs"

local M = {}

--- libgit2's version, e.g. "1.5.1".
M.libgit2_version = C.libgit2_version

--- The author and committer of snapshots when git has no user.name/user.email.
M.fallback_name, M.fallback_email = "beat", "beat@localhost"

--- What a repo excludes unless told otherwise: the runs directory.
M.default_exclude = { ".beat" }

--- Files larger than this many bytes are not snapshotted unless a repo is
--- told otherwise (1 GiB).
M.default_max_file_size = 1024 * 1024 * 1024

---@class beat.git.Repo
---@field private _c userdata the C repository (beat.git.repo)
---@field private _watch boolean
---@field private _exclude string[]
local Repo = {}
Repo.__index = Repo

for _, methods in ipairs { refs.methods, require "beat.git.worktree", require("beat.git.lock").methods } do
  for name, fn in pairs(methods) do Repo[name] = fn end
end

-- Module functions ---------------------------------------------------------

---@class beat.git.OpenOptions
---@field dir string a directory inside the work tree (any subdirectory works)
---@field watch? boolean watch the work tree with inotify so a snapshot costs what changed (default true); false: full scan every time
---@field exclude? string[] work-tree paths never snapshotted nor restored (default `{".beat"}`, the runs directory)
---@field max_file_size? integer files larger than this many bytes are left out of snapshots (default 1 GiB)

local OPEN = { dir = O.NAME, watch = "boolean", exclude = "any", max_file_size = O.SIZE }

--- Open the repository whose work tree holds `dir`.
---@param opts string|beat.git.OpenOptions the directory, or options
---@return beat.git.Repo|nil repo
---@return string? err `"not a git repository: <dir>"`
function M.open(opts)
  local fname = "beat.git.open"
  opts = check.options(fname, O.table(fname, opts, "dir"), OPEN)
  local max = math.tointeger(opts.max_file_size) or M.default_max_file_size
  local exclude = O.exclude_list(fname, opts.exclude, M.default_exclude)
  local c, err = C.open(opts.dir, opts.watch ~= false, exclude, max)
  if not c then return nil, err end
  return setmetatable({ _c = c, _watch = opts.watch ~= false, _exclude = exclude }, Repo)
end

--- Create a repository in `dir` (created if missing; for tests, and for users
--- who want one) and open it.
---@param opts string|beat.git.OpenOptions the directory, or options
---@return beat.git.Repo|nil repo
---@return string? err
function M.init(opts)
  local fname = "beat.git.init"
  opts = check.options(fname, O.table(fname, opts, "dir"), OPEN)
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
  return O.strip_slash(wd), O.strip_slash(gd)
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

local TREE = { full = "boolean", max_file_size = O.SIZE }

--- The tree id of the work tree as it is now: the tree a snapshot would get.
---@param opts? {full?: boolean, max_file_size?: integer}
---@return string|nil tree
---@return beat.git.TreeInfo|string info, or the error
function Repo:tree(opts)
  local fname = "repo:tree"
  opts = check.options(fname, O.table(fname, opts, "full"), TREE)
  local tree, info = self._c:tree(opts.full == true, math.tointeger(opts.max_file_size))
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

-- Commits a tree the watch gave (with its info: the files left out) as a
-- snapshot, and points ref at it when given.
local function commit_tree(self, tree, info, parents, message, ref)
  local name, email = refs.signature(self)
  -- trailers: the work tree it was taken in, the files left out
  local lines = { ("Beat-Worktree: %s"):format(refs.escape_line((self:path()))) }
  for _, f in ipairs(info.skipped) do
    lines[#lines + 1] = ("Beat-Too-Large: %s (%d bytes)"):format(refs.escape_line(f.path), f.size)
  end
  message = refs.with_newline(message or "beat snapshot") .. "\n" .. table.concat(lines, "\n") .. "\n"
  local id, err = self._c:commit(tree, parents, message, name, email)
  if not id then return nil, err end
  if ref then
    local ok, rerr = self._c:set_ref(ref, id, "beat: snapshot")
    if not ok then return nil, "snapshot: " .. rerr end
  end
  return id, info
end

local SNAPSHOT = {
  ref = "string", message = "string", full = "boolean", max_file_size = O.SIZE,
  parent = { "string|table|false", what = "a revision, a list of revisions or false" },
}

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
  opts = check.options(fname, opts, SNAPSHOT)
  local ref = opts.ref and O.beat_ref(fname, opts.ref, "opts.ref")
  local parents = {}
  if opts.parent == nil then
    parents[1] = self._c:head()
  elseif opts.parent then
    local list = type(opts.parent) == "table" and opts.parent or { opts.parent }
    for i, p in ipairs(list) do
      check.value(fname, ("opts.parent[%d]"):format(i), p, "string")
      local r, err = refs.resolve_commit(self, "snapshot", p)
      if not r then return nil, err end
      parents[#parents + 1] = r.commit
    end
  end
  local tree, info = self:tree { full = opts.full, max_file_size = opts.max_file_size }
  if not tree then return nil, info end
  return commit_tree(self, tree, info, parents, opts.message, ref)
end

---@class beat.git.RestoreOptions
---@field commit string the snapshot (commit id, ref or any revision) to bring back
---@field backup? string first snapshot the work tree to this ref (under refs/beat/)
---@field kept_in? string with backup: a snapshot that may hold the work tree already; when the work tree equals it, no backup is taken (it would hold nothing new)

---@class beat.git.RestoreResult
---@field written integer files written (or whose exec bit changed)
---@field removed integer files removed
---@field kept beat.git.Skipped[] files too large to snapshot, left as they are (no snapshot could give them back)
---@field conflicts string[] paths changed after the restore looked at them (after the backup read them), left as they are: the work tree differs from the snapshot there (empty when none)
---@field backup? string the backup's commit id, when one was taken

local RESTORE = { commit = O.NAME, backup = "string", kept_in = "string" }

--- Make the work tree equal to a snapshot for every path that is not ignored:
--- changed files rewritten with the snapshot's bytes (no checkout filter),
--- added files removed, deleted files back, modes back, directories emptied by
--- the removals removed. Ignored paths, excluded paths (`.beat/`), files too
--- large to snapshot, HEAD, the index and branches are not touched.
---
--- With `backup`, the work tree is snapshotted first (unless it equals the
--- target, or the snapshot `kept_in`: then every byte it holds is in a
--- snapshot already) and the restore goes from exactly what it holds: a
--- file is rewritten or removed only while it still holds those bytes
--- (checked as it is replaced, not by its stat data), so a file changed
--- after the restore read it — an editor saving, a process still writing —
--- is left as it is and listed in `conflicts`. So a restore never destroys a
--- byte that is not in a snapshot. When the restore fails after the backup
--- was taken, the third result is the backup's commit id.
---@param opts string|beat.git.RestoreOptions the snapshot, or options
---@return beat.git.RestoreResult|nil result
---@return string? err
---@return string? backup
function Repo:restore(opts)
  local fname = "repo:restore"
  opts = check.options(fname, O.table(fname, opts, "commit"), RESTORE)
  local backup = opts.backup and O.beat_ref(fname, opts.backup, "opts.backup")
  local r, rerr = refs.resolve(self, "restore", opts.commit)
  if not r then return nil, rerr end
  local current, info = self:tree()
  if not current then return nil, info end
  local keep = {}
  for i, f in ipairs(info.skipped) do keep[i] = f.path end
  if current == r.tree then return { written = 0, removed = 0, kept = info.skipped, conflicts = {} } end
  local id
  if backup then
    local known = opts.kept_in and refs.resolve(self, "restore", opts.kept_in)
    if not (known and known.tree == current) then
      local err
      local head = self._c:head()
      id, err = commit_tree(self, current, info, { head }, "beat: work tree before restore", backup)
      if not id then return nil, err end
    end
  end
  local written, removed, conflicts = self._c:restore_tree(current, r.tree, keep)
  if not written then return nil, removed, id end
  return { written = written, removed = removed, kept = info.skipped, conflicts = conflicts, backup = id }
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

local DIFF = { from = O.NAME, to = "string", patch = "boolean" }

--- What changed between two snapshots, or a snapshot and the work tree.
--- Call as repo:diff(a, b) or repo:diff{from = a, to = b, patch = false}.
---@param a string|beat.git.DiffOptions the old side, or options
---@param b? string the new side, or "worktree" (default)
---@return beat.git.Diff|nil diff
---@return string? err
function Repo:diff(a, b)
  local fname = "repo:diff"
  local opts = O.table(fname, a, "from")
  if type(a) ~= "table" then opts.to = b end
  check.options(fname, opts, DIFF)
  local function tree_of(rev)
    if rev == "worktree" then return self._c:tree(false) end
    local r, err = refs.resolve(self, "diff", rev)
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
  opts = check.options(fname, O.table(fname, opts, "commit"), { commit = O.NAME })
  local r, rerr = refs.resolve(self, "changed", opts.commit)
  if not r then return nil, rerr end
  local now, err = self._c:tree(false)
  if not now then return nil, err end
  return now ~= r.tree
end

--- Close the repository and stop its watch. Idempotent; also on `<close>`
--- and garbage collection.
function Repo:close()
  self._c:close()
end

Repo.__close = Repo.close
Repo.__gc = Repo.close

return M
