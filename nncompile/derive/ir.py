"""Program IR: named buffers with static shapes, and ordered ops on them.

This is the explicit forward + backward graph.  It imports nothing of the package: the
derivation stage builds it, backends read it.  Elementwise math is carried as SymPy
expressions whose symbols are buffer names (broadcast by NumPy rules over the buffers'
shapes) or scalar names; a backend prints them with its own SymPy printer.

Shapes use the string "N" for the batch size, fixed when a backend binds a workspace.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import Iterator, Union

import sympy as sp

Dim = Union[int, str]
BATCH = "N"

#: Buffer roles.  "value" buffers are intermediates a backend may alias or reuse; "seed" is the one
#: (1,) uint64 array holding the dropout seed, which the trainer sets (`ws.dropout_seed`); "index"
#: buffers hold what a forward op keeps for its backward op (where each max-pooling window's first
#: maximum is), in whatever form the backend's lowering of that pair of ops reads back.
ROLES = ("input", "target", "param", "grad", "state", "value", "scalar", "seed", "index")

#: The dropout masks' generator, the same in every backend (and in the tests' reference).  All
#: arithmetic is on unsigned 32-bit integers (mod 2**32); fmix32 is MurmurHash3's finalizer:
#:     fmix32(h): h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16
#: For a seed s (lo = s mod 2**32, hi = (s >> 32) mod 2**32), the update count t (0 outside a
#: training step; mod 2**32) and the dropout layer's number l (dropout1 -> 1):
#:     key = fmix32(fmix32(fmix32(lo ^ fmix32(hi)) ^ t) ^ l)
#: and element i of the layer's (N, ...) input in row-major order is kept when
#:     fmix32(key + (i + 1) * 0x9E3779B9) >= threshold(p) = ceil(p * 2**32)
#: where i counts from row0 * (elements per row) in a function with a "row0" argument (`gradient`:
#: its rows start at row0 of a global batch shared among processes), else from 0.
#: so it is kept with probability 1 - p (to within 2**-32), independently of every other.
DROPOUT_MIX = (0x85EBCA6B, 0xC2B2AE35)
DROPOUT_WEYL = 0x9E3779B9


def dropout_threshold(p: float) -> int:
    """The 32-bit threshold at or above which an element is kept: ceil(p·2³²), p in [0, 1)."""
    threshold = int(-(-p * 2**32 // 1))
    return min(max(threshold, 0), 2**32 - 1)


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
    """dw = xᵀ·dz and db = Σ_rows dz: both parameter gradients of a Dense layer.

    With `accumulate` the products are added to dw and db (a layer called more than once:
    the gradient of a shared parameter is the sum over its uses).
    """

    dw: str = ""
    db: str = ""
    x: str = ""
    dz: str = ""
    accumulate: bool = False

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
    """out = reduction (sum or max) of expr over `axis` (None: all, giving a scalar; a tuple: those
    axes, the out buffer keeping them as 1s after its first axis: (0, 2, 3) of (N, C, H, W) gives (C, 1, 1),
    a per-channel statistic that broadcasts over images)."""

    out: str = ""
    expr: sp.Expr = sp.S.Zero
    op: str = "sum"
    axis: int | tuple[int, ...] | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(s.name for s in self.expr.free_symbols))


@dataclass(frozen=True)
class Concat(Op):
    """out = [parts[0], parts[1], ...] joined along axis 1 (features, or channels)."""

    out: str = ""
    parts: tuple[str, ...] = ()

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.parts))


@dataclass(frozen=True)
class Slice(Op):
    """out = x[:, start:stop] along axis 1: one part of a joined array (the backward of Concat,
    or one model input of several, which arrive joined in X)."""

    out: str = ""
    x: str = ""
    start: int = 0
    stop: int = 0

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)


@dataclass(frozen=True)
class DropoutMask(Op):
    """out = 1 where an element is kept, 0 where dropped, by the generator specified above
    (`DROPOUT_MIX`): keyed by the seed in buffer `seed`, the update count (the function's "step"
    argument, 0 in functions without one), the dropout layer's number `number` and the element's index."""

    out: str = ""
    seed: str = ""
    number: int = 0
    threshold: int = 0

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.seed,)


@dataclass(frozen=True)
class Conv2D(Op):
    """out[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·sh+p−ph, j·sw+q−pw]: a cross-correlation with
    zero padding (torch.nn.Conv2d) of x (N, C, H, W) with w (O, C, kh, kw), giving (N, O, Ho, Wo)."""

    out: str = ""
    x: str = ""
    w: str = ""
    b: str = ""
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x, self.w, self.b)


@dataclass(frozen=True)
class Conv2DGrad(Op):
    """dw[o,c,p,q] = Σ_{n,i,j} dz[n,o,i,j]·x[n,c,i·sh+p−ph, j·sw+q−pw] and db[o] = Σ_{n,i,j} dz[n,o,i,j]: both
    parameter gradients of a Conv2D (with `accumulate`, added to dw and db: a layer called again)."""

    dw: str = ""
    db: str = ""
    x: str = ""
    dz: str = ""
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    accumulate: bool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.dw, self.db)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x, self.dz)


@dataclass(frozen=True)
class Conv2DGradInput(Op):
    """dx[n,c,h,v] = Σ_{o,i,j} dz[n,o,i,j]·w[o,c,h+ph−i·sh, v+pw−j·sw], the terms whose kernel index lies
    outside the kernel being 0: the δ a Conv2D sends to its input (dz of the same call's Conv2DGrad)."""

    dx: str = ""
    dz: str = ""
    w: str = ""
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.dx,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.dz, self.w)


