"""Convolution and pooling derived in index notation: each layer's definition as a SymPy `Indexed` sum,
its gradients by `sympy.diff` and SymPy's summation of the Kronecker deltas that come out.

A Conv2D computes

    z[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q]·x[n,c,i·s_h+p−pad_h, j·s_w+q−pad_w]

and reverse mode gives ∂L/∂θ = Σ_{n,o,i,j} δ[n,o,i,j]·∂z[n,o,i,j]/∂θ for every entry θ of W, b and
x.  `sympy.diff` of the sum by one entry is a sum of Kronecker deltas; each delta on a summation
index is summed out by SymPy (`Sum.doit`), which leaves ∂L/∂W as the correlation of the input with
δ, ∂L/∂b as δ summed over (n, i, j), and ∂L/∂x as δ through the kernel, with the condition that the
kernel index lies in the kernel.  `flipped` is the same ∂L/∂x written as the full correlation of δ
(dilated by the stride, padded by k − 1 − pad) with the kernel turned by 180°, the form textbooks
give; `check_flipped` shows with SymPy, on explicit entries, that the two are equal.  Average
pooling is the same computation with a fixed kernel 1/(k_h·k_w) per channel.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

_INDEX = {"integer": True, "nonnegative": True}
n, o, c, i, j, p, q, h, w, u, v = sp.symbols("n o c i j p q h w u v", **_INDEX)
N, C, O, KH, KW, HO, WO = sp.symbols("N C O k_h k_w H_o W_o", integer=True, positive=True)
SH, SW = sp.symbols("s_h s_w", integer=True, positive=True)
PH, PW = sp.symbols("pad_h pad_w", integer=True, nonnegative=True)
X, K, B, Z, DZ, DX = (sp.IndexedBase(name, real=True) for name in ("x", "W", "b", "z", "dz", "dx"))
#: δ dilated by the stride and padded by k − 1 − pad: what the flipped kernel slides over
DILATED = sp.IndexedBase("dz_hat", real=True)
#: the first maximum of each pooling window, as (row, column) within the window
ARG_U, ARG_V = sp.IndexedBase("u_star", real=True), sp.IndexedBase("v_star", real=True)
#: the entry a gradient is taken for: its indices, and the largest value each can take
_O, _C, _P, _Q, _N = sp.symbols("o' c' p' q' n'", **_INDEX)
_LAST = {_O: O - 1, _C: C - 1, _P: KH - 1, _Q: KW - 1, _N: N - 1}
_PLAIN = {_O: o, _C: c, _P: p, _Q: q, _N: n}


class Iverson(sp.Function):
    """[condition]: 1 where it holds, else 0 (the Iverson bracket), e.g. [h = i·s + u*]."""

    nargs = 1
    is_real = True

    def _sympystr(self, printer: object) -> str:
        return f"[{printer._print(self.args[0])}]"

    _unicode = _sympystr

    def _latex(self, printer: object) -> str:
        return rf"\left[{printer._print(self.args[0])}\right]"

    def _mathml_presentation(self, printer: object) -> object:
        return mathml_row(printer, mathml_op(printer, "["), printer._print(self.args[0]), mathml_op(printer, "]"))


class WindowMax(sp.Function):
    """max over u < k_h, v < k_w of an expression in u and v (a max-pooling window)."""

    nargs = 3
    is_real = True
    precedence = PRECEDENCE["Func"]

    def _sympystr(self, printer: object) -> str:
        return f"max_{{{printer._print(self.args[1])},{printer._print(self.args[2])}}}({printer._print(self.args[0])})"

    _unicode = _sympystr

    def _latex(self, printer: object) -> str:
        return (rf"\max_{{{printer._print(self.args[1])},{printer._print(self.args[2])}}} "
                rf"{printer._print(self.args[0])}")

    def _mathml_presentation(self, printer: object) -> object:
        below = mathml_row(printer, printer._print(self.args[1]), mathml_op(printer, ","), printer._print(self.args[2]))
        head = printer.dom.createElement("munder")
        head.appendChild(mathml_op(printer, "max"))
        head.appendChild(below)
        return mathml_row(printer, head, printer._print(self.args[0]))


def mathml_op(printer: object, text: str) -> object:
    """<mo>text</mo> in a SymPy MathML printer's document (the HTML report's printer is one)."""
    node = printer.dom.createElement("mo")
    node.appendChild(printer.dom.createTextNode(text))
    return node


def mathml_row(printer: object, *children: object) -> object:
    row = printer.dom.createElement("mrow")
    for child in children:
        row.appendChild(child)
    return row


@dataclass(frozen=True)
class IndexedDerivation:
    """A layer's definition and what reverse mode gives from it, in the generic symbols above.

    `forward` is out[...] = definition; `gradients` are (name, entry = ∂L/∂entry) for W and b;
    `input` is ∂L/∂x[n,c,h,w] as derived (`condition` says when a term of its sum is not 0), and
    `flipped` the same as a full correlation with the flipped kernel (None for pooling).
    """

    forward: sp.Eq
    gradients: tuple[tuple[str, sp.Eq], ...]
    input: sp.Eq
    condition: sp.Basic
    flipped: sp.Eq | None = None


def _window(stride: sp.Expr, pad: sp.Expr, out: sp.Symbol, entry: sp.Symbol) -> sp.Expr:
    """The input position that kernel entry `entry` meets for output position `out`: out·s + entry − pad."""
    return out * stride + entry - pad


def conv_definition() -> sp.Eq:
    """z[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q]·x[n,c,i·s_h+p−pad_h, j·s_w+q−pad_w]."""
    body = K[o, c, p, q] * X[n, c, _window(SH, PH, i, p), _window(SW, PW, j, q)]
    return sp.Eq(Z[n, o, i, j], B[o] + sp.Sum(body, (c, 0, C - 1), (p, 0, KH - 1), (q, 0, KW - 1)), evaluate=False)


def avgpool_definition() -> sp.Eq:
    """z[n,c,i,j] = (1/(k_h·k_w)) Σ_{u,v} x[n,c,i·s_h+u, j·s_w+v]."""
    body = X[n, c, i * SH + u, j * SW + v] / (KH * KW)
    return sp.Eq(Z[n, c, i, j], sp.Sum(body, (u, 0, KH - 1), (v, 0, KW - 1)), evaluate=False)


def maxpool_definition() -> sp.Eq:
    """z[n,c,i,j] = max_{u,v} x[n,c,i·s_h+u, j·s_w+v]."""
    return sp.Eq(Z[n, c, i, j], WindowMax(X[n, c, i * SH + u, j * SW + v], u, v), evaluate=False)


def reverse_mode(definition: sp.Eq, wrt: sp.Indexed, eliminate: tuple[sp.Symbol, ...]) -> sp.Expr:
    """∂L/∂wrt = Σ over every output entry of δ·∂(output)/∂wrt, from `sympy.diff` of the definition, with
    the Kronecker deltas summed out over the indices `eliminate` (in that order) by SymPy."""
    out = definition.lhs
    local = sp.diff(definition.rhs, wrt)
    limits = [(index, 0, last) for index, last in zip(out.indices, (N - 1, O - 1, HO - 1, WO - 1))]
    body = DZ[out.indices] * local
    inner = [a for a in sp.Mul.make_args(body) if isinstance(a, sp.Sum)]
    if inner:  # the definition's own sum joins the sum over the output entries
        body = sp.Mul(*[a for a in sp.Mul.make_args(body) if a is not inner[0]]) * inner[0].function
        limits += list(inner[0].limits)
    for index in eliminate:
        (limit,) = [lim for lim in limits if lim[0] == index]
        limits.remove(limit)
        body = _in_range(sp.Sum(body, limit).doit())
    return sp.Sum(body, *limits) if limits else body


def _in_range(expr: sp.Expr) -> sp.Expr:
    """Drop the conditions that hold because the entry's own indices are in range (c' ≤ C − 1)."""
    def branch(*pairs: tuple[sp.Expr, sp.Basic]) -> sp.Expr:
        kept = []
        for value, cond in pairs:
            cond = cond.xreplace({rel: sp.true for rel in cond.atoms(sp.Le)
                                  if rel.lhs in _LAST and sp.expand(rel.rhs - _LAST[rel.lhs]) == 0})
            if cond is sp.true:
                return sp.Piecewise(*kept, (value, True)) if kept else value
            kept.append((value, cond))
        return sp.Piecewise(*kept)
    return expr.replace(sp.Piecewise, branch)


def _split(expr: sp.Expr) -> tuple[sp.Expr, sp.Basic]:
    """A sum of Piecewise(term, condition) as (the sum of the terms, the condition)."""
    body = expr.function if isinstance(expr, sp.Sum) else expr
    if isinstance(body, sp.Piecewise):
        (term, cond), *_ = body.args
        return (sp.Sum(term, *expr.limits) if isinstance(expr, sp.Sum) else term), cond
    return expr, sp.true


def _plain(expr: sp.Basic) -> sp.Basic:
    return expr.xreplace(_PLAIN)


@lru_cache(maxsize=1)
def conv() -> IndexedDerivation:
    """Conv2D's gradients, derived from `conv_definition`."""
    definition = conv_definition()
    weight = reverse_mode(definition, K[_O, _C, _P, _Q], (o, c, p, q))
    bias = reverse_mode(definition, B[_O], (o,))
    raw = reverse_mode(definition, X[_N, _C, h, w], (n, c, p, q))
    term, cond = _split(raw)
    gradients = (("W", sp.Eq(K[o, c, p, q], _plain(weight), evaluate=False)),
                 ("b", sp.Eq(B[o], _plain(bias), evaluate=False)))
    dx = sp.Eq(DX[n, c, h, w], _plain(term), evaluate=False)
    return IndexedDerivation(definition, gradients, dx, _plain(cond), flipped_form())


