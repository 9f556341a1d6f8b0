"""SymPy's C99 printer, extended for CUDA kernels in float32 or float64.

`CudaPrinter` is `sympy.printing.c.C99CodePrinter` with three changes:
- symbols print as the C expression a kernel reads them through (``z1[i]``, a register,
  a hoisted scalar), given by a mapping;
- in float32 the type alias makes SymPy pick ``expf``/``tanhf``/... and ``F``-suffixed
  literals; every number is printed as a floating literal of the program's type, so no
  overload of a CUDA math function is ever ambiguous (``sqrt(2)``) and no division is
  an integer one;
- the functions the registry adds (`sigmoid`, `softplus`) and a few SymPy prints that do
  not suit device code (``M_PI``, multi-line ``Piecewise``, ``pow(x, 2)``) are printed in
  stable or direct form.  Squares and cubes of compound terms call ``nc_sq``/``nc_cube``
  (defined in every kernel source), so the term is evaluated once.  A `Piecewise` becomes
  nested ``?:``, which evaluates only the branch taken, so an inf in the other branch never
  turns into a NaN.
"""
from __future__ import annotations

from typing import Mapping

import sympy as sp
from sympy.codegen.ast import float32, real
from sympy.codegen.cfunctions import log1p
from sympy.printing.c import C99CodePrinter

C_TYPES = {"float32": "float", "float64": "double"}


def numbers_as_floats(expr: sp.Expr) -> sp.Expr:
    """Irrational constants (pi, sqrt(2), log(2), ...) replaced by their float values."""
    return expr.replace(lambda e: e.is_number and not e.is_Rational and not e.is_Float and e.is_real,
                        lambda e: e.evalf(25))


class CudaPrinter(C99CodePrinter):
    """C99 printer whose symbols are kernel accesses, in the program's float type.

    Every text a method here returns for a node is self-contained (parenthesised), so
    SymPy's Add and Mul printers can place it anywhere, a denominator included.
    """

    def __init__(self, dtype: str, names: Mapping[str, str] | None = None) -> None:
        settings: dict = {"math_macros": {}}
        if dtype == "float32":
            settings["type_aliases"] = {real: float32}
        super().__init__(settings)
        self.dtype = dtype
        self.names = dict(names or {})

    def code(self, expr: sp.Expr) -> str:
        """C text of `expr` with every symbol mapped through `names`."""
        return self.doprint(numbers_as_floats(sp.sympify(expr, strict=True)))

    def literal(self, value: float) -> str:
        """A floating literal of the program's type."""
        return self._print_Float(sp.Float(value))

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        try:
            return self.names[expr.name]
        except KeyError:
            raise KeyError(f"the CUDA printer has no access path for symbol {expr.name!r}") from None

    def _print_Integer(self, expr: sp.Integer) -> str:
        return self._print_Float(sp.Float(expr))

    def _print_NumberSymbol(self, expr: sp.Expr) -> str:
        return self._print_Float(expr.evalf(25))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_GoldenRatio = _print_NumberSymbol

    def _print_Pow(self, expr: sp.Pow) -> str:
        """Small integer powers as products: x*x for a name, nc_sq(u) (u computed once) otherwise."""
        base, exp = expr.as_base_exp()
        one = self.literal(1)
        if exp in (2, 3, -2, -3):
            b = self._print(base)
            if base.is_Atom:
                product = "*".join([b] * abs(int(exp)))
            else:
                product = f"{'nc_sq' if abs(exp) == 2 else 'nc_cube'}({b})"
            return f"({product})" if exp > 0 else f"({one}/({product}))"
        if exp == -1:
            return f"({one}/{self._operand(base)})"
        if exp == sp.Rational(-1, 2):
            return f"({one}/{super()._print_Pow(sp.Pow(base, sp.Rational(1, 2), evaluate=False))})"
        return super()._print_Pow(expr)

    def _operand(self, expr: sp.Expr) -> str:
        """`expr` as an operand of * or /: parenthesised unless it is a name, number or call."""
        text = self._print(expr)
        return text if expr.is_Atom or isinstance(expr, sp.Function) else f"({text})"

    def _print_sigmoid(self, expr: sp.Expr) -> str:
        """1/(1 + e^-u): e^-u overflows to inf for u << 0 and the quotient is then exactly 0."""
        return self._print(1 / (1 + sp.exp(-expr.args[0])))

    def _print_softplus(self, expr: sp.Expr) -> str:
        """max(u, 0) + log1p(e^-|u|): no overflow for any u (log(1 + e^u) overflows at u > 88 in float32)."""
        u = expr.args[0]
        return f"({self._print(sp.Max(u, 0) + log1p(sp.exp(-sp.Abs(u))))})"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        u = f"({self._print(expr.args[0])})"
        at_zero = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
        return (f"(({u} > {self.literal(0)}) ? {self.literal(1)} : "
                f"(({u} < {self.literal(0)}) ? {self.literal(0)} : {self._print(at_zero)}))")

    def _print_sign(self, expr: sp.sign) -> str:
        u = f"({self._print(expr.args[0])})"
        zero, one = self.literal(0), self.literal(1)
        return f"(({u} > {zero}) ? {one} : (({u} < {zero}) ? -{one} : {zero}))"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        *branches, (last, cond) = expr.args
        if cond != sp.true:
            raise NotImplementedError("a Piecewise needs a final branch for 'otherwise'")
        text = f"({self._print(last)})"
        for value, cond in reversed(branches):
            text = f"(({self._print(cond)}) ? ({self._print(value)}) : {text})"
        return text
