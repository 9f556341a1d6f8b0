"""Hand-written NumPy references, written from the textbook formulas, independent of nncompile.

Used to check the compiled forward pass, loss and gradients on the models of the contract.
"""
from __future__ import annotations

import math

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))


ACTIVATIONS = {
    "tanh": (np.tanh, lambda z, a: 1 - a**2),
    "sigmoid": (sigmoid, lambda z, a: a * (1 - a)),
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(float)),
    "softplus": (lambda z: np.logaddexp(0, z), lambda z, a: sigmoid(z)),
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
}


def mlp_loss_and_grad(params: dict, X: np.ndarray, T: np.ndarray, hidden: list[str], out: str,
                      loss: str, l2: float = 0.0, l1: float = 0.0) -> tuple[float, dict, np.ndarray]:
    """Loss, gradients and output of Dense-activation-...-Dense-out with the given loss.

    `hidden` names the activation after each hidden Dense; `out` is "softmax", "sigmoid" or
    "identity"; `loss` is "ce", "bce" or "mse" (means as in the contract).
    """
    n = X.shape[0]
    acts, zs = [X], []
    layers = len(hidden) + 1
    for k in range(1, layers + 1):
        z = acts[-1] @ params[f"dense{k}.W"] + params[f"dense{k}.b"]
        zs.append(z)
        if k < layers:
            acts.append(ACTIVATIONS[hidden[k - 1]][0](z))
    z = zs[-1]
    if out == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)
    elif out == "sigmoid":
        y = sigmoid(z)
    else:
        y = z
    if loss == "ce":
        value = -np.sum(T * np.log(y)) / n
        dz = (y - T) / n
    elif loss == "bce":
        value = np.mean(-(T * np.log(y) + (1 - T) * np.log(1 - y)))
        dz = (y - T) / T.size
    else:
        value = np.mean((y - T) ** 2)
        dz = 2 * (y - T) / T.size
        if out == "sigmoid":
            dz = dz * y * (1 - y)
    grads = {}
    for k in range(layers, 0, -1):
        W = params[f"dense{k}.W"]
        grads[f"dense{k}.W"] = acts[k - 1].T @ dz + l2 * W + l1 * np.sign(W)
        grads[f"dense{k}.b"] = dz.sum(axis=0)
        value += l2 / 2 * np.sum(W**2) + l1 * np.sum(np.abs(W))
        if k > 1:
            da = dz @ W.T
            dz = da * ACTIVATIONS[hidden[k - 2]][1](zs[k - 2], acts[k - 1])
    return value, grads, y


def fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finalizer, on Python integers (the dropout spec in nncompile/derive/ir.py)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % 2**32
    return h ^ (h >> 16)


def dropout_mask(seed: int, step: int, layer: int, p: float, shape: tuple[int, ...], row0: int = 0) -> np.ndarray:
    """The spec's mask, written from its text: 1.0 where kept, 0.0 where dropped (uint64 arithmetic, masked).
    `row0`: the rows are rows row0, row0 + 1, ... of a larger batch (their elements' indices count from there)."""
    lo, hi = seed % 2**32, (seed >> 32) % 2**32
    key = fmix32(fmix32(fmix32(lo ^ fmix32(hi)) ^ (step % 2**32)) ^ layer)
    size = int(np.prod(shape))
    index = np.arange(size, dtype=np.uint64) + np.uint64(row0 * (size // shape[0]))
    h = (np.uint64(key) + (index + np.uint64(1)) * np.uint64(0x9E3779B9) % np.uint64(2**32)) % np.uint64(2**32)
    for shift, mul in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):
        h ^= h >> np.uint64(shift)
        if mul is not None:
            h = (h * np.uint64(mul)) % np.uint64(2**32)
    threshold = math.ceil(p * 2**32)
    return (h >= np.uint64(threshold)).astype(np.float64).reshape(shape)


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]
           ) -> np.ndarray:
    """z[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q]·x[n,c,i·s+p−pad, j·s+q−pad], by loops over every output entry."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    padded[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    z = np.empty((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            window = padded[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            z[:, :, i, j] = np.einsum("ncpq,ocpq->no", window, W) + b
    return z


def pool2d(x: np.ndarray, size: tuple[int, int], stride: tuple[int, int], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(output, first) of max or average pooling; `first` is 1 at each window's first maximum in row-major
    order (the tie rule), found by a scan of the window, entry by entry."""
    (kh, kw), (sh, sw) = size, stride
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out, first = np.empty((n, c, ho, wo)), np.zeros((n, c, ho, wo, kh, kw))
    for i in range(ho):
        for j in range(wo):
            window = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            if mode == "avg":
                out[:, :, i, j] = window.mean(axis=(2, 3))
                continue
            best = window[:, :, 0, 0].copy()
            where = np.zeros(best.shape, dtype=int)
            for u in range(kh):
                for v in range(kw):
                    larger = window[:, :, u, v] > best
                    best = np.where(larger, window[:, :, u, v], best)
                    where = np.where(larger, u * kw + v, where)
            out[:, :, i, j] = best
            first[:, :, i, j] = (np.arange(kh * kw) == where[..., None]).reshape(n, c, kh, kw)
    return out, first
