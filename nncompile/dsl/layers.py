"""Layers a person declares: Dense, the elementwise activations, Softmax, LayerNorm, BatchNorm, Dropout.

Each layer checks its own arguments when declared and its input's shape when called on a
node (`graph.Layer`); `models` checks how they fit together.  An activation is a registry
formula (`symbolic.rules`) or one the person writes, parsed by the whitelist parser, never
evaluated.
"""
from __future__ import annotations

from ..errors import ModelError
from ..symbolic.parse import FormulaLike, to_expr
from ..symbolic.rules import ACTIVATIONS, ElementwiseFunction, leaky_relu
from .checks import fraction, identifier, non_negative, positive_int, positive_number
from .graph import Layer, Param, Shape, shape_text

__all__ = ["Layer", "Dense", "Activation", "Sigmoid", "Tanh", "ReLU", "Softplus", "Identity", "LeakyReLU", "Softmax",
           "LayerNorm", "BatchNorm", "Dropout"]


def flat_features(layer: Layer, shape: Shape) -> int:
    """The width of a (N, features) input; an image-shaped input is refused in one line."""
    if len(shape) != 1:
        raise ModelError(f"{layer.describe()} takes (N, features) inputs, but its input has shape "
                         f"{shape_text(shape)}: flatten it first (nn.Flatten())")
    return shape[0]


class Dense(Layer):
    """Affine layer z = x·W + b with W of shape (in, units) and b of shape (units,)."""

    kind = "dense"

    def __init__(self, units: int, name: str | None = None, in_features: int | None = None) -> None:
        super().__init__(name)
        self.units = positive_int(units, "Dense units")
        self.in_features = None if in_features is None else positive_int(in_features, "Dense in_features")

    def out_shape(self, *shapes: Shape) -> Shape:
        in_features = flat_features(self, shapes[0])
        if self.in_features is not None and self.in_features != in_features:
            raise ModelError(f"layer {self.describe()}: declared in_features={self.in_features} "
                             f"but it receives {in_features} features")
        return (self.units,)

    def parameters(self, shapes: tuple[Shape, ...]) -> tuple[Param, ...]:
        return (Param("W", (shapes[0][0], self.units), "weight", regularized=True), Param("b", (self.units,), "zeros"))

    def spec(self) -> str:
        return f"dense:{self.name}:{self.units}"

    def __repr__(self) -> str:
        return f"Dense({self.units})" if self.name is None else f"Dense({self.units}, name={self.name!r})"


class Activation(Layer):
    """Elementwise activation given by formula in x: a string, SymPy expression or callable.

    ``Activation("x*tanh(log(1 + exp(x)))", name="mish")``: its derivative is derived by SymPy.
    """

    kind = "activation"
    named = False

    def __init__(self, formula: FormulaLike | ElementwiseFunction, name: str | None = None) -> None:
        super().__init__(None)
        if isinstance(formula, ElementwiseFunction):
            self.function = formula
        else:
            fname = identifier(name or "activation", "activation name")
            self.function = ElementwiseFunction(fname, to_expr(formula, ("x",), f"activation {fname}"))

    def spec(self) -> str:
        return f"activation:{self.function.key()}"

    def describe(self) -> str:
        return self.function.name

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
        self.alpha = non_negative(alpha, "LeakyReLU alpha")
        super().__init__(leaky_relu(self.alpha))

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Softmax(Layer):
    """Row-wise softmax exp(z)/Σ exp(z), computed with the row maximum subtracted."""

    kind = "softmax"
    named = False

    def out_shape(self, *shapes: Shape) -> Shape:
        flat_features(self, shapes[0])
        return shapes[0]

    def spec(self) -> str:
        return "softmax"


class LayerNorm(Layer):
    """y = γ ⊙ (x − μ)/√(σ² + eps) + β, with μ and the biased σ² of each row over its features
    (as torch.nn.LayerNorm); parameters gamma (ones) and beta (zeros), one per feature."""

    kind = "layernorm"

    def __init__(self, eps: float = 1e-5, name: str | None = None) -> None:
        super().__init__(name)
        self.eps = positive_number(eps, "LayerNorm eps")

    def out_shape(self, *shapes: Shape) -> Shape:
        flat_features(self, shapes[0])
        return shapes[0]

    def parameters(self, shapes: tuple[Shape, ...]) -> tuple[Param, ...]:
        width = shapes[0][0] if shapes else 0
        return (Param("gamma", (width,), "ones"), Param("beta", (width,), "zeros"))

    def spec(self) -> str:
        return f"layernorm:{self.name}:{self.eps!r}"

    def __repr__(self) -> str:
        return f"LayerNorm(eps={self.eps})"


class BatchNorm(Layer):
    """y = γ ⊙ (x − μ)/√(σ² + eps) + β per feature, as torch.nn.BatchNorm1d; on images (N, C, H, W)
    per channel, over (N, H, W), as torch.nn.BatchNorm2d.

    Training uses the batch's mean and biased variance, and each training step updates the
    running statistics: running ← (1 − momentum)·running + momentum·batch statistic, with the
    unbiased variance for running_var; evaluation (forward, evaluate, predict) uses them.
    Parameters gamma (ones), beta (zeros), then buffers running_mean (zeros), running_var (ones).
    """

    kind = "batchnorm"

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, name: str | None = None) -> None:
        super().__init__(name)
        self.momentum = fraction(momentum, "BatchNorm momentum", closed=True)
        self.eps = positive_number(eps, "BatchNorm eps")

    def out_shape(self, *shapes: Shape) -> Shape:
        if len(shapes[0]) not in (1, 3):
            raise ModelError(f"{self.describe()} normalizes (N, features) or (N, C, H, W) inputs; its input has "
                             f"shape {shape_text(shapes[0])}")
        return shapes[0]

    def parameters(self, shapes: tuple[Shape, ...]) -> tuple[Param, ...]:
        width = shapes[0][0] if shapes else 0  # features, or channels of an image
        return (Param("gamma", (width,), "ones"), Param("beta", (width,), "zeros"),
                Param("running_mean", (width,), "zeros", trainable=False),
                Param("running_var", (width,), "ones", trainable=False))

    def spec(self) -> str:
        return f"batchnorm:{self.name}:{self.momentum!r}:{self.eps!r}"

    def __repr__(self) -> str:
        return f"BatchNorm(momentum={self.momentum}, eps={self.eps})"


class Dropout(Layer):
    """Inverted dropout: in training each element is kept with probability 1 − p and scaled by
    1/(1 − p), else set to 0; in evaluation the identity.  Masks come from a counter-based
    generator keyed by (seed, update count, layer, element), the same in NumPy and CUDA."""

    kind = "dropout"

    def __init__(self, p: float = 0.5, name: str | None = None) -> None:
        super().__init__(name)
        self.p = fraction(p, "Dropout p")

    def spec(self) -> str:
        return f"dropout:{self.name}:{self.p!r}"

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
