"""The scalar view: every weight's gradient as an explicit expression, for small networks.

For one example (inputs x0, x1, ..., targets t0, ...), the chain rule is expanded over
every path from a weight to the loss: dl/dW1_ij = Σ over paths of x_i · f'(z1_j) · W2_jm ·
... · ∂l/∂(output)_k.  Each gradient is given twice: as that sum of path products, in the
named intermediates z and a, and with the forward pass substituted, as an expression of
the inputs, targets and parameters alone.  The batch mean is (1/N) Σₙ over the rows of X
and T (SymPy `Sum` over `Indexed` X[n, i]), plus the penalty terms.

Indices count from 0, as in NumPy: W1_01 is params["dense1.W"][0, 1].  The expansion
grows with the number of paths, so it is refused above `LIMITS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import sympy as sp

from ..derive.backprop import Derivation, LayerRecord
from ..errors import ModelError
from ..symbolic.calculus import regulariser_gradient
from ..symbolic.notation import LAMBDA, LOSS_ONE, Entry, Partial
from ..symbolic.rules import LAM, REGULARISERS, A, T, W, X, Y
from .printers import show
from .render import scalar_document, write

#: The largest network expanded: parameters, Dense layers, and units (or inputs) per layer;
#: and the size of the written-out gradients (SymPy tree nodes, all entries shown together).
LIMITS = {"parameters": 64, "dense layers": 3, "units per layer": 10}
MAX_NODES = 10_000
#: `sympy.lambdify(args, expr, modules=LAMBDIFY_MODULES)` evaluates these expressions on Python
#: floats (NumPy's printer writes Heaviside as numpy.select, which needs arrays).
LAMBDIFY_MODULES = [{"sigmoid": lambda v: 0.5 + 0.5 * math.tanh(0.5 * v),
                     "softplus": lambda v: max(v, 0.0) + math.log1p(math.exp(-abs(v)))}, "math"]
N = sp.Symbol("N", integer=True, positive=True)
ROW = sp.Symbol("n", integer=True, nonnegative=True)
XB, TB = sp.IndexedBase("X", real=True), sp.IndexedBase("T", real=True)


@dataclass(frozen=True)
class ScalarGradient:
    """The gradient of one parameter entry: as a sum over paths, expanded, and as a batch mean."""

    param: str
    index: tuple[int, ...]
    symbol: Entry
    paths: sp.Expr          # one example, Σ over paths, in the named intermediates z, a, p
    n_paths: int
    one_example: sp.Expr    # the same in inputs x, targets t and parameters only
    batch_mean: sp.Expr     # (1/N) Σₙ over rows of X and T, plus penalties

    def _repr_latex_(self) -> str:
        return (f"$\\displaystyle {show(Partial(LOSS_ONE, self.symbol), 'latex')} = "
                f"{show(self.paths, 'latex')}$")


@dataclass(frozen=True)
class ScalarFormulas:
    """Every parameter entry's gradient, with the per-example forward pass it is written in."""

    model: str
    inputs: tuple[Entry, ...]
    targets: tuple[Entry, ...]
    params: dict[str, tuple[Entry, ...]]          # "dense1.W" -> its entries, row-major
    forward: tuple[sp.Eq, ...]                    # z1_0 = ..., a1_0 = tanh(z1_0), ..., l = ...
    gradients: tuple[ScalarGradient, ...]
    constants: dict[sp.Symbol, float] = field(default_factory=dict)
    mode: str = "simplified"

    def __iter__(self) -> Iterator[ScalarGradient]:
        return iter(self.gradients)

    def __getitem__(self, key: str | tuple[str, tuple[int, ...]]) -> ScalarGradient:
        """By entry name ("W1_01") or by (parameter, index): ("dense1.W", (0, 1))."""
        for g in self.gradients:
            if key == g.symbol.name or key == (g.param, tuple(g.index)):
                return g
        raise KeyError(f"no parameter entry {key!r}")

    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        """Inputs, targets, then every parameter entry: the arguments of the one-example forms."""
        return (*self.inputs, *self.targets, *(e for entries in self.params.values() for e in entries))

    def render(self, fmt: str = "text", params: list[str] | None = None, standalone: bool = False) -> str:
        return write(scalar_document(self, params), fmt, standalone)

    def _repr_latex_(self) -> str:
        return "\n".join(g._repr_latex_() for g in self.gradients)


