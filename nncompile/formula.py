"""Turn a user's formula (string, SymPy expression or callable) into a SymPy expression.

Strings are never evaluated: `sympy.sympify` on a raw string calls `eval`, so instead the
text is parsed by Python's `ast` (which only builds a tree) and walked against a
whitelist: the allowed symbols, numbers, + - * / ** ^ and the functions in
`symbolic.SUPPORTED_FUNCTIONS`.  Anything else is refused with a message naming it.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Callable, Mapping, Union

import sympy as sp

from .errors import FormulaError
from .symbolic import SUPPORTED_FUNCTIONS, symbol, unsupported_functions

FormulaLike = Union[str, sp.Expr, Callable[..., object], int, float]

MAX_LENGTH = 2000
MAX_NODES = 400
MAX_EXPONENT = 64
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
    """Names reach generated source; accept only plain identifiers, or say why not."""
    if not isinstance(name, str) or not IDENTIFIER.match(name) or len(name) > 64:
        raise FormulaError(
            f"{what} {name!r} is not a valid name: use letters, digits and underscores, "
            "not starting with a digit, at most 64 characters")
    return name


def _power(base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
    if exponent.is_number and (not exponent.is_finite or abs(exponent) > MAX_EXPONENT):
        raise FormulaError(f"exponent {exponent} is too large (at most {MAX_EXPONENT} in absolute value)")
    return sp.Pow(base, exponent)


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
            raise FormulaError(f"integer constant {value} is too large")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    def visit_Name(self, node: ast.Name) -> sp.Expr:
        if node.id in self.symbols:
            return self.symbols[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        allowed = ", ".join(sorted(self.symbols))
        raise FormulaError(f"unknown name {node.id!r} in formula (allowed symbols: {allowed})")

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
            name = node.func.id if isinstance(node.func, ast.Name) else _describe(node.func)
            known = ", ".join(sorted(SUPPORTED_FUNCTIONS))
            raise FormulaError(f"function {name!r} is not allowed in a formula (known: {known})")
        if node.keywords or not node.args:
            raise FormulaError(f"{node.func.id}() takes positional arguments only")
        args = [self.visit(a) for a in node.args]
        try:
            return SUPPORTED_FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError) as exc:
            raise FormulaError(f"{node.func.id}() with {len(args)} argument(s): {exc}") from None


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
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise FormulaError(f"formula {shown!r} does not parse: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise FormulaError("formula is nested too deeply") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise FormulaError(f"formula is too large ({nodes} syntax nodes, at most {MAX_NODES})")
    try:
        return sp.sympify(_Builder(symbols).visit(tree))
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
        expr = sp.sympify(value)
    elif callable(value):
        try:
            expr = value(*symbols.values())
        except Exception as exc:  # the user's own code failed on symbols
            raise FormulaError(
                f"{what}: calling the function with SymPy symbols {', '.join(names)} failed "
                f"({type(exc).__name__}: {exc}); build the result with sympy functions") from None
        if not isinstance(expr, (sp.Basic, int, float)):
            raise FormulaError(f"{what}: the function returned {type(expr).__name__}, not a SymPy expression")
        expr = sp.sympify(expr)
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
        raise FormulaError(f"{what}: the formula is not finite and real ({expr})")
    bad = unsupported_functions(expr)
    if bad:
        raise FormulaError(f"{what}: function(s) {', '.join(bad)} cannot be compiled "
                           f"(known: {', '.join(sorted(SUPPORTED_FUNCTIONS))})")
    return expr
