"""Training modes make exactly the updates the contract says; results are reproducible."""
from __future__ import annotations

import math

import numpy as np
import pytest

import nncompile as nc
from nncompile import data, nn


@pytest.fixture(scope="module")
def digits_data() -> data.Dataset:
    ds = data.digits()
    return data.Dataset("digits", ds.X[:203], ds.y[:203])


@pytest.mark.parametrize("mode,batch,expected", [("gd", 32, 1), ("sgd", 32, 203), ("minibatch", 32, 7),
                                                 ("minibatch", 50, 5), ("minibatch", 1000, 1)])
def test_updates_per_epoch(digits_prog: nc.CompiledProgram, digits_data: data.Dataset, mode: str, batch: int,
                           expected: int) -> None:
    result = nc.train(digits_prog, digits_data.X, digits_data.y, mode=mode, batch_size=batch, epochs=3, lr=0.05,
                      evaluate=False)
    assert [h["updates"] for h in result.history] == [expected] * 3
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(math.isfinite(h["loss"]) for h in result.history)


def test_minibatch_equals_manual_sgd_on_the_same_batches(digits_prog: nc.CompiledProgram,
                                                        digits_data: data.Dataset) -> None:
    """One epoch of mini-batch SGD = textbook updates W -= lr * grad over the seeded permutation."""
    X, y, lr, batch = digits_data.X, digits_data.y, 0.3, 64
    start = digits_prog.init_params(5)
    result = nc.train(digits_prog, X, y, mode="minibatch", batch_size=batch, epochs=1, lr=lr, seed=5,
                      params=start, evaluate=False)
    order = np.random.default_rng(5).permutation(len(y))
    params = {k: v.copy() for k, v in start.items()}
    losses = []
    for s in range(0, len(y), batch):
        idx = order[s:s + batch]
        loss, grads = digits_prog.loss_and_grad(params, X[idx], y[idx])
        losses.append(loss)
        params = {k: params[k] - lr * grads[k] for k in params}
    assert len(losses) == 4, "the last partial batch (11 rows) must be used"
    for name in params:
        np.testing.assert_allclose(result.params[name], params[name], rtol=1e-12, atol=1e-14)
    assert result.history[0]["loss"] == pytest.approx(np.mean(losses), rel=1e-12)


def test_same_seed_same_bits_and_reshuffling(digits_prog: nc.CompiledProgram, digits_data: data.Dataset) -> None:
    run = lambda seed: nc.train(digits_prog, digits_data.X, digits_data.y, mode="sgd", epochs=2, lr=0.05,  # noqa: E731
                                seed=seed, evaluate=False)
    a, b, c = run(1), run(1), run(2)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["dense1.W"], c.params["dense1.W"])
    assert digits_prog.init_params(3)["dense1.W"].tobytes() == digits_prog.init_params(3)["dense1.W"].tobytes()


def test_gd_is_plain_gradient_descent(digits_prog: nc.CompiledProgram, digits_data: data.Dataset) -> None:
    X, y = digits_data.X, digits_data.y
    start = digits_prog.init_params(0)
    result = nc.train(digits_prog, X, y, mode="gd", epochs=2, lr=0.5, params=start, evaluate=False)
    params = start
    for _ in range(2):
        _, g = digits_prog.loss_and_grad(params, X, y)
        params = {k: params[k] - 0.5 * g[k] for k in params}
    for name in params:
        np.testing.assert_allclose(result.params[name], params[name], rtol=1e-12, atol=1e-14)


def test_history_has_accuracy_and_validation(digits_prog: nc.CompiledProgram) -> None:
    ds = data.digits()
    result = nc.train(digits_prog, ds.X, ds.y, epochs=15, lr=0.2, val_split=0.2, patience=50)
    last = result.history[-1]
    assert {"epoch", "loss", "updates", "accuracy", "val_loss", "val_accuracy"} <= set(last)
    assert last["val_accuracy"] > 0.9


def test_divergence_stops_with_last_good_weights() -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(1), input_dim=1, loss=nn.MSE(), name="linear"))
    X = np.linspace(-1, 1, 20).reshape(-1, 1) * 100
    with pytest.raises(nc.DivergenceError, match="lower the learning rate") as info:
        nc.train(prog, X, 3 * X[:, 0], mode="gd", epochs=500, lr=10.0)
    kept = info.value.result.params
    assert all(np.isfinite(v).all() for v in kept.values())


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "adam"}, "unknown mode"), ({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"),
    ({"optimizer": "lbfgs"}, "unknown optimizer"), ({"mode": "minibatch", "batch_size": 0}, "batch_size"),
    ({"optimizer": "adam", "momentum": 0.5}, "no hyperparameter"), ({"weight_decay": 1e-4}, "l2="),
    ({"optimizer": "adam", "nesterov": True}, "nesterov=True needs SGD with momentum"),
])
def test_bad_settings(digits_prog: nc.CompiledProgram, digits_data: data.Dataset, kwargs: dict,
                      message: str) -> None:
    with pytest.raises(nc.DataError, match=message):
        nc.train(digits_prog, digits_data.X, digits_data.y, **kwargs)


