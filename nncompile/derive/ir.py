"""Program IR: named buffers with static shapes, and ordered ops on them.

This is the explicit forward + backward graph.  It imports nothing of the package: the
derivation stage builds it, backends read it.  Elementwise math is carried as SymPy
expressions whose symbols are buffer names (broadcast by NumPy rules over the buffers'
shapes) or scalar names; a backend prints them with its own SymPy printer.

Shapes use the string "N" for the batch size, fixed when a backend binds a workspace.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Iterator, Union

import sympy as sp

Dim = Union[int, str]
BATCH = "N"

#: Buffer roles.  "value" buffers are intermediates a backend may alias or reuse.
ROLES = ("input", "target", "param", "grad", "state", "value", "scalar")


@dataclass(frozen=True)
class Buffer:
    """A named array: `shape` may hold BATCH; params and grads are views of flat vectors."""

    name: str
    shape: tuple[Dim, ...]
    role: str

    def size(self, n: int) -> int:
        """Number of elements for batch size n."""
        total = 1
        for d in self.shape:
            total *= n if d == BATCH else int(d)
        return total


@dataclass(frozen=True)
class Op:
    """Base op: `formula` is the human-readable line a backend puts beside the code."""

    formula: str
    layer: str
    stage: str  # "forward", "loss", "backward", "update"

    @property
    def outputs(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def inputs(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Linear(Op):
    """out = x·w + b (b broadcast over rows): the forward pass of a Dense layer."""

    out: str = ""
    x: str = ""
    w: str = ""
    b: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x, self.w, self.b)


@dataclass(frozen=True)
class LinearGrad(Op):
    """dw = xᵀ·dz and db = Σ_rows dz: both parameter gradients of a Dense layer."""

    dw: str = ""
    db: str = ""
    x: str = ""
    dz: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.dw, self.db)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x, self.dz)


@dataclass(frozen=True)
class MatMulT(Op):
    """out = a·bᵀ: the delta sent back through a Dense layer, dx = dz·Wᵀ."""

    out: str = ""
    a: str = ""
    b: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.a, self.b)


@dataclass(frozen=True)
class Map(Op):
    """out = expr, elementwise with broadcasting; `out` may also appear in expr (in place)."""

    out: str = ""
    expr: sp.Expr = sp.S.Zero

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(s.name for s in self.expr.free_symbols))


@dataclass(frozen=True)
class Reduce(Op):
    """out = reduction (sum or max) of expr over `axis` (None: all, giving a scalar)."""

    out: str = ""
    expr: sp.Expr = sp.S.Zero
    op: str = "sum"
    axis: int | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(s.name for s in self.expr.free_symbols))


@dataclass(frozen=True)
class CountCorrect(Op):
    """out = number of correct predictions of `y` for the targets `t` in the batch.

    rule "argmax": rows whose largest output is where the target's largest entry is (the
    first largest, as NumPy's argmax); rule "threshold": elements on the same side of 0.5
    as their target.  The metric of a training epoch comes from these counts, so that
    no second pass over the data is needed.
    """

    out: str = ""
    y: str = ""
    t: str = ""
    rule: str = "argmax"

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.y, self.t)


@dataclass(frozen=True)
class GradReady(Op):
    """Marks that the gradients in [start, stop) of the flat gradient vector are final.

    A data-parallel trainer may start summing that block across processes here, while
    the backward pass goes on (a backend without such a hook ignores the mark).
    """

    start: int = 0
    stop: int = 0

    @property
    def outputs(self) -> tuple[str, ...]:
        return ()

    @property
    def inputs(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Function:
    """An entry point: ordered ops, runtime scalar arguments, and the scalar it returns.

    `results` names buffers the caller reads after the function (besides the program's
    output): a backend that drops dead stores must keep them.  `count`, when set, is a
    scalar (a CountCorrect's output) returned after `returns`: the function then
    returns the pair (returns, count).  `hook`, when set, names a callable argument
    that GradReady marks call with their block (backends without hooks ignore it).
    """

    name: str
    ops: tuple[Op, ...]
    scalars: tuple[str, ...] = ()
    returns: str | None = None
    doc: str = ""
    results: tuple[str, ...] = ()
    count: str | None = None
    hook: str | None = None

    def kept(self, program_output: str) -> set[str]:
        """Buffers whose final values must be in memory when the function returns."""
        returned = {name for name in (self.returns, self.count) if name}
        return {program_output, *self.results} | returned


@dataclass(frozen=True)
class ParamSpec:
    """A parameter: public name ("dense1.W"), its buffer and gradient, place in the flat vector."""

    name: str
    buffer: str
    grad: str
    shape: tuple[int, ...]
    offset: int
    layer: str
    regularized: bool
    init: str = "xavier"  # what scheme "auto" picks: "he" before ReLU-like, else "xavier"

    @property
    def size(self) -> int:
        total = 1
        for d in self.shape:
            total *= d
        return total


@dataclass(frozen=True)
class OptimizerSpec:
    """What a trainer needs to drive a step: state vector names and default hyperparameters."""

    name: str
    function: str
    state: tuple[str, ...]
    defaults: tuple[tuple[str, float], ...]
    folds_lr: bool = False  # its update expects gradients already multiplied by the learning rate


@dataclass(frozen=True)
class Probe:
    """An activation layer watched by the `diagnose` entry point: f'(z) lands in `buffer`.

    `kind` says how f' can fail: "saturating" (f' -> 0 on both sides, sigmoid/tanh),
    "rectifier" (f' = 0 on one side, ReLU-like: units can die) or "other".
    """

    layer: str        # the Dense layer whose output z the activation reads
    activation: str   # the activation's name (tanh, relu, mish, ...)
    buffer: str       # (N, width) buffer holding f'(z) after diagnose()
    kind: str


@dataclass
class Program:
    """The whole compiled model: buffers, parameters in the flat vector, entry points."""

    name: str
    dtype: str
    input: str
    target: str
    output: str
    metric: str | None           # "accuracy", "binary_accuracy" or None
    target_encoding: str         # "onehot", "binary" or "real"
    buffers: dict[str, Buffer] = field(default_factory=dict)
    params: tuple[ParamSpec, ...] = ()
    functions: dict[str, Function] = field(default_factory=dict)
    optimizers: dict[str, OptimizerSpec] = field(default_factory=dict)
    probes: tuple[Probe, ...] = ()

    @property
    def n_params(self) -> int:
        return sum(p.size for p in self.params)

    @property
    def input_dim(self) -> int:
        return int(self.buffers[self.input].shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.buffers[self.output].shape[1])

    def ops(self, function: str) -> tuple[Op, ...]:
        return self.functions[function].ops

    def iter_ops(self) -> Iterator[Op]:
        """Every distinct op of every function, in first-seen order."""
        seen: set[int] = set()
        for fn in self.functions.values():
            for op in fn.ops:
                if id(op) not in seen:
                    seen.add(id(op))
                    yield op

    def workspace_bytes(self, n: int, itemsize: int) -> int:
        """Bytes of all batch-dependent and flat buffers for batch size n (an upper bound)."""
        return sum(b.size(n) for b in self.buffers.values()) * itemsize

    def validate(self) -> None:
        """Check that every op reads buffers or scalars that exist and that every name printed
        into code is a plain identifier ("layer.W" for parameters); raise AssertionError if not."""
        names = [self.name, *self.buffers, *self.functions, *self.optimizers]
        names += [n for fn in self.functions.values() for n in (*fn.scalars, *([fn.hook] if fn.hook else []))]
        names += [n for o in self.optimizers.values() for n in (*o.state, *dict(o.defaults))]
        names += [part for p in self.params for part in p.name.split(".")]
        bad = [n for n in names if not _identifier(n)]
        assert not bad, f"names that are not plain identifiers: {bad}"
        for fn in self.functions.values():
            known = set(self.buffers) | set(fn.scalars) | {BATCH}
            for op in fn.ops:
                missing = [n for n in op.inputs + op.outputs if n and n not in known]
                assert not missing, f"{fn.name}: {op.kind} {op.formula!r} uses unknown {missing}"


def _identifier(name: object) -> bool:
    return isinstance(name, str) and name.isascii() and name.isidentifier() and not keyword.iskeyword(name)


def last_uses(ops: tuple[Op, ...]) -> dict[str, int]:
    """Index of the last op reading each buffer, for liveness (aliasing, scratch reuse)."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            last[name] = i
    return last
