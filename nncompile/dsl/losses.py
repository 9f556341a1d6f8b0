"""Losses a person declares: the built-in ones and `Loss(formula)`, each a mean over the batch."""
from __future__ import annotations

from ..symbolic.parse import FormulaLike, to_expr
from ..symbolic.rules import LOSSES, LossFunction
from .checks import identifier


class Loss:
    """Elementwise loss l(y, t) in the prediction y and target t; the mean over all elements.

    ``Loss("(y - t)**2", name="sq")`` equals MSE; the formula may be a string, a SymPy
    expression or a callable of (y, t).
    """

    def __init__(self, formula: FormulaLike | LossFunction, name: str | None = None) -> None:
        if isinstance(formula, LossFunction):
            self.function = formula
        else:
            lname = identifier(name or "loss", "loss name")
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
