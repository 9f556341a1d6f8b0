"""NumPy-only training runtime: initialisation, targets, batching and the epoch loop.

`nncompile generate` embeds this file verbatim in standalone scripts, so it imports
nothing but the standard library and NumPy, and it talks to a compiled program only
through the generated module's interface: PARAMS, N_PARAMS, OPTIMIZERS, METRIC,
TARGET_ENCODING, OUTPUT_DIM and build(n, params, grads, state).
"""
import math
import os

import numpy as np

INIT_SCHEMES = ("auto", "normal", "xavier", "he")


class TrainingError(ValueError):
    """Bad data or settings; one line says which."""


class Diverged(TrainingError):
    """The loss stopped being finite; the parameters of the last good epoch were restored.

    `history` holds the records of the epochs that finished.
    """

    history = ()


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
    if not np.isfinite(X).all():
        bad = int(np.argwhere(~np.isfinite(X))[0][0])
        raise TrainingError(f"inputs contain NaN or infinite values (first in row {bad})")
    return X


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
    if not np.isfinite(T).all():
        raise TrainingError("targets contain NaN or infinite values")
    if encoding == "binary" and ((T < 0) | (T > 1)).any():
        raise TrainingError("targets for binary cross-entropy must lie in [0, 1]")
    if encoding == "onehot" and (((T < 0).any()) or not np.allclose(T.sum(axis=1), 1.0, atol=1e-6)):
        raise TrainingError("cross-entropy targets must be labels or rows of probabilities summing to 1")
    return T


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
    training loop allocates nothing per step.
    """

    def __init__(self, module, params=None, max_workspaces=None):
        self.module = module
        ensure_memory(2 * module.N_PARAMS * np.dtype(module.DTYPE).itemsize,
                      f"the parameter and gradient vectors of {module.N_PARAMS} entries")
        self.params = np.zeros(module.N_PARAMS, dtype=module.DTYPE) if params is None else params
        self.grads = np.zeros(module.N_PARAMS, dtype=module.DTYPE)
        self.state = {}
        self.max_workspaces = max_workspaces
        self._workspaces = {}

    def workspace(self, n):
        """All buffers for batch size n, built once; says how much memory it needs if that fails."""
        ws = self._workspaces.get(n)
        if ws is None:
            if self.max_workspaces and len(self._workspaces) >= self.max_workspaces:
                self._workspaces.pop(next(iter(self._workspaces)))
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
                ensure_memory(self.module.N_PARAMS * np.dtype(self.module.DTYPE).itemsize,
                              f"the {optimizer} state vector {name!r}")
                self.state[name] = np.zeros(self.module.N_PARAMS, dtype=self.module.DTYPE)
                self._workspaces.clear()  # built closures hold no reference to the new vector

    def evaluate(self, X, T, chunk=1024):
        """Mean loss (with penalties) and metric over a data set, in chunks."""
        total, correct, rows = 0.0, 0, X.shape[0]
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            ws = self.workspace(stop - start)
            ws.X[...] = X[start:stop]
            ws.T[...] = T[start:stop]
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
            ws.X[...] = X[start:stop]
            ws.forward()
            out[start:stop] = ws.output
        return out


def count_correct(metric, output, T):
    """Correct predictions in a batch: argmax for classes, 0.5 threshold for binary."""
    if metric == "accuracy":
        return int(np.count_nonzero(output.argmax(axis=1) == T.argmax(axis=1)))
    if metric == "binary_accuracy":
        return int(np.count_nonzero((output > 0.5) == (T > 0.5)))
    return 0


def schedule_lr(schedule, lr, epoch, epochs, step_size=10, gamma=0.1):
    """Learning rate for a 0-based epoch: constant, step, exponential or cosine."""
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * gamma ** (epoch // step_size)
    if schedule == "exponential":
        return lr * gamma ** epoch
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise TrainingError(f"unknown schedule {schedule!r} (choose constant, step, exponential or cosine)")


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


def run_epoch(engine, X, T, order, batch, step_name, lr, step, hyper):
    """One pass over the data in `order`; returns (mean loss over updates, updates, next step)."""
    rows = X.shape[0]
    total, updates = 0.0, 0
    for start in range(0, rows, batch):
        idx = order[start:start + batch]
        ws = engine.workspace(idx.shape[0])
        np.take(X, idx, axis=0, out=ws.X)
        np.take(T, idx, axis=0, out=ws.T)
        loss = getattr(ws, step_name)(lr, step, *hyper)
        if not math.isfinite(loss):
            raise Diverged(f"the loss became {loss} at update {step}: lower the learning rate (now {lr:g})")
        total += loss
        updates += 1
        step += 1
    if not np.isfinite(engine.params).all():  # the last update itself overflowed
        raise Diverged(f"the parameters became NaN or infinite at update {step - 1}: "
                       f"lower the learning rate (now {lr:g})")
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
    return tuple(float(overrides.get(name, value)) for name, value in defaults.items())


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # a diverging run is reported in one line
def fit(engine, X, T, mode="minibatch", batch_size=32, epochs=10, lr=0.1, optimizer="sgd", hyper=(),
        seed=0, schedule="constant", validation=None, patience=None, min_delta=0.0, evaluate=True,
        callback=None):
    """The epoch loop shared by nncompile.train and standalone scripts.

    Returns (history, best_epoch, stopped_early).  On a non-finite loss the parameters of
    the last finished epoch are restored and TrainingError is raised.  With `validation`
    and `patience`, stops after `patience` epochs without a `min_delta` improvement of
    the validation loss and restores the best parameters.
    """
    metric = engine.module.METRIC
    batch = batch_size_for(mode, batch_size, X.shape[0])
    step_name = "step_" + optimizer
    rng = np.random.default_rng(seed)
    order = np.arange(X.shape[0])
    history, best_loss, best_params, best_epoch = [], math.inf, None, None
    last_good = engine.params.copy()
    step, waited, stopped = 1, 0, False
    for epoch in range(epochs):
        epoch_lr = schedule_lr(schedule, lr, epoch, epochs)
        if mode != "gd":
            order = rng.permutation(X.shape[0])
        try:
            loss, updates, step = run_epoch(engine, X, T, order, batch, step_name, epoch_lr, step, hyper)
        except Diverged as exc:
            engine.params[...] = last_good
            diverged = Diverged(f"training diverged in epoch {epoch + 1}: {exc}; "
                                f"kept the weights from epoch {epoch}")
            diverged.history = history
            raise diverged from None
        record = {"epoch": epoch + 1, "loss": float(loss), "updates": updates, "lr": epoch_lr}
        if evaluate and metric:
            record["train_loss"], record[metric] = engine.evaluate(X, T)
        if validation is not None:
            record["val_loss"], val_metric = engine.evaluate(*validation)
            if metric:
                record["val_" + metric] = val_metric
            if record["val_loss"] < best_loss - min_delta:
                best_loss, best_params, best_epoch, waited = record["val_loss"], engine.params.copy(), epoch + 1, 0
            else:
                waited += 1
        history.append(record)
        last_good[...] = engine.params
        if callback is not None and callback(record) is False:
            break
        if patience is not None and validation is not None and waited >= patience:
            stopped = True
            break
    if patience is not None and best_params is not None:
        engine.params[...] = best_params
    return history, best_epoch, stopped


def describe(record, metric):
    """One progress line for an epoch record."""
    parts = [f"epoch {record['epoch']:4d}", f"loss {record['loss']:.6f}"]
    if metric and metric in record:
        parts.append(f"{metric.replace('_', ' ')} {100 * record[metric]:.2f}%")
    if "val_loss" in record:
        parts.append(f"val loss {record['val_loss']:.6f}")
    if metric and "val_" + metric in record:
        parts.append(f"val {metric.replace('_', ' ')} {100 * record['val_' + metric]:.2f}%")
    return "  ".join(parts)


def main(module, argv=None):
    """Command line of a standalone script: train on a .npz file, print progress, save weights."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(description=f"Train model {module.MODEL!r} (generated by nncompile).")
    parser.add_argument("--data", required=True, help=".npz file with arrays X and y")
    parser.add_argument("--mode", choices=("gd", "sgd", "minibatch"), default="minibatch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--optimizer", choices=tuple(module.OPTIMIZERS), default="sgd")
    parser.add_argument("--schedule", choices=("constant", "step", "exponential", "cosine"), default="constant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", choices=INIT_SCHEMES, default="auto")
    parser.add_argument("--val-split", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--save", help="write the trained weights to this .npz file")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    args = parser.parse_args(argv)
    try:
        with np.load(args.data, allow_pickle=False) as data:
            X, y = data["X"], data["y"]
        X = check_inputs(X, module.INPUT_DIM, module.DTYPE)
        T = encode_targets(y, module.TARGET_ENCODING, module.OUTPUT_DIM, module.DTYPE, X.shape[0])
        validation = None
        if args.val_split:
            order = np.random.default_rng(args.seed + 1).permutation(X.shape[0])
            n_val = max(1, int(round(args.val_split * X.shape[0])))
            validation = (X[order[:n_val]], T[order[:n_val]])
            X, T = X[order[n_val:]], T[order[n_val:]]
        engine = Engine(module, init_flat(module, args.seed, args.init))
        engine.reset_state(args.optimizer)
        hyper = hyperparameters(module, args.optimizer, {})
        show = None if args.quiet else (lambda record: print(describe(record, module.METRIC), flush=True))
        history, _, _ = fit(engine, X, T, args.mode, args.batch_size, args.epochs, args.lr, args.optimizer,
                            hyper, args.seed, args.schedule, validation, args.patience, 0.0, True, show)
    except (TrainingError, OSError, KeyError, ValueError) as exc:
        message = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(exc))
        print(f"error: {message}", file=sys.stderr)
        return 2
    print("final: " + describe(history[-1], module.METRIC))
    if args.save:
        weights = {name: engine.params[offset:offset + int(np.prod(shape))].reshape(shape)
                   for name, shape, offset, _ in module.PARAMS}
        path = args.save if args.save.endswith(".npz") else args.save + ".npz"
        save_npz_atomic(path, weights)
        print(f"saved weights to {path}")
    return 0


def save_npz_atomic(path, arrays):
    """np.savez into a temporary file beside `path`, then rename: a crash leaves the old file whole."""
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npz.tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
