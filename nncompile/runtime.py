"""NumPy-only training runtime: initialisation, targets, batching, the epoch loop and its state.

`nncompile generate` embeds this file verbatim in standalone scripts, so it imports
nothing but the standard library and NumPy, and it talks to a compiled program only
through the generated module's interface: MODEL, DTYPE, PARAMS, N_PARAMS, OPTIMIZERS,
METRIC, TARGET_ENCODING, OUTPUT_DIM and build(n, params, grads, state), plus `xp`, the
array module its buffers live in, when that is not NumPy (CuPy for the CUDA backend: the
engine's vectors and the training data then stay on the GPU, copied there once).

Everything an epoch changes lives in the engine's flat vectors and in a `Loop`, and a
checkpoint (written by `checkpoint.Checkpoint`) saves both, so an interrupted run resumed
from its checkpoint ends with the same bits as one never interrupted.
"""
import hashlib
import math
import os

import numpy as np

INIT_SCHEMES = ("auto", "normal", "xavier", "he")
SCHEDULES = ("constant", "step", "exponential", "cosine")


class TrainingError(ValueError):
    """Bad data or settings; one line says which."""


class Diverged(TrainingError):
    """The loss stopped being finite; the state after the last good epoch was restored.

    `history` holds the records of the epochs that finished.
    """

    def __init__(self, message, history=()):
        super().__init__(message)
        self.history = list(history)


def init_flat(module, seed=0, scheme="auto"):
    """Flat parameter vector: weights by `scheme`, biases zero; same seed, same numbers.

    "normal" draws N(0, 0.01²); "xavier" U(-a, a) with a = sqrt(6/(fan_in + fan_out))
    (Glorot); "he" N(0, 2/fan_in) (Kaiming); "auto" He before ReLU-like layers, else Xavier.
    Numbers are drawn in float64 and then cast, so float32 starts from the same values.
    """
    if scheme not in INIT_SCHEMES:
        raise TrainingError(f"unknown init scheme {scheme!r} (choose from {', '.join(INIT_SCHEMES)})")
    ensure_memory(module.N_PARAMS * 8, f"the {module.N_PARAMS} parameters of the model")
    rng = np.random.default_rng(seed)
    flat = np.zeros(module.N_PARAMS, dtype=np.float64)
    for name, shape, offset, auto in module.PARAMS:
        if len(shape) != 2:
            continue
        fan_in, fan_out = shape
        kind = auto if scheme == "auto" else scheme
        if kind == "normal":
            values = rng.normal(0.0, 0.01, size=shape)
        elif kind == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            values = rng.uniform(-bound, bound, size=shape)
        else:
            values = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
        flat[offset:offset + fan_in * fan_out] = values.ravel()
    return flat.astype(module.DTYPE)


def numeric_array(values, what):
    """`values` as a real numeric (or boolean) array; ragged, text, object or complex data refused."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"{what} cannot be read as an array ({exc})") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TrainingError(f"{what} must be numeric, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TrainingError(f"{what} must be real numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        raise TrainingError(f"{what} must be an array with one row per example, got a single number")
    return array


def check_inputs(X, width, dtype):
    """Inputs as a C-contiguous (N, width) array of the program's dtype, finite."""
    X = numeric_array(X, "inputs")
    if X.ndim == 1 and width == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[1] != width:
        raise TrainingError(f"inputs have shape {X.shape} but the model expects (N, {width})")
    if X.shape[0] == 0:
        raise TrainingError("inputs are empty (0 rows)")
    X = np.ascontiguousarray(X, dtype=dtype)
    if not all_finite(X):
        bad = int(np.argwhere(~np.isfinite(X))[0][0])
        raise TrainingError(f"inputs contain NaN or infinite values (first in row {bad})")
    return X


