"""One training step of a CNN (forward, loss, every gradient, SGD update), as ratios, in one process:

  generated  the step nncompile generates (`step_sgd` of the NumPy backend)
  hand       a hand-written NumPy im2col + GEMM step (benchmarks/handwritten_cnn.py)
  torch      PyTorch eager: torch.nn layers + torch.optim.SGD (zero_grad(set_to_none=True))
  gemm       the generated step's matrix products alone (its np.dot calls, back to back)

on two networks: the digits CNN of examples/digits_cnn.py (1x8x8 images, batch 32) and a LeNet-style
net on 28x28 inputs (conv 5x5x6, max-pool 2, conv 5x5x16, max-pool 2, Dense 120, 84, 10; ReLU;
batch 64).  Then where the generated step's time goes, op kind by op kind (each statement timed
alone, in a loop): the GEMMs' share, and what limits the rest.

    python benchmarks/conv_step.py [--threads 1] [--dtype float32|float64|both] [--quick] [--cpu]

Ratios > 1 mean the generated step is faster.  BLAS (and torch) use --threads threads; the
environment variables are set before NumPy loads.  --cpu times the process's CPU time instead
of the wall clock: with one thread it leaves out the waits of a machine other jobs share.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable


def _threads() -> int:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
    return 1


for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(_threads())

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handwritten_cnn import from_params  # noqa: E402
from step_vs_peers import interleaved  # noqa: E402

import nncompile as nc  # noqa: E402
from nncompile import load_model, nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def digits_cnn() -> nn.Sequential:
    return load_model(str(ROOT / "examples" / "digits_cnn.py"))[0]


def lenet() -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(6, 5), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(16, 5), nn.ReLU(), nn.MaxPool2D(2),
                         nn.Flatten(), nn.Dense(120), nn.ReLU(), nn.Dense(84), nn.ReLU(), nn.Dense(10),
                         input_shape=(1, 28, 28), loss=nn.SoftmaxCrossEntropy(), name="lenet")


#: name -> (model, batch, the hand-written spec: (kind, nncompile layer name))
NETWORKS = {
    "digits_cnn": (digits_cnn, 32, [("conv:1", "conv1"), ("bn", "batchnorm1"), ("relu", ""), ("maxpool", ""),
                                    ("conv:1", "conv2"), ("bn", "batchnorm2"), ("relu", ""), ("maxpool", ""),
                                    ("flatten", ""), ("dense", "dense1"), ("relu", ""), ("dense", "dense2")]),
    "lenet": (lenet, 64, [("conv:0", "conv1"), ("relu", ""), ("maxpool", ""), ("conv:0", "conv2"), ("relu", ""),
                          ("maxpool", ""), ("flatten", ""), ("dense", "dense1"), ("relu", ""), ("dense", "dense2"),
                          ("relu", ""), ("dense", "dense3")]),
}


CLOCK = time.process_time if "--cpu" in sys.argv else time.perf_counter


def torch_step(model: nn.Sequential, params: dict, X: np.ndarray, T: np.ndarray, lr: float, dtype: str):
    import torch
    torch.set_num_threads(_threads())
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            conv = torch.nn.Conv2d(params[f"{layer.name}.W"].shape[1], layer.filters, layer.kernel, layer.stride,
                                   layer.padding)
            conv.weight.data, conv.bias.data = (torch.tensor(params[f"{layer.name}.{p}"]) for p in "Wb")
            layers.append(conv)
        elif kind == "BatchNorm":
            bn = torch.nn.BatchNorm2d(params[f"{layer.name}.gamma"].shape[0], eps=layer.eps, momentum=layer.momentum)
            layers.append(bn)
        elif kind == "Dense":
            dense = torch.nn.Linear(*params[f"{layer.name}.W"].shape)
            dense.weight.data = torch.tensor(params[f"{layer.name}.W"].T.copy())
            dense.bias.data = torch.tensor(params[f"{layer.name}.b"])
            layers.append(dense)
        else:
            layers.append({"ReLU": torch.nn.ReLU(), "MaxPool2D": torch.nn.MaxPool2d(2),
                           "Flatten": torch.nn.Flatten()}[kind if kind != "Activation" else "ReLU"])
    net = torch.nn.Sequential(*layers).to(getattr(torch, dtype))
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    x, labels = torch.tensor(X), torch.tensor(T.argmax(axis=1))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), labels)
        loss.backward()
        optimizer.step()
    return step


def statements(fn: Callable) -> list[tuple[str, str, object, dict]]:
    """(op header, first code line, compiled statement, namespace) of each statement of a generated entry point."""
    namespace = dict(fn.__globals__)
    namespace.update({name: cell.cell_contents for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ())})
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()[1:]
    namespace.update(dict(zip(inspect.signature(fn).parameters, (0.01, 1))))
    found, header, block = [], "", None
    for line in lines:
        text = line.strip()
        if text.startswith("# forward:") or text.startswith("# backward:") or text.startswith("# loss:") \
                or text.startswith("# update:"):
            header = text[2:]
            continue
        if not text or text.startswith(("#", '"""', "return")):
            continue
        if line.startswith("        ") and block is not None:   # the body of a `for` line
            block[0].append(line)
            continue
        block = ([line], header)
        found.append(block)
    return [(h, code[0].strip(), compile(textwrap.dedent("\n".join(code)), "step", "exec"), namespace)
            for code, h in found]