#: The kinds of node the scalar view writes out (a normalization or dropout would make every entry depend
#: on a whole row or batch, or on a random mask: their matrix form is the readable one).
SCALAR_KINDS = ("dense", "activation", "softmax", "add", "multiply", "concat")


def check_size(derivation: Derivation) -> None:
    """Refuse networks too large to expand, or with layers it does not write out, naming the limit."""
    model = derivation.model
    records = [r for r in derivation.records if r.kind != "output"]
    other = next((r for r in records if r.kind not in SCALAR_KINDS), None)
    if other is not None:
        raise ModelError(f"--scalar writes out Dense, activation, Softmax, Add, Multiply and Concat layers; model "
                         f"{model.name} has {other.label or other.layer} ({other.kind}): read the matrix form "
                         "(nncompile derive without --scalar)")
    widths = [int(derivation.program.buffers[r.out].shape[1]) for r in records]
    sizes = {"parameters": derivation.program.n_params, "dense layers": len(model.dense_layers),
             "units per layer": max((model.input_dim, *widths))}
    for what, limit in LIMITS.items():
        if sizes[what] > limit:
            stated = ", ".join(f"{v} {k}" for k, v in LIMITS.items())
            raise ModelError(f"--scalar expands networks of at most {stated}; model {model.name} has "
                             f"{sizes[what]} {what}: read the matrix form (nncompile derive without --scalar)")


def _check_nodes(name: str, gradients: list[ScalarGradient]) -> None:
    nodes = sum(sum(1 for _ in sp.preorder_traversal(g.one_example)) for g in gradients)
    if nodes > MAX_NODES:
        raise ModelError(f"--scalar writes at most {MAX_NODES:,} terms, and the gradients of model {name} expand to "
                         f"{nodes:,}: choose fewer with --param NAME, or read the matrix form (derive without "
                         "--scalar)")


