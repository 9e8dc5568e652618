-- beat.protect: files the agent may not change (the eval script, the tests),
-- driven through `beat loop` and checked piece by piece.
local beat = require "beat"
local H = require "tests.helpers"

local CHEAT = "sh " .. H.root .. "/tests/fixtures/loop/cheat-eval.sh"
local TAMPER_TESTS = "sh " .. H.root .. "/tests/fixtures/loop/tamper-tests.sh"
local FIX = "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh"

local function decisions(dir)
  local out = {}
  for _, d in ipairs(H.events(H.last_run(dir), "decision")) do out[#out + 1] = d end
  return out
end

local function statuses(dir)
  local out = {}
  for _, d in ipairs(decisions(dir)) do out[#out + 1] = d.status end
  return out
end

describe("protected paths", function()
  it("rejects an agent that edits the eval script to print 0: tampered, restored, never kept, journaled", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n", ["eval.sh"] = "cat value.txt\n" }
    local log = H.tmpdir() .. "/prompts"
    local r = H.loop(dir, { "lower it", "--eval", "sh eval.sh", "-a", CHEAT, "--max-iterations", "3" },
      { VALUES = "90 x 80", CHEAT_AT = "2", PROMPT_LOG = log })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("protected: eval%.sh %(run by the eval%); an iteration that changes one is rejected", r.stdout)
    assert.same({ "baseline", "keep", "tampered", "keep" }, statuses(dir))
    -- the eval script is as it was, in the work tree and in the best snapshot
    assert.equal("cat value.txt\n", H.read(dir .. "/eval.sh"))
    assert.equal("80\n", H.read(dir .. "/value.txt"))
    local recs, _, id = H.last_run(dir)
    assert.equal("cat value.txt\n", git("show", ("refs/beat/%s/best:eval.sh"):format(id)))
    -- the tampered iteration's snapshot holds the cheat, and is not the best
    local d2 = decisions(dir)[3]
    assert.equal("echo 0\n", git("show", d2.snapshot .. ":eval.sh"))
    assert.matches("it changed eval%.sh, which it may not change %(protected: run by the eval%)", d2.summary)
    local prot = H.events(recs, "protected")
    assert.equal(1, #prot)
    assert.equal(2, prot[1].iteration)
    assert.same({ { path = "eval.sh", status = "modified", glob = "eval.sh", why = "run by the eval" } }, prot[1].files)
    assert.same({ { glob = "eval.sh", why = "run by the eval" } }, H.events(recs, "protect")[1].globs)
    assert.is_nil(r.stdout:match("score 0"))
    -- every prompt names the protected file; the one after the cheat says what happened
    local prompts = {}
    for p in H.read(log):gmatch("(.-)\n===\n") do prompts[#prompts + 1] = p end
    assert.equal(3, #prompts)
    assert.matches("Do not change these files %(they check your work; an attempt that changes one is undone%): eval%.sh%.", prompts[1])
    assert.is_nil(prompts[2]:find("Your previous attempt", 1, true))
    assert.matches("Your previous attempt %(iteration 2%) changed eval%.sh, which you may not change: it was undone%.", prompts[3])
  end)

  it("keeps the cheat with --no-default-protect, which is why the default exists", function()
    local dir = H.git_repo { ["value.txt"] = "100\n", ["eval.sh"] = "cat value.txt\n" }
    local r = H.loop(dir, { "lower it", "--eval", "sh eval.sh", "-a", CHEAT, "--max-iterations", "2",
      "--no-default-protect" }, { VALUES = "90 x", CHEAT_AT = "2" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.is_nil(r.stdout:find("protected:", 1, true))
    assert.same({ "baseline", "keep", "keep" }, statuses(dir))
    assert.equal("echo 0\n", H.read(dir .. "/eval.sh"))
  end)

  it("protects the test directory when the check runs a test runner, and the run fails honestly", function()
    local dir = H.git_repo { ["Makefile"] = "test:\n\tsh tests/check.sh\n",
      ["tests/check.sh"] = "grep -q fixed bug.txt\n", ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix the bug", "--until", "make test", "-a", TAMPER_TESTS, "--max-iterations", "2" },
      { CHEAT_AT = "1" })
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("protected: tests/%*%* %(the check runs make test%), Makefile %(run by the check%)", r.stdout)
    assert.same({ "fail", "tampered", "fail" }, statuses(dir))
    assert.equal("grep -q fixed bug.txt\n", H.read(dir .. "/tests/check.sh"))
    local prot = H.events(H.last_run(dir), "protected")
    assert.equal("tests/check.sh", prot[1].files[1].path)
    assert.equal("tests/**", prot[1].files[1].glob)
  end)

  it("rejects every change to a --protect GLOB, counting each as a failure", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local r = H.loop(dir, { "fix the bug", "--until", "grep -q fixed bug.txt", "-a", FIX,
      "--protect", "attempt.txt", "--protect", "docs/" }, {})
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("protected: %*%*/attempt%.txt %(asked%), docs/%*%* %(asked%)", r.stdout)
    assert.matches("failed: 3 consecutive failures", r.stdout)
    assert.same({ "fail", "tampered", "tampered", "tampered" }, statuses(dir))
    assert.is_nil(beat.fs.stat(dir .. "/attempt.txt"))
  end)

  it("refuses --protect without git with exit 2, and protect = {...} in Lua with git = false", function()
    local dir = H.tmpdir()
    local r = H.loop(dir, { "x", "--until", "true", "-a", FIX, "--no-git", "--protect", "a" })
    assert.equal(2, r.code)
    assert.matches("^beat: loop: %-%-protect needs git", r.stderr)
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      return (beat.strategy("retry"){ cwd = %q, prompt = "x", check = "true", git = false,
        protect = { "a" }, agent = beat.agent.command { argv = { "true" } } })
    ]]):format(dir))
    r = H.beat { "run", recipe }
    assert.equal(1, r.code)
    assert.matches("opts.protect needs git", r.stderr)
  end)
end)

describe("beat.protect", function()
  local protect = require "beat.protect"

  it("names the files a command line runs inside the work tree, not the files it reads", function()
    local root = H.tmpdir()
    for _, f in ipairs { "scripts/measure-bundle.js", "eval.sh", "bench.py", "value.txt", "dist/app.js",
      "tools/score.lua", "Makefile", "pkg/run/__main__.py" } do
      beat.fs.mkdir_p((root .. "/" .. f):match("^(.*)/"))
      H.write(root .. "/" .. f, "x\n")
    end
    beat.fs.mkdir_p(root .. "/tests")
    beat.fs.mkdir_p(root .. "/spec")
    local function globs(cmd, cwd)
      local out = {}
      for _, r in ipairs(protect.command_files(cmd, "the eval", cwd or root, root)) do out[#out + 1] = r.glob end
      return out
    end
    assert.same({ "scripts/measure-bundle.js" }, globs("node scripts/measure-bundle.js"))
    assert.same({}, globs("cat value.txt"))
    assert.same({}, globs("wc -c dist/app.js"))
    assert.same({ "eval.sh" }, globs("FOO=1 timeout 30 sh eval.sh 2>&1 > value.txt"))
    assert.same({ "eval.sh" }, globs("./eval.sh | tail -1"))
    assert.same({ "bench.py", "tools/score.lua" }, globs("python3 -u bench.py && lua5.4 tools/score.lua"))
    assert.same({ "eval.sh" }, globs("bash -c 'cd . && ./eval.sh'"))
    assert.same({ "eval.sh" }, globs({ "sh", "eval.sh" }))
    assert.same({ "pkg/run/__main__.py" }, globs("python3 -m pkg.run"))
    assert.same({ "Makefile" }, globs("make bench"))
    assert.same({ "tests/**", "**/test_*.py", "**/*_test.py", "**/conftest.py" }, globs("python3 -m pytest -q"))
    assert.same({ "tests/**", "spec/**", "**/*.test.*", "**/*.spec.*", "**/__tests__/**" }, globs("npm test"))
    assert.same({ "**/*_test.go", "**/testdata/**" }, globs("go test ./..."))
    assert.same({ "spec/**", "tests/**", "**/*_spec.lua" }, globs("busted"))
    assert.same({ "tests/**" }, globs("cargo test --release"))
    -- from a subdirectory, globs stay relative to the work tree root
    assert.same({ "scripts/measure-bundle.js" }, globs("node measure-bundle.js", root .. "/scripts"))
    assert.same({}, globs("sh /etc/profile"))     -- outside the work tree
  end)

  it("matches globs: * within a segment, ** across segments, classes", function()
    assert.is_true(protect.match("**/test_*.py", "test_a.py"))
    assert.is_true(protect.match("**/test_*.py", "a/b/test_a.py"))
    assert.is_false(protect.match("**/test_*.py", "a/b/mytest_a.py"))
    assert.is_true(protect.match("tests/**", "tests/unit/x.lua"))
    assert.is_false(protect.match("tests/**", "src/tests.lua"))
    assert.is_true(protect.match("src/*.c", "src/a.c"))
    assert.is_false(protect.match("src/*.c", "src/sub/a.c"))
    assert.is_true(protect.match("src/[ab].c", "src/b.c"))
    assert.is_false(protect.match("src/[!ab].c", "src/b.c"))
    assert.is_true(protect.match("a?c.txt", "abc.txt"))
    assert.is_false(protect.match("scripts/m.js", "scripts/m.jsx"))
  end)
end)
