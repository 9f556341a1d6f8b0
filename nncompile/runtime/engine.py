"""NumPy-only training runtime: initialisation, data checks, memory, the engine.

`nncompile generate` embeds this file verbatim in standalone scripts, so it imports
nothing but the standard library and NumPy, and it talks to a compiled program only
through the generated module's interface: MODEL, DTYPE, PARAMS, N_PARAMS, OPTIMIZERS,
METRIC, TARGET_ENCODING, OUTPUT_DIM and build(n, params, grads, state), plus `xp`, the
array module its buffers live in, when that is not NumPy (CuPy for the CUDA backend: the
engine's vectors and the training data then stay on the GPU, copied there once).
The epoch loop itself is in loop.py, embedded right after this file.
"""
import math
import os

import numpy as np

INIT_SCHEMES = ("auto", "normal", "xavier", "he")


class TrainingError(ValueError):
    """Bad data or settings; one line says which."""


class Diverged(TrainingError):
    """The loss stopped being finite; the state after the last good epoch was restored.

    `history` holds the records of the epochs that finished; `update` is the update whose
    loss was not finite, when that is how it was found.
    """

    def __init__(self, message, history=(), update=None):
        super().__init__(message)
        self.history, self.update = list(history), update


def init_flat(module, seed=0, scheme="auto"):
    """Flat parameter vector: weights by `scheme`, the rest as declared (biases zero, scales one).

    "normal" draws N(0, 0.01²); "xavier" U(-a, a) with a = sqrt(6/(fan_in + fan_out))
    (Glorot); "he" N(0, 2/fan_in) (Kaiming); "auto" He before ReLU-like layers, else Xavier.
    A parameter declared "zeros" or "ones" (a bias, LayerNorm's gamma, BatchNorm's running
    variance) starts at that value whatever the scheme.  Numbers are drawn in float64 and
    then cast, so float32 starts from the same values.
    """
    if scheme not in INIT_SCHEMES:
        raise TrainingError(f"unknown init scheme {scheme!r} (choose from {', '.join(INIT_SCHEMES)})")
    ensure_memory(module.N_PARAMS * 8, f"the {module.N_PARAMS} parameters of the model")
    rng = np.random.default_rng(seed)
    flat = np.zeros(module.N_PARAMS, dtype=np.float64)
    for name, shape, offset, auto in module.PARAMS:
        size = int(np.prod(shape))
        if auto in ("zeros", "ones"):
            flat[offset:offset + size] = 0.0 if auto == "zeros" else 1.0
            continue
        fan_in, fan_out = fans(shape)
        kind = auto if scheme == "auto" else scheme
        if kind == "normal":
            values = rng.normal(0.0, 0.01, size=shape)
        elif kind == "xavier":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            values = rng.uniform(-bound, bound, size=shape)
        else:
            values = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
        flat[offset:offset + size] = values.ravel()
    return flat.astype(module.DTYPE)


def fans(shape):
    """(fan_in, fan_out) of a weight: (in, out) for a matrix; for a convolution kernel (out, in, kh, kw),
    in·kh·kw and out·kh·kw, as PyTorch counts them."""
    if len(shape) == 2:
        return shape[0], shape[1]
    field = int(np.prod(shape[2:]))
    return shape[1] * field, shape[0] * field


def check_train_rows(module, *sizes):
    """Refuse a training batch smaller than the model allows (BatchNorm: a variance needs two rows)."""
    least = getattr(module, "MIN_TRAIN_ROWS", 1)
    small = [n for n in sizes if n < least]
    if small:
        raise TrainingError(f"a training batch of {small[0]} row{'s' if small[0] != 1 else ''} is too small: "
                            f"BatchNorm normalizes with batch statistics and needs at least {least} rows per "
                            "batch (choose a batch size that leaves no batch of one row)")


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


