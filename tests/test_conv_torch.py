"""Convolutional models against PyTorch's autograd in float64: every gradient to rtol 1e-9.

The grid (`conv_models.grid`) covers every pair of kernel size 1-5, stride 1-3, padding 0-2, input
and output channels 1-4, odd and even image sizes, each pooling, BatchNorm2d or not and every
activation, packed into three models (one compile each).  PyTorch computes the same loss from the
same parameters with its own conv2d, pooling and batch norm (`torch_oracle`) and differentiates it
by autograd; test-only, skipped where torch is absent.
"""
from __future__ import annotations

import numpy as np
import pytest

import conv_models
import nncompile as nc
from nncompile import nn

torch = pytest.importorskip("torch")
import torch_oracle  # noqa: E402  (needs torch)
from reference import dropout_mask  # noqa: E402

RTOL = 1e-9
CONFIGS = conv_models.grid()


def _inputs(prog: nc.CompiledProgram, rows: int, seed: int) -> object:
    """Random images, one array per input (the array itself for a model of one input)."""
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(rows, *shape)) for shape in prog.module.INPUT_SHAPES]
    return arrays if len(arrays) > 1 else arrays[0]


def _compare(model: nn.Model, rows: int = 5, seed: int = 0, X: object = None, scheme: str = "auto",
             masks: dict | None = None) -> dict:
    """Our loss and gradients against torch's for random parameters and data; returns our gradients."""
    prog = nc.compile(model)
    params = prog.init_params(seed, scheme)
    rng = np.random.default_rng(seed + 1)
    for name in params:  # biases and BatchNorm's scale and shift away from their initial 0 and 1
        if not name.endswith(("running_mean", "running_var")):
            params[name] = params[name] + rng.normal(scale=0.3, size=params[name].shape)
    if X is None:
        X = _inputs(prog, rows, seed)
    first = X[0] if isinstance(X, list) else X
    labels = rng.integers(0, prog.module.OUTPUT_DIM, size=first.shape[0])
    loss, grads = prog.loss_and_grad(params, X, labels)
    _, T = prog.prepare(X, labels)
    want_loss, want, _ = torch_oracle.loss_and_grad(model, params, X, T, masks)
    assert abs(float(loss) - want_loss) <= RTOL * max(1.0, abs(want_loss))
    assert set(grads) == set(want)
    largest = max(np.abs(g).max() for g in want.values())
    for name, g in grads.items():  # a gradient that is 0 in exact arithmetic (a bias before BatchNorm) is
        scale = max(np.abs(want[name]).max(), 1e-3 * largest)   # round-off on both sides: the model's scale

        assert np.abs(g - want[name]).max() <= RTOL * scale, (name, np.abs(g - want[name]).max() / scale)
    return grads


@pytest.mark.parametrize("part", range(3))
def test_the_pairwise_grid_of_convolutions_matches_autograd(part: int) -> None:
    configs = conv_models.chunks(CONFIGS, 3)[part]
    grads = _compare(conv_models.packed(configs, f"grid{part}", l2=0.01), rows=4, seed=part)
    assert {f"conv{c.index}.W" for c in configs} <= set(grads)
    assert all(np.abs(grads[f"pre{c.index}.W"]).max() > 0 for c in configs)   # δ went through each grid conv


def test_the_grid_covers_every_pair_of_settings() -> None:
    names = list(conv_models.FACTORS)
    rows = [{name: getattr(c, name) for name in names} for c in CONFIGS]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for va in conv_models.FACTORS[a]:
                for vb in conv_models.FACTORS[b]:
                    assert any(r[a] == va and r[b] == vb for r in rows), (a, va, b, vb)
    assert len(CONFIGS) < 60   # pairwise, not the full product (30,240 configurations)
    sizes = [c.size for c in CONFIGS]
    assert any(h % 2 for h, _ in sizes) and any(h % 2 == 0 for h, _ in sizes)


@pytest.mark.parametrize("model", ["digits_cnn", "mixed", "lenet"])
def test_whole_networks_match_autograd(model: str) -> None:
    if model == "digits_cnn":
        _compare(conv_models.example(), rows=6)
    elif model == "lenet":
        _compare(conv_models.lenet(batchnorm=True), rows=3)
    else:  # a shared kernel, Add and Concat of images, pooling with gaps, dropout on an image: its mask is
        built = conv_models.mixed()   # the specified generator's, element i in row-major (N, C, H, W) order
        index, node = next((i, n) for i, n in enumerate(built.nodes) if isinstance(n.layer, nn.Dropout))
        mask = dropout_mask(0, 0, 1, node.layer.p, (5, *node.shape))
        assert 0 < mask.mean() < 1
        _compare(built, rows=5, masks={index: mask})


