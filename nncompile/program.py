"""`nc.compile`: model → derivation → backend source → JIT module, wrapped for people.

`CompiledProgram` is what users hold: `init_params`, `loss_and_grad`, `forward`, the
generated source, and (derived lazily, so a cache hit skips SymPy) the IR graph and the
formulas.  The trainer uses its `engine()`, never SymPy.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from . import backends, jit
from .dsl.models import Model
from .errors import DataError, DistributedError, ModelError
from .runtime import distributed as parallel
from .runtime import engine as runtime
from .symbolic.rules import OPTIMIZERS as BUILTIN_OPTIMIZERS
from .symbolic.rules import RULES_VERSION, Optimizer
from .version import __version__

DTYPES = ("float32", "float64")


@contextmanager
def data_errors() -> Iterator[None]:
    """Report the runtime's data and settings errors as nncompile errors."""
    try:
        yield
    except runtime.Diverged:
        raise
    except parallel.DistributedError as exc:
        raise DistributedError(str(exc), getattr(exc, "lost", ()), getattr(exc, "reporter", None)) from None
    except runtime.TrainingError as exc:
        raise DataError(str(exc)) from None


def compile(model: Model, backend: str = "numpy", dtype: str = "float64",  # noqa: A001
            optimizers: Sequence[Optimizer] = (), **options: object) -> "CompiledProgram":
    """Compile `model` for `backend` ("numpy" or "cuda") in `dtype` ("float32" or "float64").

    `optimizers` adds your own update rules (`nncompile.Optimizer`) to the built-in ones,
    each fused into a generated step.  Options go to the backend (numpy: ``fold_bias=False``
    turns bias folding off, ``optimize=False`` gives the plain reference lowering; cuda:
    ``cuda_graphs=False`` launches kernels one by one instead of replaying CUDA graphs).
    The generated module is cached by content hash; see `jit`.  The cuda backend needs
    CuPy and a GPU, and says in one line (BackendError) which is missing.
    """
    if not isinstance(model, Model):
        raise ModelError(f"compile() takes an nn.Sequential or nn.Model, got {type(model).__name__}")
    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    optimizers = _checked_optimizers(optimizers)
    be = backends.get(backend)
    backends.require(be)
    from .backends.templating import templates_digest
    key = jit.key_of(__version__, str(RULES_VERSION), be.NAME, dtype, repr(sorted(options.items())),
                     templates_digest(), jit.compiler_digest(), model.spec(),
                     *(opt.key() for opt in optimizers))
    derived: dict[str, object] = {}

    def render() -> str:
        from .derive.backprop import derive
        derivation = derive(model, dtype, optimizers)
        derived["derivation"] = derivation
        return be.render_module(derivation.program, **options)

    module, path = jit.load(key, render, prefix=f"nncompile_{model.name}_{be.NAME}")
    prog = CompiledProgram(model, module, path, backend, dtype, derived.get("derivation"))
    prog.optimizers, prog.options = optimizers, options
    return prog


def _checked_optimizers(optimizers: object) -> tuple[Optimizer, ...]:
    if isinstance(optimizers, Optimizer):
        optimizers = (optimizers,)
    if isinstance(optimizers, (str, bytes)) or not all(isinstance(o, Optimizer) for o in optimizers):
        raise ModelError("optimizers must be a list of nncompile.Optimizer rules "
                         "(built-in optimizers are always compiled in; choose them by name in train)")
    return tuple(dict.fromkeys(optimizers))


