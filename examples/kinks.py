"""Non-differentiable points: ReLU and LeakyReLU at 0, an l1 penalty's |w| at 0, a custom |y - t| loss.

`nncompile derive examples/kinks.py` states each point and the subgradient the code uses.
"""
from nncompile import nn

model = nn.Sequential(
    nn.Dense(4), nn.ReLU(),
    nn.Dense(3), nn.LeakyReLU(0.1),
    nn.Dense(1),
    input_dim=2,
    loss=nn.Loss("abs(y - t)", name="mae"),
    l1=1e-3, l2=1e-4,
    name="kinks",
)