def test_max_pooling_ties_go_to_the_first_maximum_as_in_pytorch() -> None:
    """Windows full of equal values (after a ReLU, zeros; here exact ties by construction): the gradient
    goes to the first maximum in row-major order, as torch's, so the kernel gradients agree."""
    x = nn.Input((2, 4, 4))
    h = nn.MaxPool2D(2)(nn.ReLU()(nn.Conv2D(2, 1, name="mix")(x)))
    h = nn.MaxPool2D(2, stride=1)(nn.Conv2D(1, 1, name="lift")(h))          # overlapping windows too
    model = nn.Model(x, nn.Dense(2)(nn.Flatten()(h)), loss=nn.SoftmaxCrossEntropy(), name="ties")
    prog = nc.compile(model)
    params = prog.init_params(0)
    params["mix.W"] = np.array([[[[1.0]], [[1.0]]], [[[1.0]], [[-1.0]]]])
    params["lift.W"] = np.array([[[[1.0]], [[0.5]]]])
    X = np.zeros((3, 2, 4, 4))
    X[:, 0, ::2, ::2] = 1.0                       # channel sums tie across each window: 1 + 0 = 0 + 1
    X[:, 1, 1::2, 1::2] = 1.0
    X[2] = np.round(np.random.default_rng(0).normal(size=(2, 4, 4)))   # integers: ties and negative zeros
    labels = np.array([0, 1, 1])
    _, grads = prog.loss_and_grad(params, X, labels)
    _, T = prog.prepare(X, labels)
    _, want, _ = torch_oracle.loss_and_grad(model, params, X, T)
    for name in ("mix.W", "mix.b", "lift.W"):
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-12, atol=1e-14)
    assert np.abs(grads["mix.W"]).max() > 0


def test_batchnorm2d_running_statistics_and_evaluation_match_pytorch() -> None:
    """One training step updates the running mean and the unbiased running variance per channel as
    torch.nn.BatchNorm2d does; forward then normalizes with them (evaluation mode)."""
    model = nn.Sequential(nn.Conv2D(3, 3, padding=1), nn.BatchNorm(momentum=0.3), nn.Tanh(), nn.Flatten(),
                          nn.Dense(2), input_shape=(2, 5, 5), loss=nn.SoftmaxCrossEntropy(), name="bn2d")
    prog = nc.compile(model)
    params = prog.init_params(1)
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(6, 2, 5, 5)), rng.integers(0, 2, size=6)
    result = nc.train(prog, X, y, mode="gd", epochs=1, lr=1e-300, seed=0, params=params)   # weights stay put
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    bn = torch.nn.BatchNorm2d(3, momentum=0.3).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(params["conv1.W"]))
        conv.bias.copy_(torch.tensor(params["conv1.b"]))
        bn.train()
        bn(conv(torch.tensor(X)))
    np.testing.assert_allclose(result.params["batchnorm1.running_mean"], bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(result.params["batchnorm1.running_var"], bn.running_var.numpy(), rtol=1e-12)
    bn.eval()
    with torch.no_grad():
        h = torch.tanh(bn(conv(torch.tensor(X)))).flatten(1)
        want = h @ torch.tensor(params["dense1.W"]) + torch.tensor(params["dense1.b"])
    np.testing.assert_allclose(prog.forward(result.params, X), want.numpy(), rtol=1e-10, atol=1e-12)


def test_float32_gradients_agree_with_float64() -> None:
    model = conv_models.example()
    p64, p32 = nc.compile(model), nc.compile(model, dtype="float32")
    params = p64.init_params(3)
    X = np.random.default_rng(3).normal(size=(8, 1, 8, 8))
    y = np.arange(8) % 10
    _, g64 = p64.loss_and_grad(params, X, y)
    _, g32 = p32.loss_and_grad({k: v.astype(np.float32) for k, v in params.items()}, X.astype(np.float32), y)
    for name, g in g64.items():
        assert g32[name].dtype == np.float32
        assert np.abs(g32[name] - g).max() <= 1e-4 * max(np.abs(g).max(), 1e-3), name
