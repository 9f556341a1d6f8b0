"""Strong scaling of data-parallel training on this machine: examples/s for K = 1 and K = 2 processes.

    python benchmarks/scaling.py [--configs mnist,wide] [--epochs N] [--repeats R]

For the mnist-size (784-256-256-10) and wide (1024-2048-2048-10) networks, float32, mini-batch
256, plain SGD, synthetic data, each run `nc.train` in its own process(es):
  K=1 2thr   one process, 2 BLAS threads
  K=1 1thr   one process, 1 BLAS thread
  K=2 1thr   mpiexec -n 2, 1 BLAS thread each, one blocking-style allreduce per step
  K=2 ovl    the same with --overlap (each layer's bucket summed while the backward pass goes on)
Each line gives examples/s over the epochs after the first, the time per step, and for K=2 the
time per step spent in the sum across processes (communication) and the rest (compute).
Targets: K=2 >= 1.7x K=1 1thr, and not slower than K=1 2thr.  The machine is shared: the
load average is printed with each line; repeat noisy runs (--repeats takes the best).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = {"mnist": ((784, 256, 256, 10), 32), "wide": ((1024, 2048, 2048, 10), 6)}  # sizes, updates an epoch
BATCH = 256


def worker(config: str, epochs: int, distributed: bool, overlap: bool) -> None:
    """One process: train, time each epoch after the first, and (distributed) the sums."""
    import nncompile as nc
    from nncompile import nn
    sizes, updates = CONFIGS[config]
    layers: list = []
    for width in sizes[1:-1]:
        layers += [nn.Dense(width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Dense(sizes[-1]), input_dim=sizes[0], loss=nn.SoftmaxCrossEntropy(),
                          name=f"scaling_{config}")
    prog = nc.compile(model, dtype="float32")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(BATCH * updates, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=BATCH * updates)
    cluster, comm = None, [0.0]
    if distributed:
        from nncompile.runtime import distributed as parallel
        cluster = parallel.connect(overlap=overlap)
        summing = cluster._sum_gradients

        def timed(engine: object, compute: object) -> None:  # the sum alone: compute's own time is taken out
            started, inner = time.perf_counter(), [0.0]

            def measured(*hook: object) -> None:
                t = time.perf_counter()
                compute(*hook)
                inner[0] += time.perf_counter() - t
            summing(engine, None if compute is None else measured)
            comm[0] += time.perf_counter() - started - inner[0]
        cluster._sum_gradients = timed
    stamps: list[float] = []
    nc.train(prog, X, y, mode="minibatch", batch_size=BATCH, epochs=epochs, lr=1e-3, seed=0,
             distributed=cluster or False, callback=lambda record: stamps.append(time.perf_counter()))
    if cluster is None or cluster.rank == 0:
        steps = (epochs - 1) * updates
        seconds = stamps[-1] - stamps[0]
        print(json.dumps({"examples_per_s": steps * BATCH / seconds, "step": seconds / steps,
                          "comm": comm[0] / (epochs * updates) if distributed else 0.0}))


def run(config: str, epochs: int, k: int, threads: int, overlap: bool) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--epochs", str(epochs)]
    if k > 1:
        mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        command = [mpiexec, "-n", str(k)] + command + ["--distributed"] + (["--overlap"] if overlap else [])
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mnist,wide")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the fastest is kept")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.epochs, args.distributed, args.overlap)
        return 0
    settings = [("K=1 2thr", 1, 2, False), ("K=1 1thr", 1, 1, False), ("K=2 1thr", 2, 1, False),
                ("K=2 ovl", 2, 1, True)]
    print(f"{'config':6s} {'setting':9s} {'examples/s':>11s} {'step':>10s} {'comm/step':>10s} "
          f"{'compute':>10s} {'vs K=1 1thr':>11s} {'vs K=1 2thr':>11s}   load")
    for config in args.configs.split(","):
        base: dict[str, float] = {}
        for label, k, threads, overlap in settings:
            best = max((run(config, args.epochs, k, threads, overlap) for _ in range(args.repeats)),
                       key=lambda r: r["examples_per_s"])
            base[label] = best["examples_per_s"]
            comm = best["comm"]
            print(f"{config:6s} {label:9s} {best['examples_per_s']:11,.0f} {best['step'] * 1e3:8.2f}ms "
                  f"{comm * 1e3:8.2f}ms {(best['step'] - comm) * 1e3:8.2f}ms "
                  f"{best['examples_per_s'] / base.get('K=1 1thr', best['examples_per_s']):11.2f} "
                  f"{best['examples_per_s'] / base['K=1 2thr']:11.2f}   {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
