"""Gradient check: the compiled gradients against central finite differences of the loss.

The differences use the compiled forward pass and loss only, never the backward code, so
they are an independent check of the derivation (run it in float64).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .program import CompiledProgram


def random_batch(prog: CompiledProgram, rows: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and targets that suit the program's loss (labels, 0/1 or real values)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, prog.module.INPUT_DIM))
    encoding, width = prog.module.TARGET_ENCODING, prog.module.OUTPUT_DIM
    if encoding == "onehot":
        return X, rng.integers(0, width, size=rows)
    if encoding == "binary":
        return X, rng.uniform(0.05, 0.95, size=(rows, width))
    return X, rng.normal(size=(rows, width))


def check_gradients(prog: CompiledProgram, params: Mapping[str, np.ndarray], X: object, Y: object,
                    samples: int = 64, seed: int = 0, step: float = 1e-5) -> dict[str, float]:
    """Largest relative error per parameter: max|g - fd| / max(|g|, |fd|, 1e-7) over the entries checked.

    `samples` entries per parameter are checked (all when 0 or when the parameter is smaller).
    """
    _, grads = prog.loss_and_grad(params, X, Y)
    engine = prog.engine(params)
    Xc, T = prog.prepare(X, Y)
    ws = engine.workspace(Xc.shape[0])
    ws.X[...] = engine.device(Xc)
    ws.T[...] = engine.device(T)
    rng = np.random.default_rng(seed)
    report = {}
    for name, shape, offset, _ in prog.module.PARAMS:
        size = int(np.prod(shape))
        picks = np.arange(size) if samples <= 0 or size <= samples else rng.choice(size, samples, replace=False)
        fd = np.empty(picks.size)
        for j, i in enumerate(picks):
            original = engine.params[offset + i]
            engine.params[offset + i] = original + step
            up = float(engine.fetch(ws.loss())[0])
            engine.params[offset + i] = original - step
            down = float(engine.fetch(ws.loss())[0])
            engine.params[offset + i] = original
            fd[j] = (up - down) / (2 * step)
        g = grads[name].ravel()[picks]
        scale = max(np.abs(g).max(initial=0.0), np.abs(fd).max(initial=0.0), 1e-7)
        report[name] = float(np.abs(g - fd).max(initial=0.0) / scale)
    return report
