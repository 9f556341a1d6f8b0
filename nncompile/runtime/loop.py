"""The epoch loop: schedules, the loop's own state, rolling back, checkpoints' contents, `fit`.

Embedded verbatim in standalone scripts right after batches.py (NumPy and the standard
library only).  Everything an epoch changes lives in the engine's flat vectors and in a
`Loop`, and a checkpoint (written by `checkpoint.Checkpoint`) saves both, so an
interrupted run resumed from its checkpoint ends with the same bits as one never
interrupted.

An epoch's record comes from its own steps, as Keras reports it: `loss` is the mean of
the updates' losses and the metric counts the correct predictions the steps made on
their batches (each step counts them in its forward pass), so no second pass over the
data is made; `evaluate=True` adds an exact evaluation of each epoch's final weights
(`train_loss`, `train_<metric>`).

Rolling back (a diverging run keeps the weights of its last good epoch; Ctrl-C keeps the
last finished epoch) does not copy the parameters every epoch: a copy is kept every few
epochs, few enough that copying costs about 2% of the training time, and the epochs
since are replayed, which gives the same bits, training being deterministic.
"""
import difflib
import hashlib
import math
import time

import numpy as np

if __package__ == "nncompile.runtime":  # in a generated script these are defined above, in the same file
    from .batches import Batches, run_epoch
    from .engine import Diverged, TrainingError, check_train_rows, to_host

SCHEDULES = ("constant", "step", "exponential", "cosine")
#: An epoch whose mean loss exceeds this many times the loss the run started from has diverged,
#: even while every number is still finite (a learning rate far too large).
GROWTH_LIMIT = 1e3
#: Starting losses below this count as this much when the growth is measured (a near-perfect start).
GROWTH_FLOOR = 1e-3
#: A rollback copy costs at most about 1/COPY_RATIO of the training time between copies ...
COPY_RATIO = 50
#: ... and copies are at most this many seconds of training apart, which bounds a replay.
REPLAY_SECONDS = 1.0


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


def growth_limit(first_loss):
    """The epoch mean loss above which check_growth raises (infinite when the first loss is unknown)."""
    return math.inf if first_loss is None else GROWTH_LIMIT * max(first_loss, GROWTH_FLOOR)


def check_growth(loss, first_loss):
    """Raise Diverged when an epoch's mean loss is orders of magnitude above the run's first loss."""
    if loss > growth_limit(first_loss):
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


class Rollback:
    """Where a run goes back to: the start of the current (or the previous) epoch.

    `mark` notes the loop's bookkeeping at every epoch start (cheap); `keep` copies the
    vectors, the generator and the step count into buffers allocated once, only when
    `due` and only finite parameters; `rewind` restores that copy and replays the epochs
    since.  Copies are spaced so that copying costs about 1/COPY_RATIO of the training
    time, and never more than REPLAY_SECONDS of training lie between two of them.
    """

    def __init__(self):
        self.params, self.state, self.rng, self.epoch, self.step = None, {}, None, None, 0
        self.interval, self.cost, self.kept_at = 1, 0.0, 0.0
        self.marked = self.previous = None  # (history length, best parameters, scalars) at epoch starts

    def mark(self, loop):
        self.previous, self.marked = self.marked, (len(loop.history), loop.best_params, loop.epoch, loop.step,
                                                   loop.best_loss, loop.best_epoch, loop.waited, loop.stopped)

    def due(self, loop, agree):
        """Whether to copy now; spaces the copies by what the last one cost (`agree`: rank 0 decides)."""
        if self.epoch is None:
            return True
        epochs = loop.epoch - self.epoch
        if epochs < self.interval:
            return False
        self.interval = agree(copy_interval(self.cost, (time.perf_counter() - self.kept_at) / epochs))
        return epochs >= self.interval

    def keep(self, engine, loop):
        """Copy the state; False (and no copy) if a parameter is not finite."""
        started = time.perf_counter()
        if not engine.finite():
            return False
        if self.params is None:
            self.params = engine.params.copy()
            self.state = {name: value.copy() for name, value in engine.state.items()}
        else:
            self.params[...] = engine.params
            for name, value in engine.state.items():
                self.state[name][...] = value
        self.rng, self.epoch, self.step = loop.rng.bit_generator.state, loop.epoch, loop.step
        self.kept_at = time.perf_counter()
        self.cost = self.kept_at - started
        return True

    def rewind(self, engine, loop, replay, previous=False):
        """Back to the marked start of this epoch (of the one before with `previous`): restore the copy,
        then `replay(epoch)` each epoch since."""
        n_history, best_params, *scalars = self.previous if previous else self.marked
        engine.params[...] = self.params
        for name, value in self.state.items():
            engine.state[name][...] = value
        loop.rng.bit_generator.state, loop.step = self.rng, self.step
        for epoch in range(self.epoch, scalars[0]):
            replay(epoch)
        del loop.history[n_history:]
        loop.best_params = best_params
        for name, value in zip(loop._SCALARS, scalars):
            setattr(loop, name, value)


