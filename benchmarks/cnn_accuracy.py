"""Held-out accuracy of examples/digits_cnn.py (digits as 1x8x8 images) against the MLPs, over several seeds.

- examples/digits_cnn.py: two 3x3 convolutions with BatchNorm2d, ReLU and 2x2 max-pooling, then
  Dense 64 and 10;
- the same CNN without its BatchNorm layers;
- examples/digits.py, the MLP (64-32-10 tanh), with its own settings, and the same MLP trained
  as the CNN is (SGD with momentum 0.9, lr 0.05).

Each model trains with its file's `training` settings (30 epochs of mini-batches of 32); a seed
sets the 80/20 split (as `nncompile run` holds out its test split), the initial weights and the
shuffles.

    python benchmarks/cnn_accuracy.py [--seeds 5]

Prints a Markdown table: held-out accuracy, mean ± standard deviation, worst seed, time per run.
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularization_accuracy import cells  # noqa: E402

from nncompile import data, nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cnn_without_batchnorm() -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(16, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2), nn.Conv2D(32, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(64), nn.ReLU(), nn.Dense(10),
                         input_shape=(1, 8, 8), loss=nn.SoftmaxCrossEntropy(), name="digits_cnn_plain")


def row(label: str, model: nn.Model, training: dict, dataset: data.Dataset, seeds: int) -> str:
    return f"| {label} | {cells(model, training, dataset, seeds)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    cnn = runpy.run_path(str(ROOT / "examples" / "digits_cnn.py"))
    mlp = runpy.run_path(str(ROOT / "examples" / "digits.py"))
    digits = data.digits()
    print(f"digits: held-out accuracy (359 of 1797 images), {args.seeds} seeds\n")
    print("| model | accuracy (mean ± sd) | worst seed | time per run |")
    print("|---|---|---|---|")
    print(row("digits_cnn (conv + BatchNorm2d + max-pool, x2; Dense 64)", cnn["model"], cnn["training"], digits,
              args.seeds))
    print(row("the same CNN without BatchNorm2d", cnn_without_batchnorm(), cnn["training"], digits, args.seeds))
    print(row("digits MLP 64-32-10 tanh (its own settings)", mlp["model"], mlp["training"], digits, args.seeds))
    print(row("digits MLP, trained as the CNN", mlp["model"], cnn["training"], digits, args.seeds))


if __name__ == "__main__":
    main()
