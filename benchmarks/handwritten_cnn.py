"""A hand-written NumPy CNN training step: im2col + GEMM convolutions, the reference for benchmarks/conv_step.py.

Written the way a careful person writes it by hand (NCHW arrays, no Python loop over pixels):
a convolution pads its input with np.pad, takes every window with sliding_window_view and
copies them into an (N·Ho·Wo, C·kh·kw) matrix for one GEMM; its backward pass makes one GEMM
for dW and one for the columns' gradient, added back with kh·kw slice-adds (no np.add.at);
max-pooling reshapes 2×2 windows and sends δ to each window's first maximum (argmax); BatchNorm2d
uses the compact backward formula; softmax cross-entropy on logits; plain SGD.  Arrays are
allocated as the step goes, as such code usually does.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Conv:
    def __init__(self, W: np.ndarray, b: np.ndarray, padding: int) -> None:
        self.W, self.b, self.pad = W, b, padding

    def forward(self, x: np.ndarray) -> np.ndarray:
        o, c, kh, kw = self.W.shape
        p = self.pad
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        n, _, hp, wp = xp.shape
        ho, wo = hp - kh + 1, wp - kw + 1
        cols = sliding_window_view(xp, (kh, kw), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
        self.x_shape, self.cols = xp.shape, cols
        z = cols @ self.W.reshape(o, -1).T + self.b
        return z.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)

    def backward(self, dz: np.ndarray, need_dx: bool) -> np.ndarray | None:
        o, c, kh, kw = self.W.shape
        n, _, ho, wo = dz.shape
        dzm = dz.transpose(0, 2, 3, 1).reshape(-1, o)
        self.dW = (dzm.T @ self.cols).reshape(self.W.shape)
        self.db = dzm.sum(axis=0)
        if not need_dx:
            return None
        dcols = (dzm @ self.W.reshape(o, -1)).reshape(n, ho, wo, c, kh, kw)
        dxp = np.zeros(self.x_shape, dtype=dz.dtype)
        for p in range(kh):
            for q in range(kw):
                dxp[:, :, p:p + ho, q:q + wo] += dcols[:, :, :, :, p, q].transpose(0, 3, 1, 2)
        return dxp[:, :, self.pad:self.x_shape[2] - self.pad, self.pad:self.x_shape[3] - self.pad] if self.pad \
            else dxp

    def step(self, lr: float) -> None:
        self.W -= lr * self.dW
        self.b -= lr * self.db


class BatchNorm2d:
    def __init__(self, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> None:
        self.gamma, self.beta, self.eps = gamma, beta, eps

    def forward(self, x: np.ndarray) -> np.ndarray:
        mu = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        self.rstd = 1 / np.sqrt(var + self.eps)
        self.xhat = (x - mu) * self.rstd
        return self.gamma[None, :, None, None] * self.xhat + self.beta[None, :, None, None]

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray:
        m = dy.shape[0] * dy.shape[2] * dy.shape[3]
        self.dgamma = (dy * self.xhat).sum(axis=(0, 2, 3))
        self.dbeta = dy.sum(axis=(0, 2, 3))
        dxhat = dy * self.gamma[None, :, None, None]
        return self.rstd / m * (m * dxhat - dxhat.sum(axis=(0, 2, 3), keepdims=True)
                                - self.xhat * (dxhat * self.xhat).sum(axis=(0, 2, 3), keepdims=True))

    def step(self, lr: float) -> None:
        self.gamma -= lr * self.dgamma
        self.beta -= lr * self.dbeta


class ReLU:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray:
        return dy * self.mask


class MaxPool2:
    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        self.arg, self.shape = windows.argmax(axis=4), x.shape
        return windows.max(axis=4)

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray:
        n, c, h, w = self.shape
        routed = (np.arange(4) == self.arg[..., None]) * dy[..., None]
        return routed.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(self.shape)


class Flatten:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray:
        return dy.reshape(self.shape)


class Dense:
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W, self.b = W, b

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dz: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        self.dW, self.db = self.x.T @ dz, dz.sum(axis=0)
        return dz @ self.W.T if need_dx else None

    def step(self, lr: float) -> None:
        self.W -= lr * self.dW
        self.b -= lr * self.db


class HandCNN:
    """The network as a list of layers; `step(X, T, lr)` is one SGD step on softmax cross-entropy."""

    def __init__(self, layers: list) -> None:
        self.layers = layers

    def step(self, X: np.ndarray, T: np.ndarray, lr: float) -> float:
        h = X
        for layer in self.layers:
            h = layer.forward(h)
        shifted = h - h.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -(T * log_p).sum() / X.shape[0]
        delta = (np.exp(log_p) - T) / X.shape[0]
        for i in range(len(self.layers) - 1, -1, -1):
            delta = self.layers[i].backward(delta, i > 0)
        for layer in self.layers:
            if hasattr(layer, "step"):
                layer.step(lr)
        return float(loss)


def from_params(spec: list[tuple[str, str]], params: dict[str, np.ndarray]) -> HandCNN:
    """The network of `spec` ((kind, nncompile layer name): conv with its padding as "conv:1", bn, relu,
    maxpool, flatten, dense) with copies of nncompile's parameters (conv kernels (O, C, kh, kw), Dense
    weights (in, out))."""
    layers: list = []
    for kind, name in spec:
        if kind.startswith("conv"):
            layers.append(Conv(params[f"{name}.W"].copy(), params[f"{name}.b"].copy(), int(kind.split(":")[1])))
        elif kind == "bn":
            layers.append(BatchNorm2d(params[f"{name}.gamma"].copy(), params[f"{name}.beta"].copy()))
        elif kind == "dense":
            layers.append(Dense(params[f"{name}.W"].copy(), params[f"{name}.b"].copy()))
        else:
            layers.append({"relu": ReLU, "maxpool": MaxPool2, "flatten": Flatten}[kind]())
    return HandCNN(layers)
