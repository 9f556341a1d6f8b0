"""Step-for-step agreement of nncompile's optimizers with torch.optim, in float64.

The same 64-32-10 tanh/softmax network on digits, the same initial weights, trained once
by nncompile (fused generated steps) and once by PyTorch (autograd gradients, torch.optim
updates with the same hyperparameters), with the same batches: full-batch GD, and
mini-batch SGD with nncompile's seeded per-epoch shuffles replayed in the torch loop.
After every update the parameters are compared; the table gives the largest difference
over all updates, absolute and relative to the largest parameter.

    pip install torch==2.13.0
    python benchmarks/torch_optimizers.py [--steps 100]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import nncompile as nc
from nncompile import data, nn

SETTINGS = {
    "sgd": (0.3, {}, lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "momentum": (0.05, {}, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "nesterov": (0.05, {}, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)),
    "adam": (0.003, {}, lambda p, lr: torch.optim.Adam(p, lr=lr)),
    "rmsprop": (0.001, {}, lambda p, lr: torch.optim.RMSprop(p, lr=lr)),
}


def torch_run(start: dict, X: np.ndarray, y: np.ndarray, batches: list, name: str) -> list[dict]:
    """Parameters after each update, trained by torch.optim with autograd gradients."""
    lr, _, make = SETTINGS[name]
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in start.items()}
    opt = make(list(params.values()), lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    after = []
    for idx in batches:
        opt.zero_grad()
        h = torch.tanh(Xt[idx] @ params["dense1.W"] + params["dense1.b"])
        logits = h @ params["dense2.W"] + params["dense2.b"]
        torch.nn.functional.cross_entropy(logits, yt[idx]).backward()
        opt.step()
        after.append({k: v.detach().numpy().copy() for k, v in params.items()})
    return after


def nncompile_run(prog, start: dict, X: np.ndarray, y: np.ndarray, batches: list, name: str) -> list[dict]:
    """Parameters after each update, from nncompile's generated fused step (as nc.train calls it)."""
    from nncompile.runtime import loop
    lr, hyper, _ = SETTINGS[name]
    engine = prog.engine(start)
    engine.reset_state(name)
    Xc, T = prog.prepare(X, y)
    values = loop.hyperparameters(prog.module, name, hyper)
    after = []
    for step, idx in enumerate(batches, 1):
        ws = engine.workspace(len(idx))
        ws.X[...], ws.T[...] = Xc[idx], T[idx]
        getattr(ws, f"step_{name}")(lr, step, *values)
        after.append(prog.unflatten(engine.params))
    return after


def batches_for(mode: str, rows: int, updates: int) -> list[np.ndarray]:
    """The index batches nncompile's minibatch mode uses with seed 0 (or all rows for gd)."""
    if mode == "gd":
        return [np.arange(rows)] * updates
    rng, out = np.random.default_rng(0), []
    while len(out) < updates:
        order = rng.permutation(rows)
        out += [order[s:s + 32] for s in range(0, rows, 32)]
    return out[:updates]


def check_trainer_matches(prog, start, X, y, steps: int) -> None:
    """The per-update replay above is what nc.train does: same result for gd and minibatch."""
    for mode, epochs in (("gd", steps), ("minibatch", 2)):
        result = nc.train(prog, X, y, mode=mode, epochs=epochs, lr=0.003, optimizer="adam", params=start,
                          evaluate=False)
        updates = sum(h["updates"] for h in result.history)
        replay = nncompile_run(prog, start, X, y, batches_for(mode, len(y), updates), "adam")[-1]
        assert all(np.array_equal(replay[k], result.params[k]) for k in start), mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    ds = data.digits()
    X, y = ds.X, ds.y
    prog = nc.compile(nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="digits_mlp"))
    start = prog.init_params(0)
    check_trainer_matches(prog, start, X, y, 5)
    print(f"digits (1797 rows), 64-32-10 tanh, float64, {args.steps} updates; torch {torch.__version__}\n")
    print("| optimizer | mode | lr | max abs difference | max relative difference |")
    print("|---|---|---|---|---|")
    for mode in ("gd", "minibatch"):
        batches = batches_for(mode, len(y), args.steps)
        for name, (lr, _, _) in SETTINGS.items():
            ours = nncompile_run(prog, start, X, y, batches, name)
            theirs = torch_run(start, X, y, batches, name)
            scale = max(np.abs(v).max() for v in ours[-1].values())
            worst = max(float(np.abs(a[k] - b[k]).max()) for a, b in zip(ours, theirs) for k in start)
            print(f"| {name} | {mode} | {lr:g} | {worst:.1e} | {worst / scale:.1e} |")


if __name__ == "__main__":
    main()
