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
end)
