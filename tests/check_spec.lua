-- beat.check: one option checker, one message shape for every public function.
local check = require "beat.check"

local SCHEMA = {
  runs = "posint",
  label = "nonempty",
  stdin = "string|boolean",
  aggregate = { enum = { "median", "mean", "min" } },
  level = { "number", range = "(0, 0.5)" },
  timeout = "duration",
  score = { "function", what = "an extractor such as beat.score.last_number" },
}

-- A public function as a module would write it.
local function api(opts)
  opts = check.options("beat.api", opts, SCHEMA)
  return opts
end

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return (tostring(err):gsub("^.-:%d+: ", ""))
end

describe("beat.check", function()
  it("names the function, the option, what it must be and what it got", function()
    assert.equal("beat.api: opts.runs must be a positive integer, got 0", message(api, { runs = 0 }))
    assert.equal("beat.api: opts.runs must be a positive integer, got 1.5", message(api, { runs = 1.5 }))
    assert.equal('beat.api: opts.label must be a non-empty string, got ""', message(api, { label = "" }))
    assert.equal("beat.api: opts.score must be an extractor such as beat.score.last_number, got 3",
      message(api, { score = 3 }))
  end)

  it("checks unions, enums and number ranges", function()
    assert.same({ stdin = true }, api { stdin = true })
    assert.equal("beat.api: opts.stdin must be a string or a boolean, got {1, 2}",
      message(api, { stdin = { 1, 2 } }))
    assert.equal('beat.api: opts.aggregate must be "median", "mean" or "min", got "avg"',
      message(api, { aggregate = "avg" }))
    assert.equal("beat.api: opts.level must be a number in (0, 0.5), got 0.5", message(api, { level = 0.5 }))
    assert.equal(0.05, api({ level = 0.05 }).level)
    assert.equal("beat.api: opts.level must be a number in (0, 0.5), got nan", message(api, { level = 0 / 0 }))
  end)

  it("accepts durations as beat.duration reads them", function()
    assert.equal("1m30s", api({ timeout = "1m30s" }).timeout)
    assert.equal(2.5, api({ timeout = 2.5 }).timeout)
    assert.equal('beat.api: opts.timeout must be a duration like "90s" or a number of seconds, got "soon"',
      message(api, { timeout = "soon" }))
    assert.equal('beat.api: opts.timeout must be a duration like "90s" or a number of seconds, got -1',
      message(api, { timeout = -1 }))
  end)

  it("rejects an unknown option, naming it, unless lenient", function()
    assert.equal("beat.api: unknown option opts.run", message(api, { run = 3 }))
    assert.equal('beat.api: unknown option opts["a b"]', message(api, { ["a b"] = 3 }))
    local opts = { runs = 1, extra = "x" }
    assert.equal(opts, check.options("beat.api", opts, SCHEMA, { lenient = true }))
  end)

  it("treats nil options as an empty table and rejects anything else that is not a table", function()
    assert.same({}, api(nil))
    assert.equal('beat.api: opts must be a table, got "x"', message(api, "x"))
  end)

  it("rejects a missing required option with the same shape", function()
    local function need(opts) check.options("beat.need", opts, { cmd = { "string|table", required = true } }) end
    assert.equal("beat.need: opts.cmd must be a string or a table, got nil", message(need, {}))
  end)

  it("names nested tables by the prefix it is given", function()
    local function each(list)
      for i, p in ipairs(list) do
        check.options("beat.tune", p, { file = { "nonempty", required = true } },
          { prefix = ("opts.params[%d]"):format(i), level = 3 })
      end
    end
    assert.equal("beat.tune: opts.params[2].file must be a non-empty string, got 7",
      message(each, { { file = "a" }, { file = 7 } }))
    assert.equal("beat.tune: unknown option opts.params[1].name2",
      message(each, { { file = "a", name2 = 1 } }))
  end)

  it("checks a single value and raises in the same shape for custom rules", function()
    assert.equal(3, check.value("beat.x", "cmd", 3, "integer"))
    assert.is_nil(check.value("beat.x", "cmd", nil, "integer"))
    assert.equal("beat.x: cmd must be an integer, got \"3\"", message(check.value, "beat.x", "cmd", "3", "integer"))
    assert.equal("beat.x: opts.key must be a path, got \"a\\nb\"", message(check.fail, "beat.x", "opts.key", "a path", "a\nb"))
    assert.equal("beat.x: give either a or b", message(check.error, "beat.x", "give either a or b"))
  end)

  it("blames the line that called the checked function", function()
    local line
    local ok, err = pcall(function()
      line = debug.getinfo(1, "l").currentline + 1
      api { runs = -1 }
    end)
    assert.is_false(ok)
    assert.matches("check_spec%.lua:" .. line .. ": beat%.api: opts%.runs", err)
  end)

  it("shows values briefly in messages", function()
    assert.equal('"x"', check.show("x"))
    assert.equal("{0, 1.5}", check.show({ 0, 1.5 }))
    assert.equal('{a = 1, b = "x"}', check.show({ b = "x", a = 1 }))
    assert.equal("a function", check.show(print))
    assert.equal('"' .. ("y"):rep(60) .. '…"', check.show(("y"):rep(100)))
  end)

  it("refuses a schema with an unknown kind, so a typo in a module cannot pass silently", function()
    assert.has_error(function() check.options("beat.x", { a = 1 }, { a = "posinteger" }) end,
      "beat.check: unknown kind posinteger")
  end)
end)
