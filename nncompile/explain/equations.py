"""The derivation's equations, one dataclass per part a person reads.

An activation and its derivative (`ActivationFormulas`), the loss and the first δ
(`LossFormulas`), a layer's forward formula, δ recurrence and gradients (`LayerFormulas`),
and one parameter's gradient with its chain of δ's (`ParamFormulas`).  Each holds SymPy
objects and renders as mathematics in Jupyter; `formulas.Formulas` collects them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..symbolic.functions import SUPPORTED_FUNCTIONS
from ..symbolic.kinks import Kink
from .printers import show

#: The scalar symbols of local derivatives: z the input of an activation, a = f(z) its
#: output, y a prediction and t a target of the loss.
Z, A_OUT, Y_PRED, T_TARGET = (sp.Symbol(n, real=True) for n in ("z", "a", "y", "t"))
MODES = ("both", "simplified", "raw")


def mode_of(simplify: bool | None) -> str:
    """--simplify shows the simplified forms, --no-simplify the raw chain-rule products, neither both."""
    return "both" if simplify is None else ("simplified" if simplify else "raw")


def chain_of(*exprs: sp.Basic) -> tuple[sp.Basic, ...]:
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


def latex_block(rows: list[tuple[sp.Basic, ...]]) -> str:
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
            return chain_of(self.derivative, self.raw)
        if mode == "simplified":
            return chain_of(self.derivative, self.simplified, self.evaluated)
        return chain_of(self.derivative, self.raw, self.simplified, self.evaluated)

    def forward(self, z: sp.Expr, a: sp.Expr) -> tuple[sp.Basic, ...]:
        """a = f(z) = its formula, for the layer's arrays z and a."""
        return chain_of(a, named(self.name, z), self.function.xreplace({Z: z}))

    def factor(self, z: sp.Expr, a: sp.Expr, mode: str = "simplified") -> sp.Expr:
        """f'(z) for the layer's arrays, raw or in the form the code evaluates."""
        return (self.raw if mode == "raw" else self.evaluated).xreplace({Z: z, A_OUT: a})

    def _repr_latex_(self) -> str:
        return latex_block([self.chain()])


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
        return latex_block([(self.loss.lhs, self.loss.rhs), self.chain, (self.delta.lhs, self.delta.rhs)])


@dataclass(frozen=True)
class LayerFormulas:
    """One section of the derivation: a Dense and the elementwise layers after it, or another node
    (a merge, a normalization, ...): forward, δ recurrence, gradients.

    `steps` start from the δ's that reach the section's output, one per path with their
    sum where the node fans out (the paths are named in `notes`); a layer called more than
    once lists each call's term of its gradient in `uses`, and its first call's section
    holds the sum.  `delta` is None for a node no gradient reaches (it depends on no parameter).
    """

    name: str
    index: int
    forward: tuple[tuple[sp.Basic, ...], ...]      # chains: z = x·W + b; a = f(z) = formula
    activations: tuple[ActivationFormulas, ...]
    delta: sp.Eq | None                            # δₖ in one formula (code's evaluated forms)
    delta_raw: sp.Eq | None                        # the same with the raw derivatives
    steps: tuple[sp.Eq, ...]                       # the recurrence as the code runs it
    gradients: dict[str, sp.Eq]                    # "dense1.W" -> ∂L/∂W₁ = Xᵀ·δ₁ (+ λ₂·W₁)
    code: tuple[str, ...]                          # the IR formulas: comments of the generated code
    description: str = ""                          # "2 -> 8, tanh"
    derivative_writes: tuple[str, ...] = ()        # per activation: the buffer its f' multiplies into (dz1)
    kind: str = "dense"                            # the section's main node: "dense", "add", "layernorm", ...
    notes: tuple[str, ...] = ()                    # the paths that meet at a fan-out, and other remarks
    uses: list[sp.Eq] = field(default_factory=list)            # this call's term of a shared weight's gradient
    rows: tuple[tuple[str, tuple[sp.Basic, ...]], ...] = ()    # more labelled chains (a normalization's forms)

    def _repr_latex_(self) -> str:
        rows = [tuple(f) for f in self.forward] + ([(self.delta.lhs, self.delta.rhs)] if self.delta is not None else [])
        rows += [(g.lhs, g.rhs) for g in self.gradients.values()]
        return latex_block(rows)


@dataclass(frozen=True)
class ParamFormulas:
    """∂L/∂(one parameter), with the δ's it needs, from its layer to the output."""

    name: str
    gradient: sp.Eq
    deltas: tuple[sp.Eq, ...]

    def _repr_latex_(self) -> str:
        return latex_block([(e.lhs, e.rhs) for e in (self.gradient, *self.deltas)])