def kind_of(header: str, code: str) -> str:
    if "np.dot(" in code:
        return "GEMM"
    if "conv2d(" in header:
        return "im2col (copy)" if "cols6" in code or "xin_" in code else "bias add"
    if "conv2d_input_grad" in header:
        return "col2im (slice-adds)"
    if "conv2d_weight_grad" in header:
        return "bias gradient (row sums)"
    if "pool" in header:
        return "pooling"
    if "bn" in header.split("=")[0] or "_bn" in header:
        return "BatchNorm2d"
    if header.startswith("update"):
        return "SGD update"
    return "elementwise / loss / small Dense"


def breakdown(step: Callable, repeat: int) -> tuple[dict[str, float], float]:
    """Seconds per kind of statement, each statement run alone `repeat` times; and the GEMMs' total."""
    totals: dict[str, float] = {}
    for header, code, compiled, namespace in statements(step):
        with np.errstate(all="ignore"):   # (a statement run again on its own output may overflow: a softmax)
            exec(compiled, namespace)
        with np.errstate(all="ignore"):
            t0 = CLOCK()
            for _ in range(repeat):
                exec(compiled, namespace)
            seconds = (CLOCK() - t0) / repeat
        kind = kind_of(header, code)
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals, totals.get("GEMM", 0.0)


def run(name: str, dtype: str, budget: float) -> dict:
    build, batch, spec = NETWORKS[name]
    model = build()
    prog = nc.compile(model, dtype=dtype)
    params = prog.init_params(0)
    rng = np.random.default_rng(0)
    shape = prog.module.INPUT_SHAPES[0]
    X = rng.normal(size=(batch, *shape)).astype(dtype)
    T = np.eye(10, dtype=dtype)[rng.integers(0, 10, size=batch)]
    lr = 0.01
    engine = prog.engine(params)
    ws = engine.workspace(batch)
    ws.X[...], ws.T[...] = prog.prepare(X, T)
    generated = ws.step_sgd
    hand = from_params(spec, {k: v.astype(dtype) for k, v in params.items()})
    contenders = {"generated": lambda: generated(lr, 1), "hand": lambda: hand.step(X, T, lr)}
    try:
        contenders["torch"] = torch_step(model, params, X, T, lr, dtype)
    except ImportError:
        pass
    times = interleaved(contenders, budget / 20, CLOCK)
    kinds, gemm = breakdown(generated, 50)
    return {"times": times, "kinds": kinds, "gemm": gemm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="both", choices=("float32", "float64", "both"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="time CPU time, not the wall clock")
    args = parser.parse_args()
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    clock = "CPU time" if args.cpu else "wall clock"
    print(f"NumPy {np.__version__}, {args.threads} BLAS thread(s); {clock}, median of 7 alternating rounds\n")
    print(f"{'network (batch)':<18} {'dtype':<8} {'generated':>10} {'hand':>10} {'torch':>10} {'GEMMs':>9} "
          f"{'hand/gen':>9} {'torch/gen':>9} {'GEMM share':>10}")
    details = []
    for name in NETWORKS:
        for dtype in dtypes:
            result = run(name, dtype, 1.0 if args.quick else 4.0)
            t = result["times"]
            gen, share = t["generated"], result["gemm"] / sum(result["kinds"].values())
            torch_text = f"{t['torch'] * 1e3:8.2f}ms" if "torch" in t else "         -"
            torch_ratio = f"{t['torch'] / gen:8.2f}x" if "torch" in t else "        -"
            print(f"{name + ' (' + str(NETWORKS[name][1]) + ')':<18} {dtype:<8} {gen * 1e3:8.2f}ms "
                  f"{t['hand'] * 1e3:8.2f}ms {torch_text} {result['gemm'] * 1e3:7.2f}ms {t['hand'] / gen:8.2f}x "
                  f"{torch_ratio} {100 * share:9.0f}%")
            details.append((name, dtype, result["kinds"]))
    print("\nwhere the generated step's time goes (each statement timed alone; sums differ a little from the step):")
    for name, dtype, kinds in details:
        total = sum(kinds.values())
        parts = ", ".join(f"{kind} {100 * seconds / total:.0f}%" for kind, seconds in
                          sorted(kinds.items(), key=lambda item: -item[1]))
        print(f"  {name} {dtype}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
