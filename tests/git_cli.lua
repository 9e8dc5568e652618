--- The git CLI as the referee of beat.git's specs (git_spec, git_scan_spec):
--- run with an empty HOME (set `home` in the spec's setup) and no system
--- config, so the user's configuration plays no part.
local beat = require "beat"

local M = {}

M.home = nil -- an empty directory, set by the spec

--- The environment for git: `extra` over the clean one.
function M.env(extra)
  local env = {
    HOME = M.home, XDG_CONFIG_HOME = M.home, GIT_CONFIG_NOSYSTEM = "1", GIT_OPTIONAL_LOCKS = "0",
    GIT_AUTHOR_NAME = "Tester", GIT_AUTHOR_EMAIL = "tester@example.com",
    GIT_COMMITTER_NAME = "Tester", GIT_COMMITTER_EMAIL = "tester@example.com",
    GIT_INDEX_FILE = false, GIT_DIR = false, GIT_WORK_TREE = false,
  }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

--- Runs the git CLI in dir; returns stdout; fails the test on a non-zero exit.
function M.G(dir, args, extra)
  local argv = { "git" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = assert(beat.exec(argv, { cwd = dir, env = M.env(extra) }))
  assert(r.code == 0, ("git %s failed (%s): %s"):format(table.concat(args, " "), tostring(r.code), r.stderr))
  return r.stdout
end

--- Runs a shell command; returns stdout; fails the test on a non-zero exit.
function M.sh(cmd, cwd)
  local r = assert(beat.exec(cmd, { cwd = cwd, env = M.env() }))
  assert(r.code == 0, ("%s failed: %s"):format(cmd, r.stderr))
  return r.stdout
end

--- s quoted for sh.
function M.q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Writes a file (its directories made), with a mode when given.
function M.write(path, data, mode)
  local dir = path:match("^(.*)/[^/]*$")
  if dir then beat.fs.mkdir_p(dir) end
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  if mode then M.sh(("chmod %o %s"):format(mode, M.q(path))) end
end

--- Writes files ({path = content}, in the order of their paths) in dir and
--- commits everything with message.
function M.commit_files(dir, files, message)
  local paths = {}
  for path in pairs(files) do paths[#paths + 1] = path end
  table.sort(paths)
  for _, path in ipairs(paths) do M.write(dir .. "/" .. path, files[path]) end
  M.G(dir, { "add", "-A" })
  M.G(dir, { "commit", "-q", "-m", message })
end

--- Leaves the repository at dir (branch main, a README.md committed) in a
--- merge that stopped on a conflict in README.md: the index holds its
--- stages 1-3, the file git's conflict markers.
function M.merge_conflict(dir)
  M.G(dir, { "checkout", "-q", "-b", "other" })
  M.write(dir .. "/README.md", "other side\n")
  M.G(dir, { "commit", "-qam", "other" })
  M.G(dir, { "checkout", "-q", "main" })
  M.write(dir .. "/README.md", "main side\n")
  M.G(dir, { "commit", "-qam", "main" })
  local r = assert(beat.exec({ "git", "merge", "-q", "other" }, { cwd = dir, env = M.env() }))
  assert(r.code ~= 0, "the merge was expected to stop on a conflict")
end

--- What the git CLI says the work tree's tree is (temporary index seeded from the real one).
function M.cli_tree(dir)
  local idx = os.tmpname()
  os.remove(idx)
  -- cp -p: the copy keeps the index's mtime, so git still sees racily clean entries
  if beat.fs.exists(dir .. "/.git/index") then M.sh("cp -p .git/index " .. M.q(idx), dir) end
  M.G(dir, { "add", "-A" }, { GIT_INDEX_FILE = idx })
  local tree = M.G(dir, { "write-tree" }, { GIT_INDEX_FILE = idx }):gsub("%s+$", "")
  os.remove(idx)
  return tree
end

return M
