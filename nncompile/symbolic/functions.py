"""The SymPy vocabulary every stage shares: stable functions, and the stability rewrites.

`sigmoid` and `softplus` are SymPy functions with exact derivatives, so that a textbook
formula such as ``1/(1 + exp(-x))`` can be rewritten once into a form whose evaluation
never overflows, and every backend prints it through its own stable implementation
(tanh form for the logistic, ``logaddexp`` for softplus).  `stabilize` applies the
rewrites with SymPy's own `codegen.rewriting.optimize` and reports which ones fired.
"""
from __future__ import annotations

from typing import Callable

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.codegen.rewriting import ReplaceOptim

REAL = {"real": True}


def symbol(name: str) -> sp.Symbol:
    """The one way to make a symbol: real-valued, so |x|' = sign(x) and max/min stay real."""
    return sp.Symbol(name, **REAL)


class sigmoid(sp.Function):  # noqa: N801  (SymPy function classes are lower case)
    """Logistic function σ(x) = 1/(1 + e^{-x}); σ' = σ(1 − σ)."""

    nargs = 1

    @classmethod
    def eval(cls, arg: sp.Expr) -> sp.Expr | None:
        if arg.is_zero:
            return sp.Rational(1, 2)
        if arg.could_extract_minus_sign():
            return 1 - cls(-arg)
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return 1 / (1 + sp.exp(-arg))

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec) if self.args[0].is_number else None

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\sigma\left(%s\right)" % printer._print(self.args[0])

    def _numpycode(self, printer: sp.printing.numpy.NumPyPrinter) -> str:
        """For `sympy.lambdify`: the tanh form, which cannot overflow."""
        return f"(0.5 + 0.5*{printer._module_format('numpy.tanh')}(0.5*({printer._print(self.args[0])})))"

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


class softplus(sp.Function):  # noqa: N801
    """softplus(x) = log(1 + e^x), evaluated without overflow; softplus' = σ."""

    nargs = 1

    @classmethod
    def eval(cls, arg: sp.Expr) -> sp.Expr | None:
        if arg.is_zero:
            return sp.log(2)
        if arg.could_extract_minus_sign():
            return cls(-arg) + arg
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.log(1 + sp.exp(arg))

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        return sp.log(1 + sp.exp(self.args[0]))._eval_evalf(prec) if self.args[0].is_number else None

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])

    def _numpycode(self, printer: sp.printing.numpy.NumPyPrinter) -> str:
        """For `sympy.lambdify`: log(1 + e^x) as logaddexp(0, x), which cannot overflow."""
        return f"{printer._module_format('numpy.logaddexp')}(0, {printer._print(self.args[0])})"

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


def _one_plus(e: sp.Expr) -> sp.Expr | None:
    """For ``1 + u`` return u, else None."""
    if e.is_Add and len(e.args) == 2 and sp.S.One in e.args:
        return e.args[0] if e.args[1] == 1 else e.args[1]
    return None


def _is_logistic(e: sp.Expr) -> bool:
    u = _one_plus(e.base) if e.is_Pow and e.exp == -1 else None
    return isinstance(u, sp.exp)


def _is_log1pexp(e: sp.Expr) -> bool:
    return isinstance(e, sp.log) and isinstance(_one_plus(e.args[0]), sp.exp)


def _is_log_sigmoid(e: sp.Expr) -> bool:
    return isinstance(e, sp.log) and isinstance(e.args[0], sigmoid)


def _is_log_one_minus_sigmoid(e: sp.Expr) -> bool:
    u = _one_plus(e.args[0]) if isinstance(e, sp.log) else None
    return u is not None and isinstance(-u, sigmoid)


def _logistic_pair(e: sp.Expr) -> tuple[sp.Expr, sp.Expr] | None:
    """In a product holding e^u and (1 + e^u)^-1, those two factors; else None."""
    if not e.is_Mul:
        return None
    for den in e.args:
        if den.is_Pow and den.exp == -1 and isinstance(_one_plus(den.base), sp.exp):
            num = _one_plus(den.base)
            if num in e.args:
                return num, den
    return None


def _exp_over_one_plus_exp(e: sp.Expr) -> sp.Expr:
    """e^u/(1 + e^u)·rest -> sigmoid(u)·rest: SymPy's form of σ(u), NaN at u = 1000 if left alone."""
    num, den = _logistic_pair(e)
    rest = [f for f in e.args if f is not num and f is not den]
    return sp.Mul(sigmoid(num.args[0]), *rest)


def _is_log1p(e: sp.Expr) -> bool:
    u = _one_plus(e.args[0]) if isinstance(e, sp.log) else None
    return u is not None and not isinstance(u, sp.exp)


def _is_expm1(e: sp.Expr) -> bool:
    return e.is_Add and len(e.args) == 2 and sp.S.NegativeOne in e.args and any(
        isinstance(a, sp.exp) for a in e.args)