class _Expansion:
    """Per-example scalars for each node, and the paths from each unit to the loss.

    Values are kept by buffer name; a path from a unit goes through every layer that reads
    its node (a fan-out gives one group of paths per reader), so the gradient is the chain
    rule summed over every path of the graph.
    """

    def __init__(self, derivation: Derivation, mode: str) -> None:
        self.derivation, self.mode = derivation, mode
        model = derivation.model
        self.inputs = tuple(Entry(f"x{i}") for i in range(model.input_dim))
        self.targets = tuple(Entry(f"t{k}") for k in range(model.output_dim))
        self.layers = [r for r in derivation.records if r.kind != "output"]
        self.output = next(r for r in derivation.records if r.kind == "output")
        self.params: dict[str, tuple[Entry, ...]] = {}
        self.defs: list[tuple[Entry, sp.Expr]] = []
        self.values: dict[str, tuple[sp.Expr, ...]] = {}
        self.weights: dict[str, list[list[Entry]]] = {}
        self.memo: dict[tuple[str, int], tuple] = {}
        self.expanded: dict[Entry, sp.Expr] | None = None
        self.wrt = self.output.inp
        self._forward()

    def _forward(self) -> None:
        program = self.derivation.program
        start = 0
        for name, shape in zip(program.inputs, program.input_shapes):
            self.values[name] = self.inputs[start:start + shape[0]]
            start += shape[0]
        self.values.setdefault("X", self.inputs)
        for record in self.layers:
            ins = [self.values[name] for name in record.inputs]
            if record.kind == "dense":
                w = record.forward.rhs.args[0].args[1].name
                k, h = w[1:], ins[0]
                if w not in self.weights:
                    self.weights[w] = [[Entry(f"W{k}_{i}{j}") for j in range(self._width(record))]
                                       for i in range(len(h))]
                    self.params[f"{record.layer}.W"] = tuple(e for row in self.weights[w] for e in row)
                    self.params[f"{record.layer}.b"] = tuple(Entry(f"b{k}_{j}") for j in range(self._width(record)))
                Wk, bk = self.weights[w], self.params[f"{record.layer}.b"]
                self._define(record.out, [sum((h[i] * Wk[i][j] for i in range(len(h))), sp.S.Zero) + bk[j]
                                          for j in range(len(bk))])
            elif record.kind == "activation" and not record.local.is_identity:
                self._define(record.out, [record.local.function.xreplace({X: z}) for z in ins[0]])
            elif record.kind == "softmax":
                self._define(record.out, _softmax(ins[0]))
            elif record.kind == "add":
                self._define(record.out, [sp.Add(*column) for column in zip(*ins)])
            elif record.kind == "multiply":
                self._define(record.out, [sp.Mul(*column) for column in zip(*ins)])
            elif record.kind == "concat":
                self.values[record.out] = tuple(v for part in ins for v in part)
        if self.output.rule == "softmax_cross_entropy" and all(r.kind != "softmax" for r in self.layers):
            self.probabilities = self._define(self.output.out, _softmax(self.values[self.wrt]))
        else:
            self.probabilities = self.values[self.derivation.program.output]

    def _width(self, dense: LayerRecord) -> int:
        return int(self.derivation.program.buffers[dense.out].shape[1])

    def _define(self, buffer: str, exprs: list[sp.Expr]) -> tuple[Entry, ...]:
        entries = tuple(Entry(f"{buffer}_{j}") for j in range(len(exprs)))
        self.defs += list(zip(entries, exprs))
        self.values[buffer] = entries
        return entries

    def loss(self) -> sp.Expr:
        """l for one example, in the named outputs (its mean over rows is the data part of L)."""
        y, fn = self.probabilities, self.output.loss
        terms = [fn.expr.xreplace({Y: y[k], T: self.targets[k]}) for k in range(len(y))]
        return sp.Add(*terms) / (1 if fn.per_row_sum else len(y))

    def delta(self, k: int) -> sp.Expr:
        """∂l/∂(unit k of the output the loss's delta is taken at), for one example."""
        per = 1 if self.output.loss.per_row_sum else len(self.targets)
        t = self.targets
        if self.output.rule == "softmax_cross_entropy":
            p = self.probabilities
            if self.mode == "raw":
                return sp.Add(*[sp.Mul(-t[j] / p[j], p[j], int(j == k) - p[k], evaluate=False)
                                for j in range(len(p))], evaluate=False)
            return p[k] - t[k]
        if self.output.rule == "composite":
            composite = self.output.output
            form = composite.chain if self.mode == "raw" else composite.delta
            z, a = self.values[self.wrt][k], self.probabilities[k]
            return form.xreplace({X: z, A: a, T: t[k]}) / per
        return sp.diff(self.output.loss.expr, Y).xreplace({Y: self.probabilities[k], T: t[k]}) / per

    def adjoint(self, buffer: str, unit: int) -> tuple[tuple[sp.Expr, ...], ...]:
        """Paths (factor tuples) from unit `unit` of the node held in `buffer` to the loss."""
        if (buffer, unit) not in self.memo:
            self.memo[buffer, unit] = self._adjoint(buffer, unit)
        return self.memo[buffer, unit]

    def _adjoint(self, buffer: str, unit: int) -> tuple[tuple[sp.Expr, ...], ...]:
        if buffer == self.wrt:
            return ((self.delta(unit),),)
        paths: list[tuple[sp.Expr, ...]] = []
        for record in self.layers:
            if record.kind == "activation" and record.local.is_identity:
                continue  # the same array: its readers read `buffer` itself
            for position, name in enumerate(record.inputs):
                if name == buffer:
                    paths += self._through(record, position, unit)
        return tuple(paths)

    def _through(self, record: LayerRecord, position: int, unit: int) -> list[tuple[sp.Expr, ...]]:
        """The paths from `unit` of input `position` of `record` that go through `record`."""
        out = record.out
        if record.kind == "dense":
            Wn = self.weights[record.forward.rhs.args[0].args[1].name]
            return [(Wn[unit][m], *p) for m in range(len(Wn[unit])) for p in self.adjoint(out, m)]
        if record.kind == "activation":
            local = record.local
            z, a = self.values[record.inp][unit], self.values[out][unit]
            factor = local.raw.xreplace({X: z}) if self.mode == "raw" else local.evaluated.xreplace({X: z, A: a})
            return [(factor, *p) for p in self.adjoint(out, unit)]
        if record.kind == "softmax":
            p = self.values[out]
            return [(p[m] * (int(m == unit) - p[unit]), *q) for m in range(len(p)) for q in self.adjoint(out, m)]
        if record.kind == "add":
            return list(self.adjoint(out, unit))
        if record.kind == "multiply":
            others = sp.Mul(*(self.values[n][unit] for i, n in enumerate(record.inputs) if i != position))
            return [(others, *p) for p in self.adjoint(out, unit)]
        offset = sum(len(self.values[n]) for n in record.inputs[:position])
        return list(self.adjoint(out, offset + unit))

    def substitute(self, expr: sp.Expr) -> sp.Expr:
        """`expr` with every named intermediate replaced by its definition: inputs, targets, parameters only."""
        if self.expanded is None:
            self.expanded = {}
            for sym, definition in self.defs:
                self.expanded[sym] = _steps(definition).xreplace(self.expanded)
        return _steps(expr).xreplace(self.expanded)


