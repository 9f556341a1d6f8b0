"""Local derivatives, one registry formula at a time, by SymPy.

For an activation f this finds f' with `sympy.diff`, puts it in the cheapest form that
uses what the forward pass already holds (tanh' = 1 - a², σ' = a(1 - a)), and notes the
stability rewrites and the non-differentiable points.  For the output layer it composes
the loss with the last activation and differentiates the composition, so that
BCE∘σ gives σ(z) - t and the loss is evaluated as softplus(z) - t·z, never log(σ(z)).
Results are memoized: the registry is small and SymPy is the slow part of a compile.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .functions import expansion_terms, stabilize
from .rules import A, ElementwiseFunction, LossFunction, Regulariser, W, X, Y

#: Functions whose presence makes a formula non-differentiable somewhere.
_KINKED = (sp.Abs, sp.Max, sp.Min, sp.Heaviside, sp.sign, sp.Piecewise)
_SIMPLIFY_LIMIT = 20  # sympy.simplify is tried only on expressions at most this big (count_ops):
#                     some of 30-40 ops (tanh(x)**2 + exp(-x**2) times softplus(x) + ...) ran for minutes
_EXPAND_LIMIT = 200   # expand/factor are tried only where expansion gives at most this many terms


@dataclass(frozen=True)
class LocalDerivative:
    """f and f', as written, as derived, and as evaluated."""

    function: sp.Expr      # f(x) as written
    stable: sp.Expr        # f(x) after stability rewrites (what is evaluated)
    raw: sp.Expr           # sympy.diff of f as written: the textbook chain-rule result
    derivative: sp.Expr    # f'(x) of the stable form, simplified
    evaluated: sp.Expr     # f' in the cheapest form in x and/or a = f(x)
    rewrites: tuple[str, ...]
    kinks: tuple[str, ...]

    @property
    def is_identity(self) -> bool:
        return self.stable == X

    @property
    def uses_input(self) -> bool:
        """Whether the backward pass needs x (else the output a suffices)."""
        return X in self.evaluated.free_symbols


@dataclass(frozen=True)
class OutputDelta:
    """The loss composed with the last activation: its value and dL/dz, per element."""

    chain: sp.Expr         # dl/dy · f'(z), the unsimplified chain-rule product
    delta: sp.Expr         # d l(f(z), t)/dz simplified, in z = X, a = A and t
    value: sp.Expr         # l(f(z), t) in stable form, in z, a and t
    rewrites: tuple[str, ...]
    kinks: tuple[str, ...]


def cost(expr: sp.Expr) -> int:
    """Evaluation cost: operations, with transcendental functions counted heavier."""
    heavy = sum(1 for f in sp.preorder_traversal(expr) if isinstance(f, sp.Function))
    return int(sp.count_ops(expr)) + 4 * heavy


def _cheapest(*candidates: sp.Expr) -> sp.Expr:
    """The cheapest candidate; on a tie, one free of x, then the earliest given."""
    ranked = sorted(enumerate(candidates), key=lambda ie: (cost(ie[1]), X in ie[1].free_symbols, ie[0]))
    return ranked[0][1]


def _policy(expr: sp.Expr) -> sp.Expr:
    """Fix the value at kinks: Heaviside(0) = 0 (SymPy's default is 1/2), and the derivative
    of a step (DiracDelta, from sign or Heaviside) is 0: it is zero everywhere but at the
    jump, where the subgradient convention picks 0, as autodiff frameworks do."""
    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    return expr.replace(lambda e: isinstance(e, sp.Heaviside) and (len(e.args) == 1 or e.args[1] != 0),
                        lambda e: sp.Heaviside(e.args[0], 0))


def _expanded(expr: sp.Expr) -> sp.Expr:
    """sympy.expand, skipped where it would blow up (a power of a long sum)."""
    return sp.expand(expr) if expansion_terms(expr) <= _EXPAND_LIMIT else expr


def _factored(expr: sp.Expr) -> sp.Expr:
    """sympy.factor (which expands first), skipped where expanding would blow up."""
    return sp.factor(expr) if expansion_terms(expr) <= _EXPAND_LIMIT and _moderate(expr) else expr


