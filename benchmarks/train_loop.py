"""Per-epoch time of `nc.train` (default settings) against the raw step, hand-written NumPy and PyTorch.

For each network (tiny 2-8-1 at batch 4, digits 64-32-10 at 32, mnist 784-256-256-10 at
128, wide 1024-2048-2048-10 at 256) and mode, in one process, contenders in alternating
rounds (median of 7):
  train   nc.train(prog, X, y, mode=..., batch_size=B, epochs=E, lr=..., params=p): the public API
          with its defaults (running loss and accuracy from the steps, no extra pass); per epoch
          is (time of E2 epochs - time of 2 epochs) / (E2 - 2), the set-up of a call (data checks,
          engine, buffers, the parameters copied in and out) printed on its own
  raw     the generated step_sgd alone on fixed buffers, x updates per epoch (the floor)
  hand    a careful hand-written NumPy epoch (benchmarks/handwritten.py: preallocated buffers,
          out= everywhere; minibatch: in-place shuffle, rows gathered with take into its buffers)
  torch   PyTorch eager: nn.Sequential + torch.optim.SGD (minibatch: randperm and indexing), the
          faster of --threads and 1 thread
gd: one batch of B rows, so an epoch is one update.  minibatch: B x U rows, U updates per epoch.

    python benchmarks/train_loop.py [--dtype float32|float64] [--configs tiny,digits,mnist,wide]
                                    [--modes gd,minibatch] [--threads 2] [--clock wall|cpu] [--quick]

Columns train/raw (target <= 1.3 tiny/digits, <= 1.10 mnist/wide), hand/train (>= 1.0, wide
>= 0.95) and torch/train (>= 10 tiny, >= 6 digits, >= 1.2 mnist).  `uptime` load is printed
with every row: this machine is shared; repeat a noisy row.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handwritten import HandStep  # noqa: E402
from step_vs_peers import Config, blas_info, build_model, fmt, interleaved  # noqa: E402

import nncompile as nc  # noqa: E402

CONFIGS = [Config("tiny", (2, 8, 1), "tanh", "sigmoid", 4), Config("digits", (64, 32, 10), "tanh", "softmax", 32),
           Config("mnist", (784, 256, 256, 10), "relu", "softmax", 128),
           Config("wide", (1024, 2048, 2048, 10), "relu", "softmax", 256)]
UPDATES = {"tiny": 64, "digits": 32, "mnist": 16, "wide": 4}   # minibatch updates per epoch
LR = 1e-3


CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def dataset(cfg: Config, rows: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, cfg.sizes[0])).astype(dtype)
    if cfg.output == "softmax":
        y = rng.integers(0, cfg.sizes[-1], size=rows)
        return X, y, np.eye(cfg.sizes[-1], dtype=dtype)[y]
    y = rng.integers(0, 2, size=rows)
    return X, y, y.reshape(-1, 1).astype(dtype)


def hand_epoch(cfg: Config, params: dict, X: np.ndarray, T: np.ndarray, batch: int) -> Callable[[], None]:
    layers = [(params[f"dense{k}.W"].copy(), params[f"dense{k}.b"].copy()) for k in range(1, len(cfg.sizes))]
    step = HandStep(layers, cfg.hidden, cfg.output, batch)
    if X.shape[0] == batch:
        return lambda: step(X, T, LR)
    rng, order = np.random.default_rng(0), np.arange(X.shape[0])
    xb, tb = np.empty((batch, X.shape[1]), X.dtype), np.empty((batch, T.shape[1]), T.dtype)

    def epoch() -> None:
        rng.shuffle(order)
        for start in range(0, X.shape[0], batch):
            idx = order[start:start + batch]
            X.take(idx, 0, xb, "clip")
            T.take(idx, 0, tb, "clip")
            step(xb, tb, LR)
    return epoch


def torch_epoch(cfg: Config, dtype: str, params: dict, X: np.ndarray, T: np.ndarray,
                batch: int) -> Callable[[], None]:
    import torch
    tdtype = getattr(torch, dtype)
    mods: list = []
    for k in range(1, len(cfg.sizes)):
        lin = torch.nn.Linear(cfg.sizes[k - 1], cfg.sizes[k], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(params[f"dense{k}.W"].T.copy()))
            lin.bias.copy_(torch.from_numpy(params[f"dense{k}.b"].copy()))
        mods.append(lin)
        if k < len(cfg.sizes) - 1:
            mods.append(torch.nn.ReLU() if cfg.hidden == "relu" else torch.nn.Tanh())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x = torch.from_numpy(X)
    if cfg.output == "softmax":
        target, crit = torch.from_numpy(T.argmax(axis=1)), torch.nn.CrossEntropyLoss()
    else:
        target, crit = torch.from_numpy(T), torch.nn.BCEWithLogitsLoss()

    def step(xb: object, tb: object) -> None:
        opt.zero_grad(set_to_none=True)
        loss = crit(model(xb), tb)
        loss.backward()
        opt.step()

    if X.shape[0] == batch:
        return lambda: step(x, target)
    generator = torch.Generator().manual_seed(0)

    def epoch() -> None:
        order = torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], batch):
            idx = order[start:start + batch]
            step(x[idx], target[idx])
    return epoch


def measure(cfg: Config, mode: str, dtype: str, budget: float, with_torch: bool) -> dict:
    updates = 1 if mode == "gd" else UPDATES[cfg.name]
    rows = cfg.batch * updates
    X, y, T = dataset(cfg, rows, dtype)
    prog = nc.compile(build_model(cfg), dtype=dtype)
    params = prog.init_params(0)
    ws = prog.engine(params).workspace(cfg.batch)
    ws.X[...], ws.T[...] = X[:cfg.batch], T[:cfg.batch]
    raw_step = ws.step_sgd
    raw_step(LR, 1)
    start = clock()
    for _ in range(5):
        raw_step(LR, 1)
    per_update = (clock() - start) / 5
    epochs = max(6, int(0.5 / (per_update * updates)))

    def raw() -> None:
        for _ in range(updates):
            raw_step(LR, 1)

    def train(count: int) -> Callable[[], None]:
        return lambda: nc.train(prog, X, y, mode=mode, batch_size=cfg.batch, epochs=count, lr=LR, params=params)

    contenders: dict[str, Callable[[], object]] = {"short": train(2), "long": train(2 + epochs), "raw": raw,
                                                    "hand": hand_epoch(cfg, params, X, T, cfg.batch)}
    if with_torch:
        import torch
        contenders["torch"] = torch_epoch(cfg, dtype, params, X, T, cfg.batch)
    times = interleaved(contenders, budget * len(contenders), clock)
    times["train"] = (times["long"] - times["short"]) / epochs
    times["setup"] = times["short"] - 2 * times["train"]
    if with_torch and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()  # torch's pool can collapse on tiny ops: credit its best setting
        torch.set_num_threads(1)
        times["torch"] = min(times["torch"], interleaved({"torch": contenders["torch"]}, budget, clock)["torch"])
        torch.set_num_threads(threads)
    times["updates"] = updates
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    parser.add_argument("--modes", default="gd,minibatch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="shorter timing budget per measurement")
    parser.add_argument("--clock", choices=tuple(CLOCK), default="wall",
                        help="wall time, or this thread's CPU time (with --threads 1, on a busy machine)")
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(args.threads)
        with_torch = True
    except ImportError:
        with_torch = False
        print("PyTorch not installed: torch column skipped")
    print(blas_info())
    budget = 0.4 if args.quick else 1.2
    print(f"\n{args.dtype}: {args.clock} time per epoch, {args.threads} thread(s)")
    print(f"{'config':7s} {'mode':9s} {'upd':>4s} {'nc.train':>12s} {'raw step':>12s} {'hand NumPy':>12s} "
          f"{'torch':>12s}   {'train/raw':>9s} {'hand/train':>10s} {'torch/train':>11s} {'set-up':>10s}   load")
    for mode in args.modes.split(","):
        for cfg in (c for c in CONFIGS if c.name in args.configs.split(",")):
            t = measure(cfg, mode, args.dtype, budget, with_torch)
            torch_t = t.get("torch")
            print(f"{cfg.name:7s} {mode:9s} {t['updates']:4d} {fmt(t['train'])} {fmt(t['raw'])} {fmt(t['hand'])} "
                  f"{fmt(torch_t) if torch_t else '           -'}   {t['train'] / t['raw']:9.3f} "
                  f"{t['hand'] / t['train']:10.2f} {(torch_t / t['train']) if torch_t else float('nan'):11.2f} "
                  f"{fmt(t['setup'])}   {load()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