def _softmax(z: tuple[sp.Expr, ...]) -> list[sp.Expr]:
    total = sp.Add(*[sp.exp(v) for v in z])
    return [sp.exp(v) / total for v in z]


_STEP = {">": (1, 0), ">=": (1, 1), "<": (-1, 0), "<=": (-1, 1)}


def _steps(expr: sp.Expr) -> sp.Expr:
    """max, min and Piecewise branches on u > 0 (and the like) written with Heaviside steps: same values.

    Substituted into a condition, a Piecewise turns it into an if-then-else that SymPy's
    `Sum` then folds out of the sum, and Max(0, u) searches its arguments for common
    zeros: both take minutes once the forward pass is written out; steps stay as they are.
    """
    def convert(pw: sp.Piecewise) -> sp.Expr:
        result = pw.args[-1].expr if pw.args[-1].cond is sp.true else pw
        for e, c in reversed(pw.args[:-1] if pw.args[-1].cond is sp.true else ()):
            if not (isinstance(c, sp.core.relational.Relational) and c.rel_op in _STEP):
                return pw
            sign, at_zero = _STEP[c.rel_op]
            step = sp.Heaviside(sign * (c.lhs - c.rhs), at_zero)
            result = e * step + result * (1 - step)
        return result
    expr = expr.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), lambda e: e.rewrite(sp.Piecewise))
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), convert)


def _penalty(entry: Entry, model: object) -> sp.Expr:
    terms = [regulariser_gradient(REGULARISERS[name]).xreplace({LAM: LAMBDA[name], W: entry})
             for name in ("l2", "l1") if getattr(model, name)]
    return sp.Add(*terms)


def expand(derivation: Derivation, mode: str = "simplified", params: list[str] | None = None) -> ScalarFormulas:
    """Every parameter entry's gradient (of `params`, default all) for one example and for the batch mean.

    Small networks only: see `LIMITS` and `MAX_NODES`.
    """
    check_size(derivation)
    ex = _Expansion(derivation, mode)
    model = derivation.model
    rows = {**{x: XB[ROW, i] for i, x in enumerate(ex.inputs)}, **{t: TB[ROW, k] for k, t in enumerate(ex.targets)}}
    gradients = []
    calls: dict[str, list[LayerRecord]] = {}
    for record in ex.layers:
        if record.kind == "dense":
            calls.setdefault(record.layer, []).append(record)
    for layer, uses in calls.items():
        w = uses[0].forward.rhs.args[0].args[1].name
        for name, entries in ((f"{layer}.W", ex.weights[w]), (f"{layer}.b", None)):
            if params is not None and name not in params:
                continue
            cells = [(e, (i, j)) for i, row in enumerate(entries) for j, e in enumerate(row)] if entries \
                else [(e, (j,)) for j, e in enumerate(ex.params[name])]
            for entry, index in cells:
                paths = [sp.Mul(*((ex.values[use.inp][index[0]],) if entries else ()), *p, evaluate=False)
                         for use in uses for p in ex.adjoint(use.out, index[-1])]
                data = sp.Add(*paths, evaluate=False)
                penalty = _penalty(entry, model) if entries else sp.S.Zero
                explicit = ex.substitute(data)
                mean = sp.Sum(explicit.xreplace(rows), (ROW, 0, N - 1)) / N
                gradients.append(ScalarGradient(name, index, entry, data + penalty if penalty else data, len(paths),
                                                explicit + penalty, mean + penalty))
    _check_nodes(model.name, gradients)
    loss = sp.Eq(LOSS_ONE, ex.loss(), evaluate=False)
    forward = tuple(sp.Eq(s, d, evaluate=False) for s, d in ex.defs) + (loss,)
    constants = {LAMBDA[n]: getattr(model, n) for n in ("l1", "l2") if getattr(model, n)}
    return ScalarFormulas(model.name, ex.inputs, ex.targets, ex.params, forward, tuple(gradients), constants, mode)
