"""`nc.train`: full-batch GD, per-example SGD or mini-batch SGD over a compiled program.

The trainer sees the compiled step only (through `CompiledProgram.engine()`): it checks
the data once, shuffles with its own seeded generator each epoch, gathers each batch into
the step's preallocated input buffers, and records one history entry per epoch.  The
loop itself, checkpoints and diagnostics are the NumPy-only modules that standalone
scripts embed (`runtime`, `checkpoint`, `diagnostics`), so both train the same way.
"""
from __future__ import annotations

import difflib
import inspect
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from .errors import ArgumentError, DataError, DivergenceError, TrainingWarning
from .program import CompiledProgram, data_errors
from .runtime import distributed as parallel
from .runtime import engine as runtime
from .runtime import loop, script
from .runtime.checkpoint import Checkpoint, CheckpointError
from .runtime.diagnostics import Monitor, new_warnings

if TYPE_CHECKING:  # the trainer never imports SymPy; rules appear here only as a type
    from .symbolic.rules import Optimizer

MODES = ("gd", "sgd", "minibatch")
#: Keywords `train` reads as PyTorch does (resolved by runtime.script.torch_style).
TORCH_KEYWORDS = ("momentum", "nesterov", "betas", "weight_decay")


@dataclass
class TrainResult:
    """Trained parameters (layer order), one history dict per epoch, and what happened.

    `best_epoch` is the epoch of the lowest validation loss (its weights are the ones
    returned when early stopping was on); `warnings` holds each diagnostic message the
    first time it appeared; `program` is the program the steps ran in (a recompiled one
    when a custom optimizer rule was given).
    """

    params: dict[str, np.ndarray]
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    warnings: list[str] = field(default_factory=list)
    program: CompiledProgram | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def _repr_html_(self) -> str:
        """Jupyter: the curves, the diagnostics heat map, the warnings and the last epoch's figures."""
        from .report.runview import RunRecord, run_html
        return run_html(RunRecord.of(self))


def train(prog: CompiledProgram, X: object, Y: object, mode: str = "minibatch", batch_size: int = 32,
          epochs: int = 10, lr: float = 0.1, optimizer: str | Optimizer = "sgd", seed: int = 0,
          params: Mapping[str, np.ndarray] | None = None, init: str = "auto",
          schedule: str = "constant", step_size: int = 10, gamma: float | None = None,
          validation: tuple[object, object] | None = None, val_split: float = 0.0,
          patience: int | None = None, min_delta: float = 0.0, diagnostics: bool = False,
          checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
          resume: str | Path | None = None,
          evaluate: bool = False, callback: Callable[[dict], object] | None = None,
          on_batch: Callable[[int], object] | None = None, distributed: object = False,
          **hyperparameters: object) -> TrainResult:
    """Train `prog` on (X, Y) and return the parameters and per-epoch history.

    mode "gd" makes one update per epoch on all rows, "sgd" one per row, "minibatch" one
    per `batch_size` rows (the last partial batch included); sgd and minibatch reshuffle
    every epoch from `seed`.  `optimizer` is a name ("sgd", "momentum", "nesterov",
    "adam", "rmsprop") or your own `nncompile.Optimizer` rule; hyperparameters are
    keywords with PyTorch's names and defaults (momentum=0.9, betas=(0.9, 0.999),
    eps=1e-8, alpha=0.99); as in torch.optim.SGD, "sgd" with momentum=m (and
    nesterov=True) is the momentum (nesterov) rule.  `schedule` sets the learning rate per epoch: "constant",
    "step" (times `gamma` every `step_size` epochs), "exponential" or "cosine".  With a
    validation set (or `val_split`) and `patience`, training stops after `patience`
    epochs without a `min_delta` improvement of the validation loss and the best weights
    are restored.  `diagnostics=True` adds per-layer saturation, dead-unit, linearity and
    gradient-norm figures to the history and warns (TrainingWarning) when they show a
    problem.  `checkpoint` saves the whole training state every `checkpoint_every` epochs
    (default 1, or epochs/100 in longer runs), at the end and on Ctrl-C; `resume`
    continues from such a file, ending bit-identical to an uninterrupted run.
    `callback(record)` runs after each epoch (returning False stops training);
    `on_batch(rows)` after each update.

    Each history record's `loss` and metric (`accuracy`, ...) are running figures over that
    epoch's updates, from the steps themselves (no second pass over the data);
    `evaluate=True` adds `train_loss` and `train_<metric>`, an exact evaluation of each
    epoch's final weights.

    `distributed=True` (or an mpi4py communicator, or a `runtime.distributed.Cluster`)
    makes this call one of K processes started by `mpiexec -n K`: each passes the same
    data and settings and computes the gradients of its share of every batch; they are
    summed by MPI (by NCCL on the GPU for the cuda backend), and every process returns the
    same result, equal to a single process's to round-off.  Rank 0 alone writes checkpoints.
    """
    _check_settings(mode, epochs, lr, patience, validation, val_split, checkpoint_every)
    if not isinstance(optimizer, str):
        prog = prog.with_optimizer(optimizer)
        optimizer = optimizer.name
    _check_keywords(prog, optimizer, hyperparameters)
    Xc, T = prog.prepare(X, Y)
    Xv = Tv = None
    if validation is not None:
        Xv, Tv = prog.prepare(*validation)
    with data_errors():
        optimizer, named = script.torch_style(optimizer, script.hyper_names(dict(hyperparameters)))
        hyper = loop.hyperparameters(prog.module, optimizer, named)
        if val_split and validation is None:
            Xc, T, (Xv, Tv) = script.validation_split(Xc, T, val_split, seed)
        loop.batch_size_for(mode, batch_size, Xc.shape[0])
        loop.check_schedule(schedule, step_size, gamma)
        if checkpoint is not None:  # before any training, not at the first save
            script.check_writable(str(checkpoint), "checkpoint")
    if params is not None and resume is not None:
        raise DataError("give params or resume, not both: a checkpoint holds its own parameters")
    cluster = _cluster(distributed, prog)  # before the engine: a GPU process chooses its device first
    engine = prog.engine(params if params is not None else prog.init_params(seed, init))
    with data_errors():
        engine.reset_state(optimizer)
    monitor = Monitor(prog.module, Xc, T) if diagnostics else None
    record_warnings = _WarningLog(callback)
    try:
        with data_errors():
            history, best_epoch, stopped = loop.fit(
                engine, Xc, T, mode, batch_size, epochs, lr, optimizer, hyper, seed, schedule,
                None if Xv is None else (Xv, Tv), patience, min_delta, evaluate, record_warnings,
                step_size, gamma, monitor, checkpoint and Checkpoint(checkpoint), checkpoint_every,
                resume and Checkpoint(resume), on_batch, cluster)
    except runtime.Diverged as exc:
        partial = TrainResult(prog.unflatten(engine.params), exc.history, warnings=record_warnings.seen,
                              program=prog)
        raise DivergenceError(str(exc), partial) from None
    except CheckpointError as exc:
        raise DataError(str(exc)) from None
    return TrainResult(prog.unflatten(engine.params), history, best_epoch, stopped, record_warnings.seen, prog)


