"""The network as a graph a diagram can be drawn from: nodes (kind, name, shape) and edges.

Nothing here assumes a chain or integer widths: a node's `shape` is any tuple of
per-example dimensions (``(64,)``, ``(3, 32, 32)``), and the graph may branch and join.
`from_model` is the one adapter from a declared model; a new kind of model (functional
DAGs, convolutions) needs only a new branch there (until then the page has no diagram for it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..dsl.layers import Activation, Dense, Softmax
from ..dsl.models import Sequential

#: Node kinds the diagram knows how to colour; anything else is drawn as "layer".
KINDS = ("input", "target", "dense", "conv", "pool", "norm", "dropout", "activation", "softmax", "merge",
         "reshape", "loss", "layer")


@dataclass(frozen=True)
class Node:
    """One box of the diagram: `id` is unique; `shape` is the output per example (batch left out)."""

    id: str
    kind: str
    name: str
    shape: tuple = ()
    detail: str = ""        # "64 → 32", "tanh", "l2 0.0001"
    params: int = 0         # trainable numbers the node holds


@dataclass(frozen=True)
class Edge:
    """Data flowing from node `src` to node `dst`."""

    src: str
    dst: str
    label: str = ""         # what flows along it: a shape such as "N×32"


@dataclass
class Network:
    """Nodes and edges of a directed acyclic graph (checked by `layout.layers`)."""

    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        """The node with id `node_id`."""
        return next(n for n in self.nodes if n.id == node_id)


def shape_text(shape: tuple, batch: str = "N") -> str:
    """``(32,)`` -> ``N×32``; ``(3, 8, 8)`` -> ``N×3×8×8``; any dimension printed as it is."""
    return "×".join([batch, *(str(d) for d in shape)])


def _layer_node(layer: object, index: int, width: int, params: dict[str, int]) -> tuple[Node, int]:
    """The node of one Sequential layer receiving `width` features, and the width it passes on."""
    if isinstance(layer, Dense):
        count = width * layer.units + layer.units
        params[layer.name] = count
        return Node(layer.name, "dense", layer.name, (layer.units,), f"{width} → {layer.units}", count), layer.units
    if isinstance(layer, Activation):
        name = layer.function.name
        return Node(f"{name}{index}", "activation", name, (width,), ""), width
    if isinstance(layer, Softmax):
        return Node(f"softmax{index}", "softmax", "softmax", (width,), "rows sum to 1"), width
    return Node(f"layer{index}", "layer", type(layer).__name__, (width,)), width


def from_model(model: object) -> Network | None:
    """The graph of a declared model (None for a kind of model this adapter does not know yet)."""
    if isinstance(model, Sequential):
        return _sequential(model)
    return None


def _sequential(model: Sequential) -> Network:
    """A chain: input, each layer in order, and the loss with its targets."""
    net = Network(model.name)
    previous, width, params = "input", model.input_dim, {}
    net.nodes.append(Node("input", "input", "X", (width,), "inputs"))
    for index, layer in enumerate(model.layers, 1):
        node, out = _layer_node(layer, index, width, params)
        net.nodes.append(node)
        net.edges.append(Edge(previous, node.id, shape_text((width,))))
        previous, width = node.id, out
    if model.loss is not None:
        penalties = ", ".join(f"{name} {value:g}" for name, value in (("l1", model.l1), ("l2", model.l2)) if value)
        net.nodes.append(Node("target", "target", "T", (model.output_dim,), "targets"))
        net.nodes.append(Node("loss", "loss", model.loss.name, (), penalties or "mean over the batch"))
        net.edges.append(Edge(previous, "loss", shape_text((width,))))
        net.edges.append(Edge("target", "loss", shape_text((model.output_dim,))))
    return net