@pytest.mark.parametrize("X,Y,message", [
    (np.zeros((4, 3)), np.zeros(4), r"shape \(4, 3\).*\(N, 64\)"),
    (np.full((4, 64), np.nan), np.zeros(4), "NaN"),
    (np.zeros((4, 64)), np.array([0, 1, 10, 2]), "label 10 is out of range"),
    (np.zeros((4, 64)), np.array([0, 1, 2]), "3 rows"),
    (np.zeros((4, 64)), np.array([0.5, 1, 2, 3]), "whole numbers"),
    (np.array([["a"] * 64] * 2, dtype=object), np.zeros(2), "numeric"),
])
def test_bad_data_is_one_clear_error(digits_prog: nc.CompiledProgram, X: np.ndarray, Y: np.ndarray,
                                     message: str) -> None:
    with pytest.raises(nc.DataError, match=message):
        digits_prog.loss_and_grad(digits_prog.init_params(0), X, Y)
    with pytest.raises(nc.DataError, match=message):
        nc.train(digits_prog, X, Y, epochs=1)


def test_params_are_checked(digits_prog: nc.CompiledProgram) -> None:
    params = digits_prog.init_params(0)
    X = np.zeros((2, 64))
    with pytest.raises(nc.DataError, match="missing 'dense2.b'"):
        digits_prog.forward({k: v for k, v in params.items() if k != "dense2.b"}, X)
    params["dense1.W"] = params["dense1.W"].T
    with pytest.raises(nc.DataError, match=r"dense1.W.*shape \(16, 64\)"):
        digits_prog.forward(params, X)


def test_init_schemes(digits_prog: nc.CompiledProgram) -> None:
    normal = digits_prog.init_params(0, "normal")["dense1.W"]
    assert abs(normal.std() - 0.01) < 0.002 and abs(normal.mean()) < 0.002
    xavier = digits_prog.init_params(0, "xavier")["dense1.W"]
    assert np.abs(xavier).max() <= np.sqrt(6 / (64 + 16))
    he = digits_prog.init_params(0, "he")["dense1.W"]
    assert abs(he.std() - np.sqrt(2 / 64)) < 0.02
    assert not digits_prog.init_params(0)["dense1.b"].any()
    relu = nc.compile(nn.Sequential(nn.Dense(200), nn.ReLU(), nn.Dense(2), input_dim=300, loss=nn.MSE()))
    auto = relu.init_params(0)
    assert abs(auto["dense1.W"].std() - np.sqrt(2 / 300)) < 0.005  # He before ReLU
    assert np.abs(auto["dense2.W"]).max() <= np.sqrt(6 / 202)     # Xavier otherwise
    with pytest.raises(nc.DataError, match="unknown init scheme"):
        relu.init_params(0, "orthogonal")


@pytest.mark.parametrize("keyword,message", [
    ({"epoch": 5}, "unexpected keyword argument 'epoch' (did you mean 'epochs'?)"),
    ({"batchsize": 8}, "(did you mean 'batch_size'?)"),
    ({"bata1": 0.8, "optimizer": "adam"}, "(did you mean 'beta1'?); optimizer adam takes the hyperparameters: "
                                          "beta1, beta2, eps"),
    ({"eps": 1e-6}, "optimizer sgd has no hyperparameter 'eps' (it takes: none)"),
])
def test_unknown_keywords_are_argument_errors_with_a_hint(keyword: dict, message: str) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.MSE(), name="kw"))
    expected = nc.DataError if "has no hyperparameter" in message else nc.ArgumentError
    with pytest.raises(expected) as info:
        nc.train(prog, np.zeros((4, 2)), np.zeros(4), epochs=1, **keyword)
    assert message in str(info.value) and "\n" not in str(info.value)
    if expected is nc.ArgumentError:
        assert isinstance(info.value, TypeError)


def test_a_checkpoint_that_cannot_be_written_is_refused_before_training(tmp_path) -> None:
    prog = nc.compile(nn.Sequential(nn.Dense(1), input_dim=2, loss=nn.MSE(), name="ck"))
    seen: list[dict] = []
    with pytest.raises(nc.DataError, match="checkpoint .*no/dir/ck.npz: the folder .* does not exist"):
        nc.train(prog, np.zeros((4, 2)), np.zeros(4), epochs=3, checkpoint=tmp_path / "no" / "dir" / "ck.npz",
                 callback=seen.append)
    assert seen == []
