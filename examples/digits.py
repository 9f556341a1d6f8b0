"""8x8 handwritten digits: 64 inputs, 32 tanh units, 10-way softmax with cross-entropy."""
from nncompile import nn

model = nn.Sequential(
    nn.Dense(32), nn.Tanh(),
    nn.Dense(10), nn.Softmax(),
    input_dim=64,
    loss=nn.CrossEntropy(),
    name="digits_mlp",
)

training = {"mode": "minibatch", "batch_size": 32, "epochs": 30, "lr": 0.1}
