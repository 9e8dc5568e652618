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
    local j = assert(journal.create(root, 1800000000.123, function(id)
      asked[#asked + 1] = id
      return id ~= taken
    end))
    assert.equal(taken, asked[1])
    assert.are_not.equal(taken, j.id)
    assert.is_true(taken < j.id)
    assert.same({ j.id }, beat.fs.list(root))
    local none, err = journal.create(root, 1800000000.123, function() return nil, "no git" end)
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
