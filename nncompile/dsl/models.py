"""Models: `Sequential`, a chain of layers with a loss.  Declaring one checks its shapes and names.

A model is plain data that `derive` turns into a program: this module knows the layers,
the losses and the registry, and nothing of the later stages.
"""
from __future__ import annotations

from typing import Iterable

from ..errors import ModelError
from .checks import identifier, non_negative, positive_int
from .layers import Activation, Dense, Layer, Softmax
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SoftmaxCrossEntropy


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
        self.name = identifier(name, "model name")
        self.input_dim = positive_int(input_dim, "input_dim")
        self.layers = tuple(flat)
        self.l1 = non_negative(l1, "l1")
        self.l2 = non_negative(l2, "l2")
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
        identifier(self.name, "model name")
        for layer in self.layers:
            if layer.name is not None:
                identifier(layer.name, "layer name")
            if isinstance(layer, Activation):
                identifier(layer.function.name, "activation name")
        if self.loss is not None:
            identifier(self.loss.name, "loss name")

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
