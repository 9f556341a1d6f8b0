"""The DSL: layers, `Sequential`, losses.  Declaring a model checks its shapes and names.

This module knows the registry of formulas (`rules`) and the formula parser, and nothing
of the later stages: a model is plain data that `derive` turns into a program.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable

from .errors import ModelError, NncompileError
from .formula import FormulaLike, check_identifier, to_expr
from .rules import ACTIVATIONS, LOSSES, ElementwiseFunction, LossFunction, leaky_relu


class Layer:
    """Base class of everything that goes in a `Sequential`."""

    kind = "layer"

    def __init__(self, name: str | None = None) -> None:
        self.name = None if name is None else _name(name, "layer name")

    def out_features(self, in_features: int) -> int:
        """Width of this layer's output given its input width."""
        return in_features

    def spec(self) -> str:
        """Deterministic description, used in cache keys."""
        return f"{self.kind}:{self.name}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Dense(Layer):
    """Affine layer z = x·W + b with W of shape (in, units) and b of shape (units,)."""

    kind = "dense"

    def __init__(self, units: int, name: str | None = None, in_features: int | None = None) -> None:
        super().__init__(name)
        self.units = _positive_int(units, "Dense units")
        self.in_features = None if in_features is None else _positive_int(in_features, "Dense in_features")

    def out_features(self, in_features: int) -> int:
        if self.in_features is not None and self.in_features != in_features:
            raise ModelError(f"layer {self.name}: declared in_features={self.in_features} "
                             f"but it receives {in_features} features")
        return self.units

    def spec(self) -> str:
        return f"dense:{self.name}:{self.units}"

    def __repr__(self) -> str:
        return f"Dense({self.units}, name={self.name!r})"


class Activation(Layer):
    """Elementwise activation given by formula in x: a string, SymPy expression or callable.

    ``Activation("x*tanh(log(1 + exp(x)))", name="mish")``: its derivative is derived by SymPy.
    """

    kind = "activation"

    def __init__(self, formula: FormulaLike | ElementwiseFunction, name: str | None = None) -> None:
        super().__init__(None)
        if isinstance(formula, ElementwiseFunction):
            self.function = formula
        else:
            fname = _name(name or "activation", "activation name")
            self.function = ElementwiseFunction(fname, to_expr(formula, ("x",), f"activation {fname}"))

    def spec(self) -> str:
        return f"activation:{self.function.key()}"

    def __repr__(self) -> str:
        if type(self) is not Activation:
            return f"{type(self).__name__}()"
        return f"Activation({str(self.function.expr)!r}, name={self.function.name!r})"


class Sigmoid(Activation):
    """Logistic sigmoid 1/(1 + exp(-x))."""

    def __init__(self) -> None:
        super().__init__(ACTIVATIONS["sigmoid"])


class Tanh(Activation):
    """Hyperbolic tangent."""

    def __init__(self) -> None:
        super().__init__(ACTIVATIONS["tanh"])


class ReLU(Activation):
    """max(0, x); its derivative at x = 0 is taken as 0."""

    def __init__(self) -> None:
        super().__init__(ACTIVATIONS["relu"])


class Softplus(Activation):
    """log(1 + exp(x)), evaluated without overflow."""

    def __init__(self) -> None:
        super().__init__(ACTIVATIONS["softplus"])


class Identity(Activation):
    """x: no activation (costs nothing in the generated code)."""

    def __init__(self) -> None:
        super().__init__(ACTIVATIONS["identity"])


class LeakyReLU(Activation):
    """x for x > 0, alpha·x otherwise (alpha >= 0); derivative alpha at x = 0."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = _penalty(alpha, "LeakyReLU alpha")
        super().__init__(leaky_relu(self.alpha))

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Softmax(Layer):
    """Row-wise softmax exp(z)/Σ exp(z), computed with the row maximum subtracted."""

    kind = "softmax"

    def spec(self) -> str:
        return "softmax"


class Loss:
    """Elementwise loss l(y, t) in the prediction y and target t; the mean over all elements.

    ``Loss("(y - t)**2", name="sq")`` equals MSE; the formula may be a string, a SymPy
    expression or a callable of (y, t).
    """

    def __init__(self, formula: FormulaLike | LossFunction, name: str | None = None) -> None:
        if isinstance(formula, LossFunction):
            self.function = formula
        else:
            lname = _name(name or "loss", "loss name")
            self.function = LossFunction(lname, to_expr(formula, ("y", "t"), f"loss {lname}"))

    @property
    def name(self) -> str:
        return self.function.name

    def spec(self) -> str:
        return f"loss:{self.function.key()}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MSE(Loss):
    """Mean over all elements of (y - t)²."""

    def __init__(self) -> None:
        super().__init__(LOSSES["mse"])


class BinaryCrossEntropy(Loss):
    """Mean over all elements of -[t log y + (1 - t) log(1 - y)]; after Sigmoid, computed on logits."""

    def __init__(self) -> None:
        super().__init__(LOSSES["binary_cross_entropy"])


class CrossEntropy(Loss):
    """Mean over the batch of -Σ_k t_k log y_k; after Softmax, computed as log-sum-exp."""

    def __init__(self) -> None:
        super().__init__(LOSSES["cross_entropy"])


class SoftmaxCrossEntropy(Loss):
    """CrossEntropy of softmax(z) for logits z: the model's output stays the logits."""

    def __init__(self) -> None:
        super().__init__(LOSSES["cross_entropy"])

    def spec(self) -> str:
        return "loss:softmax_cross_entropy:" + self.function.key()


