-- beat.agent.tune: the offline proposer edits parameters in files and
-- searches from the scored history.
local beat = require "beat"
local H = require "tests.helpers"
local tune = require "beat.agent.tune"

-- A known function of four parameters of every kind; 0 at x = 3.7,
-- lr = 10^-2.5, layers = 7, opt = "adam". It starts at 43.7.
local function f(v)
  return (v.x - 3.7) ^ 2 + 4 * (math.log(v.lr, 10) + 2.5) ^ 2 + 0.5 * (v.layers - 7) ^ 2
    + (v.opt == "adam" and 0 or 3)
end

local START = 'x = 0.0\nlr = 0.1  # learning rate\nlayers = 1\nopt = "sgd"\n'

local function params()
  return {
    { file = "cfg.py", name = "x", kind = "float", min = -10, max = 10 },
    { file = "cfg.py", name = "lr", kind = "log", min = 1e-5, max = 1 },
    { file = "cfg.py", name = "layers", kind = "int", min = 1, max = 16 },
    { file = "cfg.py", name = "opt", choices = { "sgd", "adam", "rmsprop", "adagrad" } },
  }
end

-- Runs the loop a strategy would: propose, score, keep the best, restore the
-- files to the best after a worse proposal. Returns the best score and values.
local function search(dir, method, seed, budget)
  H.write(dir .. "/cfg.py", START)
  local a = beat.agent.tune { params = params(), seed = seed, method = method }
  local best_text = START
  local best_vals = assert(tune.values(a, dir))
  local best = f(best_vals)
  local history = { { iteration = 0, score = best } }
  for n = 1, budget do
    local r = a:run { prompt = "tune", cwd = dir, iteration = n, history = history }
    assert(r.ok, r.error)
    local vals = assert(tune.values(a, dir))
    local s = f(vals)
    history[#history + 1] = { iteration = n, score = s }
    if s < best then
      best, best_vals, best_text = s, vals, H.read(dir .. "/cfg.py")
    else
      H.write(dir .. "/cfg.py", best_text)
    end
  end
  return best, best_vals
end

describe("beat.agent.tune", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() beat.fs.rm_rf(dir) end)

  it("finds the optimum of a known function within 150 proposals, for every seed", function()
    for seed = 1, 12 do
      local best, v = search(dir, "local", seed, 150)
      assert.is_true(best < 0.5, ("seed %d: best %.4f"):format(seed, best))
      assert.equal("adam", v.opt)
      assert.equal(7, v.layers)
      assert.is_true(math.abs(v.x - 3.7) < 0.71)
    end
  end)

  it("does better than uniform random search with the same budget and seed", function()
    local wins, sum_local, sum_random, seeds = 0, 0, 0, 30
    for seed = 1, seeds do
      local a = search(dir, "local", seed, 60)
      local b = search(dir, "random", seed, 60)
      if a < b then wins = wins + 1 end
      sum_local, sum_random = sum_local + a, sum_random + b
    end
    assert.is_true(wins >= 27, ("tune won %d of %d"):format(wins, seeds))
    assert.is_true(sum_local * 4 < sum_random,
      ("mean best: tune %.3f, random %.3f"):format(sum_local / seeds, sum_random / seeds))
  end)

  it("learns from the optimize strategy's history: value, kept and proposal, direction inferred", function()
    for seed = 1, 3 do
      H.write(dir .. "/cfg.py", START)
      local a = beat.agent.tune { params = params(), seed = seed }
      local best, best_text, history = -f(assert(tune.values(a, dir))), START, {}
      for n = 1, 150 do
        local r = a:run { prompt = "tune", cwd = dir, iteration = n, history = history }
        assert(r.ok, r.error)
        local g = -f(assert(tune.values(a, dir))) -- to maximise
        local kept = g > best
        history[#history + 1] = { iteration = n, status = kept and "keep" or "discard",
          score = { gain = g }, value = g, kept = kept, proposal = r.proposal }
        if kept then best, best_text = g, H.read(dir .. "/cfg.py") else H.write(dir .. "/cfg.py", best_text) end
      end
      assert.is_true(best > -1, ("seed %d: best %.4f"):format(seed, best))
    end
  end)

  it("is deterministic for a seed and history, and differs across seeds", function()
    local function proposals(seed)
      H.write(dir .. "/cfg.py", START)
      local a = beat.agent.tune { params = params(), seed = seed }
      local out, history = {}, { { iteration = 0, score = 43.7 } }
      for n = 1, 5 do
        local r = a:run { cwd = dir, iteration = n, history = history }
        out[n] = r.text
        history[#history + 1] = { iteration = n, score = 50 - n }
      end
      return out
    end
    assert.same(proposals(7), proposals(7))
    assert.not_same(proposals(7), proposals(8))
  end)

  it("edits only the value, in the file's own syntax, and reports what it set", function()
    H.write(dir .. "/train.py", 'LR = 0.01\nlr_decay = 0.5\nname = "lr"\n')
    H.write(dir .. "/cfg.json", '{"batch": 32, "act": "relu"}\n')
    H.write(dir .. "/run.sh", 'exec train --warmup 100 --seed 1\n')
    H.write(dir .. "/cfg.toml", 'mode = fast\n[opt]\nmomentum = 9e-1\n')
    local a = beat.agent.tune { seed = 3, params = {
      { file = "train.py", name = "LR", kind = "log", min = 1e-4, max = 1e-1, format = "%.5f" },
      { file = "cfg.json", name = "batch", kind = "int", min = 8, max = 256 },
      { file = "cfg.json", name = "act", choices = { "relu", "gelu", "tanh" } },
      { file = "run.sh", name = "--warmup", kind = "int", min = 0, max = 1000 },
      { file = "cfg.toml", pattern = "momentum = ([%d.eE+-]+)", id = "momentum", min = 0.5, max = 0.99 },
    } }
    local r = a:run { cwd = dir, iteration = 1, history = {} }
    assert.is_true(r.ok, r.error)
    local p = r.params
    assert.matches("^LR = " .. ("%.5f"):format(p.LR):gsub("%.", "%%.") .. "\nlr_decay = 0%.5\nname = \"lr\"\n$",
      H.read(dir .. "/train.py"))
    assert.equal(('{"batch": %d, "act": "%s"}\n'):format(p.batch, p.act), H.read(dir .. "/cfg.json"))
    assert.equal(("exec train --warmup %d --seed 1\n"):format(p["--warmup"]), H.read(dir .. "/run.sh"))
    assert.equal(("mode = fast\n[opt]\nmomentum = %s\n"):format(("%.6g"):format(p.momentum)),
      H.read(dir .. "/cfg.toml"))
    assert.is_true(p.LR >= 1e-4 and p.LR <= 1e-1)
    assert.is_true(math.type(p.batch) == "integer" and p.batch >= 8 and p.batch <= 256)
    assert.matches("^tune: ", r.text)
    assert.equal(0, r.cost_usd)
  end)

  it("reports a missing file or parameter as ok=false with the reason", function()
    local a = beat.agent.tune { params = { { file = "nope.cfg", name = "x", min = 0, max = 1 } } }
    local r = a:run { cwd = dir, iteration = 1 }
    assert.is_false(r.ok)
    assert.matches("^tune: nope%.cfg: ", r.error)
    H.write(dir .. "/a.cfg", "y = 1\n")
    r = beat.agent.tune { params = { { file = "a.cfg", name = "x", min = 0, max = 1 } } }
      :run { cwd = dir, iteration = 1 }
    assert.is_false(r.ok)
    assert.equal("tune: a.cfg: no value for x found", r.error)
  end)

  it("searches and edits parameter files under plain lua5.4, without beat's runtime", function()
    H.write(dir .. "/cfg.py", START)
    local script = [[
      package.path = LUA .. "/?.lua;" .. LUA .. "/?/init.lua"
      local P, S = require "beat.tune.params", require "beat.tune.search"
      local ps = P.check({ { file = "cfg.py", name = "x", min = -10, max = 10 },
        { file = "cfg.py", name = "opt", choices = { "sgd", "adam" } } }, "t")
      local start = assert(P.read(ps, DIR))
      local v = S.propose(ps, {}, { seed = 1, stream = 1, direction = "minimize", baseline = start })
      assert(P.write(ps, DIR, v))
      local got = assert(P.read(ps, DIR))
      io.write(P.format_value(ps[1], got[1]) == P.format_value(ps[1], v[1]) and got[2] == v[2] and "ok" or "mismatch")
    ]]
    local r = assert(beat.exec({ "lua5.4", "-e", ("LUA, DIR = %q, %q"):format(H.root .. "/lua", dir), "-e", script },
      { timeout = 30 }))
    assert.equal("", r.stderr)
    assert.equal("ok", r.stdout)
    assert.not_equal(START, H.read(dir .. "/cfg.py"))
  end)

  it("rejects bad parameter specs with a message naming the field", function()
    assert.has_error(function() beat.agent.tune {} end,
      "beat.agent.tune: opts.params must be a non-empty list of parameters {file=, name= or pattern=, ...}, got nil")
    assert.has_error(function()
      beat.agent.tune { params = { { file = "a", name = "x", kind = "log", min = 0, max = 1 } } }
    end, "beat.agent.tune: opts.params[1].min must be a number > 0 (a log parameter), got 0")
    assert.has_error(function()
      beat.agent.tune { params = { { file = "a", name = "x", pattern = "x=(%d)", min = 0, max = 1 } } }
    end, "beat.agent.tune: opts.params[1] needs exactly one of name or pattern")
    assert.has_error(function()
      beat.agent.tune { params = { { file = "a", pattern = "x=%d+", min = 0, max = 1 } } }
    end, [[beat.agent.tune: opts.params[1].pattern must be a Lua pattern with one capture, the value, as in 'lr = ([%d.eE+-]+)', got "x=%d+"]])
    assert.has_error(function() beat.agent.tune { params = params(), seed = 1.5 } end,
      "beat.agent.tune: opts.seed must be an integer, got 1.5")
  end)
end)
