-- beat.score: extractors turn an exec result into a value or a reason a person can read.
local score = require "beat.score"

--- An exec-shaped result: success unless fields say otherwise.
local function run(stdout, fields)
  local r = { code = 0, signal = 0, stdout = stdout, stderr = "", duration = 0.5,
    timed_out = false, truncated = false }
  for k, v in pairs(fields or {}) do r[k] = v end
  return r
end

--- Asserts an extractor's outcome: a value (compared with ==), or a reason (plain substring).
local function expect(case, v, why)
  local label = ("case %q"):format(case.name)
  if case.reason then
    assert.is_nil(v, label .. ": expected a failure, got " .. tostring(v))
    assert.is_string(why, label)
    assert.is_truthy(why:find(case.reason, 1, true),
      ("%s: reason %q does not contain %q"):format(label, tostring(why), case.reason))
  else
    assert.is_nil(why, label .. ": unexpected reason " .. tostring(why))
    assert.equal(case.value, v, label)
  end
end

local TEN_MB_DIGITS = string.rep("1234567890", 1024 * 1024)

-- Byte soup from a fixed LCG: the same every run.
local function binary(n, seed)
  local out, x = {}, seed
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    out[i] = string.char((x >> 16) & 255)
  end
  return table.concat(out)
end

describe("beat.score run checks", function()
  it("fails a timed-out run with the timeout in the reason", function()
    local v, why = score.last_number(run("42\n", { code = 124, timed_out = true, duration = 60.02 }))
    assert.is_nil(v)
    assert.equal("eval timed out after 60s", why)
  end)

  it("quotes the configured timeout from the context rather than the elapsed time", function()
    local _, why = score.exit(run("", { code = 124, timed_out = true, duration = 90.4 }), { timeout = 90 })
    assert.equal("eval timed out after 90s", why)
    _, why = score.exit(run("", { code = 124, timed_out = true, duration = 150.4 }), { timeout = 150 })
    assert.equal("eval timed out after 2m30s", why)
    _, why = score.exit(run("", { code = 124, timed_out = true, duration = 0.21 }), { timeout = 0.2 })
    assert.equal("eval timed out after 0.2s", why)
  end)

  it("fails a run killed by a signal, naming the signal", function()
    local _, why = score.exit(run("", { code = 137, signal = 9 }))
    assert.equal("eval was killed by signal 9 (SIGKILL)", why)
  end)

  it("fails a non-zero exit and quotes the last line of stderr", function()
    local _, why = score.last_number(run("12\n", { code = 1,
      stderr = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'x'\n\n" }))
    assert.equal("eval exited 1 (stderr: ModuleNotFoundError: No module named 'x')", why)
    _, why = score.exit(run("", { code = 2 }))
    assert.equal("eval exited 2", why)
  end)

  it("names the command by ctx.label", function()
    local _, why = score.exit(run("", { code = 3 }), { label = "check" })
    assert.equal("check exited 3", why)
  end)

  it("accepts listed exit codes when asked to", function()
    local ex = score.metric { name = "passed", exit_codes = { 0, 1 } }
    assert.equal(12, ex(run("passed: 12\nfailed: 3\n", { code = 1 })))
    local any = score.regex { pattern = "(%d+) passed", exit_codes = "any" }
    assert.equal(4, any(run("4 passed", { code = 5 })))
    local _, why = ex(run("passed: 12\n", { code = 2 }))
    assert.equal("eval exited 2", why)
  end)

  it("still fails a timed-out run even when every exit code is accepted", function()
    local any = score.metric { name = "x", exit_codes = "any" }
    assert.is_nil((any(run("x=1", { code = 124, timed_out = true, duration = 5 }))))
  end)

  it("raises when handed something that is not a result, with a hint", function()
    assert.has_error(function() score.last_number() end,
      "beat.score: result must be an exec result table (pass the extractor itself, e.g. score = beat.score.last_number), got nil")
  end)

  it("says so when stdout was not captured", function()
    local _, why = score.last_number(run(nil))
    assert.equal("eval's stdout was not captured", why)
  end)
end)

describe("beat.score.exit", function()
  it("returns true for exit 0", function()
    assert.is_true(score.exit(run("")))
  end)
end)

describe("beat.score.duration", function()
  it("returns the run's wall-clock seconds when it succeeded", function()
    assert.equal(0.5, score.duration(run("")))
    assert.is_nil((score.duration(run("", { code = 1 }))))
  end)
end)

describe("beat.score.last_number", function()
  local cases = {
    { name = "plain integer", out = "123\n", value = 123 },
    { name = "negative exponent", out = "-1.5e-3", value = -0.0015 },
    { name = "capital exponent with sign", out = "2.5E+2", value = 250 },
    { name = "unit after a space", out = "123 KB\n", value = 123 },
    { name = "unit glued on", out = "took 12ms", value = 12 },
    { name = "last number of the last line", out = "a 1\nscore: 0.5 (best 0.7)\n", value = 0.7 },
    { name = "leading dot", out = ".5", value = 0.5 },
    { name = "trailing dot ends a sentence", out = "result is 5.", value = 5 },
    { name = "explicit plus", out = "+7", value = 7 },
    { name = "unicode minus", out = "\226\136\146" .. "3", value = -3 },
    { name = "negative zero is zero", out = "-0", value = 0 },
    { name = "negative zero float is zero", out = "-0.0", value = 0 },
    { name = "thousands grouping", out = "1,234.5", value = 1234.5 },
    { name = "several groups", out = "total 1,234,567 bytes", value = 1234567 },
    { name = "commas that are not grouping separate numbers", out = "12,34,56", value = 56 },
    { name = "decimal comma is not supported", out = "3,14", value = 14 },
    { name = "CRLF line endings", out = "1\r\n42\r\n\r\n", value = 42 },
    { name = "trailing blank lines and tabs", out = "value 4\n\n  \t\n", value = 4 },
    { name = "hyphen after a digit is not a sign", out = "1-5", value = 5 },
    { name = "a fraction's last number", out = "tests 45/50", value = 50 },
    { name = "sign after a separator", out = "delta=-5", value = -5 },
    { name = "huge but finite", out = "1e300", value = 1e300 },
    { name = "invalid UTF-8 around a number", out = "\255\254 12 \255", value = 12 },
    { name = "UTF-8 symbols around a number", out = "π ≈ 3.14159", value = 3.14159 },
    { name = "number in the middle of binary garbage line", out = "x\n\1\2 7 \3", value = 7 },
    { name = "empty output", out = "", reason = "eval printed nothing on stdout" },
    { name = "only whitespace", out = " \n\t\r\n  ", reason = "eval printed nothing on stdout" },
    { name = "words only", out = "abc", reason = 'eval printed no number on its last line ("abc")' },
    { name = "earlier lines do not count", out = "42\ndone\n", reason = 'no number on its last line ("done")' },
    { name = "NaN", out = "NaN", reason = "value is NaN" },
    { name = "-nan from printf", out = "loss -nan", reason = "value is NaN" },
    { name = "inf", out = "inf", reason = "value is infinite" },
    { name = "-Infinity", out = "-Infinity", reason = "value is infinite" },
    { name = "overflowing exponent", out = "1e999", reason = "value is infinite (1e999)" },
    { name = "digit inside a word (v2)", out = "v2", reason = "no number on its last line" },
    { name = "digits after letters (abc123)", out = "abc123", reason = "no number on its last line" },
    { name = "digits joined by underscore (x86_64)", out = "x86_64", reason = "no number on its last line" },
    { name = "version string", out = "1.2.3", reason = "no number on its last line" },
    { name = "hex literal", out = "0x1F", reason = "no number on its last line" },
    { name = "digit groups with underscores", out = "1_000", reason = "no number on its last line" },
    { name = "sha256", out = "sha256 ok", reason = "no number on its last line" },
    { name = "1000-digit number", out = string.rep("9", 1000), reason = "number of 1000 characters" },
    { name = "10 MB of digits", out = TEN_MB_DIGITS, reason = "out of range" },
    { name = "10 MB of digits, then a line", out = TEN_MB_DIGITS .. "\nscore 3\n", value = 3 },
    { name = "binary garbage", out = binary(4096, 1) .. "\nend", reason = 'no number on its last line ("end")' },
  }
  for _, case in ipairs(cases) do
    it("reads " .. case.name, function()
      expect(case, score.last_number(run(case.out)))
    end)
  end

  it("returns integers for integral values and floats otherwise", function()
    assert.equal("integer", math.type(score.last_number(run("1e5"))))
    assert.equal("float", math.type(score.last_number(run("0.25"))))
    assert.equal("float", math.type(score.last_number(run("1e20"))))
  end)

  it("cuts a long, binary last line down in its reason", function()
    local _, why = score.last_number(run(string.rep("\255x", 500)))
    assert.is_truthy(utf8.len(why), "reason must be valid UTF-8")
    assert.is_true(#why < 200)
  end)
end)

describe("beat.score.metric", function()
  local val_bpb = score.metric "val_bpb"
  local cases = {
    { name = "autoresearch's colon form", out = "step 10\nval_bpb: 0.9979\n", value = 0.9979 },
    { name = "equals form", out = "val_bpb=1.5", value = 1.5 },
    { name = "spaces around the separator", out = "val_bpb =  2", value = 2 },
    { name = "inline among other pairs", out = "loss=3 val_bpb=0.5 lr=1e-3", value = 0.5 },
    { name = "quoted JSON-style key", out = '{"val_bpb": 0.25}', value = 0.25 },
    { name = "repeated: the last occurrence wins", out = "val_bpb: 1.2\nval_bpb: 1.1\nval_bpb: 0.99\n", value = 0.99 },
    { name = "CRLF", out = "val_bpb: 0.7\r\n", value = 0.7 },
    { name = "a unit after the value", out = "val_bpb: 0.7 bits", value = 0.7 },
    { name = "a longer name is another metric", out = "val_bpb_avg: 5\nval_bpb: 1\nmy_val_bpb: 9", value = 1 },
    { name = "a path-qualified name is another metric", out = "val_bpb: 1\ntrain/val_bpb: 9\nx.val_bpb: 8", value = 1 },
    { name = "a later non-numeric mention does not hide the value", out = "val_bpb: 0.9\nval_bpb: see above\n", value = 0.9 },
    { name = "negative value", out = "val_bpb: -0.5", value = -0.5 },
    { name = "exponent", out = "val_bpb=9.5e-1", value = 0.95 },
    { name = "invalid UTF-8 around it", out = "\255val_bpb: 0.5\254\n", value = 0.5 },
    { name = "only whitespace", out = "  \r\n\t", reason = "metric val_bpb not found" },
    { name = "a value on the next line does not count", out = "val_bpb:\n12 steps\n", reason = "metric val_bpb has no numeric value" },
    { name = "missing", out = "loss: 1\n", reason = "metric val_bpb not found in eval's stdout" },
    { name = "empty output", out = "", reason = "metric val_bpb not found" },
    { name = "present without a number", out = "val_bpb: pending", reason = "metric val_bpb has no numeric value" },
    { name = "NaN", out = "val_bpb: nan", reason = "metric val_bpb is NaN" },
    { name = "last is NaN", out = "val_bpb: 0.9\nval_bpb: NaN", reason = "metric val_bpb is NaN" },
    { name = "infinite", out = "val_bpb=inf", reason = "metric val_bpb is infinite" },
    { name = "name as a suffix of a word", out = "myval_bpb: 3", reason = "not found" },
    { name = "10 MB of digits", out = TEN_MB_DIGITS, reason = "not found" },
    { name = "binary garbage", out = binary(1 << 16, 2), reason = "not found" },
  }
  for _, case in ipairs(cases) do
    it("reads " .. case.name, function()
      expect(case, val_bpb(run(case.out)))
    end)
  end

  it("reads stderr when asked to", function()
    local ex = score.metric { name = "loss", stream = "stderr" }
    assert.equal(0.3, ex(run("loss: 9", { stderr = "loss: 0.3\n" })))
    local both = score.metric { name = "loss", stream = "both" }
    assert.equal(0.3, both(run("loss: 9", { stderr = "loss: 0.3\n" })))
  end)

  it("rejects a malformed name or option at construction, naming the option", function()
    assert.has_error(function() score.metric "a b" end,
      'beat.score.metric: opts.name must be a metric name like "val_bpb", got "a b"')
    assert.has_error(function() score.metric { name = "x", stream = "stdin" } end,
      'beat.score.metric: opts.stream must be "stdout", "stderr" or "both", got "stdin"')
    assert.has_error(function() score.metric { name = "x", exit_code = 1 } end,
      "beat.score.metric: unknown option opts.exit_code")
    assert.has_error(function() score.metric { name = "x", exit_codes = { 0, 1.5 } } end,
      'beat.score.metric: opts.exit_codes must be a list of integers or "any", got {0, 1.5}')
  end)
end)

describe("beat.score.metrics", function()
  it("returns every numeric pair, the last occurrence winning", function()
    local m = assert(score.metrics()(run(
      "step 1 loss=2.0 acc: 0.5\nstep 2 loss=1.5 acc: 0.75\nval/loss = 1.7 eval.acc=0.9 eval-f1: 0.6\n")))
    assert.same({ loss = 1.5, acc = 0.75, ["val/loss"] = 1.7, ["eval.acc"] = 0.9, ["eval-f1"] = 0.6 }, m)
  end)

  it("leaves out NaN, infinite and non-numeric values", function()
    local m = assert(score.metrics()(run("a=1 b=nan c=inf d=hello e: 2")))
    assert.same({ a = 1, e = 2 }, m)
  end)

  it("fails with a reason when there are no pairs", function()
    local v, why = score.metrics()(run("nothing to see\n"))
    assert.is_nil(v)
    assert.equal("eval's stdout has no name: value or name=value metrics", why)
    v, why = score.metrics()(run(TEN_MB_DIGITS))
    assert.is_nil(v)
    assert.is_string(why)
  end)
end)

describe("beat.score.json", function()
  local cases = {
    { name = "a single object", key = "score", out = '{"score": 0.5}', value = 0.5 },
    { name = "nested keys by dotted path", key = "metrics.val.bpb", out = '{"metrics": {"val": {"bpb": 1.25}}}', value = 1.25 },
    { name = "array index (1-based)", key = "runs.2.t", out = '{"runs": [{"t": 1}, {"t": 2}]}', value = 2 },
    { name = "the last object wins", key = "s", out = '{"s": 1}\nlog line\n{"s": 2}\n', value = 2 },
    { name = "trailing garbage after the object", key = "s", out = '{"s": 3} and then some } junk', value = 3 },
    { name = "log text before, with stray quotes and braces", key = "s", out = 'say "hi {\n{"s": 4}\n', value = 4 },
    { name = "braces and quotes inside strings", key = "s", out = '{"t": "a}b\\"{", "s": 5}', value = 5 },
    { name = "pretty-printed", key = "a.b", out = '{\n  "a": {\n    "b": 6\n  }\n}\n', value = 6 },
    { name = "an invalid last object falls back to the one before", key = "s", out = '{"s": 7}\n{"s": oops}\n', value = 7 },
    { name = "boolean values come back as they are", key = "ok", out = '{"ok": true}', value = true },
    { name = "negative zero", key = "s", out = '{"s": -0.0}', value = 0 },
    { name = "no JSON at all", key = "s", out = "plain text", reason = "eval printed no JSON object on stdout" },
    { name = "empty output", key = "s", out = "", reason = "eval printed no JSON object on stdout" },
    { name = "missing key", key = "s", out = '{"t": 1}', reason = "json key s not found in eval's stdout" },
    { name = "missing parent", key = "a.b.c", out = '{"a": {"x": 1}}', reason = "json key a.b.c not found in eval's stdout (no a.b)" },
    { name = "NaN", key = "s", out = '{"s": NaN}', reason = "json key s is NaN" },
    { name = "infinity", key = "s", out = '{"s": -Infinity}', reason = "json key s is infinite" },
    { name = "null", key = "s", out = '{"s": null}', reason = "json key s is null" },
    { name = "a string", key = "s", out = '{"s": "0.5"}', reason = 'json key s is a string ("0.5"), not a number' },
    { name = "a file name given as key", key = "metrics.json", out = '{"a": 1}', reason = 'use beat.score.json{file = "metrics.json"}' },
    { name = "10 MB of digits", key = "s", out = TEN_MB_DIGITS, reason = "no JSON object" },
    { name = "10 MB of opening braces", key = "s", out = string.rep("{", 10 * 1024 * 1024), reason = "no JSON object" },
    { name = "invalid UTF-8 in strings", key = "s", out = '{"n": "\255\254", "s": 8}', value = 8 },
  }
  for _, case in ipairs(cases) do
    it("reads " .. case.name, function()
      expect(case, score.json(case.key)(run(case.out)))
    end)
  end

  it("returns the whole last object without a key", function()
    local obj = assert(score.json()(run('noise\n{"a": 1, "b": {"c": 2}}\n')))
    assert.equal(1, obj.a)
    assert.equal(2, obj.b.c)
  end)

  it("reads a file the eval wrote, relative to ctx.cwd", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    local f = assert(io.open(dir .. "/metrics.json", "w"))
    f:write('{"combined_score": 0.875, "public": {"acc": 0.9}}')
    f:close()
    local ex = score.json { file = "metrics.json", key = "public.acc" }
    assert.equal(0.9, ex(run(""), { cwd = dir }))
    assert.equal(0.875, score.json { file = dir .. "/metrics.json", key = "combined_score" }(run("")))
    local v, why = score.json { file = "absent.json" }(run(""), { cwd = dir })
    assert.is_nil(v)
    assert.is_truthy(why:find("eval's absent.json: cannot read:", 1, true))
    f = assert(io.open(dir .. "/bad.json", "w"))
    f:write("{oops")
    f:close()
    v, why = score.json { file = "bad.json" }(run(""), { cwd = dir })
    assert.is_nil(v)
    assert.is_truthy(why:find("eval's bad.json is not valid JSON", 1, true))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("accepts a list of keys for names that contain dots", function()
    assert.equal(3, score.json { key = { "a.b", "c" } }(run('{"a.b": {"c": 3}}')))
  end)

  it("rejects malformed options, naming them", function()
    assert.has_error(function() score.json { key = "" } end,
      'beat.score.json: opts.key must be a dotted path like "metrics.loss" or a list of keys, got ""')
    assert.has_error(function() score.json { file = 3 } end, "beat.score.json: opts.file must be a file path, got 3")
  end)
end)

describe("beat.score.regex", function()
  local cases = {
    { name = "first capture of the last match", pat = "(%d+) passed", out = "3 passed\n5 passed, 1 failed", value = 5 },
    { name = "whole match without a capture", pat = "%d+%.%d+", out = "took 1.25s", value = 1.25 },
    { name = "capture with a unit", pat = "size: (%S+ %a+)", out = "size: 120 KB", value = 120 },
    { name = "no match", pat = "(%d+) passed", out = "all failed", reason = 'pattern "(%d+) passed" did not match eval\'s stdout' },
    { name = "capture that is not a number", pat = "status: (%a+)", out = "status: ok", reason = 'matched "ok", not a number' },
    { name = "capture that is NaN", pat = "loss (%S+)", out = "loss nan", reason = "not a number (NaN)" },
    { name = "10 MB of digits", pat = "score=(%d+)", out = TEN_MB_DIGITS, reason = "did not match" },
  }
  for _, case in ipairs(cases) do
    it("reads " .. case.name, function()
      expect(case, score.regex(case.pat)(run(case.out)))
    end)
  end

  it("rejects an invalid Lua pattern at construction", function()
    assert.has_error(function() score.regex "[a" end,
      [[beat.score.regex: opts.pattern must be a valid Lua pattern (malformed pattern (missing ']')), got "[a"]])
    assert.has_error(function() score.regex "" end,
      'beat.score.regex: opts.pattern must be a non-empty Lua pattern, got ""')
  end)
end)

describe("beat.score.fn", function()
  it("passes a successful result to the function and returns its value", function()
    local ex = score.fn(function(r) return #r.stdout end)
    assert.equal(3, ex(run("abc")))
  end)

  it("does not call the function for a failed run", function()
    local called = false
    local ex = score.fn(function() called = true; return 1 end)
    local v, why = ex(run("", { code = 1 }))
    assert.is_nil(v)
    assert.equal("eval exited 1", why)
    assert.is_false(called)
  end)

  it("passes on the function's own reason", function()
    local ex = score.fn(function() return nil, "coverage report missing" end)
    assert.same({ nil, "coverage report missing" }, { ex(run("")) })
    local _, why = score.fn(function() end)(run(""))
    assert.equal("score function returned nothing", why)
  end)

  it("rejects NaN and infinities from the function", function()
    assert.same({ nil, "value is NaN" }, { score.fn(function() return 0 / 0 end)(run("")) })
    assert.same({ nil, "value is infinite" }, { score.fn(function() return -math.huge end)(run("")) })
  end)

  it("returns tables of metrics as they are", function()
    local t = score.fn(function() return { a = 1 } end)(run(""))
    assert.same({ a = 1 }, t)
  end)

  it("raises when given something that is not a function", function()
    assert.has_error(function() score.fn(3) end,
      "beat.score.fn: opts must be a function or an options table, got 3")
  end)
end)

describe("beat.score.last_number_in", function()
  it("reads the last line of any text, for use inside beat.score.fn", function()
    local ex = score.fn(function(r) return score.last_number_in(r.stderr, "stderr") end)
    assert.equal(0.5, ex(run("", { stderr = "warming up\nloss 0.5\n" })))
    assert.same({ nil, "stderr is empty" }, { ex(run("", { stderr = "" })) })
    assert.same({ nil, 'stderr has no number on its last line ("ok")' }, { ex(run("", { stderr = "ok" })) })
  end)
end)

describe("beat.score.parse_number", function()
  it("reads one number with an optional unit and nothing else", function()
    assert.equal(12.5, score.parse_number(" 12.5 ms "))
    assert.equal(1234.5, score.parse_number("1,234.5"))
    assert.is_nil((score.parse_number("12 34")))
    assert.is_nil((score.parse_number("abc")))
    assert.same({ nil, "value is NaN" }, { score.parse_number("NaN") })
  end)
end)
