"""Diagnostics fire on the classic failures (saturation, dead units, a linear network,
vanishing or exploding gradients) and stay quiet on healthy networks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn
from nncompile.runtime.diagnostics import Monitor, unit_statistics


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    ds = data.digits()
    return data.Dataset("digits", ds.X[:400], ds.y[:400])


def _problems(result: nc.TrainResult) -> set[tuple[str, str]]:
    return {(w["layer"], w["problem"]) for h in result.history for w in h.get("warnings", ())}


def _train(prog, ds, **kwargs) -> nc.TrainResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nc.TrainingWarning)
        return nc.train(prog, ds.X, ds.y, diagnostics=True, **{"epochs": 3, "lr": 0.1, **kwargs})


def test_probes_hold_the_derivative_of_each_hidden_activation(digits) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(9), nn.Sigmoid(), nn.Dense(8), nn.ReLU(), nn.Dense(7), nn.Tanh(),
                                    nn.Dense(10), nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(), name="probed"))
    assert [p[:2] + p[3:] for p in prog.module.PROBES] == [
        ("dense1", "sigmoid", "saturating"), ("dense2", "relu", "rectifier"), ("dense3", "tanh", "saturating")]
    params = prog.init_params(0)
    for k in params:  # non-zero biases, so every branch is exercised
        params[k] = params[k] + (0.3 if k.endswith(".b") else 0.0)
    engine = prog.engine(params)
    X, T = prog.prepare(digits.X[:50], digits.y[:50])
    ws = engine.workspace(50)
    ws.X[...], ws.T[...] = X, T
    loss = ws.diagnose()
    z1 = X @ params["dense1.W"] + params["dense1.b"]
    s = 1 / (1 + np.exp(-z1))
    z2 = s @ params["dense2.W"] + params["dense2.b"]
    r = np.maximum(z2, 0)
    z3 = r @ params["dense3.W"] + params["dense3.b"]
    np.testing.assert_allclose(ws.probes[0], s * (1 - s), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ws.probes[1], (z2 > 0).astype(float))
    np.testing.assert_allclose(ws.probes[2], 1 - np.tanh(z3) ** 2, rtol=1e-12, atol=1e-15)
    reference, grads = prog.loss_and_grad(params, digits.X[:50], digits.y[:50])
    assert loss == pytest.approx(float(reference), rel=1e-14)
    np.testing.assert_allclose(engine.grads, prog.flatten(grads), rtol=1e-13, atol=1e-16)


def test_unit_statistics_by_hand() -> None:
    fprime = np.array([[0.0, 0.5, 0.9, 0.001],
                       [0.0, 0.1, 0.9, 0.3],
                       [0.0, 0.5, 0.9, 0.002],
                       [0.0, 0.2, 0.9, 0.005]])
    stats = unit_statistics(fprime)
    assert stats["saturated"] == pytest.approx(7 / 16)   # four zeros, three tiny values
    assert stats["dead"] == pytest.approx(1 / 4)         # the first unit: flat on every row
    assert stats["linear"] == pytest.approx(1 / 4)       # the third unit: constant, not dead


def test_saturated_sigmoid_network_is_reported(digits) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(32), nn.Sigmoid(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="saturating"))
    params = prog.init_params(0)
    params["dense1.W"] *= 40    # large initial weights: |z| of tens, sigma'(z) ~ 1e-10
    with pytest.warns(nc.TrainingWarning, match=r"dense1 \(sigmoid\): \d+% of unit activations are saturated"):
        result = nc.train(prog, digits.X, digits.y, epochs=2, lr=0.1, params=params, diagnostics=True)
    report = result.history[0]["diagnostics"]["dense1"]
    assert report["kind"] == "saturating" and report["saturated"] > 0.5
    assert ("dense1", "saturated") in _problems(result)
    assert any("saturated" in w for w in result.warnings)


def test_dead_relu_network_is_reported(digits) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(32), nn.ReLU(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="dying"))
    params = prog.init_params(0)
    params["dense1.b"][:24] = -50.0   # 24 of 32 units below zero for every input in [0, 1]
    result = _train(prog, digits, params=params)
    dead = [h["diagnostics"]["dense1"]["dead"] for h in result.history]
    assert all(24 / 32 <= d < 1 for d in dead), dead   # the 24 stay dead (training may kill a few more)
    assert ("dense1", "dead") in _problems(result)
    message = next(w["message"] for w in result.history[0]["warnings"] if w["problem"] == "dead")
    assert message.startswith(f"dense1 (relu): {100 * dead[0]:.0f}% of units are dead") and "LeakyReLU" in message
    params["dense1.b"][:] = -50.0     # all dead: no gradient reaches dense1 at all
    assert ("dense1", "vanishing") in _problems(_train(prog, digits, params=params))


def test_tiny_weights_make_a_linear_network(digits) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(32), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="linearish"))
    result = _train(prog, digits, init="normal", epochs=1, lr=0.01)
    assert {("dense1", "linear"), ("network", "linear_model")} <= _problems(result)
    assert result.history[0]["diagnostics"]["dense1"]["linear"] > 0.9


def test_exploding_gradients_are_reported() -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(8), nn.Tanh(), nn.Dense(1), input_dim=3, loss=nn.MSE(), name="big"))
    X = np.random.default_rng(0).normal(size=(64, 3))
    result = _train(prog, data.Dataset("big", X, 1e5 * X[:, 0]), lr=1e-12, epochs=1)
    assert ("dense2", "exploding") in _problems(result)


@pytest.mark.parametrize("activation,init,depth", [(nn.Tanh, "auto", 2), (nn.ReLU, "auto", 2),
                                                   (lambda: nn.LeakyReLU(0.01), "he", 2), (nn.Sigmoid, "xavier", 1)])
def test_healthy_networks_stay_quiet(digits, activation, init, depth) -> None:
    """(Two stacked sigmoid layers are not healthy: the second one's inputs all sit near 0.5 and it
    works in its linear region, which the diagnostics rightly report.)"""
    hidden = [layer for _ in range(depth) for layer in (nn.Dense(32), activation())]
    prog = nc.compile(nn.Sequential(*hidden, nn.Dense(10), nn.Softmax(), input_dim=64, loss=nn.CrossEntropy(),
                                    name=f"healthy{depth}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", nc.TrainingWarning)
        result = nc.train(prog, digits.X, digits.y, epochs=8, lr=0.1, init=init, diagnostics=True)
    assert result.warnings == [] and all(h["warnings"] == [] for h in result.history)
    assert set(result.history[-1]["diagnostics"]) == {f"dense{k}" for k in range(1, depth + 2)}


def test_checks_are_spread_over_long_runs(digits) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(4), nn.Tanh(), nn.Dense(10), nn.Softmax(), input_dim=64,
                                    loss=nn.CrossEntropy(), name="spread"))
    monitor = Monitor(prog.module, *prog.prepare(digits.X, digits.y))
    assert [e for e in range(1, 201) if monitor.due(e, 200)] == [1] + list(range(4, 201, 4))
    assert all(monitor.due(e, 30) for e in range(1, 31))
    plain = nc.train(prog, digits.X, digits.y, epochs=2, lr=0.1)
    assert all("diagnostics" not in h and "warnings" not in h for h in plain.history)
