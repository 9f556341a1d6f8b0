"""SymPy's printers, extended for the derivation's notation (see `notation`).

Four printers, one per output style, each a small subclass of SymPy's own:
- `TextPrinter` (StrPrinter): ASCII, NumPy-like (``dz1 = (dz2 @ W2.T)*(1 - a1**2)``);
- `UnicodePrinter` (StrPrinter): one line of mathematics (``δ₁ = (δ₂·W₂ᵀ) ⊙ (1 − a₁²)``);
- `LatexPrinter`: LaTeX that also renders with matplotlib's mathtext (no environments);
- `MathMLPrinter` (presentation MathML): what browsers render natively, for the HTML report.
All four write sums with positive terms first (``a2 - T``, not ``-T + a2``), keep the
factor order a formula was built with, and print floats short (0.01, not 0.0100000000).
"""
from __future__ import annotations

import html
from xml.dom.minidom import Document, Element

import sympy as sp
from sympy.printing.latex import LatexPrinter as _SympyLatexPrinter
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.str import StrPrinter

from ..symbolic.notation import Constant, Entry, NamedArray, is_tensor_valued, subscript, superscript

_SETTINGS = {"order": "none", "full_prec": False}


def _positive_first(terms: list) -> list:
    return sorted(terms, key=lambda t: bool(t.could_extract_minus_sign()))


def _split_mul(expr: sp.Mul) -> tuple[sp.Expr, list, list]:
    """A product as (rational coefficient, numerator factors, denominator factors)."""
    coeff, num, den = sp.S.One, [], []
    for f in expr.args:
        if f.is_Rational:
            coeff *= f
        elif f.is_Pow and f.exp.is_Rational and f.exp.is_negative:
            den.append(f.base if f.exp == -1 else sp.Pow(f.base, -f.exp, evaluate=False))
        else:
            num.append(f)
    return coeff, num, den


def _kink_free_heaviside(expr: sp.Heaviside) -> bool:
    return len(expr.args) == 2 and expr.args[1] == 0


class TextPrinter(StrPrinter):
    """ASCII formulas that read like NumPy: ``*`` and ``**`` elementwise, ``@`` a matrix product."""

    _default_settings = {**StrPrinter._default_settings, **_SETTINGS}

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list:
        return _positive_first(super()._as_ordered_terms(expr, order))

    def _print_Equality(self, expr: sp.Eq) -> str:
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        var = self._print(expr.variables[0])
        return f"d/d{var} {self._print(expr.expr)}"

    def _print_Constant(self, expr: Constant) -> str:
        """A layer's constant by its letter: eps, D, p (its unique name is for code and lambdify)."""
        return expr.name.split("_")[0]

    def _print_Sum(self, expr: sp.Sum) -> str:
        """sum_{c,p,q}(...) over arrays' indices (their ranges are the arrays' shapes); SymPy's Sum(...)
        elsewhere (the scalar view)."""
        if not _over_arrays(expr):
            return super()._print_Sum(expr)
        return f"sum_{{{','.join(self._print(limit[0]) for limit in expr.limits)}}}({self._print(expr.function)})"

    def _print_And(self, expr: sp.And) -> str:
        return " and ".join(self.parenthesize(a, PRECEDENCE["And"]) for a in expr.args)


