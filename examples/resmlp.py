"""A residual MLP with LayerNorm on the spirals: pre-norm blocks h + W₂·relu(W₁·LayerNorm(h)).

Each block adds its output to the stream h, so h feeds two layers (a fan-out) and the
chain rule sums the two paths back into it; `nncompile derive examples/resmlp.py` shows
that sum, and LayerNorm's backward pass step by step and in closed form.
"""
from nncompile import nn

WIDTH, BLOCKS = 32, 2

x = nn.Input(2)
h = nn.Dense(WIDTH)(x)
for _ in range(BLOCKS):
    h = h + nn.Dense(WIDTH)(nn.ReLU()(nn.Dense(WIDTH)(nn.LayerNorm()(h))))
model = nn.Model(x, nn.Dense(3)(nn.LayerNorm()(h)), loss=nn.SoftmaxCrossEntropy(), name="resmlp")

# Defaults for `nncompile run examples/resmlp.py --data spirals` (flags override them).
training = {"mode": "minibatch", "batch_size": 32, "epochs": 150, "lr": 0.01, "optimizer": "adam"}
