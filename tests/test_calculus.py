"""Every derivative the compiler uses equals sympy.diff of the textbook formula."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nncompile.symbolic import calculus
from nncompile.symbolic import rules
from nncompile.symbolic.rules import A, T, X, Y
from nncompile.symbolic.functions import sigmoid, softplus, stabilize

POINTS = [-30.0, -3.7, -1.0, -0.2, 0.3, 1.0, 2.5, 30.0]
MODULES = [{"sigmoid": lambda u: 0.5 + 0.5 * np.tanh(0.5 * u), "softplus": lambda u: np.logaddexp(0, u),
            "Heaviside": lambda u, h=0.5: np.heaviside(u, h)}, "numpy"]


def _numeric(expr: sp.Expr, *symbols: sp.Symbol):
    return sp.lambdify(symbols, expr, modules=MODULES)


ALL = dict(rules.ACTIVATIONS, leaky_relu=rules.leaky_relu(0.1),
           mish=rules.ElementwiseFunction("mish", sp.sympify("x*tanh(log(1+exp(x)))").subs("x", X)),
           swish=rules.ElementwiseFunction("swish", X / (1 + sp.exp(-X))))


@pytest.mark.parametrize("name", sorted(ALL))
def test_activation_derivative_matches_sympy_diff(name: str) -> None:
    fn = ALL[name]
    local = calculus.activation(fn)
    reference = _numeric(sp.diff(fn.expr, X), X)
    evaluated = _numeric(local.evaluated, X, A)
    forward = _numeric(local.stable, X)
    for x in POINTS:
        a = forward(x)
        assert evaluated(x, a) == pytest.approx(float(reference(x)), rel=1e-12, abs=1e-14), (name, x)
        assert a == pytest.approx(float(_numeric(fn.expr, X)(x)), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name,expected", [("tanh", 1 - A**2), ("sigmoid", A * (1 - A)),
                                           ("relu", sp.Heaviside(A, 0)), ("identity", sp.S.One)])
def test_derivative_written_in_the_forward_output(name: str, expected: sp.Expr) -> None:
    assert sp.simplify(calculus.activation(rules.ACTIVATIONS[name]).evaluated - expected) == 0


def test_kink_policy_is_stated_and_used() -> None:
    relu = calculus.activation(rules.ACTIVATIONS["relu"])
    assert relu.kinks and "0" in relu.kinks[0]
    assert _numeric(relu.evaluated, X, A)(0.0, 0.0) == 0.0
    leaky = calculus.activation(rules.leaky_relu(0.25))
    assert _numeric(leaky.evaluated, X, A)(0.0, 0.0) == 0.25
    assert calculus.regulariser_gradient(rules.REGULARISERS["l1"]).subs(rules.W, 0) == 0


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "identity", "softplus"])
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy", "cross_entropy"])
def test_output_delta_matches_chain_rule(act: str, loss: str) -> None:
    fn, lf = rules.ACTIVATIONS[act], rules.LOSSES[loss]
    out = calculus.output_delta(fn, lf)
    composite = lf.expr.subs(Y, fn.expr)
    reference = _numeric(sp.diff(composite, X), X, T)
    delta = _numeric(out.delta, X, A, T)
    value = _numeric(out.value, X, A, T)
    forward = _numeric(fn.expr, X)
    points = [p / 10 for p in POINTS] if loss != "mse" else POINTS
    for x in points:
        for t in (0.0, 0.3, 1.0):
            a = forward(x)
            if loss != "mse" and not 0 < a < 1:
                continue
            assert delta(x, a, t) == pytest.approx(float(reference(x, t)), rel=1e-9, abs=1e-12)
            assert value(x, a, t) == pytest.approx(float(_numeric(composite, X, T)(x, t)), rel=1e-9, abs=1e-12)


def test_sigmoid_cross_entropy_simplifies_to_p_minus_t() -> None:
    out = calculus.output_delta(rules.ACTIVATIONS["sigmoid"], rules.LOSSES["binary_cross_entropy"])
    assert sp.simplify(out.delta - (A - T)) == 0
    assert not out.value.has(sp.log), "the loss must be evaluated via softplus, never log(sigmoid)"
    assert any("softplus" in r for r in out.rewrites)


def test_stability_rewrites() -> None:
    assert stabilize(1 / (1 + sp.exp(-X)))[0] == sigmoid(X)
    assert stabilize(sp.log(1 + sp.exp(X)))[0] == softplus(X)
    expr, fired = stabilize(sp.log(1 - 1 / (1 + sp.exp(-X))))
    assert expr == -softplus(X) and len(fired) == 2
    stable = _numeric(stabilize(X * sp.exp(X) / (1 + sp.exp(X)))[0], X)
    assert np.isfinite(stable(1000.0)) and stable(1000.0) == pytest.approx(1000.0)
