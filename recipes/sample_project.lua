-- sample_project.lua — a helper module for the offline recipes (not a recipe):
-- copies recipes/sample-project into a fresh git repository in a temp dir
-- and describes its tunable parameters for beat.agent.tune.
local beat = require "beat"

local M = {}

local here = beat.fs.realpath(debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")

--- Creates the repository; returns its directory.
function M.setup()
  local dir = assert(beat.fs.tmpdir("beat-sample"))
  local function sh(cmd)
    local r = assert(beat.exec(cmd, { cwd = dir }))
    assert(r.code == 0, ("%s failed: %s"):format(cmd, r.stderr))
  end
  sh(("cp -R '%s/sample-project/.' ."):format(here))
  sh("git init -q && git add -A && git -c user.name=demo -c user.email=demo@example.com commit -qm 'sample project'")
  return dir
end

--- The hyperparameters in config.lua, for beat.agent.tune.
M.params = {
  { file = "config.lua", name = "learning_rate", min = 1e-4, max = 0.3, kind = "log" },
  { file = "config.lua", name = "momentum", min = 0, max = 0.95, kind = "float" },
  { file = "config.lua", name = "hidden", kind = "choice", choices = { 2, 4, 8, 12, 16, 24, 32 } },
  { file = "config.lua", name = "init_scale", min = 0.25, max = 3, kind = "float" },
}

--- The eval: train with beat's own binary (no other Lua needed).
M.eval = { beat.exepath(), "run", "train.lua" }

--- The diff of the work tree against HEAD.
function M.diff(dir)
  return assert(beat.exec({ "git", "--no-pager", "diff", "--no-color" }, { cwd = dir })).stdout
end

return M
