local beat = require "beat"
local H = require "tests.helpers"

describe("beat.fs", function()
  it("writes atomically, appends, and reads back", function()
    local dir = H.tmpdir()
    local path = dir .. "/f.txt"
    assert.is_true(beat.fs.write(path, "one\n"))
    assert.is_true(beat.fs.write(path, "two\n"))
    assert.equal("two\n", beat.fs.read(path))
    assert.same({ "f.txt" }, beat.fs.list(dir))      -- no temp file left behind
    assert.is_true(beat.fs.append(path, "three\n", true))
    assert.equal("two\nthree\n", beat.fs.read(path))
    local ok, err = beat.fs.write(dir .. "/missing/f.txt", "x")
    assert.is_nil(ok)
    assert.matches("missing/f.txt", err)
  end)

  it("appends with the fsync behind (\"later\"), and reports a failed one once, before the next durable write", function()
    local path = H.tmpdir() .. "/j.jsonl"
    local stamp, size = beat.fs.append(path, "one\n", "later", true)
    assert.equal("string", type(stamp))
    assert.equal(4, size)
    assert.equal("one\n", beat.fs.read(path))             -- written at once, synced behind
    assert.is_true(beat.fs.settle())
    -- /dev/null takes the write but refuses fsync (EINVAL): the failure
    -- comes back from settle, once
    assert.is_true(beat.fs.append("/dev/null", "x", "later"))
    local ok, err, code = beat.fs.settle()
    assert.is_nil(ok)
    assert.equal("/dev/null: Invalid argument", err)
    assert.equal(22, code)                                    -- EINVAL
    assert.is_true(beat.fs.settle())
    -- or from the next durable append, which then writes nothing
    assert.is_true(beat.fs.append("/dev/null", "x", "later"))
    ok, err = beat.fs.append(path, "two\n", true)
    assert.is_nil(ok)
    assert.equal("/dev/null: Invalid argument", err)
    assert.equal("one\n", beat.fs.read(path))
    assert.is_true(beat.fs.append(path, "two\n", true))      -- reported once
    assert.equal("one\ntwo\n", beat.fs.read(path))
    -- a write that is not durable does not wait for it
    assert.is_true(beat.fs.append("/dev/null", "x", "later"))
    assert.is_true(beat.fs.append(path, "three\n", false))
    assert.is_nil((beat.fs.settle()))
    assert.error_matches(function() beat.fs.append(path, "x", "soon") end, 'must be a boolean or "later"')
    assert.error_matches(function() beat.fs.append(path, "x", 1) end, 'must be a boolean or "later"')
    assert.equal("one\ntwo\nthree\n", beat.fs.read(path))   -- neither wrote
  end)

  it("writes atomically without fsync when asked, and no temp file stays", function()
    local dir = H.tmpdir()
    local path = dir .. "/f.txt"
    assert.is_true(beat.fs.write(path, "one\n", false))
    assert.is_true(beat.fs.write(path, "two\n", false))
    assert.equal("two\n", beat.fs.read(path))
    assert.same({ "f.txt" }, beat.fs.list(dir))
  end)

  it("stamps a file so that any write changes the stamp, even one of the same size right after a mark", function()
    local dir = H.tmpdir()
    local path = dir .. "/j.jsonl"
    local s0, size0 = beat.fs.append(path, "0123456789\n", false, true)
    assert.equal(11, size0)
    assert.equal(s0, beat.fs.stamp(path))
    local st = beat.fs.stat(path)
    assert.equal(0, st.mtime % 1)                                 -- the mark: a whole second,
    assert.is_true(st.mtime <= os.time() - 1)                     -- in the past
    -- the same size, the same inode, at once: only the mtime tells
    local f = assert(io.open(path, "r+b"))
    f:write("X")
    f:close()
    assert.equal(11, beat.fs.stat(path).size)
    assert.not_equal(s0, beat.fs.stamp(path))
    local s1 = beat.fs.stamp(path, true)
    assert.equal(s1, beat.fs.stamp(path))
    assert.is_nil(beat.fs.stamp(dir .. "/missing"))
  end)

  it("keeps a memory file: read and write like io's, closed by close or the collector, on no disk", function()
    local f = assert(beat.fs.memfile())
    assert.equal("file", io.type(f))
    assert.is_truthy(f:write("one\n", "two\n"))
    assert.equal(0, f:seek("set"))
    assert.equal("one\ntwo\n", f:read("a"))
    f:seek("end")
    f:write("three\n")
    f:seek("set", 4)
    assert.equal("two\nthree\n", f:read("a"))
    -- not a file of any directory: the fd is a memfd (named "beat-copy")
    local function copies()
      local r = beat.exec { "sh", "-c", ("ls -l /proc/%d/fd | grep -c beat-copy || true"):format(beat.pid()) }
      return tonumber(r.stdout)
    end
    local r = beat.exec { "sh", "-c", ("ls -l /proc/%d/fd | grep beat-copy"):format(beat.pid()) }
    assert.matches("/memfd:beat%-copy", r.stdout)
    assert.equal(1, copies())
    assert.is_true(f:close())
    assert.equal("closed file", io.type(f))
    assert.equal(0, copies())
    assert.has_error(function() f:read("a") end)
    for _ = 1, 100 do beat.fs.memfile() end  -- dropped ones are closed by the collector
    collectgarbage() collectgarbage()
    assert.equal(0, copies())
  end)

  it("makes directories, tells them apart, lists and removes trees", function()
    local dir = H.tmpdir()
    assert.is_true(beat.fs.mkdir_p(dir .. "/a/b/c"))
    assert.is_true(beat.fs.mkdir_p(dir .. "/a/b/c"))          -- already there: fine
    local ok, _, code = beat.fs.mkdir(dir .. "/a")
    assert.is_nil(ok)
    assert.equal(17, code)                                     -- EEXIST: never "created twice"
    H.write(dir .. "/a/b/file", "x")
    assert.is_true(beat.fs.is_dir(dir .. "/a/b"))
    assert.is_false(beat.fs.is_dir(dir .. "/a/b/file"))
    assert.same({ "c", "file" }, beat.fs.list(dir .. "/a/b"))
    assert.is_nil(beat.fs.mkdir_p(dir .. "/a/b/file/sub"))
    os.execute(("ln -s /etc %s/a/link"):format(dir))
    assert.is_true(beat.fs.rm_rf(dir .. "/a"))
    assert.is_false(beat.fs.exists(dir .. "/a"))
    assert.is_true(beat.fs.exists("/etc/passwd"))              -- links are removed, not followed
    assert.is_true(beat.fs.rm_rf(dir .. "/never-existed"))
  end)

  it("locks a file for one holder at a time, records the holder, and lets go on release or death", function()
    local dir = H.tmpdir()
    local path = dir .. "/run.lock"
    local lock = assert(beat.fs.lock(path, "123 first\n"))
    assert.is_true(lock:held())
    assert.equal("123 first\n", beat.fs.read(path))
    local none, err, code = beat.fs.lock(path, "456 second\n")
    assert.is_nil(none)
    assert.equal(beat.fs.errno.EWOULDBLOCK, code)
    assert.matches("run.lock", err, 1, true)
    assert.equal("123 first\n", beat.fs.read(path))           -- the refused one wrote nothing
    lock:release()
    lock:release()                                             -- idempotent
    assert.is_false(lock:held())
    do
      local l2 <close> = assert(beat.fs.lock(path, "456 second\n"))
      assert.equal("456 second\n", beat.fs.read(path))
    end
    -- a holder killed with -9 leaves no stale lock
    local script = dir .. "/hold.lua"
    H.write(script, ([[
      local l = assert(require("beat.fs").lock(%q, "x\n"))
      require("beat").sleep(60)
    ]]):format(path))
    local proc = assert(beat.spawn({ H.bin, "run", script }))
    local deadline = beat.clock() + 10
    while beat.fs.read(path) ~= "x\n" and beat.clock() < deadline do beat.sleep(0.05) end
    assert.is_nil((beat.fs.lock(path, "y\n")))
    proc:kill("KILL")
    proc:wait()
    assert.truthy(beat.fs.lock(path, "z\n"))
    local bad, berr, bcode = beat.fs.lock(dir .. "/missing/run.lock", "x")
    assert.is_nil(bad)
    assert.equal(beat.fs.errno.ENOENT, bcode)
    assert.matches("missing/run.lock", berr, 1, true)
  end)
end)
