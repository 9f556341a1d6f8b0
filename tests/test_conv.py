"""Convolution, pooling and Flatten without PyTorch: loop references, finite differences, the formulas shown.

The forward pass against loops over every output entry (`reference.conv2d`, `reference.pool2d`);
gradients against central finite differences of the compiled loss; the max-pooling tie rule
against a backward pass written by hand; and the formulas `derive` shows, evaluated entry by
entry, against the compiled gradients.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import conv_models
import nncompile as nc
from nncompile import nn
from nncompile.gradcheck import check_gradients, random_batch
from reference import conv2d, pool2d

TOL = 1e-6


def _identity_head(width: int) -> dict:
    return {"W": np.eye(width), "b": np.zeros(width)}


@pytest.mark.parametrize("channels, size, filters, kernel, stride, padding", [
    (1, (8, 8), 4, 3, 1, 1), (3, (7, 9), 2, (3, 2), (2, 1), (1, 0)), (2, (6, 5), 3, 1, 1, 2),
    (2, (9, 9), 1, 5, 2, 2), (4, (4, 6), 3, (2, 3), 1, (0, 1)),
])
def test_conv_forward_equals_the_loop_reference(channels: int, size: tuple, filters: int, kernel: object,
                                                stride: object, padding: object) -> None:
    conv = nn.Conv2D(filters, kernel, stride=stride, padding=padding)
    x = nn.Input((channels, *size))
    flat = nn.Flatten()(conv(x))
    model = nn.Model(x, nn.Dense(flat.shape[0], name="head")(flat), loss=nn.MSE(), name="conv_forward")
    prog = nc.compile(model)
    params = prog.init_params(1)
    params.update({f"head.{k}": v for k, v in _identity_head(flat.shape[0]).items()})
    params["conv1.b"] = np.arange(filters) / 3.0
    X = np.random.default_rng(0).normal(size=(3, channels, *size))
    want = conv2d(X, params["conv1.W"], params["conv1.b"], conv.stride, conv.padding)
    np.testing.assert_allclose(prog.forward(params, X), want.reshape(3, -1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("image, size, stride, after_conv", [((8, 6), 2, None, True), ((8, 6), 2, None, False),
                                                             ((9, 8), 2, 1, True), ((9, 8), (3, 2), (2, 3), False),
                                                             ((9, 9), 1, 2, True), ((9, 9), 3, 3, False)])
def test_pooling_forward_equals_the_loop_reference(mode: str, image: tuple, size: object, stride: object,
                                                   after_conv: bool) -> None:
    """Pooling of a stored image (after a conv) and of the model's input itself; windows that tile,
    overlap or leave gaps."""
    x = nn.Input((2, *image))
    source = nn.Conv2D(2, 1, name="pre")(x) if after_conv else x
    kind = nn.MaxPool2D if mode == "max" else nn.AvgPool2D
    pool = kind(size, stride=stride)
    flat = nn.Flatten()(pool(source))
    model = nn.Model(x, nn.Dense(flat.shape[0], name="head")(flat), loss=nn.MSE(), name=f"pool_{mode}")
    prog = nc.compile(model)
    params = prog.init_params(2)
    params.update({f"head.{k}": v for k, v in _identity_head(flat.shape[0]).items()})
    if after_conv:
        params["pre.W"], params["pre.b"] = np.eye(2).reshape(2, 2, 1, 1), np.zeros(2)
    X = np.round(np.random.default_rng(1).normal(size=(4, 2, *image)), 1)   # with ties
    want, _ = pool2d(X, pool.kernel, pool.stride, mode)
    np.testing.assert_allclose(prog.forward(params, X), want.reshape(4, -1), rtol=1e-13, atol=1e-13)


def test_max_pooling_ties_route_the_gradient_to_the_first_maximum() -> None:
    """Against a backward pass written by hand with the tie rule: windows whose channel sums tie (1 + 0 and
    0 + 1, and integer data) send δ to their first maximum only, which the 1x1 kernel's gradient shows."""
    x = nn.Input((2, 4, 6))
    h = nn.MaxPool2D(2)(nn.Conv2D(1, 1, name="mix")(x))
    model = nn.Model(x, nn.Dense(3, name="head")(nn.Flatten()(h)), loss=nn.MSE(), name="ties_fd")
    prog = nc.compile(model)
    params = prog.init_params(0)
    params["mix.W"], params["mix.b"] = np.ones((1, 2, 1, 1)), np.zeros(1)
    X = np.zeros((3, 2, 4, 6))
    X[:, 0, ::2, ::2], X[:, 1, 1::2, 1::2] = 1.0, 1.0
    X[2] = np.round(np.random.default_rng(0).normal(size=(2, 4, 6)))
    T = np.random.default_rng(1).normal(size=(3, 3))
    _, grads = prog.loss_and_grad(params, X, T)
    z = np.einsum("nchw,c->nhw", X, params["mix.W"][0, :, 0, 0])[:, None]
    pooled, first = pool2d(z, (2, 2), (2, 2), "max")
    out = pooled.reshape(3, -1) @ params["head.W"] + params["head.b"]
    dpool = (2 * (out - T) / T.size @ params["head.W"].T).reshape(pooled.shape)
    dz = np.zeros_like(z)
    for i, j in itertools.product(range(2), range(3)):
        dz[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] += first[:, :, i, j] * dpool[:, :, i, j, None, None]
    want = np.einsum("nhw,nchw->c", dz[:, 0], X).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(grads["mix.W"], want, rtol=1e-12, atol=1e-15)
    spread = np.einsum("nhw,nchw->c", np.repeat(np.repeat(dpool[:, 0], 2, 1), 2, 2) *
                       (z[:, 0] == np.repeat(np.repeat(pooled[:, 0], 2, 1), 2, 2)), X)
    assert np.abs(spread - want.ravel()).max() > 1e-3   # sending δ to every tied maximum would differ


