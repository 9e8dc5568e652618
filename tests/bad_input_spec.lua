-- Bad input: one line on stderr naming the input, exit 2, and nothing
-- written — no .beat/runs/*, no refs/beat/* — whatever the input.
local beat = require "beat"
local H = require "tests.helpers"

local SET = "sh " .. H.root .. "/tests/fixtures/loop/set-value.sh"
local EVAL = "cat value.txt"

-- Asserts that nothing of a run was written in dir.
local function nothing_written(dir, git, what)
  local runs = beat.fs.list(dir .. "/.beat/runs") or {}
  assert.same({}, runs, what .. ": a run directory was created")
  assert.equal("", git("for-each-ref", "refs/beat/"), what .. ": refs/beat/ was written")
end

local function one_line(r, pattern, what)
  assert.equal(2, r.code, what .. ": " .. r.stdout .. r.stderr)
  assert.matches("^beat: [^\n]+\n$", r.stderr, what)
  assert.matches(pattern, r.stderr, what)
  assert.equal("", r.stdout, what)
end

describe("bad input", function()
  local cases = {
    { "--max-cost -1", { "--eval", EVAL, "--max-cost", "-1" }, "%-%-max%-cost must be >= 0, got '%-1'" },
    { "--min-delta -5", { "--eval", EVAL, "--min-delta", "-5" }, "%-%-min%-delta must be >= 0, got '%-5'" },
    { "--min-rel-delta -0.5", { "--eval", EVAL, "--min-rel-delta", "-0.5" },
      "%-%-min%-rel%-delta must be a fraction >= 0 and < 1" },
    { "--min-rel-delta 1", { "--eval", EVAL, "--min-rel-delta", "1" }, "%-%-min%-rel%-delta must be a fraction" },
    { '--metric ""', { "--eval", EVAL, "--metric", "" }, "%-%-metric needs a value, got an empty string" },
    { '--metric "a b"', { "--eval", EVAL, "--metric", "a b" }, "%-%-metric must be a metric name" },
    { '-a ""', { "--eval", EVAL, "-a", "" }, "%-a needs a value, got an empty string" },
    { '--agent " "', { "--eval", EVAL, "--agent", " " }, "%-%-agent needs a value" },
    { '--until ""', { "--until", "" }, "%-%-until needs a value, got an empty string" },
    { '--eval ""', { "--eval", "" }, "%-%-eval needs a value, got an empty string" },
    { '--guard ""', { "--eval", EVAL, "--guard", "" }, "%-%-guard needs a value, got an empty string" },
    { "--commit-to bad..name", { "--eval", EVAL, "--commit-to", "bad..name" },
      "%-%-commit%-to must be a valid git branch name %(no '%.%.'%), got \"bad%.%.name\"" },
    { "--commit-to x.lock", { "--eval", EVAL, "--commit-to", "x.lock" }, "%-%-commit%-to must be a valid git branch" },
    { "--commit-to '-x'", { "--eval", EVAL, "--commit-to=-x" }, "%-%-commit%-to must be a valid git branch" },
    { "--commit-to 'a b'", { "--eval", EVAL, "--commit-to", "a b" }, "%-%-commit%-to must be a valid git branch" },
    { "--agent-timeout 0", { "--eval", EVAL, "--agent-timeout", "0" }, "%-%-agent%-timeout must be longer than 0, got '0'" },
    { "--eval-timeout soon", { "--eval", EVAL, "--eval-timeout", "soon" }, "%-%-eval%-timeout must be a duration" },
    { "--max-duration 0", { "--eval", EVAL, "--max-duration", "0" }, "%-%-max%-duration must be longer than 0" },
    { "--keep-last with --eval", { "--eval", EVAL, "--keep-last" }, "%-%-keep%-last needs %-%-until" },
  }
  for _, c in ipairs(cases) do
    it(("beat loop %s exits 2 with one line and writes nothing"):format(c[1]), function()
      local dir, git = H.git_repo { ["value.txt"] = "100\n" }
      local args = { "lower it", "-a", SET, "--max-iterations", "1" }
      for _, a in ipairs(c[2]) do args[#args + 1] = a end
      local r = H.loop(dir, args, { VALUES = "90" })
      one_line(r, c[3], c[1])
      nothing_written(dir, git, c[1])
      assert.equal("100\n", H.read(dir .. "/value.txt"))
    end)
  end

  it("beat loop with .beat a regular file exits 2 with one line and writes nothing", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    H.write(dir .. "/.beat", "not a directory\n")
    local r = H.loop(dir, { "lower it", "--eval", EVAL, "-a", SET }, { VALUES = "90" })
    one_line(r, "%.beat exists and is not a directory", ".beat file")
    assert.equal("", git("for-each-ref", "refs/beat/"))
    assert.equal("not a directory\n", H.read(dir .. "/.beat"))
    assert.equal("100\n", H.read(dir .. "/value.txt"))
  end)

  it("beat loop started inside .git exits 2 naming the work tree, and writes nothing", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local marker = H.tmpdir() .. "/agent-ran"
    for _, sub in ipairs { ".git", ".git/refs" } do
      local r = H.loop(dir .. "/" .. sub, { "lower it", "--eval", EVAL, "-a", "touch " .. marker })
      one_line(r, "inside the git directory .*: run beat in " .. dir:gsub("%p", "%%%0") .. "\n", sub)
      nothing_written(dir, git, sub)
      assert.is_false(beat.fs.exists(marker))
      assert.is_false(beat.fs.exists(dir .. "/.git/.beat"))
    end
  end)

  it("beat loop in a subdirectory of the work tree still runs there", function()
    local dir = H.git_repo { ["sub/value.txt"] = "100\n" }
    local r = H.loop(dir .. "/sub", { "lower it", "--eval", EVAL, "-a", SET, "--max-iterations", "1" },
      { VALUES = "90" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("90\n", H.read(dir .. "/sub/value.txt"))
    assert.is_true(beat.fs.is_dir(dir .. "/.beat/runs"))
  end)

  it("beat run DIR exits 2 with one line", function()
    local dir = H.tmpdir()
    local r = H.beat { "run", dir }
    one_line(r, "run: " .. dir:gsub("%p", "%%%0") .. " is a directory", "run DIR")
  end)

  for _, c in ipairs { { "256", 1 }, { "-1", 1 }, { "1.5", 1 }, { "3", 3 }, { "0", 0 } } do
    it(("a recipe returning %s exits %d"):format(c[1], c[2]), function()
      local r = H.beat { "run", H.recipe(H.tmpdir(), "return " .. c[1]) }
      assert.equal(c[2], r.code, r.stderr)
      if c[2] == 1 then
        assert.matches("^beat: the recipe returned " .. c[1]:gsub("%p", "%%%0") .. ", which is not an exit status", r.stderr)
      else
        assert.equal("", r.stderr)
      end
    end)
  end

  it("recipes get the same checks as errors before anything is written", function()
    local dir, git = H.git_repo { ["value.txt"] = "100\n" }
    local cases = {
      { 'strategy = "optimize", eval = ""', 'opts.eval must be a command, got ""' },
      { 'strategy = "optimize", eval = {}', 'opts.eval must be a command %(an argv list with a program first%), got {}' },
      { 'strategy = "optimize", eval = "cat value.txt", guard = {"true", " "}', 'opts.guard%[2%] must be a command, got " "' },
      { 'strategy = "retry", check = ""', 'opts.check must be a command, got ""' },
      { 'strategy = "retry", check = "true", agent_timeout = 0', "opts.agent_timeout must be longer than 0, got 0" },
      { 'strategy = "retry", check = "true", max_cost_usd = -1', "opts.max_cost_usd must be a finite number >= 0, got %-1" },
      { 'strategy = "retry", check = "true", commit_to = "a..b"', "opts.commit_to must be a valid git branch name" },
      { 'strategy = "retry", check = "true", max_iterations = 1.5', "opts.max_iterations must be an integer >= 0 %(0: no limit%), got 1.5" },
      { 'strategy = "retry", check = "true", max_no_progress = 0', "opts.max_no_progress must be a positive integer, got 0" },
      { 'strategy = "retry", check = "true", listeners = {1}', "opts.listeners must be a list of functions, got {1}" },
      { 'strategy = "retry", check = "true", bogus = 1', "unknown option opts.bogus" },
    }
    for _, c in ipairs(cases) do
      local recipe = H.recipe(H.tmpdir(), ([[
        local beat = require "beat"
        local o = { cwd = %q, prompt = "p", agent = beat.agent.fn(function() end), %s }
        local name = o.strategy; o.strategy = nil
        return (beat.strategy(name)(o))
      ]]):format(dir, c[1]))
      local r = H.beat { "run", recipe }
      assert.equal(1, r.code, c[1])
      assert.matches("recipe%.lua:4: beat%.strategy%(\"%a+\"%): " .. c[2], r.stderr, c[1])
      nothing_written(dir, git, c[1])
    end
  end)

  it("counts a negative, NaN or infinite agent cost as unknown, so --max-cost still trips", function()
    local dir = H.git_repo { ["bug.txt"] = "broken\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local beat = require "beat"
      local costs = { -5, 0/0, math.huge, 0.6, 0.6, 0.6 }
      return (beat.strategy("retry") {
        cwd = %q, prompt = "fix", check = "grep -q fixed bug.txt", max_cost_usd = 1.0,
        max_iterations = 6, max_consecutive_failures = 9,
        agent = beat.agent.fn(function(ctx)
          local f = io.open(ctx.cwd .. "/attempt.txt", "w"); f:write(ctx.iteration); f:close()
          return { cost_usd = costs[ctx.iteration] }
        end),
      })
    ]]):format(dir))
    local r = H.beat { "run", recipe }
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("cost budget of %$1%.00 reached %(%$1%.20 spent%)", r.stdout)
    local recs = H.last_run(dir)
    assert.equal(5, #H.events(recs, "agent"))
    local notes = H.events(recs, "note")
    assert.equal(3, #notes)
    assert.matches("reported a cost of %-5; counted as unknown", notes[1].note)
  end)
end)
