"""Normalization layers derived from their definition, with the mean and the variance as reductions.

LayerNorm normalizes each row over its features, BatchNorm each feature over the rows of the
batch; both are the same four definitions, over a different axis with m elements:

    μ = (1/m) Σ x,   σ² = (1/m) Σ (x − μ)²,   x̂ = (x − μ)/√(σ² + ε),   y = γ ⊙ x̂ + β

`derivation(axis)` differentiates them in reverse order, the chain rule through x̂, σ² and μ:
each definition's local derivatives come from `sympy.diff`; a quantity used by several later
definitions (x by three, μ by two) gathers one term per use, as at a fan-out of the graph;
the adjoint of a mean spreads its δ evenly (1/m) and a quantity that was broadcast along the
axis (μ, σ², or γ and β along the batch) sums the terms over it.  The result is the staged
backward pass of Ioffe & Szegedy (2015) and CS231n.  `closed_form` is the compact formula a
textbook gives, which the generated code evaluates (two sums over the axis instead of the
staged ones); `check_closed_form` proves the two equal with SymPy on explicit entries.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .notation import SumK, SumN, SumNHW

#: The scalars of the definitions: one entry of x (the input), y (the output), γ, β, and the
#: statistics μ, σ² of its row (LayerNorm) or column (BatchNorm); m is their count; dy the incoming δ.
X, Y, MU, VAR, XHAT, GAMMA, BETA, EPS, M, DY = (sp.Symbol(n, real=True) for n in
                                              ("x", "y", "mu", "var", "xhat", "gamma", "beta", "eps", "m", "dy"))
SUMS = {"features": SumK, "batch": SumN, "channels": SumNHW}


@dataclass(frozen=True)
class Definition:
    """target = expr, or target = (1/m) Σ expr over the axis when `mean`."""

    target: sp.Symbol
    expr: sp.Expr
    mean: bool = False


DEFINITIONS = (
    Definition(MU, X, mean=True),
    Definition(VAR, (X - MU) ** 2, mean=True),
    Definition(XHAT, (X - MU) / sp.sqrt(VAR + EPS)),
    Definition(Y, GAMMA * XHAT + BETA),
)


@dataclass(frozen=True)
class Derivation:
    """The backward pass of a normalization over `axis`, in the abstract symbols above.

    `steps` are (∂L/∂target, expression) in the order reverse mode finds them, each a sum of
    one term per use of the target; `gradients` ∂L/∂γ and ∂L/∂β; `closed` the compact form
    of ∂L/∂x in x̂ and ∂L/∂x̂.
    """

    axis: str
    steps: tuple[tuple[sp.Symbol, sp.Expr], ...]
    gradients: tuple[tuple[sp.Symbol, sp.Expr], ...]
    closed: sp.Expr

    def adjoint(self, name: sp.Symbol) -> sp.Symbol:
        return adjoint(name)


def adjoint(symbol: sp.Symbol) -> sp.Symbol:
    """The symbol ∂L/∂symbol stands for: d<name>."""
    return sp.Symbol(f"d{symbol.name}", real=True)


def _constant_along(axis: str) -> set[sp.Symbol]:
    """Scalars that do not vary along the axis, so a sum over it multiplies them (they are broadcast)."""
    stats = {MU, VAR, EPS, M, adjoint(MU), adjoint(VAR)}
    return stats | {GAMMA, BETA} if axis != "features" else stats


def axis_sum(expr: sp.Expr, axis: str, constant: set[sp.Symbol]) -> sp.Expr:
    """Σ over the axis of `expr`, with the factors constant along it taken out of the sum."""
    outside, inside = [], []
    for factor in sp.Mul.make_args(sp.factor_terms(expr)):
        (outside if factor.free_symbols <= constant else inside).append(factor)
    if not inside:
        return sp.Mul(*outside) * M
    return sp.Mul(*outside) * SUMS[axis](sp.Mul(*inside))


@lru_cache(maxsize=4)
def derivation(axis: str) -> Derivation:
    """Reverse mode through `DEFINITIONS` over `axis` ("features": LayerNorm, "batch": BatchNorm)."""
    constant = _constant_along(axis)
    shape = {MU: "stat", VAR: "stat", GAMMA: "param", BETA: "param", X: "full", XHAT: "full", Y: "full"}
    terms: dict[sp.Symbol, list[sp.Expr]] = {Y: [DY]}
    steps: list[tuple[sp.Symbol, sp.Expr]] = []
    for definition in reversed(DEFINITIONS):
        target = definition.target
        if target is not Y:
            steps.append((adjoint(target), sp.Add(*terms[target])))
        delta = DY if target is Y else adjoint(target)
        for sym in sorted(definition.expr.free_symbols - {EPS}, key=lambda s: s.name):
            local = delta * sp.diff(definition.expr, sym)
            if definition.mean:
                local = local / M
            if shape[sym] == "stat":
                local = axis_sum(local, axis, constant)
            elif shape[sym] == "param":  # γ and β are broadcast along the batch (and an image's pixels)
                local = axis_sum(local, "channels" if axis == "channels" else "batch", {M})
            terms.setdefault(sym, []).append(local)
    steps.append((adjoint(X), sp.Add(*terms[X])))
    gradients = ((adjoint(GAMMA), sp.Add(*terms[GAMMA])), (adjoint(BETA), sp.Add(*terms[BETA])))
    return Derivation(axis, tuple(steps), gradients, closed_form(axis))


def closed_form(axis: str) -> sp.Expr:
    """∂L/∂x = (1/(m·√(σ² + ε)))·(m·∂L/∂x̂ − Σ ∂L/∂x̂ − x̂ ⊙ Σ(∂L/∂x̂ ⊙ x̂)): the textbook's compact form."""
    dxhat, total = adjoint(XHAT), SUMS[axis]
    return (M * dxhat - total(dxhat) - XHAT * total(dxhat * XHAT)) / (M * sp.sqrt(VAR + EPS))


