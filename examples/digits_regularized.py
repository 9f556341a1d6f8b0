"""The digits classifier with BatchNorm and Dropout: 64 -> 128 (BatchNorm, ReLU, Dropout 0.3) -> 10.

In training, BatchNorm normalizes each unit over the batch and Dropout keeps each unit with
probability 0.7 (scaled by 1/0.7); evaluation uses BatchNorm's running statistics and no
dropout.  Weights files and checkpoints hold the running statistics with the parameters.
"""
from nncompile import nn

x = nn.Input(64)
h = nn.Dropout(0.3)(nn.ReLU()(nn.BatchNorm()(nn.Dense(128)(x))))
model = nn.Model(x, nn.Dense(10)(h), loss=nn.SoftmaxCrossEntropy(), l2=1e-4, name="digits_regularized")

training = {"mode": "minibatch", "batch_size": 32, "epochs": 30, "lr": 0.05, "optimizer": "momentum"}
