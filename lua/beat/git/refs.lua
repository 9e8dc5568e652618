--- beat.git.refs — revisions, refs under refs/beat/, commit messages and
--- branches: the repository methods refs, set_ref, delete_refs, worktree_of
--- and promote, and the helpers the other methods resolve revisions with.
--- Conventions as in beat.git (see lua/beat/git/init.lua).
local check = require "beat.check"
local O = require "beat.git.options"

local M = {}

---@class beat.git.Repo
local Repo = {}
M.methods = Repo

--- Resolves a revision to {commit = id or nil (for a tree), tree = id}, or
--- nil and `"<what>: unknown revision: <rev>"`.
---@param repo beat.git.Repo
---@param what string "restore", for messages
---@param rev string
---@return {commit: string|nil, tree: string}|nil
---@return string? err
function M.resolve(repo, what, rev)
  local commit, tree = repo._c:resolve(rev)
  if commit == nil then return nil, what .. ": " .. tree end
  return { commit = commit or nil, tree = tree }
end

--- Resolves a revision that must name a commit.
---@param repo beat.git.Repo
---@param what string
---@param rev string
---@return {commit: string, tree: string}|nil
---@return string? err
function M.resolve_commit(repo, what, rev)
  local r, err = M.resolve(repo, what, rev)
  if not r then return nil, err end
  if not r.commit then return nil, what .. ": not a commit: " .. rev end
  return r
end

--- The author of beat's commits: git's user.name/user.email, else the
--- fallback beat.git names.
---@param repo beat.git.Repo
---@return string name, string email
function M.signature(repo)
  -- read once per repository object: each read is a snapshot of three
  -- config files, and a run signs a snapshot per iteration
  if not repo._signature then
    local name, email = repo._c:signature()
    if not name then
      local git = require "beat.git"
      name, email = git.fallback_name, git.fallback_email
    end
    repo._signature = { name, email }
  end
  return repo._signature[1], repo._signature[2]
end

--- A path on one line of a commit message: "\" and newlines escaped.
---@param p string
---@return string
function M.escape_line(p)
  return (p:gsub("\\", "\\\\"):gsub("\n", "\\n"))
end

local function unescape_line(p)
  return (p:gsub("\\(.)", { n = "\n", ["\\"] = "\\" }))
end

--- A commit message ends with a newline.
---@param msg string
---@return string
function M.with_newline(msg)
  if msg:sub(-1) ~= "\n" then return msg .. "\n" end
  return msg
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
  opts = check.options(fname, O.table(fname, opts, "prefix"), { prefix = "string" })
  local list, err = self._c:refs(opts.prefix or "refs/beat/")
  if not list then return nil, err end
  table.sort(list, function(x, y) return x.name < y.name end)
  return list
end

--- The distinct names that follow a prefix in the repository's ref names,
--- sorted: `repo:ref_children("refs/beat/")` lists the run ids that have
--- refs, from git's ref directory and packed-refs, without reading each ref
--- (`repo:refs` reads them all). A name may be left by refs deleted since
--- (an empty directory): `repo:refs(prefix .. name .. "/")` says what it holds.
---@param prefix string ends in "/"
---@return string[]
function Repo:ref_children(prefix)
  check.value("repo:ref_children", "prefix", prefix, "string")
  if prefix:sub(-1) ~= "/" then
    error(("repo:ref_children: prefix must end in '/', got %q"):format(prefix), 2)
  end
  local list = self._c:ref_children(prefix)
  table.sort(list)
  return list
end

local SET_REF = { ref = O.NAME, commit = O.NAME, create = "boolean" }

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
  opts = check.options(fname, opts, SET_REF)
  local ref = O.beat_ref(fname, opts.ref, "opts.ref")
  local r, rerr = M.resolve_commit(self, "set_ref", opts.commit)
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
  check.value("repo:worktree_of", "rev", rev, O.NAME)
  local r, rerr = M.resolve_commit(self, "worktree_of", rev)
  if not r then return nil, rerr end
  local msg, err = self._c:message(r.commit)
  if not msg then return nil, err end
  local path
  for line in msg:gmatch("[^\n]+") do
    path = line:match("^Beat%-Worktree: (.+)$") or path
  end
  return path and unescape_line(path) or false
end

--- The commit one ref under refs/beat/ points at, or nil when there is no
--- such ref: a single lookup, whatever the number of refs (repo:refs lists).
---@param name string "refs/beat/<x>" or "<x>"
---@return string|nil id
function Repo:ref(name)
  check.value("repo:ref", "name", name, O.NAME)
  return self._c:get_ref(O.beat_ref("repo:ref", name, "name"))
end

--- Removes one ref under refs/beat/ (nothing when it is not there).
---@param name string "refs/beat/<x>" or "<x>"
---@return true|nil ok, string? err
function Repo:delete_ref(name)
  check.value("repo:delete_ref", "name", name, O.NAME)
  local ref = O.beat_ref("repo:delete_ref", name, "name")
  if not self._c:get_ref(ref) then return true end
  return self._c:delete_ref(ref)
end

--- Delete the refs under refs/beat/ whose names start with a prefix.
---@param opts string|{prefix: string} "refs/beat/<x>" or "<x>"
---@return integer|nil deleted how many were deleted
---@return string? err
function Repo:delete_refs(opts)
  local fname = "repo:delete_refs"
  opts = check.options(fname, O.table(fname, opts, "prefix"), { prefix = O.NAME })
  local prefix = O.beat_ref(fname, opts.prefix, "opts.prefix")
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

---@class beat.git.PromoteOptions
---@field commit string the snapshot
---@field branch string branch name ("x" or "refs/heads/x")
---@field message? string commit the snapshot's tree anew on top of the branch (or of HEAD for a new branch) with this message

local PROMOTE = { commit = O.NAME, branch = O.NAME, message = "string" }

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
  opts = check.options(fname, O.table(fname, commit, "commit", opts), PROMOTE)
  local ref = opts.branch
  if ref:sub(1, 11) ~= "refs/heads/" then
    if ref:sub(1, 5) == "refs/" then check.fail(fname, "opts.branch", "a branch", ref) end
    ref = "refs/heads/" .. ref
  end
  local r, rerr = M.resolve_commit(self, "promote", opts.commit)
  if not r then return nil, rerr end
  local id = r.commit
  local tip = self._c:get_ref(ref)
  local head, head_branch = self._c:head()
  local here = head_branch == ref
  if tip and not here and self._c:checked_out(ref) then
    return nil, "promote: " .. ref .. " is checked out in another work tree"
  end
  if opts.message then
    local name, email = M.signature(self)
    local err
    id, err = self._c:commit(r.tree, { tip or head }, M.with_newline(opts.message), name, email)
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

return M
