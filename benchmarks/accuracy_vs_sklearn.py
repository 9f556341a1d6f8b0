"""Held-out accuracy on digits: nncompile vs scikit-learn's MLPClassifier, same network and training.

64-32-10, tanh, softmax + cross-entropy, mini-batch 32, learning rate 0.1 constant, 30
epochs, reshuffled every epoch, no weight penalty, Glorot-uniform initial weights in both.
One fixed 80/20 split (nncompile.data.split, seed 0); each library trains once per seed.
Two solver settings: plain mini-batch SGD, and SGD with Nesterov momentum 0.9 (scikit-
learn's default solver; its velocity form u = 0.9·u - lr·g is PyTorch's v = 0.9·v + g
scaled by -lr, so with a constant learning rate both make the same updates).

    pip install scikit-learn
    python benchmarks/accuracy_vs_sklearn.py [--seeds 10]

Prints a Markdown table (mean ± standard deviation, worst seed) and the time per run.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import nncompile as nc
from nncompile import data, nn

EPOCHS, BATCH, LR = 30, 32, 0.1


def nncompile_accuracy(prog, train, test, seed: int, optimizer: str) -> float:
    result = nc.train(prog, train.X, train.y, mode="minibatch", batch_size=BATCH, epochs=EPOCHS, lr=LR,
                      optimizer=optimizer, seed=seed, init="xavier", evaluate=False)
    return float(np.mean(prog.predict(result.params, test.X) == test.y))


def sklearn_accuracy(train, test, seed: int, optimizer: str) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(32,), activation="tanh", solver="sgd", batch_size=BATCH,
                        learning_rate="constant", learning_rate_init=LR, max_iter=EPOCHS, shuffle=True, alpha=0.0,
                        momentum=0.0 if optimizer == "sgd" else 0.9, nesterovs_momentum=optimizer == "nesterov",
                        tol=0.0, n_iter_no_change=EPOCHS + 1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train.X, train.y)
    return float(np.mean(clf.predict(test.X) == test.y))


def measure(fn, seeds: int) -> tuple[np.ndarray, float]:
    scores, start = [], time.perf_counter()
    for seed in range(seeds):
        scores.append(fn(seed))
    return np.array(scores), (time.perf_counter() - start) / seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    import sklearn
    train, test = data.split(data.digits(), 0.2, seed=0)
    prog = nc.compile(nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="digits_mlp"))
    print(f"digits: {len(train)} training rows, {len(test)} held out; {args.seeds} seeds; "
          f"nncompile {nc.__version__}, scikit-learn {sklearn.__version__}\n")
    print("| solver | library | held-out accuracy (mean ± sd) | worst seed | seconds per run |")
    print("|---|---|---|---|---|")
    for optimizer, label in (("sgd", "mini-batch SGD"), ("nesterov", "SGD + Nesterov momentum 0.9")):
        ours, t_ours = measure(lambda s: nncompile_accuracy(prog, train, test, s, optimizer), args.seeds)
        theirs, t_theirs = measure(lambda s: sklearn_accuracy(train, test, s, optimizer), args.seeds)
        for name, scores, seconds in (("nncompile", ours, t_ours), ("scikit-learn", theirs, t_theirs)):
            print(f"| {label} | {name} | {100 * scores.mean():.2f}% ± {100 * scores.std():.2f} | "
                  f"{100 * scores.min():.2f}% | {seconds:.3f} |")


if __name__ == "__main__":
    main()
