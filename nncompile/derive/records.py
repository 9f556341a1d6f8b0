"""What the derivation did at each node, for people: `LayerRecord`s, and the `Derivation` holding them.

A record holds SymPy equations over the derivation's named arrays (`symbolic.notation`)
with the IR formulas of the ops that implement them, which are the comments of the
generated code.  The backward equations are kept where a person reads them: `received`
holds, in the order the code runs them, the equations that give the δ at the node's
output (one per consumer, each path named, then their sum when the node fans out), so
the section of a layer starts from the δ that reaches it, as a textbook does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..dsl.models import Model
from ..symbolic.calculus import LocalDerivative, OutputDelta
from ..symbolic.rules import LossFunction
from .ir import Program


@dataclass
class LayerRecord:
    """What the derivation did at one node (one call of a layer), or at the loss.

    `forward` is the node's equation (`rows` may add more, such as a normalization's
    steps); `received` the (equation, raw equation) pairs giving the δ at `out`, the raw
    one with SymPy's unsimplified derivatives; `steps` the node's own backward equations
    (a normalization's derivation step by step); `gradients` ∂L/∂(parameter) of this use;
    `code` the IR formulas of the ops this node runs in the backward pass.  An "output"
    record (the loss) says by `rule` how its delta was found: "composite" (loss∘activation
    simplified, see `output`), "softmax_cross_entropy" (p - t) or "loss_gradient" (dl/dp,
    then back through the softmax layer).
    """

    layer: str
    kind: str  # "dense", "activation", "softmax", "add", "multiply", "concat", ... or "output"
    forward: sp.Eq
    inp: str = ""
    out: str = ""
    local: LocalDerivative | None = None
    output: OutputDelta | None = None
    backward: list[sp.Eq] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loss: LossFunction | None = None
    rule: str = ""
    inputs: tuple[str, ...] = ()
    received: list[tuple[sp.Eq, sp.Eq]] = field(default_factory=list)
    steps: list[sp.Eq] = field(default_factory=list)
    rows: list[tuple[str, tuple[sp.Basic, ...]]] = field(default_factory=list)
    gradients: dict[str, sp.Eq] = field(default_factory=dict)
    penalties: dict[str, list[sp.Expr]] = field(default_factory=dict)  # of a shared weight, shown once in its sum
    derived: list[tuple[str, sp.Eq]] = field(default_factory=list)    # (label, equation): a layer's own derivation
    description: str = ""   # what the layer does, in a few words, where its formula does not say it
    constants: dict[sp.Symbol, float] = field(default_factory=dict)  # ε, D, p of this layer: their values
    call: int = 1
    label: str = ""  # the node as sections name it: the layer, "dense1@2" for a second call
    writes: str = ""  # the buffer the node's own backward op writes (an activation's δ·f'), if it has one


@dataclass
class Derivation:
    """The derivation as records (in forward order, then the loss), plus the Program IR built from it."""

    model: Model
    records: list[LayerRecord]
    loss: str
    program: Program
    aliases: dict[str, str] = field(default_factory=dict)  # a δ's shown name -> its buffer, where they differ
