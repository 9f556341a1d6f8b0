"""The vocabulary of the derivation as people read it: tensors and the few matrix operations.

A `NamedArray` is a named array of the derivation (X, T, W2, z1, a1, dz1, ...). All SymPy
arithmetic on tensors is elementwise, exactly as in NumPy, so ``dz1*(1 - a1**2)`` means
δa ⊙ (1 − a²). The only non-elementwise operations are the classes below: a matrix
product, a transpose, sums over the examples (n) or the outputs (k), softmax, and the
partial-derivative name ∂L/∂W used on the left of a gradient formula.

Each class prints itself through SymPy's printers: ``_sympystr`` (ASCII, NumPy-like),
``_unicode`` (for `explain.printers.UnicodePrinter`), ``_latex``, and ``_numpycode`` so that
``sympy.lambdify`` turns any formula of the derivation into NumPy code that runs on
arrays of the right shapes.
"""
from __future__ import annotations

import re

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pretty.pretty_symbology import sub as _SUB
from sympy.printing.pretty.pretty_symbology import sup as _SUP

#: Printed inside a product in parentheses, inside a sum without (between Add and Mul).
_PRODUCT_LIKE = PRECEDENCE["Mul"] - 1
_NAME = re.compile(r"^(d?)([A-Za-z]+?)(\d+)((?:_\d+)?)$")
_GREEK = {"lambda": "λ", "delta": "δ", "alpha": "α"}


def subscript(text: str) -> str:
    """``12`` -> ``₁₂`` (characters without a subscript form are kept)."""
    return "".join(_SUB.get(ch, ch) for ch in text)


def superscript(text: str) -> str:
    """``2`` -> ``²``."""
    return "".join(_SUP.get(ch, ch) for ch in text)


def _parts(name: str) -> tuple[bool, str, str, int] | None:
    """``dz12`` -> (gradient, "z", "12", primes); ``a1_2`` is the second activation after dense1."""
    m = _NAME.match(name)
    if m is None:
        return None
    primes = int(m.group(4)[1:]) - 1 if m.group(4) else 0
    return bool(m.group(1)), m.group(2), m.group(3), primes


class NamedArray(sp.Symbol):
    """A named array of the derivation; arithmetic on it is elementwise.

    Its name is the buffer name of the generated code (``dz2``); people read it as
    δ₂ = ∂L/∂z₂ (a ``d`` before ``z`` is the textbook δ, before anything else ∂L/∂·).
    """

    def __new__(cls, name: str) -> "NamedArray":
        return super().__new__(cls, name, real=True)

    @property
    def is_gradient(self) -> bool:
        parts = _parts(self.name.partition("_via_")[0])
        return parts is not None and parts[0]

    @property
    def parts(self) -> tuple[bool, str, str, int] | None:
        """(gradient, base, index, primes) of the name, as every printer reads it; None for X, T, ..."""
        return _parts(self.name)

    @property
    def path(self) -> tuple["NamedArray", "NamedArray"] | None:
        """``da1_via_z2`` (the part of ∂L/∂a1 that comes through z2) as (da1, z2), else None."""
        head, via, tail = self.name.partition("_via_")
        return (NamedArray(head), NamedArray(tail)) if via and head and tail else None

    @property
    def layer_parts(self) -> tuple[bool, str, str, int] | None:
        """(gradient, base, index, primes) of a normalization layer's array (``dmu_ln1``), else None."""
        return _layer_array(self.name)

    def _unicode(self, printer: object) -> str:
        path = self.path
        if path is not None:
            return f"({path[0]._unicode(printer)} via {path[1]._unicode(printer)})"
        layer = _layer_array(self.name)
        if layer is not None:
            grad, base, index, primes = layer
            body = _UNICODE_BASE[base] + subscript(index) + "′" * primes + ("²" if base in ("var", "rvar") else "")
            return "∂L/∂" + body if grad else body
        parts = _parts(self.name)
        if parts is None:
            return _GREEK.get(self.name, self.name)
        grad, base, index, primes = parts
        body = _GREEK.get(base, base) + subscript(index) + "′" * primes
        if not grad:
            return body
        return "δ" + subscript(index) + "′" * primes if base == "z" else "∂L/∂" + body

    def _latex(self, printer: object) -> str:
        path = self.path
        if path is not None:
            return rf"\left({path[0]._latex(printer)}\right)_{{\mathrm{{via}}\,{path[1]._latex(printer)}}}"
        layer = _layer_array(self.name)
        if layer is not None:
            grad, base, index, primes = layer
            body = rf"{_LATEX_BASE[base]}{chr(39) * primes}_{{{index}}}" + ("^{2}" if base in ("var", "rvar") else "")
            return rf"\frac{{\partial L}}{{\partial {body}}}" if grad else body
        parts = _parts(self.name)
        if parts is None:
            return self.name
        grad, base, index, primes = parts
        mark = "'" * primes
        body = rf"{base}{mark}_{{{index}}}"
        if not grad:
            return body
        return rf"\delta{mark}_{{{index}}}" if base == "z" else rf"\frac{{\partial L}}{{\partial {body}}}"