class Sequential:
    """A stack of layers applied in order to inputs of width `input_dim`.

    Checks at declaration: layer types, widths (`Dense(in_features=...)` against what it
    receives), unique identifier names, the loss against the last layer, l1/l2 >= 0.
    Dense layers without a name become dense1, dense2, ...
    """

    def __init__(self, *layers: Layer | Iterable[Layer], input_dim: int, loss: Loss | None = None,
                 l1: float = 0.0, l2: float = 0.0, name: str = "model") -> None:
        flat: list[Layer] = []
        for item in layers:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        for i, layer in enumerate(flat, 1):
            if not isinstance(layer, Layer):
                raise ModelError(f"layer {i} is {type(layer).__name__}, not an nncompile layer "
                                 "(Dense, an activation or Softmax)")
        if not any(isinstance(layer, Dense) for layer in flat):
            raise ModelError("a model needs at least one Dense layer")
        self.name = _name(name, "model name")
        self.input_dim = _positive_int(input_dim, "input_dim")
        self.layers = tuple(flat)
        self.l1 = _penalty(l1, "l1")
        self.l2 = _penalty(l2, "l2")
        if loss is not None and not isinstance(loss, Loss):
            raise ModelError(f"loss must be an nncompile loss such as nn.MSE(), got {type(loss).__name__}")
        self.loss = loss
        self._name_layers()
        self.check_names()
        self.widths = self._check_widths()
        self._check_loss()

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def dense_layers(self) -> tuple[Dense, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Dense))

    def spec(self) -> str:
        """Deterministic description of everything that determines the generated code."""
        parts = [f"model:{self.name}", f"in:{self.input_dim}", f"l1:{self.l1!r}", f"l2:{self.l2!r}"]
        parts += [layer.spec() for layer in self.layers]
        parts.append(self.loss.spec() if self.loss else "loss:none")
        return "\n".join(parts)

    def check_names(self) -> None:
        """Every name that reaches generated code is a plain identifier (checked again at compile,
        so a name changed after declaration cannot slip through)."""
        _name(self.name, "model name")
        for layer in self.layers:
            if layer.name is not None:
                _name(layer.name, "layer name")
            if isinstance(layer, Activation):
                _name(layer.function.name, "activation name")
        if self.loss is not None:
            _name(self.loss.name, "loss name")

    def _name_layers(self) -> None:
        seen: set[str] = set()
        dense_count = 0
        for layer in self.layers:
            if isinstance(layer, Dense):
                dense_count += 1
                if layer.name is None:
                    layer.name = f"dense{dense_count}"
            if layer.name is not None:
                if layer.name in seen:
                    raise ModelError(f"layer name {layer.name!r} is used twice")
                seen.add(layer.name)

    def _check_widths(self) -> tuple[int, ...]:
        widths = [self.input_dim]
        for layer in self.layers:
            widths.append(layer.out_features(widths[-1]))
        return tuple(widths[1:])

    def _check_loss(self) -> None:
        if self.loss is None:
            return
        last = self.layers[-1]
        if isinstance(self.loss, SoftmaxCrossEntropy):
            if isinstance(last, Softmax):
                raise ModelError("SoftmaxCrossEntropy takes logits but the last layer is Softmax: "
                                 "use CrossEntropy, or drop the Softmax layer")
        elif isinstance(self.loss, CrossEntropy) and isinstance(last, Dense):
            raise ModelError(f"CrossEntropy expects probabilities but the last layer {last.name} "
                             "gives logits: add nn.Softmax() or use nn.SoftmaxCrossEntropy()")
        elif isinstance(self.loss, BinaryCrossEntropy) and isinstance(last, Dense):
            raise ModelError(f"BinaryCrossEntropy expects probabilities but the last layer {last.name} "
                             "gives logits: add nn.Sigmoid()")

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}, input_dim={self.input_dim}, loss={self.loss!r}, name={self.name!r})"


def _name(value: object, what: str) -> str:
    try:
        return check_identifier(value, what)
    except NncompileError as exc:
        raise ModelError(str(exc)) from None


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _penalty(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ModelError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)
