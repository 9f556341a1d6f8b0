"""Median time of one training step (forward, loss, all gradients, SGD update), as ratios.

Compares, in one process on the same data and dtype:
  generated  the step nncompile generates (`step_sgd` of the NumPy backend)
  hand       a careful hand-written NumPy step (benchmarks/handwritten.py)
  torch      PyTorch eager: nn.Sequential + torch.optim.SGD, zero_grad(set_to_none=True); the
             faster of --threads and 1 thread (torch's pool can stall on tiny ops)
  gemm       the step's matrix products alone, back to back with np.matmul(out=) (the floor)
and the trainer: one `nc.train` minibatch epoch against the raw step time x steps.

    python benchmarks/step_vs_peers.py [--quick] [--dtype float32|float64|both] [--configs tiny1,digits,...]

Ratios > 1 mean the generated step is faster. Threads are pinned to --threads (default 2)
for NumPy's BLAS and for torch. Run on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handwritten import HandStep  # noqa: E402

import nncompile as nc  # noqa: E402
from nncompile import nn  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    hidden: str          # "tanh" or "relu"
    output: str          # "softmax" (cross-entropy) or "sigmoid" (binary cross-entropy)
    batch: int


CONFIGS = [
    Config("tiny1", (2, 8, 1), "tanh", "sigmoid", 1),
    Config("tiny4", (2, 8, 1), "tanh", "sigmoid", 4),
    Config("digits", (64, 32, 10), "tanh", "softmax", 32),
    Config("mnist", (784, 256, 256, 10), "relu", "softmax", 128),
    Config("wide", (1024, 2048, 2048, 10), "relu", "softmax", 256),
]


def build_model(cfg: Config) -> nn.Sequential:
    layers: list[nn.Layer] = []
    for width in cfg.sizes[1:-1]:
        layers += [nn.Dense(width), nn.ReLU() if cfg.hidden == "relu" else nn.Tanh()]
    layers.append(nn.Dense(cfg.sizes[-1]))
    if cfg.output == "softmax":
        layers.append(nn.Softmax())
        loss = nn.CrossEntropy()
    else:
        layers.append(nn.Sigmoid())
        loss = nn.BinaryCrossEntropy()
    return nn.Sequential(*layers, input_dim=cfg.sizes[0], loss=loss, name=f"bench_{cfg.name}")


def data(cfg: Config, dtype: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(cfg.batch, cfg.sizes[0])).astype(dtype)
    if cfg.output == "softmax":
        labels = rng.integers(0, cfg.sizes[-1], size=cfg.batch)
        T = np.eye(cfg.sizes[-1], dtype=dtype)[labels]
    else:
        T = rng.integers(0, 2, size=(cfg.batch, 1)).astype(dtype)
    return X, T


def _calls_per_repeat(fn: Callable[[], object], seconds: float) -> int:
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        fn()
        calls += 1
    return max(1, int(calls * seconds / max(time.perf_counter() - start, 1e-9)))


def median_time(fn: Callable[[], object], budget: float) -> float:
    """Median seconds per call over 7 repeats that each last ~budget/7 seconds."""
    return interleaved({"fn": fn}, budget)["fn"]


def interleaved(fns: dict[str, Callable[[], object]], budget: float,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternating rounds.

    Taking turns (7 rounds of ~budget/7 s each) spreads any slow patch of a shared machine
    over every contender instead of charging it to whichever ran at that moment.  `clock`:
    the wall clock, or a CPU-time clock (time.process_time, time.thread_time), which other
    jobs on a shared machine do not inflate (meaningful with one BLAS thread).
    """
    repeats = {name: _calls_per_repeat(fn, budget / 7) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(7):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(repeats[name]):
                fn()
            samples[name].append((clock() - t0) / repeats[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def generated_step(cfg: Config, dtype: str, params: dict, X: np.ndarray, T: np.ndarray, lr: float):
    prog = nc.compile(build_model(cfg), dtype=dtype)
    engine = prog.engine(params)
    ws = engine.workspace(cfg.batch)
    ws.X[...], ws.T[...] = X, T
    step = ws.step_sgd
    return (lambda: step(lr, 1)), prog, engine


def hand_step(cfg: Config, params: dict, X: np.ndarray, T: np.ndarray, lr: float):
    layers = [(params[f"dense{k}.W"].copy(), params[f"dense{k}.b"].copy()) for k in range(1, len(cfg.sizes))]
    step = HandStep(layers, cfg.hidden, cfg.output, cfg.batch)
    return lambda: step(X, T, lr)


def torch_step(cfg: Config, dtype: str, params: dict, X: np.ndarray, T: np.ndarray, lr: float):
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
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x = torch.from_numpy(X)
    if cfg.output == "softmax":
        target = torch.from_numpy(T.argmax(axis=1))
        crit = torch.nn.CrossEntropyLoss()
    else:
        target = torch.from_numpy(T)
        crit = torch.nn.BCEWithLogitsLoss()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = crit(model(x), target)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def gemm_floor(cfg: Config, dtype: str, X: np.ndarray) -> Callable[[], None]:
    """The step's GEMMs alone: forward x@W, backward h.T@dz and dz@W.T (none for the input)."""
    n, sizes = cfg.batch, cfg.sizes
    ws = [np.ones((sizes[k], sizes[k + 1]), dtype) for k in range(len(sizes) - 1)]
    hs = [X] + [np.ones((n, s), dtype) for s in sizes[1:]]
    dz = [np.ones((n, s), dtype) for s in sizes[1:]]
    gw = [np.empty_like(w) for w in ws]
    dh = [np.empty((n, s), dtype) for s in sizes[1:-1]]

    def run() -> None:
        for k, w in enumerate(ws):
            np.matmul(hs[k], w, out=hs[k + 1])
        for k in range(len(ws) - 1, -1, -1):
            np.matmul(hs[k].T, dz[k], out=gw[k])
            if k > 0:
                np.matmul(dz[k], ws[k].T, out=dh[k - 1])
    return run


def trainer_overhead(cfg: Config, dtype: str, prog: nc.CompiledProgram, params: dict,
                     step: Callable[[], object]) -> float:
    """nc.train (minibatch, 3 epochs, no per-epoch evaluation) / (raw step time x updates made).

    The data set holds 200 batches (40 for mnist, 8 for wide); the ratio includes shuffling,
    gathering each batch into the step's buffers, the per-epoch bookkeeping and the one-time
    set-up (data checks, one-hot targets, workspace allocation) spread over the 3 epochs.
    """
    batches = 200 if cfg.batch < 64 else 40 if cfg.sizes[1] < 1000 else 8
    rows = cfg.batch * batches
    rng = np.random.default_rng(1)
    Xd = rng.normal(size=(rows, cfg.sizes[0])).astype(dtype)
    yd = rng.integers(0, max(cfg.sizes[-1], 2), size=rows) if cfg.output == "softmax" else rng.integers(0, 2, rows)

    def train() -> None:
        nc.train(prog, Xd, yd, mode="minibatch", batch_size=cfg.batch, epochs=3, lr=1e-3, params=params,
                 evaluate=False)
    times = interleaved({"step": step, "train": train}, 2.0)
    return times["train"] / (times["step"] * batches * 3)


def run(cfg: Config, dtype: str, budget: float, with_torch: bool) -> dict:
    rng = np.random.default_rng(0)
    X, T = data(cfg, dtype, rng)
    prog = nc.compile(build_model(cfg), dtype=dtype)
    params = prog.init_params(0)
    lr = 1e-3
    gen, prog, _ = generated_step(cfg, dtype, params, X, T, lr)
    hand = hand_step(cfg, params, X, T, lr)
    contenders = {"generated": gen, "hand": hand}
    if with_torch:
        import torch
        contenders["torch"] = torch_step(cfg, dtype, params, X, T, lr)
    first = {name: fn() for name, fn in contenders.items()}
    if len(cfg.sizes) > 3:
        contenders["gemm"] = gemm_floor(cfg, dtype, X)
    times = interleaved(contenders, budget * len(contenders))
    if with_torch and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()  # torch's pool can collapse on tiny ops: credit its best setting
        torch.set_num_threads(1)
        times["torch"] = min(times["torch"], median_time(contenders["torch"], budget))
        torch.set_num_threads(threads)
    times["trainer_ratio"] = trainer_overhead(cfg, dtype, prog, params, gen)
    times["first_loss_agree"] = max(abs(v - first["generated"]) / max(abs(first["generated"]), 1e-12)
                                    for v in first.values())
    return times


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
        info = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')} threads={i['num_threads']}"
                for i in threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        info = ["threadpoolctl not installed"]
    cores = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    return f"BLAS: {'; '.join(info)}; env {cores}; numpy {np.__version__}; cpu count {os.cpu_count()}"


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:9.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="shorter timing budget per measurement")
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(args.threads)
        with_torch, torch_note = True, f"torch {torch.__version__}"
    except ImportError:
        with_torch, torch_note = False, "PyTorch not installed: torch column skipped (pip install torch==2.13.0)"
    print(blas_info())
    print(torch_note)
    budget = 0.35 if args.quick else 1.0
    chosen = [c for c in CONFIGS if c.name in args.configs.split(",")]
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    for dtype in dtypes:
        print(f"\n{dtype}: median time per training step (forward, loss, gradients, SGD update)")
        print(f"{'config':8s} {'generated':>12s} {'hand NumPy':>12s} {'torch':>12s} {'GEMMs only':>12s}   "
              f"{'hand/gen':>8s} {'torch/gen':>9s} {'gen/GEMM':>8s} {'train/step':>10s}")
        for cfg in chosen:
            t = run(cfg, dtype, budget, with_torch)
            gen = t["generated"]
            torch_t = t.get("torch")
            gemm = t.get("gemm")
            print(f"{cfg.name:8s} {fmt(gen)} {fmt(t['hand'])} {fmt(torch_t) if torch_t else '           -'} "
                  f"{fmt(gemm) if gemm else '           -'}   {t['hand'] / gen:8.2f} "
                  f"{(torch_t / gen) if torch_t else float('nan'):9.2f} {(gen / gemm) if gemm else float('nan'):8.2f} "
                  f"{t['trainer_ratio']:10.2f}"
                  + ("" if t["first_loss_agree"] < 1e-4 else f"   (first losses differ: {t['first_loss_agree']:.1e})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
