"""Functional models for the tests: skip connections, fan-out, concatenation, gates, shared weights, two inputs.

Each builder returns a fresh model (new layer objects), so tests can compile them freely.
"""
from __future__ import annotations

from nncompile import nn

HIDDEN = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1),
          "softplus": nn.Softplus, "identity": nn.Identity}
#: loss -> (output layers after the last Dense, the loss); the output width is 3
LOSSES = {"mse": (lambda: [], nn.MSE), "bce": (lambda: [nn.Sigmoid()], nn.BinaryCrossEntropy),
          "ce": (lambda: [nn.Softmax()], nn.CrossEntropy), "softmax_ce": (lambda: [], nn.SoftmaxCrossEntropy)}


def residual(act: str = "tanh", loss: str = "softmax_ce", l1: float = 0.0, l2: float = 0.0) -> nn.Model:
    """x -> h = f(Dense(x)); r = f(Dense(h)); y = Dense(h + r): the issue's residual MLP (without LayerNorm)."""
    x = nn.Input(4)
    h = HIDDEN[act]()(nn.Dense(6)(x))
    r = HIDDEN[act]()(nn.Dense(6)(h))
    y = nn.Dense(3)(h + r)
    tail, loss_fn = LOSSES[loss]
    for layer in tail():
        y = layer(y)
    return nn.Model(x, y, loss=loss_fn(), l1=l1, l2=l2, name=f"res_{act}_{loss}")


def concat() -> nn.Model:
    """Two branches of different widths joined, then a head."""
    x = nn.Input(5)
    a = nn.Tanh()(nn.Dense(4)(x))
    b = nn.ReLU()(nn.Dense(3)(x))
    y = nn.Dense(2)(nn.Concat()(a, b, x))
    return nn.Model(x, y, loss=nn.MSE(), l2=0.01, name="concat_net")


def gated() -> nn.Model:
    """A gate: h ⊙ σ(Dense(h)), the Multiply merge (the GLU pattern)."""
    x = nn.Input(4)
    h = nn.Tanh()(nn.Dense(5)(x))
    gate = nn.Sigmoid()(nn.Dense(5)(x))
    y = nn.Sigmoid()(nn.Dense(2)(h * gate))
    return nn.Model(x, y, loss=nn.BinaryCrossEntropy(), name="gated_net")


def shared() -> nn.Model:
    """One Dense layer applied twice (a weight-tied block) and a fan-out into the head."""
    x = nn.Input(4)
    block = nn.Dense(4)
    h1 = nn.Tanh()(block(x))
    h2 = nn.Tanh()(block(h1))
    y = nn.Dense(3)(h1 + h2)
    return nn.Model(x, y, loss=nn.SoftmaxCrossEntropy(), l2=0.05, name="shared_net")


def two_inputs() -> nn.Model:
    """Two inputs, each through its own Dense layer, merged by Concat and by Multiply."""
    a, b = nn.Input(3, name="left"), nn.Input(2, name="right")
    ha = nn.Softplus()(nn.Dense(4)(a))
    hb = nn.Tanh()(nn.Dense(4)(b))
    y = nn.Dense(2)(nn.Concat()(ha * hb, hb, b))
    return nn.Model([a, b], y, loss=nn.MSE(), name="two_inputs")


def everything() -> nn.Model:
    """Fan-out into four readers, a shared layer on two paths, every merge, a node read twice by one merge."""
    x = nn.Input(3)
    h = nn.Tanh()(nn.Dense(4)(x))
    tied = nn.Dense(4)
    p = nn.Sigmoid()(tied(h))
    q = nn.Softplus()(tied(h * h))
    m = nn.Concat()(p + q + h, p * q)
    y = nn.Softmax()(nn.Dense(3)(m))
    return nn.Model(x, y, loss=nn.CrossEntropy(), l1=0.01, l2=0.02, name="everything")


MODELS = {"residual": residual, "concat": concat, "gated": gated, "shared": shared, "two_inputs": two_inputs,
          "everything": everything}