@pytest.mark.parametrize("name", ["grid", "mixed", "digits_cnn", "shared_bias_l1"])
def test_gradients_equal_finite_differences(name: str) -> None:
    if name == "grid":   # every eighth grid configuration: strides, paddings, pools, BatchNorm2d, activations
        model = conv_models.packed(conv_models.chunks(conv_models.grid(), 8)[1], "grid_fd", l2=0.01)
    elif name == "mixed":   # shared kernel, Add and Concat of images, dropout on an image, pooling with gaps
        model = conv_models.mixed()
    elif name == "digits_cnn":
        model = conv_models.example()
    else:   # one kernel applied twice in a row (its gradient is the sum of both uses), l1 on it
        x = nn.Input((2, 6, 6))
        shared = nn.Conv2D(2, 3, padding=1)
        h = nn.AvgPool2D(3, stride=3)(nn.Sigmoid()(shared(nn.Softplus()(shared(x)))))
        model = nn.Model(x, nn.Dense(2)(nn.Flatten()(h)), loss=nn.MSE(), l1=0.01, name=name)
    prog = nc.compile(model)
    X, Y = random_batch(prog, 4, 5)
    params = prog.init_params(5, scheme="xavier")
    rng = np.random.default_rng(6)
    params = {k: v + (0 if "running" in k else rng.normal(scale=0.2, size=v.shape)) for k, v in params.items()}
    report = check_gradients(prog, params, X, Y, samples=40, seed=5)
    assert max(report.values()) <= TOL, report


def test_the_flipped_kernel_form_is_checked_not_assumed(monkeypatch: pytest.MonkeyPatch) -> None:
    """SymPy's entry-by-entry check of the full correlation with the flipped kernel holds for several
    geometries, and fails for a kernel flipped one entry off (k - p instead of k - 1 - p)."""
    from nncompile.symbolic import convolution as cv
    assert cv.check_flipped() and cv.check_flipped(2, 3, 3, 2, 2, 1, 6) and cv.check_flipped(1, 1, 2, 2, 0, 0, 4)
    right = cv.flipped_form()
    wrong = sp.Eq(right.lhs, right.rhs.xreplace({cv.KH - 1 - cv.p: cv.KH - cv.p}), evaluate=False)
    monkeypatch.setattr(cv, "flipped_form", lambda: wrong)
    assert not cv.check_flipped.__wrapped__(3, 2, 2, 1, 1, 0, 5)
