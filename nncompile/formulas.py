"""The derivation as objects a person can read, check and reuse: `prog.formulas`.

Built from the records `derive` keeps, layer by layer from the output back to the input:
the forward formula, each activation's derivative as SymPy derived it (raw, simplified,
and in the form the code evaluates), the δ recurrence δₖ = (δₖ₊₁·Wₖ₊₁ᵀ) ⊙ f'(zₖ), and the
parameter gradients ∂L/∂Wₖ = aₖ₋₁ᵀ·δₖ (+ penalty), ∂L/∂bₖ = Σₙ δₖ.  Every formula is a
SymPy object (`sp.Eq` over `notation.NamedArray`s, or an expression in scalar z and a):
`.subs`, `sympy.lambdify` (NumPy arrays of the buffers' shapes) and `sympy.latex` work on
it, and in Jupyter each object displays as rendered mathematics.

Printing is `render`'s job; the scalar view (every weight, for small networks) is `scalar`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import sympy as sp

from .derive import Derivation
from .errors import ModelError
from .kinks import Kink
from .mathprint import show
from .symbolic import SUPPORTED_FUNCTIONS

if TYPE_CHECKING:  # the scalar view imports this module
    from .scalar import ScalarFormulas

#: The scalar symbols of local derivatives: z the input of an activation, a = f(z) its
#: output, y a prediction and t a target of the loss.
Z, A_OUT, Y_PRED, T_TARGET = (sp.Symbol(n, real=True) for n in ("z", "a", "y", "t"))
MODES = ("both", "simplified", "raw")


def mode_of(simplify: bool | None) -> str:
    """--simplify shows the simplified forms, --no-simplify the raw chain-rule products, neither both."""
    return "both" if simplify is None else ("simplified" if simplify else "raw")


def _chain(*exprs: sp.Basic) -> tuple[sp.Basic, ...]:
    """`exprs` without consecutive repeats (a derivative SymPy could not simplify appears once)."""
    out: list[sp.Basic] = []
    for e in exprs:
        if not out or e != out[-1]:
            out.append(e)
    return tuple(out)


def named(name: str, arg: sp.Expr) -> sp.Expr:
    """f(arg) with f shown by name: SymPy's own function when the registry has one, else a named f."""
    if name == "identity":
        return arg
    cls = SUPPORTED_FUNCTIONS.get(name)
    if isinstance(cls, type) and issubclass(cls, sp.Function):
        return cls(arg, evaluate=False)
    return sp.Function(name, real=True)(arg)


def _latex_block(rows: list[tuple[sp.Basic, ...]]) -> str:
    lines = [r" = ".join(show(e, "latex") for e in row) for row in rows]
    return "$\\displaystyle " + r" \\ ".join(lines) + "$" if len(lines) == 1 else \
        "$$\\begin{aligned}" + r" \\ ".join(line.replace(" = ", " &= ", 1) for line in lines) + r"\end{aligned}$$"


@dataclass(frozen=True)
class ActivationFormulas:
    """An activation f and its derivative, in the scalar z (its input) and a = f(z) (its output)."""

    name: str
    function: sp.Expr      # f(z) as written
    stable: sp.Expr        # f(z) as the code evaluates it
    raw: sp.Expr           # sympy.diff(f, z) of f as written: the raw chain-rule result
    simplified: sp.Expr    # f'(z) simplified
    evaluated: sp.Expr     # f' as the code computes it, in a and/or z
    rewrites: tuple[str, ...]
    kinks: tuple[Kink, ...]
    notes: tuple[str, ...]

    @property
    def derivative(self) -> sp.Derivative:
        """d/dz f(z), unevaluated: the left-hand side of the derivative chain."""
        return sp.Derivative(named(self.name, Z), Z)

    def chain(self, mode: str = "both") -> tuple[sp.Basic, ...]:
        """d/dz f(z) = raw = simplified = evaluated (raw only, or simplified only, by `mode`)."""
        if mode == "raw":
            return _chain(self.derivative, self.raw)
        if mode == "simplified":
            return _chain(self.derivative, self.simplified, self.evaluated)
        return _chain(self.derivative, self.raw, self.simplified, self.evaluated)

    def forward(self, z: sp.Expr, a: sp.Expr) -> tuple[sp.Basic, ...]:
        """a = f(z) = its formula, for the layer's arrays z and a."""
        return _chain(a, named(self.name, z), self.function.xreplace({Z: z}))

    def factor(self, z: sp.Expr, a: sp.Expr, mode: str = "simplified") -> sp.Expr:
        """f'(z) for the layer's arrays, raw or in the form the code evaluates."""
        return (self.raw if mode == "raw" else self.evaluated).xreplace({Z: z, A_OUT: a})

    def _repr_latex_(self) -> str:
        return _latex_block([self.chain()])


@dataclass(frozen=True)
class LossFormulas:
    """The loss, and the first δ of the backward pass (the chain rule at the output)."""

    name: str
    loss: sp.Eq                          # L = (1/N) Σ l(y, T) + penalties
    element: sp.Expr                     # l(y, t) for one element, in the scalars y and t
    chain: tuple[sp.Basic, ...]          # ∂l/∂(output) = raw chain-rule product = simplified, in scalars
    raw_chain: tuple[sp.Basic, ...]      # ∂l/∂(output) = raw chain-rule product
    delta: sp.Eq                         # the first δ, as the code computes it
    delta_raw: sp.Eq                     # the same with the raw chain-rule product
    rewrites: tuple[str, ...]            # stability rewrites that fired
    kinks: tuple[str, ...]               # non-differentiable points, with the value used there
    notes: tuple[str, ...]
    code: tuple[str, ...]
    constants: dict[sp.Symbol, float] = field(default_factory=dict)
    rows: tuple[tuple[str, tuple[sp.Basic, ...]], ...] = ()   # (label, chain): how it is evaluated, p = softmax(z)

    def _repr_latex_(self) -> str:
        return _latex_block([(self.loss.lhs, self.loss.rhs), self.chain, (self.delta.lhs, self.delta.rhs)])