#: How the arrays of a normalization or dropout layer read: mu_ln1 is μ₁ (LayerNorm 1's mean), var_bn2 is σ₂²,
#: xhat_ln1 is x̂₁, gamma_ln1 γ₁, rmean_bn1 the running mean μ̄₁, m1 is a dropout mask.
_LAYER_ARRAY = re.compile(r"^(d?)(mu|var|xhat|gamma|beta|rmean|rvar)_(?:ln|bn)(\d+)((?:_\d+)?)$")
_UNICODE_BASE = {"mu": "μ", "var": "σ", "xhat": "x̂", "gamma": "γ", "beta": "β", "rmean": "μ̄", "rvar": "σ̄"}
_LATEX_BASE = {"mu": r"\mu", "var": r"\sigma", "xhat": r"\hat{x}", "gamma": r"\gamma", "beta": r"\beta",
               "rmean": r"\bar{\mu}", "rvar": r"\bar{\sigma}"}


def _layer_array(name: str) -> tuple[bool, str, str, int] | None:
    """``dmu_ln1`` -> (gradient, "mu", "1", primes): an array of a normalization layer."""
    m = _LAYER_ARRAY.match(name)
    if m is None:
        return None
    return bool(m.group(1)), m.group(2), m.group(3), int(m.group(4)[1:]) - 1 if m.group(4) else 0


class Constant(sp.Symbol):
    """A layer's constant shown by its textbook letter: ε of a normalization, D its width, p of a dropout.

    The name (``eps_ln1``) is unique in a model, for code and for `sympy.lambdify`; people read
    ``ε``.  Its value is in the derivation's `constants`, as λ₁ and λ₂ are.
    """

    _shown: dict[str, tuple[str, str]] = {}

    def __new__(cls, name: str, unicode: str = "", latex: str = "", integer: bool = False) -> "Constant":
        """`integer`: a whole number >= 0 (a kernel size, a stride, a padding), else a positive number."""
        obj = super().__new__(cls, name, integer=True, nonnegative=True) if integer else \
            super().__new__(cls, name, positive=True)
        if unicode:
            cls._shown[name] = (unicode, latex or unicode)
        return obj

    def _unicode(self, printer: object) -> str:
        return self._shown.get(self.name, (self.name,))[0]

    def _latex(self, printer: object) -> str:
        return self._shown.get(self.name, (self.name, self.name))[1]


class _MatrixOp(sp.Function):
    """Base of the non-elementwise operations: they keep their arguments' order."""

    precedence = _PRODUCT_LIKE
    is_real = True

    def _wrap(self, printer: object, arg: sp.Basic) -> str:
        return printer.parenthesize(arg, PRECEDENCE["Mul"], strict=True)


class MatProd(_MatrixOp):
    """Matrix product A·B (NumPy ``A @ B``)."""

    nargs = 2

    def _sympystr(self, printer: object) -> str:
        return f"{self._wrap(printer, self.args[0])} @ {self._wrap(printer, self.args[1])}"

    def _unicode(self, printer: object) -> str:
        return f"{self._wrap(printer, self.args[0])}·{self._wrap(printer, self.args[1])}"

    def _latex(self, printer: object) -> str:
        return rf"{self._wrap(printer, self.args[0])} {self._wrap(printer, self.args[1])}"

    def _numpycode(self, printer: object) -> str:
        return f"({printer._print(self.args[0])}) @ ({printer._print(self.args[1])})"


