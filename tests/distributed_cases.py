"""Models and data shared by the data-parallel tests and the processes they start (distributed_worker.py)."""
from __future__ import annotations

import numpy as np

import nncompile as nc
from nncompile import data, nn


def model(name: str) -> nn.Model:
    """softmax: cross-entropy with an l2 penalty (accuracy); binary: three sigmoid outputs (per-element
    accuracy); regression: MSE (no metric); dropout: masks that must be the ones one process draws;
    conv: the digits as 1x8x8 images; shared: a residual block calling one Dense layer twice (its
    gradient is final only after its second use)."""
    if name == "dropout":
        return nn.Sequential(nn.Dense(16), nn.Tanh(), nn.Dropout(0.3), nn.Dense(10), input_dim=64,
                             loss=nn.SoftmaxCrossEntropy(), name="dp_dropout")
    if name == "conv":
        return nn.Sequential(nn.Conv2D(3, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(10),
                             input_shape=(1, 8, 8), loss=nn.SoftmaxCrossEntropy(), l1=1e-4, name="dp_conv")
    if name == "shared":
        x = nn.Input(64)
        h = nn.Tanh()(nn.Dense(12)(x))
        twice = nn.Dense(12)
        y = nn.Dense(10)(h + nn.Tanh()(twice(nn.Tanh()(twice(h)))))
        return nn.Model(x, y, loss=nn.SoftmaxCrossEntropy(), l2=1e-3, name="dp_shared")
    if name == "softmax":
        return nn.Sequential(nn.Dense(12), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                             loss=nn.CrossEntropy(), l2=1e-3, name="dp_softmax")
    if name == "binary":
        return nn.Sequential(nn.Dense(8), nn.ReLU(), nn.Dense(3), nn.Sigmoid(), input_dim=64,
                             loss=nn.BinaryCrossEntropy(), name="dp_binary")
    return nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(1), input_dim=64, loss=nn.MSE(), name="dp_regression")


def program(name: str) -> nc.CompiledProgram:
    return nc.compile(model(name), dtype="float64")


def dataset(name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    ds = data.digits()
    X, y = ds.X[:rows], ds.y[:rows]
    if name == "binary":
        return X, np.stack([y % 2, y < 5, np.isin(y, (0, 6, 8, 9))], axis=1).astype(float)
    if name == "regression":
        return X, X[:, 20:28].mean(axis=1) - X[:, 36:44].mean(axis=1)
    return X, y
