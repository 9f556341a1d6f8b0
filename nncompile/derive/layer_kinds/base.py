"""The interface every layer rule implements, and the registry that finds a layer's rule by its class."""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...dsl.graph import Layer
from ...errors import ModelError
from ..builder import Builder, Site


@dataclass
class Sent:
    """A contribution to the δ of input `position`: held in `buffer`, shown as `eq` (raw form `raw`)."""

    position: int
    buffer: str
    eq: sp.Eq
    raw: sp.Eq | None = None


class Rule:
    """How one kind of layer enters the chain rule."""

    #: whether training and evaluation differ (batch statistics, dropout): forward_eval is then called too
    stochastic = False

    def forward(self, b: Builder, site: Site) -> None:
        """Name `site.out`, append the forward ops, set `site.record`."""
        raise NotImplementedError

    def forward_eval(self, b: Builder, site: Site) -> None:
        """Evaluation-mode forward ops (only where `stochastic`)."""

    def backward(self, b: Builder, site: Site, delta: str) -> list[Sent]:
        """Backward ops given the buffer `delta` holding ∂L/∂(site.out); contributions to inputs needing a δ."""
        raise NotImplementedError


_RULES: list[tuple[type, Rule]] = []


def register(cls: type, rule: Rule) -> None:
    """Make `rule` the one for layers of class `cls` (and its subclasses, unless they have their own)."""
    _RULES.insert(0, (cls, rule))


def rule_for(layer: Layer) -> Rule:
    for cls, rule in _RULES:
        if isinstance(layer, cls):
            return rule
    raise ModelError(f"layer {layer.describe()} ({type(layer).__name__}) has no derivation rule")


def target(b: Builder, site: Site, position: int) -> str:
    """The name of what `site` sends to input `position`: d<input> when the input has one reader,
    else d<input>_via_<site> (a path of a fan-out, summed by the walk)."""
    inp = site.inputs[position]
    base = f"d{inp.out}" if inp.edges == 1 else f"d{inp.out}_via_{site.out}"
    return b.next_name(base)
