"""XOR: the smallest problem a linear model cannot solve; 2-8-1 with tanh and a sigmoid output."""
from nncompile import nn

model = nn.Sequential(
    nn.Dense(8), nn.Tanh(),
    nn.Dense(1), nn.Sigmoid(),
    input_dim=2,
    loss=nn.BinaryCrossEntropy(),
    name="xor",
)

# Defaults for `nncompile run` (flags override them): four examples, so full-batch GD.
training = {"mode": "gd", "epochs": 2000, "lr": 1.0}
