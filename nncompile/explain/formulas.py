"""The derivation as objects a person can read, check and reuse: `prog.formulas`.

Built from the records `derive` keeps, layer by layer from the output back to the input:
the forward formula, each activation's derivative as SymPy derived it (raw, simplified,
and in the form the code evaluates), the δ recurrence δₖ = (δₖ₊₁·Wₖ₊₁ᵀ) ⊙ f'(zₖ), and the
parameter gradients ∂L/∂Wₖ = aₖ₋₁ᵀ·δₖ (+ penalty), ∂L/∂bₖ = Σₙ δₖ.  Every formula is a
SymPy object (`sp.Eq` over `notation.NamedArray`s, or an expression in scalar z and a):
`.subs`, `sympy.lambdify` (NumPy arrays of the buffers' shapes) and `sympy.latex` work on
it, and in Jupyter each object displays as rendered mathematics.

Printing is `render`'s job; the scalar view (every weight, for small networks) is `scalar`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import sympy as sp

from ..derive.backprop import Derivation
from ..errors import ModelError
from .assemble import build
from .equations import LayerFormulas, LossFormulas, ParamFormulas, latex_block
from .render import render
from .scalar import ScalarFormulas, expand


@dataclass(frozen=True)
class Formulas:
    """Every formula of a model's derivation; index by layer ("dense1", "loss") or parameter ("dense1.W")."""

    model: str
    summary: str
    loss: LossFormulas
    layers: tuple[LayerFormulas, ...]              # from the output back to the input
    constants: dict[sp.Symbol, float]              # λ₁, λ₂ -> the model's l1, l2
    derivation: Derivation = field(repr=False, compare=False)

    def __iter__(self) -> Iterator[LayerFormulas]:
        return iter(self.layers)

    def __getitem__(self, name: str) -> LayerFormulas | LossFormulas | ParamFormulas:
        if name in ("loss", self.loss.name):
            return self.loss
        for layer in self.layers:
            if layer.name == name:
                return layer
            if name in layer.gradients:
                return self.param(name)
        raise KeyError(f"no layer or parameter {name!r} (layers: {', '.join(self.names)}; "
                       f"parameters: {', '.join(self.param_names)})")

    @property
    def names(self) -> list[str]:
        return ["loss"] + [layer.name for layer in self.layers]

    @property
    def param_names(self) -> list[str]:
        return [p for layer in reversed(self.layers) for p in layer.gradients]

    def check_names(self, layers: list[str] | None, params: list[str] | None) -> None:
        """Refuse unknown layer or parameter names, in one line listing the known ones."""
        activations = {a.name for layer in self.layers for a in layer.activations}
        for name in layers or []:
            if name not in self.names and name not in activations and name != self.loss.name:
                raise ModelError(f"no layer {name!r} (choose from {', '.join(self.names + sorted(activations))})")
        for name in params or []:
            if name not in self.param_names:
                raise ModelError(f"no parameter {name!r} (choose from {', '.join(self.param_names)})")

    def param(self, name: str) -> ParamFormulas:
        """∂L/∂`name` and the chain of δ's from its layer to the loss."""
        for i, layer in enumerate(self.layers):
            if name in layer.gradients:
                deltas = tuple(lay.delta for lay in reversed(self.layers[:i + 1]) if lay.delta is not None)
                return ParamFormulas(name, layer.gradients[name], deltas)
        raise KeyError(f"no parameter {name!r} (parameters: {', '.join(self.param_names)})")

    def scalar(self, simplify: bool = True, params: list[str] | None = None) -> ScalarFormulas:
        """Every weight's gradient as an explicit scalar expression (small networks only); see `scalar`."""
        self.check_names(None, params)
        return expand(self.derivation, "simplified" if simplify else "raw", params)

    def render(self, fmt: str = "text", simplify: bool | None = None, layers: list[str] | None = None,
               params: list[str] | None = None, standalone: bool = False) -> str:
        """The derivation as text, unicode, latex or markdown (see `render.render`)."""
        return render(self, fmt, simplify=simplify, layers=layers, params=params, standalone=standalone)

    def __str__(self) -> str:
        return self.render("text")

    @classmethod
    def of(cls, derivation: Derivation) -> "Formulas":
        """The formulas of a derivation (see `assemble`)."""
        return cls(*build(derivation), derivation)

    def _repr_latex_(self) -> str:
        rows = [(self.loss.loss.lhs, self.loss.loss.rhs), (self.loss.delta.lhs, self.loss.delta.rhs)]
        for layer in self.layers:
            if layer is not self.layers[0] and layer.delta is not None:
                rows.append((layer.delta.lhs, layer.delta.rhs))
            rows += [(g.lhs, g.rhs) for g in layer.gradients.values()]
        return latex_block(rows)
