"""The epoch loop: schedules, batching, the loop's own state, checkpoints' contents, `fit`.

Embedded verbatim in standalone scripts right after engine.py (NumPy and the standard
library only).  Everything an epoch changes lives in the engine's flat vectors and in a
`Loop`, and a checkpoint (written by `checkpoint.Checkpoint`) saves both, so an
interrupted run resumed from its checkpoint ends with the same bits as one never
interrupted.
"""
import difflib
import hashlib
import math

import numpy as np

if __package__ == "nncompile.runtime":  # in a generated script engine.py is embedded above this file
    from .engine import Diverged, TrainingError, check_train_rows, to_host

SCHEDULES = ("constant", "step", "exponential", "cosine")
#: An epoch whose mean loss exceeds this many times the loss the run started from has diverged,
#: even while every number is still finite (a learning rate far too large).
GROWTH_LIMIT = 1e3
#: Starting losses below this count as this much when the growth is measured (a near-perfect start).
GROWTH_FLOOR = 1e-3


def schedule_lr(schedule, lr, epoch, epochs, step_size=10, gamma=None):
    """Learning rate for a 0-based epoch, as PyTorch's schedulers stepped once per epoch.

    constant: lr; step: lr·gamma^(epoch // step_size) (StepLR, gamma 0.1 by default);
    exponential: lr·gamma^epoch (ExponentialLR, gamma 0.95 by default); cosine:
    lr·(1 + cos(π·epoch/epochs))/2 (CosineAnnealingLR with T_max = epochs, eta_min = 0).
    """
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * (0.1 if gamma is None else gamma) ** (epoch // step_size)
    if schedule == "exponential":
        return lr * (0.95 if gamma is None else gamma) ** epoch
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise TrainingError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")


def check_schedule(schedule, step_size, gamma):
    """Refuse a schedule the loop cannot follow, before any training happens."""
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
        raise TrainingError(f"step_size must be a positive integer, got {step_size!r}")
    if gamma is not None and not (isinstance(gamma, (int, float)) and 0.0 < gamma < math.inf):
        raise TrainingError(f"gamma must be a positive number, got {gamma!r}")


def batch_size_for(mode, batch_size, rows):
    """Rows per update: all of them for gd, one for sgd, batch_size for minibatch."""
    if mode == "gd":
        return rows
    if mode == "sgd":
        return 1
    if mode == "minibatch":
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise TrainingError(f"batch_size must be a positive integer, got {batch_size!r}")
        return min(int(batch_size), rows)
    raise TrainingError(f"unknown mode {mode!r} (choose gd, sgd or minibatch)")


def run_epoch(engine, X, T, order, batch, step_name, lr, step, hyper, on_batch=None):
    """One pass over the data in `order`; returns (mean loss over updates, updates, next step).

    Each batch is gathered straight into the step's own input buffers (ndarray.take with
    out; mode "clip" skips the bounds-check copy, the indices being a permutation).
    `on_batch(rows)`, when given, is called after each update (progress display).
    """
    rows = X.shape[0]
    total, updates = 0.0, 0
    clip = ("clip",) if engine.xp is np else ()  # CuPy's take has no mode
    for first, stop in ((0, rows - rows % batch), (rows - rows % batch, rows)):
        if stop == first:
            continue
        size = min(batch, stop - first)
        ws = engine.workspace(size)
        run, xb, tb, take_x, take_t = getattr(ws, step_name), ws.X, ws.T, X.take, T.take
        for start in range(first, stop, size):
            idx = order[start:start + size]
            take_x(idx, 0, xb, *clip)
            take_t(idx, 0, tb, *clip)
            loss = float(run(lr, step, *hyper))
            if not math.isfinite(loss):
                raise Diverged(f"the loss became {loss} at update {step} with learning rate {lr:g}")
            total += loss
            updates += 1
            step += 1
            if on_batch is not None:
                on_batch(size)
    if not bool(engine.xp.isfinite(engine.params).all()):  # the last update itself overflowed
        raise Diverged(f"the parameters became NaN or infinite at update {step - 1} with learning rate {lr:g}")
    return total / updates, updates, step


def check_growth(loss, first_loss):
    """Raise Diverged when an epoch's mean loss is orders of magnitude above the run's first loss."""
    if first_loss is not None and loss > GROWTH_LIMIT * max(first_loss, GROWTH_FLOOR):
        raise Diverged(f"the loss grew from {first_loss:.4g} to {loss:.4g}, more than {GROWTH_LIMIT:g} times "
                       "where it started")


def smaller_lr(lr):
    """A learning rate worth trying after `lr` diverged: a tenth of it, at most 0.1."""
    return lr / 10 if lr <= 1 else 0.1


def hyperparameters(module, optimizer, overrides):
    """Positional hyperparameters of a step function, defaults filled in, unknown names refused."""
    if optimizer not in module.OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {optimizer!r} (choose from {', '.join(module.OPTIMIZERS)})")
    _, defaults = module.OPTIMIZERS[optimizer]
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(defaults) or "none"
        raise TrainingError(f"optimizer {optimizer} has no hyperparameter {unknown[0]!r} ({hint}it takes: {known})")
    values = []
    for name, value in defaults.items():
        value = overrides.get(name, value)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
            raise TrainingError(f"hyperparameter {name} of {optimizer} must be a finite number, got {value!r}")
        values.append(float(value))
    return tuple(values)


class Loop:
    """The training loop's own state: epoch and update counters, shuffling generator,
    history and early-stopping bookkeeping.  With the engine's vectors it is all a
    checkpoint needs."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.epoch = 0              # finished epochs
        self.step = 1               # 1-based count of the next update (Adam's t)
        self.history = []
        self.best_loss = math.inf
        self.best_epoch = None
        self.best_params = None
        self.waited = 0             # epochs since the validation loss last improved
        self.stopped = False        # early stopping fired
        self.first_loss = None      # loss of the starting weights (first rows), for check_growth

    _SCALARS = ("epoch", "step", "best_loss", "best_epoch", "waited", "stopped")

    def snapshot(self, engine):
        """A copy of everything an epoch changes, to roll back to."""
        return (engine.params.copy(), {k: v.copy() for k, v in engine.state.items()},
                self.rng.bit_generator.state, len(self.history), self.best_params,
                {k: getattr(self, k) for k in self._SCALARS})

    def restore(self, engine, snap):
        params, state, rng_state, n_history, best_params, scalars = snap
        engine.params[...] = params
        for name, value in state.items():
            engine.state[name][...] = value
        self.rng.bit_generator.state = rng_state
        del self.history[n_history:]
        self.best_params = best_params
        for name, value in scalars.items():
            setattr(self, name, value)

    def to_checkpoint(self, engine):
        """(arrays, meta) describing the loop and the engine, for a checkpoint file."""
        arrays = {"params": to_host(engine.params)}
        arrays.update({"state." + name: to_host(value) for name, value in engine.state.items()})
        if self.best_params is not None:
            arrays["best_params"] = to_host(self.best_params)
        meta = {k: getattr(self, k) for k in self._SCALARS}
        meta.update(rng=self.rng.bit_generator.state, history=self.history, first_loss=self.first_loss)
        return arrays, meta

    def from_checkpoint(self, engine, arrays, meta):
        engine.params[...] = engine.device(arrays["params"])
        for name in engine.state:
            if "state." + name not in arrays:
                raise TrainingError(f"the checkpoint has no optimizer state {name!r}")
            engine.state[name][...] = engine.device(arrays["state." + name])
        best = arrays.get("best_params")
        self.best_params = None if best is None else engine.device(best)
        for name in self._SCALARS:
            setattr(self, name, meta[name])
        self.rng.bit_generator.state = meta["rng"]
        self.history = list(meta["history"])
        self.first_loss = meta.get("first_loss")


def fingerprint(*arrays):
    """SHA-256 of the data a run trains on: a checkpoint only resumes on the same data."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _check_resumable(path, saved, settings):
    """The checkpoint must come from the same model, data and settings (epochs may differ)."""
    changed = [k for k in settings if saved.get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise TrainingError(f"checkpoint {path} was written with {k}={saved.get(k)!r} but this run has "
                            f"{k}={settings[k]!r}: resume with the same model, data and settings "
                            "(only the number of epochs may change)")


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # a diverging run is reported in one line
def fit(engine, X, T, mode="minibatch", batch_size=32, epochs=10, lr=0.1, optimizer="sgd", hyper=(),
        seed=0, schedule="constant", validation=None, patience=None, min_delta=0.0, evaluate=True,
        callback=None, step_size=10, gamma=None, monitor=None, checkpoint=None, checkpoint_every=None,
        resume=None, on_batch=None):
    """The epoch loop shared by nncompile.train and standalone scripts.

    Returns (history, best_epoch, stopped_early).  On a non-finite loss the state after
    the last finished epoch is restored and Diverged is raised.  With `validation` and
    `patience`, stops after `patience` epochs without a `min_delta` improvement of the
    validation loss and restores the best parameters.  `monitor` (diagnostics.Monitor)
    adds diagnostics to epoch records.  With `checkpoint` (a checkpoint.Checkpoint) the
    state is saved every `checkpoint_every` epochs (default: every epoch, or every
    epochs/100 in longer runs), at the end, and on KeyboardInterrupt (rolled back to the
    last finished epoch first); `resume` (one too) continues such a run.
    `callback(record)` runs after each epoch; returning False stops training.
    """
    run = _Run(engine, X, T, validation, monitor, on_batch)
    run.batch = batch_size_for(mode, batch_size, X.shape[0])
    check_train_rows(engine.module, run.batch, X.shape[0] % run.batch or run.batch)
    engine.set_seed(seed)  # dropout masks: keyed by (seed, update count, layer, element)
    check_schedule(schedule, step_size, gamma)
    run.plan = {"mode": mode, "batch": run.batch, "optimizer": optimizer, "hyper": list(hyper), "lr": lr,
                "schedule": [schedule, step_size, gamma], "seed": seed, "patience": patience,
                "min_delta": min_delta}
    loop = run.loop = Loop(seed)
    every = checkpoint_every or max(1, epochs // 100)
    if resume is not None:
        run.resume(resume)
        if loop.epoch > epochs:
            raise TrainingError(f"checkpoint {resume.path} already holds {loop.epoch} epochs, more than "
                                f"epochs={epochs}: ask for at least as many")
    if loop.first_loss is None:
        loop.first_loss = run.first_loss()
    snap, in_epoch = None, False
    try:
        while loop.epoch < epochs and not loop.stopped:
            snap = loop.snapshot(engine)
            in_epoch = True  # from here until the epoch is counted, Ctrl-C rolls back to `snap`
            record = run.epoch(epochs, snap)
            if evaluate and engine.module.METRIC:
                record["train_loss"], record[engine.module.METRIC] = engine.evaluate(X, T)
            if validation is not None:
                run.validate(record)
            if monitor is not None:
                monitor.observe(engine, record, epochs)
            loop.history.append(record)
            loop.epoch += 1
            loop.stopped = patience is not None and validation is not None and loop.waited >= patience
            in_epoch = False
            halt = callback is not None and callback(record) is False
            if checkpoint is not None and (loop.epoch % every == 0 or loop.epoch == epochs
                                           or loop.stopped or halt):
                run.save(checkpoint)
            if halt:
                break
    except KeyboardInterrupt:
        if in_epoch:
            loop.restore(engine, snap)
        if checkpoint is not None:
            run.save(checkpoint)
        raise
    if patience is not None and loop.best_params is not None:
        engine.params[...] = loop.best_params
    return loop.history, loop.best_epoch, loop.stopped


class _Run:
    """What `fit` works with: the engine, the data, the fixed settings (`plan`) and the `Loop`."""

    def __init__(self, engine, X, T, validation, monitor, on_batch):
        self.host = (X, T, *(validation or ()))  # for the data fingerprint of checkpoints
        self.X, self.T = engine.device(X), engine.device(T)
        self.engine, self.validation = engine, None if validation is None else tuple(map(engine.device, validation))
        self.monitor, self.on_batch = monitor, on_batch
        self.order = engine.device(np.arange(X.shape[0]))
        self.plan, self.loop, self.batch, self._settings = {}, None, 1, None

    def epoch(self, epochs, snap):
        """Shuffle, make one epoch of updates, start its record; roll back on divergence."""
        loop, plan = self.loop, self.plan
        schedule, step_size, gamma = plan["schedule"]
        lr = schedule_lr(schedule, plan["lr"], loop.epoch, epochs, step_size, gamma)
        if plan["mode"] != "gd":
            self.order = self.engine.device(loop.rng.permutation(self.X.shape[0]))
        try:
            loss, updates, loop.step = run_epoch(self.engine, self.X, self.T, self.order, self.batch,
                                                 "step_" + plan["optimizer"], lr, loop.step, plan["hyper"],
                                                 self.on_batch)
            check_growth(loss, loop.first_loss)
        except Diverged as exc:
            loop.restore(self.engine, snap)
            raise Diverged(f"training diverged in epoch {loop.epoch + 1}: {exc}; kept the weights from epoch "
                           f"{loop.epoch}: lower the learning rate (try {smaller_lr(lr):g}){self.scale_advice()}",
                           loop.history) from None
        return {"epoch": loop.epoch + 1, "loss": float(loss), "updates": updates, "lr": lr}

    def first_loss(self):
        """Loss of the starting weights on the first batch of rows (in the workspace training uses
        anyway): what check_growth measures against."""
        rows = self.batch
        loss, _ = self.engine.evaluate(self.X[:rows], self.T[:rows], chunk=rows)
        return loss if math.isfinite(loss) else None

    def scale_advice(self):
        """Advice to add to a divergence message when the inputs are far from unit scale."""
        largest = float(abs(self.X).max())
        return f", or scale the inputs (their largest magnitude is {largest:.3g})" if largest > 10 else ""

    def validate(self, record):
        """Validation loss and metric; remember the best parameters for early stopping."""
        loop, metric = self.loop, self.engine.module.METRIC
        record["val_loss"], val_metric = self.engine.evaluate(*self.validation)
        if metric:
            record["val_" + metric] = val_metric
        if record["val_loss"] < loop.best_loss - self.plan["min_delta"]:
            loop.best_loss, loop.best_params, loop.best_epoch, loop.waited = (
                record["val_loss"], self.engine.params.copy(), loop.epoch + 1, 0)
        else:
            loop.waited += 1

    def settings(self):
        """What must match for a checkpoint to be resumed: model, data and every setting but epochs."""
        if self._settings is None:
            module = self.engine.module
            self._settings = dict(self.plan, model=module.MODEL, n_params=int(module.N_PARAMS),
                                  dtype=np.dtype(module.DTYPE).name,
                                  data=fingerprint(*self.host))
        return self._settings

    def save(self, checkpoint):
        arrays, meta = self.loop.to_checkpoint(self.engine)
        meta.update(settings=self.settings(), monitor=None if self.monitor is None else self.monitor.state())
        checkpoint.save(arrays, meta)

    def resume(self, checkpoint):
        arrays, meta = checkpoint.load()
        _check_resumable(checkpoint.path, meta.get("settings") or {}, self.settings())
        try:
            self.loop.from_checkpoint(self.engine, arrays, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(f"checkpoint {checkpoint.path} is incomplete or damaged ({exc})") from None
        if self.monitor is not None:
            self.monitor.load_state(meta.get("monitor"))