def flipped_form() -> sp.Eq:
    """∂L/∂x[n,c,h,w] = Σ_{o,p,q} δ̂[n,o,h+p,w+q]·W[o,c,k_h−1−p,k_w−1−q]: the full correlation of δ̂ (δ
    dilated by the stride and padded by k − 1 − pad, see `dilated`) with the kernel turned by 180°."""
    body = DILATED[n, o, h + p, w + q] * K[o, c, KH - 1 - p, KW - 1 - q]
    return sp.Eq(DX[n, c, h, w], sp.Sum(body, (o, 0, O - 1), (p, 0, KH - 1), (q, 0, KW - 1)), evaluate=False)


def dilated_entry() -> sp.Eq:
    """δ̂[n, o, k_h−1−pad_h + i·s_h, k_w−1−pad_w + j·s_w] = δ[n, o, i, j] (δ̂ is 0 everywhere else)."""
    return sp.Eq(DILATED[n, o, KH - 1 - PH + i * SH, KW - 1 - PW + j * SW], DZ[n, o, i, j], evaluate=False)


def dilated(m: sp.Expr, l: sp.Expr) -> sp.Expr:  # noqa: E741  (l: a column of δ̂)
    """δ̂[n,o,m,l]: δ[n,o,(m − (k_h−1−pad_h))/s_h, (l − (k_w−1−pad_w))/s_w] where both are whole numbers
    in range, else 0."""
    rows, cols = m - (KH - 1 - PH), l - (KW - 1 - PW)
    inside = sp.And(sp.Eq(sp.Mod(rows, SH), 0), sp.Eq(sp.Mod(cols, SW), 0), rows >= 0, cols >= 0,
                    rows / SH <= HO - 1, cols / SW <= WO - 1)
    return sp.Piecewise((DZ[n, o, rows / SH, cols / SW], inside), (0, True))


