-- Hyperparameters of train.lua. The demo's tune agent edits these lines.
learning_rate = 0.003
momentum = 0.0
hidden = 4
init_scale = 1.0