@dataclass(frozen=True)
class Pool2D(Op):
    """out[n,c,i,j] = max or mean over u < kh, v < kw of x[n,c,i·sh+u, j·sw+v]; `mode` "max" also writes
    `index` (an "index" buffer of out's shape): u·kw + v of the first maximum in row-major order."""

    out: str = ""
    x: str = ""
    index: str = ""
    mode: str = "max"
    size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out, self.index) if self.index else (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)


@dataclass(frozen=True)
class Pool2DGrad(Op):
    """dx = the δ of a pooling sent back: dz[n,c,i,j] goes to the window's recorded maximum (mode "max",
    read from `index`) or, divided by kh·kw, to each entry of the window ("avg"); overlaps add up."""

    dx: str = ""
    dz: str = ""
    index: str = ""
    mode: str = "max"
    size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.dx,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.dz, self.index) if self.index else (self.dz,)


@dataclass(frozen=True)
class Reshape(Op):
    """out = x with out's shape, the elements in the same row-major order (Flatten and its backward):
    nothing moves, so a backend may bind out as a view of x."""

    out: str = ""
    x: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.out,)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)


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
    init: str = "xavier"  # what scheme "auto" picks: "he" before ReLU-like, else "xavier"; or "zeros", "ones"
    trainable: bool = True  # False: a buffer (running statistics), after every trainable one, no gradient

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
    #: one buffer per model input (X itself, or X1, X2, ... read from X's columns), and their shapes
    inputs: tuple[str, ...] = ()
    input_shapes: tuple[tuple[int, ...], ...] = ()
    min_train_rows: int = 1      # 2 with BatchNorm: a batch statistic needs two rows

    @property
    def n_params(self) -> int:
        """Entries of the flat parameter vector: trainable parameters, then buffers."""
        return sum(p.size for p in self.params)

    @property
    def n_trainable(self) -> int:
        """Entries of the flat vector that have a gradient and that the optimizer updates (a prefix)."""
        return sum(p.size for p in self.params if p.trainable)

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
        taken = [n for n in self.buffers if _BACKEND_NAMES.fullmatch(n)]
        assert not taken, f"buffer names the backends use for their own arrays: {taken}"
        for fn in self.functions.values():
            known = set(self.buffers) | set(fn.scalars) | {BATCH}
            for op in fn.ops:
                missing = [n for n in op.inputs + op.outputs if n and n not in known]
                assert not missing, f"{fn.name}: {op.kind} {op.formula!r} uses unknown {missing}"


#: Names the backends give their own arrays and constants (scratch s1, hoisted c1, k_1_0, ones_Nx1, ...).
_BACKEND_NAMES = re.compile(r"[cs]\d+|k_\w+|ones_\w+|_cse\d*|hp_\w+|n32?|ones")


def _identifier(name: object) -> bool:
    return isinstance(name, str) and name.isascii() and name.isidentifier() and not keyword.iskeyword(name)


def last_uses(ops: tuple[Op, ...]) -> dict[str, int]:
    """Index of the last op reading each buffer, for liveness (aliasing, scratch reuse)."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            last[name] = i
    return last
