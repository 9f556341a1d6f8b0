"""Compiled gradients against central finite differences and a hand-written NumPy reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import nncompile as nc
from nncompile import nn
from nncompile.gradcheck import check_gradients, random_batch

from reference import mlp_loss_and_grad

ROOT = Path(__file__).resolve().parent.parent

TOL = 1e-6
HIDDEN = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "softplus": nn.Softplus, "identity": nn.Identity,
}


def _assert_fd(model: nn.Sequential, rows: int = 7, seed: int = 3) -> None:
    prog = nc.compile(model)
    X, Y = random_batch(prog, rows, seed)
    params = prog.init_params(seed, scheme="xavier")
    report = check_gradients(prog, params, X, Y, samples=0, seed=seed)
    assert max(report.values()) <= TOL, report


@pytest.mark.parametrize("act", sorted(HIDDEN))
@pytest.mark.parametrize("loss", ["mse", "bce", "ce", "softmax_ce"])
def test_every_activation_with_every_loss(act: str, loss: str) -> None:
    tail = {"mse": [nn.Dense(3)], "bce": [nn.Dense(2), nn.Sigmoid()], "ce": [nn.Dense(4), nn.Softmax()],
            "softmax_ce": [nn.Dense(4)]}[loss]
    loss_fn = {"mse": nn.MSE, "bce": nn.BinaryCrossEntropy, "ce": nn.CrossEntropy,
               "softmax_ce": nn.SoftmaxCrossEntropy}[loss]()
    _assert_fd(nn.Sequential(nn.Dense(5), HIDDEN[act](), *tail, input_dim=3, loss=loss_fn))


@pytest.mark.parametrize("act,loss", [(a, nn.MSE) for a in ("sigmoid", "tanh", "softplus", "identity", "relu")]
                         + [("sigmoid", nn.BinaryCrossEntropy)])
def test_output_activation_composed_with_loss(act: str, loss: type) -> None:
    _assert_fd(nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(2), HIDDEN[act](), input_dim=3, loss=loss()))


@pytest.mark.parametrize("formula", [
    "x*tanh(log(1 + exp(x)))",             # mish, given as a string
    sp.Symbol("x") / (1 + sp.exp(-sp.Symbol("x"))),  # swish, as a SymPy expression
    lambda x: sp.sin(x) + x / 2,           # a callable on a SymPy symbol
    "x^2/(1 + abs(x))",
    "sinh(x)/8 + cosh(x)/9 + sin(x) + cos(x)/2 + tan(x/9) + atan(x)",  # once reused a live scratch
    "asinh(x) + log(2 + x^2)",             # 1/sqrt(..) once recursed forever in the printer
    "sign(x)*x^2 + heaviside(x)*x",        # steps differentiate to DiracDelta, taken as 0
])
def test_custom_activation(formula: object) -> None:
    act = nn.Activation(formula, name="custom")
    _assert_fd(nn.Sequential(nn.Dense(5), act, nn.Dense(3), input_dim=2, loss=nn.MSE()))


def test_custom_loss_and_penalties() -> None:
    huber_ish = nn.Loss("sqrt(1 + (y - t)^2) - 1", name="pseudo_huber")
    _assert_fd(nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(2), input_dim=3, loss=huber_ish, l2=0.3, l1=0.05))


@pytest.mark.parametrize("l1,l2", [(0.0, 0.1), (0.02, 0.0), (0.01, 0.2)])
def test_regularisation(l1: float, l2: float) -> None:
    _assert_fd(nn.Sequential(nn.Dense(4), nn.Sigmoid(), nn.Dense(3), nn.Softmax(), input_dim=3,
                             loss=nn.CrossEntropy(), l1=l1, l2=l2))


def test_hidden_softmax_and_stacked_layers() -> None:
    model = nn.Sequential(nn.Dense(4), nn.Softmax(), nn.Dense(4), nn.Dense(3), nn.Tanh(), nn.Sigmoid(),
                          nn.Dense(2), nn.Softmax(), input_dim=3, loss=nn.MSE())
    _assert_fd(model)


def test_cross_entropy_after_sigmoid_outputs() -> None:
    _assert_fd(nn.Sequential(nn.Dense(3), nn.Tanh(), nn.Dense(2), nn.Sigmoid(), input_dim=2, loss=nn.CrossEntropy()))


@pytest.mark.parametrize("hidden,out,loss,tail,l1,l2", [
    (["tanh"], "softmax", "ce", lambda: [nn.Dense(10), nn.Softmax()], 0.0, 1e-3),
    (["tanh"], "sigmoid", "bce", lambda: [nn.Dense(1), nn.Sigmoid()], 2e-3, 0.0),
    (["relu", "sigmoid"], "identity", "mse", lambda: [nn.Dense(2)], 3e-3, 0.05),
    (["softplus", "tanh"], "softmax", "ce", lambda: [nn.Dense(3), nn.Softmax()], 0.01, 0.2),
])
def test_against_handwritten_numpy(hidden: list[str], out: str, loss: str, tail: object, l1: float,
                                   l2: float) -> None:
    """Random weights and biases (not the zero biases of init_params) and both penalties."""
    layers = []
    for h in hidden:
        layers += [nn.Dense(6), HIDDEN[h]()]
    lossfn = {"ce": nn.CrossEntropy, "bce": nn.BinaryCrossEntropy, "mse": nn.MSE}[loss]()
    model = nn.Sequential(*layers, *tail(), input_dim=5, loss=lossfn, l1=l1, l2=l2)
    prog = nc.compile(model)
    X, Y = random_batch(prog, 9, 1)
    rng = np.random.default_rng(3)
    params = {k: v + rng.normal(0, 0.5, v.shape) for k, v in prog.init_params(1).items()}
    _, T = prog.prepare(X, Y)
    ref_loss, ref_grads, ref_out = mlp_loss_and_grad(params, X, T, hidden, out, loss, l2=l2, l1=l1)
    got_loss, grads = prog.loss_and_grad(params, X, Y)
    assert abs(got_loss - ref_loss) <= 1e-12 * max(1.0, abs(ref_loss))
    for name in params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(prog.forward(params, X), ref_out, rtol=1e-12, atol=1e-14)


def test_stable_at_extreme_inputs() -> None:
    """No NaN or inf at |z| ~ 1000: sigmoid, softplus and softmax are evaluated stably."""
    model = nn.Sequential(nn.Dense(3), nn.Softplus(), nn.Dense(1), nn.Sigmoid(), input_dim=1,
                          loss=nn.BinaryCrossEntropy())
    prog = nc.compile(model)
    params = prog.init_params(0)
    params["dense1.W"][:] = [[400.0, -400.0, 1.0]]
    params["dense2.W"][:] = [[3.0], [-3.0], [1.0]]
    X = np.array([[3.0], [-3.0], [0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grads = prog.loss_and_grad(params, X, np.array([0.0, 1.0, 1.0]))
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    softmax = nc.compile(nn.Sequential(nn.Dense(3), input_dim=1, loss=nn.SoftmaxCrossEntropy()))
    p = softmax.init_params(0)
    p["dense1.W"][:] = [[1000.0, -1000.0, 0.0]]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grads = softmax.loss_and_grad(p, np.array([[1.0], [-1.0]]), np.array([1, 0]))
    assert np.isfinite(loss) and loss > 1000 and all(np.isfinite(g).all() for g in grads.values())


def test_float32_program_agrees_with_float64() -> None:
    model = nn.Sequential(nn.Dense(16), nn.Tanh(), nn.Dense(4), nn.Softmax(), input_dim=8, loss=nn.CrossEntropy())
    p64, p32 = nc.compile(model, dtype="float64"), nc.compile(model, dtype="float32")
    X, Y = random_batch(p64, 16, 2)
    params = p64.init_params(2)
    loss64, g64 = p64.loss_and_grad(params, X, Y)
    loss32, g32 = p32.loss_and_grad({k: v.astype(np.float32) for k, v in params.items()}, X, Y)
    assert isinstance(loss32, np.float32) and all(g.dtype == np.float32 for g in g32.values())
    assert abs(loss32 - loss64) <= 1e-5 * abs(loss64)
    for name in g64:
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-3, atol=1e-5)
    assert p32.forward(params, X).dtype == np.float32 and p32.init_params(0)["dense1.W"].dtype == np.float32


def test_check_on_a_model_with_kinks(capsys: pytest.CaptureFixture) -> None:
    """examples/kinks.py passes `nncompile check` (it failed on round-off at a zero gradient, and on a
    LeakyReLU input exactly at 0 behind dead ReLUs); at a kink inside the step the one-sided
    difference away from it is the reference; a wrong gradient still fails there."""
    from nncompile.cli import main
    from nncompile.gradcheck import gradient_check
    path = str(ROOT / "examples" / "kinks.py")
    for seed in ("0", "2", "9"):
        assert main(["check", path, "--seed", seed, "--rows", "16"]) == 0, capsys.readouterr()
    prog = nc.compile(nc.load_model(path)[0])
    X, Y = random_batch(prog, 8, 2)
    params = prog.init_params(2)  # zero biases: every dense2 unit's input is exactly 0 for some rows
    report = gradient_check(prog, params, X, Y, seed=2)
    assert report["dense2.b"].at_kink == 3 and max(r.error for r in report.values()) <= 1e-6
    loss, grads = prog.loss_and_grad(params, X, Y)
    central = (prog.loss_and_grad({**params, "dense2.b": params["dense2.b"] + [1e-6, 0, 0]}, X, Y)[0]
               - prog.loss_and_grad({**params, "dense2.b": params["dense2.b"] - [1e-6, 0, 0]}, X, Y)[0]) / 2e-6
    assert abs(central - grads["dense2.b"][0]) > 1e-3  # the plain central difference is no reference here


@pytest.mark.parametrize("param,factor", [("dense2.b", 1.5), ("dense1.W", 1.0001), ("dense3.b", 0.0)])
def test_check_fails_on_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                         param: str, factor: float) -> None:
    """A gradient made wrong on purpose (scaled, zeroed) exits 1, kinks or not."""
    from nncompile.cli import main
    from nncompile.program import CompiledProgram
    right = CompiledProgram.loss_and_grad

    def wrong(self, params, X, Y, **options):
        loss, grads = right(self, params, X, Y, **options)
        return loss, {**grads, param: grads[param] * factor}

    monkeypatch.setattr(CompiledProgram, "loss_and_grad", wrong)
    assert main(["check", str(ROOT / "examples" / "kinks.py"), "--seed", "2"]) == 1
    out, err = capsys.readouterr()
    assert f"{param}" in out and "FAIL" in out.split(param)[1].splitlines()[0] and "check failed" in err


@pytest.mark.parametrize("formula", ["(x*exp(-x^2) + softplus(x))*(tanh(x)*sin(x) + exp(-x^2))",
                                     "softplus(x*tanh(x)*(sigmoid(x) + atan(x)))"])
def test_custom_activations_that_once_simplified_for_minutes(formula: str) -> None:
    """sympy.simplify ran for minutes on these derivatives (30-40 operations); now only expressions of
    at most 20 operations are simplified, and the gradients still match finite differences."""
    _assert_fd(nn.Sequential(nn.Dense(3), nn.Activation(formula, name="slow"), nn.Dense(1), input_dim=2,
                             loss=nn.MSE()))
