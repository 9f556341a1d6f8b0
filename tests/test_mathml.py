"""The MathML printer: well-formed MathML Core in the derivation's notation, and the same mathematics.

Every formula of every example's derivation (and of a scalar view, and of random scalar
expressions) is printed as MathML, read back by `mathml_reader` the way the rendered
formula reads, evaluated on random arrays of the buffers' shapes, and compared with
`sympy.lambdify` of the SymPy expression it came from.
"""
from __future__ import annotations

import math
from xml.dom.minidom import parseString

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nncompile.derive.backprop import derive
from nncompile.dsl.modelfile import load_model
from nncompile.explain import printers
from nncompile.explain.formulas import Formulas
from nncompile.explain.printers import MathMLPrinter, mathml_chain, show
from nncompile.explain.render import Row, document, scalar_document
from nncompile.symbolic.functions import sigmoid, softplus
from nncompile.symbolic.notation import Entry, NamedArray, Partial, SumAll, SumN, Transposed, tensor

from mathml_reader import evaluate
from strategies import examples

#: Presentation elements of MathML Core, the ones Chromium lays out (no mfenced).
CORE = {"math", "mi", "mn", "mo", "mtext", "mspace", "ms", "mrow", "mfrac", "msqrt", "mroot", "mstyle", "merror",
        "mpadded", "mphantom", "msub", "msup", "msubsup", "munder", "mover", "munderover", "mmultiscripts",
        "mprescripts", "none", "mtable", "mtr", "mtd", "semantics", "annotation", "annotation-xml"}
MODELS = ("digits", "xor", "kinks", "mish", "xor221", "resmlp", "digits_regularized")
LAMBDIFY = [{"sigmoid": lambda x: 1 / (1 + np.exp(-x)), "softplus": lambda x: np.logaddexp(0, x),
             "relu": lambda x: np.maximum(x, 0)}, "numpy"]
N = 4


def _formulas(name: str) -> Formulas:
    model, _ = load_model(f"examples/{name}.py")
    return Formulas.of(derive(model))


def _rows(doc: object) -> list[Row]:
    return [item for s in doc.sections for item in s.items if isinstance(item, Row)]


def _readable(expr: sp.Basic) -> bool:
    """Formulas a reader can evaluate: not a name (∂L/∂W, d/dz f), no sum over an index, no unnamed function."""
    return not (isinstance(expr, (Partial, sp.Derivative)) or expr.has(sp.Sum, sp.KroneckerDelta, sp.Indexed)
                or expr.atoms(sp.core.function.AppliedUndef))


def _values(expr: sp.Basic, program: object, rng: np.random.Generator, aliases: dict | None = None) -> dict:
    values = {}
    for sym in expr.free_symbols:
        name = (aliases or {}).get(sym.name, sym.name)     # da1_via_z2: the buffer that holds that part of δ
        buf = program.buffers.get(name) if program is not None else None
        if isinstance(sym, NamedArray) and buf is not None:
            shape = tuple(N if d == "N" else int(d) for d in buf.shape)
            values[sym.name] = rng.uniform(0.1, 0.9, shape)
        else:
            values[sym.name] = float(N) if sym.name == "N" else rng.uniform(0.1, 0.9)
    return values


def _agree(expr: sp.Basic, program: object, rng: np.random.Generator, aliases: dict | None = None) -> None:
    values = _values(expr, program, rng, aliases)
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    expected = sp.lambdify(symbols, expr, modules=LAMBDIFY)(*(values[s.name] for s in symbols))
    read = evaluate(show(expr, "mathml"), values)
    np.testing.assert_allclose(read, np.broadcast_to(expected, np.shape(read)), rtol=1e-10, atol=1e-12,
                               err_msg=f"{show(expr, 'unicode')} reads back differently from its MathML")


@pytest.mark.parametrize("name", MODELS)
def test_every_formula_reads_back_as_the_same_mathematics(name: str) -> None:
    formulas = _formulas(name)
    program = formulas.derivation.program
    rng = np.random.default_rng(0)
    checked = 0
    for row in _rows(document(formulas)):
        markup = mathml_chain(row.exprs)
        dom = parseString(markup)
        tags = {n.tagName for n in dom.getElementsByTagName("*")}
        assert tags <= CORE, f"non-Core MathML elements {tags - CORE} in {row.label}"
        assert "&" not in markup.replace("&lt;", "").replace("&gt;", "").replace("&amp;", "")
        for expr in row.exprs:
            if _readable(expr):
                _agree(expr, program, rng, formulas.derivation.aliases)
                checked += 1
    assert checked >= 12


def test_the_scalar_view_reads_back_too() -> None:
    scalar = _formulas("xor221").scalar()
    rng = np.random.default_rng(1)
    rows = _rows(scalar_document(scalar))
    readable = [e for row in rows for e in row.exprs if _readable(e)]
    assert len(readable) >= 20
    for expr in readable:
        _agree(expr, None, rng)


