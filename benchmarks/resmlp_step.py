"""One training step of a residual LayerNorm MLP: generated NumPy against hand-written NumPy and PyTorch eager.

The network (784-256-256-256-10, batch 128): h₁ = x·W₁ + b₁; two pre-norm residual blocks
hₖ₊₁ = hₖ + relu(LayerNorm(hₖ)·Wₖ₊₁ + bₖ₊₁); logits = LayerNorm(h₃)·W₄ + b₄; softmax
cross-entropy; plain SGD.  The same weights and batch for all three, timed in alternating
rounds (`step_vs_peers.interleaved`); the three are checked to make the same first update.

    python benchmarks/resmlp_step.py [--dtype float32|float64|both] [--threads 2] [--budget 3] [--cpu]

Ratios > 1 mean the generated step is faster.  On a machine other jobs share, `--cpu --threads 1`
times the CPU each step uses (time.process_time) instead of the wall clock, which waiting for a
core inflates.
"""
from __future__ import annotations

import argparse
import os
import sys

#: BLAS threads are fixed before NumPy loads (threadpoolctl, when installed, pins them again)
_THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv[:-1] else "2"
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402

import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_vs_peers import interleaved  # noqa: E402

import nncompile as nc  # noqa: E402
from nncompile import nn  # noqa: E402

SIZES, BATCH, EPS, LR = (784, 256, 256, 256, 10), 128, 1e-5, 0.01


def model() -> nn.Model:
    x = nn.Input(SIZES[0])
    h = nn.Dense(SIZES[1])(x)
    for width in SIZES[2:-1]:
        h = h + nn.ReLU()(nn.Dense(width)(nn.LayerNorm(eps=EPS)(h)))
    return nn.Model(x, nn.Dense(SIZES[-1])(nn.LayerNorm(eps=EPS)(h)), loss=nn.SoftmaxCrossEntropy(),
                    name="resmlp_bench")


