-- beat.git's scans on the index and the work tree as git leaves them: every
-- index version, flags git sets on entries, names git never stores, an index
-- beat cannot read, and the objects beat writes. The git CLI is the referee.
local beat = require "beat"
local git = require "beat.git"

local cli = require "tests.git_cli"
local env, G, sh, write, cli_tree = cli.env, cli.G, cli.sh, cli.write, cli.cli_tree
local dirs = {}

--- A repository with files in a few directories, committed, whose index
--- entries are not racily clean.
local function new_repo()
  local dir = assert(beat.fs.tmpdir("beat-scan"))
  dirs[#dirs + 1] = dir
  G(dir, { "init", "-q", "-b", "main" })
  cli.commit_files(dir, {
    ["README.md"] = "# project\n", ["src/main.c"] = "int main(void) { return 0; }\n",
    ["src/util/helper.c"] = "int helper(void) { return 1; }\n", ["docs/guide.md"] = "guide\n",
    [".gitignore"] = "build/\n*.log\n",
  }, "initial")
  beat.sleep(1.1)
  return dir
end

--- The tree from a first (full) scan, then from the watch after edit(),
--- then from a full scan again: the last two must agree.
local function trees(dir, edit)
  local repo = assert(git.open { dir = dir })
  local first, i0 = assert(repo:tree())
  assert.equal("full", i0.scan)
  edit()
  local watched, i1 = assert(repo:tree())
  assert.equal("watch", i1.scan, i1.watch)
  local full = assert(repo:tree { full = true })
  repo:close()
  return first, watched, full
end

setup(function()
  cli.home = assert(beat.fs.tmpdir("beat-scan-home"))
  dirs[#dirs + 1] = cli.home
end)
teardown(function()
  for _, d in ipairs(dirs) do beat.fs.rm_rf(d) end
end)

describe("beat.git scans", function()
  it("get git's tree from index versions 2, 3 and 4, with a stale cached tree, intent-to-add entries and conflicts", function()
    local setups = {
      v2 = function() end,
      v3 = function(dir)
        G(dir, { "update-index", "--skip-worktree", "docs/guide.md" })
        G(dir, { "update-index", "--index-version", "3" })
      end,
      v4 = function(dir) G(dir, { "update-index", "--index-version", "4" }) end,
      stale_cached_tree = function(dir)
        write(dir .. "/src/main.c", "staged, not committed\n")
        G(dir, { "add", "src/main.c" })
      end,
      intent_to_add = function(dir)
        write(dir .. "/new.c", "intended\n")
        write(dir .. "/empty.c", "")
        G(dir, { "add", "-N", "new.c", "empty.c" })
      end,
      conflict = cli.merge_conflict,
    }
    for name, prepare in pairs(setups) do
      local dir = new_repo()
      prepare(dir)
      local first, watched, full = trees(dir, function()
        write(dir .. "/src/util/helper.c", "edited\n")
        write(dir .. "/src/util/added.c", "added\n")
        os.remove(dir .. "/src/main.c")
      end)
      assert.equal(full, watched, name)
      assert.equal(cli_tree(dir), full, name)
      assert.not_equal(first, full, name)
    end
  end)

  it("leave out the untracked files git ignores, whatever the rules, as git add -A does", function()
    local dir = new_repo()
    local names = { "x.log", "keep.log", "y.txt", "z.o", "Foo.txt", "foo.TXT", "a.LOG", "sp ace", "q?", "br[a]" }
    for _, d in ipairs { "", "a/", "a/b/", "a/b/c/", "d/", "d/f/", "e/", "g/" } do
      for _, n in ipairs(names) do write(dir .. "/" .. d .. n, d .. n .. "\n") end
    end
    -- (not a rule re-including a file below an ignored directory, nor one
    -- in a .gitignore below the rule it overrides: there libgit2, which beat
    -- follows, and git do not agree)
    for _, n in ipairs { "x.log", "Foo.txt", "z.o" } do write(dir .. "/build/" .. n, n) end
    write(dir .. "/.gitignore", "*.log\n!keep.log\n/y.txt\nbuild/\n*.[oO]\nsp\\ ace\n")
    write(dir .. "/a/.gitignore", "!y.txt\n*.txt\nb/*.o\n")
    write(dir .. "/a/b/.gitignore", "**/c/*.TXT\n?.LOG\n")
    write(dir .. "/d/.gitignore", "*\n!*.txt\n!*/\n")
    write(dir .. "/e/.gitignore", "foo.txt\r\nbr\\[a]  \n")
    write(dir .. "/.git/info/exclude", "/g/*.txt\n")
    write(cli.home .. "/excludes", "q?\n")
    G(dir, { "config", "core.excludesFile", cli.home .. "/excludes" })
    -- a tracked file in an ignored directory: the directory is looked into
    G(dir, { "add", "-f", "build/z.o" })
    local first, watched, full = trees(dir, function()
      write(dir .. "/a/b/c/new.TXT", "ignored\n")
      write(dir .. "/build/new.txt", "ignored\n")
      write(dir .. "/a/b/c/new.c", "not ignored\n")
    end)
    assert.equal(full, watched)
    assert.equal(cli_tree(dir), full)
    assert.not_equal(first, full)
  end)

  it("stat a large index's files on other threads while the walk goes on, and get git's tree", function()
    -- 6,000 tracked files in 60 directories: a thread per 2,000 index
    -- entries stats them while the walk queues them, a chunk of 256 at a
    -- time (one thread on a machine with one processor: the same tree)
    local dir = assert(beat.fs.tmpdir("beat-scan-many"))
    dirs[#dirs + 1] = dir
    G(dir, { "init", "-q", "-b", "main" })
    for i = 0, 5999 do
      local d = ("%s/m%02d"):format(dir, i // 100)
      if i % 100 == 0 then assert(beat.fs.mkdir_p(d)) end
      local f = assert(io.open(("%s/f%04d.c"):format(d, i), "wb"))
      f:write(("int f%d(void) { return %d; }\n"):format(i, i))
      f:close()
    end
    G(dir, { "add", "-A" })
    G(dir, { "commit", "-q", "-m", "many" })
    beat.sleep(1.1)   -- no entry racily clean
    local function path(i) return ("%s/m%02d/f%04d.c"):format(dir, i // 100, i) end
    for i = 13, 5999, 211 do write(path(i), "changed " .. i .. "\n") end      -- in many chunks
    for i = 5, 5999, 997 do os.remove(path(i)) end                            -- gone
    write(path(5998), "same size, new bytes\n")
    sh("ln -sf f0000.c " .. cli.q(path(4242)))                               -- a file now a link
    sh("chmod +x " .. cli.q(path(3001)))                                     -- mode only
    for d = 0, 59, 7 do write(("%s/m%02d/new.c"):format(dir, d), "untracked\n") end
    local repo = assert(git.open { dir = dir })
    local tree, info = assert(repo:tree())
    repo:close()
    assert.equal("full", info.scan)
    assert.equal(cli_tree(dir), tree)
  end)

  it("keep the index's blob of assume-unchanged and skip-worktree files, with the watch as with a full scan", function()
    local dir = new_repo()
    G(dir, { "update-index", "--assume-unchanged", "README.md" })
    G(dir, { "update-index", "--skip-worktree", "docs/guide.md" })
    local first, watched, full = trees(dir, function()
      write(dir .. "/README.md", "changed, but git was told to assume not\n")
      write(dir .. "/docs/guide.md", "changed outside the sparse checkout\n")
    end)
    assert.equal(first, watched)
    assert.equal(full, watched)
    assert.equal(cli_tree(dir), full)
  end)

  it("leave .GIT out of snapshots as git leaves .git, with the watch as with a full scan", function()
    local dir = new_repo()
    write(dir .. "/.GIT/config", "not git's\n")
    local first, watched, full = trees(dir, function()
      write(dir .. "/src/.Git/x", "not git's either\n")
      write(dir .. "/src/kept.c", "kept\n")
    end)
    assert.equal(full, watched)
    assert.equal("", G(dir, { "ls-tree", "-r", "--name-only", first }):match("%.[Gg][Ii][Tt]/[^\n]*") or "")
    assert.equal("src/kept.c\n", G(dir, { "ls-tree", "-r", "--name-only", full, "src/kept.c" }))
    assert.is_nil(G(dir, { "ls-tree", "-r", "--name-only", full }):find(".Git/", 1, true))
  end)

  it("name the index they cannot read: a split index, a truncated one", function()
    local dir = new_repo()
    G(dir, { "update-index", "--split-index" })
    local repo = assert(git.open { dir = dir })
    local tree, err = repo:tree()
    assert.is_nil(tree)
    assert.truthy(err:find(dir .. "/.git/index", 1, true), err)
    -- git keeps the entries in the shared index, or some in this one without
    -- their paths: either way the message says what the index is
    assert.truthy(err:find("split index", 1, true), err)
    repo:close()
    G(dir, { "update-index", "--no-split-index" })
    local bytes = assert(beat.fs.read(dir .. "/.git/index"))
    write(dir .. "/.git/index", bytes:sub(1, 100))
    repo = assert(git.open { dir = dir })
    tree, err = repo:tree()
    assert.is_nil(tree)
    assert.truthy(err:find(dir .. "/.git/index", 1, true), err)
    -- once git writes it again, the same repo reads it
    write(dir .. "/.git/index", bytes)
    assert.equal(cli_tree(dir), assert(repo:tree()))
    repo:close()
  end)

  it("store objects git reads back byte for byte and fsck finds clean, small ones uncompressed", function()
    local dir = new_repo()
    local sizes = { 0, 100, 3000, 5000, 300000 }
    local data = {}
    for i, n in ipairs(sizes) do
      local t = {}
      for k = 1, n do t[k] = string.char((k * 31 + i * 7) % 251) end
      data[i] = table.concat(t)
      write(("%s/data/f%d.bin"):format(dir, i), data[i])
    end
    local repo = assert(git.open { dir = dir })
    local id = assert(repo:snapshot { ref = "t/objects" })
    repo:close()
    for i in ipairs(sizes) do
      assert.equal(data[i], G(dir, { "cat-file", "blob", ("%s:data/f%d.bin"):format(id, i) }))
    end
    local r = assert(beat.exec({ "git", "fsck", "--strict", "--no-dangling" }, { cwd = dir, env = env() }))
    assert.equal(0, r.code, r.stderr)
    -- a loose object under 4 kB takes one block either way: stored, not deflated
    -- (zlib's header then a stored block: BFINAL set, BTYPE 00)
    local small = G(dir, { "rev-parse", id .. ":data/f3.bin" }):gsub("%s+$", "")
    local raw = assert(beat.fs.read(("%s/.git/objects/%s/%s"):format(dir, small:sub(1, 2), small:sub(3))))
    assert.equal(1, raw:byte(3) & 7)
    local large = G(dir, { "rev-parse", id .. ":data/f5.bin" }):gsub("%s+$", "")
    raw = assert(beat.fs.read(("%s/.git/objects/%s/%s"):format(dir, large:sub(1, 2), large:sub(3))))
    assert.is_true(#raw < sizes[5])
  end)
end)
