"""8x8 handwritten digits as 1x8x8 images: two 3x3 convolutions with BatchNorm2d, ReLU and 2x2 max-pooling,
then a 64-unit hidden layer and a 10-way softmax with cross-entropy on the logits.

    nncompile run examples/digits_cnn.py --data digits      # held-out accuracy about 99% (the MLP: about 97%)
"""
from nncompile import nn

model = nn.Sequential(
    nn.Conv2D(16, 3, padding=1), nn.BatchNorm(), nn.ReLU(), nn.MaxPool2D(2),    # 1x8x8 -> 16x8x8 -> 16x4x4
    nn.Conv2D(32, 3, padding=1), nn.BatchNorm(), nn.ReLU(), nn.MaxPool2D(2),    # -> 32x4x4 -> 32x2x2
    nn.Flatten(),                                                               # -> 128
    nn.Dense(64), nn.ReLU(),
    nn.Dense(10),
    input_shape=(1, 8, 8),
    loss=nn.SoftmaxCrossEntropy(),
    name="digits_cnn",
)

training = {"mode": "minibatch", "batch_size": 32, "epochs": 30, "optimizer": "momentum", "lr": 0.05}