class HandResidualStep:
    """The same step written by hand: preallocated buffers, out= everywhere, LayerNorm's backward in the
    compact form, ReLU' as a mask, stable log-sum-exp, 1/N once at the output delta, SGD per tensor."""

    def __init__(self, params: dict[str, np.ndarray], n: int) -> None:
        self.p = {k: v.copy() for k, v in params.items()}
        dt = next(iter(params.values())).dtype
        w = SIZES[1]
        blocks = len(SIZES) - 3
        self.h = [np.empty((n, w), dt) for _ in range(blocks + 1)]
        self.xhat = [np.empty((n, w), dt) for _ in range(blocks + 1)]
        self.rstd = [np.empty((n, 1), dt) for _ in range(blocks + 1)]
        self.ln = [np.empty((n, w), dt) for _ in range(blocks + 1)]
        self.u = [np.empty((n, w), dt) for _ in range(blocks)]
        self.mask = [np.empty((n, w), bool) for _ in range(blocks)]
        self.z = np.empty((n, SIZES[-1]), dt)
        self.prob = np.empty_like(self.z)
        self.col = np.empty((n, 1), dt)
        self.col2 = np.empty((n, 1), dt)
        self.tmp = np.empty((n, w), dt)
        self.dh = np.empty((n, w), dt)
        self.dln = np.empty((n, w), dt)
        self.du = np.empty((n, w), dt)
        self.dz = np.empty_like(self.z)
        self.g = {k: np.empty_like(v) for k, v in self.p.items()}
        self.n, self.blocks = n, blocks

    def _layernorm(self, i: int, x: np.ndarray) -> None:
        xhat, rstd, w = self.xhat[i], self.rstd[i], x.shape[1]
        np.sum(x, axis=1, keepdims=True, out=self.col)
        np.multiply(self.col, 1.0 / w, out=self.col)
        np.subtract(x, self.col, out=xhat)
        np.multiply(xhat, xhat, out=self.tmp)
        np.sum(self.tmp, axis=1, keepdims=True, out=rstd)
        np.multiply(rstd, 1.0 / w, out=rstd)
        np.add(rstd, EPS, out=rstd)
        np.sqrt(rstd, out=rstd)
        np.divide(1.0, rstd, out=rstd)
        np.multiply(xhat, rstd, out=xhat)
        np.multiply(xhat, self.p[f"layernorm{i + 1}.gamma"], out=self.ln[i])
        np.add(self.ln[i], self.p[f"layernorm{i + 1}.beta"], out=self.ln[i])

    def _layernorm_back(self, i: int, dy: np.ndarray, dx: np.ndarray) -> None:
        """dx = rstd·(dx̂ − (Σ dx̂ + x̂·Σ dx̂x̂)/D), dx̂ = dy·γ; the γ, β gradients into self.g."""
        xhat, w = self.xhat[i], dy.shape[1]
        np.multiply(dy, xhat, out=self.tmp)
        np.sum(self.tmp, axis=0, out=self.g[f"layernorm{i + 1}.gamma"])
        np.sum(dy, axis=0, out=self.g[f"layernorm{i + 1}.beta"])
        np.multiply(dy, self.p[f"layernorm{i + 1}.gamma"], out=self.tmp)
        np.sum(self.tmp, axis=1, keepdims=True, out=self.col)
        np.multiply(self.tmp, xhat, out=dx)
        np.sum(dx, axis=1, keepdims=True, out=self.col2)
        np.multiply(xhat, self.col2, out=dx)
        np.add(dx, self.col, out=dx)
        np.multiply(dx, -1.0 / w, out=dx)
        np.add(dx, self.tmp, out=dx)
        np.multiply(dx, self.rstd[i], out=dx)

    def __call__(self, X: np.ndarray, T: np.ndarray, lr: float) -> float:
        p, g = self.p, self.g
        np.matmul(X, p["dense1.W"], out=self.h[0])
        np.add(self.h[0], p["dense1.b"], out=self.h[0])
        for i in range(self.blocks):
            self._layernorm(i, self.h[i])
            np.matmul(self.ln[i], p[f"dense{i + 2}.W"], out=self.u[i])
            np.add(self.u[i], p[f"dense{i + 2}.b"], out=self.u[i])
            np.greater(self.u[i], 0, out=self.mask[i])
            np.maximum(self.u[i], 0, out=self.tmp)
            np.add(self.h[i], self.tmp, out=self.h[i + 1])
        last = self.blocks
        self._layernorm(last, self.h[last])
        z, prob = self.z, self.prob
        np.matmul(self.ln[last], p[f"dense{last + 2}.W"], out=z)
        np.add(z, p[f"dense{last + 2}.b"], out=z)
        np.max(z, axis=1, keepdims=True, out=self.col[:, :1])
        m = self.col[:, :1].copy()
        np.subtract(z, m, out=prob)
        np.exp(prob, out=prob)
        s = prob.sum(axis=1, keepdims=True)
        np.divide(prob, s, out=prob)
        loss = (np.log(s).sum() + m.sum() - np.vdot(T, z)) / self.n
        np.subtract(prob, T, out=self.dz)
        np.multiply(self.dz, 1.0 / self.n, out=self.dz)
        np.matmul(self.ln[last].T, self.dz, out=g[f"dense{last + 2}.W"])
        np.sum(self.dz, axis=0, out=g[f"dense{last + 2}.b"])
        np.matmul(self.dz, p[f"dense{last + 2}.W"].T, out=self.dln)
        self._layernorm_back(last, self.dln, self.dh)
        for i in range(self.blocks - 1, -1, -1):
            np.multiply(self.dh, self.mask[i], out=self.du)
            np.matmul(self.ln[i].T, self.du, out=g[f"dense{i + 2}.W"])
            np.sum(self.du, axis=0, out=g[f"dense{i + 2}.b"])
            np.matmul(self.du, p[f"dense{i + 2}.W"].T, out=self.dln)
            self._layernorm_back(i, self.dln, self.du)
            np.add(self.dh, self.du, out=self.dh)          # the residual: both paths meet at h
        np.matmul(X.T, self.dh, out=g["dense1.W"])
        np.sum(self.dh, axis=0, out=g["dense1.b"])
        for k, v in p.items():
            np.multiply(g[k], lr, out=g[k])
            np.subtract(v, g[k], out=v)
        return float(loss)


