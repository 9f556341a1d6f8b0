"""The derivation of a functional model, as `derive` shows it, is right and reads as people learn it.

Every displayed formula (forward, the δ's of each path, their sums at fan-outs, each use of a
shared weight, the gradients) is evaluated with sympy.lambdify and must give the compiled
gradients; the text names each path; the scalar view of a small graph agrees too.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import nncompile as nc
from nncompile import nn
from nncompile.explain.scalar import LAMBDIFY_MODULES
from nncompile.symbolic.notation import LAMBDA

from dag_models import MODELS


def _evaluate(expr: sp.Expr, env: dict[str, np.ndarray]) -> np.ndarray:
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    return sp.lambdify(symbols, expr, modules="numpy")(*(env[s.name] for s in symbols))


def _regularized() -> nn.Model:
    """Every new layer at once: BatchNorm, Dropout, a skip connection, LayerNorm."""
    x = nn.Input(4)
    h = nn.ReLU()(nn.BatchNorm()(nn.Dense(5)(x)))
    h = nn.LayerNorm()(h + nn.Dropout(0.3)(nn.Tanh()(nn.Dense(5)(h))))
    return nn.Model(x, nn.Softmax()(nn.Dense(3)(h)), loss=nn.CrossEntropy(), l2=0.01, name="regularized")


DISPLAYED = {**MODELS, "regularized": _regularized}


@pytest.mark.parametrize("name", sorted(DISPLAYED))
def test_displayed_formulas_compute_the_compiled_gradients(name: str) -> None:
    """Forward rows, every step (each path, each sum), each use of a shared weight, a normalization's staged
    derivation and closed form, the gradients: evaluated as displayed, they give the compiled numbers."""
    from nncompile.derive.ir import DropoutMask
    from nncompile.gradcheck import random_batch
    from reference import dropout_mask
    prog = nc.compile(DISPLAYED[name]())
    rng = np.random.default_rng(0)
    params = {k: v + rng.normal(scale=0.4, size=v.shape) for k, v in prog.init_params(0).items()}
    X, Y = random_batch(prog, 6, 0)
    Xj, T = prog.prepare(X, Y)
    program, formulas = prog.derivation.program, prog.formulas
    env = {"X": Xj, "T": T, "N": float(len(Xj)), LAMBDA["l1"].name: prog.model.l1, LAMBDA["l2"].name: prog.model.l2}
    env.update({sym.name: value for sym, value in formulas.constants.items()})
    start = 0
    for buffer, shape in zip(program.inputs, program.input_shapes):
        env[buffer] = Xj[:, start:start + shape[0]]
        start += shape[0]
    env.update({spec.buffer: params[spec.name] for spec in program.params})
    for op in program.iter_ops():
        if isinstance(op, DropoutMask):   # the masks loss_and_grad draws with seed 0 outside a step
            p = next(layer.p for layer in prog.model.layers if layer.name == op.layer)
            env[op.out] = dropout_mask(0, 0, op.number, p, (len(Xj), program.buffers[op.out].shape[1]))
    for section in reversed(formulas.layers):
        for chain in section.forward:
            env[chain[0].name] = _evaluate(chain[-1], env)
    for lhs, rhs in formulas.loss.rows:
        if lhs == "where":
            env[rhs[0].name] = _evaluate(rhs[-1], env)
    expected_loss, expected = prog.loss_and_grad(params, X, Y, seed=0)
    np.testing.assert_allclose(_evaluate(formulas.loss.loss.rhs, env), expected_loss, rtol=1e-12)
    checked = set()
    for section in formulas.layers:
        for step in section.steps:
            env[step.lhs.name] = _evaluate(step.rhs, env)
        if section.delta is not None:
            np.testing.assert_allclose(_evaluate(section.delta.rhs, env), env[section.delta.lhs.name], rtol=1e-12,
                                       atol=1e-14)
        for label, (lhs, rhs) in section.rows:   # staged, then closed form: the same ∂L/∂x twice
            value = _evaluate(rhs, env)
            if label == "closed form":
                np.testing.assert_allclose(value, env[lhs.name], rtol=1e-10, atol=1e-13)
            env[lhs.name] = value
        for use in section.uses:
            env[use.lhs.name] = _evaluate(use.rhs, env)
        for param, eq in section.gradients.items():
            np.testing.assert_allclose(_evaluate(eq.rhs, env), expected[param], rtol=1e-10, atol=1e-12, err_msg=param)
            checked.add(param)
    assert checked == set(expected)


def test_fan_out_shows_one_term_per_named_path() -> None:
    formulas = nc.compile(MODELS["residual"]()).formulas
    text = formulas.render("unicode")
    assert "∂L/∂a₁ = (∂L/∂a₁ via h₁) + (∂L/∂a₁ via z₂)" in text
    assert "δ₁ = (∂L/∂h₁ + δ₂·W₂ᵀ) ⊙ (1 − a₁²)" in text
    assert "path 1: da1_via_h1 comes through add1, which computes h1 = a1 + a2" in text
    assert "path 2: da1_via_z2 comes through dense2, which computes z2 = a1 @ W2 + b2" in text
    assert "da1 = dh1 + da1_via_z2   [2 paths meet at a1]" in text      # the code that sums them
    plain = formulas.render("text")
    assert "da1 = da1_via_h1 + da1_via_z2" in plain
    latex = formulas.render("latex")
    assert r"\left(\frac{\partial L}{\partial a_{1}}\right)_{\mathrm{via}\,h_{1}}" in latex


def test_shared_weight_gradient_is_shown_as_the_sum_over_uses() -> None:
    formulas = nc.compile(MODELS["shared"]()).formulas
    assert [s.name for s in formulas.layers][:3] == ["dense2", "add1", "dense1@2"]
    text = formulas.render("unicode")
    assert "∂L/∂W₁ = (∂L/∂W₁ via z₁) + (∂L/∂W₁ via z₁′) + λ₂·W₁" in text
    assert "this use:     (∂L/∂W₁ via z₁′) = a₁ᵀ·δ₁′" in text
    assert formulas["dense1.W"].gradient.rhs.has(LAMBDA["l2"])


def test_scalar_view_of_a_small_graph_gives_the_compiled_gradients() -> None:
    x = nn.Input(2)
    block = nn.Dense(2)
    h = nn.Tanh()(block(x))
    h2 = nn.Tanh()(block(h))
    y = nn.Sigmoid()(nn.Dense(1)(nn.Concat()(h + h2, h * h2)))
    prog = nc.compile(nn.Model(x, y, loss=nn.BinaryCrossEntropy(), l2=0.1, name="tiny_dag"))
    scalar = prog.formulas.scalar(params=["dense1.W", "dense2.W", "dense2.b"])
    params = prog.init_params(1)
    X, Y = np.array([[0.3, -0.7]]), np.array([[1.0]])
    _, grads = prog.loss_and_grad(params, X, Y)
    values = {**dict(zip(scalar.inputs, X[0])), **dict(zip(scalar.targets, Y[0]))}
    for name, entries in scalar.params.items():
        values.update(zip(entries, params[name].ravel()))
    for g in scalar:
        expr = g.one_example.subs(LAMBDA["l2"], 0.1)
        got = sp.lambdify(list(values), expr, modules=LAMBDIFY_MODULES)(*values.values())
        assert got == pytest.approx(grads[g.param][g.index], rel=1e-10, abs=1e-14), g.symbol
    assert scalar["W1_00"].n_paths == 8    # four paths through the tied layer's two calls, each on two units
    assert "h⁽¹⁾₀ = a⁽¹⁾₀ + a⁽¹′⁾₀" in scalar.render("unicode")
