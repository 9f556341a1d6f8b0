"""A custom activation given only by its formula: Mish, x*tanh(softplus(x)) (Misra, 2019).

nncompile derives its derivative with SymPy, rewrites log(1 + exp(x)) into a softplus
that cannot overflow, and fuses the result into the generated step.
"""
from nncompile import nn

mish = nn.Activation("x*tanh(log(1 + exp(x)))", name="mish")

model = nn.Sequential(
    nn.Dense(16), mish,
    nn.Dense(16), nn.Activation("x*tanh(log(1 + exp(x)))", name="mish"),
    nn.Dense(2), nn.Softmax(),
    input_dim=2,
    loss=nn.CrossEntropy(),
    name="moons_mish",
)

training = {"mode": "minibatch", "batch_size": 16, "epochs": 200, "lr": 0.1}
