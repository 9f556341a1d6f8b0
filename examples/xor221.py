"""The smallest network that learns XOR: 2 inputs, 2 tanh units, 1 sigmoid output (2-2-1).

The lecture example of docs/xor-walkthrough.md: `nncompile derive examples/xor221.py`
prints backpropagation for it layer by layer, and `--scalar` every weight's gradient.
"""
from nncompile import nn

model = nn.Sequential(
    nn.Dense(2), nn.Tanh(),
    nn.Dense(1), nn.Sigmoid(),
    input_dim=2,
    loss=nn.BinaryCrossEntropy(),
    name="xor221",
)

training = {"mode": "gd", "epochs": 3000, "lr": 1.0, "seed": 1}