class CompiledProgram:
    """A compiled model: parameters in layer order, gradients, forward pass, generated source."""

    def __init__(self, model: Model, module: object, path: Path, backend: str, dtype: str,
                 derivation: object = None) -> None:
        self.model, self.module, self.source_path = model, module, path
        self.backend, self.dtype = backend, dtype
        if derivation is not None:
            self.__dict__["derivation"] = derivation
        self._engine: runtime.Engine | None = None
        self.optimizers: tuple[Optimizer, ...] = ()
        self.options: dict = {}

    def __repr__(self) -> str:
        return (f"<CompiledProgram {self.model.name!r} backend={self.backend} dtype={self.dtype} "
                f"params={self.n_params}>")

    # -- description ------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        return [name for name, *_ in self.module.PARAMS]

    @property
    def trainable(self) -> list[str]:
        """The parameters with a gradient (the keys of `loss_and_grad`'s grads): all but the buffers."""
        return [name for name in self.param_names if name not in self.module.BUFFERS]

    @property
    def buffers(self) -> list[str]:
        """State the forward pass keeps and training updates without a gradient (BatchNorm's running
        statistics): in `init_params`, results, weights files and checkpoints, never in the grads."""
        return list(self.module.BUFFERS)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(shape) for name, shape, *_ in self.module.PARAMS}

    @property
    def n_params(self) -> int:
        return int(self.module.N_PARAMS)

    @property
    def source(self) -> str:
        """The generated module's text (without the cache's hash line)."""
        return self.source_path.read_text(encoding="utf-8").partition("\n")[2]

    @cached_property
    def derivation(self) -> object:
        """The derivation records and IR (computed on first use after a cache hit)."""
        from .derive.backprop import derive
        return derive(self.model, self.dtype, self.optimizers)

    def with_optimizer(self, optimizer: Optimizer) -> "CompiledProgram":
        """This program, or a recompiled one whose steps include the rule `optimizer`."""
        if not isinstance(optimizer, Optimizer):
            raise ModelError(f"optimizer must be a name or an nncompile.Optimizer rule, "
                             f"got {type(optimizer).__name__}")
        if optimizer in self.optimizers or BUILTIN_OPTIMIZERS.get(optimizer.name) == optimizer:
            return self
        return compile(self.model, self.backend, self.dtype, self.optimizers + (optimizer,), **self.options)

    @cached_property
    def formulas(self) -> object:
        """The gradient formulas layer by layer (`formulas.Formulas`): SymPy objects, derived on first use."""
        from .explain.formulas import Formulas
        return Formulas.of(self.derivation)

    def _repr_html_(self) -> str:
        """Jupyter: the network, the derivation beside the generated code, the explicit graph."""
        from .report.page import report_html
        return report_html(self, fragment=True)

    @property
    def graph(self) -> object:
        """The explicit forward + backward graph: the Program IR."""
        return self.derivation.program

    def workspace_bytes(self, batch_size: int) -> int:
        """Bytes of buffers a batch of this size needs, besides parameters and state."""
        return int(self.module.workspace_bytes(batch_size))

    # -- parameters -------------------------------------------------------------------
    def init_params(self, seed: int = 0, scheme: str = "auto") -> dict[str, np.ndarray]:
        """Fresh parameters: weights by `scheme` ("auto", "normal", "xavier", "he"), biases zero."""
        with data_errors():
            return self.unflatten(runtime.init_flat(self.module, seed, scheme))

    def flatten(self, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """The flat parameter vector for a params dict (checked against the model)."""
        if not isinstance(params, Mapping):
            raise DataError(f"params must be a dict of arrays, got {type(params).__name__}")
        missing = [n for n in self.param_names if n not in params]
        extra = [n for n in params if n not in self.param_shapes]
        if missing or extra:
            what = f"is missing {missing[0]!r}" if missing else f"has unknown {extra[0]!r}"
            raise DataError(f"params {what} (expected {', '.join(self.param_names)})")
        flat = np.empty(self.n_params, dtype=self.dtype)
        for name, shape, offset, _ in self.module.PARAMS:
            with data_errors():
                value = runtime.numeric_array(params[name], f"params[{name!r}]")
            if value.shape != tuple(shape):
                raise DataError(f"params[{name!r}] has shape {value.shape} but the model needs {tuple(shape)}")
            if not np.isfinite(value).all():
                raise DataError(f"params[{name!r}] contains NaN or infinite values")
            flat[offset:offset + value.size] = value.ravel()
        return flat

    def unflatten(self, flat: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """A params dict (NumPy copies) from a flat vector, in layer order (only `names`, when given)."""
        flat = runtime.to_host(flat)
        out = {}
        for name, shape, offset, _ in self.module.PARAMS:
            if names is not None and name not in names:
                continue
            size = int(np.prod(shape))
            out[name] = np.array(flat[offset:offset + size], dtype=self.dtype).reshape(shape)
        return out

    # -- evaluation -------------------------------------------------------------------
    def engine(self, params: Mapping[str, np.ndarray] | None = None) -> runtime.Engine:
        """A fresh engine (flat vectors + workspaces) for training; the trainer's only handle."""
        flat = None if params is None else self.flatten(params)
        with data_errors():
            return runtime.Engine(self.module, flat)

    def prepare(self, X: object, Y: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Inputs and targets checked and converted (labels one-hot for cross-entropy).

        A model with several inputs takes X as a list of arrays, one per input in order;
        they are flattened row-major and joined into the one X matrix the program reads (which
        is also accepted as it is: an (N, INPUT_DIM) array, the form scripts and files use).
        """
        X = self._joined(X)
        with data_errors():
            Xc = runtime.check_inputs(X, self.module.INPUT_DIM, self.dtype, self.module.INPUT_SHAPES)
            if Y is None:
                return Xc, None
            T = runtime.encode_targets(Y, self.module.TARGET_ENCODING, self.module.OUTPUT_DIM,
                                       self.dtype, Xc.shape[0])
        return Xc, T

    def _joined(self, X: object) -> object:
        """Several inputs as one (N, total) array; one input of image shape flattened row-major."""
        shapes = [tuple(shape) for shape in self.module.INPUT_SHAPES]
        if len(shapes) == 1:
            return _flattened(X, shapes[0])
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == self.module.INPUT_DIM:
            return X
        if not isinstance(X, (list, tuple)) or len(X) != len(shapes):
            raise DataError(f"model {self.model.name} has {len(shapes)} inputs: give X as a list of "
                            f"{len(shapes)} arrays, one per input")
        with data_errors():
            parts = [runtime.numeric_array(_flattened(x, shape), f"input {i}") for i, (x, shape) in
                     enumerate(zip(X, shapes), 1)]
        parts = [p.reshape(-1, 1) if p.ndim == 1 else p for p in parts]
        rows = {p.shape[0] for p in parts}
        if len(rows) != 1:
            raise DataError(f"the inputs have different numbers of rows: {', '.join(str(p.shape[0]) for p in parts)}")
        return np.concatenate(parts, axis=1)

    def _bound(self, params: Mapping[str, np.ndarray]) -> runtime.Engine:
        flat = self.flatten(params)
        with data_errors():
            if self._engine is None:
                self._engine = runtime.Engine(self.module, max_workspaces=4)
            self._engine.params[...] = self._engine.device(flat)
        return self._engine

    def loss_and_grad(self, params: Mapping[str, np.ndarray], X: object, Y: object,
                      seed: int = 0) -> tuple[object, dict]:
        """Loss (mean over the batch, with penalties) and the gradient of every trainable parameter.

        As in training: BatchNorm uses the batch statistics (the given running statistics are
        left as they are), Dropout draws its masks from `seed` (update count 0), so the
        same seed gives the same loss and gradients.
        """
        Xc, T = self.prepare(X, Y)
        engine = self._bound(params)
        with data_errors():
            runtime.check_train_rows(self.module, Xc.shape[0])
            ws = engine.workspace(Xc.shape[0])
            engine.set_seed(seed)
        ws.X[...] = engine.device(Xc)
        ws.T[...] = engine.device(T)
        loss = float(ws.loss_and_grad())
        return np.dtype(self.dtype).type(loss), self.unflatten(engine.grads, self.trainable)

    def loss(self, params: Mapping[str, np.ndarray], X: object, Y: object) -> object:
        """Loss only (mean over the batch, with penalties), as `evaluate` computes it (running statistics,
        no dropout)."""
        Xc, T = self.prepare(X, Y)
        with data_errors():
            loss, _ = self._bound(params).evaluate(Xc, T)
        return np.dtype(self.dtype).type(loss)

    def evaluate(self, params: Mapping[str, np.ndarray], X: object, Y: object) -> dict[str, float]:
        """Held-out evaluation: mean loss (with penalties) and the metric ("accuracy", ...) if any."""
        Xc, T = self.prepare(X, Y)
        with data_errors():
            loss, metric = self._bound(params).evaluate(Xc, T)
        result = {"loss": loss}
        if self.module.METRIC:
            result[self.module.METRIC] = metric
        return result

    def forward(self, params: Mapping[str, np.ndarray], X: object) -> np.ndarray:
        """Output of the last declared layer for every row of X."""
        Xc, _ = self.prepare(X)
        with data_errors():
            return self._bound(params).predict(Xc)

    def predict(self, params: Mapping[str, np.ndarray], X: object) -> np.ndarray:
        """Class labels for classifiers (argmax, or output > 0.5 for binary), else the output."""
        out = self.forward(params, X)
        if self.module.METRIC == "accuracy":
            return out.argmax(axis=1)
        if self.module.METRIC == "binary_accuracy":
            labels = (out > 0.5).astype(np.int64)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        return out



def _flattened(X: object, shape: tuple[int, ...]) -> object:
    """(N, *shape) as (N, prod(shape)), row-major; anything else is left for the runtime's checks."""
    if len(shape) < 2:
        return X
    array = np.asarray(X) if not isinstance(X, np.ndarray) else X
    if array.ndim == len(shape) + 1 and tuple(array.shape[1:]) == shape:
        return array.reshape(array.shape[0], -1)
    return array
