"""Turn a user's formula (string, SymPy expression or callable) into a SymPy expression.

Strings are never evaluated: `sympy.sympify` on a raw string calls `eval`, so instead the
text is parsed by Python's `ast` (which only builds a tree) and walked against a
whitelist: the allowed symbols, numbers, + - * / ** ^ and the functions in
`symbolic.SUPPORTED_FUNCTIONS`.  Anything else is refused with a message naming it.

Every formula, however it was given (string, SymPy expression or callable), must also
stay within limits that keep a compile fast and the generated code finite: at most
MAX_NODES SymPy nodes nested at most MAX_DEPTH deep, numeric exponents and polynomial
degree at most MAX_EXPONENT (SymPy expands products of powers), and constants that fit
in a float64.
"""
from __future__ import annotations

import ast
import keyword
import math
import re
import warnings
from typing import Callable, Mapping, Union

import sympy as sp

from ..errors import FormulaError
from .functions import SUPPORTED_FUNCTIONS, symbol, unsupported_functions

FormulaLike = Union[str, sp.Expr, Callable[..., object], int, float]

MAX_LENGTH = 2000
MAX_NODES = 400
MAX_DEPTH = 32  # nesting; a compile's cost grows faster than linearly with it
MAX_EXPONENT = 64
MAX_CONSTANT = 1e300  # a constant beyond this would print as inf in float64 code
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONSTANTS = {"pi": sp.pi, "e": sp.E, "E": sp.E}
# "x^2" means a power, as on paper; rewritten before parsing so it binds like "**".
_OPERATOR_SPELLINGS = {"^": "**", "\u2212": "-", "\u00d7": "*", "\u00b7": "*", "\u22c5": "*", "\u00f7": "/"}
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: _power(a, b),
}


def check_identifier(name: object, what: str) -> str:
    """Names reach generated source; accept only plain ASCII identifiers that are not keywords."""
    if not isinstance(name, str) or not IDENTIFIER.match(name) or len(name) > 64:
        raise FormulaError(
            f"{what} {shown(name)} is not a valid name: use letters, digits and underscores, "
            "not starting with a digit, at most 64 characters")
    if keyword.iskeyword(name):
        raise FormulaError(f"{what} {name!r} is not a valid name: it is a Python keyword")
    return name


def shown(value: object, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters: messages stay one short line whatever the input."""
    text = repr(value) if isinstance(value, str) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _power(base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
    _check_exponent(exponent)
    if base.is_number and exponent.is_number and base != 0:
        magnitude = float(abs(exponent)) * abs(math.log10(float(abs(sp.Float(base, 15)))))
        if magnitude > 300:
            raise FormulaError(f"constant power is too large (about 10^{magnitude:.0f})")
    return sp.Pow(base, exponent)


def _check_exponent(exponent: sp.Expr) -> None:
    if exponent.is_number and (not exponent.is_finite or abs(exponent) > MAX_EXPONENT):
        raise FormulaError(f"exponent {_short(exponent)} is too large (at most {MAX_EXPONENT} in absolute value)")


def _short(expr: sp.Basic) -> str:
    try:
        text = sp.sstr(expr)
    except ValueError:  # a number with more digits than Python will print
        return "(a huge number)"
    return text if len(text) <= 40 else text[:37] + "..."


class _Builder(ast.NodeVisitor):
    """Builds SymPy objects from a whitelisted Python expression tree."""

    def __init__(self, symbols: Mapping[str, sp.Symbol]) -> None:
        self.symbols = symbols

    def generic_visit(self, node: ast.AST) -> sp.Expr:
        raise FormulaError(f"{_describe(node)} is not allowed in a formula")

    def visit_Expression(self, node: ast.Expression) -> sp.Expr:
        return self.visit(node.body)

    def visit_Constant(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FormulaError(f"constant {value!r} is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise FormulaError(f"constant {value!r} is not finite")
        if isinstance(value, int) and abs(value) > 10**15:
            raise FormulaError(f"integer constant {_short(sp.Integer(value))} is too large (at most 10^15)")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    def visit_Name(self, node: ast.Name) -> sp.Expr:
        if node.id in self.symbols:
            return self.symbols[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        allowed = ", ".join(sorted(self.symbols))
        raise FormulaError(f"unknown name {shown(node.id)} in formula (allowed symbols: {allowed})")

    def visit_BinOp(self, node: ast.BinOp) -> sp.Expr:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise FormulaError(f"operator {type(node.op).__name__} is not allowed in a formula")
        return op(self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> sp.Expr:
        if isinstance(node.op, ast.USub):
            return -self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.visit(node.operand)
        raise FormulaError(f"operator {type(node.op).__name__} is not allowed in a formula")

    def visit_Call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name) or node.func.id not in SUPPORTED_FUNCTIONS:
            name = shown(node.func.id) if isinstance(node.func, ast.Name) else repr(_describe(node.func))
            known = ", ".join(sorted(SUPPORTED_FUNCTIONS))
            raise FormulaError(f"function {name} is not allowed in a formula (known: {known})")
        if node.keywords or not node.args:
            raise FormulaError(f"{node.func.id}() takes positional arguments only")
        args = [self.visit(a) for a in node.args]
        try:
            return SUPPORTED_FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError):
            raise FormulaError(f"{node.func.id}() does not take {len(args)} argument(s)") from None


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.Lambda):
        return "lambda"
    if isinstance(node, ast.Subscript):
        return "indexing"
    return type(node).__name__


def parse(text: str, symbols: Mapping[str, sp.Symbol]) -> sp.Expr:
    """Parse `text` in the given symbols through the whitelist; never evaluates Python."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is too long ({len(text)} characters, at most {MAX_LENGTH})")
    for spelling, python_op in _OPERATOR_SPELLINGS.items():
        text = text.replace(spelling, python_op)
    if not text.strip():
        raise FormulaError("formula is empty")
    try:
        with warnings.catch_warnings():  # Python's parser warns on "1x" etc.; we report errors ourselves
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL character, before Python 3.11.4
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise FormulaError(f"formula {shown(text, 60)} does not parse: {reason}") from None
    except (RecursionError, MemoryError):
        raise FormulaError("formula is nested too deeply") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise FormulaError(f"formula is too large ({nodes} syntax nodes, at most {MAX_NODES})")
    try:
        return sp.sympify(_Builder(symbols).visit(tree), strict=True)
    except RecursionError:
        raise FormulaError("formula is nested too deeply") from None