#: (name shown to the user, optimisation).  Order matters: e^u/(1 + e^u) before the
#: logistic rule would split it, logistic before log-sigmoid.
STABILITY_REWRITES: tuple[tuple[str, ReplaceOptim], ...] = (
    ("exp(u)/(1 + exp(u)) -> sigmoid(u)",
     ReplaceOptim(lambda e: _logistic_pair(e) is not None, _exp_over_one_plus_exp)),
    ("1/(1 + exp(-u)) -> sigmoid(u)", ReplaceOptim(_is_logistic, lambda e: sigmoid(-_one_plus(e.base).args[0]))),
    ("log(1 + exp(u)) -> softplus(u)", ReplaceOptim(_is_log1pexp, lambda e: softplus(_one_plus(e.args[0]).args[0]))),
    ("log(sigmoid(u)) -> -softplus(-u)", ReplaceOptim(_is_log_sigmoid, lambda e: -softplus(-e.args[0].args[0]))),
    ("log(1 - sigmoid(u)) -> -softplus(u)",
     ReplaceOptim(_is_log_one_minus_sigmoid, lambda e: -softplus((-_one_plus(e.args[0])).args[0]))),
    ("log(1 + u) -> log1p(u)", ReplaceOptim(_is_log1p, lambda e: log1p(_one_plus(e.args[0])))),
    ("exp(u) - 1 -> expm1(u)",
     ReplaceOptim(_is_expm1, lambda e: expm1(next(a for a in e.args if isinstance(a, sp.exp)).args[0]))),
)


def stabilize(expr: sp.Expr) -> tuple[sp.Expr, list[str]]:
    """Rewrite `expr` into numerically stable form; return it with the rewrites that fired."""
    fired: list[str] = []
    for name, opt in STABILITY_REWRITES:
        if any(opt.query(node) for node in sp.preorder_traversal(expr)):
            fired.append(name)
            expr = opt(expr)
    return expr, fired


#: Functions every backend can print; anything else in a user expression is refused.
SUPPORTED_FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "tanh": sp.tanh, "sinh": sp.sinh,
    "cosh": sp.cosh, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "atan": sp.atan,
    "asinh": sp.asinh, "abs": sp.Abs, "sign": sp.sign, "max": sp.Max, "min": sp.Min,
    "sigmoid": sigmoid, "softplus": softplus, "log1p": log1p, "expm1": expm1,
    "heaviside": lambda u: sp.Heaviside(u, 0),
}

#: SymPy classes a backend printer must handle (what `SUPPORTED_FUNCTIONS` and
#: differentiation can produce).
SUPPORTED_CLASSES: tuple[type, ...] = (
    sp.exp, sp.log, sp.tanh, sp.sinh, sp.cosh, sp.sin, sp.cos, sp.tan, sp.atan, sp.asinh,
    sp.Abs, sp.sign, sp.Max, sp.Min, sp.Heaviside, sp.Piecewise, sigmoid, softplus, log1p, expm1,
)


_STRUCTURE: tuple[type, ...] = (
    sp.Symbol, sp.Number, sp.NumberSymbol, sp.Add, sp.Mul, sp.Pow, sp.logic.boolalg.BooleanAtom,
    sp.core.relational.Relational, sp.functions.elementary.piecewise.ExprCondPair,
    sp.And, sp.Or, sp.Not,
)


def unsupported_functions(expr: sp.Expr) -> list[str]:
    """Names of the operations in `expr` that no backend can print."""
    return sorted({type(node).__name__ for node in sp.preorder_traversal(expr)
                   if not isinstance(node, SUPPORTED_CLASSES + _STRUCTURE)})


_TERMS_CAP = 10**9


def expansion_terms(expr: sp.Expr) -> int:
    """Upper bound on the terms `sympy.expand` can produce in any part of `expr`.

    Expansion is where a short formula can cost minutes: (sin(x) + cos(x) + x + 1)**16
    has 969 terms once expanded.  Sums add term counts, products multiply them, an integer
    power k of m terms gives at most C(m + k - 1, k); a polynomial of degree d in v
    generators (symbols or opaque calls such as sin(x)) has at most C(d + v, v) terms.
    """
    info: dict[sp.Basic, tuple[int, int, frozenset]] = {}  # node -> (terms, degree, generators)
    largest = 1
    for node in sp.postorder_traversal(expr):
        if not isinstance(node, sp.Expr) or not node.free_symbols:
            terms, degree, gens = 1, 0, frozenset()
        elif node.is_Pow and node.exp.is_Integer:
            base_terms, base_degree, gens = info[node.base]
            k = abs(int(node.exp))
            terms, degree = _comb(base_terms + k - 1, k), base_degree * k
        elif node.is_Add or node.is_Mul:
            parts = [info[arg] for arg in node.args]
            gens = frozenset().union(*(g for _, _, g in parts))
            if node.is_Add:
                terms, degree = sum(t for t, _, _ in parts), max(d for _, d, _ in parts)
            else:
                terms, degree = 1, sum(d for _, d, _ in parts)
                for t, _, _ in parts:
                    terms = min(terms * t, _TERMS_CAP)
        else:  # a symbol, a function call or a non-integer power: one opaque generator
            terms, degree, gens = 1, 1, frozenset([node])
        terms = min(terms, _comb(degree + len(gens), len(gens)))
        info[node] = (terms, degree, gens)
        largest = max(largest, terms)
    return largest


def _comb(n: int, k: int) -> int:
    """C(n, k), or _TERMS_CAP once it is larger (computed incrementally, so always quick)."""
    k = min(k, n - k)
    result = 1
    for i in range(k):
        result = result * (n - i) // (i + 1)
        if result >= _TERMS_CAP:
            return _TERMS_CAP
    return result