@lru_cache(maxsize=4)
def check_closed_form(axis: str, size: int = 3) -> bool:
    """Whether the staged derivation and the closed form agree, shown by SymPy on `size` explicit entries:
    every symbol becomes its values (x₀ … x₂, their mean, their variance), the sums explicit sums."""
    d = derivation(axis)
    xs = sp.symbols(f"x0:{size}", real=True)
    dys = sp.symbols(f"dy0:{size}", real=True)
    gammas = sp.symbols(f"g0:{size}", real=True) if axis == "features" else (sp.Symbol("g", real=True),) * size
    eps = sp.Symbol("eps", positive=True)
    mu = sp.Add(*xs) / size
    sigma = sp.Symbol("s", positive=True)            # √(σ² + ε), so that the check stays rational
    at = [{X: xs[i], DY: dys[i], GAMMA: gammas[i], M: size, MU: mu, VAR: sigma**2 - eps, EPS: eps}
          for i in range(size)]

    def value(expr: sp.Expr, i: int, known: dict) -> sp.Expr:
        def explicit(e: sp.Expr) -> sp.Expr:
            if isinstance(e, (SumK, SumN, SumNHW)):
                return sp.Add(*[value(e.args[0], j, known) for j in range(size)])
            return e.func(*(explicit(a) for a in e.args)) if e.args else e
        e = explicit(expr).xreplace(known[i]).xreplace(at[i])
        return e.xreplace({XHAT: (xs[i] - mu) / sigma})

    known: list[dict] = [{} for _ in range(size)]
    for name, expr in d.steps:
        for i in range(size):
            known[i][name] = value(expr, i, known)
    for i in range(size):
        staged = known[i][adjoint(X)]
        closed = value(d.closed, i, known)
        if sp.cancel(sp.expand(staged - closed)) != 0:
            return False
    return True
