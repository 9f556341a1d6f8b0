"""Where the generated step's time goes: every line of `step_sgd`, timed on its own.

    python benchmarks/profile_step.py [--config mnist] [--dtype float32] [--threads 2] [--top 12]

Each line of the generated step (a NumPy call with its formula comment) is executed
repeatedly in the step's own closure variables; the table shows the costliest lines and
the share of the matrix products, which is the floor a NumPy program cannot go under.
Line times add up to a little more than the step (each timing adds a dispatch).
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_vs_peers import CONFIGS, build_model, data, median_time  # noqa: E402

import nncompile as nc  # noqa: E402


def line_times(fn: object, module: object, repeats: int) -> list[tuple[float, str]]:
    """(seconds, source line) for each executable line of a generated closure."""
    env = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))
    env.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    env.update(np=np, lr=1e-3, step=1)
    timed = []
    for line in inspect.getsource(fn).splitlines()[2:]:
        code = line.strip()
        if not code or code.startswith(("#", "return", '"""')):
            continue
        compiled = compile(code, "<line>", "exec")
        exec(compiled, env)
        start = time.perf_counter()
        for _ in range(repeats):
            exec(compiled, env)
        timed.append(((time.perf_counter() - start) / repeats, code))
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mnist", choices=[c.name for c in CONFIGS])
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        print("threadpoolctl not installed: BLAS threads not pinned")
    cfg = next(c for c in CONFIGS if c.name == args.config)
    X, T = data(cfg, args.dtype, np.random.default_rng(0))
    prog = nc.compile(build_model(cfg), dtype=args.dtype)
    engine = prog.engine(prog.init_params(0))
    ws = engine.workspace(cfg.batch)
    ws.X[...], ws.T[...] = X, T
    step = median_time(lambda: ws.step_sgd(1e-3, 1), 1.0)
    timed = line_times(ws.step_sgd, prog.module, 20 if cfg.batch >= 128 else 2000)
    total = sum(t for t, _ in timed)
    gemm = sum(t for t, code in timed if code.startswith("np.dot(") and "ones_" not in code)
    print(f"{cfg.name} {args.dtype}, {args.threads} BLAS threads: step {step * 1e6:.1f} us; lines add up to "
          f"{total * 1e6:.1f} us, of which matrix products {gemm * 1e6:.1f} us ({100 * gemm / total:.0f}%)")
    for t, code in sorted(timed, reverse=True)[:args.top]:
        print(f"{t * 1e6:10.2f} us  {code[:120]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
