"""A careful hand-written NumPy training step: the bar the generated step must clear.

What an expert writes by hand for an MLP with one hidden activation and a softmax + cross-
entropy (or sigmoid + binary cross-entropy) output: buffers preallocated once, `out=`
everywhere, activations reused for derivatives (tanh' = 1 - a², relu' = a > 0), a stable
log-sum-exp loss, 1/N applied once at the output delta, plain SGD per tensor.
"""
from __future__ import annotations

import numpy as np


class HandStep:
    """One SGD step: forward, loss, all gradients, update; returns the loss."""

    def __init__(self, params: list[tuple[np.ndarray, np.ndarray]], hidden: str, output: str, n: int) -> None:
        self.params, self.hidden, self.output, self.n = params, hidden, output, n
        dtype = params[0][0].dtype
        widths = [w.shape[1] for w, _ in params]
        self.z = [np.empty((n, k), dtype) for k in widths]
        self.a = [np.empty((n, k), dtype) for k in widths[:-1]]
        self.dz = [np.empty((n, k), dtype) for k in widths]
        self.tmp = [np.empty((n, k), dtype) for k in widths[:-1]]
        self.mask = [np.empty((n, k), bool) for k in widths[:-1]]
        self.gw = [np.empty_like(w) for w, _ in params]
        self.gb = [np.empty_like(b) for _, b in params]
        self.m = np.empty((n, 1), dtype)
        self.s = np.empty((n, 1), dtype)
        self.p = np.empty((n, widths[-1]), dtype)

    def _forward(self, X: np.ndarray) -> None:
        h = X
        for i, (w, b) in enumerate(self.params):
            z = self.z[i]
            np.matmul(h, w, out=z)
            np.add(z, b, out=z)
            if i < len(self.params) - 1:
                a = self.a[i]
                if self.hidden == "relu":
                    np.maximum(z, 0, out=a)
                else:
                    np.tanh(z, out=a)
                h = a

    def __call__(self, X: np.ndarray, T: np.ndarray, lr: float) -> float:
        self._forward(X)
        z, p, inv_n = self.z[-1], self.p, 1.0 / self.n
        dz = self.dz[-1]
        if self.output == "softmax":
            np.max(z, axis=1, keepdims=True, out=self.m)
            np.subtract(z, self.m, out=p)
            np.exp(p, out=p)
            np.sum(p, axis=1, keepdims=True, out=self.s)
            np.divide(p, self.s, out=p)
            np.log(self.s, out=self.s)
            loss = (self.s.sum() + self.m.sum() - np.vdot(T, z)) * inv_n
        else:  # sigmoid + binary cross-entropy on logits: softplus(z) - t*z
            np.logaddexp(z, 0, out=dz)
            loss = (dz.sum() - np.vdot(T, z)) / T.size
            np.multiply(z, 0.5, out=p)
            np.tanh(p, out=p)
            np.multiply(p, 0.5, out=p)
            np.add(p, 0.5, out=p)
            inv_n = 1.0 / T.size
        np.subtract(p, T, out=dz)
        np.multiply(dz, inv_n, out=dz)
        for i in range(len(self.params) - 1, -1, -1):
            w, b = self.params[i]
            h = self.a[i - 1] if i > 0 else X
            np.matmul(h.T, dz, out=self.gw[i])
            np.sum(dz, axis=0, out=self.gb[i])
            if i > 0:
                prev = self.dz[i - 1]
                np.matmul(dz, w.T, out=prev)
                a = self.a[i - 1]
                if self.hidden == "relu":
                    np.greater(a, 0, out=self.mask[i - 1])
                    np.multiply(prev, self.mask[i - 1], out=prev)
                else:
                    t = self.tmp[i - 1]
                    np.multiply(a, a, out=t)
                    np.subtract(1, t, out=t)
                    np.multiply(prev, t, out=prev)
                dz = prev
            np.multiply(self.gw[i], lr, out=self.gw[i])
            np.subtract(w, self.gw[i], out=w)
            np.multiply(self.gb[i], lr, out=self.gb[i])
            np.subtract(b, self.gb[i], out=b)
        return float(loss)
