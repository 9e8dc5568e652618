-- train.lua: fits a one-hidden-layer tanh network to noisy samples of
-- sin(3x) with SGD and momentum, for a fixed budget of epochs, and prints
-- the validation loss (mean squared error) as `val_loss: X`.
-- Deterministic: the data and the initial weights come from a fixed seed.
-- Run: lua5.4 train.lua   (reads config.lua from the current directory)
local cfg = {}
assert(loadfile("config.lua", "t", cfg))()
local lr, mom = assert(cfg.learning_rate), assert(cfg.momentum)
local H, scale = math.tointeger(assert(cfg.hidden)), assert(cfg.init_scale)
local EPOCHS = 60

local seed = 12345
local function rand() -- a small LCG, the same on every Lua
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 2147483648
end
local function gauss() return math.sqrt(-2 * math.log(rand() + 1e-12)) * math.cos(2 * math.pi * rand()) end

local function sample(n)
  local xs, ys = {}, {}
  for i = 1, n do
    local x = rand() * 2 - 1
    xs[i], ys[i] = x, math.sin(3 * x) + 0.05 * gauss()
  end
  return xs, ys
end
local train_x, train_y = sample(160)
local val_x, val_y = sample(80)

local w1, b1, w2, b2 = {}, {}, {}, 0
local vw1, vb1, vw2, vb2 = {}, {}, {}, 0
for j = 1, H do
  w1[j], b1[j], w2[j] = gauss() * scale, gauss() * scale * 0.5, gauss() * scale / math.sqrt(H)
  vw1[j], vb1[j], vw2[j] = 0, 0, 0
end

local h = {}
local function forward(x)
  local y = b2
  for j = 1, H do
    h[j] = math.tanh(w1[j] * x + b1[j])
    y = y + w2[j] * h[j]
  end
  return y
end

local function loss(xs, ys)
  local s = 0
  for i = 1, #xs do
    local d = forward(xs[i]) - ys[i]
    s = s + d * d
  end
  local l = s / #xs
  if l ~= l or l > 1e6 then return 1e6 end -- diverged
  return l
end

for _ = 1, EPOCHS do
  for i = 1, #train_x do
    local x = train_x[i]
    local g = 2 * (forward(x) - train_y[i])
    for j = 1, H do
      local gh = g * w2[j] * (1 - h[j] * h[j])
      vw2[j] = mom * vw2[j] - lr * g * h[j]
      vw1[j] = mom * vw1[j] - lr * gh * x
      vb1[j] = mom * vb1[j] - lr * gh
      w2[j], w1[j], b1[j] = w2[j] + vw2[j], w1[j] + vw1[j], b1[j] + vb1[j]
    end
    vb2 = mom * vb2 - lr * g
    b2 = b2 + vb2
  end
end

print(("params: %d"):format(3 * H + 1))
print(("train_loss: %.6f"):format(loss(train_x, train_y)))
print(("val_loss: %.6f"):format(loss(val_x, val_y)))
