-- beat.git: snapshots, restores and locks on real repositories in temp dirs,
-- with the git CLI as the referee.
local beat = require "beat"
local git = require "beat.git"

local ROOT = beat.fs.cwd()
local BIN = os.getenv("BEAT_BIN") or (ROOT .. "/build/beat")

local cli = require "tests.git_cli"
local cli_env, G, sh, q, write, cli_tree = cli.env, cli.G, cli.sh, cli.q, cli.write, cli.cli_tree

local function tmpdir()
  return assert(beat.fs.tmpdir("beat-git"))
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  return sh("if [ -e " .. q(path) .. " ] || [ -L " .. q(path) .. " ]; then echo y; fi") == "y\n"
end

--- Everything in the work tree but .git (and .beat unless asked): type, exec
--- bit, and content or link target, byte for byte.
local function manifest(dir, with_beat)
  local out = sh("find . -mindepth 1 -path ./.git -prune -o -printf '%P\\0%y\\0%m\\0%l\\0'", dir)
  local m = {}
  local fields = {}
  for field in out:gmatch("([^%z]*)%z") do fields[#fields + 1] = field end
  for i = 1, #fields, 4 do
    local path, kind, perm, link = fields[i], fields[i + 1], tonumber(fields[i + 2], 8), fields[i + 3]
    if with_beat or not (path == ".beat" or path:sub(1, 6) == ".beat/") then
      local e = { kind = kind }
      if kind == "f" then
        e.exec = perm & 64 ~= 0
        e.data = read(dir .. "/" .. path)
      elseif kind == "l" then
        e.target = link
      end
      m[path] = e
    end
  end
  return m
end

--- The id git gives a file's bytes as they are, no filter applied.
local function raw_id(dir, path)
  return (G(dir, { "hash-object", "--no-filters", "--", path }):gsub("%s+$", ""))
end

--- What the git CLI says the work tree's tree is when every file is stored as
--- its bytes, no filter applied: `git add -A` on a temporary index for the set
--- of paths and their modes, then each regular file's entry replaced by
--- `git hash-object -w --no-filters`. Where no filter applies, this is cli_tree.
local function cli_raw_tree(dir)
  local idx = os.tmpname()
  os.remove(idx)
  -- cp -p: the copy keeps the index's mtime, so git still sees racily clean entries
  if exists(dir .. "/.git/index") then sh("cp -p .git/index " .. q(idx), dir) end
  local env = { GIT_INDEX_FILE = idx }
  G(dir, { "add", "-A" }, env)
  local info = {}
  for mode, path in G(dir, { "ls-files", "-s", "-z" }, env):gmatch("(%d+) %x+ %d\t([^%z]*)%z") do
    if mode == "100644" or mode == "100755" then
      local id = G(dir, { "hash-object", "-w", "--no-filters", "--", path }):gsub("%s+$", "")
      info[#info + 1] = ("%s %s\t%s\0"):format(mode, id, path)
    end
  end
  local r = assert(beat.exec({ "git", "update-index", "-z", "--index-info" },
    { cwd = dir, env = cli_env(env), stdin = table.concat(info) }))
  assert(r.code == 0, r.stderr)
  local tree = G(dir, { "write-tree" }, env):gsub("%s+$", "")
  os.remove(idx)
  return tree
end

--- The user-visible git state that a snapshot must not change.
local function git_state(dir)
  return {
    status = G(dir, { "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored" }),
    stash = G(dir, { "stash", "list" }),
    head = read(dir .. "/.git/HEAD"),
    refs = G(dir, { "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags", "refs/stash" }),
    index = read(dir .. "/.git/index"),
  }
end

--- A repository with a few commits' worth of files.
local function new_repo(opts)
  opts = opts or {}
  local dir = tmpdir()
  G(dir, { "init", "-q", "-b", "main" })
  if opts.empty then return dir end
  write(dir .. "/README.md", "# project\n")
  write(dir .. "/src/main.c", "int main(void) { return 0; }\n")
  write(dir .. "/src/util/helper.c", "int helper(void) { return 1; }\n")
  write(dir .. "/docs/guide.md", "guide\n")
  write(dir .. "/run.sh", "#!/bin/sh\necho run\n", 493)
  write(dir .. "/.gitignore", "node_modules/\nbuild/\n*.log\n")
  G(dir, { "add", "-A" })
  G(dir, { "commit", "-q", "-m", "initial" })
  return dir
end

local function open(dir, opts)
  local o = { dir = dir }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(git.open(o))
end

--- Agent-like edits of every kind.
local function agent_edits(dir)
  write(dir .. "/README.md", "# project\nrewritten by the agent\n")
  sh("rm -r docs", dir)
  write(dir .. "/src/new/feature.c", "void feature(void) {}\n")
  sh("chmod +x src/main.c && chmod -x run.sh", dir)
  sh("ln -s src/main.c link-to-main", dir)
  write(dir .. "/blob.bin", "\0\1\2\255binary\0data")
  sh("rm -rf src/util && echo 'now a file' > src/util", dir)
end

local dirs = {}
setup(function()
  cli.home = tmpdir()
  dirs[#dirs + 1] = cli.home
end)
teardown(function()
  for _, d in ipairs(dirs) do beat.fs.rm_rf(d) end
end)

describe("beat.git", function()
  local dir
  before_each(function()
    dir = nil
  end)
  after_each(function()
    if dir then beat.fs.rm_rf(dir) end
  end)

  it("opens a repository from any subdirectory and says plainly when there is none", function()
    dir = new_repo()
    local repo = open(dir .. "/src/util")
    local wd, gd = repo:path()
    assert.equal(beat.fs.realpath(dir), beat.fs.realpath(wd))
    assert.equal(beat.fs.realpath(dir .. "/.git"), beat.fs.realpath(gd))
    repo:close()
    local outside = tmpdir()
    dirs[#dirs + 1] = outside
    local none, err = git.open(outside)
    assert.is_nil(none)
    assert.equal("not a git repository: " .. outside, err)
  end)

  it("init creates a repository that snapshots work in", function()
    local d = tmpdir()
    dir = d
    local repo = assert(git.init(d .. "/fresh"))
    write(d .. "/fresh/a.txt", "a\n")
    local id = assert(repo:snapshot { ref = "t/one" })
    assert.equal("a\n", G(d .. "/fresh", { "show", id .. ":a.txt" }))
    repo:close()
  end)

  it("snapshots the work tree exactly as git add -A would, ignored files left out", function()
    dir = new_repo()
    write(dir .. "/README.md", "# changed, not staged\n")
    write(dir .. "/src/main.c", "int main(void) { return 2; }\n")
    G(dir, { "add", "src/main.c" })
    write(dir .. "/src/main.c", "int main(void) { return 3; }\n") -- staged, then changed again
    os.remove(dir .. "/docs/guide.md")
    write(dir .. "/notes.txt", "untracked\n")
    write(dir .. "/node_modules/pkg/index.js", "ignored\n")
    write(dir .. "/debug.log", "ignored\n")
    local repo = open(dir)
    local id, info = repo:snapshot { ref = "t/base", message = "base" }
    assert.is_string(id)
    assert.equal(cli_tree(dir), info.tree)
    assert.equal("int main(void) { return 3; }\n", G(dir, { "show", id .. ":src/main.c" }))
    assert.equal("untracked\n", G(dir, { "show", "refs/beat/t/base:notes.txt" }))
    local names = G(dir, { "ls-tree", "-r", "--name-only", id })
    assert.is_nil(names:find("node_modules", 1, true))
    assert.is_nil(names:find("debug.log", 1, true))
    assert.is_nil(names:find("docs/guide.md", 1, true))
    assert.equal(G(dir, { "rev-parse", "HEAD" }), G(dir, { "rev-parse", id .. "^" }))
    -- the message, and a trailer naming the work tree it was taken in
    assert.equal(("base\n\nBeat-Worktree: %s\n"):format(repo:path()),
      G(dir, { "log", "-1", "--format=%B", id }):gsub("\n+$", "\n"))
    assert.equal(repo:path(), repo:worktree_of(id))
    assert.equal(repo:path(), G(dir, { "log", "-1", "--format=%(trailers:key=Beat-Worktree,valueonly)", id })
      :gsub("%s+$", ""))
    assert.is_false(repo:worktree_of("HEAD"))
    repo:close()
  end)

  it("leaves git status, the stash list, HEAD, every branch and the index file's bytes as they were", function()
    dir = new_repo()
    write(dir .. "/README.md", "stashed change\n")
    G(dir, { "stash" })
    G(dir, { "branch", "feature" })
    write(dir .. "/README.md", "uncommitted\n")
    write(dir .. "/src/staged.c", "staged\n")
    G(dir, { "add", "src/staged.c" })
    write(dir .. "/untracked.txt", "u\n")
    write(dir .. "/build/out.o", "ignored\n")
    local before = git_state(dir)
    local files = manifest(dir)
    local repo = open(dir)
    assert(repo:snapshot { ref = "t/a" })
    write(dir .. "/more.txt", "more\n")
    assert(repo:snapshot { ref = "t/b" })
    assert(repo:snapshot { ref = "t/c", full = true })
    os.remove(dir .. "/more.txt")
    assert.same(before, git_state(dir))
    assert.same(files, manifest(dir))
    repo:close()
  end)

  it("round trip: restore undoes modify, delete, add, chmod, symlink, binary and file-for-directory edits", function()
    dir = new_repo()
    write(dir .. "/README.md", "user's uncommitted work\n")
    write(dir .. "/todo.txt", "user's untracked file\n")
    write(dir .. "/node_modules/dep/x.js", "ignored\n")
    local status = G(dir, { "status", "--porcelain=v1", "-z", "--untracked-files=all" })
    local files = manifest(dir)
    local repo = open(dir)
    local base = assert(repo:snapshot { ref = "t/base" })
    agent_edits(dir)
    assert.is_true(repo:changed(base))
    local res = assert(repo:restore(base))
    assert.is_true(res.written > 0 and res.removed > 0)
    assert.same(files, manifest(dir))
    assert.equal(status, G(dir, { "status", "--porcelain=v1", "-z", "--untracked-files=all" }))
    assert.is_false(repo:changed(base))
    repo:close()
  end)

  it("restores to any snapshot, forward and back, with the watch and with full scans", function()
    dir = new_repo()
    for _, watch in ipairs { true, false } do
      local repo = open(dir, { watch = watch })
      local base = assert(repo:snapshot {})
      local want_base = manifest(dir)
      agent_edits(dir)
      local edited = assert(repo:snapshot {})
      local want_edited = manifest(dir)
      assert(repo:restore(base))
      assert.same(want_base, manifest(dir))
      assert(repo:restore(edited))
      assert.same(want_edited, manifest(dir))
      assert(repo:restore(base))
      assert.same(want_base, manifest(dir))
      repo:close()
    end
  end)

  it("never touches ignored files, however many restores", function()
    dir = new_repo()
    write(dir .. "/node_modules/dep/index.js", "module.exports = 1\n")
    write(dir .. "/build/app.o", "\0object")
    write(dir .. "/src/trace.log", "log inside a tracked directory\n")
    write(dir .. "/src/new/keep.log", "ignored file in a directory the agent creates\n")
    local ignored = { "node_modules/dep/index.js", "build/app.o", "src/trace.log", "src/new/keep.log" }
    local function stamp(p) return sh("stat -c '%i %Y %y' " .. q(p), dir) end
    local before = {}
    for _, p in ipairs(ignored) do before[p] = { read(dir .. "/" .. p), stamp(p) } end
    local repo = open(dir)
    local base = assert(repo:snapshot { ref = "t/base" })
    for i = 1, 12 do
      write(dir .. "/src/main.c", "int main(void) { return " .. i .. "; }\n")
      write(dir .. "/src/new/feature" .. i .. ".c", "x\n")
      sh("rm -rf src/util docs", dir)
      assert(repo:snapshot { ref = "t/iter" })
      assert(repo:restore(base))
    end
    for _, p in ipairs(ignored) do
      assert.same(before[p], { read(dir .. "/" .. p), stamp(p) })
    end
    assert.equal("int main(void) { return 0; }\n", read(dir .. "/src/main.c"))
    assert.is_false(exists(dir .. "/src/new/feature1.c"))
    repo:close()
  end)

  it("removes directories the restore empties, and keeps those still holding ignored files", function()
    dir = new_repo()
    local repo = open(dir)
    local base = assert(repo:snapshot {})
    write(dir .. "/a/b/c/new.txt", "new\n")
    write(dir .. "/x/y/new.txt", "new\n")
    write(dir .. "/x/y/z.log", "ignored\n")
    assert(repo:restore(base))
    assert.is_false(exists(dir .. "/a"))
    assert.equal("ignored\n", read(dir .. "/x/y/z.log"))
    assert.is_false(exists(dir .. "/x/y/new.txt"))
    repo:close()
  end)

  it("gets the same tree from the watch as from a full scan and from the git CLI, edit after edit", function()
    dir = new_repo()
    write(dir .. "/build/tracked.txt", "tracked though ignored\n")
    G(dir, { "add", "-f", "build/tracked.txt" })
    G(dir, { "commit", "-q", "-m", "tracked in ignored dir" })
    local repo = open(dir)
    local _, first = assert(repo:snapshot {})
    assert.equal("full", first.scan)
    local edits = {
      function() write(dir .. "/README.md", "one\n") end,
      function() os.remove(dir .. "/src/main.c") end,
      function() write(dir .. "/deep/er/still/file.txt", "nested new dirs\n") end,
      function() sh("mv deep moved && echo more > moved/er/more.txt", dir) end,
      function() sh("rm -rf src/util && echo file > src/util", dir) end,
      function() sh("rm src/util && mkdir -p src/util/again && echo dir > src/util/again/x", dir) end,
      function() sh("chmod +x README.md && ln -s README.md readme-link", dir) end,
      function() sh("rm readme-link && ln -s docs readme-link", dir) end,
      function() sh("echo tmp > t.tmp && rm t.tmp", dir) end,
      function() write(dir .. "/build/tracked.txt", "changed in an ignored dir\n") end,
      function() write(dir .. "/build/untracked.txt", "ignored\n") end,
      function() write(dir .. "/node_modules/a/b.js", "ignored\n") end,
      function() sh("mkdir empty-dir && mkdir -p later && echo x > later/x", dir) end,
      function() write(dir .. "/empty-dir/now.txt", "file in a dir created empty\n") end,
      function() sh("mv moved/er moved/renamed && rm -rf moved/renamed/still", dir) end,
      function() write(dir .. "/blob.bin", "\0\255\0") end,
    }
    for i, edit in ipairs(edits) do
      edit()
      local _, w = assert(repo:snapshot {})
      assert.equal("watch", w.scan, "edit " .. i .. " should use the watch (" .. w.watch .. ")")
      local _, f = assert(repo:snapshot { full = true })
      assert.equal(f.tree, w.tree, "edit " .. i)
      assert.equal(cli_tree(dir), w.tree, "edit " .. i)
    end
    repo:close()
  end)

  it("falls back to a full scan when ignore rules or the index change, and stays right", function()
    dir = new_repo()
    write(dir .. "/cache/data.bin", "data\n")
    local repo = open(dir)
    assert(repo:snapshot {})
    write(dir .. "/.gitignore", "node_modules/\nbuild/\n*.log\ncache/\n")
    local _, info = assert(repo:snapshot {})
    assert.equal("full", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    sh("echo '*.md' >> .git/info/exclude", dir)
    write(dir .. "/new.md", "excluded\n")
    _, info = assert(repo:snapshot {})
    assert.equal("full", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    -- git status and friends rewrite the index just to refresh stat data: the watch holds
    sh("touch README.md src/main.c", dir)
    G(dir, { "update-index", "-q", "--refresh" })
    write(dir .. "/src/main.c", "after a refresh\n")
    _, info = assert(repo:snapshot {})
    assert.equal("watch", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    G(dir, { "rm", "-q", "--cached", "README.md" })
    _, info = assert(repo:snapshot {})
    assert.equal("full", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    write(dir .. "/src/main.c", "after the fallback\n")
    _, info = assert(repo:snapshot {})
    assert.equal("watch", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    -- a directory that stops being ignored is watched from then on
    write(dir .. "/build/out/result.txt", "was ignored\n")
    assert(repo:snapshot {})
    write(dir .. "/.gitignore", "node_modules/\n*.log\n")
    _, info = assert(repo:snapshot {})
    assert.equal("full", info.scan)
    write(dir .. "/build/out/result.txt", "changed while watched\n")
    _, info = assert(repo:snapshot {})
    assert.equal("watch", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    -- and so is an ignored directory once a file in it is tracked
    write(dir .. "/node_modules/dep/patched.js", "v1\n")
    G(dir, { "add", "-f", "node_modules/dep/patched.js" })
    _, info = assert(repo:snapshot {})
    assert.equal("full", info.scan)
    write(dir .. "/node_modules/dep/patched.js", "v2\n")
    _, info = assert(repo:snapshot {})
    assert.equal("watch", info.scan)
    assert.equal(cli_tree(dir), info.tree)
    repo:close()
  end)

  it("writes objects git fsck finds clean, and git show returns what beat stored", function()
    dir = new_repo()
    agent_edits(dir)
    local repo = open(dir)
    local id = assert(repo:snapshot { ref = "t/x" })
    write(dir .. "/src/new/feature.c", "second\n")
    local id2 = assert(repo:snapshot { ref = "t/y", parent = id })
    local r = assert(beat.exec({ "git", "fsck", "--strict", "--no-dangling" }, { cwd = dir, env = cli_env() }))
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    assert.equal("# project\nrewritten by the agent\n", G(dir, { "show", id .. ":README.md" }))
    assert.equal("second\n", G(dir, { "show", "refs/beat/t/y:src/new/feature.c" }))
    assert.equal("\0\1\2\255binary\0data", G(dir, { "show", id .. ":blob.bin" }))
    assert.equal("120000 blob", G(dir, { "ls-tree", id, "link-to-main" }):match("^(%d+ %a+)"))
    assert.equal("100755 blob", G(dir, { "ls-tree", id, "src/main.c" }):match("^(%d+ %a+)"))
    assert.equal("100644 blob", G(dir, { "ls-tree", id, "run.sh" }):match("^(%d+ %a+)"))
    assert.equal(id, G(dir, { "rev-parse", id2 .. "^" }):gsub("%s+$", ""))
    repo:close()
  end)

  it("works in a repository with no commits yet", function()
    dir = new_repo { empty = true }
    write(dir .. "/first.txt", "first\n")
    local repo = open(dir)
    local head, branch = repo:head()
    assert.is_nil(head)
    assert.equal("refs/heads/main", branch)
    local id = assert(repo:snapshot { ref = "t/base" })
    assert.equal("", G(dir, { "log", "--format=%P", "-1", id }):gsub("%s+", ""))
    write(dir .. "/first.txt", "changed\n")
    write(dir .. "/second.txt", "second\n")
    assert(repo:restore(id))
    assert.equal("first\n", read(dir .. "/first.txt"))
    assert.is_false(exists(dir .. "/second.txt"))
    local r = assert(beat.exec({ "git", "rev-parse", "--verify", "-q", "HEAD" }, { cwd = dir, env = cli_env() }))
    assert.not_equal(0, r.code) -- still no commits on the branch
    repo:close()
  end)

  it("works on a detached HEAD and leaves it detached where it was", function()
    dir = new_repo()
    write(dir .. "/README.md", "second commit\n")
    G(dir, { "commit", "-qam", "second" })
    G(dir, { "checkout", "-q", "--detach", "HEAD~1" })
    local head = G(dir, { "rev-parse", "HEAD" }):gsub("%s+$", "")
    write(dir .. "/wip.txt", "wip\n")
    local repo = open(dir)
    local h, branch = repo:head()
    assert.equal(head, h)
    assert.is_nil(branch)
    local id = assert(repo:snapshot {})
    assert.equal(head, G(dir, { "rev-parse", id .. "^" }):gsub("%s+$", ""))
    os.remove(dir .. "/wip.txt")
    assert(repo:restore(id))
    assert.equal("wip\n", read(dir .. "/wip.txt"))
    assert.equal(head .. "\n", read(dir .. "/.git/HEAD"))
    repo:close()
  end)

  it("signs snapshots as beat <beat@localhost> when no user.name is configured", function()
    dir = new_repo()
    write(dir .. "/x.txt", "x\n")
    local script = dir .. "/.git/snap.lua"
    write(script, ([[
      local repo = assert(require("beat.git").open(%q))
      local id = assert(repo:snapshot { ref = "t/nouser" })
      io.write(id)
    ]]):format(dir))
    local r = assert(beat.exec({ BIN, "run", script }, { env = cli_env() }))
    assert.equal(0, r.code, r.stderr)
    assert.equal("beat <beat@localhost>", G(dir, { "log", "-1", "--format=%an <%ae>", "refs/beat/t/nouser" }):gsub("%s+$", ""))
    assert.equal(r.stdout, G(dir, { "rev-parse", "refs/beat/t/nouser" }):gsub("%s+$", ""))
  end)

  it("handles file names with spaces, newlines, quotes and bytes that are not UTF-8", function()
    dir = new_repo()
    local names = { "with space.txt", "new\nline.txt", "quote\"d 'name'", "caf\xe9-latin1.txt", "tab\there", "-dash", "日本語.txt" }
    for i, n in ipairs(names) do write(dir .. "/odd/" .. n, "content " .. i .. "\n") end
    local repo = open(dir)
    local base = assert(repo:snapshot {})
    local want = manifest(dir)
    local _, info = assert(repo:snapshot { full = true })
    assert.equal(cli_tree(dir), info.tree)
    for i, n in ipairs(names) do
      assert.equal("content " .. i .. "\n", G(dir, { "show", base .. ":odd/" .. n }))
    end
    for i, n in ipairs(names) do
      if i % 2 == 0 then os.remove(dir .. "/odd/" .. n) else write(dir .. "/odd/" .. n, "changed\n") end
    end
    write(dir .. "/odd/new\xff\xfe\nname", "added\n")
    local _, w = assert(repo:snapshot {})
    assert.equal("watch", w.scan)
    assert.equal(cli_tree(dir), w.tree)
    assert(repo:restore(base))
    assert.same(want, manifest(dir))
    repo:close()
  end)

  it("stores and restores a file over 100 MB", function()
    dir = new_repo()
    local big = dir .. "/big.bin"
    sh("head -c 1000 /dev/urandom > big.bin && truncate -s 101M big.bin && printf end >> big.bin", dir)
    local sum = sh("sha1sum big.bin", dir)
    local repo = open(dir)
    local id = assert(repo:snapshot {})
    assert.equal(G(dir, { "hash-object", "big.bin" }), G(dir, { "rev-parse", id .. ":big.bin" }))
    os.remove(big)
    assert(repo:restore(id))
    assert.equal(sum, sh("sha1sum big.bin", dir))
    repo:close()
  end)

  it("streams a 2 GB file into a snapshot and back with peak memory far below its size", function()
    dir = new_repo()
    sh("truncate -s 2G big.bin && printf end >> big.bin && printf head | dd of=big.bin conv=notrunc 2>/dev/null", dir)
    local size = 2 * 1024 ^ 3 + 3
    -- a separate beat process, so its peak resident set (VmHWM) is this work alone
    local script = tmpdir() .. "/big.lua"
    dirs[#dirs + 1] = script:match("^(.*)/")
    write(script, ([[
      local repo = assert(require("beat.git").open { dir = %q, max_file_size = 3 * 1024 ^ 3 })
      local id, info = assert(repo:snapshot {})
      assert(#info.skipped == 0)
      os.remove(%q)
      local res = assert(repo:restore(id))
      for l in io.lines("/proc/self/status") do
        local kb = l:match("^VmHWM:%%s+(%%d+) kB")
        if kb then print(id, res.written, kb) end
      end
    ]]):format(dir, dir .. "/big.bin"))
    local r = assert(beat.exec({ BIN, "run", script }, { cwd = dir }))
    assert.equal(0, r.code, r.stderr)
    local id, written, kb = r.stdout:match("^(%x+)\t(%d+)\t(%d+)")
    assert.equal("1", written)
    -- the old code read the whole file into memory: 2 GB and more
    assert.is_true(tonumber(kb) < 200 * 1024, ("peak RSS %d kB"):format(tonumber(kb)))
    print(("\n  [2 GB snapshot + restore: peak RSS %.1f MB]"):format(tonumber(kb) / 1024))
    assert.equal(tostring(math.floor(size)), G(dir, { "cat-file", "-s", id .. ":big.bin" }):gsub("%s+$", ""))
    assert.equal(("%d\n"):format(size), sh("stat -c %s big.bin", dir))
    assert.equal("head", sh("head -c 4 big.bin", dir))
    assert.equal("end", sh("tail -c 3 big.bin", dir))
    -- restored sparse: the zeros are holes, not 2 GB of disk
    assert.is_true(tonumber((sh("du -k big.bin", dir):match("^(%d+)"))) < 100 * 1024)
  end)

  it("leaves a file larger than max_file_size out of snapshots, names it, and never touches it on restore", function()
    dir = new_repo()
    local repo = open(dir)
    local before = assert(repo:snapshot {})
    -- 40 GB, sparse: it is never read (that would take minutes), only seen
    sh("truncate -s 40G huge.bin && echo grown > docs/guide.md && truncate -s 2G docs/guide.md", dir)
    local id, info = assert(repo:snapshot {})
    assert.same({ { path = "docs/guide.md", size = 2 * 1024 ^ 3 }, { path = "huge.bin", size = 40 * 1024 ^ 3 } },
      info.skipped)
    local files = G(dir, { "ls-tree", "-r", "--name-only", id })
    assert.is_nil(files:find("huge.bin", 1, true))
    assert.is_nil(files:find("docs/guide.md", 1, true))
    local msg = G(dir, { "log", "-1", "--format=%B", id })
    assert.truthy(msg:find("Beat-Too-Large: huge.bin (42949672960 bytes)", 1, true), msg)
    -- still there, still too large: named again, by the watch and by a full scan
    local _, again = assert(repo:snapshot {})
    assert.equal("watch", again.scan)
    assert.equal(2, #again.skipped)
    local _, full = assert(repo:snapshot { full = true })
    assert.equal(again.tree, full.tree)
    assert.equal(2, #full.skipped)
    -- a restore leaves them as they are, and says so
    write(dir .. "/README.md", "edited\n")
    local res = assert(repo:restore(before))
    assert.equal("# project\n", read(dir .. "/README.md"))
    assert.equal(2, #res.kept)
    assert.equal(("%d\n"):format(40 * 1024 ^ 3), sh("stat -c %s huge.bin", dir))
    assert.equal(("%d\n"):format(2 * 1024 ^ 3), sh("stat -c %s docs/guide.md", dir))
    -- back under the limit, it is stored again
    sh("truncate -s 6 docs/guide.md && rm huge.bin", dir)
    local _, small = assert(repo:snapshot {})
    assert.same({}, small.skipped)
    assert.truthy(G(dir, { "ls-tree", "-r", "--name-only", small.tree }):find("docs/guide.md", 1, true))
    -- a limit per snapshot, and per repo
    write(dir .. "/mid.bin", ("x"):rep(5000))
    local _, lim = assert(repo:snapshot { max_file_size = 4096 })
    assert.same({ { path = "mid.bin", size = 5000 } }, lim.skipped)
    local _, nolim = assert(repo:snapshot {})
    assert.same({}, nolim.skipped)
    assert.equal("full", nolim.scan)       -- the limit changed: the watch's base does not hold
    repo:close()
    local tight = open(dir, { max_file_size = 100 })
    local _, t = assert(tight:snapshot {})
    assert.same({ { path = "mid.bin", size = 5000 } }, t.skipped)
    tight:close()
    assert.has_error(function() open(dir, { max_file_size = -1 }) end,
      "beat.git.open: opts.max_file_size must be a size in bytes (an integer >= 0), got -1")
  end)

  it("stores every file's bytes as they are under .gitattributes eol rules and restores them byte for byte", function()
    dir = new_repo()
    cli.commit_files(dir, {
      [".gitattributes"] = "* text=auto\n*.bat text eol=crlf\n*.sh text eol=lf\n*.bin binary\n",
      ["win.bat"] = "@echo off\r\necho hi\r\n", ["unix.sh"] = "echo hi\n",
      ["data.bin"] = "a\r\nb\r\n", ["plain.txt"] = "line\n",
    }, "attributes")
    assert.equal("@echo off\necho hi\n", G(dir, { "show", "HEAD:win.bat" })) -- git add normalized it
    local want = manifest(dir)
    local repo = open(dir)
    local base, binfo = assert(repo:snapshot {})
    -- the snapshot holds the bytes in the work tree, not what git add stored
    assert.equal("@echo off\r\necho hi\r\n", G(dir, { "show", base .. ":win.bat" }))
    assert.equal(raw_id(dir, "win.bat"), G(dir, { "rev-parse", base .. ":win.bat" }):gsub("%s+$", ""))
    assert.equal("a\r\nb\r\n", G(dir, { "show", base .. ":data.bin" }))
    assert.equal(cli_raw_tree(dir), binfo.tree)
    assert.not_equal(cli_tree(dir), binfo.tree) -- the referee does tell the two apart
    write(dir .. "/win.bat", "@echo off\r\necho changed\r\n")
    write(dir .. "/data.bin", "changed\r\n")
    write(dir .. "/new.bat", "new\r\n")
    write(dir .. "/lf.bat", "lf only\n") -- checkout would give it CRLF; the snapshot keeps LF
    local id, info = assert(repo:snapshot {})
    assert.equal("watch", info.scan)
    assert.equal(cli_raw_tree(dir), info.tree)
    local _, full = assert(repo:snapshot { full = true })
    assert.equal(info.tree, full.tree)
    assert.equal("new\r\n", G(dir, { "show", id .. ":new.bat" }))
    assert(repo:restore(base))
    assert.same(want, manifest(dir))
    assert(repo:restore(id))
    assert.equal("new\r\n", read(dir .. "/new.bat"))
    assert.equal("lf only\n", read(dir .. "/lf.bat"))
    assert.equal("@echo off\r\necho changed\r\n", read(dir .. "/win.bat"))
    repo:close()
  end)

  it("gives a user's CRLF files back byte for byte under * text=auto after an agent edit and a restore", function()
    for _, watch in ipairs { true, false } do
      dir = new_repo()
      write(dir .. "/.gitattributes", "* text=auto\n")
      write(dir .. "/tracked.txt", "one\ntwo\n")
      G(dir, { "add", "-A" })
      G(dir, { "commit", "-q", "-m", "text=auto" })
      -- the user's uncommitted work, with CRLF line ends
      write(dir .. "/notes.txt", "user line\r\nsecond\r\n")
      write(dir .. "/tracked.txt", "one\r\ntwo\r\nthree\r\n")
      write(dir .. "/mixed.txt", "lf\ncrlf\r\nlone cr\r")
      local want = manifest(dir)
      local status = G(dir, { "status", "--porcelain=v1", "-z", "--untracked-files=all" })
      local repo = open(dir, { watch = watch })
      local base, info = assert(repo:snapshot { ref = "t/base" })
      assert.equal(cli_raw_tree(dir), info.tree)
      for _, f in ipairs { "notes.txt", "tracked.txt", "mixed.txt" } do
        assert.equal(raw_id(dir, f), G(dir, { "rev-parse", base .. ":" .. f }):gsub("%s+$", ""), f)
        assert.equal(want[f].data, G(dir, { "show", base .. ":" .. f }), f)
      end
      -- the agent rewrites them all
      write(dir .. "/notes.txt", "agent\n")
      write(dir .. "/tracked.txt", "agent\n")
      os.remove(dir .. "/mixed.txt")
      write(dir .. "/agent.txt", "new\r\n")
      local _, edited = assert(repo:snapshot {})
      assert.equal(cli_raw_tree(dir), edited.tree)
      assert(repo:restore(base))
      assert.same(want, manifest(dir))
      assert.equal("user line\r\nsecond\r\n", read(dir .. "/notes.txt"))
      assert.equal(status, G(dir, { "status", "--porcelain=v1", "-z", "--untracked-files=all" }))
      assert.is_false(repo:changed(base))
      repo:close()
      beat.fs.rm_rf(dir)
    end
    dir = nil
  end)

  it("gives files back byte for byte with core.autocrlf=true, where the index holds LF and the files CRLF", function()
    dir = new_repo()
    G(dir, { "config", "core.autocrlf", "true" })
    -- check the files out again: autocrlf writes CRLF, the index keeps the LF blobs
    -- and stat data that match the CRLF files, so git calls them unchanged
    sh("rm README.md src/main.c docs/guide.md", dir)
    G(dir, { "checkout", "--", "." })
    assert.equal("# project\r\n", read(dir .. "/README.md"))
    assert.equal("", G(dir, { "status", "--porcelain" }))
    write(dir .. "/untracked.txt", "user\r\n")
    write(dir .. "/lf-only.txt", "no cr here\n")
    local want = manifest(dir)
    local index = read(dir .. "/.git/index")
    for _, watch in ipairs { false, true } do
      local repo = open(dir, { watch = watch })
      local base, info = assert(repo:snapshot {})
      assert.equal("full", info.scan)
      assert.equal(cli_raw_tree(dir), info.tree)
      assert.equal(raw_id(dir, "README.md"), G(dir, { "rev-parse", base .. ":README.md" }):gsub("%s+$", ""))
      assert.equal("# project\r\n", G(dir, { "show", base .. ":README.md" }))
      assert.equal("# project\n", G(dir, { "show", "HEAD:README.md" }))
      write(dir .. "/README.md", "agent\n")
      sh("rm -r src docs untracked.txt", dir)
      write(dir .. "/agent.txt", "agent\n")
      local _, edited = assert(repo:snapshot {})
      assert.equal(cli_raw_tree(dir), edited.tree)
      assert(repo:restore(base))
      assert.same(want, manifest(dir))
      local _, again = assert(repo:snapshot { full = true })
      assert.equal(info.tree, again.tree)
      repo:close()
    end
    assert.equal(index, read(dir .. "/.git/index"))
  end)

  it("trusts what a full scan remembers of a file's bytes only while its stat data is unchanged", function()
    dir = new_repo()
    write(dir .. "/.gitattributes", "* text=auto\n")
    write(dir .. "/mixed.txt", "a\r\nb\n")
    -- an mtime well before the index's: not racily clean, so git trusts the stat data
    sh("touch -d '1 minute ago' mixed.txt", dir)
    G(dir, { "add", "-A" })
    G(dir, { "commit", "-q", "-m", "text=auto" })
    assert.equal("a\nb\n", G(dir, { "show", "HEAD:mixed.txt" }))
    local index = read(dir .. "/.git/index")
    -- a file changed within 100 ms before it is read is not remembered (a write in
    -- the same clock tick keeps the stat data); its ctime, unlike its mtime, cannot
    -- be set, so this waits for it to age (not a synchronisation: a clock bound)
    beat.sleep(0.15)
    local repo = open(dir, { watch = false })
    local id, first = assert(repo:snapshot {})
    assert.equal("a\r\nb\n", G(dir, { "show", id .. ":mixed.txt" }))
    assert.is_true(first.hashed > 0)
    local _, second = assert(repo:snapshot {})
    assert.equal(first.tree, second.tree)
    assert.equal(0, second.hashed) -- remembered
    -- a gc prunes what no ref holds, the remembered CRLF blob with it: the file is read again
    G(dir, { "gc", "-q", "--prune=now" })
    local gone = assert(beat.exec({ "git", "cat-file", "-e", id }, { cwd = dir, env = cli_env() }))
    assert.not_equal(0, gone.code)
    local idg, after_gc = assert(repo:snapshot {})
    assert.equal(1, after_gc.hashed)
    assert.equal("a\r\nb\n", G(dir, { "show", idg .. ":mixed.txt" }))
    -- same size, same clean-filtered content, other bytes: git's stat check says
    -- "look again", its filtered hash says "unchanged"; beat must still read it
    write(dir .. "/mixed.txt", "a\nb\r\n")
    local id3, third = assert(repo:snapshot {})
    assert.equal("a\nb\r\n", G(dir, { "show", id3 .. ":mixed.txt" }))
    assert.equal(cli_raw_tree(dir), third.tree)
    assert(repo:restore(idg))
    assert.equal("a\r\nb\n", read(dir .. "/mixed.txt"))
    assert.equal(index, read(dir .. "/.git/index"))
    repo:close()
  end)

  it("stores a file's bytes, not what git add -A would stage, after a tracked .gitattributes was edited", function()
    dir = new_repo { empty = true }
    write(dir .. "/.gitattributes", "* text=auto\n")
    G(dir, { "add", ".gitattributes" })
    write(dir .. "/.gitattributes", "*.txt eol=crlf\n")
    write(dir .. "/f", "line\r\n")
    write(dir .. "/g.txt", "crlf\r\nhere\r\n")
    assert.not_equal(raw_id(dir, "g.txt"), G(dir, { "hash-object", "g.txt" }):gsub("%s+$", ""))
    local repo = open(dir)
    local full = open(dir, { watch = false })
    local tree = assert(full:tree())
    assert.equal(cli_raw_tree(dir), tree)
    assert.equal(raw_id(dir, "g.txt"), G(dir, { "rev-parse", tree .. ":g.txt" }):gsub("%s+$", ""))
    assert.equal(raw_id(dir, "f"), G(dir, { "rev-parse", tree .. ":f" }):gsub("%s+$", ""))
    assert.equal(tree, (assert(repo:tree())))
    -- attributes change nothing of what is stored: the watch carries on
    write(dir .. "/.gitattributes", "* text=auto\n")
    local tw, info = assert(repo:tree())
    assert.equal("watch", info.scan)
    assert.equal(assert(full:tree()), tw)
    assert.equal(cli_raw_tree(dir), tw)
    repo:close()
    full:close()
  end)

  it("gets the same tree from the watch as from a full scan when a directory becomes a symlink", function()
    dir = new_repo { empty = true }
    write(dir .. "/Z/f", "a\n")
    write(dir .. "/target/f", "t\n")
    local repo = open(dir)
    local full = open(dir, { watch = false })
    assert(repo:tree())
    sh("echo b > Z/f && rm -rf Z && ln -s target Z", dir)
    local tw, info = assert(repo:tree())
    assert.equal("watch", info.scan)
    assert.equal(assert(full:tree()), tw)
    assert.equal(cli_tree(dir), tw)
    assert.equal("120000", G(dir, { "ls-tree", tw, "Z" }):match("^(%d+)"))
    repo:close()
    full:close()
  end)

  it("never removes a file outside the work tree, even through a symlinked directory", function()
    dir = new_repo { empty = true }
    local outside = tmpdir()
    dirs[#dirs + 1] = outside
    write(outside .. "/f", "not yours\n")
    write(dir .. "/keep", "k\n")
    local repo = open(dir)
    local target = assert(repo:snapshot { ref = "t/target" })
    write(dir .. "/Z/f", "a\n")
    assert(repo:tree())
    sh(("echo b > Z/f && rm -rf Z && ln -s %s Z"):format(q(outside)), dir)
    assert(repo:restore(target))
    assert.equal("not yours\n", read(outside .. "/f"))
    assert.is_false(exists(dir .. "/Z"))
    assert.equal("k\n", read(dir .. "/keep"))
    repo:close()
  end)

  it("never snapshots nor restores .beat/", function()
    dir = new_repo()
    write(dir .. "/.beat/runs/r1/journal.jsonl", "{}\n")
    local repo = open(dir)
    local base = assert(repo:snapshot {})
    assert.is_nil(G(dir, { "ls-tree", "-r", "--name-only", base }):find(".beat", 1, true))
    write(dir .. "/.beat/runs/r1/journal.jsonl", "{}\n{}\n")
    write(dir .. "/.beat/runs/r1/iter-1/agent.log", "log\n")
    local _, info = assert(repo:snapshot {})
    assert.equal("watch", info.scan)
    local _, full = assert(repo:snapshot { full = true })
    assert.equal(full.tree, info.tree)
    assert(repo:restore(base))
    assert.equal("{}\n{}\n", read(dir .. "/.beat/runs/r1/journal.jsonl"))
    assert.equal("log\n", read(dir .. "/.beat/runs/r1/iter-1/agent.log"))
    repo:close()
  end)

  it("never snapshots nor restores the paths it is opened to exclude, wherever the runs directory is", function()
    dir = new_repo()
    write(dir .. "/out/runs/r1/journal.jsonl", "{}\n")
    write(dir .. "/out/keep.txt", "kept in snapshots\n")
    write(dir .. "/.beat/runs/r0/journal.jsonl", "{}\n")
    local repo = open(dir, { exclude = { "out/runs/" } })
    local base = assert(repo:snapshot {})
    local files = G(dir, { "ls-tree", "-r", "--name-only", base })
    assert.is_nil(files:find("out/runs", 1, true))
    assert.truthy(files:find("out/keep.txt", 1, true))
    -- only what it was told: .beat/ is an ordinary directory for this repo
    assert.truthy(files:find(".beat/runs/r0/journal.jsonl", 1, true))
    write(dir .. "/out/runs/r1/journal.jsonl", "{}\n{}\n")
    write(dir .. "/out/runs/r1/iter-1/agent.log", "log\n")
    local _, info = assert(repo:snapshot {})
    local _, full = assert(repo:snapshot { full = true })
    assert.equal(full.tree, info.tree)
    assert(repo:restore(base))
    assert.equal("{}\n{}\n", read(dir .. "/out/runs/r1/journal.jsonl"))
    assert.equal("log\n", read(dir .. "/out/runs/r1/iter-1/agent.log"))
    repo:close()
    -- a tracked file below an excluded path is left out too, and left alone
    G(dir, { "add", "-f", "out/runs/r1/journal.jsonl" })
    G(dir, { "commit", "-q", "-m", "tracked run file" })
    local other = open(dir, { exclude = { "out/runs" } })
    local snap = assert(other:snapshot {})
    assert.is_nil(G(dir, { "ls-tree", "-r", "--name-only", snap }):find("out/runs", 1, true))
    assert(other:restore(base))
    assert.equal("{}\n{}\n", read(dir .. "/out/runs/r1/journal.jsonl"))
    other:close()
    assert.has_error(function() git.open { dir = dir, exclude = { "../up" } } end,
      'beat.git.open: opts.exclude[1] must be a relative path inside the work tree, got "../up"')
    assert.has_error(function() git.open { dir = dir, exclude = "out" } end,
      'beat.git.open: opts.exclude must be a list of work-tree paths, got "out"')
  end)

  it("leaves nested repositories alone and keeps a submodule's recorded commit", function()
    dir = new_repo()
    local lib = dir .. "/vendor/lib"
    G(dir, { "init", "-q", "-b", "main", "vendor/lib" })
    write(lib .. "/lib.c", "nested\n")
    G(lib, { "add", "-A" })
    G(lib, { "commit", "-q", "-m", "lib" })
    local repo = open(dir)
    local base = assert(repo:snapshot {})
    assert.is_nil(G(dir, { "ls-tree", "-r", "--name-only", base }):find("vendor", 1, true))
    write(lib .. "/lib.c", "changed inside the nested repository\n")
    write(dir .. "/README.md", "edited\n")
    local _, w = assert(repo:snapshot {})
    local _, f = assert(repo:snapshot { full = true })
    assert.equal(f.tree, w.tree)
    assert(repo:restore(base))
    assert.equal("changed inside the nested repository\n", read(lib .. "/lib.c"))
    assert.equal("# project\n", read(dir .. "/README.md"))
    repo:close()
    -- a tracked submodule: its gitlink stays as the index records it
    G(dir, { "-c", "protocol.file.allow=always", "submodule", "add", "-q", "./vendor/lib", "vendor/lib" })
    G(dir, { "commit", "-q", "-m", "submodule" })
    local gitlink = G(dir, { "ls-tree", "HEAD", "vendor/lib" })
    repo = open(dir)
    local id = assert(repo:snapshot {})
    write(dir .. "/README.md", "edited again\n")
    local id2, info = assert(repo:snapshot {})
    assert.equal(gitlink:gsub("HEAD", ""), G(dir, { "ls-tree", id, "vendor/lib" }))
    assert.equal(G(dir, { "ls-tree", id, "vendor/lib" }), G(dir, { "ls-tree", id2, "vendor/lib" }))
    assert.equal(cli_tree(dir), info.tree)
    repo:close()
  end)

  it("restores everything it can and names the path an ignored directory blocks", function()
    dir = new_repo()
    local repo = open(dir)
    write(dir .. "/build", "a tracked file named build\n")
    local with_file = assert(repo:snapshot {})
    os.remove(dir .. "/build")
    write(dir .. "/build/cache.o", "ignored output\n")
    write(dir .. "/README.md", "edited\n")
    local none, err = repo:restore(with_file)
    assert.is_nil(none)
    assert.truthy(err:find("restore: build: ", 1, true), err)
    assert.equal("ignored output\n", read(dir .. "/build/cache.o"))
    assert.equal("# project\n", read(dir .. "/README.md"))
    repo:close()
  end)

  it("writes a snapshot's commit as git does, whatever the time zone, and git commit-tree agrees byte for byte", function()
    dir = new_repo()
    write(dir .. "/x.txt", "x\n")
    local script = dir .. "/.git/snap.lua"
    write(script, ([[
      local repo = assert(require("beat.git").open(%q))
      local id = assert(repo:snapshot { ref = "t/tz", message = "m\n\nbody" })
      io.write(id)
    ]]):format(dir))
    for _, tz in ipairs { "America/St_Johns", "Asia/Kolkata", "UTC" } do
      local r = assert(beat.exec({ BIN, "run", script }, { env = { TZ = tz } }))
      assert.equal(0, r.code, r.stderr)
      local id = r.stdout
      local raw = G(dir, { "cat-file", "commit", id })
      local author, stamp, offset = raw:match("\nauthor ([^\n]-) (%d+) ([+-]%d%d%d%d)\n")
      assert.truthy(author, raw)
      local expect = beat.exec({ "date", "+%z", "-d", "@" .. stamp }, { env = { TZ = tz } }).stdout:gsub("%s+$", "")
      assert.equal(expect, offset)
      -- the same tree, parent, people, time and message through git commit-tree
      local name, email = author:match("^(.-) <(.*)>$")
      local again = assert(beat.exec({ "git", "commit-tree", G(dir, { "rev-parse", id .. "^{tree}" }):gsub("%s+$", ""),
          "-p", (G(dir, { "rev-parse", id .. "^" }):gsub("%s+$", "")) },
        { cwd = dir, stdin = raw:match("\n\n(.*)$"), env = {
          GIT_AUTHOR_NAME = name, GIT_AUTHOR_EMAIL = email, GIT_AUTHOR_DATE = stamp .. " " .. offset,
          GIT_COMMITTER_NAME = name, GIT_COMMITTER_EMAIL = email, GIT_COMMITTER_DATE = stamp .. " " .. offset } }))
      assert.equal(0, again.code, again.stderr)
      assert.equal(id, again.stdout:gsub("%s+$", ""))
    end
    local r = assert(beat.exec({ "git", "fsck", "--strict", "--no-dangling" }, { cwd = dir, env = cli_env() }))
    assert.equal(0, r.code, r.stderr)
  end)

  it("moves a run's refs as git does: over a packed one, into a new directory, never past another's lock", function()
    dir = new_repo()
    local repo = open(dir)
    local a = assert(repo:snapshot { ref = "t/a" })
    write(dir .. "/x.txt", "x\n")
    local b = assert(repo:snapshot {})
    G(dir, { "pack-refs", "--all" })
    assert.is_false(exists(dir .. "/.git/refs/beat/t/a"))
    assert.equal(b, repo:set_ref { ref = "t/a", commit = b })               -- packed: the loose one wins
    assert.equal(b, G(dir, { "rev-parse", "refs/beat/t/a" }):gsub("%s+$", ""))
    assert.equal(b, repo:set_ref { ref = "new/dir/deep", commit = b })      -- directories made
    assert.equal(b, G(dir, { "rev-parse", "refs/beat/new/dir/deep" }):gsub("%s+$", ""))
    write(dir .. "/.git/refs/beat/t/a.lock", "")                            -- another git holds it
    local ok, err = repo:set_ref { ref = "t/a", commit = a }
    assert.is_nil(ok)
    assert.matches("refs/beat/t/a is locked", err)
    assert.equal(b, G(dir, { "rev-parse", "refs/beat/t/a" }):gsub("%s+$", ""))
    os.remove(dir .. "/.git/refs/beat/t/a.lock")
    assert.equal(a, repo:set_ref { ref = "t/a", commit = a })
    assert.equal(a, G(dir, { "rev-parse", "refs/beat/t/a" }):gsub("%s+$", ""))
    assert.same({ "deep" }, beat.fs.list(dir .. "/.git/refs/beat/new/dir"))  -- no lock file left
    assert.same({ "a" }, beat.fs.list(dir .. "/.git/refs/beat/t"))
    local r = assert(beat.exec({ "git", "fsck", "--strict", "--no-dangling" }, { cwd = dir, env = cli_env() }))
    assert.equal(0, r.code, r.stderr)
    repo:close()
  end)

  it("creates a ref for exactly one of two processes racing to create it, 100 times out of 100", function()
    dir = new_repo()
    local repo = open(dir)
    local id = assert(repo:snapshot {})
    -- two processes; in round i both try to create race-i/base at the same instant
    local script = dir .. "/.git/race.lua"
    write(script, ([[
      local beat = require "beat"
      local repo = assert(require("beat.git").open(%q))
      local start = tonumber(os.getenv("START"))
      for i = 1, 100 do
        while beat.now() < start + i * 0.02 do end
        local ok, err = repo:set_ref { ref = ("race-%%d/base"):format(i), commit = %q, create = true }
        io.write(ok and "W" or ok == false and "L" or ("error: " .. tostring(err) .. "\n"))
      end
    ]]):format(dir, id))
    local start = ("%.3f"):format(beat.now() + 0.5)
    local a = assert(beat.spawn({ BIN, "run", script }, { env = { START = start } }))
    local b = assert(beat.spawn({ BIN, "run", script }, { env = { START = start } }))
    local ra, rb = a:wait(), b:wait()
    assert.equal(0, ra.code, ra.stderr)
    assert.equal(0, rb.code, rb.stderr)
    assert.equal(100, #ra.stdout, ra.stdout)
    assert.equal(100, #rb.stdout, rb.stdout)
    for i = 1, 100 do
      local pair = ra.stdout:sub(i, i) .. rb.stdout:sub(i, i)
      assert.truthy(pair == "WL" or pair == "LW", ("round %d: %s"):format(i, pair))
    end
    local again, err = repo:set_ref { ref = "race-1/base", commit = id, create = true }
    assert.is_false(again)
    assert.equal("set_ref: refs/beat/race-1/base exists", err)
    assert.equal(id, repo:set_ref { ref = "race-1/base", commit = id })   -- without create: overwrites
    repo:close()
  end)

  it("lets only one run hold a work tree's lock and names the holder", function()
    dir = new_repo()
    local repo = open(dir)
    local other = open(dir .. "/src")
    local lock = assert(repo:lock("run-1"))
    local none, err = other:lock("run-2")
    assert.is_nil(none)
    assert.equal(("work tree is in use by run run-1 (pid %d)"):format(require("beat._runtime").pid()), err)
    lock:release()
    assert.is_false(lock:held())
    do
      local l2 <close> = assert(other:lock("run-2"))
      assert.is_true(l2:held())
      assert.is_nil(repo:lock("run-3"))
    end
    local l3 = assert(repo:lock { id = "starting" })
    assert(l3:relabel("run-3"))                        -- a run locks before its id is known
    assert.equal(("work tree is in use by run run-3 (pid %d)"):format(require("beat._runtime").pid()),
      select(2, other:lock("run-4")))
    l3:release()
    assert.has_error(function() l3:relabel("run-5") end, "lock:relabel: the lock was released")
    repo:close()
    other:close()
  end)

  it("refuses the lock while another process holds it and takes it over once that process is killed", function()
    dir = new_repo()
    local repo = open(dir)
    local lockfile = dir .. "/.git/beat/run.lock"
    -- another beat process takes the lock, says so, and sleeps
    local script = dir .. "/.git/hold.lua"
    write(script, ([[
      local repo = assert(require("beat.git").open(%q))
      local lock = assert(repo:lock("holder"))
      io.write("locked\n") io.flush()
      require("beat").sleep(60)
    ]]):format(dir))
    local proc = assert(beat.spawn({ BIN, "run", script }, { stdout = function() end }))
    local deadline = beat.clock() + 10
    while not (read(lockfile) or ""):find("holder") and beat.clock() < deadline do beat.sleep(0.05) end
    local none, err = repo:lock("run-2")
    assert.is_nil(none)
    local pid = tonumber(err:match("^work tree is in use by run holder %(pid (%d+)%)$"))
    assert.is_number(pid, err)
    assert.equal(pid, tonumber(read(lockfile):match("^(%d+) ")))
    assert.is_nil(repo:lock("run-2"))
    sh("kill -KILL " .. pid) -- the holder dies without releasing anything
    proc:wait()
    local lock = assert(repo:lock("run-2"))
    assert.equal("run-2", read(lockfile):match("^%d+ (.-)\n"))
    lock:release()
    -- a lock file left with a dead pid in it is no obstacle either
    write(lockfile, "999999999 ghost\n")
    local l2 = assert(repo:lock("run-3"))
    l2:release()
    repo:close()
  end)

  it("counts lines as git diff --numstat does under .gitattributes, from the work tree or only the index", function()
    dir = new_repo()
    cli.commit_files(dir, {
      ["data.txt"] = "one\n", ["notes.txt"] = "one\n", ["sub/table.csv"] = "a,b\n",
      [".gitattributes"] = "data.txt binary\n", ["sub/.gitattributes"] = "*.csv -diff\n",
    }, "attributes")
    local repo = open(dir)
    local function numstat(a, b)   -- git's, and beat's, as "path added deleted" lines
      local theirs = G(dir, { "diff", "--numstat", a, b }):gsub("\t", " ")
      local d = assert(repo:diff { from = a, to = b, patch = false })
      local ours = {}
      for _, f in ipairs(d.files) do
        ours[#ours + 1] = f.binary and ("- - " .. f.path) or ("%d %d %s"):format(f.insertions, f.deletions, f.path)
      end
      table.sort(ours)
      local t = {}
      for line in theirs:gmatch("[^\n]+") do t[#t + 1] = line end
      table.sort(t)
      return table.concat(t, "\n"), table.concat(ours, "\n")
    end
    local a = assert(repo:snapshot {})
    for _, f in ipairs { "data.txt", "notes.txt", "sub/table.csv" } do write(dir .. "/" .. f, "two\nthree\n") end
    local b = assert(repo:snapshot {})
    local theirs, ours = numstat(a, b)
    assert.equal("- - data.txt\n- - sub/table.csv\n2 1 notes.txt", ours)
    assert.equal(theirs, ours)
    -- the attributes files gone from the work tree but still in the index:
    -- libgit2 takes them from the index (git's tree diff does not)
    os.remove(dir .. "/.gitattributes")
    os.remove(dir .. "/sub/.gitattributes")
    for _, f in ipairs { "data.txt", "notes.txt", "sub/table.csv" } do write(dir .. "/" .. f, "four\n") end
    local c = assert(repo:snapshot {})
    local _
    _, ours = numstat(b, c)
    assert.equal("- - data.txt\n- - sub/table.csv\n0 1 .gitattributes\n0 1 sub/.gitattributes\n1 2 notes.txt", ours)
    repo:close()
  end)

  it("diffs two snapshots, or a snapshot and the work tree, with counts and a patch", function()
    dir = new_repo()
    local repo = open(dir)
    local a = assert(repo:snapshot {})
    write(dir .. "/README.md", "# project\nline two\nline three\n")
    os.remove(dir .. "/docs/guide.md")
    write(dir .. "/new.txt", "new\n")
    write(dir .. "/img.bin", "\0\1\2")
    local d = assert(repo:diff(a, "worktree"))
    assert.equal(4, d.files_changed)
    assert.equal(3, d.insertions)
    assert.equal(1, d.deletions)
    local by = {}
    for _, f in ipairs(d.files) do by[f.path] = f end
    assert.same({ path = "README.md", status = "modified", insertions = 2, deletions = 0, binary = false }, by["README.md"])
    assert.equal("deleted", by["docs/guide.md"].status)
    assert.equal("added", by["new.txt"].status)
    assert.is_true(by["img.bin"].binary)
    assert.truthy(d.patch:find("+line two", 1, true))
    local b = assert(repo:snapshot {})
    local d2 = assert(repo:diff { from = a, to = b, patch = false })
    assert.equal(4, d2.files_changed)
    assert.is_nil(d2.patch)
    local same = assert(repo:diff(b))
    assert.equal(0, same.files_changed)
    local none, err = repo:diff("no-such-rev", b)
    assert.is_nil(none)
    assert.truthy(err:find("no-such-rev", 1, true))
    repo:close()
  end)

  it("diffs only the paths that differ, as git does: deep edits, modes, links, a file that became a directory", function()
    dir = new_repo()
    for i = 1, 30 do write(("%s/big/d%02d/f.txt"):format(dir, i), ("file %d\n"):format(i)) end
    write(dir .. "/run.sh", "echo hi\n", tonumber("644", 8))
    write(dir .. "/gone/a.txt", "a\nb\n")
    local repo = open(dir)
    local a = assert(repo:snapshot {})
    write(dir .. "/big/d17/f.txt", "file 17\nmore\n")                 -- deep in an unchanged neighbourhood
    sh("chmod +x run.sh", dir)                                         -- the mode alone
    sh("rm -r gone && ln -s README.md link", dir)                      -- a directory gone, a link new
    sh("rm docs/guide.md && mkdir -p docs/guide.md && echo x > docs/guide.md/inner", dir) -- file -> directory
    write(dir .. "/new/deep/er/n.txt", "n\n")                          -- a new directory tree
    local b = assert(repo:snapshot {})
    local d = assert(repo:diff { from = a, to = b })
    -- git's own view of the same two commits is the referee
    local numstat = G(dir, { "diff", "--numstat", "--no-renames", a, b })
    local want, got = {}, {}
    for adds, dels, path in numstat:gmatch("(%S+)\t(%S+)\t([^\n]+)") do   -- a mode change: 0 0
      want[#want + 1] = ("%s %s %s"):format(path, adds, dels)
    end
    for _, f in ipairs(d.files) do
      got[#got + 1] = ("%s %s %s"):format(f.path, f.binary and "-" or f.insertions, f.binary and "-" or f.deletions)
    end
    table.sort(want)
    table.sort(got)
    assert.same(want, got)
    assert.equal(#want, d.files_changed)
    assert.truthy(d.patch:find("diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755", 1, true))
    assert.equal(0, assert(repo:diff { from = b, to = b }).files_changed)
    assert.equal("", assert(repo:diff { from = b, to = b }).patch)
    repo:close()
  end)

  it("says whether the work tree changed since a snapshot", function()
    dir = new_repo()
    local repo = open(dir)
    local id = assert(repo:snapshot {})
    assert.is_false(repo:changed(id))
    sh("touch README.md", dir) -- same content: not a change
    assert.is_false(repo:changed(id))
    write(dir .. "/README.md", "edited\n")
    assert.is_true(repo:changed(id))
    write(dir .. "/README.md", "# project\n")
    assert.is_false(repo:changed { commit = id })
    repo:close()
  end)

  it("lists and deletes only refs under refs/beat/", function()
    dir = new_repo()
    local repo = open(dir)
    local id = assert(repo:snapshot { ref = "run-1/base" })
    assert(repo:snapshot { ref = "refs/beat/run-1/iter-1" })
    assert(repo:snapshot { ref = "run-2/base" })
    local names = {}
    for _, r in ipairs(repo:refs("refs/beat/run-1/")) do names[#names + 1] = r.name end
    assert.same({ "refs/beat/run-1/base", "refs/beat/run-1/iter-1" }, names)
    assert.same({}, repo:refs("refs/beat/run-*"))     -- a prefix is literal, never a glob
    assert.same({}, repo:refs("refs/beat/run-?/"))
    assert.same({ "run-1", "run-2" }, repo:ref_children("refs/beat/"))   -- from the ref directory
    assert.same({ "base", "iter-1" }, repo:ref_children("refs/beat/run-1/"))
    assert.same({ "main" }, repo:ref_children("refs/heads/"))
    assert.has_error(function() repo:ref_children("refs/beat") end,
      "repo:ref_children: prefix must end in '/', got \"refs/beat\"")
    assert.equal(id, repo:refs("refs/beat/run-1/base")[1].id)
    assert.equal(id, repo:ref("run-1/base"))          -- one ref, looked up alone
    assert.equal(id, repo:ref("refs/beat/run-1/base"))
    assert.is_nil(repo:ref("run-1/nothing"))
    assert.is_true(repo:delete_ref("run-2/base"))
    assert.is_nil(repo:ref("run-2/base"))
    assert.is_true(repo:delete_ref("run-2/base"))      -- gone already: nothing to do
    assert.has_error(function() repo:ref("refs/heads/main") end)
    assert.has_error(function() repo:delete_ref("refs/heads/main") end)
    assert(repo:snapshot { ref = "run-2/base" })
    assert.equal(2, repo:delete_refs("run-1/"))
    assert.same({}, repo:refs("refs/beat/run-1/"))
    assert.equal(1, #repo:refs())
    assert.has_error(function() repo:delete_refs("refs/heads/") end)
    assert.has_error(function() repo:snapshot { ref = "refs/heads/main" } end)
    assert.truthy(G(dir, { "rev-parse", "main" }))
    repo:close()
  end)

  it("checks a snapshot out in a separate work tree whose snapshots land in the same repository", function()
    dir = new_repo()
    write(dir .. "/README.md", "uncommitted in the main work tree\n")
    write(dir .. "/.git/info/exclude", ".beat/\n") -- as the runs module does
    write(dir .. "/.beat/runs/r1/journal.jsonl", "{}\n")
    local before = git_state(dir)
    local repo = open(dir)
    local base = assert(repo:snapshot { ref = "t/base" })
    local wtdir = dir .. "/.beat/wt/cand-1"
    local wt = assert(repo:worktree(wtdir, base))
    assert.equal("uncommitted in the main work tree\n", read(wtdir .. "/README.md"))
    assert.equal("", G(wtdir, { "status", "--porcelain" }))
    write(wtdir .. "/candidate.txt", "candidate\n")
    local cid = assert(wt:snapshot { ref = "t/cand-1", parent = base })
    assert.equal("candidate\n", G(dir, { "show", "refs/beat/t/cand-1:candidate.txt" }))
    assert.equal(base, G(dir, { "rev-parse", cid .. "^" }):gsub("%s+$", ""))
    local after = git_state(dir)
    after.status = after.status:gsub("!! %.beat/wt/cand%-1/%z", "") -- the candidate's own checkout
    assert.same(before, after)
    wt:close()
    assert(repo:remove_worktree(wtdir))
    assert.is_false(exists(wtdir))
    assert.equal("", G(dir, { "worktree", "list", "--porcelain" }):match("worktree [^\n]*cand%-1") or "")
    local none, err = repo:remove_worktree(dir .. "/src")
    assert.is_nil(none)
    assert.truthy(err:find("not a work tree", 1, true))
    assert.equal("main.c", (read(dir .. "/src/main.c") and "main.c"))
    repo:close()
  end)

  it("refuses to remove a work tree the user made, and keeps its uncommitted work", function()
    dir = new_repo()
    local parent = tmpdir()
    dirs[#dirs + 1] = parent
    local wt = parent .. "/wt"
    G(dir, { "worktree", "add", "-q", "--detach", wt })
    write(wt .. "/uncommitted", "precious\n")
    local repo = open(dir)
    local none, err = repo:remove_worktree(wt)
    assert.is_nil(none)
    assert.truthy(err:find("not created by beat", 1, true), err)
    assert.equal("precious\n", read(wt .. "/uncommitted"))
    assert.truthy(G(dir, { "worktree", "list", "--porcelain" }):find("/wt\n", 1, true))
    repo:close()
  end)

  it("promotes a snapshot to a branch without touching the work tree", function()
    dir = new_repo()
    local repo = open(dir)
    write(dir .. "/feature.txt", "feature\n")
    local snap = assert(repo:snapshot {})
    local files = manifest(dir)
    assert.equal(snap, assert(repo:promote(snap, { branch = "beat/result" })))
    assert.equal(snap, G(dir, { "rev-parse", "refs/heads/beat/result" }):gsub("%s+$", ""))
    write(dir .. "/feature.txt", "feature v2\n")
    local snap2 = assert(repo:snapshot { parent = snap })
    assert.equal(snap2, assert(repo:promote { commit = snap2, branch = "refs/heads/beat/result" }))
    local none, err = repo:promote(snap, { branch = "beat/result" })
    assert.is_nil(none)
    assert.truthy(err:find("fast-forward", 1, true))
    local c = assert(repo:promote(snap, { branch = "beat/result", message = "take the first one" }))
    assert.equal(snap2, G(dir, { "rev-parse", c .. "^" }):gsub("%s+$", ""))
    assert.equal("feature\n", G(dir, { "show", c .. ":feature.txt" }))
    -- the checked-out branch: it moves, and the index follows, like git commit -a
    local m = assert(repo:promote(snap2, { branch = "main", message = "result" }))
    assert.equal(m, G(dir, { "rev-parse", "main" }):gsub("%s+$", ""))
    assert.equal("", G(dir, { "status", "--porcelain" }))
    files["feature.txt"].data = "feature v2\n"
    assert.same(files, manifest(dir))
    repo:close()
  end)

  it("keeps the discarded work under a ref when restore is asked for a backup", function()
    dir = new_repo()
    local repo = open(dir)
    local base = assert(repo:snapshot {})
    write(dir .. "/precious.txt", "do not lose me\n")
    assert(repo:restore { commit = base, backup = "t/before-restore" })
    assert.is_false(exists(dir .. "/precious.txt"))
    assert.equal("do not lose me\n", G(dir, { "show", "refs/beat/t/before-restore:precious.txt" }))
    repo:close()
  end)

  -- The race a restore has with a user's editor: the work tree is read (the
  -- backup snapshot), then the differing paths are rewritten or removed. An
  -- edit made in between is in no snapshot. These specs run the two steps
  -- apart (the C primitives Repo:restore is made of) and edit in between.
  it("never overwrites nor removes a file the user changed after the restore read the work tree, and names it", function()
    for _, watch in ipairs { true, false } do
      dir = new_repo()
      local repo = open(dir, { watch = watch })
      local _, target = repo._c:resolve("HEAD")
      -- the agent's turn: rewrite, add, delete, retarget a link
      write(dir .. "/README.md", "# project\nthe agent's rewrite\n")
      write(dir .. "/docs/guide.md", "the agent's guide\n")
      write(dir .. "/src/agent2.c", "added by the agent\n")
      sh("rm run.sh && ln -s README.md lnk", dir)
      local current = assert(repo._c:tree(false))  -- what the backup reads
      -- the user, after the read and before the writes
      write(dir .. "/README.md", "# project\nTHE USER'S EDIT, after the read\n")  -- to be rewritten
      write(dir .. "/src/agent2.c", "the user's edit of the agent's file\n")         -- to be removed
      write(dir .. "/run.sh", "the user's new run.sh\n")                           -- to be written back
      sh("ln -sfn docs/guide.md lnk", dir)                                          -- link to be removed
      local want = manifest(dir)
      local written, removed, conflicts = repo._c:restore_tree(current, target, {})
      assert.same({ "README.md", "lnk", "run.sh", "src/agent2.c" }, conflicts)
      -- the user's bytes, all of them; what the user did not touch is restored
      want["docs/guide.md"].data = "guide\n"
      assert.same(want, manifest(dir))
      assert.equal(1, written)
      assert.equal(0, removed)
      repo:close()
      beat.fs.rm_rf(dir)
    end
    dir = nil
  end)

  it("leaves alone a file whose edit kept its size and mtime, a chmod, and a file in the way of a directory", function()
    dir = new_repo()
    local repo = open(dir)
    local _, target = repo._c:resolve("HEAD")
    write(dir .. "/README.md", "agent: 16 bytes\n")
    write(dir .. "/docs/guide.md", "the agent's\n")
    write(dir .. "/src/util/helper.c", "the agent's helper\n")
    local current = assert(repo._c:tree(false))
    -- same size, mtime set back: only the bytes tell
    local mtime = sh("stat -c %y README.md", dir):gsub("\n$", "")
    write(dir .. "/README.md", "USER: 16 bytes!\n")
    sh("touch -d " .. q(mtime) .. " README.md", dir)
    assert.equal(mtime, (sh("stat -c %y README.md", dir):gsub("\n$", "")))
    sh("chmod +x docs/guide.md", dir)
    -- a directory where the restore would remove the agent's file, with the user's file in it
    sh("rm src/util/helper.c && mkdir src/util/helper.c && echo mine > src/util/helper.c/x", dir)
    local want = manifest(dir)
    local written, removed, conflicts = repo._c:restore_tree(current, target, {})
    assert.same({ "README.md", "docs/guide.md", "src/util/helper.c" }, conflicts)
    assert.same(want, manifest(dir))
    assert.equal(0, written + removed)
    repo:close()
  end)

  it("restores through repo:restore and says there was nothing in the way", function()
    dir = new_repo()
    local repo = open(dir)
    local base = assert(repo:snapshot {})
    local want = manifest(dir)
    agent_edits(dir)
    local res = assert(repo:restore { commit = base, backup = "t/backup" })
    assert.same({}, res.conflicts)
    assert.same(want, manifest(dir))
    -- no file set aside or half written is left behind
    assert.equal("", sh("find . -name '.beat-restore-*'", dir))
    repo:close()
  end)

  it("snapshots a work tree with merge conflicts without touching the index", function()
    dir = new_repo()
    cli.merge_conflict(dir)
    local index = read(dir .. "/.git/index")
    local repo = open(dir)
    local id = assert(repo:snapshot {})
    assert.truthy(G(dir, { "show", id .. ":README.md" }):find("<<<<<<<", 1, true))
    assert.equal(index, read(dir .. "/.git/index"))
    repo:close()
  end)

  it("raises on programmer mistakes, naming the option", function()
    dir = new_repo()
    local repo = open(dir)
    assert.has_error(function() git.open(42) end, "beat.git.open: opts.dir must be a string, got 42")
    assert.has_error(function() git.open { dir = dir, watch = "yes" } end,
      'beat.git.open: opts.watch must be a boolean, got "yes"')
    assert.has_error(function() repo:snapshot { mesage = "typo" } end, "repo:snapshot: unknown option opts.mesage")
    assert.has_error(function() repo:snapshot(true) end, "repo:snapshot: opts must be a table, got true")
    assert.has_error(function() repo:snapshot { parent = true } end,
      "repo:snapshot: opts.parent must be a revision, a list of revisions or false, got true")
    assert.has_error(function() repo:snapshot { parent = { "HEAD", 7 } } end,
      "repo:snapshot: opts.parent[2] must be a string, got 7")
    assert.has_error(function() repo:snapshot { ref = "refs/heads/main" } end,
      'repo:snapshot: opts.ref must be a ref under refs/beat/ (beat never writes other refs), got "refs/heads/main"')
    assert.has_error(function() repo:restore() end, "repo:restore: opts.commit must be a string, got nil")
    assert.has_error(function() repo:tree { max_file_size = 1.5 } end,
      "repo:tree: opts.max_file_size must be a size in bytes (an integer >= 0), got 1.5")
    assert.has_error(function() repo:lock { id = 7 } end, "repo:lock: opts.id must be a non-empty single line, got 7")
    assert.has_error(function() repo:lock { id = "a\nb" } end,
      'repo:lock: opts.id must be a non-empty single line, got "a\\nb"')
    assert.has_error(function() repo:lock { id = "x", name = "../x" } end,
      'repo:lock: opts.name must be a plain file name, got "../x"')
    assert.has_error(function() repo:promote("x", { branch = "refs/tags/v1" }) end,
      'repo:promote: opts.branch must be a branch, got "refs/tags/v1"')
    assert.has_error(function() repo:promote("x", 5) end, "repo:promote: opts must be a table, got 5")
    assert.has_error(function() repo:worktree_of(3) end, "repo:worktree_of: rev must be a string, got 3")
    assert.has_error(function() repo:set_ref() end, "repo:set_ref: opts.commit must be a string, got nil")
    repo:close()
    assert.has_error(function() repo:head() end, "beat.git: repository is closed")
  end)
end)
