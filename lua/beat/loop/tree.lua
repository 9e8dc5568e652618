--- beat.loop.tree: the Run methods that touch the work tree — snapshot an
--- iteration, keep it as the best, restore one — and the rule that keeps
--- the user's work safe across every restore (see Run:restore).
local beat = require "beat"
local fs = require "beat.fs"
local size = require "beat.size"
local Run = require("beat.loop.run").Run
-- one line naming them and where they went.
local function set_aside(run, n, files)
  local root = run.repo:path()
  local dest = ("%s/too-large/iter-%d"):format(run.journal.dir, n)
  local names, moved = {}, true
  for _, f in ipairs(files) do
    local from, to = root .. "/" .. f.path, dest .. "/" .. f.path
    fs.mkdir_p(to:match("^(.*)/[^/]*$"))
    local ok = os.rename(from, to)
    if not ok then
      moved = false
      os.remove(from)
    end
    names[#names + 1] = ("%s (%s)"):format(f.path, size.format(f.size))
  end
  run.journal:write("too_large", { iteration = n, files = files, set_aside = moved and dest or nil })
  return ("too large to snapshot (max_file_size %s): %s; %s"):format(
    size.format(run.opts.max_file_size or beat.git.default_max_file_size), table.concat(names, ", "),
    moved and ("moved to " .. dest) or "removed")
end

--- Snapshots the work tree as iteration n (nil without git). When the agent
--- left files too large to snapshot, the rest of the tree is snapshotted,
--- then those files are set aside, and the second result says so: the
--- strategy rejects the iteration. When the agent changed a protected file
--- (beat.protect), the second result says which and the third is
--- "tampered": the strategy rejects the iteration with that status. The
--- snapshot is also the run's `last` (`beat restore RUN last`; its ref is
--- written when the run ends, see beat.runs.snapshot).
---@return string|nil snapshot, string? rejected, string? status
function Run:snapshot(n)
  if not self.repo then return nil end
  local id, info = self.repo:snapshot { ref = ("refs/beat/%s/iter-%d"):format(self.id, n),
    message = ("beat: run %s iteration %d"):format(self.id, n), parent = self.best }
  if not id then error("snapshot failed: " .. tostring(info), 0) end
  self.at, self.since, self.last = id, {}, id   -- `last` gets its ref when the run ends
  if #info.skipped > 0 then return id, set_aside(self, n, info.skipped) end
  local tampered = require("beat.protect").check(self, n, id)
  if tampered then return id, tampered, "tampered" end
  return id
end

--- Whether the work tree differs from the given snapshot (true without git).
function Run:changed_since(snap)
  if not self.repo or not snap then return true end
  local changed, err = self.repo:changed(snap)
  if changed == nil then error("cannot compare the work tree: " .. tostring(err), 0) end
  return changed
end

--- Makes snap the best: discards return to it, the run ends on it. The
--- decision record that follows says so (fsync'd: the journal is the
--- record); `refs/beat/<run>/best` is written when the run ends, not at
--- every keep: moving a ref renames a lock file over the old one, which on
--- ext4 starts writing the new one's data at once. Meanwhile the snapshot
--- is kept from git gc by its iter-N ref, and readers find the best in the
--- journal (beat.runs.snapshot).
function Run:keep(snap)
  if not self.repo then return end
  self.best = snap
end

-- "the check", "guard 1 and the eval": what ran since the last snapshot.
local function what_ran(names, iteration)
  local seen, parts = {}, {}
  for _, name in ipairs(names) do
    local label = name:match("^guard%-(%d+)$") and ("guard " .. name:match("%d+")) or ("the " .. name)
    if name == "eval" and iteration == 0 then label = "the baseline eval" end
    if not seen[label] then seen[label], parts[#parts + 1] = true, label end
  end
  if #parts <= 1 then return parts[1], 1 end
  return table.concat(parts, ", ", 1, #parts - 1) .. " and " .. parts[#parts], #parts
end

--- Restores the work tree to snap (default: the best snapshot), keeping
--- the rule that keeps work safe: what the work tree held that no snapshot
--- has — files a check or eval wrote, edits the user made meanwhile, an
--- interrupted agent's half edit — is kept as `refs/beat/<run>/pre-restore-N`
--- (journaled as `pre_restore`, listed in the summary), so
--- `beat restore RUN pre-restore-N` brings it back. The work tree is
--- snapshotted by the restore itself, after it has read what is there, so a
--- file written meanwhile is in the snapshot or left alone.
--- Returns the pre-restore snapshot's name, or nil when nothing was new.
--- `what` names what changed the files, for the note (default: what ran
--- since the last snapshot).
---@param snap? string
---@param what? string
---@return string|nil name
function Run:restore(snap, what)
  if not self.repo then return nil end
  snap = snap or self.best
  -- the backup is kept only when the work tree holds something no snapshot
  -- has: not when it equals the target, nor the last snapshot (self.at)
  local name = ("pre-restore-%d"):format(#self.pre_restores + 1)
  local res, err, failed_backup = self.repo:restore { commit = snap,
    backup = ("refs/beat/%s/%s"):format(self.id, name), kept_in = self.at }
  local backup = res and res.backup or failed_backup
  if backup then
    local during, count = what_ran(self.since, self.iteration)
    what = what or during and ("files changed while %s ran (by %s or by you)"):format(during, count > 1 and "them" or "it")
      or "files changed since the last snapshot (by the agent or by you)"
    self.pre_restores[#self.pre_restores + 1] = { name = name, snapshot = backup, what = what }
    self:write("pre_restore", { name = name, snapshot = backup, iteration = self.iteration,
      during = self.since, note = what })
  else
    name = nil
  end
  if not res then
    self.at, self.since = nil, {}   -- unknown now: the next restore keeps whatever is there
    error("restore failed: " .. tostring(err), 0)
  end
  if res.conflicts and #res.conflicts > 0 then
    -- changed while the restore ran: left as they are (they are in no
    -- snapshot), so the work tree is not exactly snap
    self.conflicts = self.conflicts or {}
    for _, path in ipairs(res.conflicts) do self.conflicts[#self.conflicts + 1] = path end
    self:write("note", { iteration = self.iteration, conflicts = res.conflicts,
      note = ("left as you changed them during a restore: %s"):format(table.concat(res.conflicts, ", ")) })
    self.at, self.since = nil, {}
    return name
  end
  self.at, self.since = snap, {}
  return name
end

return Run
