"""The network as a graph a diagram can be drawn from: nodes (kind, name, shape) and edges.

Nothing here assumes a chain or integer widths: a node's `shape` is any tuple of
per-example dimensions (``(64,)``, ``(3, 32, 32)``), and the graph may branch and join.
`from_model` is the one adapter from a declared model (any `nn.Model`, chains included); a
new layer kind needs only its entry in `_DIAGRAM_KIND` (else it is drawn as a plain layer).
"""
from __future__ import annotations

from dataclasses import dataclass, field

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


#: The diagram kind of each layer kind (a layer kind not listed is drawn as "layer").
_DIAGRAM_KIND = {"dense": "dense", "activation": "activation", "softmax": "softmax", "add": "merge",
                 "multiply": "merge", "concat": "merge", "layernorm": "norm", "batchnorm": "norm",
                 "dropout": "dropout", "conv": "conv", "maxpool": "pool", "avgpool": "pool",
                 "flatten": "reshape"}
_MERGE_SIGN = {"add": "+", "multiply": "⊙", "concat": "concatenate"}


def _count(layer: object, shapes: tuple[tuple, ...]) -> int:
    """Trainable numbers a layer holds (buffers such as running statistics left out)."""
    total = 0
    for param in layer.parameters(shapes):
        if param.trainable:
            size = 1
            for d in param.shape:
                size *= d
            total += size
    return total


def _detail(layer: object, inputs: tuple[tuple, ...], shape: tuple) -> str:
    """A few words under the box's name: "64 → 32", "tanh", "+", "p 0.5"."""
    kind = getattr(layer, "kind", "layer")
    if kind == "dense":
        return f"{'×'.join(map(str, inputs[0]))} → {layer.units}"
    if kind == "activation":
        return ""
    if kind == "softmax":
        return "rows sum to 1"
    if kind in _MERGE_SIGN:
        return _MERGE_SIGN[kind]
    if kind == "dropout":
        return f"p {layer.p:g}"
    return "×".join(map(str, shape))


def from_model(model: object) -> Network | None:
    """The graph of a declared model: its inputs, one box per layer call, the loss and its targets.

    A layer called twice (shared weights) gets a box per call, the second named ``dense1 (2nd use)``.
    """
    nodes = getattr(model, "nodes", None)
    if nodes is None:
        return None
    net = Network(model.name)
    ids: dict[int, str] = {}
    calls: dict[int, int] = {}
    unnamed: dict[str, int] = {}
    inputs = list(model.inputs)
    for node in nodes:
        if node.is_input:
            position = inputs.index(node) + 1 if node in inputs else 1
            label = node.name or ("X" if len(inputs) == 1 else f"X{position}")
            ids[id(node)] = node_id = "input" if len(inputs) == 1 else f"input{position}"
            net.nodes.append(Node(node_id, "input", label, node.shape, "inputs"))
            continue
        layer = node.layer
        calls[id(layer)] = calls.get(id(layer), 0) + 1
        use = calls[id(layer)]
        if layer.name:
            name = layer.name
            node_id = name if use == 1 else f"{name}@{use}"
        else:                     # activations are named by their function: tanh1, tanh2, ...
            name = getattr(getattr(layer, "function", None), "name", None) or layer.kind
            unnamed[name] = unnamed.get(name, 0) + 1
            node_id = f"{name}{unnamed[name]}"
        ids[id(node)] = node_id
        shapes = tuple(n.shape for n in node.inputs)
        params = _count(layer, shapes) if use == 1 else 0
        shown = name if use == 1 else f"{name} (use {use})"
        net.nodes.append(Node(node_id, _DIAGRAM_KIND.get(layer.kind, "layer"), shown, node.shape,
                              _detail(layer, shapes, node.shape), params))
        for source in node.inputs:
            net.edges.append(Edge(ids[id(source)], node_id, shape_text(source.shape)))
    if model.loss is not None:
        out = model.output
        penalties = ", ".join(f"{name} {value:g}" for name, value in (("l1", model.l1), ("l2", model.l2)) if value)
        net.nodes.append(Node("target", "target", "T", out.shape, "targets"))
        net.nodes.append(Node("loss", "loss", model.loss.name, (), penalties or "mean over the batch"))
        net.edges.append(Edge(ids[id(out)], "loss", shape_text(out.shape)))
        net.edges.append(Edge("target", "loss", shape_text(out.shape)))
    return net