def torch_step(params: dict[str, np.ndarray], X: np.ndarray, T: np.ndarray, threads: int):
    import torch
    torch.set_num_threads(threads)
    dtype = torch.float32 if X.dtype == np.float32 else torch.float64
    tensors = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    blocks = len(SIZES) - 3
    Xt, labels = torch.tensor(X), torch.tensor(T.argmax(axis=1))
    optimizer = torch.optim.SGD(list(tensors.values()), lr=LR)
    layer_norm = torch.nn.functional.layer_norm

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        h = Xt @ tensors["dense1.W"] + tensors["dense1.b"]
        for i in range(blocks):
            ln = layer_norm(h, (SIZES[1],), tensors[f"layernorm{i + 1}.gamma"], tensors[f"layernorm{i + 1}.beta"], EPS)
            h = h + torch.relu(ln @ tensors[f"dense{i + 2}.W"] + tensors[f"dense{i + 2}.b"])
        ln = layer_norm(h, (SIZES[1],), tensors[f"layernorm{blocks + 1}.gamma"],
                        tensors[f"layernorm{blocks + 1}.beta"], EPS)
        loss = torch.nn.functional.cross_entropy(ln @ tensors[f"dense{blocks + 2}.W"]
                                                 + tensors[f"dense{blocks + 2}.b"], labels)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step, tensors


def run(dtype: str, threads: int, budget: float, cpu: bool) -> None:
    rng = np.random.default_rng(0)
    prog = nc.compile(model(), dtype=dtype)
    params = prog.init_params(0)
    X = rng.normal(size=(BATCH, SIZES[0])).astype(dtype)
    T = np.eye(SIZES[-1], dtype=dtype)[rng.integers(0, SIZES[-1], BATCH)]
    engine = prog.engine(params)
    ws = engine.workspace(BATCH)
    ws.X[...], ws.T[...] = X, T
    generated = ws.step_sgd
    hand = HandResidualStep(params, BATCH)
    contenders = {"generated": lambda: generated(LR, 1), "hand": lambda: hand(X, T, LR)}
    try:
        step, tensors = torch_step(params, X, T, threads)
        contenders["torch"] = step
    except ImportError:
        tensors = None
    # the same first update from the same weights
    generated(LR, 1)
    hand(X, T, LR)
    after = prog.unflatten(engine.params)
    tol = 1e-4 if dtype == "float32" else 1e-10
    for k, v in hand.p.items():
        np.testing.assert_allclose(after[k], v, rtol=tol, atol=tol, err_msg=f"hand-written step differs at {k}")
    if tensors is not None:
        contenders["torch"]()
        for k, v in tensors.items():
            np.testing.assert_allclose(after[k], v.detach().numpy(), rtol=tol, atol=tol, err_msg=f"torch at {k}")
    times = interleaved(contenders, budget, time.process_time if cpu else time.perf_counter)
    gen = times["generated"]
    line = f"| {dtype} | {gen * 1e3:.3f} ms | {times['hand'] * 1e3:.3f} ms | "
    line += f"{times['torch'] * 1e3:.3f} ms |" if "torch" in times else "- |"
    line += f" {times['hand'] / gen:.2f} | " + (f"{times['torch'] / gen:.2f} |" if "torch" in times else "- |")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per contender")
    parser.add_argument("--cpu", action="store_true", help="time CPU use (process_time), not the wall clock")
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    print(f"residual LayerNorm MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, one SGD step (median)\n")
    print("| dtype | generated | hand NumPy | PyTorch eager | hand/gen | torch/gen |")
    print("|---|---|---|---|---|---|")
    for dtype in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
        run(dtype, args.threads, args.budget, args.cpu)


if __name__ == "__main__":
    main()
