"""Models for the CUDA tests: together they use every activation, loss, penalty and function.

Each program holds every optimizer's step, so compiling these in both dtypes covers the
matrix of activations × losses × optimizers × dtypes the CUDA backend must handle.
"""
from __future__ import annotations

from pathlib import Path

import sympy as sp

import conv_models
import dag_models
from nncompile import nn
from nncompile import load_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("xor", "digits", "mish")
_x = sp.Symbol("x")


#: Models the NumPy backend gets wrong, which the GPU tests check against finite differences
#: instead: none today (test_cuda_host.py holds every model to the NumPy backend on the CPU).
NUMPY_FAILS: frozenset[str] = frozenset()


def _norms_dropout() -> nn.Model:
    x = nn.Input(5)
    h = nn.ReLU()(nn.BatchNorm()(nn.Dense(7)(x)))
    h = nn.LayerNorm()(h + nn.Dropout(0.25)(nn.Tanh()(nn.Dense(7)(h))))
    return nn.Model(x, nn.Dense(3)(nn.Dropout(0.1)(h)), loss=nn.SoftmaxCrossEntropy(), l2=0.01, name="norms_dropout")


def matrix() -> dict[str, nn.Sequential]:
    """name -> model, fresh objects on every call."""
    models = {name: load_model(str(ROOT / "examples" / f"{name}.py"))[0] for name in EXAMPLES}
    trig = nn.Activation("sinh(x)/8 + cosh(x)/9 + sin(x) + cos(x)/2 + tan(x/9) + atan(x)", name="trig")
    rest = nn.Activation("abs(x)/3 + max(x, 0)/2 + min(x, 1)/3 + log1p(x^2) + expm1(-x^2)/4 + exp(-x^2)"
                         " + log(2 + x^2)", name="rest")
    half_powers = nn.Activation("asinh(x) + log(2 + x^2) + sqrt(1 + x^2)", name="half_powers")
    models.update({
        "sigmoid_tanh_mse_l2": nn.Sequential(nn.Dense(6), nn.Sigmoid(), nn.Dense(5), nn.Tanh(), nn.Dense(3),
                                             input_dim=4, loss=nn.MSE(), l2=0.01),
        "relu_leaky_bce_l1": nn.Sequential(nn.Dense(6), nn.ReLU(), nn.Dense(5), nn.LeakyReLU(0.1), nn.Dense(2),
                                           nn.Sigmoid(), input_dim=4, loss=nn.BinaryCrossEntropy(), l1=0.01),
        "softplus_identity_logits": nn.Sequential(nn.Dense(6), nn.Softplus(), nn.Dense(5), nn.Identity(),
                                                  nn.Dense(3), input_dim=4, loss=nn.SoftmaxCrossEntropy()),
        "hidden_softmax_stack": nn.Sequential(nn.Dense(4), nn.Softmax(), nn.Dense(4), nn.Dense(3), nn.Tanh(),
                                              nn.Sigmoid(), nn.Dense(2), nn.Softmax(), input_dim=3, loss=nn.MSE(),
                                              l1=0.01, l2=0.1),
        "custom_formulas": nn.Sequential(nn.Dense(5), nn.Activation("x^2/(1 + abs(x))", name="soft_square"),
                                         nn.Dense(4), nn.Activation(_x / (1 + sp.exp(-_x)), name="swish"),
                                         nn.Dense(2), input_dim=3,
                                         loss=nn.Loss("sqrt(1 + (y - t)^2) - 1", name="pseudo_huber")),
        "cross_entropy_after_sigmoid": nn.Sequential(nn.Dense(3), nn.Tanh(), nn.Dense(2), nn.Sigmoid(),
                                                     input_dim=2, loss=nn.CrossEntropy()),
        "every_function": nn.Sequential(nn.Dense(5), trig, nn.Dense(4), rest, nn.Dense(1), input_dim=2,
                                        loss=nn.MSE()),
        "half_powers": nn.Sequential(nn.Dense(4), half_powers, nn.Dense(2), input_dim=2, loss=nn.MSE()),
        "dag_everything": dag_models.everything(),     # fan-out, a shared layer, Add, Multiply, Concat
        "dag_two_inputs": dag_models.two_inputs(),     # two inputs read from X's columns
        "norms_dropout": _norms_dropout(),              # BatchNorm, LayerNorm (row kernels), Dropout masks
        "digits_cnn": conv_models.example(),            # im2col + GEMMs, BatchNorm2d (channel kernels), max-pool
        "mixed_images": conv_models.mixed(),            # a shared kernel, strides and paddings in pairs, avg-pool,
    })                                                  # pools with gaps, Concat of images, Dropout on an image
    return models


def large() -> dict[str, tuple[nn.Sequential, int]]:
    """name -> (model, batch size) past the grid-stride limit of the CUDA kernels.

    An elementwise kernel launches at most MAX_BLOCKS x BLOCK = 8192 x 256 = 2,097,152
    threads and loops over the rest: this model's hidden layer at this batch (4 x 530,000
    = 2,120,000 elements) and its parameter vector (2,120,001 entries: every optimizer's
    update) each take a second pass, with matrix products small enough for a test.
    """
    wide = nn.Sequential(nn.Dense(530_000), nn.Tanh(), nn.Dense(1), input_dim=2, loss=nn.MSE(), l2=1e-4,
                         name="wide")
    return {"wide": (wide, 4)}