def check_inputs(X, width, dtype, shapes=()):
    """Inputs as a C-contiguous (N, width) array of the program's dtype, finite.

    `shapes` are the model's input shapes: a model of one image input (C, H, W) also takes X of
    shape (N, C, H, W), read row-major into its (N, C*H*W) rows.
    """
    X = numeric_array(X, "inputs")
    if X.ndim == 1 and width == 1:
        X = X.reshape(-1, 1)
    images = [tuple(shape) for shape in shapes if len(shape) > 1]
    if X.ndim > 2 and len(shapes) == 1 and tuple(X.shape[1:]) == tuple(shapes[0]):
        X = X.reshape(X.shape[0], width)
    if X.ndim != 2 or X.shape[1] != width:
        expected = f"(N, {width})"
        if len(shapes) == 1 and images:
            expected = f"images (N, {', '.join(map(str, images[0]))}), or (N, {width}) read row-major"
        raise TrainingError(f"inputs have shape {X.shape} but the model expects {expected}")
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


def ensure_memory(nbytes, what, advice="use a smaller model", free_memory=available_memory, where="memory"):
    """Refuse, before allocating, buffers larger than the memory available (when it is known).

    `free_memory` says how many bytes are free (None: unknown), `where` names that memory
    in the message ("GPU memory" for a device's).
    """
    free = free_memory()
    if free is not None and nbytes > free:
        raise TrainingError(f"{what} needs {human_bytes(nbytes)} of {where} but only {human_bytes(free)} "
                            f"is available: {advice}")


def vector_bytes(module):
    """Bytes of an engine's own vectors: parameters, and gradients followed by the tail (loss, count)."""
    return (2 * module.N_PARAMS + 2) * np.dtype(module.DTYPE).itemsize