class UnicodePrinter(StrPrinter):
    """One-line Unicode mathematics: subscripts, superscripts, ·, ⊙, −, ᵀ, Σ, ∂."""

    printmethod = "_unicode"
    _default_settings = {**StrPrinter._default_settings, **_SETTINGS}

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        from sympy.printing.pretty.pretty_symbology import pretty_symbol
        return pretty_symbol(expr.name)

    def _print_Equality(self, expr: sp.Eq) -> str:
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        var = self._print(expr.variables[0])
        return f"d/d{var} {self._print(expr.expr)}"

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> str:
        out = ""
        for i, term in enumerate(_positive_first(list(expr.args))):
            negative = term.could_extract_minus_sign()
            text = self.parenthesize(-term if negative else term, PRECEDENCE["Add"], strict=False)
            out += ("−" if negative else "") + text if i == 0 else (" − " if negative else " + ") + text
        return out

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.as_coeff_Mul()[0] < 0:
            return "−" + self.parenthesize(-expr, PRECEDENCE["Mul"], strict=True)
        coeff, num, den = _split_mul(expr)
        if coeff.q != 1:
            den.insert(0, sp.Integer(coeff.q))
        join = " ⊙ " if sum(is_tensor_valued(f) for f in num) >= 2 else "·"
        top = join.join(self.parenthesize(f, PRECEDENCE["Mul"], strict=False) for f in num)
        if coeff.p != 1 or not num:  # a number scales the product: 2·(a ⊙ b), not 2 ⊙ a ⊙ b
            top = f"{coeff.p}·{top}" if num else str(coeff.p)
        if not den:
            return top
        bottom = "·".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=False) for f in den)
        if len(den) > 1:
            bottom = f"({bottom})"
        return f"{top}/{bottom}"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp == sp.S.Half:
            return f"√{self.parenthesize(base, PRECEDENCE['Pow'], strict=True)}"
        if exp.is_Rational and exp.is_negative:
            inverse = base if exp == -1 else sp.Pow(base, -exp, evaluate=False)
            return f"1/{self.parenthesize(inverse, PRECEDENCE['Mul'], strict=True)}"
        if exp.is_Integer and exp > 1:
            if isinstance(base, sp.Function) and not isinstance(base, sp.Heaviside) and len(base.args) == 1:
                return f"{type(base).__name__}{superscript(str(exp))}({self._print(base.args[0])})"
            text = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
            return (f"({text})" if isinstance(base, Entry) else text) + superscript(str(exp))
        return f"{self.parenthesize(base, PRECEDENCE['Pow'], strict=True)}^" \
               f"{self.parenthesize(exp, PRECEDENCE['Pow'], strict=True)}"

    def _print_sigmoid(self, expr: sp.Expr) -> str:
        return f"σ({self._print(expr.args[0])})"

    def _print_Sum(self, expr: sp.Sum) -> str:
        """Σₙ(...); over the indices of named arrays, Σ_{c,p,q}(...) unless every index has a subscript form."""
        indices = [self._print(limit[0]) for limit in expr.limits]
        below = subscript("".join(indices))
        if _over_arrays(expr) and any(ch == sub for ch, sub in zip("".join(indices), below)):
            below = "_{" + ",".join(indices) + "}"
        return f"Σ{below}({self._print(expr.function)})"

    def _print_And(self, expr: sp.And) -> str:
        return " ∧ ".join(self.parenthesize(a, PRECEDENCE["And"]) for a in expr.args)

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        return f"{self._print(expr.base.label)}[{', '.join(self._print(i) for i in expr.indices)}]"

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        return "δ" + subscript("".join(self._print(i) for i in expr.args))

    def _print_exp(self, expr: sp.exp) -> str:
        return f"exp({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        return f"H({self._print(expr.args[0])})" if _kink_free_heaviside(expr) else super()._print_Function(expr)

    def _print_Max(self, expr: sp.Max) -> str:
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Min(self, expr: sp.Min) -> str:
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Abs(self, expr: sp.Abs) -> str:
        return f"|{self._print(expr.args[0])}|"

    def _print_Relational(self, expr: sp.core.relational.Relational) -> str:
        op = {"<=": "≤", ">=": "≥", "!=": "≠", "==": "="}.get(expr.rel_op, expr.rel_op)
        return f"{self._print(expr.lhs)} {op} {self._print(expr.rhs)}"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        parts = [self._print(e) if c is sp.true else f"{self._print(e)} if {self._print(c)}" for e, c in expr.args]
        return "{" + "; ".join(p if " if " in p else f"{p} otherwise" for p in parts) + "}"

    def _print_Float(self, expr: sp.Float) -> str:
        return super()._print_Float(expr).replace("-", "−")