_x, _y = sp.Symbol("x", real=True), sp.Symbol("y", real=True)
_leaves = st.sampled_from([_x, _y, sp.Integer(2), sp.Integer(3), sp.Rational(1, 2), sp.Float(0.25),
                           sp.Float(1.5e-8), sp.Integer(-1)])


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    pair = st.tuples(children, children)
    return st.one_of(pair.map(lambda p: p[0] + p[1]), pair.map(lambda p: p[0] - p[1]),
                     pair.map(lambda p: p[0] * p[1]), pair.map(lambda p: p[0] / (1 + p[1] ** 2)),
                     children.map(lambda c: c ** 2), children.map(lambda c: c ** 3), children.map(sp.tanh),
                     children.map(lambda c: sp.exp(c / 4)), children.map(lambda c: sp.log(1 + c ** 2)),
                     children.map(lambda c: sigmoid(c)), children.map(lambda c: softplus(c)),
                     children.map(sp.Abs), children.map(lambda c: sp.sqrt(1 + c ** 2)), children.map(lambda c: -c),
                     children.map(lambda c: 1 / (2 + c ** 2)))


@settings(max_examples=examples(80), deadline=None)
@given(st.recursive(_leaves, _extend, max_leaves=8))
def test_random_expressions_read_back_as_printed(expr: sp.Expr) -> None:
    values = {"x": 0.37, "y": -1.21}
    with np.errstate(all="ignore"):
        expected = float(sp.lambdify((_x, _y), expr, modules=LAMBDIFY)(values["x"], values["y"]))
    assume(math.isfinite(expected) and abs(expected) < 1e100)     # towers of powers overflow: nothing to read
    assert float(evaluate(show(expr, "mathml"), values)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("expr, markup", [
    (NamedArray("dz1"), "<msub><mi>δ</mi><mn>1</mn></msub>"),
    (NamedArray("a1_2"), "<msubsup><mi>a</mi><mn>1</mn><mo>′</mo></msubsup>"),
    (Partial(sp.Symbol("L"), NamedArray("W2")),
     "<mfrac><mrow><mo>∂</mo><mi>L</mi></mrow><mrow><mo>∂</mo><msub><mi>W</mi><mn>2</mn></msub></mrow></mfrac>"),
    (Transposed(NamedArray("X")), "<msup><mi>X</mi><mi>⊤</mi></msup>"),
    (SumN(NamedArray("dz1")),
     "<mrow><munder><mo>∑</mo><mi>n</mi></munder><msub><mi>δ</mi><mn>1</mn></msub></mrow>"),
    (sp.Symbol("x") < 0, "<mrow><mi>x</mi><mo>&lt;</mo><mn>0</mn></mrow>"),
    (sp.Float(1e-8) * sp.Symbol("x"), "<mrow><msup><mn>10</mn><mn>−8</mn></msup><mo>·</mo><mi>x</mi></mrow>"),
    (Entry("W1_01"), "<msubsup><mi>W</mi><mn>01</mn><mrow><mo>(</mo><mn>1</mn><mo>)</mo></mrow></msubsup>"),
])
def test_notation(expr: sp.Basic, markup: str) -> None:
    assert show(expr, "mathml") == markup


def test_elementwise_products_of_arrays_are_circled_dots_and_sums_keep_their_signs() -> None:
    delta = _formulas("digits")["dense1"].delta
    text = show(delta.rhs, "mathml")
    assert "<mo>⊙</mo>" in text and "<mo>·</mo>" in text and "<mi>⊤</mi>" in text
    loss = show(-SumAll(tensor("T") * sp.log(tensor("p2"))) / sp.Symbol("N"), "mathml")
    assert loss.startswith("<mrow><mo>−</mo><mfrac><mrow><mo>∑</mo>")
    piecewise = show(sp.Piecewise((1, sp.Symbol("z") > 0), (0.1, True)), "mathml")
    assert piecewise.count("<mtr>") == 2 and "<mtext>otherwise</mtext>" in piecewise


def test_a_chain_is_one_math_element() -> None:
    chain = mathml_chain((NamedArray("z1"), NamedArray("X")), display=True)
    assert chain.startswith('<math display="block"><mrow>') and chain.count("<mo>=</mo>") == 1
    assert printers.PRINTERS["mathml"] is not None and isinstance(printers.PRINTERS["mathml"], MathMLPrinter)


def test_a_printer_that_drops_brackets_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: never parenthesize. δ₁ = (δ₂·W₂ᵀ) ⊙ (1 − a₁²) then reads as δ₂·W₂ᵀ ⊙ 1 − a₁²."""
    formulas = _formulas("digits")
    monkeypatch.setattr(MathMLPrinter, "parenthesize", lambda self, item, level, strict=False: self._print(item))
    with pytest.raises(AssertionError, match="reads back differently"):
        _agree(formulas["dense1"].delta.rhs, formulas.derivation.program, np.random.default_rng(0))


@pytest.mark.parametrize("text", ["x**-2", "1/sqrt(1 + x**2)", "(1 + y**2)**(-3/2)", "x**-3*y"])
def test_negative_powers_read_back_as_printed(text: str) -> None:
    """A negative power other than -1 is printed as 1 over the positive power (x^-2 as 1/x^2)."""
    x, y = sp.symbols("x y")
    expr = sp.sympify(text, locals={"x": x, "y": y})
    values = {"x": 0.37, "y": -1.21}
    expected = float(expr.subs(values))
    assert math.isfinite(expected)
    assert float(evaluate(show(expr, "mathml"), values)) == pytest.approx(expected, rel=1e-12)
