local beat = require "beat"
local journal = require "beat.journal"
local H = require "tests.helpers"

describe("beat.journal", function()
  it("gives two runs started in the same millisecond different ids that sort by time", function()
    local root = H.tmpdir()
    local a = assert(journal.create(root, 1800000000.123))
    local b = assert(journal.create(root, 1800000000.123))
    assert.are_not.equal(a.id, b.id)
    assert.is_true(a.id < b.id)
    assert.equal(8, #a.id)
    local c = assert(journal.create(root, 1800000100))
    assert.is_true(b.id < c.id)
  end)

  it("skips an id that the reserve hook says another run has, and leaves no directory for it", function()
    local root = H.tmpdir()
    local asked = {}
    local taken = journal.new_id(1800000000.123)
    local j = assert(journal.create(root, 1800000000.123, { reserve = function(id)
      asked[#asked + 1] = id
      return id ~= taken
    end }))
    assert.equal(taken, asked[1])
    assert.are_not.equal(taken, j.id)
    assert.is_true(taken < j.id)
    assert.same({ j.id }, beat.fs.list(root))
    local none, err = journal.create(root, 1800000000.123, { reserve = function() return nil, "no git" end })
    assert.is_nil(none)
    assert.equal("no git", err)
    assert.same({ j.id }, beat.fs.list(root))
  end)

  it("writes valid UTF-8 JSON lines, redacting secrets", function()
    local j = assert(journal.create(H.tmpdir(), beat.now()))
    j:write("agent", { text = ("a" .. ("é"):rep(1500)):sub(1, 2000), raw = "bin\255\254ary",
      config = { api_key = "sk-123", env = { TOKEN = "t", OTHER = "o" }, model = "m" } })
    local data = H.read(j.path)
    assert.is_truthy(utf8.len(data))
    local rec = beat.json.decode(data)
    assert.equal("[redacted]", rec.config.api_key)
    assert.equal("[redacted]", rec.config.env.OTHER)
    assert.equal("m", rec.config.model)
    assert.equal("bin\u{FFFD}\u{FFFD}ary", rec.raw)
    assert.is_nil(data:find("sk%-123"))
  end)

  it("redacts secret values and credential fields, not names that merely contain a word", function()
    local j = assert(journal.create(H.tmpdir(), beat.now()))
    j:write("agent", { tokens = { input = 5, output = 7 }, author = "Ann Example", auth_token = "abc",
      text = "use GITHUB_TOKEN=ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R now",
      argv = { "tool", "--password", "pw", "{prompt}" } })
    j:row { iteration = 1, status = "crash", summary = "agent failed: bad key sk-ant-api03-Zq3xT9vLp2Rk8WmN4bHc" }
    local rec = j:records()[1]
    assert.same({ input = 5, output = 7 }, rec.tokens)
    assert.equal("Ann Example", rec.author)
    assert.equal("[redacted]", rec.auth_token)
    assert.equal("use GITHUB_TOKEN=[redacted] now", rec.text)
    assert.same({ "tool", "--password", "[redacted]", "{prompt}" }, rec.argv)
    local tsv = H.read(j.tsv)
    assert.matches("agent failed: bad key %[redacted%]\n$", tsv)
  end)

  it("reads records back and reports a torn last line", function()
    local j = assert(journal.create(H.tmpdir(), beat.now()))
    j:write("one", { n = 1 })
    j:write("two", { n = 2 })
    beat.fs.append(j.path, '{"event":"thr')
    local recs, warning = j:records()
    assert.equal(2, #recs)
    assert.equal("two", recs[2].event)
    assert.matches("line 3", warning)
  end)
end)

describe("a loop's journal", function()
  it("costs one fsync per iteration (progress records go to disk with the decision, whose fsync runs behind the loop) and two per run", function()
    -- fsyncs of a 2- and a 5-iteration run: what a run costs once (run_start,
    -- run_end, the run's files and its index entry) cancels out
    local function fsyncs(iterations)
      local dir = H.git_repo { ["bug.txt"] = "broken\n" }
      local trace, r = H.strace("execve,fsync,fdatasync", { H.bin, "loop", "fix", "--until", "grep -q fixed bug.txt",
        "-a", "sh " .. H.root .. "/tests/fixtures/loop/fix-on-3.sh", "--max-iterations", tostring(iterations), "-q" },
        { cwd = dir, env = { FIX_AT = "99" } })
      if not trace then return nil, r end
      assert.equal(1, r.code, r.stderr)   -- the check never passes: the run fails at its limit
      -- beat's own thread (the first execve's) and the one the decisions'
      -- fsyncs run on, behind the loop
      -- (strace pads a pid to five columns: after a wrap-around pids are shorter)
      local main, own, behind = nil, 0, 0
      for pid, call in trace:gmatch("%f[^\n\0](%d+)%s+(%a+)%(") do
        if call == "execve" then
          main = main or pid
        elseif pid == main then
          own = own + 1
        else
          behind = behind + 1
        end
      end
      return own + behind, dir, own, behind
    end
    local two, why, own2, behind2 = fsyncs(2)
    if not two then pending(why) return end
    local five, dir, own5, behind5 = fsyncs(5)
    assert.equal(3, five - two, ("%d fsyncs for 2 iterations, %d for 5"):format(two, five))
    -- and once per run, only run_start and run_end: 2 + the check before any change + 2 iterations
    assert.equal(5, two, ("%d fsyncs for a run of 2 iterations"):format(two))
    -- the decisions' on a thread of their own, while the loop goes on; run_start's and run_end's in beat's
    assert.same({ 2, 3, 2, 6 }, { own2, behind2, own5, behind5 })
    local recs = H.last_run(dir)
    local events = {}
    for _, rec in ipairs(recs) do
      if rec.event ~= "phase" and rec.event ~= "process" then events[#events + 1] = rec.event end
    end
    assert.equal("run_start check decision agent check decision", table.concat(events, " ", 1, 6))
    assert.equal(5, #H.events(recs, "agent"))
    assert.equal(6, #H.events(recs, "decision"))
    assert.equal("run_end", events[#events])
  end)
end)
