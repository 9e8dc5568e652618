--- beat.git.worktree — linked work trees for parallel candidates: the
--- repository methods worktree and remove_worktree. Conventions as in
--- beat.git (see lua/beat/git/init.lua).
local check = require "beat.check"
local fs = require "beat.fs"
local O = require "beat.git.options"
local refs = require "beat.git.refs"

---@class beat.git.Repo
local Repo = {}

---@class beat.git.WorktreeOptions
---@field path string where to create it (a missing or empty directory)
---@field commit string the snapshot to check out there
---@field watch? boolean as for open (default: as this repo)

local WORKTREE = { path = O.NAME, commit = O.NAME, watch = "boolean" }

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
  local opts = O.table(fname, path, "path")
  if type(path) ~= "table" then opts.commit = commit end
  check.options(fname, opts, WORKTREE)
  local r, rerr = refs.resolve_commit(self, "worktree", opts.commit)
  if not r then return nil, rerr end
  local name = (O.strip_slash(opts.path):match("([^/]+)$") or "wt"):gsub("[^%w%-_.]", "_")
  local parent = O.strip_slash(opts.path):match("^(.+)/[^/]+$")
  if parent then
    local mok, merr = fs.mkdir_p(parent)
    if not mok then return nil, "worktree: " .. merr end
  end
  local ok, err = self._c:worktree_add(opts.path, r.commit, name)
  if not ok then return nil, err end
  local watch = opts.watch
  if watch == nil then watch = self._watch end
  return require("beat.git").open { dir = opts.path, watch = watch, exclude = self._exclude }
end

--- Delete a work tree made by repo:worktree: its directory and git's record
--- of it. A linked work tree the user made, or a path that is not a linked
--- work tree of this repository, is refused with `nil, "worktree: ..."`.
---@param opts string|{path: string}
---@return true|nil ok
---@return string? err
function Repo:remove_worktree(opts)
  local fname = "repo:remove_worktree"
  opts = check.options(fname, O.table(fname, opts, "path"), { path = O.NAME })
  return self._c:worktree_remove(opts.path)
end

return Repo