def all_finite(a):
    """Whether every value is finite: one fast sum (NaN and inf propagate), checked in full only if needed."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(a, None))) or bool(np.isfinite(a).all())


def encode_targets(Y, encoding, width, dtype, rows):
    """Targets as a float (N, width) array: labels become one-hot rows for cross-entropy."""
    Y = numeric_array(Y, "targets")
    if Y.shape[0] != rows:
        raise TrainingError(f"targets have {Y.shape[0]} rows but inputs have {rows}")
    if encoding == "onehot" and (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1 and width > 1)):
        labels = Y.reshape(-1)
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise TrainingError("class labels must be whole numbers")
        labels = labels.astype(np.int64)
        bad = labels[(labels < 0) | (labels >= width)]
        if bad.size:
            raise TrainingError(f"label {int(bad[0])} is out of range for {width} classes (expected 0..{width - 1})")
        T = np.zeros((rows, width), dtype=dtype)
        T[np.arange(rows), labels] = 1.0
        return T
    if Y.ndim == 1 and width == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2 or Y.shape[1] != width:
        raise TrainingError(f"targets have shape {Y.shape} but the model outputs (N, {width})")
    T = np.ascontiguousarray(Y, dtype=dtype)
    if not all_finite(T):
        raise TrainingError("targets contain NaN or infinite values")
    if encoding == "binary" and ((T < 0) | (T > 1)).any():
        raise TrainingError("targets for binary cross-entropy must lie in [0, 1]")
    if encoding == "onehot" and (((T < 0).any()) or not np.allclose(T.sum(axis=1), 1.0, atol=1e-6)):
        raise TrainingError("cross-entropy targets must be labels or rows of probabilities summing to 1")
    return T


def to_host(array):
    """A NumPy array: a device (CuPy) array is copied to the host, a NumPy array returned as it is."""
    return array if isinstance(array, np.ndarray) else array.get()


def available_memory():
    """Bytes this process may still allocate, or None where the system does not say.

    Linux: MemAvailable from /proc/meminfo, lowered by a cgroup (container) memory limit,
    since a container is killed at its limit whatever the host has free.
    """
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            found += [int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("memory.max", "memory.current"),  # cgroup v2, then v1
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            with open("/sys/fs/cgroup/" + limit, encoding="ascii") as a, \
                    open("/sys/fs/cgroup/" + usage, encoding="ascii") as b:
                found.append(max(int(a.read()) - int(b.read()), 0))
        except (OSError, ValueError):  # absent, or "max" (no limit)
            pass
    if not found and hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def human_bytes(nbytes):
    """A byte count for people: 12.5 MiB, 1.50 GiB, 1,048,576.00 GiB."""
    if nbytes < 2**30 // 10:
        return f"{nbytes / 2**20:,.1f} MiB"
    return f"{nbytes / 2**30:,.2f} GiB"


def ensure_memory(nbytes, what, advice="use a smaller model"):
    """Refuse, before allocating, buffers larger than the memory available (when it is known)."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise TrainingError(f"{what} needs {human_bytes(nbytes)} of memory but only {human_bytes(free)} "
                            f"is available: {advice}")