def to_expr(value: FormulaLike, names: tuple[str, ...], what: str) -> sp.Expr:
    """A user formula as a SymPy expression in real symbols named `names`.

    Accepts a string (whitelist-parsed), a SymPy expression (its symbols matched by
    name), a number, or a callable taking one SymPy symbol per name.
    """
    symbols = {n: symbol(n) for n in names}
    if isinstance(value, str):
        expr = parse(value, symbols)
    elif isinstance(value, (sp.Basic, int, float)) and not isinstance(value, bool):
        expr = sp.sympify(value, strict=True)
    elif callable(value):
        try:
            expr = value(*symbols.values())
        except Exception as exc:  # the user's own code failed on symbols
            raise FormulaError(
                f"{what}: calling the function with SymPy symbols {', '.join(names)} failed "
                f"({type(exc).__name__}: {exc}); build the result with sympy functions") from None
        if not isinstance(expr, (sp.Basic, int, float)):
            raise FormulaError(f"{what}: the function returned {type(expr).__name__}, not a SymPy expression")
        expr = sp.sympify(expr, strict=True)
    else:
        raise FormulaError(f"{what}: expected a formula string, SymPy expression or callable, "
                           f"got {type(value).__name__}")
    return _checked(expr, symbols, what)


def _checked(expr: sp.Basic, symbols: Mapping[str, sp.Symbol], what: str) -> sp.Expr:
    if not isinstance(expr, sp.Expr):
        raise FormulaError(f"{what}: {type(expr).__name__} is not an expression")
    by_name = {s.name: s for s in expr.free_symbols}
    unknown = sorted(n for n in by_name if n not in symbols)
    if unknown:
        raise FormulaError(f"{what}: unknown symbol(s) {', '.join(unknown)} "
                           f"(allowed: {', '.join(symbols)})")
    expr = expr.xreplace({s: symbols[n] for n, s in by_name.items()})
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan, sp.I):
        raise FormulaError(f"{what}: the formula is not finite and real ({_short(expr)})")
    bad = unsupported_functions(expr)
    if bad:
        raise FormulaError(f"{what}: function(s) {', '.join(bad)} cannot be compiled "
                           f"(known: {', '.join(sorted(SUPPORTED_FUNCTIONS))})")
    _check_limits(expr, what)
    return expr


def _check_limits(expr: sp.Expr, what: str) -> None:
    """Size, exponents, polynomial degree and constants within the module's limits."""
    nodes = list(sp.preorder_traversal(expr))
    if len(nodes) > MAX_NODES:
        raise FormulaError(f"{what}: the formula is too large ({len(nodes)} nodes, at most {MAX_NODES})")
    depth = _depth(expr)
    if depth > MAX_DEPTH:
        raise FormulaError(f"{what}: the formula is nested too deeply (depth {depth}, at most {MAX_DEPTH})")
    try:
        for node in nodes:
            if node.is_Pow:
                _check_exponent(node.exp)
            if isinstance(node, sp.Expr) and node.is_number:
                value = node.evalf(15)
                if not value.is_real or not abs(value) <= MAX_CONSTANT:
                    raise FormulaError(f"constant {_short(node)} is not a finite float64 number")
    except FormulaError as exc:
        raise FormulaError(f"{what}: {exc}") from None
    degree = _max_degree(expr)
    if degree > MAX_EXPONENT:
        raise FormulaError(f"{what}: the formula has polynomial degree {degree}, more than {MAX_EXPONENT} "
                           "(expanding it would be slow)")


def _depth(expr: sp.Basic) -> int:
    depth: dict[sp.Basic, int] = {}
    for node in sp.postorder_traversal(expr):
        depth[node] = 1 + max((depth[arg] for arg in node.args), default=0)
    return depth[expr]


def _max_degree(expr: sp.Expr) -> int:
    """The largest polynomial degree SymPy's expand could reach in any part of `expr`.

    A function call or a non-integer power counts as one opaque factor (its argument is
    a part of its own); products add degrees, sums take the largest, x**k multiplies by |k|.
    """
    degree: dict[sp.Basic, int] = {}
    for node in sp.postorder_traversal(expr):
        if not isinstance(node, sp.Expr) or not node.free_symbols:
            degree[node] = 0
        elif node.is_Symbol:
            degree[node] = 1
        elif node.is_Pow and node.exp.is_Integer:
            degree[node] = abs(int(node.exp)) * degree[node.base]
        elif node.is_Mul:
            degree[node] = sum(degree[arg] for arg in node.args)
        elif node.is_Add:
            degree[node] = max(degree[arg] for arg in node.args)
        else:
            degree[node] = 1
    return max(degree.values(), default=0)