class Transposed(_MatrixOp):
    """Aᵀ (NumPy ``A.T``)."""

    nargs = 1
    precedence = PRECEDENCE["Func"]

    def _arg(self, printer: object) -> str:
        return printer.parenthesize(self.args[0], PRECEDENCE["Func"], strict=True)

    def _sympystr(self, printer: object) -> str:
        return f"{self._arg(printer)}.T"

    def _unicode(self, printer: object) -> str:
        return f"{self._arg(printer)}ᵀ"

    def _latex(self, printer: object) -> str:
        return rf"{self._arg(printer)}^{{\top}}"

    def _numpycode(self, printer: object) -> str:
        return f"({printer._print(self.args[0])}).T"


class _Sum(_MatrixOp):
    """A sum over one index of the derivation; `index` names it, `axis` is NumPy's."""

    nargs = 1
    index = "n"
    axis = "0"
    precedence = PRECEDENCE["Func"]

    def _arg(self, printer: object) -> str:
        return printer.parenthesize(self.args[0], PRECEDENCE["Func"], strict=True)

    def _sympystr(self, printer: object) -> str:
        return f"sum{'_' if self.index else ''}{self.index}({printer._print(self.args[0])})"

    def _unicode(self, printer: object) -> str:
        arg = self._arg(printer)
        return f"Σ{subscript(self.index)}{arg}" if arg.startswith("(") else f"Σ{subscript(self.index)} {arg}"

    def _latex(self, printer: object) -> str:
        below = f"_{{{self.index}}}" if self.index else ""
        return rf"\sum{below} {self._arg(printer)}"

    def _numpycode(self, printer: object) -> str:
        return f"{printer._module_format('numpy.sum')}({printer._print(self.args[0])}, axis={self.axis})"


class SumN(_Sum):
    """Σₙ: the sum over the examples (rows) of a batch, e.g. ∂L/∂b = Σₙ δ."""


class SumK(_Sum):
    """Σₖ: the sum over the outputs of each example (a column, kept for broadcasting)."""

    index = "k"
    axis = "1, keepdims=True"


class SumNHW(_Sum):
    """Σₙₕw: the sum over the examples and the pixels of each channel of a batch of images (N, C, H, W)."""

    index = "n,h,w"
    axis = "(0, 2, 3), keepdims=True"

    def _unicode(self, printer: object) -> str:
        return f"Σ_{{n,h,w}}{self._arg(printer)}" if self._arg(printer).startswith("(") else \
            f"Σ_{{n,h,w}} {self._arg(printer)}"

    def _sympystr(self, printer: object) -> str:
        return f"sum_nhw({printer._print(self.args[0])})"

    def _mathml_presentation(self, printer: object) -> object:
        """∑ with n,h,w below, in a SymPy MathML printer's document (the HTML report's printer is one)."""
        dom = printer.dom
        sigma, below, under, row = (dom.createElement(tag) for tag in ("mo", "mi", "munder", "mrow"))
        sigma.appendChild(dom.createTextNode("∑"))
        below.appendChild(dom.createTextNode(self.index))
        under.appendChild(sigma)
        under.appendChild(below)
        row.appendChild(under)
        row.appendChild(printer.parenthesize(self.args[0], PRECEDENCE["Func"], strict=True))
        return row


class SumAll(_Sum):
    """Σ: the sum over every element (of a batch's losses, or of a weight matrix)."""

    index = ""
    axis = "None"


class softmax(sp.Function):  # noqa: N801  (SymPy function classes are lower case)
    """Row-wise softmax: exp(z)/Σₖ exp(z)."""

    nargs = 1
    is_real = True

    def _numpycode(self, printer: object) -> str:
        z = printer._print(self.args[0])
        exp, amax, total = (printer._module_format(f"numpy.{f}") for f in ("exp", "max", "sum"))
        e = f"{exp}(({z}) - {amax}({z}, axis=1, keepdims=True))"
        return f"({e}/{total}({e}, axis=1, keepdims=True))"


class Joined(_MatrixOp):
    """[A, B, ...]: arrays joined along the feature axis (NumPy ``np.concatenate(..., axis=1)``)."""

    precedence = PRECEDENCE["Atom"]

    def _sympystr(self, printer: object) -> str:
        return "[" + ", ".join(printer._print(a) for a in self.args) + "]"

    _unicode = _sympystr

    def _latex(self, printer: object) -> str:
        return r"\left[" + r",\ ".join(printer._print(a) for a in self.args) + r"\right]"

    def _numpycode(self, printer: object) -> str:
        inner = ", ".join(printer._print(a) for a in self.args)
        return f"{printer._module_format('numpy.concatenate')}(({inner},), axis=1)"