def _cluster(distributed: object, prog: CompiledProgram) -> parallel.Cluster | None:
    """The processes of a data-parallel run (None for a single process); NCCL for the cuda backend."""
    if distributed is False or distributed is None:
        return None
    with data_errors():
        if isinstance(distributed, parallel.Cluster):
            cluster = distributed
        else:
            cluster = parallel.connect(None if distributed is True else distributed)
        if prog.backend == "cuda" and cluster.nccl is None:
            cluster.use_nccl(prog.module)
    return cluster


def _check_settings(mode: str, epochs: object, lr: object, patience: object, validation: object,
                    val_split: float, checkpoint_every: object) -> None:
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise DataError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise DataError(f"lr must be a positive number, got {lr!r}")
    if patience is not None:
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
            raise DataError(f"patience must be a positive integer, got {patience!r}")
        if validation is None and not val_split:
            raise DataError("early stopping (patience) watches a validation loss: pass validation=(X, Y) "
                            "or val_split=0.1")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool)
                                         or not isinstance(checkpoint_every, (int, np.integer))
                                         or checkpoint_every < 1):
        raise DataError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")


def _check_keywords(prog: CompiledProgram, optimizer: str, given: Mapping[str, object]) -> None:
    """A keyword that is neither a hyperparameter of `optimizer` nor PyTorch's spelling of one is a
    misspelt argument: say so, with the nearest argument or hyperparameter name."""
    rule = prog.module.OPTIMIZERS.get(optimizer)
    if rule is None:
        return  # an unknown optimizer is reported, with the known ones, by the runtime
    hyper = list(rule[1])
    elsewhere = {name for _, defaults in prog.module.OPTIMIZERS.values() for name in defaults}
    arguments = [name for name, p in inspect.signature(train).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    for key in given:
        if key in hyper or key in TORCH_KEYWORDS or key in elsewhere:
            continue  # another optimizer's hyperparameter: the runtime says which ones this one takes
        close = difflib.get_close_matches(key, arguments + hyper + list(TORCH_KEYWORDS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        takes = ", ".join(hyper) or "none"
        raise ArgumentError(f"train() got an unexpected keyword argument {key!r}{hint}; optimizer {optimizer} "
                            f"takes the hyperparameters: {takes}")


class _WarningLog:
    """Epoch callback: issues each new diagnostic warning once, then calls the user's callback."""

    def __init__(self, callback: Callable[[dict], object] | None) -> None:
        self.callback, self.active, self.seen = callback, None, []

    def __call__(self, record: dict) -> object:
        if "warnings" in record:
            for warning in new_warnings(record, self.active):
                if warning["message"] not in self.seen:
                    self.seen.append(warning["message"])
                warnings.warn(f"epoch {record['epoch']}: {warning['message']}", TrainingWarning, stacklevel=4)
            self.active = record["warnings"]
        return None if self.callback is None else self.callback(record)
