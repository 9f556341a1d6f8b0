"""The training rows as the step reads them, and one process's pass over them (`run_epoch`).

Embedded verbatim in standalone scripts right after engine.py (NumPy and the standard
library only).  The rows are kept once in the layout of the step's own input buffer
(with the bias column of ones when the program folds the bias into its matrix
products), so gathering a batch is one `take` per array into contiguous memory, with
no temporary copy; the order is reshuffled in place each epoch.  In full-batch mode the
rows are copied into the step's buffers once and never moved again.  Nothing here
allocates per update or per epoch.
"""
import math

import numpy as np

if __package__ == "nncompile.runtime":  # in a generated script engine.py is embedded above this file
    from .engine import Diverged, ensure_memory


class Batches:
    """The training set in the step's input layout, its shuffled order, and how it splits into batches.

    `groups` holds (size, first row of each batch) for the full batches, then for the last
    partial one.  `whole` (gd) means one batch of every row, in the original order, loaded once.
    """

    def __init__(self, engine, X, T, batch, whole):
        self.engine, self.X, self.T, self.batch, self.whole = engine, X, T, batch, whole
        self.rows = X.shape[0]
        self.base = np.arange(self.rows)
        self.order = self.base.copy()
        self.device_order = self.order if engine.xp is np else engine.device(self.order)
        self._stores = {}
        full = self.rows - self.rows % batch
        self.groups = tuple(group for group in ((batch, range(0, full, batch)), (self.rows - full, (full,)))
                            if group[0] and len(group[1]))

    def shuffle(self, rng):
        """A new order from `rng`, drawn exactly as rng.permutation(rows) would, in place."""
        np.copyto(self.order, self.base)
        rng.shuffle(self.order)
        if self.device_order is not self.order:
            self.device_order.set(self.order)

    def source(self, ws):
        """(rows to gather from, the buffer they go to) for workspace `ws`.

        A workspace's `inputs` may be wider than the data: the extra columns hold constants
        (the ones that multiply a folded bias).  The rows are stored once with the same
        columns, so that a gathered batch lands in contiguous memory in one copy.
        """
        inputs = getattr(ws, "inputs", ws.X)
        extra = inputs.shape[1] - self.X.shape[1]
        if extra == 0:
            return self.X, inputs
        store = self._stores.get(extra)
        if store is None:
            ensure_memory(self.rows * inputs.shape[1] * self.X.itemsize,
                          f"the {self.rows} training rows in the step's layout", "use fewer rows")
            store = np.empty((self.rows, inputs.shape[1]), dtype=self.X.dtype)
            store[:, :self.X.shape[1]] = self.X
            store[:, self.X.shape[1]:] = inputs[0, self.X.shape[1]:]
            self._stores[extra] = store
        return store, inputs

    def load_all(self, ws, lo=0, hi=None):
        """Full batch: rows [lo, hi) go into the workspace once (again only if something else used it)."""
        hi = self.rows if hi is None else hi
        if self.engine.loaded.get(hi - lo) != (self, lo):
            ws.X[...] = self.X[lo:hi]
            ws.T[...] = self.T[lo:hi]
            self.engine.loaded[hi - lo] = (self, lo)


def run_epoch(engine, batches, step_name, lr, step, hyper, on_batch=None):
    """One pass over the data in `batches`' order: (summed loss, correct count, updates, next step).

    The loss is summed over updates (each the mean over its batch); a non-finite one
    raises Diverged naming the update.  `on_batch(rows)`, when given, is called after
    each update (progress display).
    """
    if batches.whole:  # one update on every row, which stay in the step's buffers
        ws = engine.workspace(batches.rows, keep=True)
        batches.load_all(ws)
        loss, hits = engine.fetch(getattr(ws, step_name)(lr, step, *hyper))
        loss = float(loss)
        if not math.isfinite(loss):
            _check(loss, step, lr)
        if on_batch is not None:
            on_batch(batches.rows)
        return loss, hits, 1, step + 1
    total, correct, updates = 0.0, 0, 0
    fetch, order = engine.fetch, batches.device_order
    clip = ("clip",) if engine.xp is np else ()  # CuPy's take has no mode; "clip" skips NumPy's bounds copy
    for size, starts in batches.groups:
        ws = engine.workspace(size, keep=True)
        run, tb = getattr(ws, step_name), ws.T
        source, inputs = batches.source(ws)
        take_x, take_t = source.take, batches.T.take
        for start in starts:
            idx = order[start:start + size]
            take_x(idx, 0, inputs, *clip)
            take_t(idx, 0, tb, *clip)
            loss, hits = fetch(run(lr, step, *hyper))
            loss = float(loss)
            if not math.isfinite(loss):
                _check(loss, step, lr)
            total += loss
            correct += hits
            updates += 1
            step += 1
            if on_batch is not None:
                on_batch(size)
    return total, correct, updates, step


def _check(loss, step, lr):
    if not math.isfinite(loss):
        raise Diverged(f"the loss became {loss} at update {step} with learning rate {lr:g}", update=step)