def _simplified(expr: sp.Expr) -> sp.Expr:
    small = expansion_terms(expr) <= _EXPAND_LIMIT
    options = [expr, sp.expand(expr)] if small else [expr]
    if small and sp.count_ops(expr) <= _SIMPLIFY_LIMIT and not expr.has(sp.Piecewise) and _moderate(expr):
        options.append(sp.simplify(expr))
    return _cheapest(*options)


def _moderate(expr: sp.Expr) -> bool:
    """No float constant beyond 1e15 or below 1e-15 in magnitude: sympy.simplify and factor treat
    such numbers as integers of hundreds of bits (22 s for max(x, -1e300*x) + -1e300*tanh(x)),
    so expressions holding them skip both."""
    return all(value == 0 or 1e-15 <= abs(float(value)) <= 1e15 for value in expr.atoms(sp.Float))


def kinks_of(expr: sp.Expr, stated: str | None) -> tuple[str, ...]:
    """The non-differentiable points of `expr`, in words."""
    if stated:
        return (stated,)
    found = sorted({type(f).__name__ for f in sp.preorder_traversal(expr) if isinstance(f, _KINKED)})
    if not found:
        return ()
    return (f"uses {', '.join(found)}, not differentiable where its argument switches branch: "
            "the derivative there follows SymPy's rules with Heaviside(0) = 0, sign(0) = 0, "
            "Piecewise taking the first branch whose condition holds, and 0 for the derivative of a step",)


@lru_cache(maxsize=256)
def activation(fn: ElementwiseFunction) -> LocalDerivative:
    """f' for an activation, derived by SymPy and put in its cheapest evaluated form."""
    stable, fired = stabilize(fn.expr)
    raw = _policy(sp.diff(fn.expr, X))
    direct = _policy(sp.diff(stable, X))
    derivative = _simplified(direct)
    candidates = [direct.subs(stable, A), derivative.subs(stable, A), derivative]
    if fn.output_derivative is not None:
        candidates.append(fn.output_derivative)
    return LocalDerivative(fn.expr, stable, raw, derivative, _cheapest(*candidates),
                           tuple(fired), kinks_of(fn.expr, fn.kink))


@lru_cache(maxsize=256)
def loss_gradient(loss: LossFunction) -> tuple[sp.Expr, sp.Expr]:
    """dl/dy as SymPy gives it, and simplified (for display)."""
    raw = _policy(sp.diff(loss.expr, Y))
    return raw, _simplified(raw)


@lru_cache(maxsize=256)
def output_delta(fn: ElementwiseFunction, loss: LossFunction) -> OutputDelta:
    """dL/dz at the output for l(f(z), t), composed and simplified symbolically."""
    local = activation(fn)
    chain = sp.diff(loss.expr, Y).subs(Y, A) * local.raw
    composite, fired = stabilize(loss.expr.subs(Y, fn.expr))
    delta = _simplified(_policy(sp.diff(composite, X)))
    delta = _cheapest(delta, delta.subs(local.stable, A), _factored(delta.subs(local.stable, A)))
    value = _cheapest(composite, _expanded(composite), composite.subs(local.stable, A))
    kinks = kinks_of(loss.expr, None) + local.kinks
    return OutputDelta(chain, delta, value, tuple(dict.fromkeys(local.rewrites + tuple(fired))), kinks)


@lru_cache(maxsize=16)
def regulariser_gradient(reg: Regulariser) -> sp.Expr:
    """d(lam·r(w))/dw, e.g. lam·w for l2 and lam·sign(w) for l1."""
    return _policy(sp.diff(reg.expr, W))





def saturation_kind(local: LocalDerivative, far: int = 30, tiny: float = 1e-6) -> str:
    """How f' can vanish: "saturating" (both tails, sigmoid/tanh), "rectifier" (one, ReLU-like), "other".

    Decided by evaluating the derived f' at ±`far`, so custom activations are classified
    by their formula too (softplus and mish are rectifiers, leaky ReLU is "other").
    """
    def tail(x: int) -> float:
        value = local.derivative.subs(X, x).rewrite(sp.exp).evalf()
        try:
            return abs(float(value)) if value.is_real else 1.0
        except (TypeError, ValueError):  # not a number there (zoo, a symbol left): not vanishing
            return 1.0
    small = [tail(-far) < tiny, tail(far) < tiny]
    return "saturating" if all(small) else "rectifier" if any(small) else "other"