class Columns(_MatrixOp):
    """A[:, start:stop]: the columns of one part of a joined array (start and stop are integers)."""

    nargs = 3
    precedence = PRECEDENCE["Func"]

    def _arg(self, printer: object) -> str:
        return printer.parenthesize(self.args[0], PRECEDENCE["Func"], strict=True)

    def _sympystr(self, printer: object) -> str:
        return f"{self._arg(printer)}[:, {self.args[1]}:{self.args[2]}]"

    _unicode = _sympystr

    def _latex(self, printer: object) -> str:
        return rf"{self._arg(printer)}_{{[:,\,{self.args[1]}:{self.args[2]}]}}"

    def _numpycode(self, printer: object) -> str:
        return f"({printer._print(self.args[0])})[:, {self.args[1]}:{self.args[2]}]"


class Partial(sp.Function):
    """∂L/∂W as the name of a gradient (the left-hand side of a formula); never evaluated."""

    nargs = 2

    def _sympystr(self, printer: object) -> str:
        return f"d{printer._print(self.args[0])}/d{printer._print(self.args[1])}"

    def _unicode(self, printer: object) -> str:
        return f"∂{printer._print(self.args[0])}/∂{printer._print(self.args[1])}"

    def _latex(self, printer: object) -> str:
        return rf"\frac{{\partial {printer._print(self.args[0])}}}{{\partial {printer._print(self.args[1])}}}"


class Entry(sp.Symbol):
    """One number of the scalar view: ``W1_01`` is W⁽¹⁾₀₁ = params["dense1.W"][0, 1].

    Names are ``<base><layer>_<indices>`` (``x0`` and ``t0`` have neither layer nor ``_``);
    indices count from 0, as in NumPy, one digit each.
    """

    def __new__(cls, name: str) -> "Entry":
        return super().__new__(cls, name, real=True)

    def _split(self) -> tuple[str, str, str]:
        head, _, index = self.name.rpartition("_")
        if not head:
            m = re.match(r"^([A-Za-z]+)(\d*)$", self.name)
            return m.group(1), "", m.group(2)
        m = re.match(r"^([A-Za-z]+)(\d*)((?:_\d+)?)$", head)
        primes = int(m.group(3)[1:]) - 1 if m.group(3) else 0
        return m.group(1), m.group(2) + "′" * primes, index

    @property
    def parts(self) -> tuple[str, str, str]:
        """(base, layer with primes, index): ``W1_01`` -> ("W", "1", "01"), as every printer reads it."""
        return self._split()

    def _unicode(self, printer: object) -> str:
        base, layer, index = self._split()
        return base + (superscript(f"({layer})") if layer else "") + subscript(index)

    def _latex(self, printer: object) -> str:
        base, layer, index = self._split()
        return base + (f"^{{({layer})}}" if layer else "") + f"_{{{index}}}"


#: The loss, and the penalty strengths as symbols (l1 -> λ₁, l2 -> λ₂, the elastic-net names).
LOSS = sp.Symbol("L", real=True)
#: The loss of one example (l) and the batch mean (L), as the scalar view writes them.
LOSS_ONE, LOSS_MEAN = sp.Symbol("l", real=True), LOSS
LAMBDA = {"l1": sp.Symbol("lambda1", positive=True), "l2": sp.Symbol("lambda2", positive=True)}


def equation(lhs: sp.Basic, rhs: sp.Basic) -> sp.Eq:
    """lhs = rhs as SymPy's Eq, never evaluated (deciding whether two arrays are equal is slow and pointless here)."""
    return sp.Eq(lhs, rhs, evaluate=False)


def tensor(name: str) -> NamedArray:
    """The tensor named `name` (a buffer of the generated code)."""
    return NamedArray(name)


def is_tensor_valued(expr: sp.Basic) -> bool:
    """Whether `expr` is an array of the derivation (holds a tensor) rather than a number; an entry
    x[n, c, h, w] of an array is a number."""
    entries = {entry.base.label for entry in expr.atoms(sp.Indexed)}
    return bool(expr.atoms(NamedArray) - entries)