def copy_interval(copy_seconds, epoch_seconds):
    """Epochs between rollback copies: a copy costs at most 1/COPY_RATIO of the training between
    two, and there are at most REPLAY_SECONDS of training to replay."""
    epoch_seconds = max(epoch_seconds, 1e-9)
    return max(1, min(math.ceil(COPY_RATIO * copy_seconds / epoch_seconds), int(REPLAY_SECONDS / epoch_seconds)))


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
        seed=0, schedule="constant", validation=None, patience=None, min_delta=0.0, evaluate=False,
        callback=None, step_size=10, gamma=None, monitor=None, checkpoint=None, checkpoint_every=None,
        resume=None, on_batch=None, cluster=None):
    """The epoch loop shared by nncompile.train and standalone scripts.

    Returns (history, best_epoch, stopped_early).  On a non-finite loss the state after
    the last finished epoch is restored and Diverged is raised.  With `validation` and
    `patience`, stops after `patience` epochs without a `min_delta` improvement of the
    validation loss and restores the best parameters.  `evaluate` adds an exact
    evaluation of each epoch's final weights on the training data.  `monitor`
    (diagnostics.Monitor) adds diagnostics to epoch records.  With `checkpoint` (a
    checkpoint.Checkpoint) the state is saved every `checkpoint_every` epochs (default:
    every epoch, or every epochs/100 in longer runs), at the end, and on KeyboardInterrupt
    (rolled back to the last finished epoch first); `resume` (one too) continues such a
    run.  `callback(record)` runs after each epoch; returning False stops training.
    `cluster` (distributed.Cluster) makes this one of several data-parallel processes:
    each computes the gradients of its share of every batch, and only its rank 0 writes.
    """
    run = _Run(engine, X, T, validation, monitor, on_batch, cluster)
    run.batch = batch_size_for(mode, batch_size, X.shape[0])
    check_train_rows(engine.module, run.batch, X.shape[0] % run.batch or run.batch)
    engine.set_seed(seed)  # dropout masks: keyed by (seed, update count, layer, element)
    check_schedule(schedule, step_size, gamma)
    run.plan = {"mode": mode, "batch": run.batch, "optimizer": optimizer, "hyper": list(hyper), "lr": lr,
                "schedule": [schedule, step_size, gamma], "seed": seed, "patience": patience,
                "min_delta": min_delta}
    loop = run.loop = Loop(seed)
    run.start(epochs)
    every = checkpoint_every or max(1, epochs // 100)
    if resume is not None:
        run.resume(resume)
        if loop.epoch > epochs:
            raise TrainingError(f"checkpoint {resume.path} already holds {loop.epoch} epochs, more than "
                                f"epochs={epochs}: ask for at least as many")
    if loop.first_loss is None:
        loop.first_loss = run.first_loss()
    run.limit = growth_limit(loop.first_loss)
    point, in_epoch = Rollback(), False
    try:
        while loop.epoch < epochs and not loop.stopped:
            point.mark(loop)
            if point.due(loop, run.agree) and not point.keep(engine, loop):
                run.overflowed(point, previous=True)
            in_epoch = True  # from here until the epoch is counted, Ctrl-C rolls back to its start
            record = run.epoch(point)
            if evaluate:
                run.evaluate(record)
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
                if not engine.finite():
                    run.overflowed(point)
                run.save(checkpoint)
            if halt:
                break
    except KeyboardInterrupt:
        if cluster is None:  # several processes cannot agree on where each one stopped: keep the last save
            if in_epoch:
                point.rewind(engine, loop, run.replay)
            if checkpoint is not None:
                run.save(checkpoint)
        raise
    if loop.history and point.marked is not None and not engine.finite():
        run.overflowed(point)
    if patience is not None and loop.best_params is not None:
        engine.params[...] = loop.best_params
    return loop.history, loop.best_epoch, loop.stopped


class _Run:
    """What `fit` works with: the engine, the data, the fixed settings (`plan`) and the `Loop`."""

    def __init__(self, engine, X, T, validation, monitor, on_batch, cluster):
        self.host = (X, T, *(validation or ()))  # for the data fingerprint of checkpoints
        self.X, self.T = engine.device(X), engine.device(T)
        self.engine, self.validation = engine, None if validation is None else tuple(map(engine.device, validation))
        self.monitor, self.on_batch, self.cluster = monitor, on_batch, cluster
        self.plan, self.loop, self.batch, self.epochs, self.batches, self._settings = {}, None, 1, 0, None, None
        self.limit = math.inf  # of an epoch's mean loss (check_growth), once the first loss is known

    def start(self, epochs):
        """The batches, and with several processes, the same starting parameters on every one."""
        self.epochs, self.step_name, self.hyper = epochs, "step_" + self.plan["optimizer"], tuple(self.plan["hyper"])
        self.metric = self.engine.module.METRIC
        self.out_of = self.engine.scored(self.X.shape[0])  # what an epoch's correct count is out of
        self.batches = Batches(self.engine, self.X, self.T, self.batch, whole=self.plan["mode"] == "gd")
        if self.cluster is not None:
            self.cluster.start(self.engine, self.X.shape[0])

    def lr(self, epoch):
        schedule, step_size, gamma = self.plan["schedule"]
        if schedule == "constant":
            return self.plan["lr"]
        return schedule_lr(schedule, self.plan["lr"], epoch, self.epochs, step_size, gamma)

    def updates(self, lr, on_batch):
        """An epoch's shuffle and updates from the loop's generator and step count:
        (summed loss, correct count, updates).  Replaying an epoch runs exactly this."""
        loop, plan = self.loop, self.plan
        if not self.batches.whole:
            self.batches.shuffle(loop.rng)
        if self.cluster is None:
            total, correct, updates, loop.step = run_epoch(self.engine, self.batches, self.step_name, lr, loop.step,
                                                           self.hyper, on_batch)
        else:
            total, correct, updates, loop.step = self.cluster.run_epoch(
                self.engine, self.batches, plan["optimizer"], lr, loop.step, self.hyper, on_batch)
        return total, correct, updates

    def replay(self, epoch):
        self.updates(self.lr(epoch), None)

    def epoch(self, point):
        """One epoch of updates and its record; on divergence, back to the last good epoch's end.

        Parameters are checked only when a rollback copy is made, before a checkpoint and at
        the end, not every epoch: a non-finite loss at the first update of an epoch may mean
        that the previous epoch's last update overflowed, which a replay finds out.
        """
        loop = self.loop
        lr = self.lr(loop.epoch)
        try:
            total, correct, updates = self.updates(lr, self.on_batch)
            if total / updates > self.limit:
                check_growth(total / updates, loop.first_loss)
        except Diverged as exc:
            first = exc.update == point.marked[3] and point.previous is not None  # this epoch's first update
            point.rewind(self.engine, loop, self.replay)
            if first and not self.engine.finite():
                self.overflowed(point, previous=True)
            raise self.diverged(str(exc), lr) from None
        record = {"epoch": loop.epoch + 1, "loss": total / updates, "updates": updates, "lr": lr}
        if self.metric:
            record[self.metric] = float(correct) / self.out_of
        return record

    def overflowed(self, point, previous=False):
        """The last update of an epoch (the current one, or with `previous` the one before) made the
        parameters NaN or infinite: back to that epoch's start, its record dropped; raises Diverged."""
        update = self.loop.step - 1 if not previous else point.marked[3] - 1
        point.rewind(self.engine, self.loop, self.replay, previous)
        lr = self.lr(self.loop.epoch)
        raise self.diverged(f"the parameters became NaN or infinite at update {update} with learning rate {lr:g}",
                            lr)

    def diverged(self, what, lr):
        loop = self.loop
        return Diverged(f"training diverged in epoch {loop.epoch + 1}: {what}; kept the weights from epoch "
                        f"{loop.epoch}: lower the learning rate (try {smaller_lr(lr):g}){self.scale_advice()}",
                        loop.history)

    def first_loss(self):
        """Loss of the starting weights on the first batch of rows: what check_growth measures against."""
        rows = self.batch
        loss, _ = self.engine.evaluate(self.X[:rows], self.T[:rows], chunk=rows)
        return loss if math.isfinite(loss) else None

    def scale_advice(self):
        """Advice to add to a divergence message when the inputs are far from unit scale."""
        largest = float(abs(self.X).max())
        return f", or scale the inputs (their largest magnitude is {largest:.3g})" if largest > 10 else ""

    def agree(self, value):
        """`value` as rank 0 has it (every process must take the same decisions)."""
        return value if self.cluster is None else self.cluster.agree(value)

    def measure(self, X, T):
        """(mean loss, metric) of the current weights on a data set; shared out among processes."""
        if self.cluster is None:
            return self.engine.evaluate(X, T)
        total, correct = self.cluster.evaluate(self.engine, X, T)
        return total / X.shape[0], self.engine.metric(correct, X.shape[0])

    def evaluate(self, record):
        metric = self.engine.module.METRIC
        record["train_loss"], value = self.measure(self.X, self.T)
        if metric:
            record["train_" + metric] = value

    def validate(self, record):
        """Validation loss and metric; remember the best parameters for early stopping."""
        loop, metric = self.loop, self.engine.module.METRIC
        record["val_loss"], val_metric = self.measure(*self.validation)
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
        """Write the checkpoint (rank 0 alone, when there are several processes)."""
        if self.cluster is not None and self.cluster.rank != 0:
            return
        arrays, meta = self.loop.to_checkpoint(self.engine)
        meta.update(settings=self.settings(), monitor=None if self.monitor is None else self.monitor.state())
        checkpoint.save(arrays, meta)

    def resume(self, checkpoint):
        arrays, meta = checkpoint.load() if self.cluster is None else self.cluster.load(checkpoint)
        _check_resumable(checkpoint.path, meta.get("settings") or {}, self.settings())
        try:
            self.loop.from_checkpoint(self.engine, arrays, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(f"checkpoint {checkpoint.path} is incomplete or damaged ({exc})") from None
        if self.monitor is not None:
            self.monitor.load_state(meta.get("monitor"))
