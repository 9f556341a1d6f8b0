"""Functional models: gradients over skip connections, fan-out, merges and shared weights.

Against PyTorch autograd in float64 (skipped where PyTorch is absent), against central finite
differences everywhere, and with the plain lowering as the reference for the optimised one.
"""
from __future__ import annotations

import numpy as np
import pytest

import nncompile as nc
from nncompile.gradcheck import check_gradients, random_batch

from dag_models import HIDDEN, LOSSES, MODELS, residual

try:
    import torch_oracle
except ImportError:  # PyTorch is a test-only oracle: the checks that need it skip
    torch_oracle = None


def _data(prog: nc.CompiledProgram, rows: int = 7, seed: int = 0) -> tuple:
    """Parameters moved off their initial values (biases too), inputs and targets for the loss."""
    rng = np.random.default_rng(seed)
    params = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in prog.init_params(seed).items()}
    X, Y = random_batch(prog, rows, seed)
    return params, X, Y


def _against_torch(prog: nc.CompiledProgram, rows: int = 7, seed: int = 0) -> None:
    params, X, Y = _data(prog, rows, seed)
    loss, grads = prog.loss_and_grad(params, X, Y)
    _, T = prog.prepare(X, Y)
    expected_loss, expected, _ = torch_oracle.loss_and_grad(prog.model, params, X, T)
    assert loss == pytest.approx(expected_loss, rel=1e-12, abs=1e-14)
    assert sorted(grads) == sorted(expected)
    for name, g in grads.items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-9, atol=1e-12, err_msg=name)


needs_torch = pytest.mark.skipif(torch_oracle is None, reason="PyTorch is not installed (a test-only oracle)")


@needs_torch
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_equal_pytorch_autograd(name: str) -> None:
    _against_torch(nc.compile(MODELS[name]()))


@needs_torch
@pytest.mark.parametrize("act", sorted(HIDDEN))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_residual_block_with_every_activation_and_loss_equals_pytorch(act: str, loss: str) -> None:
    _against_torch(nc.compile(residual(act, loss, l1=0.01 if act == "relu" else 0.0, l2=0.02)), seed=3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_equal_finite_differences(name: str) -> None:
    prog = nc.compile(MODELS[name]())
    params, X, Y = _data(prog, seed=1)
    report = check_gradients(prog, params, X, Y, samples=0)
    assert max(report.values()) < 1e-6, report


@pytest.mark.parametrize("name", ["shared", "everything", "two_inputs"])
def test_optimised_lowering_equals_the_plain_one(name: str) -> None:
    """Bias folding (also for a weight used twice), aliasing and the fast forms against the plain lowering."""
    model = MODELS[name]()
    fast, plain = nc.compile(model), nc.compile(model, fold_bias=False, optimize=False)
    params, X, Y = _data(fast, seed=2)
    loss, grads = fast.loss_and_grad(params, X, Y)
    loss_ref, grads_ref = plain.loss_and_grad(params, X, Y)
    assert loss == pytest.approx(loss_ref, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-12, atol=1e-14)
    for step in ("step_sgd", "step_adam"):
        fast_run = nc.train(fast, X, Y, epochs=2, batch_size=3, optimizer=step[5:], lr=0.05, seed=4)
        plain_run = nc.train(plain, X, Y, epochs=2, batch_size=3, optimizer=step[5:], lr=0.05, seed=4)
        for k in fast_run.params:
            np.testing.assert_allclose(fast_run.params[k], plain_run.params[k], rtol=1e-11, atol=1e-13)


def test_shared_weight_gradient_is_the_sum_over_its_uses() -> None:
    """The same block called twice gets one gradient: the sum of what each call contributes (checked by
    splitting the layer into two independent copies holding the same values)."""
    from nncompile import nn
    x = nn.Input(4)
    first, second = nn.Dense(4, name="first"), nn.Dense(4, name="second")
    h1 = nn.Tanh()(first(x))
    y = nn.Dense(3, name="head")(h1 + nn.Tanh()(second(h1)))
    untied = nc.compile(nn.Model(x, y, loss=nn.SoftmaxCrossEntropy(), name="untied"))
    tied = nc.compile(MODELS["shared"]())
    params, X, Y = _data(tied, seed=5)
    copies = {"first.W": params["dense1.W"], "first.b": params["dense1.b"], "second.W": params["dense1.W"],
              "second.b": params["dense1.b"], "head.W": params["dense2.W"], "head.b": params["dense2.b"]}
    _, g_untied = untied.loss_and_grad(copies, X, Y)
    _, g_tied = tied.loss_and_grad({**params}, X, Y)
    tied_total = g_tied["dense1.W"] - 0.05 * params["dense1.W"]  # without the l2 term the untied model lacks
    np.testing.assert_allclose(tied_total, g_untied["first.W"] + g_untied["second.W"], rtol=1e-12)
    np.testing.assert_allclose(g_tied["dense1.b"], g_untied["first.b"] + g_untied["second.b"], rtol=1e-12)


def test_two_inputs_take_a_list_of_arrays_or_the_joined_matrix() -> None:
    prog = nc.compile(MODELS["two_inputs"]())
    params, X, Y = _data(prog)
    assert isinstance(X, list) and [x.shape[1] for x in X] == [3, 2]
    joined = np.concatenate(X, axis=1)
    np.testing.assert_array_equal(prog.forward(params, X), prog.forward(params, joined))
    assert prog.loss_and_grad(params, X, Y)[0] == prog.loss_and_grad(params, joined, Y)[0]
    with pytest.raises(nc.DataError, match="2 inputs: give X as a list of 2 arrays"):
        prog.forward(params, X[0])
    with pytest.raises(nc.DataError, match="different numbers of rows: 7, 6"):
        prog.forward(params, [X[0], X[1][:6]])
    result = nc.train(prog, X, Y, epochs=2, batch_size=4, validation=(X, Y))
    assert result.history[-1]["val_loss"] == pytest.approx(prog.evaluate(result.params, X, Y)["loss"])
