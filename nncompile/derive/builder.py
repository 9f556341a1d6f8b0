"""The derivation's workbench: buffers, parameters, op lists and one `Site` per node of the model.

Layer rules (`layer_kinds`) and the graph walk (`walk`) write into a `Builder`; `entrypoints`
assembles its op lists into the IR's functions.  Names are deterministic: a Dense
layer's k-th output is z{k}, its parameters W{k} and b{k}; other kinds use their own
letters (s for Add, ln for LayerNorm, ...) with the layer's number among its kind; a
second call of a layer gets a primed name (z1_2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..dsl.graph import Layer, Node, Param
from ..dsl.models import Model
from ..symbolic.functions import symbol
from .ir import BATCH, Buffer, Op, ParamSpec, Probe
from .records import LayerRecord


@dataclass
class Site:
    """One node of the model as the derivation sees it: its buffer, its inputs, whether it needs a δ."""

    node: Node
    out: str = ""
    inputs: tuple["Site", ...] = ()
    index: int = 0                 # the number in its buffer names (z2: 2)
    call: int = 1                  # the k-th call of its layer
    grad: bool = False             # a parameter lies upstream: the chain rule reaches this node
    edges: int = 0                 # how many times other nodes read it (a fan-out when > 1)
    record: LayerRecord | None = None
    extra: dict = field(default_factory=dict)   # what a rule keeps between its forward and backward

    @property
    def layer(self) -> Layer | None:
        return self.node.layer

    @property
    def shape(self) -> tuple:
        """The buffer shape: the batch dimension, then the node's shape."""
        return (BATCH, *self.node.shape)

    @property
    def label(self) -> str:
        """How sections and paths name this node: its layer, with @k for the k-th call of a shared layer."""
        if self.layer is None:
            return self.out
        name = self.layer.name or self.layer.describe()
        return name if self.call == 1 else f"{name}@{self.call}"


class Builder:
    """Accumulates buffers, parameters and ops while the walk visits the model's nodes."""

    def __init__(self, model: Model, dtype: str) -> None:
        self.model = model
        self.dtype = dtype
        self.buffers: dict[str, Buffer] = {}
        self.records: list[LayerRecord] = []
        self.forward: list[Op] = []        # training mode (batch statistics, dropout masks)
        self.forward_eval: list[Op] = []   # evaluation mode: the same ops where a layer does not differ
        self.loss_ops: list[Op] = []
        self.backward: list[Op] = []
        self.running: list[Op] = []        # buffer updates a training step makes (running statistics)
        self.params: list[ParamSpec] = []
        self.buffer_specs: list[ParamSpec] = []
        self.probes: list[tuple[Probe, Op]] = []
        self.sites: dict[int, Site] = {}
        self.layer_index: dict[int, int] = {}
        self.grad_written: set[str] = set()
        self.reserved: set[str] = set()   # names shown in the derivation that no buffer has
        self.aliases: dict[str, str] = {}  # a δ as the derivation shows it (da1_via_z2) -> the buffer holding it
        self.min_train_rows = 1

    # -- buffers and names --------------------------------------------------------------------
    def buffer(self, name: str, shape: tuple, role: str = "value") -> sp.Symbol:
        self.buffers[name] = Buffer(name, tuple(shape), role)
        return symbol(name)

    def next_name(self, base: str) -> str:
        """`base`, or base_2, base_3, ... when taken (a second activation after layer k is a{k}_2)."""
        name, i = base, 1
        while name in self.buffers or name in self.reserved:
            i += 1
            name = f"{base}_{i}"
        return name

    def reserve(self, name: str) -> None:
        """Keep `name` (a δ the derivation shows but no op writes) from being given to a buffer."""
        self.reserved.add(name)

    def site(self, node: Node) -> Site:
        return self.sites[id(node)]

    def number(self, layer: Layer) -> int:
        """The layer's number among the layers of its kind, in first-call order (dense2 -> 2)."""
        if id(layer) not in self.layer_index:
            same = [lay for lay in self.model.layers if lay.kind == layer.kind]
            self.layer_index[id(layer)] = 1 + next(i for i, lay in enumerate(same) if lay is layer)
        return self.layer_index[id(layer)]

    # -- parameters ---------------------------------------------------------------------------
    def declare(self, layer: Layer, decl: Param, buffer: str, init: str, broadcast: tuple | None = None) -> str:
        """A parameter (or buffer) of `layer` named `buffer` in the code; declared once for a shared layer.

        `broadcast` is the shape its buffer has in the IR when that differs from the declared one, so
        that it broadcasts against the arrays it meets: a BatchNorm2d γ of C entries is a (C, 1, 1) buffer.
        """
        if buffer in self.buffers:
            return buffer
        shape = decl.shape
        self.buffer(buffer, broadcast or shape, "param")
        if decl.trainable:
            grad = f"d{buffer}"
            self.buffer(grad, broadcast or shape, "grad")
            spec = ParamSpec(f"{layer.name}.{decl.name}", buffer, grad, shape, 0, layer.name, decl.regularized, init)
            self.params.append(spec)
        else:
            self.buffer_specs.append(ParamSpec(f"{layer.name}.{decl.name}", buffer, "", shape, 0, layer.name, False,
                                               init, trainable=False))
        return buffer

    def ordered_params(self) -> tuple[ParamSpec, ...]:
        """Parameters in layer order (each layer's as it declares them), trainable ones first in the flat
        vector and buffers after them, so the optimizer updates a prefix."""
        offset, placed = 0, {}
        for spec in self.params + self.buffer_specs:
            placed[spec.name] = ParamSpec(spec.name, spec.buffer, spec.grad, spec.shape, offset, spec.layer,
                                          spec.regularized, spec.init, spec.trainable)
            offset += spec.size
        names = dict.fromkeys(layer.name for layer in self.model.layers if layer.name)
        return tuple(placed[s.name] for name in names for s in self.params + self.buffer_specs if s.layer == name)
