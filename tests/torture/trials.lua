-- What the torture specs share: trials(name, fn) runs fn BEAT_TORTURE_N times
-- (default 10; BEAT_TORTURE_SEED replays one seed), prints `NAME: X/Y ok`
-- and the seed of every failed trial; files(dir) reads a work tree.
local beat = require "beat"
local H = require "tests.helpers"

local M = {}

M.N = tonumber(os.getenv("BEAT_TORTURE_N")) or 10
local SEED = tonumber(os.getenv("BEAT_TORTURE_SEED"))

function M.trials(name, trial)
  local ok, failures, seeds = 0, {}, {}
  for t = 1, SEED and 1 or M.N do seeds[t] = SEED or (os.time() * 1000 + t) % 2147483647 end
  for _, seed in ipairs(seeds) do
    math.randomseed(seed)
    local pass, err = pcall(trial, seed)
    if pass then ok = ok + 1 else failures[#failures + 1] = ("seed %d: %s"):format(seed, tostring(err)) end
  end
  io.stdout:write(("\n%s: %d/%d ok\n"):format(name, ok, #seeds))
  for _, f in ipairs(failures) do print("  " .. f:gsub("\n", "\n    ")) end
  if ok ~= #seeds then error(name .. " failed:\n" .. table.concat(failures, "\n"), 2) end
end

--- Every file of the work tree except .git and .beat: path → bytes.
function M.files(dir)
  local out = {}
  local r = assert(beat.exec({ "find", ".", "-path", "./.git", "-prune", "-o", "-path", "./.beat",
    "-prune", "-o", "-type", "f", "-print" }, { cwd = dir }))
  for path in r.stdout:gmatch("[^\n]+") do out[path:sub(3)] = H.read(dir .. "/" .. path) end
  return out
end

function M.random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

--- A user's work in progress: committed files, uncommitted edits, untracked files.
function M.user_repo(extra)
  local spec = { ["src/a.txt"] = "a\n", ["src/b.bin"] = M.random_bytes(64), ["notes.txt"] = "notes\n" }
  for k, v in pairs(extra or {}) do spec[k] = v end
  local dir = H.git_repo(spec)
  H.write(dir .. "/src/a.txt", "uncommitted " .. M.random_bytes(32))
  H.write(dir .. "/untracked.bin", M.random_bytes(math.random(1, 4096)))
  return dir
end

return M
