"""Generated CUDA training step against PyTorch eager on the same GPU.

One step = forward, loss, backward and the optimizer update, float32, on data already on
the GPU, timed over many steps between two device synchronisations (neither side waits
for the loss each step). Networks:
- 784-256-256-10, ReLU, softmax cross-entropy, batch 128: MNIST-sized, products matter;
- 2-8-1, tanh, sigmoid + binary cross-entropy, batch 4: launch overhead is everything.
nncompile runs with CUDA graphs (the default) and without (one launch per kernel);
the ratio is PyTorch's time over nncompile's with graphs (above 1: nncompile is faster).

    python benchmarks/cuda_vs_torch.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import nncompile as nc
from nncompile import nn

CASES = (
    ("784-256-256-10 relu", 128, 200,
     lambda: nn.Sequential(nn.Dense(256), nn.ReLU(), nn.Dense(256), nn.ReLU(), nn.Dense(10), input_dim=784,
                           loss=nn.SoftmaxCrossEntropy(), name="mnist_mlp")),
    ("2-8-1 tanh", 4, 2000,
     lambda: nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(1), nn.Sigmoid(), input_dim=2,
                           loss=nn.BinaryCrossEntropy(), name="tiny_mlp")),
)
OPTIMIZERS = {"sgd": {}, "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}


def _best(run, steps: int, repeats: int, sync) -> float:
    """Best mean seconds per step over `repeats` timed runs of `steps` steps."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run(steps)
        sync()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def nncompile_step(model: nn.Sequential, X: np.ndarray, labels: np.ndarray, optimizer: str, graphs: bool,
                   steps: int, repeats: int) -> float:
    import cupy
    prog = nc.compile(model, backend="cuda", dtype="float32", cuda_graphs=graphs)
    engine = prog.engine(prog.init_params(0))
    engine.reset_state(optimizer)
    ws = engine.workspace(X.shape[0])
    Xc, T = prog.prepare(X, labels)
    ws.X[...], ws.T[...] = engine.device(Xc), engine.device(T)
    step = getattr(ws, f"step_{optimizer}")
    hyper = tuple(OPTIMIZERS[optimizer].values())
    counter = [1]

    def run(n: int) -> None:
        for _ in range(n):
            step(1e-3, counter[0], *hyper)
            counter[0] += 1

    run(5)  # eager call, capture, replays
    return _best(run, steps, repeats, cupy.cuda.Device().synchronize)


def torch_step(name: str, X: np.ndarray, labels: np.ndarray, optimizer: str, steps: int, repeats: int) -> float:
    import torch
    import torch.nn.functional as F
    device = torch.device("cuda")
    if name.startswith("784"):
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 10))
        y = torch.as_tensor(labels, device=device, dtype=torch.long)

        def loss_of(out):
            return F.cross_entropy(out, y)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        y = torch.as_tensor(labels.reshape(-1, 1), device=device, dtype=torch.float32)

        def loss_of(out):
            return F.binary_cross_entropy_with_logits(out, y)
    net = net.to(device)
    x = torch.as_tensor(X, device=device, dtype=torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3) if optimizer == "sgd" else \
        torch.optim.Adam(net.parameters(), lr=1e-3)

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss_of(net(x)).backward()
            opt.step()

    run(5)
    return _best(run, steps, repeats, torch.cuda.synchronize)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from nncompile.backends.cuda.cupy_support import device_problem
    problem = device_problem()
    if problem:
        print(f"cuda_vs_torch: {problem}", file=sys.stderr)
        return 2
    import cupy
    try:
        import torch
        torch_ok = torch.cuda.is_available()
        torch_version = torch.__version__
    except ImportError:
        torch_ok, torch_version = False, "not installed"
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"device {name} | cupy {cupy.__version__} | torch {torch_version} | float32, data on the GPU")
    print(f"{'network':22s}{'batch':>6s} {'opt':>5s} {'graphs us':>10s} {'no-graph us':>12s} "
          f"{'torch us':>9s} {'torch/graphs':>13s}")
    rng = np.random.default_rng(0)
    for name, batch, steps, make in CASES:
        model = make()
        X = rng.normal(size=(batch, model.input_dim)).astype(np.float32)
        labels = rng.integers(0, model.output_dim if model.output_dim > 1 else 2, size=batch)
        for optimizer in OPTIMIZERS:
            graphed = nncompile_step(model, X, labels, optimizer, True, steps, args.repeats)
            plain = nncompile_step(model, X, labels, optimizer, False, steps, args.repeats)
            theirs = torch_step(name, X, labels, optimizer, steps, args.repeats) if torch_ok else float("nan")
            print(f"{name:22s}{batch:6d} {optimizer:>5s} {graphed * 1e6:10.1f} {plain * 1e6:12.1f} "
                  f"{theirs * 1e6:9.1f} {theirs / graphed:12.2f}x", flush=True)
    if not torch_ok:
        print("PyTorch with CUDA is not available here: its column is empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