class LatexPrinter(_SympyLatexPrinter):
    """LaTeX with ⊙ for elementwise products of arrays; no environments, so mathtext renders it."""

    _default_settings = {**_SympyLatexPrinter._default_settings, **_SETTINGS}

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list:
        return _positive_first(super()._as_ordered_terms(expr, order))

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.as_coeff_Mul()[0] < 0:
            return "- " + self.parenthesize(-expr, PRECEDENCE["Mul"], strict=True)
        if sum(is_tensor_valued(f) for f in expr.args) < 2:
            return super()._print_Mul(expr)
        coeff, num, den = _split_mul(expr)
        top = r" \odot ".join(self._factor(f) for f in num)
        if coeff.p != 1:
            top = f"{coeff.p} {top}"
        if coeff.q != 1:
            den.insert(0, sp.Integer(coeff.q))
        if not den:
            return top
        return rf"\frac{{{top}}}{{{' '.join(self._factor(f) for f in den)}}}"

    def _print_Sum(self, expr: sp.Sum) -> str:
        """\\sum_{c,p,q} (...) over arrays' indices (mathtext has no \\substack for their ranges)."""
        if not _over_arrays(expr):
            return super()._print_Sum(expr)
        indices = ",".join(self._print(limit[0]) for limit in expr.limits)
        return rf"\sum_{{{indices}}} \left({self._print(expr.function)}\right)"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        """x[n, c, h, w] with brackets for an entry of a named array (whose name may carry a subscript)."""
        if not isinstance(expr.base.label, NamedArray):
            return super()._print_Indexed(expr)
        return rf"{self._print(expr.base.label)}\left[{', '.join(self._print(i) for i in expr.indices)}\right]"

    def _factor(self, f: sp.Expr) -> str:
        text = self._print(f)
        return rf"\left({text}\right)" if precedence(f) < PRECEDENCE["Mul"] else text

    def _hprint_Function(self, func: str) -> str:
        if "_" in func:  # an activation's name such as leaky_relu, not a subscript
            return r"\operatorname{" + func.replace("_", r"\_") + "}"
        return super()._hprint_Function(func)

    def _print_Heaviside(self, expr: sp.Heaviside, exp: object = None) -> str:
        if not _kink_free_heaviside(expr):
            return super()._print_Heaviside(expr, exp)
        tex = rf"H\left({self._print(expr.args[0])}\right)"
        return f"{tex}^{{{exp}}}" if exp else tex

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        parts = []
        for e, c in expr.args:
            cond = r"\mathrm{otherwise}" if c is sp.true else rf"\mathrm{{if}}\ {self._print(c)}"
            parts.append(rf"{self._print(e)}\ {cond}")
        return r"\left\{" + r",\ ".join(parts) + r"\right."


