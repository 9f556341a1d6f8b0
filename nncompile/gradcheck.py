"""Gradient check: the compiled gradients against finite differences of the loss.

The differences use the compiled forward pass and loss only, never the backward code, so
they are an independent check of the derivation (run it in float64).  They use the loss as
training computes it (`train_loss`: batch statistics, the dropout masks of a fixed seed),
the loss `loss_and_grad` differentiates.  Where the loss has a
kink (ReLU at 0, |w| for l1, |y - t|) inside the difference step, the central difference
averages two one-sided slopes and is no gradient at all: such entries are recognised by
their one-sided differences disagreeing, and checked against the one-sided difference from
the side away from the kink, which is the derivative at the point itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .program import CompiledProgram

#: Round-off of a difference quotient, in units of eps·(|L| + 1)/step: disagreements smaller than
#: this come from evaluating the loss in floating point, not from the gradient.
ROUNDOFF = 8


@dataclass(frozen=True)
class ParamCheck:
    """One parameter's result: the largest relative error beyond the differences' own round-off
    (what the verdict uses), how many entries were checked, how many of them lay within a step
    of a kink, and the largest relative error as measured (round-off included, what is shown)."""

    error: float
    entries: int
    at_kink: int
    measured: float = 0.0


def random_batch(prog: CompiledProgram, rows: int = 8, seed: int = 0) -> tuple[object, np.ndarray]:
    """Random inputs and targets that suit the program's loss (labels, 0/1 or real values); X is a list
    of arrays, one per input, for a model with several."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(shape) for shape in prog.module.INPUT_SHAPES]
    X = rng.normal(size=(rows, prog.module.INPUT_DIM))
    if len(shapes) > 1:
        X = np.split(X, np.cumsum([int(np.prod(s)) for s in shapes])[:-1], axis=1)
    encoding, width = prog.module.TARGET_ENCODING, prog.module.OUTPUT_DIM
    if encoding == "onehot":
        return X, rng.integers(0, width, size=rows)
    if encoding == "binary":
        return X, rng.uniform(0.05, 0.95, size=(rows, width))
    return X, rng.normal(size=(rows, width))


def off_the_kinks(params: Mapping[str, np.ndarray], seed: int = 0, scale: float = 0.1) -> dict[str, np.ndarray]:
    """`params` with biases drawn from N(0, scale²) instead of zero.

    Zero biases put kinks exactly under the check (a unit that no input reaches feeds exactly
    0 into the next ReLU); any other point is as good a place to check the gradient.
    """
    rng = np.random.default_rng([seed, 1])
    return {name: value + rng.normal(0.0, scale, value.shape).astype(value.dtype) if name.endswith(".b") else value
            for name, value in params.items()}


def gradient_check(prog: CompiledProgram, params: Mapping[str, np.ndarray], X: object, Y: object,
                   samples: int = 64, seed: int = 0, step: float = 1e-5,
                   threshold: float = 1e-6) -> dict[str, ParamCheck]:
    """Per trainable parameter, the largest relative error |g - fd| / max(|g|, |fd|, floor) over the entries
    checked, less the differences' own round-off (ROUNDOFF·eps·(|L| + 1)/step).

    The floor is 1e-7, or 1e-3 of the largest gradient entry of the model when that is more:
    a gradient that is exactly zero (a bias before BatchNorm, which subtracts it again) is then
    measured against the model's scale, not against the finite differences' rounding noise.
    Dropout masks are drawn from `seed`.

    `samples` entries per parameter are checked (all when 0 or when the parameter is smaller).
    An entry whose central difference misses by more than `threshold` while its forward and
    backward differences disagree (a kink within the step) is measured against the nearer
    of the two (second-order one-sided differences) and counted in `at_kink`.
    """
    loss, grads = prog.loss_and_grad(params, X, Y, seed=seed)
    noise = ROUNDOFF * np.finfo(np.float64).eps * (abs(float(loss)) + 1.0) / step  # the differences' own error
    engine = prog.engine(params)
    engine.set_seed(seed)
    Xc, T = prog.prepare(X, Y)
    ws = engine.workspace(Xc.shape[0])
    ws.X[...] = engine.device(Xc)
    ws.T[...] = engine.device(T)
    run_loss = getattr(ws, "train_loss", ws.loss)

    def train_loss() -> float:
        return float(engine.fetch(run_loss())[0])  # a classifier's loss comes with its correct count
    rng = np.random.default_rng(seed)
    floor = max(1e-7, 1e-3 * max(float(np.abs(g).max(initial=0.0)) for g in grads.values()))
    report = {}
    for name, shape, offset, _ in prog.module.PARAMS:
        if name not in grads:  # a buffer (running statistics): no gradient
            continue
        size = int(np.prod(shape))
        picks = np.arange(size) if samples <= 0 or size <= samples else rng.choice(size, samples, replace=False)
        central = np.array([_difference(engine, train_loss, offset + int(i), step, (1, -1), (1, -1))
                            for i in picks])
        g = grads[name].ravel()[picks]
        scale = max(np.abs(g).max(initial=0.0), np.abs(central).max(initial=0.0), floor)
        misses = np.abs(g - central)
        errors = np.maximum(misses - noise, 0.0) / scale
        at_kink = 0
        for j in np.flatnonzero(errors > threshold):  # a kink inside the step, or a wrong gradient
            index = offset + int(picks[j])
            forward = _difference(engine, train_loss, index, step, (0, 1, 2), (-3, 4, -1))
            backward = _difference(engine, train_loss, index, step, (0, -1, -2), (3, -4, 1))
            if abs(forward - backward) / scale > threshold:
                at_kink += 1
                misses[j] = min(abs(g[j] - forward), abs(g[j] - backward))
                errors[j] = max(misses[j] - 4 * noise, 0.0) / scale
        report[name] = ParamCheck(float(errors.max(initial=0.0)), int(picks.size), at_kink,
                                  float(misses.max(initial=0.0)) / scale)
    return report


def check_gradients(prog: CompiledProgram, params: Mapping[str, np.ndarray], X: object, Y: object,
                    samples: int = 64, seed: int = 0, step: float = 1e-5) -> dict[str, float]:
    """Largest relative error per parameter (see `gradient_check`)."""
    return {name: r.error for name, r in gradient_check(prog, params, X, Y, samples, seed, step).items()}


def _difference(engine: object, loss: Callable[[], object], index: int, h: float, steps: tuple[int, ...],
                weights: tuple[int, ...]) -> float:
    """Σ weight·L(p + step·h) / (2h) in one flat parameter entry p: (1, -1) at (h, -h) is the
    central difference; (-3, 4, -1) at (0, h, 2h) the second-order forward one, and its mirror."""
    original = engine.params[index]
    total = 0.0
    for k, weight in zip(steps, weights):
        engine.params[index] = original + k * h
        total += weight * float(loss())
    engine.params[index] = original
    return total / (2 * h)
