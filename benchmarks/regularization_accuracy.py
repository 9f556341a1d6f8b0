"""Held-out accuracy of the round's examples against the plain MLP they extend, over several seeds.

- examples/resmlp.py (residual blocks with LayerNorm) against the same depth and width without
  the skip connections and the LayerNorms, on `spirals`;
- examples/digits_regularized.py (BatchNorm + Dropout) against the same network without them,
  on `digits`.

Each model trains with its file's `training` settings; a seed sets the 80/20 split (as
`nncompile run` holds out its test split), the initial weights, the shuffles and the masks.

    python benchmarks/regularization_accuracy.py [--seeds 5]

Prints a Markdown table: held-out accuracy, mean ± standard deviation, worst seed.
"""
from __future__ import annotations

import argparse
import runpy
import time
from pathlib import Path

import numpy as np

import nncompile as nc
from nncompile import data, nn

ROOT = Path(__file__).resolve().parent.parent


def plain_spirals_mlp(width: int, blocks: int) -> nn.Model:
    """resmlp without skips and LayerNorm: Dense(width), then blocks × (relu, Dense, relu, Dense), Dense(3)."""
    x = nn.Input(2)
    h = nn.Dense(width)(x)
    for _ in range(blocks):
        h = nn.Dense(width)(nn.ReLU()(nn.Dense(width)(nn.ReLU()(h))))
    return nn.Model(x, nn.Dense(3)(nn.ReLU()(h)), loss=nn.SoftmaxCrossEntropy(), name="plain_spirals")


def plain_digits_mlp() -> nn.Model:
    x = nn.Input(64)
    return nn.Model(x, nn.Dense(10)(nn.ReLU()(nn.Dense(128)(x))), loss=nn.SoftmaxCrossEntropy(), l2=1e-4,
                    name="plain_digits")


def accuracy(model: nn.Model, training: dict, dataset: data.Dataset, seed: int) -> float:
    train, test = data.split(dataset, 0.2, seed)
    prog = nc.compile(model)
    settings = {k: v for k, v in training.items() if k != "optimizer"}
    result = nc.train(prog, train.X, train.y, optimizer=training.get("optimizer", "sgd"), seed=seed,
                      evaluate=False, **settings)
    return float(np.mean(prog.predict(result.params, test.X) == test.y))


def cells(model: nn.Model, training: dict, dataset: data.Dataset, seeds: int) -> str:
    """Table cells: held-out accuracy mean ± sd over the seeds, the worst seed, seconds per run."""
    start = time.perf_counter()
    scores = np.array([accuracy(model, training, dataset, seed) for seed in range(seeds)])
    seconds = (time.perf_counter() - start) / seeds
    return (f"{100 * scores.mean():.2f}% ± {100 * scores.std(ddof=1):.2f} | {100 * scores.min():.2f}% | "
            f"{seconds:.1f} s")


def row(label: str, model: nn.Model, training: dict, dataset: data.Dataset, seeds: int) -> str:
    return f"| {dataset.name} | {label} | {cells(model, training, dataset, seeds)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    example = runpy.run_path(str(ROOT / "examples" / "resmlp.py"))
    regularized = runpy.run_path(str(ROOT / "examples" / "digits_regularized.py"))
    spirals, digits = data.spirals(), data.digits()
    print(f"held-out accuracy (20% of each data set), {args.seeds} seeds\n")
    print("| data | model | accuracy (mean ± sd) | worst seed | time per run |")
    print("|---|---|---|---|---|")
    print(row("resmlp (residual blocks + LayerNorm)", example["model"], example["training"], spirals, args.seeds))
    print(row("the same MLP without skips and LayerNorm", plain_spirals_mlp(example["WIDTH"], example["BLOCKS"]),
              example["training"], spirals, args.seeds))
    print(row("digits_regularized (BatchNorm + Dropout)", regularized["model"], regularized["training"], digits,
              args.seeds))
    print(row("the same MLP without BatchNorm and Dropout", plain_digits_mlp(), regularized["training"], digits,
              args.seeds))


if __name__ == "__main__":
    main()