class MathMLPrinter(MathMLPresentationPrinter):
    """Presentation MathML in the unicode printer's notation: δₖ, ⊙, ·, ᵀ, Σₙ, ∂L/∂W as a fraction.

    Only MathML Core elements (no mfenced), text escaped (SymPy's own printer writes ``<``
    unescaped), characters rather than named entities, so the markup is also well-formed XML.
    """

    _default_settings = {**MathMLPresentationPrinter._default_settings, "order": "none"}

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__(settings)
        dom = self.dom
        self.dom.createTextNode = lambda data: Document.createTextNode(dom, html.unescape(data))

    def doprint(self, expr: sp.Basic) -> str:
        return self._print(expr).toxml()

    def _node(self, tag: str, *children: Element, text: str | None = None) -> Element:
        node = self.dom.createElement(tag)
        if text is not None:
            node.appendChild(self.dom.createTextNode(text))
        for child in children:
            node.appendChild(child)
        return node

    def _row(self, *children: Element) -> Element:
        return self._node("mrow", *children)

    def _joined(self, items: list[Element], sep: str) -> Element:
        out = [items[0]]
        for item in items[1:]:
            out += [self._node("mo", text=sep), item]
        return out[0] if len(out) == 1 else self._row(*out)

    def _applied(self, name: Element | str, *args: sp.Basic) -> Element:
        head = self._node("mi", text=name) if isinstance(name, str) else name
        return self._row(head, self._paren_comma_separated(*args))

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list:
        return _positive_first(list(expr.args))

    def _print_NamedArray(self, expr: NamedArray) -> Element:
        path = expr.path
        if path is not None:      # da1_via_z2: the part of ∂L/∂a₁ that comes through z₂
            return self._row(self._node("mo", text="("), self._print(path[0]), self._node("mtext", text=" via "),
                             self._print(path[1]), self._node("mo", text=")"))
        layer = expr.layer_parts
        if layer is not None:     # mu_ln1, var_bn2, xhat_ln1, gamma_ln1, rmean_bn1, ...: a normalization's arrays
            grad, base, index, primes = layer
            return self._partial(self._indexed(_layer_letter(self, base), index, primes,
                                               "2" if base in ("var", "rvar") else None), grad)
        parts = expr.parts
        if parts is None:
            return self._print_Symbol(expr)
        grad, base, index, primes = parts
        letter = "δ" if grad and base == "z" else _GREEK_LETTERS.get(base, base)
        return self._partial(self._indexed(self._node("mi", text=letter), index, primes), grad and base != "z")

    def _indexed(self, letter: Element, index: str, primes: int, power: str | None = None) -> Element:
        """letter with its layer index below and primes (or a power) above."""
        marks = ("′" * primes) + (power or "")
        if not marks:
            return self._node("msub", letter, self._node("mn", text=index))
        return self._node("msubsup", letter, self._node("mn", text=index),
                          self._node("mn" if power and not primes else "mo", text=marks))

    def _partial(self, body: Element, gradient: bool) -> Element:
        """∂L/∂body as a fraction when `gradient`, else body."""
        if not gradient:
            return body
        return self._node("mfrac", self._row(self._node("mo", text="∂"), self._node("mi", text="L")),
                          self._row(self._node("mo", text="∂"), body))

    def _print_Constant(self, expr: Constant) -> Element:
        """ε, D, p: a layer's constant by its letter (its unique name is for code and lambdify)."""
        return self._node("mi", text=expr._unicode(self))

    def _print_Entry(self, expr: Entry) -> Element:
        base, layer, index = expr.parts
        sup = [self._node("mrow", *self._text_row(f"({layer})"))] if layer else []
        return self._node("msubsup" if layer else "msub", self._node("mi", text=base),
                          self._node("mn", text=index), *sup)

    def _text_row(self, text: str) -> list[Element]:
        return [self._node("mo" if ch in "()" else "mn", text=ch) for ch in text]

    def _print_MatProd(self, expr: sp.Expr) -> Element:
        return self._joined([self.parenthesize(a, PRECEDENCE["Mul"], strict=True) for a in expr.args], "·")

    def _print_Transposed(self, expr: sp.Expr) -> Element:
        return self._node("msup", self.parenthesize(expr.args[0], PRECEDENCE["Func"], strict=True),
                          self._node("mi", text="⊤"))

    def _print_SumN(self, expr: sp.Expr) -> Element:
        """Σₙ, Σₖ or Σ over every element (SymPy dispatches on the class's own name only)."""
        sigma = self._node("mo", text="∑")
        if expr.index:
            sigma = self._node("munder", sigma, self._node("mi", text=expr.index))
        return self._row(sigma, self.parenthesize(expr.args[0], PRECEDENCE["Func"], strict=True))

    _print_SumK = _print_SumAll = _print_SumN

    def _print_Partial(self, expr: sp.Expr) -> Element:
        top, bottom = (self._row(self._node("mo", text="∂"), self._print(a)) for a in expr.args)
        return self._node("mfrac", top, bottom)

    def _print_sigmoid(self, expr: sp.Expr) -> Element:
        return self._applied("σ", *expr.args)

    def _print_Derivative(self, expr: sp.Derivative) -> Element:
        var = self._row(self._node("mi", text="d"), self._print(expr.variables[0]))
        return self._row(self._node("mfrac", self._node("mi", text="d"), var), self._print(expr.expr))

    def _print_Add(self, expr: sp.Add, order: str | None = None) -> Element:
        items: list[Element] = []
        for i, term in enumerate(_positive_first(list(expr.args))):
            negative = term.could_extract_minus_sign()
            if i or negative:
                items.append(self._node("mo", text="−" if negative else "+"))
            items.append(self.parenthesize(-term if negative else term, PRECEDENCE["Add"]))
        return self._row(*items)

    def _print_Mul(self, expr: sp.Mul) -> Element:
        if expr.as_coeff_Mul()[0] < 0:
            return self._row(self._node("mo", text="−"), self.parenthesize(-expr, PRECEDENCE["Mul"], strict=True))
        coeff, num, den = _split_mul(expr)
        if coeff.q != 1:
            den.insert(0, sp.Integer(coeff.q))
        if coeff.p != 1 or not num:
            num.insert(0, sp.Integer(coeff.p))
        join = "⊙" if sum(is_tensor_valued(f) for f in num) >= 2 else "·"
        if not den:
            return self._joined([self.parenthesize(f, PRECEDENCE["Mul"]) for f in num], join)
        top = num[0] if len(num) == 1 else None
        top_node = self._print(top) if top is not None else \
            self._joined([self.parenthesize(f, PRECEDENCE["Mul"]) for f in num], join)
        bottom = self._joined([self.parenthesize(f, PRECEDENCE["Mul"]) for f in den], "·")
        return self._node("mfrac", top_node, bottom)

    def _print_Pow(self, expr: sp.Pow) -> Element:
        base, exp = expr.args
        if exp == sp.S.Half:
            return self._node("msqrt", self._print(base))
        if exp.is_Rational and exp.is_negative:
            inverse = base if exp == -1 else sp.Pow(base, -exp, evaluate=False)
            return self._node("mfrac", self._node("mn", text="1"), self._print(inverse))
        if exp.is_Integer and exp > 1 and isinstance(base, sp.Function) and not isinstance(base, sp.Heaviside) \
                and len(base.args) == 1:
            head = self._print(base).firstChild  # the function's name, as its own printer writes it
            return self._row(self._node("msup", head, self._print(exp)),
                             self._paren_comma_separated(*base.args))
        shown = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
        if isinstance(base, Entry):
            shown = self._row(self._node("mo", text="("), shown, self._node("mo", text=")"))
        return self._node("msup", shown, self._print(exp))

    def _print_exp(self, expr: sp.exp) -> Element:
        return self._applied("exp", *expr.args)

    def _print_Heaviside(self, expr: sp.Heaviside) -> Element:
        return self._applied("H", expr.args[0]) if _kink_free_heaviside(expr) else self._applied("H", *expr.args)

    def _print_Piecewise(self, expr: sp.Piecewise) -> Element:
        rows = []
        for e, c in expr.args:
            cond = self._node("mtext", text="otherwise") if c is sp.true else \
                self._row(self._node("mtext", text="if\u00a0"), self._print(c))
            rows.append(self._node("mtr", self._node("mtd", self._print(e)), self._node("mtd", cond)))
        return self._row(self._node("mo", text="{"), self._node("mtable", *rows))

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> Element:
        return self._node("msub", self._node("mi", text="δ"), self._row(*(self._print(i) for i in expr.args)))

    def _print_Indexed(self, expr: sp.Indexed) -> Element:
        index = self._joined([self._print(i) for i in expr.indices], ",")
        return self._node("msub", self._print(expr.base.label), index)

    def _print_Float(self, expr: sp.Float) -> Element:
        """Short, as the text printer writes it; 1e-8 as 10⁻⁸, 2.5e-8 as 2.5·10⁻⁸."""
        mantissa, _, exponent = _TEXT.doprint(expr).partition("e")
        number = self._node("mn", text=mantissa.replace("-", "−"))
        if not exponent:
            return number
        power = self._node("msup", self._node("mn", text="10"),
                           self._node("mn", text=str(int(exponent)).replace("-", "−")))
        return power if float(mantissa) == 1 else self._row(number, self._node("mo", text="·"), power)

    def _print_Max(self, expr: sp.Max) -> Element:
        return self._applied("max", *expr.args)

    def _print_Min(self, expr: sp.Min) -> Element:
        return self._applied("min", *expr.args)


