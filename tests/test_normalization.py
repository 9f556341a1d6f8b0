"""LayerNorm and BatchNorm: gradients as PyTorch's, running statistics as torch.nn.BatchNorm1d's, buffers that
are saved but never trained, and the derivation shown step by step and in closed form (checked equal)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nncompile as nc
from nncompile import nn
from nncompile.gradcheck import check_gradients, random_batch
from nncompile.symbolic import normalization

from dag_models import HIDDEN, LOSSES

try:
    import torch
    import torch_oracle
except ImportError:  # PyTorch is a test-only oracle: the checks that need it skip
    torch = torch_oracle = None

needs_torch = pytest.mark.skipif(torch_oracle is None, reason="PyTorch is not installed (a test-only oracle)")


def norm_model(act: str = "tanh", loss: str = "softmax_ce", which: str = "both") -> nn.Model:
    """x -> Dense -> BatchNorm -> f -> (+ skip) -> LayerNorm -> Dense: both normalizations, a fan-out."""
    x = nn.Input(4)
    h = nn.Dense(6)(x)
    if which in ("both", "batch"):
        h = nn.BatchNorm(momentum=0.2)(h)
    h = HIDDEN[act]()(h)
    if which in ("both", "layer"):
        h = nn.LayerNorm(eps=1e-3)(h + nn.Dense(6)(h))
    y = nn.Dense(3)(h)
    tail, loss_fn = LOSSES[loss]
    for layer in tail():
        y = layer(y)
    return nn.Model(x, y, loss=loss_fn(), l2=0.01, name=f"norm_{which}_{act}_{loss}")


def _moved(prog: nc.CompiledProgram, seed: int) -> dict:
    """Parameters away from their initial values (γ ≠ 1, β ≠ 0, running statistics not the defaults)."""
    rng = np.random.default_rng(seed)
    params = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in prog.init_params(seed).items()}
    for name in prog.buffers:
        if name.endswith("running_var"):
            params[name] = np.abs(params[name]) + 0.1
    return params


def _against_torch(prog: nc.CompiledProgram, rows: int, seed: int = 0) -> None:
    params = _moved(prog, seed)
    X, Y = random_batch(prog, rows, seed)
    loss, grads = prog.loss_and_grad(params, X, Y)
    _, T = prog.prepare(X, Y)
    expected_loss, expected, _ = torch_oracle.loss_and_grad(prog.model, params, X, T)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    assert sorted(grads) == sorted(expected) == sorted(prog.trainable)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-9, atol=1e-11, err_msg=name)


@needs_torch
@pytest.mark.parametrize("which", ["layer", "batch"])
@pytest.mark.parametrize("rows", [2, 3, 8, 33])
def test_gradients_equal_pytorch_at_several_batch_sizes(which: str, rows: int) -> None:
    _against_torch(nc.compile(norm_model(which=which)), rows, seed=rows)


@needs_torch
@pytest.mark.parametrize("act", sorted(HIDDEN))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_both_normalizations_with_every_activation_and_loss_equal_pytorch(act: str, loss: str) -> None:
    _against_torch(nc.compile(norm_model(act, loss)), 6, seed=1)


@pytest.mark.parametrize("which", ["layer", "batch", "both"])
def test_gradients_equal_finite_differences(which: str) -> None:
    prog = nc.compile(norm_model("softplus", "mse", which))
    X, Y = random_batch(prog, 5, 3)
    report = check_gradients(prog, _moved(prog, 3), X, Y, samples=0)
    assert max(report.values()) < 1e-6, report


@needs_torch
def test_running_statistics_equal_torch_batchnorm1d_after_ten_training_steps() -> None:
    prog = nc.compile(norm_model("relu", "mse", "batch"))
    params = _moved(prog, 4)
    X, Y = random_batch(prog, 16, 4)
    result = nc.train(prog, X, Y, mode="gd", epochs=10, lr=0.05, params=params, evaluate=False)
    tensors = {k: torch.tensor(v, requires_grad="running" not in k) for k, v in params.items()}
    bn = prog.model.nodes[2].layer
    module = torch.nn.BatchNorm1d(6, momentum=bn.momentum, eps=bn.eps, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(tensors["batchnorm1.gamma"])
        module.bias.copy_(tensors["batchnorm1.beta"])
        module.running_mean.copy_(tensors["batchnorm1.running_mean"])
        module.running_var.copy_(tensors["batchnorm1.running_var"])
    weights = [tensors[k] for k in ("dense1.W", "dense1.b", "dense2.W", "dense2.b")]
    optimizer = torch.optim.SGD([{"params": [weights[0], weights[2]], "weight_decay": 0.01},     # l2: Dense W only
                                 {"params": [weights[1], weights[3], module.weight, module.bias]}], lr=0.05)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(10):
        optimizer.zero_grad()
        out = torch.relu(module(Xt @ weights[0] + weights[1])) @ weights[2] + weights[3]
        torch.nn.functional.mse_loss(out, Yt).backward()
        optimizer.step()
    for name, value in (("running_mean", module.running_mean), ("running_var", module.running_var),
                        ("gamma", module.weight), ("beta", module.bias)):
        np.testing.assert_allclose(result.params[f"batchnorm1.{name}"], value.detach().numpy(), rtol=1e-10,
                                   err_msg=name)
    np.testing.assert_allclose(result.params["dense1.W"], weights[0].detach().numpy(), rtol=1e-10)


def test_buffers_are_kept_but_never_trained() -> None:
    prog = nc.compile(norm_model("tanh", "mse", "batch"))
    assert prog.buffers == ["batchnorm1.running_mean", "batchnorm1.running_var"]
    assert prog.param_names[2:6] == ["batchnorm1.gamma", "batchnorm1.beta", "batchnorm1.running_mean",
                                     "batchnorm1.running_var"]
    assert set(prog.trainable) == set(prog.param_names) - set(prog.buffers)
    init = prog.init_params(0, scheme="normal")
    np.testing.assert_array_equal(init["batchnorm1.running_mean"], 0.0)
    np.testing.assert_array_equal(init["batchnorm1.running_var"], 1.0)
    np.testing.assert_array_equal(init["batchnorm1.gamma"], 1.0)
    params = _moved(prog, 1)
    given = {k: v.copy() for k, v in params.items()}
    X, Y = random_batch(prog, 9, 1)
    loss, grads = prog.loss_and_grad(params, X, Y)
    assert set(grads) == set(prog.trainable)
    for k in params:
        np.testing.assert_array_equal(params[k], given[k])               # loss_and_grad changes no buffer
    assert prog.loss_and_grad(params, X, Y)[0] == loss                     # ... nor any state inside
    result = nc.train(prog, X, Y, epochs=2, batch_size=3, params=params)
    assert not np.allclose(result.params["batchnorm1.running_mean"], params["batchnorm1.running_mean"])


def test_evaluation_uses_the_running_statistics() -> None:
    prog = nc.compile(norm_model("tanh", "mse", "batch"))
    params, (X, Y) = _moved(prog, 2), random_batch(prog, 6, 2)
    z = X @ params["dense1.W"] + params["dense1.b"]
    scale = params["batchnorm1.gamma"] / np.sqrt(params["batchnorm1.running_var"] + 1e-5)
    a = np.tanh((z - params["batchnorm1.running_mean"]) * scale + params["batchnorm1.beta"])
    expected = a @ params["dense2.W"] + params["dense2.b"]
    np.testing.assert_allclose(prog.forward(params, X), expected, rtol=1e-12)
    np.testing.assert_allclose(prog.forward(params, X[:1]), expected[:1], rtol=1e-12)  # one row is fine here
    penalty = 0.005 * sum(np.sum(params[f"dense{k}.W"] ** 2) for k in (1, 2))
    assert prog.evaluate(params, X, Y)["loss"] == pytest.approx(np.mean((expected - Y) ** 2) + penalty, rel=1e-12)


def test_a_training_batch_of_one_row_is_refused() -> None:
    prog = nc.compile(norm_model("tanh", "mse", "batch"))
    params, (X, Y) = prog.init_params(0), random_batch(prog, 9, 0)
    with pytest.raises(nc.DataError, match="a training batch of 1 row is too small: BatchNorm .* at least 2 rows"):
        prog.loss_and_grad(params, X[:1], Y[:1])
    with pytest.raises(nc.DataError, match="a training batch of 1 row"):
        nc.train(prog, X, Y, mode="sgd", epochs=1)
    with pytest.raises(nc.DataError, match="a training batch of 1 row"):
        nc.train(prog, X, Y, batch_size=4, epochs=1)                  # 9 rows: the last batch has one
    nc.train(prog, X, Y, batch_size=3, epochs=1)
    nc.train(nc.compile(norm_model("tanh", "mse", "layer")), X, Y, mode="sgd", epochs=1)   # LayerNorm: fine


def test_buffers_go_into_weights_files_and_checkpoints(tmp_path: Path) -> None:
    from nncompile.cli import main
    model_file = tmp_path / "bn.py"
    model_file.write_text("from nncompile import nn\nx = nn.Input(2)\n"
                          "model = nn.Model(x, nn.Dense(2)(nn.ReLU()(nn.BatchNorm()(nn.Dense(8)(x)))), "
                          "loss=nn.SoftmaxCrossEntropy(), name='bn_file')\n")
    args = ["run", str(model_file), "--data", "moons", "--epochs", "2", "--quiet", "--json", "--save",
            str(tmp_path / "w.npz"), "--checkpoint", str(tmp_path / "ck.npz")]
    assert main(args) == 0
    saved = np.load(tmp_path / "w.npz")
    assert "batchnorm1.running_var" in saved.files and not np.allclose(saved["batchnorm1.running_var"], 1.0)
    with np.load(tmp_path / "ck.npz") as ck:
        meta = json.loads(ck["meta"].tobytes())
        flat = ck["params"]
    prog = nc.compile(nc.load_model(model_file)[0])
    np.testing.assert_array_equal(prog.unflatten(flat)["batchnorm1.running_mean"], saved["batchnorm1.running_mean"])
    assert meta["epoch"] == 2
    assert main(["predict", str(model_file), "--weights", str(tmp_path / "w.npz"), "--data", "moons", "-o",
                 str(tmp_path / "p.csv")]) == 0


def test_closed_form_is_checked_equal_to_the_staged_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert normalization.check_closed_form("features") and normalization.check_closed_form("batch")
    d = normalization.derivation("batch")
    assert [s.name for s, _ in d.steps] == ["dxhat", "dvar", "dmu", "dx"]
    wrong = d.closed + normalization.XHAT * normalization.adjoint(normalization.XHAT) / normalization.M
    normalization.check_closed_form.cache_clear()
    monkeypatch.setattr(normalization, "closed_form", lambda axis: wrong)
    normalization.derivation.cache_clear()
    try:
        assert not normalization.check_closed_form("batch", size=2)   # a wrong closed form is caught
    finally:
        monkeypatch.undo()
        normalization.derivation.cache_clear()
        normalization.check_closed_form.cache_clear()


def test_derivation_reads_as_the_textbook() -> None:
    text = nc.compile(norm_model("tanh", "mse", "both")).formulas.render("unicode")
    assert "μ₁ = Σₙ z₁/N" in text and "σ₁² = Σₙ((z₁ − μ₁)²)/N" in text and "x̂₁ = (z₁ − μ₁)/√(ε + σ₁²)" in text
    assert "∂L/∂x̂₁ = ∂L/∂bn₁ ⊙ γ₁" in text
    assert "∂L/∂σ₁² = −Σₙ((z₁ − μ₁) ⊙ ∂L/∂x̂₁)/(2·(ε + σ₁²)^(3/2))" in text
    assert "closed form:  δ₁ = (N·∂L/∂x̂₁ − Σₙ ∂L/∂x̂₁ − x̂₁ ⊙ Σₙ(∂L/∂x̂₁ ⊙ x̂₁))/(N·√(ε + σ₁²))" in text
    assert "SymPy finds the closed form equal to the step-by-step derivation" in text
    assert "μ₁ = Σₖ h₁/D" in text and "∂L/∂γ₁ = Σₙ(∂L/∂ln₁ ⊙ x̂₁)" in text
    assert "[the closed form (the textbook's compact formula), not the staged one]" in text


@needs_torch
@pytest.mark.parametrize("kind", ["LayerNorm", "BatchNorm"])
def test_a_normalization_called_twice_shares_gamma_and_beta(kind: str) -> None:
    """The gradient of a shared γ and β is the sum over the calls, as PyTorch's autograd adds them."""
    x = nn.Input(4)
    norm = getattr(nn, kind)()
    h = nn.Tanh()(norm(nn.Dense(5)(x)))
    y = nn.Dense(2)(norm(nn.Dense(5)(h)) + h)
    prog = nc.compile(nn.Model(x, y, loss=nn.MSE(), name=f"twice_{kind}"))
    assert len(prog.trainable) == 8
    _against_torch(prog, 6, seed=5)
    X, Y = random_batch(prog, 6, 5)
    assert max(check_gradients(prog, _moved(prog, 5), X, Y, samples=0).values()) < 1e-6
