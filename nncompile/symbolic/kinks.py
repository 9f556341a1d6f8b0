"""Non-differentiable points of a formula, and the (sub)gradient the generated code uses there.

Found from the formula itself, not from a list: every |u|, sign(u), Heaviside(u), max/min
and Piecewise condition marks the points where u (or the difference of the arguments)
is zero.  At each such point the one-sided derivatives are evaluated; where they differ
the formula is not differentiable, and the value the code computes there (the evaluated
derivative at that point) is reported as the choice made: ReLU'(0) = 0, LeakyReLU'(0) =
alpha, sign(0) = 0 for |w|.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

_SWITCHES = (sp.Abs, sp.sign, sp.Heaviside)
_EPS = sp.Rational(1, 10**9)
_MAX_POINTS = 4


@dataclass(frozen=True)
class Kink:
    """At `variable` = `point` the derivative jumps from `left` to `right`; the code uses `chosen`."""

    variable: sp.Symbol
    point: sp.Expr
    left: sp.Expr
    right: sp.Expr
    chosen: sp.Expr

    @property
    def is_subgradient(self) -> bool:
        """Whether the chosen value lies between the one-sided derivatives (a true subgradient)."""
        low, high = sorted((float(self.left), float(self.right)))
        return low <= float(self.chosen) <= high

    def sentence(self, name: str) -> str:
        """One line for people, e.g. "relu is not differentiable at z = 0 (...): the code uses relu'(0) = 0"."""
        side = {self.left: "the left derivative", self.right: "the right derivative"}.get(self.chosen)
        kind = side or ("a subgradient" if self.is_subgradient else "a chosen value")
        return (f"{name} is not differentiable at {self.variable} = {_short(self.point)} (derivative "
                f"{_short(self.left)} from the left, {_short(self.right)} from the right): the code uses "
                f"{name}'({_short(self.point)}) = {_short(self.chosen)}, {kind}")


def _short(value: sp.Expr) -> str:
    return sp.sstr(value, full_prec=False)


def _candidates(expr: sp.Expr) -> set[sp.Expr]:
    """Expressions whose zeros are where `expr` may switch branch."""
    found: set[sp.Expr] = set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, _SWITCHES):
            found.add(node.args[0])
        elif isinstance(node, (sp.Max, sp.Min)):
            found.update(a - b for i, a in enumerate(node.args) for b in node.args[i + 1:])
        elif isinstance(node, sp.Piecewise):
            found.update(c.lhs - c.rhs for _, c in node.args if isinstance(c, sp.core.relational.Relational))
    return found


def _points(expr: sp.Expr, var: sp.Symbol) -> list[sp.Expr]:
    points: set[sp.Expr] = set()
    for u in _candidates(expr):
        if var not in u.free_symbols:
            continue
        try:
            solutions = sp.solve(u, var)
        except (NotImplementedError, ValueError, TypeError):
            continue
        points.update(s for s in solutions if s.is_real is not False and not s.has(sp.zoo, sp.oo))
    return sorted(points, key=sp.default_sort_key)[:_MAX_POINTS]


def _number(expr: sp.Expr) -> sp.Expr | None:
    try:
        value = complex(sp.N(expr))
    except (TypeError, ValueError):
        return None
    if abs(value.imag) > 1e-12:
        return None
    near = round(value.real)
    return sp.Integer(near) if abs(value.real - near) < 1e-7 else sp.Float(round(value.real, 8))


@lru_cache(maxsize=256)
def kinks(expr: sp.Expr, var: sp.Symbol, derivative: sp.Expr, evaluated: sp.Expr,
          output: sp.Symbol | None = None) -> tuple[Kink, ...]:
    """The points where `expr` (in `var`) is not differentiable, with the value `evaluated` gives there.

    `derivative` is d expr/d var; `evaluated` is the form the code computes, possibly in
    `output` = expr (as for ReLU, whose derivative is taken from its output a > 0).
    """
    found = []
    for point in _points(expr, var):
        left = _number(derivative.subs(var, point - _EPS))
        right = _number(derivative.subs(var, point + _EPS))
        at = {var: point}
        if output is not None:
            at[output] = expr.subs(var, point)
        chosen = _number(evaluated.subs(at))
        if None in (left, right, chosen) or abs(float(left) - float(right)) < 1e-6:
            continue
        found.append(Kink(var, point, left, right, chosen))
    return tuple(found)