@dataclass(frozen=True)
class LayerFormulas:
    """One layer (a Dense and the elementwise layers after it): forward, δ recurrence, gradients."""

    name: str
    index: int
    forward: tuple[tuple[sp.Basic, ...], ...]      # chains: z = x·W + b; a = f(z) = formula
    activations: tuple[ActivationFormulas, ...]
    delta: sp.Eq                                   # δₖ in one formula (code's evaluated forms)
    delta_raw: sp.Eq                               # the same with the raw derivatives
    steps: tuple[sp.Eq, ...]                       # the recurrence as the code runs it
    gradients: dict[str, sp.Eq]                    # "dense1.W" -> ∂L/∂W₁ = Xᵀ·δ₁ (+ λ₂·W₁)
    code: tuple[str, ...]                          # the IR formulas: comments of the generated code
    description: str = ""                          # "2 -> 8, tanh"

    def _repr_latex_(self) -> str:
        rows = [tuple(f) for f in self.forward] + [(self.delta.lhs, self.delta.rhs)]
        rows += [(g.lhs, g.rhs) for g in self.gradients.values()]
        return _latex_block(rows)


@dataclass(frozen=True)
class ParamFormulas:
    """∂L/∂(one parameter), with the δ's it needs, from its layer to the output."""

    name: str
    gradient: sp.Eq
    deltas: tuple[sp.Eq, ...]

    def _repr_latex_(self) -> str:
        return _latex_block([(e.lhs, e.rhs) for e in (self.gradient, *self.deltas)])


@dataclass(frozen=True)
class Formulas:
    """Every formula of a model's derivation; index by layer ("dense1", "loss") or parameter ("dense1.W")."""

    model: str
    summary: str
    loss: LossFormulas
    layers: tuple[LayerFormulas, ...]              # from the output back to the input
    constants: dict[sp.Symbol, float]              # λ₁, λ₂ -> the model's l1, l2
    derivation: Derivation = field(repr=False, compare=False)

    def __iter__(self) -> Iterator[LayerFormulas]:
        return iter(self.layers)

    def __getitem__(self, name: str) -> LayerFormulas | LossFormulas | ParamFormulas:
        if name in ("loss", self.loss.name):
            return self.loss
        for layer in self.layers:
            if layer.name == name:
                return layer
            if name in layer.gradients:
                return self.param(name)
        raise KeyError(f"no layer or parameter {name!r} (layers: {', '.join(self.names)}; "
                       f"parameters: {', '.join(self.param_names)})")

    @property
    def names(self) -> list[str]:
        return ["loss"] + [layer.name for layer in self.layers]

    @property
    def param_names(self) -> list[str]:
        return [p for layer in reversed(self.layers) for p in layer.gradients]

    def check_names(self, layers: list[str] | None, params: list[str] | None) -> None:
        """Refuse unknown layer or parameter names, in one line listing the known ones."""
        activations = {a.name for layer in self.layers for a in layer.activations}
        for name in layers or []:
            if name not in self.names and name not in activations and name != self.loss.name:
                raise ModelError(f"no layer {name!r} (choose from {', '.join(self.names + sorted(activations))})")
        for name in params or []:
            if name not in self.param_names:
                raise ModelError(f"no parameter {name!r} (choose from {', '.join(self.param_names)})")

    def param(self, name: str) -> ParamFormulas:
        """∂L/∂`name` and the chain of δ's from its layer to the loss."""
        for i, layer in enumerate(self.layers):
            if name in layer.gradients:
                deltas = tuple(lay.delta for lay in reversed(self.layers[:i + 1]))
                return ParamFormulas(name, layer.gradients[name], deltas)
        raise KeyError(f"no parameter {name!r} (parameters: {', '.join(self.param_names)})")

    def scalar(self, simplify: bool = True, params: list[str] | None = None) -> ScalarFormulas:
        """Every weight's gradient as an explicit scalar expression (small networks only); see `scalar`."""
        from .scalar import expand
        self.check_names(None, params)
        return expand(self.derivation, "simplified" if simplify else "raw", params)

    def render(self, fmt: str = "text", simplify: bool | None = None, layers: list[str] | None = None,
               params: list[str] | None = None, standalone: bool = False) -> str:
        """The derivation as text, unicode, latex or markdown (see `render.render`)."""
        from .render import render
        return render(self, fmt, simplify=simplify, layers=layers, params=params, standalone=standalone)

    def __str__(self) -> str:
        return self.render("text")

    @classmethod
    def of(cls, derivation: Derivation) -> "Formulas":
        """The formulas of a derivation (see `chainrule`)."""
        from .chainrule import build
        return build(derivation)

    def _repr_latex_(self) -> str:
        rows = [(self.loss.loss.lhs, self.loss.loss.rhs), (self.loss.delta.lhs, self.loss.delta.rhs)]
        for layer in self.layers:
            rows += [(layer.delta.lhs, layer.delta.rhs)] if layer is not self.layers[0] else []
            rows += [(g.lhs, g.rhs) for g in layer.gradients.values()]
        return _latex_block(rows)
