"""Hypothesis strategies for random models, and an independent NumPy forward pass to check them.

`models()` draws sequential architectures from the public DSL: 1-6 Dense layers of width
1-32, any mix of built-in and custom activations (fixed formulas and random ones from a
grammar), every loss, l1/l2.  `reference_forward` evaluates a model from the formulas as
written (sympy.lambdify, not nncompile's printer) and reports the pre-activations that sit
at a kink, so a finite-difference check can skip steps that cross one.

`examples(n)`: n examples per property test in CI; NNCOMPILE_HYPOTHESIS_EXAMPLES=N asks for N.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp
from hypothesis import strategies as st

from nncompile import nn
from nncompile.symbolic import calculus
from nncompile.symbolic.rules import X as XSYM


def examples(default: int) -> int:
    """Examples per property test: `default` in CI, more with NNCOMPILE_HYPOTHESIS_EXAMPLES."""
    value = os.environ.get("NNCOMPILE_HYPOTHESIS_EXAMPLES")
    return int(value) if value else default


# Custom activations with known shapes: smooth ones, and a few with a kink at x = 0 only.
CUSTOM_FORMULAS = (
    "x*tanh(log(1 + exp(x)))",          # mish
    "x/(1 + exp(-x))",                  # swish
    "x^2/(1 + abs(x))",
    "sin(x) + x/2",
    "atan(x)",
    "asinh(x)",
    "x*sigmoid(1.702*x)",               # GELU, sigmoid approximation
    "exp(-x^2)",
    "log(1 + x^2)",
    "tanh(x)^2 + x",
    "max(x, 0.2*x)",
    "softplus(x) - log(2)",
    "x^3/10 + x",
    "x × tanh(x) − 1",
    lambda x: sp.sqrt(1 + x**2) - 1,    # a callable on a SymPy symbol
    sp.tanh(XSYM) * sp.cos(XSYM),      # a SymPy expression
)

CUSTOM_LOSSES = ("log(cosh(y - t))", "sqrt(1 + (y - t)^2) - 1", "(y - t)^4/4 + (y - t)^2", "(exp(y - t) - (y - t) - 1)")

BUILTIN = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "identity": nn.Identity,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
}

_COEFFICIENTS = ("0.5", "2", "3", "-1", "0.3")


def _linear_growth(depth: int) -> st.SearchStrategy[str]:
    """Formulas in x that grow at most linearly, so deep stacks stay finite."""
    leaf = st.just("x")
    if depth == 0:
        return leaf
    sub, bounded = _linear_growth(depth - 1), _bounded(depth - 1)
    return st.one_of(
        leaf,
        st.builds("softplus({})".format, sub), st.builds("asinh({})".format, sub),
        st.builds("({} + {})".format, sub, sub), st.builds("{}*({})".format, st.sampled_from(_COEFFICIENTS), sub),
        st.builds("({})*({})".format, sub, bounded), bounded,
    )


def _bounded(depth: int) -> st.SearchStrategy[str]:
    """Bounded smooth formulas in x."""
    inner = _linear_growth(depth) if depth > 0 else st.just("x")
    fn = st.sampled_from(("sin", "cos", "tanh", "atan", "sigmoid"))
    out = st.one_of(st.builds("{}({})".format, fn, inner), st.builds("exp(-({})^2)".format, inner))
    if depth > 0:
        nested = _bounded(depth - 1)
        out = st.one_of(out, st.builds("({})*({})".format, nested, nested),
                        st.builds("({} + {})".format, nested, nested))
    return out


#: Random smooth activation formulas from a small grammar (strings, so the parser is exercised too).
random_formulas = _linear_growth(3)


@st.composite
def activations(draw: st.DrawFn) -> nn.Layer:
    kind = draw(st.sampled_from(("builtin", "builtin", "custom", "random", "softmax")))
    if kind == "builtin":
        return BUILTIN[draw(st.sampled_from(sorted(BUILTIN)))]()
    if kind == "custom":
        return nn.Activation(draw(st.sampled_from(CUSTOM_FORMULAS)), name="custom")
    if kind == "random":
        return nn.Activation(draw(random_formulas), name="random")
    return nn.Softmax()


LOSSES = ("mse", "bce", "ce", "ce_sigmoid", "softmax_ce", "custom")


@st.composite
def models(draw: st.DrawFn, max_width: int = 32) -> nn.Sequential:
    """A random valid model: 1-6 Dense layers, activations between and after them, any loss."""
    depth = draw(st.integers(1, 6))
    width = st.integers(1, max_width)
    loss_kind = draw(st.sampled_from(LOSSES))
    out_width = draw(st.integers(2, 8) if loss_kind in ("ce", "softmax_ce") else st.integers(1, 8))
    layers: list[nn.Layer] = []
    for k in range(depth):
        last = k == depth - 1
        layers.append(nn.Dense(out_width if last else draw(width)))
        if not last:
            layers += draw(st.lists(activations(), max_size=2))
    if loss_kind in ("mse", "custom", "softmax_ce"):
        tail = draw(st.lists(activations().filter(lambda a: not isinstance(a, nn.Softmax)), max_size=1))
        layers += tail
        loss = {"mse": nn.MSE(), "softmax_ce": nn.SoftmaxCrossEntropy(),
                "custom": nn.Loss(draw(st.sampled_from(CUSTOM_LOSSES)), name="custom_loss")}[loss_kind]
    elif loss_kind == "bce":
        layers.append(nn.Sigmoid())
        loss = nn.BinaryCrossEntropy()
    else:
        layers.append(nn.Softmax() if loss_kind == "ce" else nn.Sigmoid())
        loss = nn.CrossEntropy()
    penalty = st.sampled_from((0.0, 0.0, 1e-3, 0.05))
    return nn.Sequential(*layers, input_dim=draw(width), loss=loss, l1=draw(penalty), l2=draw(penalty),
                         name="random_model")


# -- an independent forward pass ------------------------------------------------------

_MODULES = [{"sigmoid": lambda u: 0.5 + 0.5 * np.tanh(0.5 * u), "softplus": lambda u: np.logaddexp(0, u),
             "Heaviside": lambda u, h=0.5: np.heaviside(u, h)}, "numpy"]


@lru_cache(maxsize=512)
def _numeric(expr: sp.Expr):  # noqa: ANN202
    return sp.lambdify(XSYM, expr, modules=_MODULES)


@dataclass
class Forward:
    """Output of a reference forward pass, and the pre-activations of activations with a kink at 0."""

    output: np.ndarray
    kinked: list[np.ndarray]

    def pattern(self) -> list[np.ndarray]:
        return [np.sign(z) for z in self.kinked]


def reference_forward(model: nn.Sequential, params: dict, X: np.ndarray) -> Forward:
    """The model's output computed from its formulas as written, in float64 NumPy."""
    h, kinked = np.asarray(X, dtype=np.float64), []
    for layer in model.layers:
        if isinstance(layer, nn.Dense):
            h = h @ params[f"{layer.name}.W"] + params[f"{layer.name}.b"]
        elif isinstance(layer, nn.Softmax):
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
        else:
            if calculus.activation(layer.function).kinks:
                kinked.append(h)
            with np.errstate(over="ignore"):
                h = np.broadcast_to(_numeric(layer.function.expr)(h), h.shape).astype(np.float64)
    return Forward(h, kinked)
