"""The formulas `derive` shows are right: evaluated with sympy.lambdify they give the compiled gradients.

Each model's displayed matrix formulas (forward, δ recurrence, ∂L/∂W, ∂L/∂b, the loss with
its penalties) are turned into NumPy code by `sympy.lambdify` and run layer by layer; the
result must equal `prog.loss_and_grad` to float64 round-off.  Activation derivatives are
checked against `sympy.diff`, non-differentiable points against the value the code uses.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import nncompile as nc
from nncompile import nn
from nncompile.explain.equations import A_OUT, Z
from nncompile.symbolic.notation import LAMBDA, NamedArray

MODELS = {
    "tanh_sigmoid_bce": lambda: nn.Sequential(nn.Dense(5), nn.Tanh(), nn.Dense(1), nn.Sigmoid(), input_dim=3,
                                              loss=nn.BinaryCrossEntropy(), name="tsb"),
    "softmax_ce_l2": lambda: nn.Sequential(nn.Dense(6), nn.Softplus(), nn.Dense(4), nn.Softmax(), input_dim=3,
                                           loss=nn.CrossEntropy(), l2=0.01, name="sce"),
    "logits_ce": lambda: nn.Sequential(nn.Dense(4), nn.Sigmoid(), nn.Dense(3), input_dim=2,
                                       loss=nn.SoftmaxCrossEntropy(), name="lce"),
    "softmax_mse": lambda: nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(3), nn.Softmax(), input_dim=2,
                                         loss=nn.MSE(), name="smse"),
    "kinks_l1_l2": lambda: nn.Sequential(nn.Dense(4), nn.ReLU(), nn.Dense(3), nn.LeakyReLU(0.1), nn.Dense(2),
                                         input_dim=3, loss=nn.Loss("abs(y - t)", name="mae"), l1=1e-3, l2=1e-2,
                                         name="kinks"),
    "odd_shapes": lambda: nn.Sequential(nn.Tanh(), nn.Dense(3), nn.Dense(4), nn.Softmax(), nn.Dense(2), nn.Sigmoid(),
                                        input_dim=2, loss=nn.BinaryCrossEntropy(), name="odd"),
    "mish_two_activations": lambda: nn.Sequential(nn.Dense(4), nn.Activation("x*tanh(log(1 + exp(x)))", name="mish"),
                                                  nn.Tanh(), nn.Dense(2), nn.Identity(), input_dim=2, loss=nn.MSE(),
                                                  name="mish2"),
}


def _data(prog: nc.CompiledProgram, rows: int = 7, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    params = {k: v + rng.normal(scale=0.5, size=v.shape) for k, v in prog.init_params(seed).items()}
    X = rng.normal(size=(rows, prog.model.input_dim))
    k = prog.model.output_dim
    if prog.module.TARGET_ENCODING == "onehot":
        Y = rng.integers(0, k, size=rows)
    elif prog.module.TARGET_ENCODING == "binary":
        Y = rng.integers(0, 2, size=(rows, k)).astype(float)
    else:
        Y = rng.normal(size=(rows, k))
    return params, X, Y


def _evaluate(expr: sp.Expr, env: dict[str, np.ndarray]) -> np.ndarray:
    """`expr` (over the derivation's named arrays and λ's) evaluated by sympy.lambdify on NumPy arrays."""
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    return sp.lambdify(symbols, expr, modules="numpy")(*(env[s.name] for s in symbols))


def _environment(prog: nc.CompiledProgram, params: dict, X: np.ndarray, Y: np.ndarray) -> dict:
    _, T = prog.prepare(X, Y)
    env = {"X": X, "T": T, "N": float(len(X)), LAMBDA["l1"].name: prog.model.l1, LAMBDA["l2"].name: prog.model.l2}
    for spec in prog.derivation.program.params:
        env[spec.buffer] = params[spec.name]
    return env


@pytest.mark.parametrize("name", sorted(MODELS))
def test_displayed_matrix_formulas_compute_the_compiled_gradients(name: str) -> None:
    prog = nc.compile(MODELS[name]())
    params, X, Y = _data(prog)
    env = _environment(prog, params, X, Y)
    formulas = prog.formulas
    for layer in reversed(formulas.layers):           # forward pass, as displayed
        for chain in layer.forward:
            env[chain[0].name] = _evaluate(chain[-1], env)
    for lhs, rhs in formulas.loss.rows:
        if lhs == "where":
            env[rhs[0].name] = _evaluate(rhs[-1], env)
    expected_loss, expected = prog.loss_and_grad(params, X, Y)
    np.testing.assert_allclose(_evaluate(formulas.loss.loss.rhs, env), expected_loss, rtol=1e-12, atol=1e-13)
    for layer in formulas.layers:                      # backward pass: the steps, as displayed
        for step in layer.steps:
            env[step.lhs.name] = _evaluate(step.rhs, env)
        combined = _evaluate(layer.delta.rhs, env)     # the recurrence in one formula agrees with its steps
        np.testing.assert_allclose(combined, env[layer.delta.lhs.name], rtol=1e-12, atol=1e-14)
        for param, eq in layer.gradients.items():
            np.testing.assert_allclose(_evaluate(eq.rhs, env), expected[param], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}: {param}")


@pytest.mark.parametrize("name", ["tanh_sigmoid_bce", "softmax_mse", "mish_two_activations", "kinks_l1_l2"])
def test_raw_chain_rule_products_equal_the_simplified_deltas(name: str) -> None:
    prog = nc.compile(MODELS[name]())
    params, X, Y = _data(prog, seed=3)
    env = _environment(prog, params, X, Y)
    for layer in reversed(prog.formulas.layers):
        for chain in layer.forward:
            env[chain[0].name] = _evaluate(chain[-1], env)
    for layer in prog.formulas.layers:
        for step in layer.steps:
            env[step.lhs.name] = _evaluate(step.rhs, env)
        raw = _evaluate(layer.delta_raw.rhs, env)
        np.testing.assert_allclose(raw, env[layer.delta.lhs.name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_derivative_chain_agrees_with_sympy_diff(name: str) -> None:
    formulas = nc.compile(MODELS[name]()).formulas
    points = [-2.5, -0.3, 0.7, 3.0]
    for layer in formulas:
        for act in layer.activations:
            reference = sp.diff(act.function, Z)
            for form in (act.raw, act.simplified, act.evaluated):
                for z in points:
                    at = {Z: z, A_OUT: act.function.subs(Z, z)}
                    assert float(form.subs(at)) == pytest.approx(float(reference.subs(Z, z)), rel=1e-12, abs=1e-14)


def test_issue_example_tanh_reads_as_written() -> None:
    """d/dz tanh(z) = 1 − tanh²(z) = 1 − a², and δ₁ = (δ₂·W₂ᵀ) ⊙ (1 − a₁²)."""
    model = nn.Sequential(nn.Dense(3), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name="t")
    formulas = nc.compile(model).formulas
    text = formulas.render("unicode")
    assert "d/dz tanh(z) = 1 − tanh²(z) = 1 − a²" in text
    assert "δ₁ = (δ₂·W₂ᵀ) ⊙ (1 − a₁²)" in text
    assert "∂L/∂W₁ = Xᵀ·δ₁" in text and "∂L/∂b₁ = Σₙ δ₁" in text
    assert "dz1 = (dz2 @ W2.T)*(1 - a1**2)" in formulas.render("text")
    assert r"\delta_{1} &= \left(\delta_{2} W_{2}^{\top}\right) \odot \left(1 - a_{1}^{2}\right)" in \
        formulas.render("latex")


def test_formulas_are_sympy_objects_people_can_use() -> None:
    model = nn.Sequential(nn.Dense(3), nn.Sigmoid(), nn.Dense(1), input_dim=2, loss=nn.MSE(), l2=0.5, name="use")
    formulas = nc.compile(model).formulas
    act = formulas["dense1"].activations[0]
    assert act.evaluated == A_OUT * (1 - A_OUT)
    fprime = sp.lambdify(Z, act.simplified)
    z = np.linspace(-4, 4, 9)
    finite = (1 / (1 + np.exp(-(z + 1e-6))) - 1 / (1 + np.exp(-(z - 1e-6)))) / 2e-6
    np.testing.assert_allclose(fprime(z), finite, rtol=1e-7)
    assert float(act.raw.subs(Z, 0)) == 0.25
    grad = formulas["dense1.W"].gradient
    assert isinstance(grad, sp.Eq) and grad.rhs.has(LAMBDA["l2"])
    assert grad.rhs.subs(formulas.constants).has(sp.Float(0.5))
    assert sp.latex(grad).startswith(r"\frac{\partial L}{\partial W_{1}}")
    assert [d.lhs for d in formulas["dense1.W"].deltas] == [NamedArray("dz1"), NamedArray("dz2")]
    assert formulas["loss"] is formulas.loss
    for obj in (formulas, formulas["dense2"], formulas.loss, act, formulas["dense1.b"]):
        assert obj._repr_latex_().startswith("$")
    with pytest.raises(KeyError, match="dense1.W"):
        formulas["dense9"]


def test_formulas_are_derived_lazily_after_a_cache_hit() -> None:
    model = nn.Sequential(nn.Dense(2), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), name="lazy_formulas")
    nc.compile(model)
    again = nc.compile(model)                       # a JIT cache hit: nothing derived yet
    assert "derivation" not in again.__dict__ and "formulas" not in again.__dict__
    assert [layer.name for layer in again.formulas] == ["dense2", "dense1"]
    assert "derivation" in again.__dict__


def test_non_differentiable_points_are_stated_with_the_value_used() -> None:
    text = nc.compile(MODELS["kinks_l1_l2"]()).formulas.render("text")
    assert ("relu is not differentiable at z = 0 (derivative 0 from the left, 1 from the right): "
            "the code uses relu'(0) = 0, the left derivative") in text
    assert ("leaky_relu is not differentiable at z = 0 (derivative 0.1 from the left, 1 from the right): "
            "the code uses leaky_relu'(0) = 0.1, the left derivative") in text
    assert "l1 is not differentiable at w = 0" in text and "the code uses l1'(0) = 0, a subgradient" in text
    assert "mae is not differentiable at y = t" in text and "mae'(t) = 0, a subgradient" in text


def test_custom_activation_without_a_simpler_form_stays_correct() -> None:
    odd = nn.Activation("x*atan(sinh(x)) + cos(x)**3", name="odd")
    model = nn.Sequential(nn.Dense(3), odd, nn.Dense(1), input_dim=2, loss=nn.MSE(), name="odd_net")
    prog = nc.compile(model)
    act = prog.formulas["dense1"].activations[0]
    for z in (-1.3, 0.2, 2.1):
        assert float(act.evaluated.subs({Z: z, A_OUT: act.function.subs(Z, z)})) == pytest.approx(
            float(sp.diff(act.function, Z).subs(Z, z)), rel=1e-12)
    assert "d/dz odd(z) = " in prog.formulas.render("text")
    from nncompile.gradcheck import check_gradients, random_batch
    X, Y = random_batch(prog, 6, 0)
    assert max(check_gradients(prog, prog.init_params(0), X, Y).values()) < 1e-6


def test_stability_rewrites_are_reported() -> None:
    text = nc.compile(MODELS["tanh_sigmoid_bce"]()).formulas.render("text")
    assert "stability rewrite: log(sigmoid(u)) -> -softplus(-u)" in text
    assert "evaluated as:" in text and "softplus(z) - t*z" in text
