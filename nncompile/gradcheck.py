"""Gradient check: the compiled gradients against central finite differences of the loss.

The differences use the compiled forward pass and loss only, never the backward code, so
they are an independent check of the derivation (run it in float64).  They use the loss as
training computes it (`train_loss`: batch statistics, the dropout masks of a fixed seed),
the loss `loss_and_grad` differentiates.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .program import CompiledProgram


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


def check_gradients(prog: CompiledProgram, params: Mapping[str, np.ndarray], X: object, Y: object,
                    samples: int = 64, seed: int = 0, step: float = 1e-5) -> dict[str, float]:
    """Largest relative error per trainable parameter: max|g - fd| / max(|g|, |fd|, floor) over the entries checked.

    The floor is 1e-7, or 1e-3 of the largest gradient entry of the model when that is more:
    a gradient that is exactly zero (a bias before BatchNorm, which subtracts it again) is then
    measured against the model's scale, not against the finite differences' rounding noise.
    `samples` entries per parameter are checked (all when 0 or when the parameter is smaller);
    dropout masks are drawn from `seed`.
    """
    _, grads = prog.loss_and_grad(params, X, Y, seed=seed)
    engine = prog.engine(params)
    engine.set_seed(seed)
    Xc, T = prog.prepare(X, Y)
    ws = engine.workspace(Xc.shape[0])
    ws.X[...] = engine.device(Xc)
    ws.T[...] = engine.device(T)
    loss = getattr(ws, "train_loss", ws.loss)
    rng = np.random.default_rng(seed)
    floor = max(1e-7, 1e-3 * max(float(np.abs(g).max(initial=0.0)) for g in grads.values()))
    report = {}
    for name, shape, offset, _ in prog.module.PARAMS:
        if name not in grads:  # a buffer (running statistics): no gradient
            continue
        size = int(np.prod(shape))
        picks = np.arange(size) if samples <= 0 or size <= samples else rng.choice(size, samples, replace=False)
        fd = np.empty(picks.size)
        for j, i in enumerate(picks):
            original = engine.params[offset + i]
            engine.params[offset + i] = original + step
            up = float(loss())
            engine.params[offset + i] = original - step
            down = float(loss())
            engine.params[offset + i] = original
            fd[j] = (up - down) / (2 * step)
        g = grads[name].ravel()[picks]
        scale = max(np.abs(g).max(initial=0.0), np.abs(fd).max(initial=0.0), floor)
        report[name] = float(np.abs(g - fd).max(initial=0.0) / scale)
    return report