class Engine:
    """A compiled module bound to flat parameter, gradient and optimizer-state vectors.

    Workspaces (all buffers for one batch size) are built on first use and kept, so a
    training loop allocates nothing per step.  The vectors live where the module computes
    (`xp`: NumPy, or CuPy on a GPU).  The gradient vector is followed by two more numbers,
    `tail` (a batch's loss and correct count), so that data-parallel training sums all
    three across processes in one call.
    """

    def __init__(self, module, params=None, max_workspaces=None):
        self.module = module
        self.xp = getattr(module, "xp", np)
        # a GPU module says how much device memory is free (CUDA: cupy_support.free_memory)
        self.free_memory = available_memory if self.xp is np else getattr(module, "free_memory", lambda: None)
        self.memory = "memory" if self.xp is np else "GPU memory"
        self.ensure(vector_bytes(module), f"the parameter and gradient vectors of {module.N_PARAMS} entries")
        self.params = self.xp.zeros(module.N_PARAMS, dtype=module.DTYPE) if params is None else self.device(params)
        self.reduced = self.xp.zeros(module.N_PARAMS + 2, dtype=module.DTYPE)
        self.grads, self.tail = self.reduced[:module.N_PARAMS], self.reduced[module.N_PARAMS:]
        self.state = {}
        self.seed = 0
        self.max_workspaces = max_workspaces
        self.counted = module.METRIC is not None
        self.fetch = _fetch(self.xp, self.counted)
        self._workspaces = {}
        self.loaded = {}  # batch size -> what the training loop left in that workspace's inputs

    def ensure(self, nbytes, what, advice="use a smaller model"):
        """Refuse, before allocating, `nbytes` more than the memory the module computes in has free."""
        ensure_memory(nbytes, what, advice, self.free_memory, self.memory)

    def device(self, array):
        """`array` in the module's array module (a copy to the GPU for CuPy; as it is for NumPy)."""
        if self.xp is not np and not isinstance(array, self.xp.ndarray):
            array = np.asarray(array)
            self.ensure(array.nbytes, f"copying an array of shape {array.shape} ({array.dtype}) to the GPU",
                        "use less data or a smaller model")
        return self.xp.asarray(array)

    def workspace(self, n, keep=False):
        """All buffers for batch size n, built once; says how much memory it needs if that fails.

        Callers write their own rows into it, so what the training loop loaded there is
        forgotten, unless `keep` (the loop itself asking).
        """
        if not keep:
            self.loaded.pop(n, None)
        ws = self._workspaces.get(n)
        if ws is None:
            if self.max_workspaces and len(self._workspaces) >= self.max_workspaces:
                self.loaded.pop(next(iter(self._workspaces)), None)
                self._workspaces.pop(next(iter(self._workspaces)))
            self.ensure(self.module.workspace_bytes(n), f"a batch of {n} rows", "use a smaller batch")
            try:
                ws = self.module.build(n, self.params, self.grads, self.state)
            except MemoryError:
                need = human_bytes(self.module.workspace_bytes(n))
                raise TrainingError(f"a batch of {n} rows needs {need} of buffers, more than "
                                    "this machine can allocate: use a smaller batch") from None
            self._workspaces[n] = ws
            self._seed_workspace(ws)
        return ws

    def set_seed(self, seed):
        """The seed the dropout masks are drawn from (with the update count, layer and element)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise TrainingError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        self.seed = int(seed)
        for ws in self._workspaces.values():
            self._seed_workspace(ws)

    def _seed_workspace(self, ws):
        if getattr(ws, "dropout_seed", None) is not None:
            ws.dropout_seed[...] = self.seed

    def reset_state(self, optimizer):
        """Zero state vectors for `optimizer` (kept across epochs, saved in checkpoints)."""
        names, _ = self.module.OPTIMIZERS[optimizer]
        for name in names:
            if name in self.state:
                self.state[name].fill(0.0)
            else:
                self.ensure(self.module.N_PARAMS * np.dtype(self.module.DTYPE).itemsize,
                            f"the {optimizer} state vector {name!r}")
                self.state[name] = self.xp.zeros(self.module.N_PARAMS, dtype=self.module.DTYPE)
                self._workspaces.clear()  # built closures hold no reference to the new vector
                self.loaded.clear()

    def finite(self):
        """Whether every parameter is finite: one BLAS dot product (NaN and inf propagate), checked
        element by element only when that overflows (call it under np.errstate(over="ignore"))."""
        if math.isfinite(float(self.params.dot(self.params))):
            return True
        return bool(self.xp.isfinite(self.params).all())

    def evaluate(self, X, T, rows=None, chunk=1024):
        """Mean loss (with penalties) and metric over a data set, in chunks.

        With `rows` = (start, stop), only those rows are evaluated and the sums are returned
        instead: (loss summed over rows, correct count), for a data-parallel evaluation.
        """
        start, stop = (0, X.shape[0]) if rows is None else rows
        total, correct = 0.0, 0.0
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            ws = self.workspace(last - first)
            ws.X[...] = self.device(X[first:last])
            ws.T[...] = self.device(T[first:last])
            loss, hits = self.fetch(ws.loss())
            total += float(loss) * (last - first)
            correct += float(hits)
        if rows is not None:
            return total, correct
        return total / X.shape[0], self.metric(correct, X.shape[0])

    def metric(self, correct, rows):
        """The metric from a count of correct predictions: per row (accuracy) or per element (binary)."""
        if self.module.METRIC is None:
            return None
        return float(correct) / self.scored(rows)

    def scored(self, rows):
        """Predictions the metric counts in `rows` rows: one per row (accuracy), one per output (binary)."""
        return rows * (self.module.OUTPUT_DIM if self.module.METRIC == "binary_accuracy" else 1)

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


def _fetch(xp, counted):
    """A function turning what a step returns into (loss, correct count) on the host.

    NumPy steps return (L, C), or L for models without a metric; CUDA steps return one
    device array [L, C] (or L), read back in one copy.
    """
    if xp is np:
        return _pair if counted else _alone
    return _device_pair if counted else _device_alone


def _pair(result):
    return result


def _alone(loss):
    return loss, 0


def _device_pair(result):
    loss, hits = result.get()
    return loss, hits


def _device_alone(loss):
    return float(loss), 0
