"""How long `nncompile derive` takes, against depth: the derivation, the formulas, and every format.

    python benchmarks/derive_time.py            # depth curve in-process, plus the 20-layer CLI run

Each depth is a stack of Dense(16) + Tanh layers ending in Dense(1) + Sigmoid with binary
cross-entropy; times are the best of 3 runs in one process after one warm-up model (the
registry's SymPy derivatives are cached per activation, as in a real session).  The
20-layer line is the target of issue 3: under 2 seconds, command line included.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nncompile import nn
from nncompile.derive import derive
from nncompile.explain.formulas import Formulas

MODEL_FILE = """from nncompile import nn
layers = []
for _ in range({depth}):
    layers += [nn.Dense(16), nn.Tanh()]
model = nn.Sequential(*layers, nn.Dense(1), nn.Sigmoid(), input_dim=8, loss=nn.BinaryCrossEntropy(), l2=1e-4,
                      name="deep{depth}")
"""


def model(depth: int) -> nn.Sequential:
    layers: list = []
    for _ in range(depth):
        layers += [nn.Dense(16), nn.Tanh()]
    return nn.Sequential(*layers, nn.Dense(1), nn.Sigmoid(), input_dim=8, loss=nn.BinaryCrossEntropy(), l2=1e-4,
                         name=f"deep{depth}")


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def all_formats(depth: int) -> None:
    formulas = Formulas.of(derive(model(depth)))
    for fmt in ("text", "unicode", "latex", "markdown"):
        formulas.render(fmt)


def main() -> int:
    all_formats(1)  # warm-up: imports and the cached local derivatives
    print(f"{'layers':>6}  {'derive (IR)':>11}  {'+ formulas':>10}  {'+ 4 formats':>11}  per layer")
    for depth in (1, 2, 5, 10, 20, 40):
        ir = best(lambda: derive(model(depth)))
        formulas = best(lambda: Formulas.of(derive(model(depth))))
        rendered = best(lambda: all_formats(depth))
        print(f"{depth:>6}  {ir:>10.3f}s  {formulas:>9.3f}s  {rendered:>10.3f}s  {rendered / depth * 1000:.1f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep20.py"
        path.write_text(MODEL_FILE.format(depth=20))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nncompile.cli", "derive", str(path), "--format", "unicode"],
                              capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
    status = "ok" if done.returncode == 0 and elapsed < 2.0 else "OVER THE 2 s TARGET" if done.returncode == 0 \
        else f"failed: {done.stderr.strip()}"
    print(f"nncompile derive, 20 layers, fresh process (imports included): {elapsed:.2f}s, "
          f"{len(done.stdout.splitlines())} lines [{status}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
