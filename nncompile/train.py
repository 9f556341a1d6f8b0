"""`nc.train`: full-batch GD, per-example SGD or mini-batch SGD over a compiled program.

The trainer sees the compiled step only (through `CompiledProgram.engine()`): it checks
the data once, shuffles with its own seeded generator each epoch, gathers each batch into
the step's preallocated input buffers, and records one history entry per epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import runtime
from .errors import DataError, DivergenceError
from .program import CompiledProgram, data_errors

MODES = ("gd", "sgd", "minibatch")


@dataclass
class TrainResult:
    """Trained parameters (layer order) and one history dict per epoch."""

    params: dict[str, np.ndarray]
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def _hyper(optimizer: str, kwargs: Mapping[str, object]) -> dict[str, float]:
    """PyTorch-style keywords (betas=(b1, b2)) to the rule's hyperparameter names."""
    hyper = dict(kwargs)
    if "betas" in hyper:
        beta1, beta2 = hyper.pop("betas")
        hyper.update(beta1=beta1, beta2=beta2)
    return hyper


def _split(X: np.ndarray, T: np.ndarray, fraction: float, seed: int) -> tuple:
    if not 0.0 < fraction < 1.0:
        raise DataError(f"val_split must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed + 1).permutation(X.shape[0])
    n_val = max(1, int(round(fraction * X.shape[0])))
    if n_val >= X.shape[0]:
        raise DataError(f"val_split={fraction} leaves no training rows out of {X.shape[0]}")
    val, tr = order[:n_val], order[n_val:]
    return X[tr], T[tr], X[val], T[val]


def train(prog: CompiledProgram, X: object, Y: object, mode: str = "minibatch", batch_size: int = 32,
          epochs: int = 10, lr: float = 0.1, optimizer: str = "sgd", seed: int = 0,
          params: Mapping[str, np.ndarray] | None = None, init: str = "auto",
          schedule: str = "constant", validation: tuple[object, object] | None = None,
          val_split: float = 0.0, patience: int | None = None, min_delta: float = 0.0,
          evaluate: bool = True, callback: Callable[[dict], object] | None = None,
          **hyperparameters: object) -> TrainResult:
    """Train `prog` on (X, Y) and return the parameters and per-epoch history.

    mode "gd" makes one update per epoch on all rows, "sgd" one per row, "minibatch" one
    per `batch_size` rows (the last partial batch included); sgd and minibatch reshuffle
    every epoch from `seed`.  Optimizer hyperparameters are keywords with PyTorch's names
    and defaults (momentum=0.9, betas=(0.9, 0.999), eps=1e-8, alpha=0.99).  With a
    validation set (or `val_split`) and `patience`, training stops after `patience`
    epochs without a `min_delta` improvement of the validation loss and restores the best
    weights.  `callback(record)` runs after each epoch; returning False stops training.
    """
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise DataError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise DataError(f"lr must be a positive number, got {lr!r}")
    Xc, T = prog.prepare(X, Y)
    Xv = Tv = None
    if validation is not None:
        Xv, Tv = prog.prepare(*validation)
    elif val_split:
        Xc, T, Xv, Tv = _split(Xc, T, val_split, seed)
    with data_errors():
        hyper = runtime.hyperparameters(prog.module, optimizer, _hyper(optimizer, hyperparameters))
        runtime.batch_size_for(mode, batch_size, Xc.shape[0])
        runtime.schedule_lr(schedule, lr, 0, epochs)
    start = params if params is not None else prog.init_params(seed, init)
    engine = prog.engine(start)
    engine.reset_state(optimizer)
    validation = None if Xv is None else (Xv, Tv)
    try:
        with data_errors():
            history, best_epoch, stopped = runtime.fit(
                engine, Xc, T, mode, batch_size, epochs, lr, optimizer, hyper, seed, schedule, validation,
                patience, min_delta, evaluate, callback)
    except runtime.Diverged as exc:
        raise DivergenceError(str(exc), TrainResult(prog.unflatten(engine.params), list(exc.history))) from None
    return TrainResult(prog.unflatten(engine.params), history, best_epoch, stopped)