class Engine:
    """A compiled module bound to flat parameter, gradient and optimizer-state vectors.

    Workspaces (all buffers for one batch size) are built on first use and kept, so a
    training loop allocates nothing per step.  The vectors live where the module computes
    (`xp`: NumPy, or CuPy on a GPU).
    """

    def __init__(self, module, params=None, max_workspaces=None):
        self.module = module
        self.xp = getattr(module, "xp", np)
        if self.xp is np:  # a GPU's memory is the device's business (CuPy reports it when allocating)
            ensure_memory(2 * module.N_PARAMS * np.dtype(module.DTYPE).itemsize,
                          f"the parameter and gradient vectors of {module.N_PARAMS} entries")
        self.params = self.xp.zeros(module.N_PARAMS, dtype=module.DTYPE) if params is None else self.device(params)
        self.grads = self.xp.zeros(module.N_PARAMS, dtype=module.DTYPE)
        self.state = {}
        self.max_workspaces = max_workspaces
        self._workspaces = {}

    def device(self, array):
        """`array` in the module's array module (a copy to the GPU for CuPy; as it is for NumPy)."""
        return self.xp.asarray(array)

    def workspace(self, n):
        """All buffers for batch size n, built once; says how much memory it needs if that fails."""
        ws = self._workspaces.get(n)
        if ws is None:
            if self.max_workspaces and len(self._workspaces) >= self.max_workspaces:
                self._workspaces.pop(next(iter(self._workspaces)))
            if self.xp is np:
                ensure_memory(self.module.workspace_bytes(n), f"a batch of {n} rows", "use a smaller batch")
            try:
                ws = self.module.build(n, self.params, self.grads, self.state)
            except MemoryError:
                need = human_bytes(self.module.workspace_bytes(n))
                raise TrainingError(f"a batch of {n} rows needs {need} of buffers, more than "
                                    "this machine can allocate: use a smaller batch") from None
            self._workspaces[n] = ws
        return ws

    def reset_state(self, optimizer):
        """Zero state vectors for `optimizer` (kept across epochs, saved in checkpoints)."""
        names, _ = self.module.OPTIMIZERS[optimizer]
        for name in names:
            if name in self.state:
                self.state[name].fill(0.0)
            else:
                if self.xp is np:
                    ensure_memory(self.module.N_PARAMS * np.dtype(self.module.DTYPE).itemsize,
                                  f"the {optimizer} state vector {name!r}")
                self.state[name] = self.xp.zeros(self.module.N_PARAMS, dtype=self.module.DTYPE)
                self._workspaces.clear()  # built closures hold no reference to the new vector

    def evaluate(self, X, T, chunk=1024):
        """Mean loss (with penalties) and metric over a data set, in chunks."""
        total, correct, rows = 0.0, 0, X.shape[0]
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            ws = self.workspace(stop - start)
            ws.X[...] = self.device(X[start:stop])
            ws.T[...] = self.device(T[start:stop])
            total += float(ws.loss()) * (stop - start)
            correct += count_correct(self.module.METRIC, ws.output, ws.T)
        metric = None if self.module.METRIC is None else correct / rows
        return float(total / rows), metric

    def predict(self, X, chunk=1024):
        """Output of the last layer for every row of X."""
        out = np.empty((X.shape[0], self.module.OUTPUT_DIM), dtype=self.module.DTYPE)
        for start in range(0, X.shape[0], chunk):
            stop = min(start + chunk, X.shape[0])
            ws = self.workspace(stop - start)
            ws.X[...] = self.device(X[start:stop])
            ws.forward()
            out[start:stop] = to_host(ws.output)
        return out


def count_correct(metric, output, T):
    """Correct predictions in a batch: argmax for classes, 0.5 threshold for binary."""
    if metric == "accuracy":
        return int((output.argmax(axis=1) == T.argmax(axis=1)).sum())
    if metric == "binary_accuracy":
        return int(((output > 0.5) == (T > 0.5)).sum())
    return 0


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


def hyperparameters(module, optimizer, overrides):
    """Positional hyperparameters of a step function, defaults filled in, unknown names refused."""
    if optimizer not in module.OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {optimizer!r} (choose from {', '.join(module.OPTIMIZERS)})")
    _, defaults = module.OPTIMIZERS[optimizer]
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise TrainingError(f"optimizer {optimizer} has no hyperparameter {unknown[0]!r} (it takes: {known})")
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
        meta.update(rng=self.rng.bit_generator.state, history=self.history)
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
    snap = loop.snapshot(engine)
    try:
        while loop.epoch < epochs and not loop.stopped:
            snap = loop.snapshot(engine)
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
            halt = callback is not None and callback(record) is False
            if checkpoint is not None and (loop.epoch % every == 0 or loop.epoch == epochs
                                           or loop.stopped or halt):
                run.save(checkpoint)
            if halt:
                break
    except KeyboardInterrupt:
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
        except Diverged as exc:
            loop.restore(self.engine, snap)
            raise Diverged(f"training diverged in epoch {loop.epoch + 1}: {exc}; kept the weights from epoch "
                           f"{loop.epoch}: lower the learning rate (try {lr / 10:g})", loop.history) from None
        return {"epoch": loop.epoch + 1, "loss": float(loss), "updates": updates, "lr": lr}

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