@lru_cache(maxsize=4)
def check_flipped(kh: int = 3, kw: int = 2, sh: int = 2, sw: int = 1, ph: int = 1, pw: int = 0,
                  size: int = 5) -> bool:
    """Whether the derived ∂L/∂x and the flipped-kernel form agree on every entry of a size×size input
    with one example and one channel in and out: both sums written out term by term, with symbolic
    entries of δ and W, each term's condition decided at the concrete indices."""
    values = {KH: kh, KW: kw, SH: sh, SW: sw, PH: ph, PW: pw, N: 1, C: 1, O: 1,
              HO: (size + 2 * ph - kh) // sh + 1, WO: (size + 2 * pw - kw) // sw + 1}
    derived, flipped = conv().input.rhs, flipped_form().rhs
    for row in range(size):
        for col in range(size):
            at = {**values, n: 0, c: 0, h: row, w: col}
            left = _written_out(derived.function, conv().condition, derived.limits, at)
            hat = {DILATED[n, o, h + p, w + q]: dilated(h + p, w + q)}
            right = _written_out(flipped.function.xreplace(hat), sp.true, flipped.limits, at)
            if sp.expand(left - right) != 0:
                return False
    return True


def _written_out(term: sp.Expr, condition: sp.Basic, limits: tuple, at: dict) -> sp.Expr:
    """Σ over `limits` (at concrete sizes) of `term` where `condition` holds, one term at a time."""
    ranges = [(index, int(sp.sympify(high, strict=True).xreplace(at))) for index, _, high in limits]
    total = sp.S.Zero
    for point in itertools.product(*(range(high + 1) for _, high in ranges)):
        values = {**at, **{index: value for (index, _), value in zip(ranges, point)}}
        if condition.xreplace(values) is sp.true:
            value = sp.piecewise_fold(term.xreplace(values))
            total += value.args[0][0] if isinstance(value, sp.Piecewise) and value.args[0][1] is sp.true else value
    return total


@lru_cache(maxsize=1)
def avgpool() -> IndexedDerivation:
    """AvgPool2D's δ to its input, derived from `avgpool_definition` (a conv with kernel 1/(k_h·k_w))."""
    definition = avgpool_definition()
    raw = _avg_input(definition)
    term, cond = _split(raw)
    return IndexedDerivation(definition, (), sp.Eq(DX[n, c, h, w], _plain(term), evaluate=False), _plain(cond))


def _avg_input(definition: sp.Eq) -> sp.Expr:
    """Reverse mode for pooling: the output entries are (n, c, i, j), the channel passes through."""
    local = sp.diff(definition.rhs, X[_N, _C, h, w])
    inner = local if isinstance(local, sp.Sum) else None
    body = DZ[n, c, i, j] * (inner.function if inner is not None else local)
    limits = [(n, 0, N - 1), (c, 0, C - 1), (i, 0, HO - 1), (j, 0, WO - 1)] + list(inner.limits if inner else [])
    for index in (n, c, u, v):
        (limit,) = [lim for lim in limits if lim[0] == index]
        limits.remove(limit)
        body = _in_range(sp.Sum(body, limit).doit())
    return sp.Sum(body, *limits)


def maxpool() -> IndexedDerivation:
    """MaxPool2D's δ to its input: each window's δ goes to its first maximum (u*, v*), row-major."""
    route = Iverson(sp.Eq(h, i * SH + ARG_U[n, c, i, j], evaluate=False)) * \
        Iverson(sp.Eq(w, j * SW + ARG_V[n, c, i, j], evaluate=False))
    dx = sp.Eq(DX[n, c, h, w], sp.Sum(DZ[n, c, i, j] * route, (i, 0, HO - 1), (j, 0, WO - 1)), evaluate=False)
    return IndexedDerivation(maxpool_definition(), (), dx, sp.true)


def max_derivative() -> tuple[sp.Expr, sp.Expr]:
    """(d/da max(a, b), what SymPy gives for it): the step H(a − b), undefined where a = b."""
    a, b = sp.symbols("a b", real=True)
    return sp.Derivative(sp.Max(a, b), a), sp.diff(sp.Max(a, b), a)
