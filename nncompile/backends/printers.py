"""SymPy printers for the NumPy backend: expressions as in-place ufunc calls.

`UfuncPrinter` is a SymPy `Printer` whose ``_print_<Class>`` methods emit NumPy calls
with ``out=`` arguments instead of returning nested expression text, so a fused
elementwise expression runs with no per-step allocation: intermediates live in scratch
buffers from a pool, reused as soon as their value is consumed.  Subexpressions free of
arrays (learning rate over batch size, ...) are hoisted to Python scalars and printed
with SymPy's `PythonCodePrinter`.  Common subexpressions are shared via `sympy.cse`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import sympy as sp
from sympy.printing.printer import Printer
from sympy.printing.pycode import PythonCodePrinter

from ..ir import BATCH
from ..symbolic import expm1, log1p, sigmoid, softplus

Shape = tuple
UNARY_UFUNCS = {
    sp.exp: "exp", sp.log: "log", sp.tanh: "tanh", sp.sinh: "sinh", sp.cosh: "cosh",
    sp.sin: "sin", sp.cos: "cos", sp.tan: "tan", sp.atan: "arctan", sp.asinh: "arcsinh",
    sp.Abs: "absolute", sp.sign: "sign", log1p: "log1p", expm1: "expm1",
}
_COMBINE = {
    "add": lambda a, b: sp.Add(a, b, evaluate=False), "subtract": lambda a, b: sp.Add(a, -b, evaluate=False),
    "multiply": lambda a, b: sp.Mul(a, b, evaluate=False), "divide": lambda a, b: sp.Mul(a, 1 / b, evaluate=False),
    "maximum": sp.Max, "minimum": sp.Min,
}
COMPARISONS = {"<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal",
               "==": "equal", "!=": "not_equal"}


def math_text(expr: sp.Basic) -> str:
    """Short, deterministic math for comments (floats without trailing digits)."""
    return sp.sstr(expr, full_prec=False)


def broadcast(shapes: Sequence[Shape]) -> Shape:
    """NumPy broadcasting of shapes whose dims are ints or the batch name."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(ndim):
        dims = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def shape_text(shape: Shape) -> str:
    """Python source for a shape tuple, with the batch dim as the variable N."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


class ScalarPrinter(PythonCodePrinter):
    """Scalar Python for hoisted expressions (lr/N, 1 - beta1**step, ...)."""

    def _print_sigmoid(self, expr: sp.Expr) -> str:
        return f"(0.5 + 0.5*math.tanh(0.5*({self._print(expr.args[0])})))"

    def _print_softplus(self, expr: sp.Expr) -> str:
        u = self._print(expr.args[0])
        return f"(max({u}, 0.0) + math.log1p(math.exp(-abs({u}))))"

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return repr(float(expr))


@dataclass
class ScratchPool:
    """Scratch arrays by shape and kind, named s1, s2, ...; a name is reused once given back."""

    declared: dict[str, tuple[Shape, str]] = field(default_factory=dict)
    free: list[str] = field(default_factory=list)

    def take(self, shape: Shape, kind: str = "float") -> str:
        for name in self.free:
            if self.declared[name] == (shape, kind):
                self.free.remove(name)
                return name
        name = f"s{len(self.declared) + 1}"
        self.declared[name] = (shape, kind)
        return name

    def give(self, name: str) -> None:
        if name in self.declared and name not in self.free:
            self.free.append(name)


@dataclass
class Scalars:
    """Hoisted scalar subexpressions, shared by a module's functions.

    Those that depend on the batch size alone are computed once per workspace; the rest
    (learning rate, step count, hyperparameters) at the top of each function using them.
    """

    printer: ScalarPrinter = field(default_factory=lambda: ScalarPrinter({"standard": "python3"}))
    names: dict[sp.Expr, str] = field(default_factory=dict)
    workspace: list[tuple[str, str]] = field(default_factory=list)
    per_call: list[tuple[str, str]] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    def text(self, expr: sp.Expr) -> str:
        """A literal or the name of a hoisted scalar holding `expr`."""
        expr = sp.sympify(expr)
        if expr.is_Number:
            return repr(float(expr))
        if expr.is_Symbol:
            return expr.name
        if expr not in self.names:
            name = f"c{len(self.names) + 1}"
            self.names[expr] = name
            line = (name, self.printer.doprint(expr))
            only_n = {s.name for s in expr.free_symbols} <= {BATCH}
            (self.workspace if only_n else self.per_call).append(line)
        self.used.add(self.names[expr])
        return self.names[expr]

    def needed(self) -> list[tuple[str, str]]:
        """Per-call assignments used since the last call, in creation order; resets the record."""
        lines = [line for line in self.per_call if line[0] in self.used]
        self.used = set()
        return lines


class UfuncPrinter(Printer):
    """Emits the lines computing one elementwise expression into a destination array.

    A destination is "free" when the expression does not read its storage: then
    intermediates may be built in it.  Otherwise they go to scratch and only the final
    call writes the destination (NumPy ufuncs handle exact in-place overlap).
    """

    printmethod = "_ufunc"

    def __init__(self, shape_of: Callable[[str], Shape], storage_of: Callable[[str], str],
                 contiguous: Callable[[str], bool], pool: ScratchPool, scalars: Scalars) -> None:
        super().__init__()
        self._buffer_shape, self.storage_of, self.contiguous = shape_of, storage_of, contiguous
        self.pool, self.scalars = pool, scalars
        self.lines: list[tuple[str, str]] = []  # (code, comment: the math the line computes)
        self._owned: set[str] = set()

    # -- entry points ---------------------------------------------------------------
    def assign(self, out: str, expr: sp.Expr) -> list[tuple[str, str]]:
        """Lines computing ``out = expr`` elementwise, sharing common subexpressions."""
        self.lines = []
        self._assign(out, expr)
        return self.lines

    def reduce(self, out: str, expr: sp.Expr, op: str, axis: int | None) -> list[tuple[str, str]]:
        """Lines computing a sum or max of `expr` over rows (axis 1), columns (0) or all."""
        self.lines = []
        what = {None: op, 0: f"col{op}", 1: f"row{op}"}[axis]
        comment = f"{out} = {what}({math_text(expr)})"
        if axis is None:
            self.lines.append((f"{out} = {self._total(expr)}", comment))
            self._release(*sorted(self._owned))  # scratch read by that line is free only now
        else:
            src = self._materialize(expr)
            keep = ", keepdims=True" if axis == 1 else ""
            self.lines.append((f"np.{op}({src}, axis={axis}{keep}, out={out})", comment))
            self._release(src)
        return self.lines

    def scalar(self, out: str, expr: sp.Expr) -> list[tuple[str, str]]:
        """A scalar assignment (shape ()), in plain Python."""
        return [(f"{out} = {self.scalars.printer.doprint(expr)}", f"{out} = {math_text(expr)}")]

    # -- whole-expression helpers ---------------------------------------------------
    def _assign(self, out: str, expr: sp.Expr) -> None:
        replacements, (reduced,) = sp.cse([expr], symbols=sp.numbered_symbols("_cse", real=True),
                                          order="none")
        names: dict[sp.Symbol, sp.Expr] = {}
        temps = []
        for sym, sub in replacements:
            sub = sub.xreplace(names)
            if not self._arrays(sub):
                names[sym] = sub  # scalar: inlined, then hoisted with its user
                continue
            name = self.pool.take(self.shape(sub))
            self._emit_into(sub, name, free=True)
            names[sym] = sp.Symbol(name, real=True)
            temps.append(name)
        reduced = reduced.xreplace(names)
        reads = {self.storage_of(n) for n in self._arrays(reduced)}
        self._emit_into(reduced, out, free=self.storage_of(out) not in reads)
        for name in temps:
            self.pool.give(name)

    def _materialize(self, expr: sp.Expr) -> str:
        """An array holding `expr`: the buffer itself, or a scratch owned by the caller."""
        if expr.is_Symbol:
            return expr.name
        name = self.pool.take(self.shape(expr))
        self._owned.add(name)
        self._assign(name, expr)
        return name

    def _total(self, expr: sp.Expr) -> str:
        """Python expression for the sum of all elements of `expr` (broadcast shape)."""
        full = self.shape(expr)
        coeff, rest = expr.as_coeff_Mul() if expr.is_Mul else (sp.S.One, expr)
        scalar = sp.Mul(*[a for a in sp.Mul.make_args(rest) if not self._arrays(a)])
        arrays = sp.Mul(*[a for a in sp.Mul.make_args(rest) if self._arrays(a)])
        factor = coeff * scalar
        terms = []
        for term in sp.Add.make_args(sp.expand(arrays) if arrays.is_Add else arrays):
            repeat = [d for d, t in zip(full, (1,) * (len(full) - len(self.shape(term))) + self.shape(term))
                      if t == 1 and d != 1]
            text = self._term_total(term)
            terms.append(text if not repeat else f"{'*'.join(str(d) for d in repeat)}*{text}")
        body = " + ".join(terms)
        return body if factor == 1 else f"{self.scalars.text(factor)}*({body})"

    def _term_total(self, term: sp.Expr) -> str:
        """Sum of one product term: a BLAS dot product when it is a product of two arrays."""
        coeff, rest = term.as_coeff_Mul()
        scalar = sp.Mul(*[a for a in sp.Mul.make_args(rest) if not self._arrays(a)])
        arrays = [a for a in sp.Mul.make_args(rest) if self._arrays(a)]
        prefix = "" if coeff * scalar == 1 else f"{self.scalars.text(coeff * scalar)}*"
        if len(arrays) == 1 and arrays[0].is_Pow and arrays[0].exp == 2:
            arrays = [arrays[0].base, arrays[0].base]
        if len(arrays) == 2 and self.shape(arrays[0]) == self.shape(arrays[1]) == self.shape(term):
            left, right = (self._materialize(a) if not self._plain(a) else a.name for a in arrays)
            return f"{prefix}np.vdot({left}, {right})"
        return f"{prefix}{self._materialize(sp.Mul(*arrays))}.sum()"

    def _plain(self, expr: sp.Expr) -> bool:
        """A buffer that np.vdot can read without copying."""
        return expr.is_Symbol and self.contiguous(expr.name)

    # -- helpers --------------------------------------------------------------------
    def shape_of(self, name: str) -> Shape:
        if name in self.pool.declared:
            return self.pool.declared[name][0]
        return self._buffer_shape(name)

    def _is_array(self, name: str) -> bool:
        try:
            return len(self.shape_of(name)) > 0
        except KeyError:
            return False

    def _arrays(self, expr: sp.Expr) -> list[str]:
        return sorted(s.name for s in expr.free_symbols if self._is_array(s.name))

    def shape(self, expr: sp.Expr) -> Shape:
        return broadcast([self.shape_of(n) for n in self._arrays(expr)])

    def _value_shape(self, value: str) -> Shape:
        return self.shape_of(value) if self._is_array(value) else ()

    def _emit(self, expr: sp.Expr) -> str:
        """Value of `expr`: a scalar literal or name, an array name, or a scratch filled here."""
        if not self._arrays(expr):
            return self.scalars.text(expr)
        if expr.is_Symbol:
            return expr.name
        return self._fill_scratch(expr)

    def _fill_scratch(self, expr: sp.Expr) -> str:
        name = self.pool.take(self.shape(expr))
        self._owned.add(name)
        self._emit_into(expr, name, free=True)
        return name

    def _release(self, *names: str) -> None:
        for n in names:
            if n in self._owned:
                self._owned.discard(n)
                self.pool.give(n)

    def _scratch(self, current: str, shape: Shape) -> str:
        """`current` if it is our scratch of that shape, else a new scratch."""
        if current in self._owned and self.pool.declared[current][0] == shape:
            return current
        name = self.pool.take(shape)
        self._owned.add(name)
        return name

    def _emit_into(self, expr: sp.Expr, dest: str, free: bool) -> None:
        """Write `expr` into `dest`."""
        if not self._arrays(expr) or expr.is_Symbol:
            self._call("copyto", [], dest, expr, f"np.copyto({dest}, {self._emit(expr)})")
            return
        self._print(expr, dest=dest, free=free)

    def _child(self, expr: sp.Expr, dest: str, free: bool) -> str:
        """Evaluate an operand, into `dest` itself when that is allowed and shapes agree."""
        if free and self._arrays(expr) and not expr.is_Symbol and self.shape(expr) == self.shape_of(dest):
            self._emit_into(expr, dest, free=True)
            return dest
        return self._emit(expr)

    def _call(self, ufunc: str, args: Sequence[str], dest: str, expr: sp.Expr, code: str = "") -> None:
        """One line: ``np.ufunc(args, out=dest)``, commented with the math `dest` now holds."""
        code = code or f"np.{ufunc}({', '.join(args)}, out={dest})"
        self.lines.append((code, f"{dest} = {math_text(expr)}"))

    def _fold(self, first: sp.Expr, steps: list[tuple[str, sp.Expr]], dest: str, free: bool,
              start: str | None = None) -> None:
        """acc = first; acc = ufunc(acc, operand) for each step; the last call writes dest.

        With a scalar `start` the first operand may be built in dest itself.
        """
        acc = start if start is not None else self._child(first, dest, free)
        math = first
        for i, (ufunc, operand) in enumerate(steps):
            value = self._child(operand, dest, free) if i == 0 and start is not None else self._emit(operand)
            last = i == len(steps) - 1
            shape = broadcast([self._value_shape(acc), self._value_shape(value)])
            target = dest if last or (free and shape == self.shape_of(dest)) else self._scratch(acc, shape)
            math = _COMBINE[ufunc](math, operand)
            self._call(ufunc, [acc, value], target, math)
            if target != acc:
                self._release(acc)
            if target != value:
                self._release(value)
            acc = target

    def _order(self, operands: list[sp.Expr]) -> list[sp.Expr]:
        """Smaller-shaped operands first, so broadcasting happens as late as possible."""
        return sorted(operands, key=lambda e: sum(1 for d in self.shape(e) if d != 1))

    # -- SymPy node printers --------------------------------------------------------
    def _print_Add(self, expr: sp.Add, dest: str, free: bool) -> None:
        scalar = sp.Add(*[a for a in expr.args if not self._arrays(a)])
        terms = self._order([a for a in expr.args if self._arrays(a)])
        positive = [a for a in terms if not a.could_extract_minus_sign()]
        negative = [-a for a in terms if a.could_extract_minus_sign()]
        steps = [("add", t) for t in positive[1:]] + [("subtract", t) for t in negative]
        if positive:
            if scalar != 0:
                steps.append(("add", scalar))
            self._fold(positive[0], steps, dest, free)
        elif scalar != 0:
            self._fold(scalar, steps, dest, free, start=self.scalars.text(scalar))
        else:
            self._unary("negative", sp.Add(*negative), dest, free, expr)

    def _print_Mul(self, expr: sp.Mul, dest: str, free: bool) -> None:
        coeff = sp.Mul(*[a for a in expr.args if not self._arrays(a)])
        factors = [a for a in expr.args if self._arrays(a)]
        den = [1 / f for f in factors if f.is_Pow and f.exp.is_negative]
        num = self._order([f for f in factors if not (f.is_Pow and f.exp.is_negative)])
        if coeff == -1 and not den and len(num) == 1:
            self._unary("negative", num[0], dest, free, expr)
            return
        steps = [("multiply", f) for f in num[1:]] + [("divide", f) for f in den]
        if num:
            if coeff != 1:
                steps.insert(0, ("multiply", coeff))
            self._fold(num[0], steps, dest, free)
        else:
            self._fold(coeff, steps, dest, free, start=self.scalars.text(coeff))

    def _print_Pow(self, expr: sp.Pow, dest: str, free: bool) -> None:
        base, e = expr.base, expr.exp
        if e == 2:
            self._unary("square", base, dest, free, expr)
        elif e == sp.Rational(1, 2):
            self._unary("sqrt", base, dest, free, expr)
        elif e == -1:
            value = self._child(base, dest, free)
            self._call("divide", ["1.0", value], dest, expr)
            self._release(*{value} - {dest})
        elif e.is_negative:
            self._print(1 / sp.Pow(base, -e, evaluate=False), dest=dest, free=free)
        else:
            value = self._child(base, dest, free)
            exponent = self._emit(e)
            self._call("power", [value, exponent], dest, expr)
            self._release(*sorted({value, exponent} - {dest}))

    def _unary(self, ufunc: str, arg: sp.Expr, dest: str, free: bool, expr: sp.Expr,
               extra: Sequence[str] = ()) -> None:
        value = self._child(arg, dest, free)
        self._call(ufunc, [value, *extra], dest, expr)
        self._release(*{value} - {dest})  # dest may be a scratch the caller still holds

    def _print_Function(self, expr: sp.Function, dest: str, free: bool) -> None:
        ufunc = next((name for cls, name in UNARY_UFUNCS.items() if isinstance(expr, cls)), None)
        if ufunc is None:
            raise NotImplementedError(f"no NumPy lowering for {type(expr).__name__}")
        self._unary(ufunc, expr.args[0], dest, free, expr)

    def _print_sigmoid(self, expr: sigmoid, dest: str, free: bool) -> None:
        """σ(u) = 0.5 + 0.5·tanh(u/2): never overflows, exact to float round-off."""
        work = dest if free else self._scratch("", self.shape(expr))
        u = expr.args[0]
        value = self._child(u, work, True)
        self._call("multiply", [value, "0.5"], work, u / 2)
        self._release(*{value} - {work, dest})
        self._call("tanh", [work], work, sp.tanh(u / 2))
        self._call("multiply", [work, "0.5"], work, sp.tanh(u / 2) / 2)
        self._call("add", [work, "0.5"], dest, expr)
        if work != dest:
            self._release(work)

    def _print_softplus(self, expr: softplus, dest: str, free: bool) -> None:
        """softplus(u) = logaddexp(u, 0): NumPy's stable log(e^u + e^0)."""
        self._unary("logaddexp", expr.args[0], dest, free, expr, extra=["0.0"])

    def _print_Heaviside(self, expr: sp.Heaviside, dest: str, free: bool) -> None:
        self._unary("heaviside", expr.args[0], dest, free, expr, extra=[self.scalars.text(expr.args[1])])

    def _print_Max(self, expr: sp.Max, dest: str, free: bool) -> None:
        first, *rest = self._order(list(expr.args)[::-1])
        self._fold(first, [("maximum", a) for a in rest], dest, free)

    def _print_Min(self, expr: sp.Min, dest: str, free: bool) -> None:
        first, *rest = self._order(list(expr.args)[::-1])
        self._fold(first, [("minimum", a) for a in rest], dest, free)

    def _print_Piecewise(self, expr: sp.Piecewise, dest: str, free: bool) -> None:
        """Last branch first, then earlier branches copied over where their condition holds.

        Values come from np.copyto(..., where=...), never from multiplying by a mask, so an
        inf in a branch not taken cannot turn into NaN.
        """
        *branches, (otherwise, _) = expr.args
        work = dest if free else self._scratch("", self.shape(expr))
        self._emit_into(otherwise, work, free=True)
        for value, cond in reversed(branches):
            mask = self._condition(cond)
            v = self._emit(value)
            self._call("copyto", [], work, value, f"np.copyto({work}, {v}, where={mask})")
            self.lines[-1] = (self.lines[-1][0], f"{work} = {math_text(value)} where {math_text(cond)}")
            self._release(v)
            self.pool.give(mask)
        if work != dest:
            self._call("copyto", [], dest, expr, f"np.copyto({dest}, {work})")
            self._release(work)

    def _condition(self, cond: sp.Basic) -> str:
        if isinstance(cond, sp.core.relational.Relational):
            lhs, rhs = self._emit(cond.lhs), self._emit(cond.rhs)
            mask = self.pool.take(self.shape(cond.lhs - cond.rhs), "bool")
            self._call(COMPARISONS[cond.rel_op], [lhs, rhs], mask, cond)
            self._release(lhs, rhs)
            return mask
        if isinstance(cond, (sp.And, sp.Or)):
            ufunc = "logical_and" if isinstance(cond, sp.And) else "logical_or"
            masks = [self._condition(c) for c in cond.args]
            for other in masks[1:]:
                self._call(ufunc, [masks[0], other], masks[0], cond)
                self.pool.give(other)
            return masks[0]
        raise NotImplementedError(f"condition {cond} has no NumPy lowering")

    def emptyPrinter(self, expr: object) -> str:  # noqa: N802  (SymPy's name)
        raise NotImplementedError(f"no NumPy lowering for {type(expr).__name__}")