_GREEK_LETTERS = {"lambda": "λ", "delta": "δ", "alpha": "α"}


def _over_arrays(expr: sp.Sum) -> bool:
    """Whether a sum runs over the indices of named arrays (a layer's entries, x[n, c, h, w])."""
    return any(isinstance(entry.base.label, NamedArray) for entry in expr.atoms(sp.Indexed))


_TEXT, _UNICODE, _LATEX, _MATHML = TextPrinter(), UnicodePrinter(), LatexPrinter(), MathMLPrinter()
PRINTERS = {"text": _TEXT, "unicode": _UNICODE, "latex": _LATEX, "mathml": _MATHML}


def show(expr: sp.Basic, style: str) -> str:
    """`expr` in `style`: "text", "unicode", "latex" or "mathml" (presentation markup, no <math> around it)."""
    return PRINTERS[style].doprint(expr)


def mathml_chain(exprs: tuple[sp.Basic, ...], display: bool = False) -> str:
    """A chain e0 = e1 = ... as one <math> element (``display="block"`` when `display`)."""
    inner = "<mo>=</mo>".join(show(e, "mathml") for e in exprs)
    block = ' display="block"' if display else ""
    return f"<math{block}><mrow>{inner}</mrow></math>"


def _layer_letter(printer: MathMLPrinter, base: str) -> Element:
    """μ, σ, x̂, γ, β, μ̄, σ̄: the letters of a normalization layer's arrays."""
    plain = {"mu": "μ", "var": "σ", "gamma": "γ", "beta": "β"}
    if base in plain:
        return printer._node("mi", text=plain[base])
    letter, accent = {"xhat": ("x", "^"), "rmean": ("μ", "¯"), "rvar": ("σ", "¯")}[base]
    node = printer._node("mover", printer._node("mi", text=letter), printer._node("mo", text=accent))
    node.setAttribute("accent", "true")
    return node
