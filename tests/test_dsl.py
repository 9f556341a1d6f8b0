"""The DSL checks shapes, names and losses when a model is declared; formulas are never evaluated."""
from __future__ import annotations

import pytest
import sympy as sp

import nncompile as nc
from nncompile import FormulaError, ModelError, nn
from nncompile.symbolic.parse import to_expr


def test_names_and_widths() -> None:
    model = nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10, name="head"), nn.Softmax(), input_dim=64,
                          loss=nn.CrossEntropy(), name="digits_mlp")
    assert [layer.name for layer in model.dense_layers] == ["dense1", "head"]
    assert model.widths == (32, 32, 10, 10) and model.output_dim == 10


def test_width_mismatch_names_layer_and_both_sizes() -> None:
    with pytest.raises(ModelError, match=r"dense2.*in_features=5.*receives 3"):
        nn.Sequential(nn.Dense(3), nn.Tanh(), nn.Dense(2, in_features=5), input_dim=4, loss=nn.MSE())


@pytest.mark.parametrize("build,message", [
    (lambda: nn.Dense(0), "positive integer"),
    (lambda: nn.Sequential(nn.Tanh(), input_dim=2), "at least one Dense"),
    (lambda: nn.Sequential(nn.Dense(2), "tanh", input_dim=2), "not an nncompile layer"),
    (lambda: nn.Sequential(nn.Dense(2), input_dim=0), "input_dim"),
    (lambda: nn.Sequential(nn.Dense(2, name="a"), nn.Dense(2, name="a"), input_dim=2), "used twice"),
    (lambda: nn.Sequential(nn.Dense(2, name="x; import os"), input_dim=2), "not a valid name"),
    (lambda: nn.Sequential(nn.Dense(2), input_dim=2, name="bad name"), "not a valid name"),
    (lambda: nn.Sequential(nn.Dense(2), input_dim=2, l2=-1), "l2"),
    (lambda: nn.Sequential(nn.Dense(2), nn.Softmax(), input_dim=2, loss=nn.SoftmaxCrossEntropy()), "logits"),
    (lambda: nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.CrossEntropy()), "Softmax"),
    (lambda: nn.Sequential(nn.Dense(2), input_dim=2, loss=nn.BinaryCrossEntropy()), "Sigmoid"),
    (lambda: nn.LeakyReLU(-0.5), "alpha"),
])
def test_bad_declarations_say_what_is_wrong(build: object, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build()


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "x.__class__", "(lambda: 1)()", "x[0]", "open('f')",
    "x**10**10", "2**2**2**2**2**2", "exec('1')", "x if x else 1", "[x]", "{x: 1}", "y", "",
    "x; import os", "f'{x}'", "(" * 500 + "x" + ")" * 500, "x +" * 2000,
])
def test_formula_strings_are_parsed_by_a_whitelist(text: str) -> None:
    with pytest.raises(FormulaError):
        nn.Activation(text, name="evil")


def test_formula_spellings() -> None:
    x = sp.Symbol("x", real=True)
    assert to_expr("x^2 + 3×x − 1", ("x",), "f") == x**2 + 3 * x - 1
    assert to_expr("2^3^2", ("x",), "f") == 512
    assert to_expr(lambda x: sp.tanh(x), ("x",), "f") == sp.tanh(x)
    assert to_expr(sp.Symbol("x") ** 2, ("x",), "f") == x**2


def test_callables_and_expressions_are_checked() -> None:
    with pytest.raises(FormulaError, match="unknown symbol"):
        nn.Activation(sp.Symbol("z") ** 2)
    with pytest.raises(FormulaError, match="cannot be compiled"):
        nn.Activation(sp.Function("f")(sp.Symbol("x")))
    with pytest.raises(FormulaError, match="failed"):
        nn.Activation(lambda x: __import__("math").exp(x))
    with pytest.raises(FormulaError, match="not finite"):
        nn.Activation("1/(x - x)")


@pytest.mark.parametrize("typo,suggestion", [("Tanhh", "Tanh"), ("relu", "ReLU"), ("Sequencial", "Sequential"),
                                             ("CrossEntropyy", "CrossEntropy")])
def test_a_misspelt_layer_name_suggests_the_right_one(tmp_path, typo: str, suggestion: str) -> None:
    with pytest.raises(AttributeError, match=rf"has no attribute '{typo}' \(did you mean nn.{suggestion}\?\)"):
        getattr(nn, typo)
    model = tmp_path / "typo.py"
    model.write_text(f"from nncompile import nn\nmodel = nn.Sequential(nn.Dense(2), nn.{typo}(), input_dim=2, "
                     "loss=nn.MSE())\n")
    with pytest.raises(nc.ModelError, match=rf"typo.py:2: AttributeError: .* \(did you mean nn.{suggestion}\?\)"):
        nc.load_model(model)


@pytest.mark.parametrize("formula,refused", [("x.real", "attribute access"), ("(lambda: x)()", "lambda"),
                                             ("x[0]", "indexing")])
def test_a_refused_formula_says_what_was_refused(formula: str, refused: str) -> None:
    with pytest.raises(FormulaError, match=refused):
        nn.Activation(formula, name="a")


@pytest.mark.parametrize("formula", ["x*((2^64)^64)^64", "x + (10^60)^60", "x*(1e-300)^64"])
def test_huge_constant_powers_are_refused_before_they_are_computed(formula: str) -> None:
    """Nested powers of constants grow doubly exponentially (((2^64)^64)^64 has 2^18 bits, one level
    more 2^24): they are refused from their size estimate, not after SymPy has built the number."""
    with pytest.raises(FormulaError, match=r"constant power is too large \(about 10\^\d+\)"):
        nn.Activation(formula, name="a")


@pytest.mark.parametrize("build,message", [
    (lambda: nn.Dropout(1.0), "Dropout p"),           # keep probability 0: x*mask/0
    (lambda: nn.Dropout(-0.1), "Dropout p"),
    (lambda: nn.LayerNorm(eps=0.0), "LayerNorm eps"),  # 1/sqrt(var + 0) of a constant row
    (lambda: nn.BatchNorm(eps=0.0), "BatchNorm eps"),
    (lambda: nn.BatchNorm(momentum=1.5), "BatchNorm momentum"),
])
def test_numeric_layer_settings_are_range_checked(build: object, message: str) -> None:
    """The bounds themselves: p in [0, 1) (p = 1 would divide by a keep probability of 0), eps > 0."""
    with pytest.raises(ModelError, match=message):
        build()
