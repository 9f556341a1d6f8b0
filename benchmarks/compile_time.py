"""Compile time: cold (derive + render + write + import, fresh process and cache) and warm.

    python benchmarks/compile_time.py [--depths 5,10,20,40] [--blocks 5,10,20] [--repeats 3]

Each cold measurement runs in a new Python process with an empty cache folder, after
`import nncompile` (the import itself, mostly SymPy's, is reported separately), so no
memoized derivative from an earlier compile helps it. Prints the digits model, a depth
curve of tanh MLPs (width 32) with the time per layer, a curve of residual LayerNorm
models (blocks h + Dense(relu(Dense(LayerNorm(h)))), width 64) with the time per block,
and a warm (cache hit) compile.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import nncompile as nc
from nncompile import nn
t1 = time.perf_counter()
depth = int(sys.argv[1])
if depth < 0:    # -k: k residual LayerNorm blocks
    x = nn.Input(64)
    h = nn.Dense(64)(x)
    for _ in range(-depth):
        h = h + nn.Dense(64)(nn.ReLU()(nn.Dense(64)(nn.LayerNorm()(h))))
    model = nn.Model(x, nn.Dense(10)(nn.LayerNorm()(h)), loss=nn.SoftmaxCrossEntropy(), name=f"res{-depth}")
elif depth == 0:   # the digits model of the examples
    model = nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                          loss=nn.CrossEntropy(), name="digits_mlp")
else:
    layers = []
    for _ in range(depth - 1):
        layers += [nn.Dense(32), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Dense(10), nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(),
                          name=f"deep{depth}")
t2 = time.perf_counter()
nc.compile(model)
t3 = time.perf_counter()
nc.compile(model)      # same process: the module is imported again from the cache
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "cold": t3 - t2, "warm": t4 - t3}))
"""


def measure(depth: int, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run([sys.executable, "-c", CHILD, str(depth)], capture_output=True, text=True,
                                 check=True, env={"NNCOMPILE_CACHE_DIR": cache, "PATH": "/usr/bin:/bin"})
            runs.append(json.loads(out.stdout))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="5,10,20,40")
    parser.add_argument("--blocks", default="5,10,20")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    digits = measure(0, args.repeats)
    print(f"import nncompile: {digits['import']:.3f} s (not part of a compile)")
    print(f"digits 64-32-10: cold compile {digits['cold']:.3f} s, warm (cache hit) {digits['warm'] * 1e3:.1f} ms")
    print(f"\n{'layers':>6s} {'cold compile':>13s} {'per layer':>10s} {'warm':>9s}")
    for depth in (int(d) for d in args.depths.split(",")):
        t = measure(depth, args.repeats)
        print(f"{depth:6d} {t['cold']:12.3f}s {t['cold'] / depth * 1e3:8.1f}ms {t['warm'] * 1e3:7.1f}ms")
    print(f"\n{'residual LayerNorm blocks':>25s} {'cold compile':>13s} {'per block':>10s} {'warm':>9s}")
    for blocks in (int(b) for b in args.blocks.split(",") if b):
        t = measure(-blocks, args.repeats)
        print(f"{blocks:25d} {t['cold']:12.3f}s {t['cold'] / blocks * 1e3:8.1f}ms {t['warm'] * 1e3:7.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
